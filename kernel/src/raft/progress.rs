//! What a leader knows about each follower's log, and the flow control towards it.

use alloc::collections::VecDeque;

use super::types::{Index, Term};

/// How the leader is currently replicating to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's match point is unknown: send one append at a time and wait for the answer.
    Probe,
    /// The follower is in sync: stream appends optimistically, bounded by the in-flight limits.
    Replicate,
    /// The follower needs a snapshot: nothing else is sent until it is installed or aborted.
    Snapshot,
}

/// Appends sent but not yet acknowledged, bounded by count and bytes.
#[derive(Clone, Debug)]
pub struct Inflights {
    /// (last index of the message, bytes of the message)
    queue: VecDeque<(Index, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    /// A window of at most `max_count` messages and `max_bytes` bytes (0 = unlimited bytes).
    pub fn new(max_count: usize, max_bytes: u64) -> Self {
        Inflights {
            queue: VecDeque::new(),
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes,
        }
    }

    /// Records a sent message.
    pub fn add(&mut self, last: Index, bytes: u64) {
        self.queue.push_back((last, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is `<= to`.
    pub fn free_le(&mut self, to: Index) {
        while let Some(&(i, b)) = self.queue.front() {
            if i > to {
                break;
            }
            self.bytes -= b;
            self.queue.pop_front();
        }
    }

    /// Frees the oldest message (a heartbeat answer proves the follower is alive).
    pub fn free_first_one(&mut self) {
        if let Some((_, b)) = self.queue.pop_front() {
            self.bytes -= b;
        }
    }

    /// Whether no more messages may be sent.
    pub fn full(&self) -> bool {
        self.queue.len() >= self.max_count || (self.max_bytes != 0 && self.bytes >= self.max_bytes)
    }

    /// Messages in flight.
    pub fn count(&self) -> usize {
        self.queue.len()
    }

    /// Bytes in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn reset(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

/// An outgoing chunked snapshot transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotTransfer {
    /// Snapshot index.
    pub index: Index,
    /// Snapshot term.
    pub term: Term,
    /// Bytes the follower has acknowledged.
    pub acked: u64,
    /// Total bytes.
    pub total: u64,
    /// Ticks since the last acknowledgement (drives resend and abort).
    pub idle_ticks: u32,
    /// Ticks since the last resend.
    pub since_send: u32,
}

/// A leader's view of one follower (or of itself).
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known replicated.
    pub matched: Index,
    /// Next index to send.
    pub next: Index,
    /// Replication mode.
    pub state: ProgressState,
    /// Index of the snapshot being sent, in `Snapshot` state.
    pub pending_snapshot: Index,
    /// The follower answered since the last check-quorum round.
    pub recent_active: bool,
    /// In `Probe`, a probe is outstanding.
    pub probe_sent: bool,
    /// In `Replicate`, the in-flight window.
    pub inflights: Inflights,
    /// A learner (does not vote).
    pub is_learner: bool,
    /// The chunked snapshot transfer, in `Snapshot` state.
    pub transfer: Option<SnapshotTransfer>,
    /// Newest leader tick this node acknowledged a heartbeat of (leader lease).
    pub lease_tick: Option<u64>,
}

impl Progress {
    pub(crate) fn new(next: Index, max_inflight: usize, max_inflight_bytes: u64) -> Self {
        Progress {
            matched: 0,
            next: next.max(1),
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: false,
            probe_sent: false,
            inflights: Inflights::new(max_inflight, max_inflight_bytes),
            is_learner: false,
            transfer: None,
            lease_tick: None,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
        self.transfer = None;
    }

    pub(crate) fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            // After a snapshot the follower is at least at the snapshot, if it installed it.
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub(crate) fn become_snapshot(&mut self, index: Index, term: Term, total: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = index;
        self.transfer = Some(SnapshotTransfer {
            index,
            term,
            acked: 0,
            total,
            idle_ticks: 0,
            since_send: 0,
        });
    }

    /// The follower acknowledged up to `n`. Returns whether `matched` advanced.
    pub(crate) fn maybe_update(&mut self, n: Index) -> bool {
        let mut updated = false;
        if self.matched < n {
            self.matched = n;
            updated = true;
            self.probe_sent = false;
        }
        self.next = self.next.max(n + 1);
        updated
    }

    /// The follower rejected an append at `rejected`; `match_hint` is where it may match.
    /// Returns false for a stale rejection.
    pub(crate) fn maybe_decr_to(&mut self, rejected: Index, match_hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next.saturating_sub(1) != rejected {
            return false;
        }
        self.next = rejected.min(match_hint + 1).max(self.matched + 1).max(1);
        self.probe_sent = false;
        true
    }

    /// Whether sending appends to this follower is paused.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Records an append of `count` entries ending at `last` of `bytes` bytes.
    pub(crate) fn sent_entries(&mut self, count: usize, last: Index, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if count > 0 {
                    self.next = last + 1;
                    self.inflights.add(last, bytes);
                }
            }
            ProgressState::Probe => {
                // Only pause after a probe carrying entries; an empty probe is cheap to repeat.
                if count > 0 {
                    self.probe_sent = true;
                }
            }
            ProgressState::Snapshot => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_limits_by_count_and_bytes() {
        let mut f = Inflights::new(3, 100);
        f.add(1, 10);
        f.add(2, 10);
        assert!(!f.full());
        f.add(3, 10);
        assert!(f.full());
        f.free_le(2);
        assert_eq!(f.count(), 1);
        assert!(!f.full());
        f.add(4, 95);
        assert!(f.full(), "byte limit");
        f.free_first_one();
        assert_eq!(f.bytes(), 95);
        f.free_le(10);
        assert_eq!((f.count(), f.bytes()), (0, 0));
    }

    #[test]
    fn probe_and_replicate_transitions() {
        let mut p = Progress::new(10, 4, 0);
        assert!(p.maybe_decr_to(9, 5));
        assert_eq!(p.next, 6);
        assert!(!p.maybe_decr_to(9, 5), "stale rejection ignored");
        assert!(p.maybe_update(5));
        p.become_replicate();
        assert_eq!(p.next, 6);
        p.sent_entries(2, 7, 20);
        assert_eq!(p.next, 8);
        assert!(!p.maybe_decr_to(4, 0), "rejection below match is stale");
        assert!(p.maybe_decr_to(7, 0));
        assert_eq!(p.next, 6);
        p.become_snapshot(20, 3, 100);
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next, 21);
    }
}
