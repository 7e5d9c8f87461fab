//! Scenarios from the Raft paper (§5) as tests, plus durability-ordering checks.

use alloc::vec;
use alloc::vec::Vec;

use super::harness::*;
use crate::raft::*;

#[test]
fn three_nodes_elect_one_leader() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    assert_eq!(c.node(1).role(), Role::Leader);
    for id in [2, 3] {
        assert_eq!(c.node(id).role(), Role::Follower);
        assert_eq!(c.node(id).leader(), Some(1));
        assert_eq!(c.node(id).term(), 1);
    }
    // The leader's no-op commits everywhere.
    for id in [1, 2, 3] {
        assert_eq!(c.node(id).commit_index(), 1);
    }
}

#[test]
fn election_by_timeout() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.tick_all(25);
    let l = c.leader().expect("a leader after timeouts");
    let leaders = c
        .nodes
        .values()
        .filter(|n| n.raw.role() == Role::Leader)
        .count();
    assert_eq!(leaders, 1);
    assert!(c.nodes.values().all(|n| n.raw.leader() == Some(l)));
}

#[test]
fn single_node_commits_alone() {
    let mut c = Cluster::new(&[1]);
    c.campaign(1);
    assert_eq!(c.node(1).role(), Role::Leader);
    c.propose(1, b"x").unwrap();
    assert_eq!(c.applied_data(1), vec![b"x".to_vec()]);
}

#[test]
fn replication_and_state_machine_agreement() {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5]);
    c.campaign(1);
    for i in 0..20u8 {
        c.propose(1, &[i]).unwrap();
    }
    let want = c.applied_data(1);
    assert_eq!(want.len(), 20);
    for id in 2..=5 {
        assert_eq!(c.applied_data(id), want);
    }
}

#[test]
fn follower_refuses_proposals_with_leader_hint() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    let err = c.node_mut(2).propose(b"x".to_vec()).unwrap_err();
    assert_eq!(
        err,
        Error::ProposalDropped(DropReason::NotLeader { leader: Some(1) })
    );
    assert_eq!(c.node(2).status().counters.dropped_proposals, 1);
}

#[test]
fn candidate_with_stale_log_loses() {
    // Election restriction (§5.4.1): node 3 misses entries and cannot win.
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    c.isolate(3);
    c.propose(1, b"a").unwrap();
    c.heal();
    c.isolate(1);
    // Node 3 campaigns without pre-vote hurdles: force an election.
    c.node_mut(3).raft_mut().become_candidate();
    let t = c.node(3).term();
    let (li, lt) = (
        c.node(3).raft().log.last_index(),
        c.node(3).raft().log.last_term(),
    );
    // Node 2 has a longer log, so it refuses even though node 3's term is newer.
    let m = Message {
        from: 3,
        to: 2,
        term: t,
        body: MessageBody::Vote {
            last_index: li,
            last_term: lt,
            transfer: true,
        },
    };
    c.send(m);
    let resp = c
        .trace
        .iter()
        .rev()
        .find(|m| m.from == 2 && m.to == 3)
        .unwrap();
    assert_eq!(resp.body, MessageBody::VoteResponse { reject: true });
}

#[test]
fn prevote_keeps_partitioned_node_from_disrupting() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    let term = c.node(1).term();
    c.isolate(3);
    c.tick(3, 100);
    c.stabilize();
    assert_eq!(c.node(3).term(), term, "pre-vote does not bump the term");
    assert_eq!(c.node(3).role(), Role::PreCandidate);
    c.heal();
    c.tick_all(3);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), term);
    assert_eq!(c.node(3).leader(), Some(1));
}

#[test]
fn check_quorum_steps_down_isolated_leader() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    c.isolate(1);
    // The first check-quorum round still sees the answers from before the partition.
    c.tick(1, 10);
    c.stabilize();
    assert_eq!(c.node(1).role(), Role::Leader);
    c.tick(1, 10);
    c.stabilize();
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).leader(), None);
}

#[test]
fn leader_lease_ignores_disruptive_vote() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    let t = c.node(2).term();
    let m = Message {
        from: 3,
        to: 2,
        term: t + 5,
        body: MessageBody::Vote {
            last_index: 99,
            last_term: 99,
            transfer: false,
        },
    };
    c.deliver(m);
    assert_eq!(c.node(2).term(), t);
    assert_eq!(c.node(2).status().counters.lease_ignored_votes, 1);
}

