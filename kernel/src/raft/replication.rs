//! Log replication: appends, their answers, commit, proposals and flow control.

use super::machine::*;

impl<S: Storage> Raft<S> {
    /// Sends an append (or a snapshot) to `to` if flow control allows.
    pub(super) fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.tracker.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() || to == self.id {
            return false;
        }
        let prev_index = pr.next.saturating_sub(1);
        let prev_term = self.log.term(prev_index);
        let ents = self.log.entries(pr.next, self.cfg.max_size_per_msg);
        let (prev_term, ents) = match (prev_term, ents) {
            (Ok(t), Ok(e)) => (t, e),
            (Err(Error::Compacted), _) | (_, Err(Error::Compacted)) => {
                return self.maybe_send_snapshot(to)
            }
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
        self.send(
            to,
            self.term,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries: ents,
                commit,
            },
        );
        true
    }

    pub(super) fn send_append(&mut self, to: NodeId) {
        self.maybe_send_append(to, true);
    }

    pub fn bcast_append(&mut self) {
        let ids: Vec<NodeId> = self.tracker.progress.keys().copied().collect();
        for id in ids {
            if id != self.id {
                self.send_append(id);
            }
        }
    }

    pub(super) fn bcast_heartbeat(&mut self, ctx: Option<Vec<u8>>) {
        let targets: Vec<(NodeId, Index)> = self
            .tracker
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, p)| (*id, p.matched.min(self.log.committed)))
            .collect();
        let lease_tick = self.leader_ticks;
        for (id, commit) in targets {
            self.send(
                id,
                self.term,
                MessageBody::Heartbeat {
                    commit,
                    ctx: ctx.clone(),
                    lease_tick,
                },
            );
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

    /// The transport could not reach `id`: stop streaming optimistically.
    pub fn report_unreachable(&mut self, id: NodeId) {
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    /// Checks an incoming batch: contiguous indices after `prev_index`, non-decreasing terms
    /// no newer than the message, and valid checksums.
    pub(super) fn validate_entries(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        msg_term: Term,
        ents: &[Entry],
    ) -> bool {
        // The first malformed entry (or the end); checksums are then checked in one batch up
        // to it, so the outcome is that of checking entry by entry, in order.
        let mut expect = prev_index;
        let mut last_term = prev_term;
        let mut well_formed = ents.len();
        for (i, e) in ents.iter().enumerate() {
            let next = expect.checked_add(1);
            if next != Some(e.index) || e.term < last_term || e.term > msg_term {
                well_formed = i;
                break;
            }
            expect = e.index;
            last_term = e.term;
        }
        if Entry::first_corrupt(&ents[..well_formed]).is_some() {
            self.counters.corrupt += 1;
            return false;
        }
        if well_formed < ents.len() {
            self.counters.malformed += 1;
            return false;
        }
        true
    }

    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        ents: Vec<Entry>,
        commit: Index,
    ) {
        let msg_term = self.term;
        if !self.validate_entries(prev_index, prev_term, msg_term, &ents) {
            return;
        }
        if prev_index < self.log.committed {
            self.send_append_ack(from, self.log.committed);
            return;
        }
        match self.log.maybe_append(prev_index, prev_term, commit, ents) {
            AppendOutcome::Appended(last) => self.send_append_ack(from, last),
            AppendOutcome::Mismatch => {
                // Tell the leader where to probe next (fast backtracking, Raft §5.3).
                let hint = prev_index.min(self.log.last_index());
                let (index, term) = self.log.find_conflict_by_term(hint, prev_term);
                let reject = Some(RejectHint { index, term });
                self.send(
                    from,
                    self.term,
                    MessageBody::AppendResponse {
                        index: prev_index,
                        reject,
                    },
                );
            }
            AppendOutcome::RewritesCommitted => self.counters.rewrite_committed += 1,
        }
    }

    /// Accepts an append (or a snapshot): our log matches the sender's up to `index`.
    pub(super) fn send_append_ack(&mut self, to: NodeId, index: Index) {
        self.send(
            to,
            self.term,
            MessageBody::AppendResponse {
                index,
                reject: None,
            },
        );
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        index: Index,
        reject: Option<RejectHint>,
    ) {
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
            let Some(pr) = self.tracker.progress.get_mut(&from) else {
                return;
            };
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

    pub(super) fn handle_heartbeat_response(
        &mut self,
        from: NodeId,
        ctx: Option<Vec<u8>>,
        lease_tick: u64,
    ) {
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
        let Some(acks) = self.read_only.recv_ack(from, &ctx, lease_tick) else {
            return;
        };
        let won = self
            .tracker
            .config
            .voters
            .vote_result(&|id| Some(acks.contains(&id)))
            == VoteResult::Won;
        if !won {
            return;
        }
        for rs in self.read_only.advance(&ctx, self.leader_ticks) {
            self.respond_read(rs.status.from, rs.status.index, rs.ctx);
        }
    }

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

    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log
            .term(self.log.committed)
            .is_ok_and(|t| t == self.term)
    }

    /// The leader's own entries became durable up to `index`.
    pub(super) fn maybe_commit_self(&mut self) {
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
                self.log.append(vec![Entry::new(
                    self.term,
                    idx,
                    EntryKind::ConfChange,
                    data,
                )]);
                self.pending_conf_index = idx;
                self.pending_bcast = true;
            }
        }
    }

    pub(super) fn check_can_propose(&self) -> core::result::Result<(), DropReason> {
        if self.role != Role::Leader {
            return Err(DropReason::NotLeader {
                leader: self.leader,
            });
        }
        if !self.tracker.progress.contains_key(&self.id) {
            return Err(DropReason::Removed);
        }
        if self.transferee.is_some() {
            return Err(DropReason::TransferInProgress);
        }
        Ok(())
    }

    pub(super) fn drop_proposal(&mut self, r: DropReason) -> Error {
        self.counters.dropped_proposals += 1;
        Error::ProposalDropped(r)
    }

    /// Appends entries as leader; returns the index of the last one. Takes any iterator so
    /// that a single proposal needs no intermediate `Vec`: the entries are built in place,
    /// their payloads moved, not copied.
    pub fn propose(
        &mut self,
        items: impl IntoIterator<Item = (EntryKind, Payload)>,
    ) -> Result<Index> {
        if let Err(r) = self.check_can_propose() {
            return Err(self.drop_proposal(r));
        }
        let first = self.log.last_index() + 1;
        let term = self.term;
        let ents = (first..).zip(items).map(|(index, (kind, data))| Entry {
            term,
            index,
            kind,
            data,
            checksum: 0,
        });
        let (cap, uncommitted) = (self.cfg.max_uncommitted_size, self.uncommitted_size);
        let mut size = 0;
        let appended = self.log.append_new(ents, |new| {
            size = new.iter().map(|e| e.data.len() as u64).sum();
            if cap > 0 && uncommitted > 0 && uncommitted.saturating_add(size) > cap {
                return false;
            }
            // Checksummed as a batch: two at a time (the same values as `Entry::new`).
            Entry::seal_all(new);
            true
        });
        let Some(last) = appended else {
            return Err(self.drop_proposal(DropReason::UncommittedCapExceeded));
        };
        self.uncommitted_size = uncommitted.saturating_add(size);
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
        let idx = self.propose([(EntryKind::ConfChange, Payload::from(data))])?;
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
}
