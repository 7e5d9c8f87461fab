//! Ticks, elections (pre-vote, vote, check-quorum) and vote counting.

use super::machine::*;

impl<S: Storage> Raft<S> {
    pub(super) fn reset_randomized_election_timeout(&mut self) {
        let et = self.election_timeout();
        self.randomized_election_timeout = et + self.rng.below(u64::from(et)) as u32;
    }

    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_heartbeat(),
            _ => self.tick_election(),
        }
    }

    pub(super) fn tick_election(&mut self) {
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.election_timeout() {
            self.lease_guard = false;
        }
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    pub(super) fn tick_heartbeat(&mut self) {
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

    pub(super) fn has_unapplied_conf_change(&self) -> bool {
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

    pub(super) fn campaign(&mut self, kind: CampaignKind) {
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
                MessageBody::PreVote {
                    last_index,
                    last_term,
                }
            } else {
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer: kind == CampaignKind::Transfer,
                }
            };
            self.send(id, vote_term, body);
        }
    }

    pub(super) fn poll(&mut self, id: NodeId, granted: bool) -> VoteResult {
        self.tracker.record_vote(id, granted);
        self.tracker.tally()
    }

    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre: bool,
        last_index: Index,
        last_term: Term,
    ) {
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
            self.send(
                from,
                self.term,
                MessageBody::PreVoteResponse { reject: true },
            );
        } else {
            self.send(from, self.term, MessageBody::VoteResponse { reject: true });
        }
    }

    pub(super) fn handle_poll_response(&mut self, from: NodeId, granted: bool) {
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
}
