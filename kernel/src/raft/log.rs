//! The Raft log: the durable part in [`Storage`] plus an unstable tail not yet persisted.

use alloc::vec::Vec;

use super::error::{Error, Result};
use super::storage::Storage;
use super::types::{Entry, Index, Snapshot, Term};

/// A log offset as a slice index; out-of-range values (possible on 32-bit targets) become
/// `usize::MAX`, which every `get` rejects instead of silently truncating.
pub(crate) fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Entries (and possibly a snapshot) handed to the application but not yet acknowledged as
/// durable. `entries[i].index == offset + i`.
#[derive(Debug, Default)]
pub(crate) struct Unstable {
    pub snapshot: Option<Snapshot>,
    pub snapshot_in_progress: bool,
    pub entries: Vec<Entry>,
    pub offset: Index,
    /// Entries below this index have been handed out in a Ready already.
    pub offset_in_progress: Index,
    /// Entries that became durable (moved here from `entries` by `stable_to`) and are not
    /// yet handed out for applying; contiguous. They have not left this node's memory since
    /// they were created here or checksum-verified on receipt, and storage holds the same
    /// (shared) bytes, so applying them needs no read-back from storage and no second
    /// verification. Entries are dropped when handed out, replaced by a conflicting append,
    /// or covered by a restored snapshot; after a restart this is empty and committed entries
    /// come from storage, verified (see ARCHITECTURE.md).
    pub durable: Vec<Entry>,
}

impl Unstable {
    fn maybe_first_index(&self) -> Option<Index> {
        self.snapshot.as_ref().map(|s| s.meta.index + 1)
    }

    fn maybe_last_index(&self) -> Option<Index> {
        match self.entries.last() {
            Some(e) => Some(e.index),
            None => self.snapshot.as_ref().map(|s| s.meta.index),
        }
    }

    fn maybe_term(&self, i: Index) -> Option<Term> {
        if i < self.offset {
            return self
                .snapshot
                .as_ref()
                .filter(|s| s.meta.index == i)
                .map(|s| s.meta.term);
        }
        self.entries.get(to_usize(i - self.offset)).map(|e| e.term)
    }

    /// Entries not yet handed out.
    fn next_entries(&self) -> &[Entry] {
        let skip = self.offset_in_progress.saturating_sub(self.offset) as usize;
        self.entries.get(skip..).unwrap_or(&[])
    }

    fn next_snapshot(&self) -> Option<&Snapshot> {
        if self.snapshot_in_progress {
            None
        } else {
            self.snapshot.as_ref()
        }
    }

    fn accept_in_progress(&mut self) {
        if let Some(e) = self.entries.last() {
            self.offset_in_progress = e.index + 1;
        }
        if self.snapshot.is_some() {
            self.snapshot_in_progress = true;
        }
    }

    /// The entries up to (`i`, `t`) are durable. Ignored when the entry at `i` has been
    /// replaced since (a newer leader overwrote it) or is already stable.
    fn stable_to(&mut self, i: Index, t: Term) {
        let Some(gt) = self.maybe_term(i) else { return };
        if gt != t || i < self.offset {
            return;
        }
        let n = ((i + 1 - self.offset) as usize).min(self.entries.len());
        if self
            .durable
            .last()
            .is_some_and(|e| e.index + 1 != self.offset)
        {
            self.durable.clear(); // keep it contiguous
        }
        self.durable.extend(self.entries.drain(..n));
        self.offset = i + 1;
        if self.offset_in_progress < self.offset {
            self.offset_in_progress = self.offset;
        }
    }

    fn stable_snap_to(&mut self, i: Index) {
        if self.snapshot.as_ref().is_some_and(|s| s.meta.index == i) {
            self.snapshot = None;
            self.snapshot_in_progress = false;
        }
    }

    fn restore(&mut self, s: Snapshot) {
        self.offset = s.meta.index + 1;
        self.offset_in_progress = self.offset;
        self.entries.clear();
        self.durable.clear();
        self.snapshot = Some(s);
        self.snapshot_in_progress = false;
    }

