//! Reads, snapshots, membership and leadership transfer through whole nodes.

use alloc::vec;
use alloc::vec::Vec;

use super::harness::*;
use crate::raft::*;

fn cluster3() -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    c
}

// ----- reads --------------------------------------------------------------------------

#[test]
fn read_index_on_leader_needs_a_quorum_round() {
    let mut c = cluster3();
    c.propose(1, b"x").unwrap();
    let commit = c.node(1).commit_index();
    c.isolate(1);
    c.node_mut(1).read_index(b"r1".to_vec()).unwrap();
    c.stabilize();
    assert!(
        c.nodes[&1].read_states.is_empty(),
        "no answer without hearing from a quorum"
    );
    c.heal();
    c.tick(1, 1); // next heartbeat re-sends the pending context
    c.stabilize();
    assert_eq!(
        c.nodes[&1].read_states,
        vec![ReadState {
            index: commit,
            ctx: b"r1".to_vec()
        }]
    );
}

/// A heartbeat answer confirms a read only if its heartbeat left after the read was
/// registered: a late duplicate answer of an earlier round for the same context (registered
/// again by a duplicated forwarded request) proves nothing about this one.
#[test]
fn read_index_ignores_answers_to_heartbeats_sent_before_the_read() {
    let mut c = cluster3();
    c.isolate(1);
    c.tick(1, 3);
    c.node_mut(1).read_index(b"r".to_vec()).unwrap();
    c.stabilize();
    assert!(c.nodes[&1].read_states.is_empty());
    let t = c.node(1).term();
    let answer = |lease_tick| Message {
        from: 2,
        to: 1,
        term: t,
        body: MessageBody::HeartbeatResponse {
            ctx: Some(b"r".to_vec()),
            lease_tick,
        },
    };
    // Sent at tick 2, before the read was registered at tick 3: ignored.
    c.node_mut(1).step(answer(2));
    c.handle_ready(1);
    assert!(c.nodes[&1].read_states.is_empty());
    // An answer to a heartbeat sent since completes the quorum.
    c.node_mut(1).step(answer(3));
    c.handle_ready(1);
    let ctxs: Vec<&[u8]> = c.nodes[&1]
        .read_states
        .iter()
        .map(|rs| rs.ctx.as_slice())
        .collect();
    assert_eq!(ctxs, vec![b"r".as_slice()]);
}

/// Answers carry only the tick their heartbeat left at, so a context confirmed and then
/// registered again within the same leader tick (a late duplicate of a forwarded request)
/// would be confirmed by a late duplicate answer of its first round: the leader refuses
/// that registration; in a later tick the tick check covers it.
#[test]
fn read_index_refuses_a_context_confirmed_in_the_same_tick() {
    let mut c = cluster3();
    c.isolate(1);
    c.tick(1, 3);
    let t = c.node(1).term();
    let answer = Message {
        from: 2,
        to: 1,
        term: t,
        body: MessageBody::HeartbeatResponse {
            ctx: Some(b"r".to_vec()),
            lease_tick: 3,
        },
    };
    let forwarded = Message {
        from: 3,
        to: 1,
        term: t,
        body: MessageBody::ReadIndex { ctx: b"r".to_vec() },
    };
    let answers_to_3 = |c: &mut Cluster| {
        c.handle_ready(1);
        c.queue
            .drain(..)
            .filter(|m| m.to == 3 && matches!(m.body, MessageBody::ReadIndexResponse { .. }))
            .count()
    };
    c.node_mut(1).step(forwarded.clone());
    c.node_mut(1).step(answer.clone());
    assert_eq!(answers_to_3(&mut c), 1, "the first round confirms the read");
    let dropped = c.node(1).status().counters.dropped_reads;
    // The duplicate request and the duplicate answer, both within tick 3.
    c.node_mut(1).step(forwarded.clone());
    c.node_mut(1).step(answer.clone());
    assert_eq!(answers_to_3(&mut c), 0, "a stale round confirmed nothing");
    assert_eq!(c.node(1).status().counters.dropped_reads, dropped + 1);
    // In the next tick the context may be used again, and only a new round confirms it.
    c.tick(1, 1);
    c.handle_ready(1);
    c.queue.clear();
    c.node_mut(1).step(forwarded);
    c.node_mut(1).step(answer);
    assert_eq!(
        answers_to_3(&mut c),
        0,
        "an answer from tick 3 confirms nothing at tick 4"
    );
    c.node_mut(1).step(Message {
        from: 2,
        to: 1,
        term: t,
        body: MessageBody::HeartbeatResponse {
            ctx: Some(b"r".to_vec()),
            lease_tick: 4,
        },
    });
    assert_eq!(answers_to_3(&mut c), 1);
}

