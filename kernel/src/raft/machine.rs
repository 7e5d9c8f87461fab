//! The Raft state machine: roles, elections, replication, reads, snapshots, membership and
//! leadership transfer. It is driven by [`RawNode`](super::RawNode) and does no I/O.
//!
//! The `impl` of [`Raft`] is split by concept across sibling files (`election.rs`,
//! `replication.rs`, `snapshot_xfer.rs`, `reads.rs`, `membership.rs`); this file holds the
//! state, construction, role changes and message dispatch. The imports below are re-exported
//! to those files so that each can `use super::machine::*`.

pub(super) use alloc::vec;
pub(super) use alloc::vec::Vec;

pub(super) use super::confchange::{self, Changer};
pub(super) use super::config::{Config, SplitMix64};
pub(super) use super::crc::crc32c;
pub(super) use super::error::{DropReason, Error, Result};
pub(super) use super::log::{AppendOutcome, RaftLog};
pub(super) use super::payload::Payload;
pub(super) use super::progress::{Progress, ProgressState};
pub(super) use super::quorum::VoteResult;
pub(super) use super::read_only::{ReadOnly, ReadOnlyOption, ReadState};
pub(super) use super::status::{Counters, Role, SoftState};
pub(super) use super::storage::Storage;
pub(super) use super::tracker::{ProgressMap, ProgressTracker, TrackerConfig};
pub(super) use super::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId,
    RejectHint, Snapshot, SnapshotMeta, Term,
};

/// Largest term or index accepted from the network. Nothing legitimate gets near it (2^62
/// entries), and the bound keeps every `+ 1` on values that came from input far from overflow.
pub const MAX_TERM_OR_INDEX: u64 = 1 << 62;

/// Whether every term and index in `m` is within [`MAX_TERM_OR_INDEX`].
pub(super) fn within_limits(m: &Message) -> bool {
    let ok = |v: u64| v <= MAX_TERM_OR_INDEX;
    if !ok(m.term) {
        return false;
    }
    match &m.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        }
        | MessageBody::Vote {
            last_index,
            last_term,
            ..
        } => ok(*last_index) && ok(*last_term),
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            ok(*prev_index)
                && ok(*prev_term)
                && ok(*commit)
                && ok(prev_index.saturating_add(entries.len() as u64))
                && entries.iter().all(|e| ok(e.index) && ok(e.term))
        }
        MessageBody::AppendResponse { index, reject } => {
            ok(*index) && reject.is_none_or(|h| ok(h.index) && ok(h.term))
        }
        MessageBody::Heartbeat {
            commit, lease_tick, ..
        } => ok(*commit) && ok(*lease_tick),
        MessageBody::HeartbeatResponse { lease_tick, .. } => ok(*lease_tick),
        MessageBody::SnapshotChunk {
            meta,
            total_len,
            offset,
            ..
        } => ok(meta.index) && ok(meta.term) && ok(*total_len) && ok(*offset),
        MessageBody::SnapshotAck {
            index,
            snap_term,
            next_offset,
        } => ok(*index) && ok(*snap_term) && ok(*next_offset),
        MessageBody::ReadIndexResponse { index, .. } => ok(*index),
        MessageBody::PreVoteResponse { .. }
        | MessageBody::VoteResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReadIndex { .. } => true,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CampaignKind {
    PreElection,
    Election,
    Transfer,
}

/// A snapshot being received in chunks.
#[derive(Debug)]
pub(super) struct IncomingSnapshot {
    pub(super) from: NodeId,
    pub(super) meta: SnapshotMeta,
    pub(super) total_len: u64,
    pub(super) checksum: u32,
    pub(super) data: Vec<u8>,
}

/// The snapshot the leader is currently streaming, cached so chunks are cut from one copy.
#[derive(Debug)]
pub(super) struct SnapshotCache {
    pub(super) snap: Snapshot,
    pub(super) checksum: u32,
}

/// The protocol core.
#[derive(Debug)]
pub(crate) struct Raft<S> {
    pub id: NodeId,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub log: RaftLog<S>,
    pub tracker: ProgressTracker,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub transferee: Option<NodeId>,
    /// Index of the last proposed configuration change; another may be proposed only after
    /// this one is applied.
    pub pending_conf_index: Index,
    pub(super) uncommitted_size: u64,
    pub(super) read_only: ReadOnly,
    /// Reads received before the leader committed an entry of its term.
    pub(super) pending_reads: Vec<(NodeId, Vec<u8>)>,
    pub(super) election_elapsed: u32,
    pub(super) heartbeat_elapsed: u32,
    pub(super) randomized_election_timeout: u32,
    pub(super) rng: SplitMix64,
    pub cfg: Config,
    /// Messages that may be sent immediately.
    pub msgs: Vec<Message>,
    /// Messages that may be sent only after the next Ready's writes are durable.
    pub msgs_after: Vec<Message>,
    pub read_states: Vec<ReadState>,
    pub counters: Counters,
    /// Proposals were appended; broadcast them at the next Ready (batching).
    pub(super) pending_bcast: bool,
    pub(super) snap_cache: Option<SnapshotCache>,
    pub(super) incoming_snapshot: Option<IncomingSnapshot>,
    /// The highest term known to be durable; messages of a newer term wait for persistence.
    pub durable_term: Term,
    /// Ticks since we became leader (the clock of the leader lease).
    pub(super) leader_ticks: u64,
    /// Set once we sent `TimeoutNow`: the target may win at any time, so no more lease reads
    /// in this term.
    pub(super) lease_revoked: bool,
    /// After a (re)start with lease reads, refuse votes for one election timeout: we may have
    /// promised a leader our lease before the crash.
    pub(super) lease_guard: bool,
}

