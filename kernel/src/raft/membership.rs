//! Membership changes as they are applied, and leadership transfer.

use super::machine::*;

impl<S: Storage> Raft<S> {
    pub(super) fn send_timeout_now(&mut self, to: NodeId) {
        self.lease_revoked = true;
        self.send(to, self.term, MessageBody::TimeoutNow);
    }

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

    pub(super) fn switch_to_config(&mut self, cfg: TrackerConfig, prs: ProgressMap) -> ConfState {
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

    pub fn transfer_leader(&mut self, to: NodeId) -> Result<()> {
        if self.role != Role::Leader {
            return Err(Error::ProposalDropped(DropReason::NotLeader {
                leader: self.leader,
            }));
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