/// Raft Figure 7: a new leader repairs followers with missing, extra and conflicting entries.
#[test]
fn figure7_followers_with_divergent_logs_are_repaired() {
    let leader_log: Vec<Term> = vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: Vec<Vec<Term>> = vec![
        vec![1, 1, 1, 4, 4, 5, 5, 6, 6],          // (a) missing one
        vec![1, 1, 1, 4],                         // (b) missing many
        vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],    // (c) one extra
        vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // (d) extra from a newer term
        vec![1, 1, 1, 4, 4, 4, 4],                // (e) conflicting term 4 tail
        vec![1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],    // (f) conflicting terms 2 and 3
    ];
    for (i, flog) in followers.iter().enumerate() {
        let fterm = *flog.last().unwrap();
        let ls = storage_with_log(&[1, 2, 3], &leader_log, 7);
        let fs = storage_with_log(&[1, 2, 3], flog, fterm);
        let third = storage_with_log(&[1, 2, 3], &[], 0);
        let mut c = Cluster::from_storages(vec![(1, ls), (2, fs), (3, third)], cfg);
        c.down.insert(3);
        {
            let r = c.node_mut(1).raft_mut();
            r.become_candidate();
            r.become_leader();
            r.bcast_append();
        }
        c.stabilize();
        c.propose(1, b"after").unwrap();
        assert_eq!(c.log_terms(1), c.log_terms(2), "case {i}");
        let mut want: Vec<(Index, Term)> = leader_log
            .iter()
            .enumerate()
            .map(|(j, &t)| (j as u64 + 1, t))
            .collect();
        want.push((11, 8));
        want.push((12, 8));
        assert_eq!(c.log_terms(2), want, "case {i}");
        assert_eq!(c.node(2).commit_index(), 12, "case {i}");
    }
}

/// Raft Figure 8 / §5.4.2: a leader never commits an entry of an older term by counting
/// replicas; it commits it only together with an entry of its own term.
#[test]
fn figure8_no_commit_of_previous_term_by_counting() {
    let voters = [1, 2, 3, 4, 5];
    let mut storages = Vec::new();
    for id in voters {
        // Index 1 (term 1) everywhere; index 2 (term 2) only on S1 and S2 (Figure 8 (a)).
        let log: Vec<Term> = if id <= 2 { vec![1, 2] } else { vec![1] };
        storages.push((id, storage_with_log(&voters, &log, 3)));
    }
    let mut c = Cluster::from_storages(storages, cfg);
    // (c): S1 is leader of term 4 and replicates index 2 to S3: a majority holds it...
    let r = c.node_mut(1).raft_mut();
    r.become_candidate();
    r.become_leader();
    assert_eq!(r.term, 4);
    let _ = c.handle_ready(1);
    c.queue.clear();
    // ...acknowledged by S2 and S3 as far as index 2 only (the term-4 no-op not yet):
    for from in [2, 3] {
        c.deliver(Message {
            from,
            to: 1,
            term: 4,
            body: MessageBody::AppendResponse {
                index: 2,
                reject: None,
            },
        });
    }
    let _ = c.handle_ready(1);
    c.queue.clear();
    assert_eq!(
        c.node(1).commit_index(),
        0,
        "index 2 (term 2) must not commit by counting"
    );
    // Once a majority has the term-4 entry, everything before it commits too.
    for from in [2, 3] {
        c.deliver(Message {
            from,
            to: 1,
            term: 4,
            body: MessageBody::AppendResponse {
                index: 3,
                reject: None,
            },
        });
    }
    assert_eq!(c.node(1).commit_index(), 3);
}

#[test]
fn vote_is_durable_before_the_answer_leaves() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.node_mut(2).step(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Vote {
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    });
    let rd = c.node_mut(2).ready().unwrap();
    assert!(rd.messages.is_empty());
    assert_eq!(rd.hard_state.unwrap().vote, Some(1));
    assert_eq!(rd.persisted_messages.len(), 1);
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::VoteResponse { reject: false }
    );
    c.node_mut(2).advance(rd.ack);
}

