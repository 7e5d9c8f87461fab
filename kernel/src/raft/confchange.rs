//! Membership changes: joint consensus (enter and leave) and single-voter changes, applied to
//! a copy of the tracker's configuration and progress so that a refused change leaves nothing
//! half-done.

use alloc::collections::BTreeSet;

use super::error::{Error, Result};
use super::progress::Progress;
use super::quorum::{JointConfig, MajorityConfig};
use super::tracker::{ProgressMap, ProgressTracker, TrackerConfig};
use super::types::{ConfChangeKind, ConfChangeSingle, ConfState, Index, NodeId};

/// Computes new configurations from the current one.
#[derive(Debug)]
pub struct Changer<'a> {
    tracker: &'a ProgressTracker,
    last_index: Index,
}

type Changed = (TrackerConfig, ProgressMap);

impl<'a> Changer<'a> {
    /// A changer over `tracker`; new nodes start probing at `last_index`.
    pub fn new(tracker: &'a ProgressTracker, last_index: Index) -> Self {
        Changer {
            tracker,
            last_index,
        }
    }

    /// Enters a joint configuration: the current voters become the outgoing half, and the
    /// changes are applied to the incoming half.
    pub fn enter_joint(&self, auto_leave: bool, ccs: &[ConfChangeSingle]) -> Result<Changed> {
        let (mut cfg, mut prs) = self.snapshot()?;
        if cfg.voters.is_joint() {
            return Err(Error::InvalidConfChange("config is already joint"));
        }
        if cfg.voters.incoming.voters.is_empty() {
            return Err(Error::InvalidConfChange(
                "can't make a zero-voter config joint",
            ));
        }
        cfg.voters.outgoing = cfg.voters.incoming.clone();
        self.apply(&mut cfg, &mut prs, ccs)?;
        cfg.auto_leave = auto_leave;
        check_and_return(cfg, prs)
    }

    /// Leaves a joint configuration: the outgoing half is dropped, pending demotions happen.
    pub fn leave_joint(&self) -> Result<Changed> {
        let (mut cfg, mut prs) = self.snapshot()?;
        if !cfg.voters.is_joint() {
            return Err(Error::InvalidConfChange("can't leave a non-joint config"));
        }
        for id in core::mem::take(&mut cfg.learners_next) {
            cfg.learners.insert(id);
            if let Some(p) = prs.get_mut(&id) {
                p.is_learner = true;
            }
        }
        for id in &cfg.voters.outgoing.voters {
            if !cfg.voters.incoming.voters.contains(id) && !cfg.learners.contains(id) {
                prs.remove(id);
            }
        }
        cfg.voters.outgoing = MajorityConfig::default();
        cfg.auto_leave = false;
        check_and_return(cfg, prs)
    }

    /// Applies changes that alter at most one voter, without a joint configuration.
    pub fn simple(&self, ccs: &[ConfChangeSingle]) -> Result<Changed> {
        let (mut cfg, mut prs) = self.snapshot()?;
        if cfg.voters.is_joint() {
            return Err(Error::InvalidConfChange(
                "can't apply simple config change in joint config",
            ));
        }
        let before = cfg.voters.incoming.voters.clone();
        self.apply(&mut cfg, &mut prs, ccs)?;
        let changed = before
            .symmetric_difference(&cfg.voters.incoming.voters)
            .count();
        if changed > 1 {
            return Err(Error::InvalidConfChange(
                "more than one voter changed without entering joint config",
            ));
        }
        check_and_return(cfg, prs)
    }