#[test]
fn read_index_is_forwarded_from_a_follower() {
    let mut c = cluster3();
    c.propose(1, b"x").unwrap();
    c.node_mut(3).read_index(b"f".to_vec()).unwrap();
    c.stabilize();
    let rs = &c.nodes[&3].read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].index, c.node(1).commit_index());
}

#[test]
fn read_index_without_leader_fails() {
    let mut c = Cluster::new(&[1, 2, 3]);
    assert_eq!(
        c.node_mut(2).read_index(b"x".to_vec()),
        Err(Error::NoLeader)
    );
    assert_eq!(c.node(2).status().counters.dropped_reads, 1);
}

#[test]
fn new_leader_defers_reads_until_it_commits_in_its_term() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.isolate(1);
    {
        let r = c.node_mut(1).raft_mut();
        r.become_candidate();
        r.become_leader();
    }
    c.node_mut(1).read_index(b"early".to_vec()).unwrap();
    c.stabilize();
    assert!(c.nodes[&1].read_states.is_empty());
    c.heal();
    c.node_mut(1).raft_mut().bcast_append();
    c.stabilize();
    assert_eq!(c.nodes[&1].read_states.len(), 1);
    assert_eq!(c.nodes[&1].read_states[0].index, c.node(1).commit_index());
}

#[test]
fn lease_read_is_immediate_only_while_the_lease_holds() {
    let mut c = Cluster::with(&[1, 2, 3], |id| {
        let mut k = cfg(id);
        k.read_only = ReadOnlyOption::LeaseBased;
        k
    });
    // Lease nodes refuse votes for an election timeout after start.
    c.tick_all(10);
    c.campaign(1);
    assert_eq!(c.node(1).role(), Role::Leader);
    c.tick_all(1); // a heartbeat round establishes the lease
    assert!(c.node(1).raft().lease_valid());
    c.isolate(1);
    c.node_mut(1).read_index(b"l1".to_vec()).unwrap();
    assert_eq!(
        c.node(1).raft().read_states.len(),
        1,
        "answered without a round trip"
    );
    // The lease runs out before any follower would vote for someone else.
    c.tick(1, 9);
    assert!(!c.node(1).raft().lease_valid());
    c.node_mut(1).read_index(b"l2".to_vec()).unwrap();
    assert_eq!(
        c.node(1).raft().read_states.len(),
        1,
        "falls back to a quorum round"
    );
}

/// With clocks in lockstep (the lease's assumption), a partitioned leader stops serving lease
/// reads before anyone else can be elected.
/// With clocks in lockstep (the lease's assumption), a partitioned leader stops serving lease
/// reads before anyone else can be elected. Run over many election-jitter seeds.
#[test]
fn lease_expires_before_a_new_leader_can_exist() {
    let seeds = if cfg!(miri) { 2 } else { 20 };
    for seed in 0..seeds {
        let mut c = Cluster::with(&[1, 2, 3], |id| {
            let mut k = cfg(id);
            k.read_only = ReadOnlyOption::LeaseBased;
            k.seed = id * 7919 + seed * 104_729;
            k
        });
        c.tick_all(10);
        if c.leader().is_none() {
            c.campaign(1);
        }
        c.tick_all(1);
        let l = c.leader().unwrap();
        let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&i| i != l).collect();
        c.isolate(l);
        let mut lease_reads = 0;
        for round in 0..60u8 {
            c.tick_all(1);
            let other_leader = others.iter().any(|&id| c.node(id).role() == Role::Leader);
            let before = c.node(l).raft().read_states.len();
            if c.node(l).role() == Role::Leader {
                c.node_mut(l).read_index(vec![round]).unwrap();
            }
            if c.node(l).raft().read_states.len() > before {
                lease_reads += 1;
                assert!(
                    !other_leader,
                    "seed {seed}: lease read at round {round} while another leader exists"
                );
            }
        }
        assert!(lease_reads > 0);
        assert!(
            others.iter().any(|&id| c.node(id).role() == Role::Leader),
            "the majority elected a leader"
        );
    }
}