    /// Appends entries that directly follow index `ents[0].index - 1`, which the caller
    /// guarantees is within `[offset - 1, last]` or below `offset` (replacing everything).
    /// Takes the entries by value: they are moved in, not cloned (payloads are the bulk of a
    /// log's bytes, and every proposal and every received append passes here).
    fn truncate_and_append(&mut self, mut ents: Vec<Entry>) {
        let Some(first) = ents.first() else { return };
        let from = first.index;
        // Durable entries from `from` on are being replaced (in storage too, once these are
        // persisted): they must never be applied.
        if let Some(held) = self.durable.first().map(|e| e.index) {
            self.durable.truncate(to_usize(from.saturating_sub(held)));
        }
        let end = self.offset + self.entries.len() as u64;
        if from == end {
            // Plain append.
        } else if from <= self.offset {
            // Replaces the whole unstable tail (and the storage suffix is replaced when the
            // application persists these).
            self.offset = from;
            self.entries.clear();
        } else {
            self.entries.truncate((from - self.offset) as usize);
        }
        self.entries.append(&mut ents);
        if self.offset_in_progress > from {
            self.offset_in_progress = from.max(self.offset);
        }
        if self.offset_in_progress < self.offset {
            self.offset_in_progress = self.offset;
        }
    }
}

/// Appends clones of `range` to `out` while the total [`Entry::size`] of `out` stays within
/// `max_size`, but at least one entry in `out` (the [`Storage::entries`] rule).
fn extend_within(out: &mut Vec<Entry>, range: &[Entry], max_size: u64) {
    let mut size: u64 = out.iter().map(Entry::size).sum();
    out.reserve(range.len());
    for e in range {
        size += e.size();
        if !out.is_empty() && size > max_size {
            break;
        }
        out.push(e.clone());
    }
}

/// Result of [`RaftLog::maybe_append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    /// The previous entry does not match: reject.
    Mismatch,
    /// The append would overwrite a committed entry: refused (hostile or buggy leader).
    RewritesCommitted,
    /// Appended; the log matches the leader's up to this index.
    Appended(Index),
}

/// The log as the core sees it.
#[derive(Debug)]
pub(crate) struct RaftLog<S> {
    pub storage: S,
    pub unstable: Unstable,
    /// Highest index known committed.
    pub committed: Index,
    /// Highest index handed to the application for applying.
    pub applying: Index,
    /// Highest index the application reported applied.
    pub applied: Index,
}

impl<S: Storage> RaftLog<S> {
    pub fn new(storage: S, applied: Index) -> Result<Self> {
        let first = storage.first_index()?;
        let last = storage.last_index()?;
        let snap_index = first.saturating_sub(1);
        let mut log = RaftLog {
            storage,
            unstable: Unstable {
                offset: last + 1,
                offset_in_progress: last + 1,
                ..Default::default()
            },
            committed: snap_index,
            applying: snap_index,
            applied: snap_index,
        };
        if applied > snap_index {
            log.applied = applied;
            log.applying = applied;
        }
        Ok(log)
    }

    pub fn first_index(&self) -> Index {
        match self.unstable.maybe_first_index() {
            Some(i) => i,
            None => self.storage.first_index().unwrap_or(1),
        }
    }

    pub fn last_index(&self) -> Index {
        match self.unstable.maybe_last_index() {
            Some(i) => i,
            None => self.storage.last_index().unwrap_or(0),
        }
    }

    /// Index of the last entry known durable locally.
    pub fn stable_last_index(&self) -> Index {
        if self.unstable.snapshot.is_some() {
            // Nothing past the pending snapshot is stable; nor is the snapshot itself.
            return self
                .unstable
                .offset
                .saturating_sub(1)
                .min(self.storage.last_index().unwrap_or(0));
        }
        self.unstable.offset.saturating_sub(1)
    }

