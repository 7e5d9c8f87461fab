//! ReadIndex bookkeeping on the leader (Raft thesis §6.4).

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;

use super::types::{Index, NodeId};

/// How linearizable reads are served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadOnlyOption {
    /// Confirm leadership with a heartbeat round per read batch (safe under any clocks).
    #[default]
    Safe,
    /// Trust the leader lease that check-quorum maintains: answer without a round trip.
    ///
    /// **Clock assumption:** every node's tick advances at the same rate within a bounded
    /// drift, and the drift is small compared to the election timeout. A follower that heard
    /// from the leader within an election timeout refuses votes (the lease), and the leader
    /// steps down when it has not heard from a quorum within one election timeout; if a
    /// leader's clock runs slow relative to the followers', it may serve a stale read.
    /// Only allowed with `check_quorum`.
    LeaseBased,
}

/// A read request answered once the leader has confirmed it is still leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The read is linearizable once the state machine applied this index.
    pub index: Index,
    /// The request's context as given to `read_index`.
    pub ctx: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) struct ReadIndexStatus {
    pub from: NodeId,
    pub index: Index,
    pub acks: BTreeSet<NodeId>,
    /// Leader tick at registration: only answers to heartbeats sent since count.
    pub since: u64,
}

/// Pending read requests, in arrival order.
#[derive(Debug, Default, Clone)]
pub(crate) struct ReadOnly {
    pub pending: BTreeMap<Vec<u8>, ReadIndexStatus>,
    pub queue: VecDeque<Vec<u8>>,
    /// Contexts confirmed during leader tick `confirmed_tick`. Answers carry only the tick
    /// their heartbeat left at, so a context registered again in the tick it was confirmed
    /// in could be confirmed by a late duplicate answer of its first round: such a
    /// registration is refused (a client reusing a context retries in the next tick).
    confirmed_now: BTreeSet<Vec<u8>>,
    confirmed_tick: u64,
}

impl ReadOnly {
    /// Registers a request at leader tick `now`; returns false when `ctx` is already pending
    /// (duplicate).
    pub fn add_request(
        &mut self,
        index: Index,
        from: NodeId,
        ctx: Vec<u8>,
        self_id: NodeId,
        now: u64,
    ) -> bool {
        if self.pending.contains_key(&ctx)
            || (self.confirmed_tick == now && self.confirmed_now.contains(&ctx))
        {
            return false;
        }
        let mut acks = BTreeSet::new();
        acks.insert(self_id);
        self.pending.insert(
            ctx.clone(),
            ReadIndexStatus {
                from,
                index,
                acks,
                since: now,
            },
        );
        self.queue.push_back(ctx);
        true
    }

    /// Records an ack of a heartbeat sent at leader tick `sent` for `ctx`; returns the acks
    /// so far if the request is known. An answer to a heartbeat sent before the request was
    /// registered is ignored: a late duplicate of an earlier round for the same `ctx` (a
    /// duplicated forwarded request registers it again) proves nothing about this one.
    pub fn recv_ack(&mut self, id: NodeId, ctx: &[u8], sent: u64) -> Option<&BTreeSet<NodeId>> {
        let st = self.pending.get_mut(ctx)?;
        if sent < st.since {
            return None;
        }
        st.acks.insert(id);
        Some(&st.acks)
    }

    /// Removes and returns every request up to and including `ctx` (earlier requests are
    /// confirmed by the same heartbeat round, since they were registered before it),
    /// confirmed at leader tick `now`.
    pub fn advance(&mut self, ctx: &[u8], now: u64) -> Vec<ReadIndexStatusWithCtx> {
        if !self.pending.contains_key(ctx) {
            return Vec::new();
        }
        if self.confirmed_tick != now {
            self.confirmed_now.clear();
            self.confirmed_tick = now;
        }
        let mut out = Vec::new();
        while let Some(c) = self.queue.pop_front() {
            let done = c.as_slice() == ctx;
            if let Some(st) = self.pending.remove(&c) {
                self.confirmed_now.insert(c.clone());
                out.push(ReadIndexStatusWithCtx { ctx: c, status: st });
            }
            if done {
                break;
            }
        }
        out
    }

    pub fn last_pending_ctx(&self) -> Option<&Vec<u8>> {
        self.queue.back()
    }

    pub fn clear(&mut self) {
        self.pending.clear();
        self.queue.clear();
        self.confirmed_now.clear();
    }
}

pub(crate) struct ReadIndexStatusWithCtx {
    pub ctx: Vec<u8>,
    pub status: ReadIndexStatus,
}
