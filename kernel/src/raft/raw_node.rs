//! The public face of the core: inputs in, a [`Ready`] batch out, acknowledgements back.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::config::Config;
use super::error::Result;
use super::machine::Raft;
use super::payload::Payload;
use super::read_only::ReadState;
use super::status::{ProgressStatus, Role, SoftState, Status};
use super::storage::Storage;
use super::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Index, Message, NodeId, Snapshot, Term,
};

/// One batch of work for the application, in this order:
///
/// 1. send [`messages`](Ready::messages) (any time, even before persisting);
/// 2. persist [`snapshot`](Ready::snapshot), then [`entries`](Ready::entries), then
///    [`hard_state`](Ready::hard_state), durably (fsync);
/// 3. send [`persisted_messages`](Ready::persisted_messages);
/// 4. apply [`committed_entries`](Ready::committed_entries) (calling
///    [`RawNode::apply_conf_change`] for configuration entries) and serve
///    [`read_states`](Ready::read_states) once applied up to their index;
/// 5. call [`RawNode::advance`] with [`ack`](Ready::ack).
#[must_use = "a Ready must be persisted, sent and applied, then acknowledged with advance()"]
#[derive(Debug, Default)]
pub struct Ready {
    /// Role or leader changed.
    pub soft_state: Option<SoftState>,
    /// Term, vote or commit changed: persist.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader: persist it and restore the state machine from it.
    pub snapshot: Option<Snapshot>,
    /// Entries to append to storage (replacing any conflicting suffix).
    pub entries: Vec<Entry>,
    /// Messages that may be sent immediately.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after this Ready's writes are durable.
    pub persisted_messages: Vec<Message>,
    /// Entries to apply to the state machine, in order.
    pub committed_entries: Vec<Entry>,
    /// Answers to read requests.
    pub read_states: Vec<ReadState>,
    /// What to hand back to [`RawNode::advance`].
    pub ack: ReadyAck,
}

impl Ready {
    /// Whether there are writes that must be made durable before `persisted_messages` go out.
    pub fn must_sync(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
}

/// Acknowledgement of a [`Ready`]: its writes are durable and its committed entries applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct ReadyAck {
    entries: Option<(Index, Term)>,
    snapshot: Option<Index>,
    hard_state_term: Option<Term>,
    applied: Option<Index>,
}

/// A Raft node: the protocol core plus the bookkeeping of what it handed out.
#[derive(Debug)]
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    prev_hard_state: HardState,
    prev_soft_state: SoftState,
}

impl<S: Storage> RawNode<S> {
    /// Starts (or restarts) a node from `storage`.
    pub fn new(cfg: Config, storage: S) -> Result<Self> {
        let raft = Raft::new(cfg, storage)?;
        let prev_hard_state = raft.hard_state();
        let prev_soft_state = raft.soft_state();
        Ok(RawNode {
            raft,
            prev_hard_state,
            prev_soft_state,
        })
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now (e.g. for tests or a manual failover).
    pub fn campaign(&mut self) {
        self.raft.hup(false);
    }

    /// Feeds a message from the network. Stale or hostile messages are ignored and counted
    /// in [`Status::counters`]; this never panics.
    pub fn step(&mut self, m: Message) {
        self.raft.step(m);
    }

    /// Proposes application data; returns the index it will have if committed.
    pub fn propose(&mut self, data: impl Into<Payload>) -> Result<Index> {
        self.raft
            .propose(core::iter::once((EntryKind::Normal, data.into())))
    }

    /// Proposes several entries at once (all or none are accepted).
    pub fn propose_batch<P: Into<Payload>>(
        &mut self,
        items: impl IntoIterator<Item = P>,
    ) -> Result<Index> {
        self.raft
            .propose(items.into_iter().map(|d| (EntryKind::Normal, d.into())))
    }

    /// Proposes a membership change. It takes effect when the application calls
    /// [`apply_conf_change`](Self::apply_conf_change) while applying the committed entry.
    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<Index> {
        self.raft.propose_conf_change(cc)
    }

    /// Applies a committed membership change; returns the new membership (store it with the
    /// applied index).
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState> {
        self.raft.apply_conf_change(cc)
    }

    /// Requests a linearizable read. The answer arrives as a [`ReadState`] with the same
    /// `ctx` (which must be unique); the read is served once the state machine applied its
    /// index. On a follower the request is forwarded to the leader. A request is dropped
    /// without an answer if leadership changes before it is confirmed (or a message is lost);
    /// clients retry after a timeout with a fresh `ctx`.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<()> {
        self.raft.read_index(ctx)
    }

