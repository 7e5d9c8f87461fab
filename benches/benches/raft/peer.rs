//! raft-rs (tikv's `raft` crate) under the shared driver, driven as its documentation's
//! `RawNode` loop does: Ready → send messages, persist entries and hard state, send persisted
//! messages, apply, `advance` → LightReady → update commit, send, apply, `advance_apply`.

use std::collections::VecDeque;

use raft::prelude::*;
use raft::storage::MemStorage;
use raft::{ReadOnlyOption, StateRole};

use crate::driver::{self, Cluster};

pub struct Peer {
    nodes: Vec<RawNode<MemStorage>>,
    queue: VecDeque<Message>,
    digest: u64,
}

fn config(id: u64, batch_append: bool) -> raft::Config {
    raft::Config {
        id,
        election_tick: driver::ELECTION_TICK,
        heartbeat_tick: driver::HEARTBEAT_TICK,
        max_size_per_msg: driver::MAX_SIZE_PER_MSG,
        max_inflight_msgs: driver::MAX_INFLIGHT_MSGS,
        max_committed_size_per_ready: driver::MAX_COMMITTED_SIZE_PER_READY,
        max_uncommitted_size: raft::NO_LIMIT,
        check_quorum: true,
        pre_vote: true,
        read_only_option: ReadOnlyOption::Safe,
        batch_append,
        ..raft::Config::default()
    }
}

impl Peer {
    /// Three founding members; node 1 campaigns and the cluster settles before anything is
    /// timed. Logging goes to slog's `Discard` drain.
    pub fn new(batch_append: bool) -> Self {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let nodes = (1..=3)
            .map(|id| {
                let s = MemStorage::new_with_conf_state((vec![1, 2, 3], vec![]));
                RawNode::new(&config(id, batch_append), s, &logger).expect("valid config")
            })
            .collect();
        let mut c = Peer {
            nodes,
            queue: VecDeque::new(),
            digest: 0,
        };
        c.nodes[0].campaign().expect("campaign");
        for _ in 0..100 {
            c.cycle();
        }
        assert_eq!(c.nodes[0].raft.state, StateRole::Leader, "node 1 leads");
        c
    }
}

/// Applies committed entries; returns how many were client entries.
fn apply(digest: &mut u64, entries: &[Entry]) -> u64 {
    let mut n = 0;
    for e in entries {
        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
            driver::apply(digest, &e.data);
            n += 1;
        }
    }
    n
}

impl Cluster for Peer {
    fn propose(&mut self, mut batch: Vec<Vec<u8>>) {
        let leader = &mut self.nodes[0];
        let r = if batch.len() == 1 {
            leader.propose(Vec::new(), batch.pop().unwrap_or_default())
        } else {
            // RawNode::propose takes one entry; a multi-entry proposal is the MsgPropose
            // message that propose() builds, carrying every entry (all or none accepted).
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgPropose);
            m.from = 1;
            let ents: Vec<Entry> = batch
                .into_iter()
                .map(|d| Entry {
                    data: d.into(),
                    ..Entry::default()
                })
                .collect();
            m.set_entries(ents.into());
            leader.step(m)
        };
        r.expect("the leader accepts proposals");
    }

    fn cycle(&mut self) -> u64 {
        let mut applied = 0;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].has_ready() {
                continue;
            }
            let node = &mut self.nodes[i];
            let mut rd = node.ready();
            self.queue.extend(rd.take_messages());
            let n = apply(&mut self.digest, rd.committed_entries());
            {
                let store = node.store();
                let mut core = store.wl();
                if !rd.entries().is_empty() {
                    core.append(rd.entries()).expect("contiguous entries");
                }
                if let Some(hs) = rd.hs() {
                    core.set_hardstate(hs.clone());
                }
            }
            self.queue.extend(rd.take_persisted_messages());
            let mut light = node.advance(rd);
            if let Some(commit) = light.commit_index() {
                node.store().wl().mut_hard_state().set_commit(commit);
            }
            self.queue.extend(light.take_messages());
            let n = n + apply(&mut self.digest, light.committed_entries());
            node.advance_apply();
            if i == 0 {
                applied += n;
            }
        }
        while let Some(m) = self.queue.pop_front() {
            let to = (m.to - 1) as usize;
            // A response from an unknown peer is the only error; none happens here.
            let _ = self.nodes[to].step(m);
        }
        applied
    }
}
