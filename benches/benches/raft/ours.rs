//! Our Raft core ([`seastar_kernel::raft`]) under the shared driver.

use std::collections::VecDeque;

use seastar_kernel::raft::{ConfState, Config, EntryKind, MemStorage, Message, RawNode, Role};

use crate::driver::{self, Cluster};

pub struct Ours {
    nodes: Vec<RawNode<MemStorage>>,
    queue: VecDeque<Message>,
    digest: u64,
}

fn config(id: u64) -> Config {
    let mut c = Config::new(id);
    c.seed = id * 7919;
    c.election_tick = driver::ELECTION_TICK as u32;
    c.heartbeat_tick = driver::HEARTBEAT_TICK as u32;
    c.max_size_per_msg = driver::MAX_SIZE_PER_MSG;
    c.max_inflight_msgs = driver::MAX_INFLIGHT_MSGS;
    c.max_inflight_bytes = 0; // raft-rs 0.7 has no byte limit
    c.max_uncommitted_size = 0; // unlimited, as raft-rs's NO_LIMIT
    c.max_committed_size_per_ready = driver::MAX_COMMITTED_SIZE_PER_READY;
    c.check_quorum = true;
    c.pre_vote = true;
    c
}

impl Ours {
    /// Three founding members; node 1 campaigns and the cluster settles (its no-op applied
    /// everywhere) before anything is timed.
    pub fn new() -> Self {
        let nodes = (1..=3)
            .map(|id| {
                let s = MemStorage::bootstrap(ConfState::with_voters([1, 2, 3]));
                RawNode::new(config(id), s).expect("valid config")
            })
            .collect();
        let mut c = Ours {
            nodes,
            queue: VecDeque::new(),
            digest: 0,
        };
        c.nodes[0].campaign();
        for _ in 0..100 {
            c.cycle();
        }
        assert_eq!(c.nodes[0].role(), Role::Leader, "node 1 leads");
        c
    }
}

impl Cluster for Ours {
    fn propose(&mut self, mut batch: Vec<Vec<u8>>) {
        let leader = &mut self.nodes[0];
        let r = if batch.len() == 1 {
            leader.propose(batch.pop().unwrap_or_default())
        } else {
            leader.propose_batch(batch)
        };
        r.expect("the leader accepts proposals");
    }

    fn cycle(&mut self) -> u64 {
        let mut applied = 0;
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if !node.has_ready() {
                continue;
            }
            let rd = node.ready().expect("no corrupt entries in memory");
            self.queue.extend(rd.messages);
            let store = node.store_mut();
            store.append(&rd.entries).expect("contiguous entries");
            if let Some(hs) = rd.hard_state {
                store.set_hard_state(hs);
            }
            self.queue.extend(rd.persisted_messages);
            let mut n = 0;
            for e in &rd.committed_entries {
                if e.kind == EntryKind::Normal && !e.data.is_empty() {
                    driver::apply(&mut self.digest, &e.data);
                    n += 1;
                }
            }
            node.advance(rd.ack);
            if i == 0 {
                applied += n;
            }
        }
        while let Some(m) = self.queue.pop_front() {
            let to = (m.to - 1) as usize;
            self.nodes[to].step(m);
        }
        applied
    }
}