    /// Hands leadership to `to`; aborted if not done within an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<()> {
        self.raft.transfer_leader(to)
    }

    /// Aborts an ongoing leadership transfer.
    pub fn abort_leader_transfer(&mut self) {
        self.raft.abort_leader_transfer();
    }

    /// The transport could not reach `id`.
    pub fn report_unreachable(&mut self, id: NodeId) {
        self.raft.report_unreachable(id);
    }

    /// The snapshot transfer to `id` failed; it will be retried.
    pub fn report_snapshot_failure(&mut self, id: NodeId) {
        self.raft.report_snapshot_failure(id);
    }

    /// Whether [`ready`](Self::ready) has anything to hand out.
    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        r.has_pending_bcast()
            || !r.msgs.is_empty()
            || !r.msgs_after.is_empty()
            || !r.read_states.is_empty()
            || r.log.has_next_unstable()
            || r.log.has_next_committed_entries()
            || r.hard_state() != self.prev_hard_state
            || r.soft_state() != self.prev_soft_state
    }

    /// The next batch of work. Fails with `CorruptEntry` when a committed entry read back
    /// from storage fails its checksum; nothing corrupt is ever handed out for applying.
    pub fn ready(&mut self) -> Result<Ready> {
        self.raft.flush_proposals();
        let committed_entries = self
            .raft
            .log
            .next_committed_entries(self.raft.cfg.max_committed_size_per_ready)?;
        let r = &mut self.raft;
        let entries = r.log.next_unstable_entries().to_vec();
        let snapshot = r.log.next_unstable_snapshot().cloned();
        let hs = r.hard_state();
        let hard_state = (hs != self.prev_hard_state).then_some(hs);
        let ss = r.soft_state();
        let soft_state = (ss != self.prev_soft_state).then_some(ss);
        let mut messages = core::mem::take(&mut r.msgs);
        let mut persisted_messages = core::mem::take(&mut r.msgs_after);
        if r.term > r.durable_term {
            // Our term is not durable yet: nothing we say in it may leave before it is, or a
            // restart could reuse the term (two leaders, or one index with two entries).
            messages.append(&mut persisted_messages);
            persisted_messages = messages;
            messages = Vec::new();
        }
        let read_states = core::mem::take(&mut r.read_states);
        r.log.accept_unstable();
        if let Some(last) = committed_entries.last() {
            r.log.accept_applying(last.index);
        }
        r.reduce_uncommitted_size(&committed_entries);
        self.prev_hard_state = hs;
        self.prev_soft_state = ss;
        let ack = ReadyAck {
            entries: entries.last().map(|e| (e.index, e.term)),
            snapshot: snapshot.as_ref().map(|s| s.meta.index),
            hard_state_term: hard_state.map(|h| h.term),
            applied: committed_entries.last().map(|e| e.index),
        };
        Ok(Ready {
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
            ack,
        })
    }

    /// Acknowledges a [`Ready`]: its writes are durable and its committed entries applied.
    /// Acknowledge Readies in the order they were produced.
    pub fn advance(&mut self, ack: ReadyAck) {
        self.advance_persisted(ack);
        if let Some(a) = ack.applied {
            self.raft.applied_to(a);
        }
    }

    /// Acknowledges only the durability of a Ready's writes (when applying is asynchronous).
    pub fn advance_persisted(&mut self, ack: ReadyAck) {
        let r = &mut self.raft;
        if let Some(t) = ack.hard_state_term {
            r.durable_term = r.durable_term.max(t);
        }
        if let Some(i) = ack.snapshot {
            r.log.stable_snap_to(i);
            if r.log.applied < i {
                r.log.applied = i;
            }
            if r.log.applying < i {
                r.log.applying = i;
            }
        }
        if let Some((i, t)) = ack.entries {
            r.on_persisted(i, t);
        }
    }

    /// Reports that the application applied up to `index` (with asynchronous applying).
    pub fn advance_applied(&mut self, index: Index) {
        self.raft.applied_to(index);
    }

    /// The storage (for the application's writes and snapshots).
    pub fn store(&self) -> &S {
        &self.raft.log.storage
    }

    /// Mutable access to the storage, for persisting Readies and compacting.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.raft.log.storage
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.raft.role
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.raft.term
    }

    /// Known leader.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.leader
    }

    /// Commit index.
    pub fn commit_index(&self) -> Index {
        self.raft.log.committed
    }

    /// Membership.
    pub fn conf_state(&self) -> ConfState {
        self.raft.tracker.config.to_conf_state()
    }

    /// Full status, including per-follower progress on a leader and the ignored-input counters.
    pub fn status(&self) -> Status {
        let r = &self.raft;
        let mut progress = BTreeMap::new();
        if r.role == Role::Leader {
            for (id, p) in &r.tracker.progress {
                progress.insert(
                    *id,
                    ProgressStatus {
                        matched: p.matched,
                        next: p.next,
                        state: p.state,
                        paused: p.is_paused(),
                        inflight_count: p.inflights.count(),
                        inflight_bytes: p.inflights.bytes(),
                        recent_active: p.recent_active,
                        is_learner: p.is_learner,
                        snapshot: p.transfer,
                    },
                );
            }
        }
        Status {
            id: r.id,
            role: r.role,
            term: r.term,
            vote: r.vote,
            leader: r.leader,
            commit: r.log.committed,
            applied: r.log.applied,
            first_index: r.log.first_index(),
            last_index: r.log.last_index(),
            conf_state: r.tracker.config.to_conf_state(),
            progress,
            transferee: r.transferee,
            counters: r.counters,
        }
    }

    #[cfg(test)]
    pub(crate) fn raft(&self) -> &Raft<S> {
        &self.raft
    }

    #[cfg(test)]
    pub(crate) fn raft_mut(&mut self) -> &mut Raft<S> {
        &mut self.raft
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::storage::MemStorage;
    use crate::smp::tests::allocs_here;
    use alloc::collections::VecDeque;

    /// Three founding members in one loop, messages moved between them as the benchmark
    /// does; node 1 leads.
    struct Trio {
        nodes: Vec<RawNode<MemStorage>>,
        applied: Vec<Vec<Entry>>,
    }

    impl Trio {
        fn new() -> Self {
            let nodes = (1..=3)
                .map(|id| {
                    let s = MemStorage::bootstrap(ConfState::with_voters([1, 2, 3]));
                    RawNode::new(Config::new(id), s).expect("valid config")
                })
                .collect();
            let mut t = Trio {
                nodes,
                applied: alloc::vec![Vec::new(); 3],
            };
            t.nodes[0].campaign();
            t.settle();
            assert_eq!(t.nodes[0].role(), Role::Leader);
            t
        }

        /// Runs Ready cycles until nothing is left to do.
        fn settle(&mut self) {
            let mut queue = VecDeque::new();
            for _ in 0..100 {
                let mut busy = false;
                for (i, node) in self.nodes.iter_mut().enumerate() {
                    if !node.has_ready() {
                        continue;
                    }
                    busy = true;
                    let rd = node.ready().expect("nothing corrupt in memory");
                    queue.extend(rd.messages);
                    node.store_mut().append(&rd.entries).expect("contiguous");
                    if let Some(hs) = rd.hard_state {
                        node.store_mut().set_hard_state(hs);
                    }
                    queue.extend(rd.persisted_messages);
                    self.applied[i].extend(rd.committed_entries);
                    node.advance(rd.ack);
                }
                while let Some(m) = queue.pop_front() {
                    let to = m.to as usize - 1;
                    self.nodes[to].step(m);
                }
                if !busy {
                    return;
                }
            }
            panic!("the cluster did not settle");
        }
    }

    /// A proposal's bytes are never copied on their way to every node's state machine (in one
    /// process, where messages move rather than being encoded): every node applies the very
    /// buffer that was proposed.
    #[test]
    fn payloads_are_shared_from_proposal_to_apply() {
        let mut t = Trio::new();
        let proposed: Vec<Payload> = (0..5u8).map(|i| Payload::from([i; 128])).collect();
        t.nodes[0].propose(proposed[0].clone()).expect("leader");
        t.nodes[0]
            .propose_batch(proposed[1..].iter().cloned())
            .expect("leader");
        t.settle();
        for (node, applied) in t.applied.iter().enumerate() {
            let data: Vec<&Payload> = applied
                .iter()
                .filter(|e| !e.data.is_empty())
                .map(|e| &e.data)
                .collect();
            assert_eq!(data.len(), proposed.len(), "node {}", node + 1);
            for (got, want) in data.iter().zip(&proposed) {
                assert_eq!(got.as_ptr(), want.as_ptr(), "node {} copied", node + 1);
            }
        }
    }

    /// Committing allocates per Ready and per message, not per entry: a batch of 64 entries,
    /// replicated to two followers, stored and applied on all three nodes, costs a few dozen
    /// allocations in all. (With owned `Vec<u8>` payloads it was about a dozen per entry.)
    #[test]
    fn a_commit_allocates_per_batch_not_per_entry() {
        const N: usize = 64;
        let mut t = Trio::new();
        // Warm up: the first batch grows the logs' and storages' vectors.
        for _ in 0..4 {
            let warm: Vec<Payload> = (0..N).map(|_| Payload::from([1u8; 128])).collect();
            t.nodes[0].propose_batch(warm).expect("leader");
            t.settle();
        }
        let batch: Vec<Payload> = (0..N).map(|_| Payload::from([2u8; 128])).collect();
        let before = allocs_here();
        t.nodes[0].propose_batch(batch).expect("leader");
        t.settle();
        let allocs = allocs_here() - before;
        std::eprintln!("allocations to commit {N} entries on 3 nodes: {allocs}");
        assert!(
            allocs < N as u64,
            "{allocs} allocations for {N} entries: some allocation is per entry"
        );
        assert!(t.applied.iter().all(|a| a.len() >= 5 * N));
    }
}