#[test]
fn lease_config_requires_check_quorum() {
    let mut k = Config::new(1);
    k.read_only = ReadOnlyOption::LeaseBased;
    k.check_quorum = false;
    assert!(k.validate().is_err());
}

// ----- snapshots ----------------------------------------------------------------------

fn compact(c: &mut Cluster, id: NodeId) {
    let applied = c.nodes[&id].applied.last().map_or(0, |e| e.index);
    let cs = c.node(id).conf_state();
    c.node_mut(id)
        .store_mut()
        .create_snapshot(applied, cs, vec![7u8; 100])
        .unwrap();
}

fn small_chunks(id: NodeId) -> Config {
    let mut k = cfg(id);
    k.snapshot_chunk_size = 16;
    k
}

#[test]
fn lagging_follower_catches_up_by_chunked_snapshot() {
    let mut c = Cluster::with(&[1, 2, 3], small_chunks);
    c.campaign(1);
    c.isolate(3);
    for i in 0..10u8 {
        c.propose(1, &[i]).unwrap();
    }
    compact(&mut c, 1);
    c.heal();
    c.tick_all(2);
    let chunks = c
        .trace
        .iter()
        .filter(|m| matches!(m.body, MessageBody::SnapshotChunk { .. }) && m.to == 3)
        .count();
    assert!(chunks >= 7, "100 bytes in 16-byte chunks, got {chunks}");
    assert_eq!(c.node(3).store().snapshot().unwrap().data, vec![7u8; 100]);
    c.propose(1, b"after").unwrap();
    assert_eq!(c.applied_data(3).last().unwrap(), b"after");
    assert_eq!(c.node(3).commit_index(), c.node(1).commit_index());
}

#[test]
fn snapshot_transfer_resumes_after_lost_chunks() {
    let mut c = Cluster::with(&[1, 2, 3], small_chunks);
    c.campaign(1);
    c.isolate(3);
    for i in 0..5u8 {
        c.propose(1, &[i]).unwrap();
    }
    compact(&mut c, 1);
    c.heal();
    // Lose every chunk with offset 48.
    c.filter = Some(|m| !matches!(m.body, MessageBody::SnapshotChunk { offset: 48, .. }));
    c.tick_all(2);
    assert!(c.node(3).store().snapshot().unwrap().is_empty());
    let sent_before = c.trace.len();
    c.filter = None;
    c.tick_all(6); // resend timer fires
                   // The resend starts at the acknowledged offset, not from the beginning.
    let first_resent = c.trace[sent_before..]
        .iter()
        .find_map(|m| match &m.body {
            MessageBody::SnapshotChunk { offset, .. } if m.to == 3 => Some(*offset),
            _ => None,
        })
        .unwrap();
    assert_eq!(first_resent, 48);
    assert_eq!(c.node(3).store().snapshot().unwrap().data, vec![7u8; 100]);
}

#[test]
fn failed_snapshot_is_retried_and_follower_never_stalls() {
    let mut c = Cluster::with(&[1, 2, 3], small_chunks);
    c.campaign(1);
    c.isolate(3);
    for i in 0..5u8 {
        c.propose(1, &[i]).unwrap();
    }
    compact(&mut c, 1);
    c.heal();
    c.filter = Some(|m| !matches!(m.body, MessageBody::SnapshotChunk { .. }));
    c.tick_all(60); // the transfer is aborted after snapshot_abort_ticks
    assert!(c.node(1).status().counters.snapshot_aborts >= 1);
    // The transport also reports a failure: still fine.
    c.node_mut(1).report_snapshot_failure(3);
    c.filter = None;
    c.tick_all(5);
    assert_eq!(c.node(3).commit_index(), c.node(1).commit_index());
    assert_eq!(
        c.node(1).status().progress[&3].state,
        ProgressState::Replicate
    );
}