impl<S: Storage> Raft<S> {
    pub fn new(cfg: Config, storage: S) -> Result<Self> {
        cfg.validate()?;
        let rs = storage.initial_state()?;
        let log = RaftLog::new(storage, cfg.applied)?;
        let mut r = Raft {
            id: cfg.id,
            term: 0,
            vote: None,
            log,
            tracker: ProgressTracker::new(cfg.max_inflight_msgs, cfg.max_inflight_bytes),
            role: Role::Follower,
            leader: None,
            transferee: None,
            pending_conf_index: 0,
            uncommitted_size: 0,
            read_only: ReadOnly::default(),
            pending_reads: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: cfg.election_tick,
            rng: SplitMix64::new(cfg.seed),
            cfg,
            msgs: Vec::new(),
            msgs_after: Vec::new(),
            read_states: Vec::new(),
            counters: Counters::default(),
            pending_bcast: false,
            snap_cache: None,
            incoming_snapshot: None,
            durable_term: rs.hard_state.term,
            leader_ticks: 0,
            lease_revoked: false,
            lease_guard: false,
        };
        let (tc, prs) = confchange::restore(&r.tracker, &rs.conf_state, r.log.last_index())?;
        r.tracker.config = tc;
        r.tracker.progress = prs;
        let hs = rs.hard_state;
        // A stored commit beyond the stored log would be corruption; clamp instead of trusting it.
        r.log.commit_to(hs.commit);
        r.term = hs.term;
        r.vote = hs.vote;
        if r.log.applied > r.log.committed {
            return Err(Error::InvalidConfig(
                "applied index is beyond the committed index",
            ));
        }
        let term = r.term;
        r.become_follower(term, None);
        r.lease_guard = r.cfg.read_only == ReadOnlyOption::LeaseBased;
        Ok(r)
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.leader,
            role: self.role,
        }
    }

    pub(super) fn election_timeout(&self) -> u32 {
        self.cfg.election_tick
    }

    pub(super) fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let after = matches!(
            body,
            MessageBody::Vote { .. }
                | MessageBody::VoteResponse { .. }
                | MessageBody::AppendResponse { .. }
        );
        let m = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if after {
            self.msgs_after.push(m);
        } else {
            self.msgs.push(m);
        }
    }

    pub(super) fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = None;
            self.incoming_snapshot = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_election_timeout();
        self.transferee = None;
        self.tracker.reset_votes();
        let next = self.log.last_index() + 1;
        let stable = self.log.stable_last_index();
        let (mi, mb) = (self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes);
        let me = self.id;
        for (id, p) in self.tracker.progress.iter_mut() {
            let learner = p.is_learner;
            *p = Progress::new(next, mi, mb);
            p.is_learner = learner;
            if *id == me {
                // We count ourselves only for entries that are durable locally.
                p.matched = stable;
            }
        }
        self.pending_conf_index = 0;
        self.uncommitted_size = 0;
        self.read_only.clear();
        self.pending_reads.clear();
        self.pending_bcast = false;
        self.snap_cache = None;
    }

    pub fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    pub(crate) fn become_pre_candidate(&mut self) {
        // Pre-vote changes neither term nor vote.
        self.tracker.reset_votes();
        self.leader = None;
        self.role = Role::PreCandidate;
    }

    pub(crate) fn become_candidate(&mut self) {
        let t = self.term + 1;
        self.reset(t);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    pub(crate) fn become_leader(&mut self) {
        let t = self.term;
        self.reset(t);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.leader_ticks = 0;
        self.lease_revoked = false;
        self.lease_guard = false;
        if let Some(p) = self.tracker.progress.get_mut(&self.id) {
            // Our own progress never pauses replication of anything.
            let matched = p.matched;
            p.become_replicate();
            p.matched = matched;
            p.next = self.log.last_index() + 1;
        }
        // Conservatively assume the uncommitted tail holds a configuration change.
        self.pending_conf_index = self.log.last_index();
        // The no-op of the new term: committing it commits everything before (Figure 8).
        let idx = self.log.last_index() + 1;
        self.log.append(vec![Entry::new(
            self.term,
            idx,
            EntryKind::Normal,
            Vec::new(),
        )]);
        self.maybe_commit_self();
    }

    pub(super) fn promotable(&self) -> bool {
        self.tracker
            .progress
            .get(&self.id)
            .is_some_and(|p| !p.is_learner)
            && self.log.unstable.snapshot.is_none()
    }

    pub fn step(&mut self, m: Message) {
        if m.to != self.id || m.from == self.id || m.from == 0 {
            self.counters.misaddressed += 1;
            return;
        }
        if m.term == 0 || !within_limits(&m) {
            self.counters.malformed += 1;
            return;
        }
        if m.term > self.term {
            let is_vote = matches!(
                m.body,
                MessageBody::Vote { .. } | MessageBody::PreVote { .. }
            );
            if is_vote {
                let force = matches!(m.body, MessageBody::Vote { transfer: true, .. });
                let in_lease = self.cfg.check_quorum
                    && (self.leader.is_some() || self.lease_guard)
                    && self.election_elapsed < self.election_timeout();
                if !force && in_lease {
                    // We heard from a leader recently: do not help depose it (and do not
                    // bump our term). This is what makes leases and check-quorum sound.
                    self.counters.lease_ignored_votes += 1;
                    return;
                }
            }
            match m.body {
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { reject: false } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::SnapshotChunk { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            self.counters.stale_term += 1;
            match m.body {
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // A stale leader (e.g. after a partition) would otherwise never learn of
                    // the newer term: with pre-vote/check-quorum nobody campaigns against it.
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::AppendResponse {
                            index: 0,
                            reject: None,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::PreVoteResponse { reject: true },
                    );
                }
                _ => {}
            }
            return;
        }

        match m.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_vote_request(m.from, m.term, true, last_index, last_term),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(m.from, m.term, false, last_index, last_term),
            body => match self.role {
                Role::Leader => self.step_leader(m.from, body),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m.from, m.term, body),
                Role::Follower => self.step_follower(m.from, body),
            },
        }
    }

    pub(super) fn step_leader(&mut self, from: NodeId, body: MessageBody) {
        match body {
            MessageBody::AppendResponse { index, reject } => {
                self.handle_append_response(from, index, reject)
            }
            MessageBody::HeartbeatResponse { ctx, lease_tick } => {
                self.handle_heartbeat_response(from, ctx, lease_tick)
            }
            MessageBody::SnapshotAck {
                index,
                snap_term,
                next_offset,
            } => self.handle_snapshot_ack(from, index, snap_term, next_offset),
            MessageBody::ReadIndex { ctx } => {
                if !self.tracker.progress.contains_key(&from) {
                    self.counters.unknown_sender += 1;
                    self.counters.dropped_reads += 1;
                    return;
                }
                self.handle_read_index(from, ctx);
            }
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::SnapshotChunk { .. } => {
                // Another leader in our term cannot exist in honest Raft.
                self.counters.malformed += 1;
            }
            _ => self.counters.unexpected += 1,
        }
    }

    pub(super) fn step_candidate(&mut self, from: NodeId, term: Term, body: MessageBody) {
        match body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::SnapshotChunk { .. } => {
                self.become_follower(term, Some(from));
                self.step_follower(from, body);
            }
            MessageBody::PreVoteResponse { reject } if self.role == Role::PreCandidate => {
                self.handle_poll_response(from, !reject)
            }
            MessageBody::VoteResponse { reject } if self.role == Role::Candidate => {
                self.handle_poll_response(from, !reject)
            }
            MessageBody::ReadIndex { .. } => self.counters.dropped_reads += 1,
            _ => self.counters.unexpected += 1,
        }
    }

    pub(super) fn step_follower(&mut self, from: NodeId, body: MessageBody) {
        match body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.handle_append(from, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat {
                commit,
                ctx,
                lease_tick,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.log.commit_to(commit);
                self.send(
                    from,
                    self.term,
                    MessageBody::HeartbeatResponse { ctx, lease_tick },
                );
            }
            MessageBody::SnapshotChunk {
                meta,
                total_len,
                checksum,
                offset,
                data,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.handle_snapshot_chunk(from, meta, total_len, checksum, offset, data);
            }
            MessageBody::TimeoutNow => {
                // Only the current leader may hand over leadership.
                if self.leader == Some(from) {
                    self.hup(true);
                } else {
                    self.counters.unexpected += 1;
                }
            }
            MessageBody::ReadIndex { ctx } => match self.leader {
                Some(l) if l != from => self.send(l, self.term, MessageBody::ReadIndex { ctx }),
                _ => self.counters.dropped_reads += 1,
            },
            MessageBody::ReadIndexResponse { ctx, index } => {
                if self.leader == Some(from) {
                    self.read_states.push(ReadState { index, ctx });
                } else {
                    self.counters.unexpected += 1;
                }
            }
            _ => self.counters.unexpected += 1,
        }
    }
}