    fn snapshot(&self) -> Result<Changed> {
        let cfg = self.tracker.config.clone();
        let prs = self.tracker.progress.clone();
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    fn apply(
        &self,
        cfg: &mut TrackerConfig,
        prs: &mut ProgressMap,
        ccs: &[ConfChangeSingle],
    ) -> Result<()> {
        for cc in ccs {
            if cc.node == 0 {
                // Node 0 is reserved; a change naming it is ignored, as etcd does.
                continue;
            }
            match cc.kind {
                ConfChangeKind::AddVoter => self.make_voter(cfg, prs, cc.node),
                ConfChangeKind::AddLearner => self.make_learner(cfg, prs, cc.node),
                ConfChangeKind::Remove => remove(cfg, prs, cc.node),
            }
        }
        if cfg.voters.incoming.voters.is_empty() {
            return Err(Error::InvalidConfChange("removed all voters"));
        }
        Ok(())
    }

    fn init_progress(
        &self,
        cfg: &mut TrackerConfig,
        prs: &mut ProgressMap,
        id: NodeId,
        learner: bool,
    ) {
        if learner {
            cfg.learners.insert(id);
        } else {
            cfg.voters.incoming.voters.insert(id);
        }
        // New nodes probe from the leader's last index; they are considered active so that
        // check-quorum does not step the leader down right after adding them.
        let mut p = Progress::new(
            self.last_index,
            self.tracker.max_inflight,
            self.tracker.max_inflight_bytes,
        );
        p.is_learner = learner;
        p.recent_active = true;
        prs.insert(id, p);
    }

    fn make_voter(&self, cfg: &mut TrackerConfig, prs: &mut ProgressMap, id: NodeId) {
        let Some(p) = prs.get_mut(&id) else {
            self.init_progress(cfg, prs, id, false);
            return;
        };
        p.is_learner = false;
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        cfg.voters.incoming.voters.insert(id);
    }

    fn make_learner(&self, cfg: &mut TrackerConfig, prs: &mut ProgressMap, id: NodeId) {
        let Some(p) = prs.get(&id) else {
            self.init_progress(cfg, prs, id, true);
            return;
        };
        if p.is_learner {
            return;
        }
        // Demote: drop from the incoming voters but keep the progress.
        cfg.voters.incoming.voters.remove(&id);
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        if cfg.voters.outgoing.voters.contains(&id) {
            // Still votes in the outgoing half: becomes a learner when leaving the joint state.
            cfg.learners_next.insert(id);
        } else if let Some(p) = prs.get_mut(&id) {
            p.is_learner = true;
            cfg.learners.insert(id);
        }
    }
}

fn remove(cfg: &mut TrackerConfig, prs: &mut ProgressMap, id: NodeId) {
    if !prs.contains_key(&id) {
        return;
    }
    cfg.voters.incoming.voters.remove(&id);
    cfg.learners.remove(&id);
    cfg.learners_next.remove(&id);
    // Still a voter of the outgoing half: keep tracking it until the joint state ends.
    if !cfg.voters.outgoing.voters.contains(&id) {
        prs.remove(&id);
    }
}

fn check_and_return(cfg: TrackerConfig, prs: ProgressMap) -> Result<Changed> {
    check_invariants(&cfg, &prs)?;
    Ok((cfg, prs))
}

/// The structural invariants of a configuration.
pub fn check_invariants(cfg: &TrackerConfig, prs: &ProgressMap) -> Result<()> {
    for id in cfg
        .voters
        .ids()
        .iter()
        .chain(cfg.learners.iter())
        .chain(cfg.learners_next.iter())
    {
        if !prs.contains_key(id) {
            return Err(Error::InvalidConfChange("member without progress"));
        }
    }
    for id in &cfg.learners_next {
        if !cfg.voters.outgoing.voters.contains(id) {
            return Err(Error::InvalidConfChange(
                "learner_next not in outgoing voters",
            ));
        }
        if prs.get(id).is_some_and(|p| p.is_learner) {
            return Err(Error::InvalidConfChange(
                "learner_next already marked learner",
            ));
        }
    }
    for id in &cfg.learners {
        if cfg.voters.contains(*id) {
            return Err(Error::InvalidConfChange("learner is also a voter"));
        }
        if !prs.get(id).is_some_and(|p| p.is_learner) {
            return Err(Error::InvalidConfChange("learner not marked learner"));
        }
    }
    if !cfg.voters.is_joint() && (!cfg.learners_next.is_empty() || cfg.auto_leave) {
        return Err(Error::InvalidConfChange(
            "learners_next or auto_leave outside a joint config",
        ));
    }
    for (id, p) in prs {
        if !cfg.voters.contains(*id) && !cfg.learners.contains(id) {
            return Err(Error::InvalidConfChange("progress for a non-member"));
        }
        if p.is_learner && !cfg.learners.contains(id) {
            return Err(Error::InvalidConfChange("non-learner marked learner"));
        }
    }
    Ok(())
}

/// Rebuilds configuration and progress from a stored [`ConfState`], validating it (a hostile
/// or corrupt snapshot's membership is refused).
pub fn restore(tracker: &ProgressTracker, cs: &ConfState, last_index: Index) -> Result<Changed> {
    let cfg = TrackerConfig {
        voters: JointConfig {
            incoming: MajorityConfig {
                voters: cs.voters.clone(),
            },
            outgoing: MajorityConfig {
                voters: cs.voters_outgoing.clone(),
            },
        },
        learners: cs.learners.clone(),
        learners_next: cs.learners_next.clone(),
        auto_leave: cs.auto_leave,
    };
    let mut prs = ProgressMap::new();
    let all: BTreeSet<NodeId> = cfg.voters.ids().union(&cfg.learners).copied().collect();
    for id in all {
        if id == 0 {
            return Err(Error::InvalidConfChange("node id 0 is reserved"));
        }
        let mut p = Progress::new(
            last_index + 1,
            tracker.max_inflight,
            tracker.max_inflight_bytes,
        );
        p.is_learner = cfg.learners.contains(&id);
        p.recent_active = true;
        prs.insert(id, p);
    }
    check_and_return(cfg, prs)
}
