//! The leader's table of progress per node, the membership and the votes of an election.

use alloc::collections::{BTreeMap, BTreeSet};

use super::progress::Progress;
use super::quorum::{JointConfig, VoteResult};
use super::types::{ConfState, Index, NodeId};

/// The membership as the tracker uses it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Voters, possibly joint.
    pub voters: JointConfig,
    /// Learners.
    pub learners: BTreeSet<NodeId>,
    /// Outgoing voters that become learners when leaving the joint configuration.
    pub learners_next: BTreeSet<NodeId>,
    /// Leave the joint configuration automatically.
    pub auto_leave: bool,
}

impl TrackerConfig {
    /// As a [`ConfState`].
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.voters.clone(),
            learners: self.learners.clone(),
            voters_outgoing: self.voters.outgoing.voters.clone(),
            learners_next: self.learners_next.clone(),
            auto_leave: self.auto_leave,
        }
    }
}

/// Progress of every member, keyed by id.
pub type ProgressMap = BTreeMap<NodeId, Progress>;

/// Membership, per-node progress and election votes.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    /// The active membership.
    pub config: TrackerConfig,
    /// One entry per voter and learner.
    pub progress: ProgressMap,
    /// Votes received in the current election.
    pub votes: BTreeMap<NodeId, bool>,
    pub(crate) max_inflight: usize,
    pub(crate) max_inflight_bytes: u64,
}

impl ProgressTracker {
    pub(crate) fn new(max_inflight: usize, max_inflight_bytes: u64) -> Self {
        ProgressTracker {
            config: TrackerConfig::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
            max_inflight_bytes,
        }
    }

    /// Highest index replicated on a quorum (joint-aware).
    pub fn committed(&self) -> Index {
        self.config
            .voters
            .committed_index(&|id| self.progress.get(&id).map(|p| p.matched))
    }

    /// Whether a quorum has been heard from recently. `self_id` always counts.
    pub fn quorum_active(&self, self_id: NodeId) -> bool {
        let r = self.config.voters.vote_result(&|id| {
            if id == self_id {
                return Some(true);
            }
            self.progress.get(&id).map(|p| p.recent_active)
        });
        r == VoteResult::Won
    }

    /// Whether `id` is a voter in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.config.voters.contains(id)
    }

    pub(crate) fn reset_votes(&mut self) {
        self.votes.clear();
    }

    pub(crate) fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub(crate) fn tally(&self) -> VoteResult {
        self.config.voters.vote_result_map(&self.votes)
    }

    /// All voters and learners, sorted.
    pub fn member_ids(&self) -> BTreeSet<NodeId> {
        self.progress.keys().copied().collect()
    }
}
