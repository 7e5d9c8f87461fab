//! Node configuration.

use super::error::{Error, Result};
use super::read_only::ReadOnlyOption;
use super::types::{Index, NodeId};

/// Tunables of one Raft node. [`Config::new`] gives safe defaults (pre-vote and check-quorum on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Ticks without hearing from a leader before campaigning; the actual timeout is drawn
    /// from `[election_tick, 2 * election_tick)`.
    pub election_tick: u32,
    /// Ticks between leader heartbeats. Must be less than `election_tick`.
    pub heartbeat_tick: u32,
    /// The application's applied index at start (its state machine already includes it).
    pub applied: Index,
    /// Maximum bytes of entries in one append message (at least one entry is always sent).
    pub max_size_per_msg: u64,
    /// Maximum bytes of committed entries in one Ready.
    pub max_committed_size_per_ready: u64,
    /// Maximum bytes of proposed but uncommitted entries on a leader (0 = unlimited).
    pub max_uncommitted_size: u64,
    /// Maximum append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Maximum bytes in flight to one follower (0 = unlimited).
    pub max_inflight_bytes: u64,
    /// The leader steps down when it has not heard from a quorum for an election timeout,
    /// and followers refuse votes while they hear from a leader (the lease).
    pub check_quorum: bool,
    /// Run a pre-vote round before bumping the term, so a partitioned node does not disrupt
    /// the cluster when it comes back.
    pub pre_vote: bool,
    /// How reads are made linearizable.
    pub read_only: crate::raft::ReadOnlyOption,
    /// Bytes per snapshot chunk.
    pub snapshot_chunk_size: u64,
    /// Ticks without an acknowledgement before a snapshot chunk is re-sent (resume).
    pub snapshot_resend_ticks: u32,
    /// Ticks without an acknowledgement before a snapshot transfer is aborted; replication
    /// then restarts with a probe, and a new transfer if still needed.
    pub snapshot_abort_ticks: u32,
    /// A leader removed from (or demoted out of) the configuration steps down.
    pub step_down_on_removal: bool,
    /// Safety margin, in ticks, subtracted from the leader lease to absorb clock drift
    /// between nodes over one election timeout (lease-based reads only).
    pub lease_margin_ticks: u32,
    /// Maximum read requests queued on a new leader before its first commit.
    pub max_pending_reads: usize,
    /// Seed of the election-timeout PRNG. Give each node a different seed (e.g. from a
    /// hardware RNG at boot); the simulation derives it from the run's seed.
    pub seed: u64,
}

impl Config {
    /// Defaults for node `id`.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            applied: 0,
            max_size_per_msg: 1024 * 1024,
            max_committed_size_per_ready: 16 * 1024 * 1024,
            max_uncommitted_size: 0,
            max_inflight_msgs: 256,
            max_inflight_bytes: 0,
            check_quorum: true,
            pre_vote: true,
            read_only: ReadOnlyOption::Safe,
            snapshot_chunk_size: 64 * 1024,
            snapshot_resend_ticks: 5,
            snapshot_abort_ticks: 50,
            step_down_on_removal: true,
            lease_margin_ticks: 2,
            max_pending_reads: 4096,
            seed: id,
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(Error::InvalidConfig("id must not be 0"));
        }
        if self.heartbeat_tick == 0 {
            return Err(Error::InvalidConfig(
                "heartbeat_tick must be greater than 0",
            ));
        }
        if self.election_tick <= self.heartbeat_tick {
            return Err(Error::InvalidConfig(
                "election_tick must be greater than heartbeat_tick",
            ));
        }
        if self.max_inflight_msgs == 0 {
            return Err(Error::InvalidConfig(
                "max_inflight_msgs must be greater than 0",
            ));
        }
        if self.read_only == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return Err(Error::InvalidConfig("lease-based reads need check_quorum"));
        }
        if self.read_only == ReadOnlyOption::LeaseBased
            && self.lease_margin_ticks >= self.election_tick
        {
            return Err(Error::InvalidConfig(
                "lease_margin_ticks must be less than election_tick",
            ));
        }
        if self.snapshot_chunk_size == 0 {
            return Err(Error::InvalidConfig(
                "snapshot_chunk_size must be greater than 0",
            ));
        }
        if self.snapshot_resend_ticks == 0
            || self.snapshot_abort_ticks <= self.snapshot_resend_ticks
        {
            return Err(Error::InvalidConfig(
                "need 0 < snapshot_resend_ticks < snapshot_abort_ticks",
            ));
        }
        Ok(())
    }
}

/// SplitMix64: a tiny, good-enough PRNG for election jitter (not for cryptography).
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `[0, n)`; `n == 0` gives 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}
