//! The storage contract of the Raft core, and an in-memory implementation.
//!
//! # Durability rules
//!
//! The core never writes storage itself: every [`Ready`](super::Ready) lists what the
//! application must make durable, and the application acknowledges with
//! [`RawNode::advance`](super::RawNode::advance). The rules that keep Raft safe across crashes:
//!
//! 1. **Term and vote are durable before a vote is answered.** A vote response (and a
//!    candidate's own vote requests) are in [`Ready::persisted_messages`](super::Ready), sent
//!    only after the Ready's hard state is on disk. Otherwise a restarted node could vote twice
//!    in one term.
//! 2. **Entries are durable before they are acknowledged.** Append responses are in
//!    `persisted_messages` too; a leader counts itself towards a commit quorum only after
//!    `advance` reports its own entries durable.
//! 3. **A leader may persist in parallel with replication.** Its `Append` messages are in
//!    [`Ready::messages`](super::Ready) and may go out before its own write completes.
//! 4. Readies are persisted in the order they were produced; a snapshot in a Ready is written
//!    before the Ready's entries.
//! 5. [`Storage::initial_state`] returns the membership as of the applied index the
//!    application passes in [`Config::applied`](super::Config); entries after it are
//!    re-delivered as committed entries on restart.
//!
//! Implementations must return [`Error::CorruptEntry`] for an entry whose checksum fails
//! ([`Entry::verify`]) rather than handing it out.

use alloc::vec::Vec;

use super::error::{Error, Result};
use super::log::to_usize;
use super::types::{ConfState, Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

/// What a node starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftState {
    /// Last persisted term, vote and commit.
    pub hard_state: HardState,
    /// Membership as of the applied index.
    pub conf_state: ConfState,
}

/// Read access to the durable log, hard state and snapshot.
pub trait Storage {
    /// Hard state and membership to start from.
    fn initial_state(&self) -> Result<RaftState>;
    /// Entries in `[lo, hi)`, at least one if the range is non-empty, and otherwise stopping
    /// before the total [`Entry::size`] exceeds `max_size`. Errors with `Compacted` if
    /// `lo < first_index()`, `Unavailable` if `hi > last_index() + 1`, `CorruptEntry` on a
    /// checksum failure.
    fn entries(&self, lo: Index, hi: Index, max_size: u64) -> Result<Vec<Entry>>;
    /// Term of the entry at `index`, valid for `first_index() - 1 ..= last_index()`.
    fn term(&self, index: Index) -> Result<Term>;
    /// Index of the first retained entry (snapshot index + 1).
    fn first_index(&self) -> Result<Index>;
    /// Index of the last entry (snapshot index if the log is empty).
    fn last_index(&self) -> Result<Index>;
    /// The latest snapshot. `SnapshotTemporarilyUnavailable` makes the leader retry later.
    fn snapshot(&self) -> Result<Snapshot>;
}

/// An in-memory [`Storage`] for tests, simulations and small embedded nodes. Its write methods
/// are what an application does with a [`Ready`](super::Ready).
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Entries after `snapshot.meta.index`, contiguous.
    entries: Vec<Entry>,
    snapshot_unavailable: bool,
}

impl MemStorage {
    /// Empty storage of a new cluster with the given initial membership, recorded at index 0
    /// (the log starts at index 1). Nodes added later learn the initial membership only from
    /// a snapshot, so prefer [`MemStorage::bootstrap`] for clusters that will grow.
    pub fn new_with_conf_state(cs: ConfState) -> Self {
        let mut s = MemStorage::default();
        s.snapshot.meta.conf_state = cs;
        s
    }

