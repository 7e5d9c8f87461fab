//! Errors of the Raft core and of its storage.

use super::types::NodeId;

/// Why a proposal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// This node is not the leader; `leader` is the last known leader, if any.
    NotLeader {
        /// The leader this node currently follows, if known.
        leader: Option<NodeId>,
    },
    /// A leadership transfer is in progress; retry on the new leader.
    TransferInProgress,
    /// The uncommitted tail is already at its configured cap (back-pressure).
    UncommittedCapExceeded,
    /// A configuration change is already pending, or the change is not valid now.
    ConfChangePending,
    /// This node has been removed from the configuration.
    Removed,
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DropReason::NotLeader { leader: Some(l) } => write!(f, "not leader (leader is {l})"),
            DropReason::NotLeader { leader: None } => write!(f, "not leader (no known leader)"),
            DropReason::TransferInProgress => write!(f, "leadership transfer in progress"),
            DropReason::UncommittedCapExceeded => write!(f, "too many uncommitted entries"),
            DropReason::ConfChangePending => write!(f, "a configuration change is pending"),
            DropReason::Removed => write!(f, "node removed from the configuration"),
        }
    }
}

/// Errors returned by the Raft core and by [`Storage`](super::Storage) implementations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The requested index is older than the first retained entry (it is in a snapshot).
    #[error("requested log index is compacted")]
    Compacted,
    /// The requested index is beyond the last entry.
    #[error("requested log index is unavailable")]
    Unavailable,
    /// The storage cannot produce a snapshot right now; the leader retries later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The snapshot is older than what the storage already holds.
    #[error("snapshot is out of date")]
    SnapshotOutOfDate,
    /// A log entry failed its checksum: a torn write or corruption. Never applied.
    #[error("corrupt log entry at index {index}")]
    CorruptEntry {
        /// Index of the first corrupt entry found.
        index: u64,
    },
    /// A snapshot failed its checksum.
    #[error("corrupt snapshot")]
    CorruptSnapshot,
    /// Storage refused a write that would break the log's shape (e.g. a gap).
    #[error("invalid storage operation: {0}")]
    InvalidStorageOp(&'static str),
    /// A proposal was not accepted.
    #[error("proposal dropped: {0}")]
    ProposalDropped(DropReason),
    /// A configuration value is invalid.
    #[error("invalid config: {0}")]
    InvalidConfig(&'static str),
    /// A membership change is not valid in the current configuration.
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(&'static str),
    /// Encoding or decoding (postcard) failed.
    #[error("encoding or decoding failed")]
    Codec,
    /// The operation needs a leader (or a known leader) and there is none.
    #[error("no leader")]
    NoLeader,
}

/// Result alias of the Raft core.
pub type Result<T> = core::result::Result<T, Error>;
