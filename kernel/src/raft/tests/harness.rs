//! A synchronous in-memory cluster for scenario tests: every Ready is persisted at once and
//! messages are delivered in FIFO order unless a link is cut.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;

use crate::raft::*;

/// One node and what it applied.
pub struct TNode {
    pub raw: RawNode<MemStorage>,
    pub applied: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    pub conf_states: Vec<ConfState>,
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, TNode>,
    pub queue: VecDeque<Message>,
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub down: BTreeSet<NodeId>,
    /// Every message delivered (for assertions).
    pub trace: Vec<Message>,
    /// Intercepts messages before delivery: return false to drop.
    pub filter: Option<fn(&Message) -> bool>,
}

pub fn cfg(id: NodeId) -> Config {
    let mut c = Config::new(id);
    c.seed = id * 7919;
    c
}

pub fn entry(term: Term, index: Index) -> Entry {
    Entry::new(
        term,
        index,
        EntryKind::Normal,
        alloc::vec![index as u8, term as u8],
    )
}

/// A storage holding `terms` (term of entry i+1) and the given hard-state term.
pub fn storage_with_log(voters: &[NodeId], terms: &[Term], term: Term) -> MemStorage {
    let mut s = MemStorage::new_with_conf_state(ConfState::with_voters(voters.iter().copied()));
    let ents: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, &t)| entry(t, i as u64 + 1))
        .collect();
    s.append(&ents).unwrap();
    s.set_hard_state(HardState {
        term,
        vote: None,
        commit: 0,
    });
    s
}

impl Cluster {
    pub fn new(ids: &[NodeId]) -> Self {
        Self::with(ids, cfg)
    }

    pub fn with(ids: &[NodeId], mk: impl Fn(NodeId) -> Config) -> Self {
        let storages = ids
            .iter()
            .map(|&id| {
                (
                    id,
                    MemStorage::new_with_conf_state(ConfState::with_voters(ids.iter().copied())),
                )
            })
            .collect();
        Self::from_storages(storages, mk)
    }

    /// A cluster whose founders start from a bootstrap snapshot (needed when nodes join).
    pub fn bootstrapped(ids: &[NodeId]) -> Self {
        let storages = ids
            .iter()
            .map(|&id| {
                (
                    id,
                    MemStorage::bootstrap(ConfState::with_voters(ids.iter().copied())),
                )
            })
            .collect();
        Self::from_storages(storages, cfg)
    }

    pub fn from_storages(
        storages: Vec<(NodeId, MemStorage)>,
        mk: impl Fn(NodeId) -> Config,
    ) -> Self {
        let mut nodes = BTreeMap::new();
        for (id, s) in storages {
            let raw = RawNode::new(mk(id), s).unwrap();
            nodes.insert(
                id,
                TNode {
                    raw,
                    applied: Vec::new(),
                    read_states: Vec::new(),
                    conf_states: Vec::new(),
                },
            );
        }
        Cluster {
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            trace: Vec::new(),
            filter: None,
        }
    }

    pub fn node(&self, id: NodeId) -> &RawNode<MemStorage> {
        &self.nodes[&id].raw
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        &mut self.nodes.get_mut(&id).unwrap().raw
    }

    pub fn add_node(&mut self, id: NodeId, s: MemStorage) {
        let raw = RawNode::new(cfg(id), s).unwrap();
        self.nodes.insert(
            id,
            TNode {
                raw,
                applied: Vec::new(),
                read_states: Vec::new(),
                conf_states: Vec::new(),
            },
        );
    }

    /// Persists and applies one node's Ready, queueing its messages.
    pub fn handle_ready(&mut self, id: NodeId) -> bool {
        let n = self.nodes.get_mut(&id).unwrap();
        if !n.raw.has_ready() {
            return false;
        }
        let rd = n.raw.ready().unwrap();
        self.queue.extend(rd.messages);
        let st = n.raw.store_mut();
        if let Some(s) = rd.snapshot {
            st.apply_snapshot(s).unwrap();
        }
        st.append(&rd.entries).unwrap();
        if let Some(hs) = rd.hard_state {
            st.set_hard_state(hs);
        }
        self.queue.extend(rd.persisted_messages);
        for e in rd.committed_entries {
            if e.kind == EntryKind::ConfChange {
                let cc = ConfChange::decode(&e.data).unwrap();
                if let Ok(cs) = n.raw.apply_conf_change(&cc) {
                    n.conf_states.push(cs);
                }
            }
            n.applied.push(e);
        }
        n.read_states.extend(rd.read_states);
        n.raw.advance(rd.ack);
        true
    }

    /// Runs until no node has work and no message is queued.
    pub fn stabilize(&mut self) {
        for _ in 0..100_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut busy = false;
            for id in ids {
                if !self.down.contains(&id) {
                    busy |= self.handle_ready(id);
                }
            }
            while let Some(m) = self.queue.pop_front() {
                busy = true;
                self.deliver(m);
            }
            if !busy {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    pub fn deliver(&mut self, m: Message) {
        if self.cut.contains(&(m.from, m.to))
            || self.down.contains(&m.to)
            || self.down.contains(&m.from)
        {
            return;
        }
        if let Some(f) = self.filter {
            if !f(&m) {
                return;
            }
        }
        self.trace.push(m.clone());
        if let Some(n) = self.nodes.get_mut(&m.to) {
            n.raw.step(m);
        }
    }

    pub fn send(&mut self, m: Message) {
        self.deliver(m);
        self.stabilize();
    }

    pub fn campaign(&mut self, id: NodeId) {
        self.node_mut(id).campaign();
        self.stabilize();
    }

    pub fn tick(&mut self, id: NodeId, n: u32) {
        for _ in 0..n {
            self.node_mut(id).tick();
        }
    }

    pub fn tick_all(&mut self, n: u32) {
        for _ in 0..n {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                if !self.down.contains(&id) {
                    self.node_mut(id).tick();
                }
            }
            self.stabilize();
        }
    }

    pub fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for o in ids {
            if o != id {
                self.cut.insert((id, o));
                self.cut.insert((o, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> Result<Index> {
        let r = self.node_mut(id).propose(data.to_vec());
        self.stabilize();
        r
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(id, n)| !self.down.contains(id) && n.raw.role() == Role::Leader)
            .map(|(id, _)| *id)
    }

    /// (index, term) of every entry in the node's log.
    pub fn log_terms(&self, id: NodeId) -> Vec<(Index, Term)> {
        let r = self.nodes[&id].raw.raft();
        let (f, l) = (r.log.first_index(), r.log.last_index());
        r.log
            .slice(f, l + 1, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| (e.index, e.term))
            .collect()
    }

    pub fn applied_data(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.nodes[&id]
            .applied
            .iter()
            .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
            .map(|e| e.data.to_vec())
            .collect()
    }
}
