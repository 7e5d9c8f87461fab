//! A read-only view of a node for operators and tests.

use alloc::collections::BTreeMap;

use super::progress::{ProgressState, SnapshotTransfer};
use super::types::{ConfState, Index, NodeId, Term};

/// A node's role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (learners are always followers).
    #[default]
    Follower,
    /// Asking whether it could win an election, without disturbing anyone.
    PreCandidate,
    /// Campaigning.
    Candidate,
    /// Leading.
    Leader,
}

/// Volatile state reported in a [`Ready`](super::Ready) when it changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftState {
    /// The known leader.
    pub leader: Option<NodeId>,
    /// Our role.
    pub role: Role,
}

/// Counters of input the node ignored or refused. Hostile or stale input is never a panic;
/// it lands here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages from an older term (answered by the protocol when useful, then dropped).
    pub stale_term: u64,
    /// Messages addressed to another node, from ourselves, or from node 0.
    pub misaddressed: u64,
    /// Responses from nodes that are not members.
    pub unknown_sender: u64,
    /// Structurally invalid messages (non-contiguous entries, indices beyond the log, ...).
    pub malformed: u64,
    /// Entries or snapshots whose checksum failed (in transit or in storage).
    pub corrupt: u64,
    /// Appends that tried to rewrite committed entries.
    pub rewrite_committed: u64,
    /// Responses that no longer match the leader's view (late or duplicated).
    pub stale_response: u64,
    /// Snapshots older than our commit index.
    pub stale_snapshot: u64,
    /// Votes refused because a leader lease is in force.
    pub lease_ignored_votes: u64,
    /// Messages that make no sense in our role (e.g. a vote response to a follower).
    pub unexpected: u64,
    /// Proposals refused.
    pub dropped_proposals: u64,
    /// Read requests dropped (no leader, not leader, queue full).
    pub dropped_reads: u64,
    /// Storage errors seen while reading the log or snapshot.
    pub storage_errors: u64,
    /// Outgoing snapshot transfers aborted (timeout or reported failure).
    pub snapshot_aborts: u64,
    /// Leadership transfers aborted (timeout, or target removed).
    pub transfer_aborts: u64,
}

/// Replication state of one follower, as seen by the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressStatus {
    /// Highest index known replicated.
    pub matched: Index,
    /// Next index to send.
    pub next: Index,
    /// Replication mode.
    pub state: ProgressState,
    /// Whether sending is paused.
    pub paused: bool,
    /// Appends in flight.
    pub inflight_count: usize,
    /// Bytes in flight.
    pub inflight_bytes: u64,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// A learner.
    pub is_learner: bool,
    /// The outgoing snapshot transfer, if any.
    pub snapshot: Option<SnapshotTransfer>,
}

/// Everything a node can tell about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Our id.
    pub id: NodeId,
    /// Our role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Vote in the current term.
    pub vote: Option<NodeId>,
    /// Known leader.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit: Index,
    /// Applied index.
    pub applied: Index,
    /// First index in the log.
    pub first_index: Index,
    /// Last index in the log.
    pub last_index: Index,
    /// Membership.
    pub conf_state: ConfState,
    /// Per-member replication state (only on the leader).
    pub progress: BTreeMap<NodeId, ProgressStatus>,
    /// Target of an ongoing leadership transfer.
    pub transferee: Option<NodeId>,
    /// Ignored-input counters.
    pub counters: Counters,
}
