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
//! # Bootstrapping
//!
//! Founding members start from [`MemStorage::bootstrap`] (or an equivalent snapshot at index 1
//! in another [`Storage`]); nodes added later start empty and receive a snapshot that carries
//! the membership. Terms and indices from the network above [`MAX_TERM_OR_INDEX`] are refused.
//!
//! # Driving a node
//!
//! ```
//! use seastar_kernel::raft::{Config, ConfState, MemStorage, RawNode, Role};
//!
//! let storage = MemStorage::bootstrap(ConfState::with_voters([1]));
//! let mut node = RawNode::new(Config::new(1), storage).unwrap();
//! node.campaign(); // a single voter elects itself at once
//! assert_eq!(node.role(), Role::Leader);
//! node.propose(b"hello".to_vec()).unwrap();
//! let mut applied = Vec::new();
//! while node.has_ready() {
//!     let rd = node.ready().unwrap();
//!     // 1. rd.messages may go out now (a leader persists in parallel with replication).
//!     // 2. Persist: snapshot, entries, hard state (fsync in a real system).
//!     let store = node.store_mut();
//!     if let Some(s) = rd.snapshot.clone() {
//!         store.apply_snapshot(s).unwrap();
//!     }
//!     store.append(&rd.entries).unwrap();
//!     if let Some(hs) = rd.hard_state {
//!         store.set_hard_state(hs);
//!     }
//!     // 3. rd.persisted_messages go out only now.
//!     // 4. Apply committed entries, then acknowledge.
//!     // (`e.data` is a shared `Payload`: cloning it copies no bytes.)
//!     applied.extend(rd.committed_entries.iter().map(|e| e.data.clone()));
//!     node.advance(rd.ack);
//! }
//! assert!(applied.iter().any(|d| d == b"hello"));
//! ```
//!
//! Architecture invariant: nothing in this module panics on input from the network or from
//! storage; such input is ignored, answered by the protocol, or returned as an [`Error`].

mod confchange;
mod config;
mod crc;
#[cfg(target_arch = "x86_64")]
mod crc_hw;
mod election;
mod error;
mod log;
mod machine;
mod membership;
mod payload;
mod progress;
mod quorum;
mod raw_node;
mod read_only;
mod reads;
mod replication;
mod snapshot_xfer;
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
pub use machine::MAX_TERM_OR_INDEX;
pub use payload::Payload;
pub use progress::{Inflights, Progress, ProgressState, SnapshotTransfer};
pub use quorum::{JointConfig, MajorityConfig, VoteResult};
pub use raw_node::{RawNode, Ready, ReadyAck};
pub use read_only::{ReadOnlyOption, ReadState};
pub use status::{Counters, ProgressStatus, Role, SoftState, Status};
pub use storage::{MemStorage, RaftState, Storage};
pub use tracker::{ProgressMap, ProgressTracker, TrackerConfig};
pub use types::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Entry,
    EntryKind, HardState, Index, Message, MessageBody, NodeId, RejectHint, Snapshot, SnapshotMeta,
    Term,
};