    /// Storage of a founding member of a new cluster: a bootstrap snapshot at index 1, term 1
    /// holds the initial membership. Every node that joins later has an empty log, is sent
    /// that (or a later) snapshot, and so learns the membership the log builds on. Joining
    /// nodes start from `MemStorage::default()`.
    pub fn bootstrap(cs: ConfState) -> Self {
        let mut s = MemStorage::default();
        s.snapshot.meta = SnapshotMeta {
            index: 1,
            term: 1,
            conf_state: cs,
        };
        s.hard_state = HardState {
            term: 1,
            vote: None,
            commit: 1,
        };
        s
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Persists the hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    fn snap_index(&self) -> Index {
        self.snapshot.meta.index
    }

    fn last(&self) -> Index {
        self.snap_index() + self.entries.len() as u64
    }

    /// Appends entries, replacing any conflicting suffix. The first entry must not leave a gap
    /// and must come after the snapshot.
    pub fn append(&mut self, ents: &[Entry]) -> Result<()> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        if first.index <= self.snap_index() {
            return Err(Error::InvalidStorageOp("append before the snapshot"));
        }
        if first.index > self.last() + 1 {
            return Err(Error::InvalidStorageOp("append leaves a gap"));
        }
        for (i, e) in ents.iter().enumerate() {
            if e.index != first.index + i as u64 {
                return Err(Error::InvalidStorageOp("append of non-contiguous entries"));
            }
        }
        let keep = (first.index - self.snap_index() - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Installs a snapshot received from the leader, discarding the log it covers.
    pub fn apply_snapshot(&mut self, snap: Snapshot) -> Result<()> {
        if snap.meta.index < self.snap_index() {
            return Err(Error::SnapshotOutOfDate);
        }
        let keep_tail = match self.term(snap.meta.index) {
            // The log already agrees with the snapshot: keep what follows it.
            Ok(t) if t == snap.meta.term => Some(snap.meta.index),
            _ => None,
        };
        match keep_tail {
            Some(idx) => {
                let drop = (idx - self.snap_index()) as usize;
                self.entries.drain(..drop.min(self.entries.len()));
            }
            None => self.entries.clear(),
        }
        if self.hard_state.commit < snap.meta.index {
            self.hard_state.commit = snap.meta.index;
        }
        if self.hard_state.term < snap.meta.term {
            self.hard_state.term = snap.meta.term;
        }
        self.snapshot = snap;
        Ok(())
    }

    /// Takes a snapshot of the application at `index` (which must be applied) and compacts
    /// the log up to it.
    pub fn create_snapshot(&mut self, index: Index, cs: ConfState, data: Vec<u8>) -> Result<()> {
        if index <= self.snap_index() {
            return Err(Error::SnapshotOutOfDate);
        }
        let term = self.term(index)?;
        let drop = (index - self.snap_index()) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state: cs,
            },
            data,
        };
        Ok(())
    }

    /// Crash recovery: drops the log from the first entry whose checksum fails. Call it on
    /// start-up; only a write that was never acknowledged (never fsynced) can be torn, so
    /// dropping that tail loses nothing Raft relies on. Returns the number of entries dropped.
    pub fn truncate_torn_tail(&mut self) -> usize {
        let Some(pos) = self.entries.iter().position(|e| e.verify().is_err()) else {
            return 0;
        };
        let dropped = self.entries.len() - pos;
        self.entries.truncate(pos);
        dropped
    }

    /// Simulates a torn write: appends `ents` and damages the last one (tests only).
    #[cfg(test)]
    pub(crate) fn append_torn(&mut self, ents: &[Entry]) -> Result<()> {
        self.append(ents)?;
        if let Some(e) = self.entries.last_mut() {
            let mut torn = e.data.to_vec();
            torn.push(0x5A);
            e.data = torn.into();
        }
        Ok(())
    }

    /// Test hook: makes [`Storage::snapshot`] answer `SnapshotTemporarilyUnavailable`.
    pub fn set_snapshot_unavailable(&mut self, unavailable: bool) {
        self.snapshot_unavailable = unavailable;
    }

