//! A sans-IO Raft consensus core.
//!
//! The core does no I/O and reads no clock (quinn-proto style). The application feeds it
//! messages ([`RawNode::step`]), logical time ([`RawNode::tick`]), proposals and read
//! requests, and drains [`Ready`] batches: what to persist, what to send (immediately, or only
//! after the writes are durable), what to apply, and which reads are answered. It then
//! acknowledges with [`RawNode::advance`]. Randomness (election jitter) comes from a seed.
//!
//! Features: leader election with pre-vote and check-quorum (both on by default), log
//! replication with Probe/Replicate/Snapshot flow control, pipelining and in-flight limits by
//! count and bytes, an uncommitted-size cap, proposal batching, ReadIndex and lease reads,
//! chunked snapshot transfer that resumes and aborts, joint-consensus and single-step
//! membership changes with learners, leadership transfer, and a [`Status`] view with counters
//! of ignored hostile or stale input. Entries carry a CRC-32C; a corrupt entry is an error,
//! never applied. Durability rules are on [`Storage`].
//!
//! Architecture invariant: nothing in this module panics on input from the network or from
//! storage; such input is ignored, answered by the protocol, or returned as an [`Error`].

mod confchange;
mod config;
mod crc;
mod error;
mod log;
mod progress;
mod quorum;
mod raft;
mod raw_node;
mod read_only;
mod status;
mod storage;
mod tracker;
mod types;

#[cfg(test)]
mod tests;

pub use confchange::{check_invariants, Changer};
pub use config::Config;
pub use crc::{crc32c, Crc32c};
pub use error::{DropReason, Error, Result};
pub use progress::{Inflights, Progress, ProgressState, SnapshotTransfer};
pub use quorum::{JointConfig, MajorityConfig, VoteResult};
pub use raft::MAX_TERM_OR_INDEX;
pub use raw_node::{Ready, ReadyAck, RawNode};
pub use read_only::{ReadOnlyOption, ReadState};
pub use status::{Counters, ProgressStatus, Role, SoftState, Status};
pub use storage::{MemStorage, RaftState, Storage};
pub use tracker::{ProgressMap, ProgressTracker, TrackerConfig};
pub use types::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Entry, EntryKind, HardState, Index,
    Message, MessageBody, NodeId, RejectHint, Snapshot, SnapshotMeta, Term,
};