    pub fn term(&self, i: Index) -> Result<Term> {
        let dummy = self.first_index().saturating_sub(1);
        if i < dummy {
            return Err(Error::Compacted);
        }
        if i > self.last_index() {
            return Err(Error::Unavailable);
        }
        if let Some(t) = self.unstable.maybe_term(i) {
            return Ok(t);
        }
        self.storage.term(i)
    }

    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or(0)
    }

    pub fn match_term(&self, i: Index, t: Term) -> bool {
        self.term(i).is_ok_and(|x| x == t)
    }

    /// Raft §5.4.1: is (`last_index`, `last_term`) at least as up to date as our log?
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        let lt = self.last_term();
        last_term > lt || (last_term == lt && last_index >= self.last_index())
    }

    /// First index of `ents` that conflicts with (or extends) our log, 0 if none.
    fn find_conflict(&self, ents: &[Entry]) -> Index {
        for e in ents {
            if !self.match_term(e.index, e.term) {
                return e.index;
            }
        }
        0
    }

    /// The largest index `<= index` whose term is `<= term` (Raft §5.3 fast backtracking).
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term && i > 0 => i -= 1,
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }

    /// Follower-side append. `Mismatch` when (`prev_index`, `prev_term`) does not match.
    /// Callers validate that `ents` are contiguous from `prev_index + 1`.
    pub fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        commit: Index,
        mut ents: Vec<Entry>,
    ) -> AppendOutcome {
        if !self.match_term(prev_index, prev_term) {
            return AppendOutcome::Mismatch;
        }
        let last_new = prev_index + ents.len() as u64;
        let ci = self.find_conflict(&ents);
        if ci != 0 && ci <= self.committed {
            // A leader tried to rewrite committed history. Raft's safety argument says an
            // honest leader never does; refuse rather than corrupt the state machine.
            return AppendOutcome::RewritesCommitted;
        }
        if ci != 0 {
            let skip = (ci - prev_index - 1) as usize;
            if skip < ents.len() {
                // Keep only the new suffix, moving it (the common case skips nothing).
                ents.drain(..skip);
                self.append(ents);
            }
        }
        self.commit_to(commit.min(last_new));
        AppendOutcome::Appended(last_new)
    }

    /// A leader's new entries (indices from `last_index() + 1`), built straight onto the end
    /// of the unstable tail: one proposal per call needs no vector of its own (that was an
    /// allocation per entry). `accept` sees the new entries, may finish them (checksums) and
    /// may refuse them, which removes them again. Returns the last index, `None` if refused.
    pub fn append_new(
        &mut self,
        ents: impl Iterator<Item = Entry>,
        accept: impl FnOnce(&mut [Entry]) -> bool,
    ) -> Option<Index> {
        let next = self.last_index() + 1;
        let u = &mut self.unstable;
        if u.offset + u.entries.len() as u64 != next {
            // Defensive: the unstable tail always ends at the last index today; if that ever
            // stops holding, the general path still places the entries correctly.
            let mut ents: Vec<Entry> = ents.collect();
            return accept(&mut ents).then(|| self.append(ents));
        }
        let start = u.entries.len();
        u.entries.extend(ents);
        if accept(&mut u.entries[start..]) {
            Some(self.last_index())
        } else {
            u.entries.truncate(start);
            None
        }
    }

    pub fn append(&mut self, ents: Vec<Entry>) -> Index {
        if ents.is_empty() {
            return self.last_index();
        }
        self.unstable.truncate_and_append(ents);
        self.last_index()
    }

    pub fn commit_to(&mut self, to: Index) {
        let to = to.min(self.last_index());
        if to > self.committed {
            self.committed = to;
        }
    }

    /// Leader-side commit: only entries of the current term are committed by counting
    /// replicas (Raft §5.4.2, Figure 8).
    pub fn maybe_commit(&mut self, max_index: Index, term: Term) -> bool {
        if max_index > self.committed && self.term(max_index).is_ok_and(|t| t == term) {
            self.commit_to(max_index);
            return true;
        }
        false
    }

    pub fn applied_to(&mut self, i: Index) {
        if i > self.applied && i <= self.committed {
            self.applied = i;
            if self.applying < i {
                self.applying = i;
            }
        }
    }

    /// The highest index that may be handed to the application: committed and locally durable.
    fn max_appliable(&self) -> Index {
        self.committed.min(self.stable_last_index())
    }

    pub fn has_next_committed_entries(&self) -> bool {
        if self.unstable.snapshot.is_some() {
            return false;
        }
        let lo = (self.applying + 1).max(self.first_index());
        lo <= self.max_appliable()
    }

    /// Committed, durable entries not yet handed out, up to `max_size` bytes. They come from
    /// the durable entries this node still holds ([`Unstable::durable`]: created here or
    /// verified on receipt, never left memory) when those cover the range, and otherwise
    /// (after a restart, or far behind) from [`Storage::entries`], which verifies each entry
    /// it hands out (its contract). A corrupt entry is an error, never applied.
    pub fn next_committed_entries(&self, max_size: u64) -> Result<Vec<Entry>> {
        if !self.has_next_committed_entries() {
            return Ok(Vec::new());
        }
        let lo = (self.applying + 1).max(self.first_index());
        let hi = self.max_appliable() + 1;
        let held = &self.unstable.durable;
        if let Some(range) = held.first().and_then(|f| {
            let a = to_usize(lo.checked_sub(f.index)?);
            held.get(a..to_usize(hi - f.index))
        }) {
            let mut out = Vec::new();
            extend_within(&mut out, range, max_size);
            return Ok(out);
        }
        self.slice(lo, hi, max_size)
    }

    pub fn next_unstable_entries(&self) -> &[Entry] {
        self.unstable.next_entries()
    }

    pub fn has_next_unstable(&self) -> bool {
        !self.unstable.next_entries().is_empty() || self.unstable.next_snapshot().is_some()
    }

    pub fn next_unstable_snapshot(&self) -> Option<&Snapshot> {
        self.unstable.next_snapshot()
    }

    pub fn accept_unstable(&mut self) {
        self.unstable.accept_in_progress();
    }

    pub fn accept_applying(&mut self, i: Index) {
        if i > self.applying {
            self.applying = i;
        }
        let held = &mut self.unstable.durable;
        if let Some(f) = held.first().map(|e| e.index) {
            let handed_out = to_usize((i + 1).saturating_sub(f)).min(held.len());
            held.drain(..handed_out);
        }
    }

    pub fn stable_to(&mut self, i: Index, t: Term) {
        self.unstable.stable_to(i, t);
    }

    pub fn stable_snap_to(&mut self, i: Index) {
        self.unstable.stable_snap_to(i);
    }

    /// Entries from `lo` up to the end, at most `max_size` bytes (at least one entry).
    pub fn entries(&self, lo: Index, max_size: u64) -> Result<Vec<Entry>> {
        let last = self.last_index();
        if lo > last {
            return Ok(Vec::new());
        }
        self.slice(lo, last + 1, max_size)
    }

    /// Entries in `[lo, hi)`.
    pub fn slice(&self, lo: Index, hi: Index, max_size: u64) -> Result<Vec<Entry>> {
        if lo > hi {
            return Err(Error::Unavailable);
        }
        if lo < self.first_index() {
            return Err(Error::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(Error::Unavailable);
        }
        if lo == hi {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let off = self.unstable.offset;
        if lo < off {
            let stored = self.storage.entries(lo, hi.min(off), max_size)?;
            let complete = stored.len() as u64 == hi.min(off) - lo;
            out = stored;
            if !complete {
                return Ok(out);
            }
        }
        if hi > off {
            let from = lo.max(off);
            let a = (from - off) as usize;
            let b = (hi - off) as usize;
            let range = self.unstable.entries.get(a..b).unwrap_or(&[]);
            extend_within(&mut out, range, max_size);
        }
        Ok(out)
    }

    pub fn restore(&mut self, s: Snapshot) {
        self.committed = s.meta.index;
        self.unstable.restore(s);
    }

    /// The snapshot to send to a follower: the unstable one if we are still persisting it,
    /// otherwise storage's.
    pub fn snapshot(&self) -> Result<Snapshot> {
        if let Some(s) = &self.unstable.snapshot {
            return Ok(s.clone());
        }
        self.storage.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::storage::MemStorage;
    use crate::raft::types::EntryKind;
    use alloc::collections::VecDeque;
    use alloc::vec;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Append `n` entries at `at` (relative position) in a new or the same term.
        Append { at: u8, n: u8, new_term: bool },
        /// Hand the unstable entries to the "application".
        HandOut,
        /// The oldest handed-out batch becomes durable.
        Persist,
        /// Everything durable is committed and handed out for applying.
        Apply,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), 1u8..4, any::<bool>()).prop_map(|(at, n, new_term)| Op::Append {
                at,
                n,
                new_term
            }),
            Just(Op::HandOut),
            Just(Op::Persist),
            Just(Op::Apply),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The unstable tail plus storage always show exactly the model log, whatever the
        /// interleaving of appends (including overwrites of entries being persisted),
        /// hand-outs and persistence acknowledgements.
        #[test]
        fn log_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut log = RaftLog::new(MemStorage::default(), 0).unwrap();
            let mut model: Vec<Term> = Vec::new();
            let mut term = 1;
            let mut batches: VecDeque<Vec<Entry>> = VecDeque::new();
            for op in ops {
                match op {
                    Op::Append { at, n, new_term } => {
                        // Committed entries are never overwritten (Raft refuses earlier).
                        let pos = ((at as usize) % (model.len() + 1)).max(log.committed as usize);
                        // As in Raft, only a newer leader (term) overwrites entries, so an
                        // (index, term) pair always names one entry.
                        if new_term || pos < model.len() {
                            term += 1;
                        }
                        model.truncate(pos);
                        let ents: Vec<Entry> = (0..n)
                            .map(|k| Entry::new(term, (pos + 1 + k as usize) as u64, EntryKind::Normal, vec![k]))
                            .collect();
                        model.extend(ents.iter().map(|e| e.term));
                        log.append(ents);
                    }
                    Op::HandOut => {
                        let ents = log.next_unstable_entries().to_vec();
                        log.accept_unstable();
                        if !ents.is_empty() {
                            batches.push_back(ents);
                        }
                    }
                    Op::Persist => {
                        if let Some(b) = batches.pop_front() {
                            log.storage.append(&b).unwrap();
                            let last = b.last().unwrap();
                            log.stable_to(last.index, last.term);
                        }
                    }
                    Op::Apply => {
                        log.commit_to(log.stable_last_index());
                        let ents = log.next_committed_entries(u64::MAX).unwrap();
                        // Exactly the next committed entries, as storage holds them.
                        for (k, e) in ents.iter().enumerate() {
                            prop_assert_eq!(e.index, log.applying + 1 + k as u64);
                            prop_assert_eq!(&log.storage.entries(e.index, e.index + 1, 0).unwrap()[0], e);
                        }
                        if let Some(last) = ents.last() {
                            log.accept_applying(last.index);
                        }
                        prop_assert!(!log.has_next_committed_entries());
                    }
                }
                // Durable entries held for applying are the ones storage has.
                for e in &log.unstable.durable {
                    prop_assert_eq!(&log.storage.entries(e.index, e.index + 1, 0).unwrap()[0], e);
                    prop_assert!(e.index > log.applying);
                }
                prop_assert_eq!(log.last_index(), model.len() as u64);
                for (i, t) in model.iter().enumerate() {
                    prop_assert_eq!(log.term(i as u64 + 1).unwrap(), *t, "index {}", i + 1);
                }
                prop_assert!(log.stable_last_index() <= log.last_index());
                // Everything at or below the stable index is really in storage, as shown.
                for i in 1..=log.stable_last_index() {
                    prop_assert_eq!(log.storage.term(i).unwrap(), model[i as usize - 1]);
                }
                // Nothing is handed out twice, and nothing is skipped.
                let next = log.next_unstable_entries();
                if let Some(f) = next.first() {
                    let handed_last = batches.back().and_then(|b| b.last()).map(|e| e.index);
                    prop_assert!(handed_last.is_none_or(|h| f.index <= h + 1));
                }
            }
        }
    }
}