#[test]
fn corrupt_snapshot_is_rejected_then_retransmitted() {
    let mut c = Cluster::with(&[1, 2, 3], small_chunks);
    c.campaign(1);
    c.isolate(3);
    c.propose(1, b"x").unwrap();
    compact(&mut c, 1);
    c.heal();
    c.filter = Some(|m| !matches!(&m.body, MessageBody::SnapshotChunk { offset: 16, .. }));
    c.tick_all(1);
    // Deliver a forged chunk at offset 16 with flipped bits.
    let t = c.node(1).term();
    let snap = c.node(1).store().snapshot().unwrap();
    let checksum = crc32c(&snap.data);
    let mut data = snap.data[16..32].to_vec();
    data[0] ^= 0xFF;
    c.filter = None;
    c.deliver(Message {
        from: 1,
        to: 3,
        term: t,
        body: MessageBody::SnapshotChunk {
            meta: snap.meta.clone(),
            total_len: 100,
            checksum,
            offset: 16,
            data,
        },
    });
    c.stabilize();
    c.tick_all(10);
    assert!(c.node(3).status().counters.corrupt >= 1);
    assert_eq!(c.node(3).store().snapshot().unwrap().data, snap.data);
}

#[test]
fn unavailable_snapshot_is_retried_later() {
    let mut c = cluster3();
    c.isolate(3);
    c.propose(1, b"x").unwrap();
    compact(&mut c, 1);
    c.node_mut(1).store_mut().set_snapshot_unavailable(true);
    c.heal();
    c.tick_all(3);
    assert!(c.node(3).commit_index() < c.node(1).commit_index());
    c.node_mut(1).store_mut().set_snapshot_unavailable(false);
    c.tick_all(3);
    assert_eq!(c.node(3).commit_index(), c.node(1).commit_index());
}

// ----- membership -----------------------------------------------------------------------

fn bootstrapped3() -> Cluster {
    let mut c = Cluster::bootstrapped(&[1, 2, 3]);
    c.campaign(1);
    assert_eq!(c.node(1).role(), Role::Leader);
    c
}

fn apply_all(c: &mut Cluster) {
    c.stabilize();
    c.tick_all(3);
}

#[test]
fn learner_catches_up_does_not_vote_and_is_promoted() {
    let mut c = bootstrapped3();
    c.add_node(4, MemStorage::default());
    c.node_mut(1)
        .propose_conf_change(&ConfChange::single(ConfChangeKind::AddLearner, 4))
        .unwrap();
    apply_all(&mut c);
    c.propose(1, b"data").unwrap();
    assert_eq!(c.applied_data(4), vec![b"data".to_vec()]);
    assert!(c.node(4).conf_state().learners.contains(&4));
    // A learner never campaigns.
    c.tick(4, 100);
    assert_eq!(c.node(4).role(), Role::Follower);
    // Promotion.
    c.node_mut(1)
        .propose_conf_change(&ConfChange::single(ConfChangeKind::AddVoter, 4))
        .unwrap();
    apply_all(&mut c);
    for id in 1..=4 {
        assert_eq!(c.node(id).conf_state().voters.len(), 4, "node {id}");
    }
    // Now 3 of 4 are needed: with two down, nothing commits.
    c.down.insert(3);
    c.down.insert(4);
    let before = c.node(1).commit_index();
    c.propose(1, b"stuck").unwrap();
    assert_eq!(c.node(1).commit_index(), before);
}

#[test]
fn joint_consensus_with_automatic_leave() {
    let mut c = bootstrapped3();
    for id in [4, 5] {
        c.add_node(id, MemStorage::default());
    }
    let cc = ConfChange {
        transition: ConfChangeTransition::Auto,
        changes: vec![
            ConfChangeSingle {
                kind: ConfChangeKind::AddVoter,
                node: 4,
            },
            ConfChangeSingle {
                kind: ConfChangeKind::AddVoter,
                node: 5,
            },
            ConfChangeSingle {
                kind: ConfChangeKind::Remove,
                node: 3,
            },
        ],
    };
    c.node_mut(1).propose_conf_change(&cc).unwrap();
    apply_all(&mut c);
    let want: Vec<NodeId> = vec![1, 2, 4, 5];
    for id in [1, 2, 4, 5] {
        let cs = c.node(id).conf_state();
        assert_eq!(
            cs.voters.iter().copied().collect::<Vec<_>>(),
            want,
            "node {id}"
        );
        assert!(
            cs.voters_outgoing.is_empty(),
            "left the joint config automatically"
        );
    }
    // Went through joint: node 1 applied two configuration entries.
    assert_eq!(c.nodes[&1].conf_states.len(), 2);
    assert!(!c.nodes[&1].conf_states[0].voters_outgoing.is_empty());
}

