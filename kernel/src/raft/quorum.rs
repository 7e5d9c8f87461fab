//! Majority and joint quorums: commit indexes and election results.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::types::{Index, NodeId};

/// Outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided yet.
    Pending,
    /// A quorum refused.
    Lost,
    /// A quorum granted.
    Won,
}

/// A simple majority configuration: a set of voters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    /// The voters.
    pub voters: BTreeSet<NodeId>,
}

impl MajorityConfig {
    /// A configuration of these voters.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Self {
        MajorityConfig {
            voters: voters.into_iter().collect(),
        }
    }

    /// The highest index acknowledged by a majority. `acked` gives each voter's index (`None`
    /// counts as 0). An empty configuration returns `Index::MAX` so that it never constrains a
    /// joint configuration.
    pub fn committed_index(&self, acked: &impl Fn(NodeId) -> Option<Index>) -> Index {
        if self.voters.is_empty() {
            return Index::MAX;
        }
        let mut v: Vec<Index> = self
            .voters
            .iter()
            .map(|&id| acked(id).unwrap_or(0))
            .collect();
        // Sort descending; the quorum-th highest value is acked by a majority.
        v.sort_unstable_by(|a, b| b.cmp(a));
        let q = self.voters.len() / 2 + 1;
        v.get(q - 1).copied().unwrap_or(0)
    }

    /// Counts `votes` (missing voters are pending). An empty configuration wins.
    pub fn vote_result(&self, votes: &impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut yes, mut missing) = (0usize, 0usize);
        for &id in &self.voters {
            match votes(id) {
                Some(true) => yes += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let q = self.voters.len() / 2 + 1;
        if yes >= q {
            VoteResult::Won
        } else if yes + missing >= q {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// Two majority configurations that must both agree (joint consensus). The second is empty
/// outside a configuration change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointConfig {
    /// The incoming configuration.
    pub incoming: MajorityConfig,
    /// The outgoing configuration (empty when not joint).
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    /// Whether we are in a joint configuration.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.voters.is_empty()
    }

    /// All voters of both halves.
    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.incoming
            .voters
            .union(&self.outgoing.voters)
            .copied()
            .collect()
    }

    /// Whether `id` votes in either half.
    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.voters.contains(&id) || self.outgoing.voters.contains(&id)
    }

    /// The highest index committed by both halves.
    pub fn committed_index(&self, acked: &impl Fn(NodeId) -> Option<Index>) -> Index {
        self.incoming
            .committed_index(acked)
            .min(self.outgoing.committed_index(acked))
    }

    /// Won if both halves won, lost if either lost.
    pub fn vote_result(&self, votes: &impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let a = self.incoming.vote_result(votes);
        let b = self.outgoing.vote_result(votes);
        if a == b {
            return a;
        }
        if a == VoteResult::Lost || b == VoteResult::Lost {
            return VoteResult::Lost;
        }
        VoteResult::Pending
    }

    /// Vote result of a map of votes.
    pub fn vote_result_map(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        self.vote_result(&|id| votes.get(&id).copied())
    }
}
