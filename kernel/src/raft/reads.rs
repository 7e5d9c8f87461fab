//! Linearizable reads: ReadIndex (also forwarded from followers) and the leader lease.

use super::machine::*;

impl<S: Storage> Raft<S> {
    /// Whether the leader lease holds: a quorum acknowledged a heartbeat recent enough that
    /// none of them will vote for another candidate before the lease ends.
    pub fn lease_valid(&self) -> bool {
        if self.role != Role::Leader || self.lease_revoked || self.transferee.is_some() {
            return false;
        }
        let horizon = u64::from(
            self.election_timeout()
                .saturating_sub(self.cfg.lease_margin_ticks),
        );
        let now = self.leader_ticks;
        let fresh = |id: NodeId| {
            if id == self.id {
                return Some(true);
            }
            self.tracker
                .progress
                .get(&id)
                .and_then(|p| p.lease_tick)
                .map(|t| now < t.saturating_add(horizon))
        };
        self.tracker.config.voters.vote_result(&fresh) == VoteResult::Won
    }

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

    pub(super) fn handle_read_index(&mut self, from: NodeId, ctx: Vec<u8>) {
        let voters = &self.tracker.config.voters;
        if !voters.is_joint()
            && voters.incoming.voters.len() == 1
            && voters.incoming.voters.contains(&self.id)
        {
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

    pub(super) fn serve_read(&mut self, from: NodeId, ctx: Vec<u8>) {
        let committed = self.log.committed;
        if self.cfg.read_only == ReadOnlyOption::LeaseBased && self.lease_valid() {
            self.respond_read(from, committed, ctx);
            return;
        }
        // Safe reads, and lease reads without a valid lease (just elected, transferring, or a
        // quorum is slow): confirm leadership with a heartbeat round.
        if self
            .read_only
            .add_request(committed, from, ctx.clone(), self.id, self.leader_ticks)
        {
            self.bcast_heartbeat(Some(ctx));
        } else {
            self.counters.dropped_reads += 1;
        }
    }

    pub(super) fn release_pending_reads(&mut self) {
        for (from, ctx) in core::mem::take(&mut self.pending_reads) {
            self.serve_read(from, ctx);
        }
    }

    pub(super) fn respond_read(&mut self, to: NodeId, index: Index, ctx: Vec<u8>) {
        if to == self.id {
            self.read_states.push(ReadState { index, ctx });
        } else {
            self.send(to, self.term, MessageBody::ReadIndexResponse { ctx, index });
        }
    }
}