#[test]
fn explicit_joint_waits_for_leave_and_refuses_other_changes() {
    let mut c = bootstrapped3();
    c.add_node(4, MemStorage::default());
    let mut cc = ConfChange::single(ConfChangeKind::AddVoter, 4);
    cc.transition = ConfChangeTransition::JointExplicit;
    c.node_mut(1).propose_conf_change(&cc).unwrap();
    apply_all(&mut c);
    assert!(
        !c.node(1).conf_state().voters_outgoing.is_empty(),
        "stays joint"
    );
    let err = c
        .node_mut(1)
        .propose_conf_change(&ConfChange::single(ConfChangeKind::Remove, 2))
        .unwrap_err();
    assert_eq!(err, Error::ProposalDropped(DropReason::ConfChangePending));
    c.node_mut(1)
        .propose_conf_change(&ConfChange::leave_joint())
        .unwrap();
    apply_all(&mut c);
    assert!(c.node(1).conf_state().voters_outgoing.is_empty());
    assert_eq!(c.node(1).conf_state().voters.len(), 4);
}

#[test]
fn only_one_pending_conf_change() {
    let mut c = cluster3();
    c.isolate(2);
    c.isolate(3);
    c.node_mut(1)
        .propose_conf_change(&ConfChange::single(ConfChangeKind::AddLearner, 7))
        .unwrap();
    let err = c
        .node_mut(1)
        .propose_conf_change(&ConfChange::single(ConfChangeKind::AddLearner, 8));
    assert_eq!(
        err,
        Err(Error::ProposalDropped(DropReason::ConfChangePending))
    );
}

#[test]
fn removed_leader_steps_down_and_the_rest_elect() {
    let mut c = cluster3();
    c.node_mut(1)
        .propose_conf_change(&ConfChange::single(ConfChangeKind::Remove, 1))
        .unwrap();
    c.stabilize();
    assert_eq!(c.node(1).role(), Role::Follower);
    assert!(!c.node(2).conf_state().voters.contains(&1));
    c.down.insert(1);
    c.tick_all(40);
    let l = c.leader().unwrap();
    assert!(l == 2 || l == 3);
    c.propose(l, b"without 1").unwrap();
    assert_eq!(c.applied_data(2).last().unwrap(), b"without 1");
}

// ----- leadership transfer --------------------------------------------------------------

#[test]
fn transfer_to_up_to_date_follower() {
    let mut c = cluster3();
    let t = c.node(1).term();
    c.node_mut(1).transfer_leader(2).unwrap();
    c.stabilize();
    assert_eq!(c.node(2).role(), Role::Leader);
    assert_eq!(c.node(2).term(), t + 1);
    assert_eq!(c.node(1).leader(), Some(2));
}

#[test]
fn transfer_to_lagging_follower_catches_it_up_first() {
    let mut c = cluster3();
    c.isolate(3);
    for i in 0..5u8 {
        c.propose(1, &[i]).unwrap();
    }
    c.heal();
    c.node_mut(1).transfer_leader(3).unwrap();
    // Proposals are refused while the transfer runs.
    assert_eq!(
        c.node_mut(1).propose(b"no".to_vec()),
        Err(Error::ProposalDropped(DropReason::TransferInProgress))
    );
    c.stabilize();
    assert_eq!(c.node(3).role(), Role::Leader);
    assert_eq!(c.applied_data(3).len(), 5);
}

#[test]
fn transfer_times_out_and_aborts() {
    let mut c = cluster3();
    c.isolate(3);
    c.node_mut(1).transfer_leader(3).unwrap();
    c.tick(1, 10);
    c.stabilize();
    assert_eq!(c.node(1).status().transferee, None);
    assert_eq!(c.node(1).status().counters.transfer_aborts, 1);
    assert_eq!(c.node(1).role(), Role::Leader);
    c.propose(1, b"ok again").unwrap();
}