    /// Test hook: flips a payload bit of the entry at `index` (a torn write).
    #[cfg(test)]
    pub(crate) fn corrupt_entry(&mut self, index: Index) {
        let first = self.snap_index() + 1;
        if let Some(e) = index
            .checked_sub(first)
            .and_then(|o| self.entries.get_mut(to_usize(o)))
        {
            let mut longer = e.data.to_vec();
            longer.push(0xA5);
            e.data = longer.into();
        }
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state,
            conf_state: self.snapshot.meta.conf_state.clone(),
        })
    }

    fn entries(&self, lo: Index, hi: Index, max_size: u64) -> Result<Vec<Entry>> {
        if lo <= self.snap_index() {
            return Err(Error::Compacted);
        }
        if hi > self.last() + 1 || lo > hi {
            return Err(Error::Unavailable);
        }
        let from = to_usize(lo - self.snap_index() - 1);
        let to = to_usize(hi - self.snap_index() - 1);
        let range = self.entries.get(from..to).unwrap_or(&[]);
        // How many fit in `max_size` (at least one).
        let mut size = 0u64;
        let mut n = 0;
        for e in range {
            size += e.size();
            if n > 0 && size > max_size {
                break;
            }
            n += 1;
        }
        let range = &range[..n];
        // Checked in one batch (two checksums at a time), before anything is cloned.
        if let Some(bad) = Entry::first_corrupt(range) {
            return Err(Error::CorruptEntry {
                index: range[bad].index,
            });
        }
        Ok(range.to_vec())
    }

    fn term(&self, index: Index) -> Result<Term> {
        if index == self.snap_index() {
            return Ok(self.snapshot.meta.term);
        }
        if index < self.snap_index() {
            return Err(Error::Compacted);
        }
        let off = to_usize(index - self.snap_index() - 1);
        self.entries
            .get(off)
            .map(|e| e.term)
            .ok_or(Error::Unavailable)
    }

    fn first_index(&self) -> Result<Index> {
        Ok(self.snap_index() + 1)
    }

    fn last_index(&self) -> Result<Index> {
        Ok(self.last())
    }

    fn snapshot(&self) -> Result<Snapshot> {
        if self.snapshot_unavailable {
            return Err(Error::SnapshotTemporarilyUnavailable);
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;
    use alloc::vec;

    fn e(i: Index, t: Term) -> Entry {
        Entry::new(t, i, EntryKind::Normal, vec![i as u8])
    }

    #[test]
    fn append_truncates_conflicts_and_rejects_gaps() {
        let mut s = MemStorage::default();
        s.append(&[e(1, 1), e(2, 1), e(3, 1)]).unwrap();
        s.append(&[e(2, 2)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        assert!(s.append(&[e(5, 2)]).is_err());
        assert_eq!(s.entries(1, 3, u64::MAX).unwrap().len(), 2);
        assert_eq!(s.entries(1, 3, 0).unwrap().len(), 1, "at least one entry");
        assert_eq!(s.entries(1, 4, u64::MAX), Err(Error::Unavailable));
    }

    #[test]
    fn compaction_and_snapshot() {
        let mut s = MemStorage::default();
        s.append(&[e(1, 1), e(2, 1), e(3, 2)]).unwrap();
        s.create_snapshot(2, ConfState::with_voters([1]), vec![9])
            .unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert_eq!(s.term(1), Err(Error::Compacted));
        assert_eq!(s.entries(2, 4, u64::MAX), Err(Error::Compacted));
        let mut snap = s.snapshot().unwrap();
        snap.meta.index = 1;
        assert_eq!(
            s.clone().apply_snapshot(snap),
            Err(Error::SnapshotOutOfDate)
        );
    }

    #[test]
    fn torn_tail_is_dropped_on_recovery() {
        let mut s = MemStorage::default();
        s.append(&[e(1, 1)]).unwrap();
        s.append_torn(&[e(2, 1), e(3, 1)]).unwrap();
        assert_eq!(
            s.entries(1, 4, u64::MAX),
            Err(Error::CorruptEntry { index: 3 })
        );
        assert_eq!(s.truncate_torn_tail(), 1);
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.truncate_torn_tail(), 0);
    }

    #[test]
    fn corrupt_entry_is_an_error() {
        let mut s = MemStorage::default();
        s.append(&[e(1, 1), e(2, 1)]).unwrap();
        s.corrupt_entry(2);
        assert_eq!(
            s.entries(1, 3, u64::MAX),
            Err(Error::CorruptEntry { index: 2 })
        );
        assert_eq!(s.entries(1, 2, u64::MAX).unwrap().len(), 1);
    }
}
