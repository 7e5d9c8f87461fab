//! Chunked snapshot transfer: sending, resuming, aborting, receiving and installing.

use super::machine::*;

impl<S: Storage> Raft<S> {
    pub(super) fn maybe_send_snapshot(&mut self, to: NodeId) -> bool {
        let active = self
            .tracker
            .progress
            .get(&to)
            .is_some_and(|p| p.recent_active);
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
        let cached_index = self
            .snap_cache
            .as_ref()
            .map(|c| (c.snap.meta.index, c.snap.meta.term));
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
        let Some(c) = &self.snap_cache else {
            return false;
        };
        let (index, term, total) = (
            c.snap.meta.index,
            c.snap.meta.term,
            c.snap.data.len() as u64,
        );
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.become_snapshot(index, term, total);
        }
        self.send_snapshot_chunk(to);
        true
    }

    pub(super) fn abort_snapshot_if_stale(&mut self, id: NodeId) {
        let cache = self.snap_cache.as_ref().map(|c| c.snap.meta.index);
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            if pr.state == ProgressState::Snapshot && pr.transfer.map(|t| t.index) != cache {
                pr.become_probe();
                self.counters.snapshot_aborts += 1;
            }
        }
    }

    /// Sends the chunk starting at the acknowledged offset.
    pub(super) fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(c) = &self.snap_cache else { return };
        let Some(pr) = self.tracker.progress.get_mut(&to) else {
            return;
        };
        let Some(x) = pr.transfer.as_mut() else {
            return;
        };
        if x.index != c.snap.meta.index || x.term != c.snap.meta.term {
            return;
        }
        x.since_send = 0;
        let total = c.snap.data.len() as u64;
        // When everything is acknowledged but the install is not confirmed, re-send the last
        // chunk so the follower answers (it replies with its commit index once installed).
        let mut start = x.acked.min(total);
        if start == total && total > 0 {
            start = total.saturating_sub(1) / self.cfg.snapshot_chunk_size
                * self.cfg.snapshot_chunk_size;
        }
        let end = start
            .saturating_add(self.cfg.snapshot_chunk_size)
            .min(total);
        let data = c
            .snap
            .data
            .get(start as usize..end as usize)
            .unwrap_or(&[])
            .to_vec();
        let body = MessageBody::SnapshotChunk {
            meta: c.snap.meta.clone(),
            total_len: total,
            checksum: c.checksum,
            offset: start,
            data,
        };
        self.send(to, self.term, body);
    }

    pub(super) fn tick_snapshot_transfers(&mut self) {
        let mut resend = Vec::new();
        let mut abort = Vec::new();
        let (resend_after, abort_after) = (
            self.cfg.snapshot_resend_ticks,
            self.cfg.snapshot_abort_ticks,
        );
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

    pub(super) fn handle_snapshot_chunk(
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
            self.send_append_ack(from, self.log.committed);
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
                self.send_snapshot_ack(from, index, snap_term, 0);
                return;
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                from,
                meta,
                total_len,
                checksum,
                data: Vec::new(),
            });
        }
        let Some(inc) = self.incoming_snapshot.as_mut() else {
            return;
        };
        let have = inc.data.len() as u64;
        if offset != have {
            // Duplicate or out-of-order chunk: tell the leader where to resume.
            self.send_snapshot_ack(from, index, snap_term, have);
            return;
        }
        if have.saturating_add(data.len() as u64) > total_len {
            self.counters.malformed += 1;
            self.incoming_snapshot = None;
            self.send_snapshot_ack(from, index, snap_term, 0);
            return;
        }
        inc.data.extend_from_slice(&data);
        let have = inc.data.len() as u64;
        if have < total_len {
            self.send_snapshot_ack(from, index, snap_term, have);
            return;
        }
        let Some(inc) = self.incoming_snapshot.take() else {
            return;
        };
        if crc32c(&inc.data) != inc.checksum {
            self.counters.corrupt += 1;
            self.send_snapshot_ack(from, index, snap_term, 0);
            return;
        }
        let snap = Snapshot {
            meta: inc.meta,
            data: inc.data,
        };
        // Installed: our log now ends at the snapshot. Not needed: our commit index says how
        // far we are.
        let index = if self.restore(snap) {
            self.log.last_index()
        } else {
            self.log.committed
        };
        self.send_append_ack(from, index);
    }

    fn send_snapshot_ack(&mut self, to: NodeId, index: Index, snap_term: Term, next_offset: u64) {
        self.send(
            to,
            self.term,
            MessageBody::SnapshotAck {
                index,
                snap_term,
                next_offset,
            },
        );
    }

    /// Installs a complete snapshot. Returns false when it was not needed (or invalid).
    pub(super) fn restore(&mut self, snap: Snapshot) -> bool {
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

    pub(super) fn handle_snapshot_ack(
        &mut self,
        from: NodeId,
        index: Index,
        snap_term: Term,
        next_offset: u64,
    ) {
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
}