#[test]
fn transfer_can_be_aborted_and_rejects_learners() {
    let mut c = bootstrapped3();
    c.isolate(2);
    c.node_mut(1).transfer_leader(2).unwrap();
    c.node_mut(1).abort_leader_transfer();
    assert_eq!(c.node(1).status().transferee, None);
    c.heal();
    c.node_mut(1)
        .propose_conf_change(&ConfChange::single(ConfChangeKind::AddLearner, 4))
        .unwrap();
    c.add_node(4, MemStorage::default());
    apply_all(&mut c);
    assert!(c.node_mut(1).transfer_leader(4).is_err());
    assert!(
        c.node_mut(2).transfer_leader(3).is_err(),
        "only the leader transfers"
    );
}

// ----- status and batching --------------------------------------------------------------

#[test]
fn status_reports_progress_and_proposals_are_batched() {
    let mut c = cluster3();
    for i in 0..10u8 {
        c.node_mut(1).propose(vec![i]).unwrap();
    }
    let rd = c.node_mut(1).ready().unwrap();
    let appends: Vec<&Message> = rd
        .messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Append { .. }))
        .collect();
    assert_eq!(
        appends.len(),
        2,
        "one append per follower for ten proposals"
    );
    c.queue.extend(rd.messages);
    c.node_mut(1).store_mut().append(&rd.entries).unwrap();
    c.node_mut(1).advance(rd.ack);
    c.stabilize();
    let st = c.node(1).status();
    assert_eq!(st.role, Role::Leader);
    assert_eq!(st.commit, 11);
    assert_eq!(st.applied, 11);
    assert_eq!(st.progress.len(), 3);
    assert!(st
        .progress
        .values()
        .all(|p| p.matched == 11 && p.state == ProgressState::Replicate));
}

#[test]
fn uncommitted_cap_applies_back_pressure() {
    let mut c = Cluster::with(&[1, 2, 3], |id| {
        let mut k = cfg(id);
        k.max_uncommitted_size = 100;
        k
    });
    c.campaign(1);
    c.isolate(1);
    c.node_mut(1).propose(vec![0; 60]).unwrap();
    c.node_mut(1).propose(vec![0; 30]).unwrap();
    assert_eq!(
        c.node_mut(1).propose(vec![0; 30]),
        Err(Error::ProposalDropped(DropReason::UncommittedCapExceeded))
    );
}

#[test]
fn inflight_limit_pauses_replication() {
    let mut c = Cluster::with(&[1, 2, 3], |id| {
        let mut k = cfg(id);
        k.max_inflight_msgs = 2;
        k
    });
    c.campaign(1);
    c.isolate(2);
    for i in 0..5u8 {
        c.propose(1, &[i]).unwrap();
    }
    let p = c.node(1).status().progress[&2];
    assert_eq!(p.inflight_count, 2);
    assert!(p.paused);
}

// ----- restart and asynchronous applying ---------------------------------------------------

#[test]
fn restarted_follower_recovers_from_its_storage() {
    let mut c = cluster3();
    for i in 0..5u8 {
        c.propose(1, &[i]).unwrap();
    }
    let term = c.node(2).term();
    let commit = c.node(2).commit_index();
    let disk = c.node(2).store().clone();
    // Crash and restart node 2 from what it persisted; its state machine starts empty.
    c.nodes.remove(&2);
    c.add_node(2, disk);
    assert_eq!(c.node(2).term(), term);
    assert_eq!(c.node(2).commit_index(), commit);
    c.stabilize();
    assert_eq!(
        c.applied_data(2).len(),
        5,
        "committed entries are delivered again"
    );
    c.propose(1, b"after restart").unwrap();
    assert_eq!(c.applied_data(2).last().unwrap(), b"after restart");
}

#[test]
fn persistence_and_applying_can_be_acknowledged_separately() {
    let mut c = Cluster::new(&[1]);
    c.campaign(1);
    c.node_mut(1).propose(b"a".to_vec()).unwrap();
    let rd = c.node_mut(1).ready().unwrap();
    c.node_mut(1).store_mut().append(&rd.entries).unwrap();
    c.node_mut(1).advance_persisted(rd.ack);
    // Committed now (single voter, durable); handed out for applying in the next Ready.
    let rd2 = c.node_mut(1).ready().unwrap();
    let last = rd2.committed_entries.last().unwrap().index;
    assert_eq!(rd2.committed_entries.last().unwrap().data, b"a");
    c.node_mut(1).advance_persisted(rd2.ack);
    assert!(c.node(1).status().applied < last);
    c.node_mut(1).advance_applied(last);
    assert_eq!(c.node(1).status().applied, last);
}
