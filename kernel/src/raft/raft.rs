//! The Raft state machine: roles, elections, replication, reads, snapshots, membership and
//! leadership transfer. It is driven by [`RawNode`](super::RawNode) and does no I/O.

use alloc::vec;
use alloc::vec::Vec;

use super::config::{Config, SplitMix64};
use super::confchange::{self, Changer};
use super::crc::crc32c;
use super::error::{DropReason, Error, Result};
use super::log::{AppendOutcome, RaftLog};
use super::progress::{Progress, ProgressState};
use super::quorum::VoteResult;
use super::read_only::{ReadOnly, ReadOnlyOption, ReadState};
use super::status::{Counters, Role, SoftState};
use super::storage::Storage;
use super::tracker::{ProgressMap, ProgressTracker, TrackerConfig};
use super::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId, RejectHint, Snapshot,
    SnapshotMeta, Term,
};

/// Largest term or index accepted from the network. Nothing legitimate gets near it (2^62
/// entries), and the bound keeps every `+ 1` on values that came from input far from overflow.
pub const MAX_TERM_OR_INDEX: u64 = 1 << 62;

fn within_limits(m: &Message) -> bool {
    let ok = |v: u64| v <= MAX_TERM_OR_INDEX;
    if !ok(m.term) {
        return false;
    }
    match &m.body {
        MessageBody::PreVote { last_index, last_term } | MessageBody::Vote { last_index, last_term, .. } => {
            ok(*last_index) && ok(*last_term)
        }
        MessageBody::Append { prev_index, prev_term, entries, commit } => {
            ok(*prev_index)
                && ok(*prev_term)
                && ok(*commit)
                && ok(prev_index.saturating_add(entries.len() as u64))
                && entries.iter().all(|e| ok(e.index) && ok(e.term))
        }
        MessageBody::AppendResponse { index, reject } => {
            ok(*index) && reject.is_none_or(|h| ok(h.index) && ok(h.term))
        }
        MessageBody::Heartbeat { commit, lease_tick, .. } => ok(*commit) && ok(*lease_tick),
        MessageBody::HeartbeatResponse { lease_tick, .. } => ok(*lease_tick),
        MessageBody::SnapshotChunk { meta, total_len, offset, .. } => {
            ok(meta.index) && ok(meta.term) && ok(*total_len) && ok(*offset)
        }
        MessageBody::SnapshotAck { index, snap_term, next_offset } => ok(*index) && ok(*snap_term) && ok(*next_offset),
        MessageBody::ReadIndexResponse { index, .. } => ok(*index),
        MessageBody::PreVoteResponse { .. }
        | MessageBody::VoteResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReadIndex { .. } => true,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CampaignKind {
    PreElection,
    Election,
    Transfer,
}

/// A snapshot being received in chunks.
#[derive(Debug)]
struct IncomingSnapshot {
    from: NodeId,
    meta: SnapshotMeta,
    total_len: u64,
    checksum: u32,
    data: Vec<u8>,
}

/// The snapshot the leader is currently streaming, cached so chunks are cut from one copy.
#[derive(Debug)]
struct SnapshotCache {
    snap: Snapshot,
    checksum: u32,
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
    uncommitted_size: u64,
    read_only: ReadOnly,
    /// Reads received before the leader committed an entry of its term.
    pending_reads: Vec<(NodeId, Vec<u8>)>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    rng: SplitMix64,
    pub cfg: Config,
    /// Messages that may be sent immediately.
    pub msgs: Vec<Message>,
    /// Messages that may be sent only after the next Ready's writes are durable.
    pub msgs_after: Vec<Message>,
    pub read_states: Vec<ReadState>,
    pub counters: Counters,
    /// Proposals were appended; broadcast them at the next Ready (batching).
    pending_bcast: bool,
    snap_cache: Option<SnapshotCache>,
    incoming_snapshot: Option<IncomingSnapshot>,
    /// The highest term known to be durable; messages of a newer term wait for persistence.
    pub durable_term: Term,
    /// Ticks since we became leader (the clock of the leader lease).
    leader_ticks: u64,
    /// Set once we sent `TimeoutNow`: the target may win at any time, so no more lease reads
    /// in this term.
    lease_revoked: bool,
    /// After a (re)start with lease reads, refuse votes for one election timeout: we may have
    /// promised a leader our lease before the crash.
    lease_guard: bool,
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
            return Err(Error::InvalidConfig("applied index is beyond the committed index"));
        }
        let term = r.term;
        r.become_follower(term, None);
        r.lease_guard = r.cfg.read_only == ReadOnlyOption::LeaseBased;
        Ok(r)
    }

    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }

    pub fn soft_state(&self) -> SoftState {
        SoftState { leader: self.leader, role: self.role }
    }

    fn election_timeout(&self) -> u32 {
        self.cfg.election_tick
    }

    // ----- sending -------------------------------------------------------------------------

    fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let after = matches!(
            body,
            MessageBody::Vote { .. } | MessageBody::VoteResponse { .. } | MessageBody::AppendResponse { .. }
        );
        let m = Message { from: self.id, to, term, body };
        if after {
            self.msgs_after.push(m);
        } else {
            self.msgs.push(m);
        }
    }

    /// Sends an append (or a snapshot) to `to` if flow control allows.
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.tracker.progress.get(&to) else { return false };
        if pr.is_paused() || to == self.id {
            return false;
        }
        let prev_index = pr.next.saturating_sub(1);
        let prev_term = self.log.term(prev_index);
        let ents = self.log.entries(pr.next, self.cfg.max_size_per_msg);
        let (prev_term, ents) = match (prev_term, ents) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(Error::Compacted), _) | (_, Err(Error::Compacted)) => return self.maybe_send_snapshot(to),
            (Err(Error::CorruptEntry { .. }), _) | (_, Err(Error::CorruptEntry { .. })) => {
                self.counters.corrupt += 1;
                return false;
            }
            _ => {
                self.counters.storage_errors += 1;
                return false;
            }
        };
        if ents.is_empty() && !send_if_empty {
            return false;
        }
        let count = ents.len();
        let bytes: u64 = ents.iter().map(Entry::size).sum();
        let last = prev_index + count as u64;
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.sent_entries(count, last, bytes);
        }
        let commit = self.log.committed;
        self.send(to, self.term, MessageBody::Append { prev_index, prev_term, entries: ents, commit });
        true
    }

    fn send_append(&mut self, to: NodeId) {
        self.maybe_send_append(to, true);
    }

    fn maybe_send_snapshot(&mut self, to: NodeId) -> bool {
        let active = self.tracker.progress.get(&to).is_some_and(|p| p.recent_active);
        if !active {
            return false;
        }
        let snap = match self.log.snapshot() {
            Ok(s) => s,
            Err(Error::SnapshotTemporarilyUnavailable) => return false,
            Err(_) => {
                self.counters.storage_errors += 1;
                return false;
            }
        };
        if snap.is_empty() {
            self.counters.storage_errors += 1;
            return false;
        }
        let cached_index = self.snap_cache.as_ref().map(|c| (c.snap.meta.index, c.snap.meta.term));
        if cached_index != Some((snap.meta.index, snap.meta.term)) {
            // A newer snapshot replaces the cache; transfers of the old one are aborted and
            // restart (with the newer one) on their next probe.
            let checksum = crc32c(&snap.data);
            self.snap_cache = Some(SnapshotCache { snap, checksum });
            let ids: Vec<NodeId> = self.tracker.progress.keys().copied().collect();
            for id in ids {
                if id != to {
                    self.abort_snapshot_if_stale(id);
                }
            }
        }
        let Some(c) = &self.snap_cache else { return false };
        let (index, term, total) = (c.snap.meta.index, c.snap.meta.term, c.snap.data.len() as u64);
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.become_snapshot(index, term, total);
        }
        self.send_snapshot_chunk(to);
        true
    }

    fn abort_snapshot_if_stale(&mut self, id: NodeId) {
        let cache = self.snap_cache.as_ref().map(|c| c.snap.meta.index);
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            if pr.state == ProgressState::Snapshot && pr.transfer.map(|t| t.index) != cache {
                pr.become_probe();
                self.counters.snapshot_aborts += 1;
            }
        }
    }

    /// Sends the chunk starting at the acknowledged offset.
    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(c) = &self.snap_cache else { return };
        let Some(pr) = self.tracker.progress.get_mut(&to) else { return };
        let Some(x) = pr.transfer.as_mut() else { return };
        if x.index != c.snap.meta.index || x.term != c.snap.meta.term {
            return;
        }
        x.since_send = 0;
        let total = c.snap.data.len() as u64;
        // When everything is acknowledged but the install is not confirmed, re-send the last
        // chunk so the follower answers (it replies with its commit index once installed).
        let mut start = x.acked.min(total);
        if start == total && total > 0 {
            start = total.saturating_sub(1) / self.cfg.snapshot_chunk_size * self.cfg.snapshot_chunk_size;
        }
        let end = start.saturating_add(self.cfg.snapshot_chunk_size).min(total);
        let data = c.snap.data.get(start as usize..end as usize).unwrap_or(&[]).to_vec();
        let body = MessageBody::SnapshotChunk {
            meta: c.snap.meta.clone(),
            total_len: total,
            checksum: c.checksum,
            offset: start,
            data,
        };
        self.send(to, self.term, body);
    }

    pub fn bcast_append(&mut self) {
        let ids: Vec<NodeId> = self.tracker.progress.keys().copied().collect();
        for id in ids {
            if id != self.id {
                self.send_append(id);
            }
        }
    }

    fn bcast_heartbeat(&mut self, ctx: Option<Vec<u8>>) {
        let targets: Vec<(NodeId, Index)> = self
            .tracker
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, p)| (*id, p.matched.min(self.log.committed)))
            .collect();
        let lease_tick = self.leader_ticks;
        for (id, commit) in targets {
            self.send(id, self.term, MessageBody::Heartbeat { commit, ctx: ctx.clone(), lease_tick });
        }
    }

    /// Sends out proposals appended since the last Ready, batched into one append per follower.
    pub fn flush_proposals(&mut self) {
        if self.pending_bcast {
            self.pending_bcast = false;
            if self.role == Role::Leader {
                self.bcast_append();
            }
        }
    }

    pub fn has_pending_bcast(&self) -> bool {
        self.pending_bcast
    }

    // ----- role changes ------------------------------------------------------------------

    fn reset(&mut self, term: Term) {
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

    fn reset_randomized_election_timeout(&mut self) {
        let et = self.election_timeout();
        self.randomized_election_timeout = et + self.rng.below(u64::from(et)) as u32;
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
        self.log.append(&[Entry::new(self.term, idx, EntryKind::Normal, Vec::new())]);
        self.maybe_commit_self();
    }

    fn promotable(&self) -> bool {
        self.tracker.progress.get(&self.id).is_some_and(|p| !p.is_learner)
            && self.log.unstable.snapshot.is_none()
    }

    // ----- ticks -----------------------------------------------------------------------

    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.election_timeout() {
            self.lease_guard = false;
        }
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    fn tick_heartbeat(&mut self) {
        self.leader_ticks = self.leader_ticks.saturating_add(1);
        self.heartbeat_elapsed = self.heartbeat_elapsed.saturating_add(1);
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.election_timeout() {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                if !self.tracker.quorum_active(self.id) {
                    let t = self.term;
                    self.become_follower(t, None);
                    return;
                }
                let me = self.id;
                for (id, p) in self.tracker.progress.iter_mut() {
                    p.recent_active = *id == me;
                }
            }
            if self.transferee.is_some() {
                self.abort_leader_transfer();
            }
        }
        if self.role != Role::Leader {
            return;
        }
        self.tick_snapshot_transfers();
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            // Re-confirm the newest pending read too, in case its heartbeat round was lost.
            let ctx = self.read_only.last_pending_ctx().cloned();
            self.bcast_heartbeat(ctx);
        }
    }

    fn tick_snapshot_transfers(&mut self) {
        let mut resend = Vec::new();
        let mut abort = Vec::new();
        let (resend_after, abort_after) = (self.cfg.snapshot_resend_ticks, self.cfg.snapshot_abort_ticks);
        for (id, p) in self.tracker.progress.iter_mut() {
            if let Some(x) = p.transfer.as_mut() {
                x.idle_ticks = x.idle_ticks.saturating_add(1);
                x.since_send = x.since_send.saturating_add(1);
                if x.idle_ticks >= abort_after {
                    abort.push(*id);
                } else if x.since_send >= resend_after {
                    resend.push(*id);
                }
            }
        }
        for id in abort {
            self.report_snapshot_failure(id);
        }
        for id in resend {
            self.send_snapshot_chunk(id);
        }
    }

    /// The transport could not deliver the snapshot (or the follower is gone): abort the
    /// transfer. Replication restarts with a probe once the follower answers a heartbeat,
    /// and a new transfer starts if one is still needed, so the follower never stalls.
    pub fn report_snapshot_failure(&mut self, id: NodeId) {
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            if pr.state == ProgressState::Snapshot {
                pr.become_probe();
                pr.probe_sent = true;
                self.counters.snapshot_aborts += 1;
            }
        }
    }

    /// The transport could not reach `id`: stop streaming optimistically.
    pub fn report_unreachable(&mut self, id: NodeId) {
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    // ----- elections -------------------------------------------------------------------

    fn has_unapplied_conf_change(&self) -> bool {
        let lo = self.log.applied + 1;
        let hi = self.log.committed + 1;
        if lo >= hi {
            return false;
        }
        match self.log.slice(lo, hi, u64::MAX) {
            Ok(ents) => ents.iter().any(|e| e.kind == EntryKind::ConfChange),
            // If we cannot tell, be conservative and do not campaign.
            Err(_) => true,
        }
    }

    /// Starts an election (or a pre-election).
    pub fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        if self.has_unapplied_conf_change() {
            // Our configuration may be about to change; campaigning now could use a stale one.
            return;
        }
        let kind = if transfer {
            CampaignKind::Transfer
        } else if self.cfg.pre_vote {
            CampaignKind::PreElection
        } else {
            CampaignKind::Election
        };
        self.campaign(kind);
    }

    fn campaign(&mut self, kind: CampaignKind) {
        let vote_term = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        if self.poll(self.id, true) == VoteResult::Won {
            if kind == CampaignKind::PreElection {
                self.campaign(CampaignKind::Election);
            } else {
                self.become_leader();
            }
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let ids: Vec<NodeId> = self.tracker.config.voters.ids().into_iter().collect();
        for id in ids {
            if id == self.id {
                continue;
            }
            let body = if kind == CampaignKind::PreElection {
                MessageBody::PreVote { last_index, last_term }
            } else {
                MessageBody::Vote { last_index, last_term, transfer: kind == CampaignKind::Transfer }
            };
            self.send(id, vote_term, body);
        }
    }

    fn poll(&mut self, id: NodeId, granted: bool) -> VoteResult {
        self.tracker.record_vote(id, granted);
        self.tracker.tally()
    }

    // ----- step ------------------------------------------------------------------------

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
            let is_vote = matches!(m.body, MessageBody::Vote { .. } | MessageBody::PreVote { .. });
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
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::SnapshotChunk { .. } => {
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
                    self.send(m.from, self.term, MessageBody::AppendResponse { index: 0, reject: None });
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, self.term, MessageBody::PreVoteResponse { reject: true });
                }
                _ => {}
            }
            return;
        }

        match m.body {
            MessageBody::PreVote { last_index, last_term } => self.handle_vote_request(m.from, m.term, true, last_index, last_term),
            MessageBody::Vote { last_index, last_term, .. } => {
                self.handle_vote_request(m.from, m.term, false, last_index, last_term)
            }
            body => match self.role {
                Role::Leader => self.step_leader(m.from, body),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m.from, m.term, body),
                Role::Follower => self.step_follower(m.from, body),
            },
        }
    }

    fn handle_vote_request(&mut self, from: NodeId, term: Term, pre: bool, last_index: Index, last_term: Term) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && term > self.term);
        if can_vote && self.log.is_up_to_date(last_index, last_term) {
            if pre {
                // Answered with the candidate's future term so it can count it.
                self.send(from, term, MessageBody::PreVoteResponse { reject: false });
            } else {
                self.election_elapsed = 0;
                self.vote = Some(from);
                self.send(from, self.term, MessageBody::VoteResponse { reject: false });
            }
        } else if pre {
            self.send(from, self.term, MessageBody::PreVoteResponse { reject: true });
        } else {
            self.send(from, self.term, MessageBody::VoteResponse { reject: true });
        }
    }

    fn step_leader(&mut self, from: NodeId, body: MessageBody) {
        match body {
            MessageBody::AppendResponse { index, reject } => self.handle_append_response(from, index, reject),
            MessageBody::HeartbeatResponse { ctx, lease_tick } => self.handle_heartbeat_response(from, ctx, lease_tick),
            MessageBody::SnapshotAck { index, snap_term, next_offset } => {
                self.handle_snapshot_ack(from, index, snap_term, next_offset)
            }
            MessageBody::ReadIndex { ctx } => {
                if !self.tracker.progress.contains_key(&from) {
                    self.counters.unknown_sender += 1;
                    self.counters.dropped_reads += 1;
                    return;
                }
                self.handle_read_index(from, ctx);
            }
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::SnapshotChunk { .. } => {
                // Another leader in our term cannot exist in honest Raft.
                self.counters.malformed += 1;
            }
            _ => self.counters.unexpected += 1,
        }
    }

    fn step_candidate(&mut self, from: NodeId, term: Term, body: MessageBody) {
        match body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::SnapshotChunk { .. } => {
                self.become_follower(term, Some(from));
                self.step_follower(from, body);
            }
            MessageBody::PreVoteResponse { reject } if self.role == Role::PreCandidate => {
                self.handle_poll_response(from, !reject)
            }
            MessageBody::VoteResponse { reject } if self.role == Role::Candidate => self.handle_poll_response(from, !reject),
            MessageBody::ReadIndex { .. } => self.counters.dropped_reads += 1,
            _ => self.counters.unexpected += 1,
        }
    }

    fn handle_poll_response(&mut self, from: NodeId, granted: bool) {
        match self.poll(from, granted) {
            VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    self.campaign(CampaignKind::Election);
                } else {
                    self.become_leader();
                    self.bcast_append();
                }
            }
            VoteResult::Lost => {
                let t = self.term;
                self.become_follower(t, None);
            }
            VoteResult::Pending => {}
        }
    }

    fn step_follower(&mut self, from: NodeId, body: MessageBody) {
        match body {
            MessageBody::Append { prev_index, prev_term, entries, commit } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.handle_append(from, prev_index, prev_term, entries, commit);
            }
            MessageBody::Heartbeat { commit, ctx, lease_tick } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.log.commit_to(commit);
                self.send(from, self.term, MessageBody::HeartbeatResponse { ctx, lease_tick });
            }
            MessageBody::SnapshotChunk { meta, total_len, checksum, offset, data } => {
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

    /// Checks an incoming batch: contiguous indices after `prev_index`, non-decreasing terms
    /// no newer than the message, and valid checksums.
    fn validate_entries(&mut self, prev_index: Index, prev_term: Term, msg_term: Term, ents: &[Entry]) -> bool {
        let mut expect = prev_index;
        let mut last_term = prev_term;
        for e in ents {
            let Some(next) = expect.checked_add(1) else {
                self.counters.malformed += 1;
                return false;
            };
            if e.index != next || e.term < last_term || e.term > msg_term {
                self.counters.malformed += 1;
                return false;
            }
            if e.verify().is_err() {
                self.counters.corrupt += 1;
                return false;
            }
            expect = next;
            last_term = e.term;
        }
        true
    }

    fn handle_append(&mut self, from: NodeId, prev_index: Index, prev_term: Term, ents: Vec<Entry>, commit: Index) {
        let msg_term = self.term;
        if !self.validate_entries(prev_index, prev_term, msg_term, &ents) {
            return;
        }
        if prev_index < self.log.committed {
            self.send(from, self.term, MessageBody::AppendResponse { index: self.log.committed, reject: None });
            return;
        }
        match self.log.maybe_append(prev_index, prev_term, commit, &ents) {
            AppendOutcome::Appended(last) => {
                self.send(from, self.term, MessageBody::AppendResponse { index: last, reject: None });
            }
            AppendOutcome::Mismatch => {
                // Tell the leader where to probe next (fast backtracking, Raft §5.3).
                let hint = prev_index.min(self.log.last_index());
                let (index, term) = self.log.find_conflict_by_term(hint, prev_term);
                let reject = Some(RejectHint { index, term });
                self.send(from, self.term, MessageBody::AppendResponse { index: prev_index, reject });
            }
            AppendOutcome::RewritesCommitted => self.counters.rewrite_committed += 1,
        }
    }

    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        total_len: u64,
        checksum: u32,
        offset: u64,
        data: Vec<u8>,
    ) {
        if meta.index <= self.log.committed {
            // Older than what we have: answer with our commit so the leader moves on.
            self.counters.stale_snapshot += 1;
            self.incoming_snapshot = None;
            self.send(from, self.term, MessageBody::AppendResponse { index: self.log.committed, reject: None });
            return;
        }
        let (index, snap_term) = (meta.index, meta.term);
        let same = self.incoming_snapshot.as_ref().is_some_and(|s| {
            s.from == from && s.meta == meta && s.total_len == total_len && s.checksum == checksum
        });
        if !same {
            if offset != 0 {
                // We do not have the beginning of this snapshot: ask for a restart.
                self.incoming_snapshot = None;
                self.send(from, self.term, MessageBody::SnapshotAck { index, snap_term, next_offset: 0 });
                return;
            }
            self.incoming_snapshot = Some(IncomingSnapshot { from, meta, total_len, checksum, data: Vec::new() });
        }
        let Some(inc) = self.incoming_snapshot.as_mut() else { return };
        let have = inc.data.len() as u64;
        if offset != have {
            // Duplicate or out-of-order chunk: tell the leader where to resume.
            self.send(from, self.term, MessageBody::SnapshotAck { index, snap_term, next_offset: have });
            return;
        }
        if have.saturating_add(data.len() as u64) > total_len {
            self.counters.malformed += 1;
            self.incoming_snapshot = None;
            self.send(from, self.term, MessageBody::SnapshotAck { index, snap_term, next_offset: 0 });
            return;
        }
        inc.data.extend_from_slice(&data);
        let have = inc.data.len() as u64;
        if have < total_len {
            self.send(from, self.term, MessageBody::SnapshotAck { index, snap_term, next_offset: have });
            return;
        }
        let Some(inc) = self.incoming_snapshot.take() else { return };
        if crc32c(&inc.data) != inc.checksum {
            self.counters.corrupt += 1;
            self.send(from, self.term, MessageBody::SnapshotAck { index, snap_term, next_offset: 0 });
            return;
        }
        let snap = Snapshot { meta: inc.meta, data: inc.data };
        if self.restore(snap) {
            let last = self.log.last_index();
            self.send(from, self.term, MessageBody::AppendResponse { index: last, reject: None });
        } else {
            let c = self.log.committed;
            self.send(from, self.term, MessageBody::AppendResponse { index: c, reject: None });
        }
    }

    /// Installs a complete snapshot. Returns false when it was not needed (or invalid).
    fn restore(&mut self, snap: Snapshot) -> bool {
        if snap.meta.index <= self.log.committed {
            self.counters.stale_snapshot += 1;
            return false;
        }
        if self.role != Role::Follower {
            return false;
        }
        // The snapshot's membership need not include us: a node removed and re-added under
        // the same id is brought back by a snapshot taken while it was out, and learns of
        // its re-addition from the entries that follow.
        let cs = &snap.meta.conf_state;
        if self.log.match_term(snap.meta.index, snap.meta.term) {
            // We already have the entries: just fast-forward the commit index.
            self.log.commit_to(snap.meta.index);
            return false;
        }
        let (tc, prs) = match confchange::restore(&self.tracker, cs, snap.meta.index) {
            Ok(x) => x,
            Err(_) => {
                self.counters.malformed += 1;
                return false;
            }
        };
        self.log.restore(snap);
        self.tracker.config = tc;
        self.tracker.progress = prs;
        let me = self.id;
        let last = self.log.last_index();
        if let Some(p) = self.tracker.progress.get_mut(&me) {
            p.matched = last;
            p.next = last + 1;
        }
        true
    }

    fn handle_append_response(&mut self, from: NodeId, index: Index, reject: Option<RejectHint>) {
        let last_index = self.log.last_index();
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            self.counters.unknown_sender += 1;
            return;
        };
        pr.recent_active = true;
        if let Some(hint) = reject {
            let mut probe = hint.index;
            if hint.term > 0 {
                probe = self.log.find_conflict_by_term(hint.index, hint.term).0;
            }
            let Some(pr) = self.tracker.progress.get_mut(&from) else { return };
            if pr.maybe_decr_to(index, probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from);
            } else {
                self.counters.stale_response += 1;
            }
            return;
        }
        if index > last_index {
            self.counters.malformed += 1;
            return;
        }
        let first_index = self.log.first_index();
        let old_paused = pr.is_paused();
        if !pr.maybe_update(index) {
            if index != 0 {
                self.counters.stale_response += 1;
            }
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot => {
                if pr.matched + 1 >= first_index {
                    pr.become_probe();
                    pr.become_replicate();
                }
            }
            ProgressState::Replicate => pr.inflights.free_le(index),
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else if old_paused {
            self.send_append(from);
        }
        // Fill the window (pipelining): keep sending while flow control allows.
        let mut guard = 0;
        while guard < 64 && self.maybe_send_append(from, false) {
            guard += 1;
        }
        if self.transferee == Some(from) {
            let matched = self.tracker.progress.get(&from).map_or(0, |p| p.matched);
            if matched == self.log.last_index() {
                self.send_timeout_now(from);
            }
        }
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.lease_revoked = true;
        self.send(to, self.term, MessageBody::TimeoutNow);
    }

    /// Whether the leader lease holds: a quorum acknowledged a heartbeat recent enough that
    /// none of them will vote for another candidate before the lease ends.
    pub fn lease_valid(&self) -> bool {
        if self.role != Role::Leader || self.lease_revoked || self.transferee.is_some() {
            return false;
        }
        let horizon = u64::from(self.election_timeout().saturating_sub(self.cfg.lease_margin_ticks));
        let now = self.leader_ticks;
        let fresh = |id: NodeId| {
            if id == self.id {
                return Some(true);
            }
            self.tracker.progress.get(&id).and_then(|p| p.lease_tick).map(|t| now < t.saturating_add(horizon))
        };
        self.tracker.config.voters.vote_result(&fresh) == VoteResult::Won
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, ctx: Option<Vec<u8>>, lease_tick: u64) {
        let last_index = self.log.last_index();
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            self.counters.unknown_sender += 1;
            return;
        };
        pr.recent_active = true;
        if lease_tick <= self.leader_ticks {
            // The follower heard from us no earlier than `lease_tick`, so it refuses other
            // candidates until `lease_tick + election_timeout` (its lease promise).
            pr.lease_tick = Some(pr.lease_tick.map_or(lease_tick, |t| t.max(lease_tick)));
        } else {
            self.counters.malformed += 1;
        }
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first_one();
        }
        if pr.matched < last_index {
            self.send_append(from);
        }
        let Some(ctx) = ctx else { return };
        let Some(acks) = self.read_only.recv_ack(from, &ctx) else { return };
        let won = self.tracker.config.voters.vote_result(&|id| Some(acks.contains(&id))) == VoteResult::Won;
        if !won {
            return;
        }
        for rs in self.read_only.advance(&ctx) {
            self.respond_read(rs.status.from, rs.status.index, rs.ctx);
        }
    }

    fn handle_snapshot_ack(&mut self, from: NodeId, index: Index, snap_term: Term, next_offset: u64) {
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            self.counters.unknown_sender += 1;
            return;
        };
        pr.recent_active = true;
        let Some(x) = pr.transfer.as_mut() else {
            self.counters.stale_response += 1;
            return;
        };
        if pr.state != ProgressState::Snapshot || x.index != index || x.term != snap_term {
            self.counters.stale_response += 1;
            return;
        }
        if next_offset > x.total {
            self.counters.malformed += 1;
            return;
        }
        x.acked = next_offset;
        x.idle_ticks = 0;
        if next_offset < x.total {
            self.send_snapshot_chunk(from);
        }
    }

    // ----- commit ------------------------------------------------------------------------

    /// Leader: advances the commit index to what a quorum has. Returns whether it moved.
    pub fn maybe_commit(&mut self) -> bool {
        let mci = self.tracker.committed();
        let before_in_term = self.committed_in_current_term();
        let moved = self.log.maybe_commit(mci, self.term);
        if moved && !before_in_term && self.committed_in_current_term() {
            self.release_pending_reads();
        }
        moved
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed).is_ok_and(|t| t == self.term)
    }

    /// The leader's own entries became durable up to `index`.
    fn maybe_commit_self(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let stable = self.log.stable_last_index();
        let me = self.id;
        if let Some(p) = self.tracker.progress.get_mut(&me) {
            p.maybe_update(stable);
        }
        if self.maybe_commit() {
            self.bcast_append();
        }
    }

    /// Storage acknowledged entries up to (`index`, `term`).
    pub fn on_persisted(&mut self, index: Index, term: Term) {
        self.log.stable_to(index, term);
        self.maybe_commit_self();
    }

    /// The application applied up to `index`.
    pub fn applied_to(&mut self, index: Index) {
        self.log.applied_to(index);
        if self.role == Role::Leader
            && self.tracker.config.auto_leave
            && self.log.applied >= self.pending_conf_index
        {
            // Leave the joint configuration automatically.
            if let Ok(data) = ConfChange::leave_joint().encode() {
                let idx = self.log.last_index() + 1;
                self.log.append(&[Entry::new(self.term, idx, EntryKind::ConfChange, data)]);
                self.pending_conf_index = idx;
                self.pending_bcast = true;
            }
        }
    }

    // ----- proposals -------------------------------------------------------------------

    fn check_can_propose(&self) -> core::result::Result<(), DropReason> {
        if self.role != Role::Leader {
            return Err(DropReason::NotLeader { leader: self.leader });
        }
        if !self.tracker.progress.contains_key(&self.id) {
            return Err(DropReason::Removed);
        }
        if self.transferee.is_some() {
            return Err(DropReason::TransferInProgress);
        }
        Ok(())
    }

    fn drop_proposal(&mut self, r: DropReason) -> Error {
        self.counters.dropped_proposals += 1;
        Error::ProposalDropped(r)
    }

    /// Appends entries as leader; returns the index of the last one.
    pub fn propose(&mut self, items: Vec<(EntryKind, Vec<u8>)>) -> Result<Index> {
        if let Err(r) = self.check_can_propose() {
            return Err(self.drop_proposal(r));
        }
        let size: u64 = items.iter().map(|(_, d)| d.len() as u64).sum();
        if self.cfg.max_uncommitted_size > 0
            && self.uncommitted_size > 0
            && self.uncommitted_size.saturating_add(size) > self.cfg.max_uncommitted_size
        {
            return Err(self.drop_proposal(DropReason::UncommittedCapExceeded));
        }
        let mut idx = self.log.last_index();
        let mut ents = Vec::with_capacity(items.len());
        for (kind, data) in items {
            idx += 1;
            ents.push(Entry::new(self.term, idx, kind, data));
        }
        self.uncommitted_size = self.uncommitted_size.saturating_add(size);
        let last = self.log.append(&ents);
        self.pending_bcast = true;
        Ok(last)
    }

    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<Index> {
        if let Err(r) = self.check_can_propose() {
            return Err(self.drop_proposal(r));
        }
        let joint = self.tracker.config.voters.is_joint();
        let refuse = if self.pending_conf_index > self.log.applied {
            true
        } else if joint {
            !cc.is_leave_joint()
        } else {
            cc.is_leave_joint()
        };
        if refuse {
            return Err(self.drop_proposal(DropReason::ConfChangePending));
        }
        let data = cc.encode()?;
        let idx = self.propose(vec![(EntryKind::ConfChange, data)])?;
        self.pending_conf_index = idx;
        Ok(idx)
    }

    /// Committed entries were handed to the application: they no longer count as uncommitted.
    pub fn reduce_uncommitted_size(&mut self, ents: &[Entry]) {
        if self.role != Role::Leader {
            return;
        }
        let size: u64 = ents.iter().map(|e| e.data.len() as u64).sum();
        self.uncommitted_size = self.uncommitted_size.saturating_sub(size);
    }

    // ----- reads -----------------------------------------------------------------------

    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<()> {
        match self.role {
            Role::Leader => {
                self.handle_read_index(self.id, ctx);
                Ok(())
            }
            _ => match self.leader {
                Some(l) => {
                    self.send(l, self.term, MessageBody::ReadIndex { ctx });
                    Ok(())
                }
                None => {
                    self.counters.dropped_reads += 1;
                    Err(Error::NoLeader)
                }
            },
        }
    }

    fn handle_read_index(&mut self, from: NodeId, ctx: Vec<u8>) {
        let voters = &self.tracker.config.voters;
        if !voters.is_joint() && voters.incoming.voters.len() == 1 && voters.incoming.voters.contains(&self.id) {
            let c = self.log.committed;
            self.respond_read(from, c, ctx);
            return;
        }
        if !self.committed_in_current_term() {
            // Our commit index may lag the previous leader's until we commit in our term.
            if self.pending_reads.len() >= self.cfg.max_pending_reads {
                self.counters.dropped_reads += 1;
                return;
            }
            self.pending_reads.push((from, ctx));
            return;
        }
        self.serve_read(from, ctx);
    }

    fn serve_read(&mut self, from: NodeId, ctx: Vec<u8>) {
        let committed = self.log.committed;
        match self.cfg.read_only {
            ReadOnlyOption::Safe => {
                if self.read_only.add_request(committed, from, ctx.clone(), self.id) {
                    self.bcast_heartbeat(Some(ctx));
                } else {
                    self.counters.dropped_reads += 1;
                }
            }
            ReadOnlyOption::LeaseBased if self.lease_valid() => self.respond_read(from, committed, ctx),
            ReadOnlyOption::LeaseBased => {
                // No valid lease (just elected, transferring, or a quorum is slow): confirm
                // leadership the safe way.
                if self.read_only.add_request(committed, from, ctx.clone(), self.id) {
                    self.bcast_heartbeat(Some(ctx));
                } else {
                    self.counters.dropped_reads += 1;
                }
            }
        }
    }

    fn release_pending_reads(&mut self) {
        for (from, ctx) in core::mem::take(&mut self.pending_reads) {
            self.serve_read(from, ctx);
        }
    }

    fn respond_read(&mut self, to: NodeId, index: Index, ctx: Vec<u8>) {
        if to == self.id {
            self.read_states.push(ReadState { index, ctx });
        } else {
            self.send(to, self.term, MessageBody::ReadIndexResponse { ctx, index });
        }
    }

    // ----- membership ------------------------------------------------------------------

    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState> {
        let changer = Changer::new(&self.tracker, self.log.last_index());
        let (cfg, prs) = if cc.is_leave_joint() {
            changer.leave_joint()?
        } else if let Some(auto_leave) = cc.enters_joint() {
            changer.enter_joint(auto_leave, &cc.changes)?
        } else {
            changer.simple(&cc.changes)?
        };
        Ok(self.switch_to_config(cfg, prs))
    }

    fn switch_to_config(&mut self, cfg: TrackerConfig, prs: ProgressMap) -> ConfState {
        self.tracker.config = cfg;
        self.tracker.progress = prs;
        let cs = self.tracker.config.to_conf_state();
        let me = self.tracker.progress.get(&self.id);
        let removed_or_learner = me.is_none_or(|p| p.is_learner);
        if removed_or_learner && self.role == Role::Leader {
            if self.cfg.step_down_on_removal {
                let t = self.term;
                self.become_follower(t, None);
            }
            return cs;
        }
        if self.role != Role::Leader || cs.voters.is_empty() {
            return cs;
        }
        // The quorum changed: the commit index may move, and new members need appends.
        if self.maybe_commit() {
            self.bcast_append();
        } else {
            let ids: Vec<NodeId> = self.tracker.progress.keys().copied().collect();
            for id in ids {
                if id != self.id {
                    self.maybe_send_append(id, false);
                }
            }
        }
        if let Some(t) = self.transferee {
            if !self.tracker.is_voter(t) {
                self.abort_leader_transfer();
            }
        }
        cs
    }

    // ----- leadership transfer ---------------------------------------------------------

    pub fn transfer_leader(&mut self, to: NodeId) -> Result<()> {
        if self.role != Role::Leader {
            return Err(Error::ProposalDropped(DropReason::NotLeader { leader: self.leader }));
        }
        if to == self.id {
            return Ok(());
        }
        let Some(pr) = self.tracker.progress.get(&to) else {
            return Err(Error::InvalidConfig("transfer target is not a member"));
        };
        if pr.is_learner {
            return Err(Error::InvalidConfig("transfer target is a learner"));
        }
        let matched = pr.matched;
        if self.transferee == Some(to) {
            return Ok(());
        }
        if self.transferee.is_some() {
            self.abort_leader_transfer();
        }
        self.transferee = Some(to);
        // The transfer must complete within an election timeout (checked in tick).
        self.election_elapsed = 0;
        if matched == self.log.last_index() {
            self.send_timeout_now(to);
        } else {
            self.send_append(to);
        }
        Ok(())
    }

    pub fn abort_leader_transfer(&mut self) {
        if self.transferee.take().is_some() {
            self.counters.transfer_aborts += 1;
        }
    }
}