#[test]
fn entries_are_durable_before_acknowledged_and_leader_persists_in_parallel() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    c.node_mut(1).propose(b"p".to_vec()).unwrap();
    let rd = c.node_mut(1).ready().unwrap();
    // The leader's appends may leave before its own write...
    assert!(rd
        .messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::Append { .. })));
    assert_eq!(rd.entries.len(), 1);
    // ...but it does not count itself until the write is acknowledged.
    let last = rd.entries[0].index;
    let leader_entries = rd.entries.clone();
    for m in rd.messages {
        c.deliver(m);
    }
    let rd2 = c.node_mut(2).ready().unwrap();
    assert!(
        rd2.messages.is_empty(),
        "follower acks only after persisting"
    );
    assert!(rd2
        .persisted_messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::AppendResponse { .. })));
    for m in rd2.persisted_messages.clone() {
        c.deliver(m);
    }
    // Leader (unpersisted) + one follower: a majority of 3 only if the leader counts itself.
    assert!(c.node(1).commit_index() < last);
    let st2 = c.node_mut(2).store_mut();
    st2.append(&rd2.entries).unwrap();
    st2.set_hard_state(rd2.hard_state.unwrap_or(st2.hard_state()));
    c.node_mut(2).advance(rd2.ack);
    c.node_mut(1).store_mut().append(&leader_entries).unwrap();
    c.node_mut(1).advance(rd.ack);
    assert_eq!(c.node(1).commit_index(), last);
}

#[test]
fn corrupt_entry_in_storage_is_an_error_and_never_applied() {
    let mut c = Cluster::new(&[1]);
    c.campaign(1);
    // Persist a proposal, and crash before applying it; the entry rots on disk meanwhile.
    c.node_mut(1).propose(b"torn".to_vec()).unwrap();
    let rd = c.node_mut(1).ready().unwrap();
    let mut disk = c.node(1).store().clone();
    disk.append(&rd.entries).unwrap();
    let idx = rd.entries[0].index;
    disk.corrupt_entry(idx);
    // On restart the committed entries come back from storage, checksum-verified (a running
    // node applies the durable entries it still holds in memory instead).
    c.add_node(1, disk);
    c.node_mut(1).campaign();
    let mut outcome = None;
    for _ in 0..10 {
        let n = c.node_mut(1);
        match n.ready() {
            Err(e) => {
                outcome = Some(e);
                break;
            }
            Ok(rd) => {
                assert!(rd.committed_entries.iter().all(|e| e.index < idx));
                n.store_mut().append(&rd.entries).unwrap();
                if let Some(hs) = rd.hard_state {
                    n.store_mut().set_hard_state(hs);
                }
                n.advance(rd.ack);
            }
        }
    }
    assert_eq!(outcome, Some(Error::CorruptEntry { index: idx }));
}

#[test]
fn corrupt_entry_on_the_wire_is_ignored() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    let mut e = Entry::new(1, 2, EntryKind::Normal, b"x".to_vec());
    e.data[0] ^= 1;
    c.deliver(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![e],
            commit: 1,
        },
    });
    assert_eq!(c.node(2).status().counters.corrupt, 1);
    assert_eq!(c.node(2).raft().log.last_index(), 1);
}

#[test]
fn message_and_entries_round_trip_through_postcard() {
    let e = Entry::new(
        3,
        7,
        EntryKind::ConfChange,
        ConfChange::single(ConfChangeKind::AddLearner, 9)
            .encode()
            .unwrap(),
    );
    let m = Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Append {
            prev_index: 6,
            prev_term: 2,
            entries: vec![e.clone()],
            commit: 5,
        },
    };
    let back = Message::decode(&m.encode().unwrap()).unwrap();
    assert_eq!(back, m);
    assert!(e.verify().is_ok());
    let snap = Snapshot {
        meta: SnapshotMeta {
            index: 4,
            term: 2,
            conf_state: ConfState::with_voters([1, 2]),
        },
        data: vec![1, 2, 3],
    };
    let bytes = postcard::to_allocvec(&snap).unwrap();
    assert_eq!(postcard::from_bytes::<Snapshot>(&bytes).unwrap(), snap);
    let hs = HardState {
        term: 5,
        vote: Some(2),
        commit: 9,
    };
    let bytes = postcard::to_allocvec(&hs).unwrap();
    assert_eq!(postcard::from_bytes::<HardState>(&bytes).unwrap(), hs);
    assert_eq!(Message::decode(&[0xFF, 0xFF, 0xFF]), Err(Error::Codec));
}

/// Leader completeness (§5.4): whoever wins the next election holds every committed entry.
#[test]
fn leader_completeness_after_leader_failure() {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5]);
    c.campaign(1);
    // Entries committed with 1, 2, 3 only.
    c.down.insert(4);
    c.down.insert(5);
    for i in 0..3u8 {
        c.propose(1, &[i]).unwrap();
    }
    let committed = c.node(1).commit_index();
    c.down.clear();
    c.down.insert(1);
    // 4 and 5 lack the entries; whoever wins must be 2 or 3.
    c.tick_all(40);
    let l = c.leader().unwrap();
    assert!(l == 2 || l == 3, "leader {l} lacks committed entries");
    assert!(c.node(l).raft().log.last_index() >= committed);
    for i in 1..=committed {
        assert_eq!(c.node(l).raft().log.term(i), c.node(1).raft().log.term(i));
    }
}

/// Leader append-only (§5.3): a leader never overwrites or deletes its own entries, whatever
/// it receives.
#[test]
fn leader_never_overwrites_its_log() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    c.propose(1, b"mine").unwrap();
    let before = c.log_terms(1);
    let t = c.node(1).term();
    let forged = Entry::new(t, 2, EntryKind::Normal, b"forged".to_vec());
    c.deliver(Message {
        from: 2,
        to: 1,
        term: t,
        body: MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![forged],
            commit: 2,
        },
    });
    c.stabilize();
    assert_eq!(c.log_terms(1), before);
    assert_eq!(c.node(1).role(), Role::Leader);
}

/// Log matching (§5.3): the consistency check refuses an append whose previous entry does
/// not match, and the follower's log is untouched.
#[test]
fn append_with_mismatched_previous_entry_is_rejected() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    c.propose(1, b"x").unwrap();
    let before = c.log_terms(2);
    let t = c.node(1).term();
    let e = Entry::new(t, 3, EntryKind::Normal, b"y".to_vec());
    c.deliver(Message {
        from: 1,
        to: 2,
        term: t,
        body: MessageBody::Append {
            prev_index: 2,
            prev_term: t - 1,
            entries: vec![e],
            commit: 0,
        },
    });
    assert_eq!(c.log_terms(2), before);
    let rd = c.node_mut(2).ready().unwrap();
    assert!(rd.persisted_messages.iter().any(|m| matches!(
        m.body,
        MessageBody::AppendResponse {
            index: 2,
            reject: Some(_)
        }
    )));
    c.node_mut(2).advance(rd.ack);
}

/// Figure 2, AppendEntries rule 5: a follower sets its commit index to
/// `min(leaderCommit, index of last new entry)`. An append that matches only a prefix of the
/// follower's log (a leader backing up one entry at a time, or a late message) proves nothing
/// about the entries after it: a stale tail there must not be committed.
#[test]
fn follower_commit_is_clamped_to_the_entries_the_append_matched() {
    // Entries 3 and 4 come from a deposed leader of term 2; the leader of term 3 has other
    // entries there, committed up to 4.
    let stale = storage_with_log(&[1, 2, 3], &[1, 1, 2, 2], 2);
    let mut c = Cluster::from_storages(vec![(2, stale)], cfg);
    c.deliver(Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![entry(1, 2)],
            commit: 4,
        },
    });
    c.stabilize();
    assert_eq!(c.node(2).commit_index(), 2);
    let applied: Vec<(Index, Term)> = c.nodes[&2]
        .applied
        .iter()
        .map(|e| (e.index, e.term))
        .collect();
    assert_eq!(applied, vec![(1, 1), (2, 1)]);
}

/// §5.1: a message of an older term is stale. An append response of an older term (a late
/// answer to an earlier leadership of the same node, whose log may since have been cut and
/// regrown) must not move the leader's view of what the follower holds.
#[test]
fn append_response_of_an_older_term_is_ignored() {
    let storages = [1, 2, 3]
        .iter()
        .map(|&id| (id, storage_with_log(&[1, 2, 3], &[1, 1], 4)))
        .collect();
    let mut c = Cluster::from_storages(storages, cfg);
    c.campaign(1);
    let t = c.node(1).term();
    c.isolate(2);
    c.propose(1, b"x").unwrap();
    let last = c.node(1).raft().log.last_index();
    let matched = |c: &Cluster| c.node(1).raft().tracker.progress.get(&2).map(|p| p.matched);
    let before = matched(&c);
    assert!(before.is_some_and(|m| m < last));
    c.node_mut(1).step(Message {
        from: 2,
        to: 1,
        term: t - 1,
        body: MessageBody::AppendResponse {
            index: last,
            reject: None,
        },
    });
    assert_eq!(matched(&c), before);
}
