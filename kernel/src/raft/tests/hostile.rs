//! Hostile and stale input: never a panic, always ignored or answered, and counted.

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::harness::*;
use crate::raft::*;

fn leader_cluster() -> Cluster {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.campaign(1);
    // Hand leadership over and back, so that older terms exist.
    c.node_mut(1).transfer_leader(2).unwrap();
    c.stabilize();
    c.node_mut(2).transfer_leader(1).unwrap();
    c.stabilize();
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), 3);
    c.propose(1, b"a").unwrap();
    c
}

fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

#[test]
fn each_kind_of_bad_input_is_counted() {
    let mut c = leader_cluster();
    let t = c.node(1).term();
    let before = c.node(1).status().counters;
    // Unknown node answering the leader.
    c.deliver(msg(
        9,
        1,
        t,
        MessageBody::AppendResponse {
            index: 1,
            reject: None,
        },
    ));
    // Old term.
    c.deliver(msg(
        2,
        1,
        t - 1,
        MessageBody::HeartbeatResponse {
            ctx: None,
            lease_tick: 0,
        },
    ));
    // Index beyond the log.
    c.deliver(msg(
        2,
        1,
        t,
        MessageBody::AppendResponse {
            index: 1_000,
            reject: None,
        },
    ));
    // Misaddressed, from node 0, and term 0.
    c.node_mut(1).step(msg(
        2,
        3,
        t,
        MessageBody::HeartbeatResponse {
            ctx: None,
            lease_tick: 0,
        },
    ));
    c.deliver(msg(
        0,
        1,
        t,
        MessageBody::HeartbeatResponse {
            ctx: None,
            lease_tick: 0,
        },
    ));
    c.deliver(msg(
        2,
        1,
        0,
        MessageBody::HeartbeatResponse {
            ctx: None,
            lease_tick: 0,
        },
    ));
    // A second "leader" in our term.
    c.deliver(msg(
        2,
        1,
        t,
        MessageBody::Heartbeat {
            commit: 99,
            ctx: None,
            lease_tick: 0,
        },
    ));
    // Snapshot ack for a transfer that does not exist, and one with an absurd offset.
    c.deliver(msg(
        2,
        1,
        t,
        MessageBody::SnapshotAck {
            index: 5,
            snap_term: 1,
            next_offset: 3,
        },
    ));
    c.deliver(msg(
        2,
        1,
        t,
        MessageBody::SnapshotAck {
            index: 5,
            snap_term: 1,
            next_offset: u64::MAX,
        },
    ));
    let after = c.node(1).status().counters;
    assert_eq!(after.unknown_sender, before.unknown_sender + 1);
    assert_eq!(after.stale_term, before.stale_term + 1);
    // Index beyond the log, term 0, a second leader, an absurd offset.
    assert_eq!(after.malformed, before.malformed + 4);
    assert_eq!(after.misaddressed, before.misaddressed + 2);
    assert!(after.stale_response > before.stale_response);
    assert_eq!(c.node(1).role(), Role::Leader);

    // Follower side.
    let f = c.node(2).status().counters;
    let e = Entry::new(t, 5, EntryKind::Normal, vec![1]);
    // Non-contiguous entries.
    c.deliver(msg(
        1,
        2,
        t,
        MessageBody::Append {
            prev_index: 2,
            prev_term: t,
            entries: vec![e],
            commit: 0,
        },
    ));
    // Overflowing indices.
    let e = Entry::new(t, 0, EntryKind::Normal, vec![1]);
    c.deliver(msg(
        1,
        2,
        t,
        MessageBody::Append {
            prev_index: u64::MAX,
            prev_term: t,
            entries: vec![e],
            commit: u64::MAX,
        },
    ));
    // A commit far beyond the log is clamped.
    c.deliver(msg(
        1,
        2,
        t,
        MessageBody::Heartbeat {
            commit: MAX_TERM_OR_INDEX,
            ctx: None,
            lease_tick: 0,
        },
    ));
    // Beyond the protocol limits: refused outright.
    c.deliver(msg(
        1,
        2,
        t,
        MessageBody::Heartbeat {
            commit: u64::MAX,
            ctx: None,
            lease_tick: 0,
        },
    ));
    assert!(c.node(2).commit_index() <= c.node(2).raft().log.last_index());
    // Read answer from a node that is not our leader; TimeoutNow from a non-leader.
    c.deliver(msg(
        3,
        2,
        t,
        MessageBody::ReadIndexResponse {
            ctx: vec![1],
            index: 1,
        },
    ));
    c.deliver(msg(3, 2, t, MessageBody::TimeoutNow));
    let g = c.node(2).status().counters;
    assert_eq!(g.malformed, f.malformed + 3);
    assert_eq!(g.unexpected, f.unexpected + 2);
    assert_eq!(c.node(2).role(), Role::Follower);
    // Rewrite of a committed entry is refused.
    let committed = c.node(2).commit_index();
    let e = Entry::new(t, committed, EntryKind::Normal, b"evil".to_vec());
    let prev_term = c.node(2).raft().log.term(committed - 1).unwrap();
    c.deliver(msg(
        1,
        2,
        t,
        MessageBody::Append {
            prev_index: committed - 1,
            prev_term,
            entries: vec![e],
            commit: 0,
        },
    ));
    // (prev_index < committed is answered with the commit index instead of appending.)
    assert!(c.node(2).raft().log.term(committed).unwrap() <= t);
    c.stabilize();
}

#[test]
fn snapshot_older_than_the_log_is_answered_not_installed() {
    let mut c = leader_cluster();
    let t = c.node(2).term();
    let commit = c.node(2).commit_index();
    let meta = SnapshotMeta {
        index: 1,
        term: 1,
        conf_state: ConfState::with_voters([1, 2, 3]),
    };
    let data = vec![1, 2, 3];
    let checksum = crc32c(&data);
    c.deliver(msg(
        1,
        2,
        t,
        MessageBody::SnapshotChunk {
            meta,
            total_len: 3,
            checksum,
            offset: 0,
            data,
        },
    ));
    assert_eq!(c.node(2).status().counters.stale_snapshot, 1);
    let rd = c.node_mut(2).ready().unwrap();
    assert!(rd.snapshot.is_none());
    assert!(rd.persisted_messages.iter().any(|m| m.body
        == MessageBody::AppendResponse {
            index: commit,
            reject: None
        }));
    c.node_mut(2).advance(rd.ack);
}

fn arb_entries() -> impl Strategy<Value = Vec<Entry>> {
    proptest::collection::vec(
        (
            0u64..6,
            0u64..12,
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..3),
        ),
        0..4,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(t, i, corrupt, d)| {
                let mut e = Entry::new(t, i, EntryKind::Normal, d);
                if corrupt {
                    e.checksum ^= 1;
                }
                e
            })
            .collect()
    })
}

fn small() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..12, Just(u64::MAX), Just(u64::MAX - 1)]
}

fn arb_body() -> impl Strategy<Value = MessageBody> {
    let ctx = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..2));
    let meta = (
        small(),
        small(),
        proptest::collection::btree_set(0u64..5, 0..4),
    )
        .prop_map(|(index, term, voters)| SnapshotMeta {
            index,
            term,
            conf_state: ConfState {
                voters,
                ..Default::default()
            },
        });
    prop_oneof![
        (small(), small()).prop_map(|(last_index, last_term)| MessageBody::PreVote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|reject| MessageBody::PreVoteResponse { reject }),
        (small(), small(), any::<bool>()).prop_map(|(last_index, last_term, transfer)| {
            MessageBody::Vote {
                last_index,
                last_term,
                transfer,
            }
        }),
        any::<bool>().prop_map(|reject| MessageBody::VoteResponse { reject }),
        (small(), small(), arb_entries(), small()).prop_map(
            |(prev_index, prev_term, entries, commit)| {
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                }
            }
        ),
        (small(), proptest::option::of((small(), small()))).prop_map(|(index, r)| {
            MessageBody::AppendResponse {
                index,
                reject: r.map(|(index, term)| RejectHint { index, term }),
            }
        }),
        (small(), ctx.clone(), small()).prop_map(|(commit, ctx, lease_tick)| {
            MessageBody::Heartbeat {
                commit,
                ctx,
                lease_tick,
            }
        }),
        (ctx, small())
            .prop_map(|(ctx, lease_tick)| MessageBody::HeartbeatResponse { ctx, lease_tick }),
        (
            meta,
            small(),
            any::<u32>(),
            small(),
            proptest::collection::vec(any::<u8>(), 0..4)
        )
            .prop_map(|(meta, total_len, checksum, offset, data)| {
                MessageBody::SnapshotChunk {
                    meta,
                    total_len,
                    checksum,
                    offset,
                    data,
                }
            }),
        (small(), small(), small()).prop_map(|(index, snap_term, next_offset)| {
            MessageBody::SnapshotAck {
                index,
                snap_term,
                next_offset,
            }
        }),
        Just(MessageBody::TimeoutNow),
        proptest::collection::vec(any::<u8>(), 0..2).prop_map(|ctx| MessageBody::ReadIndex { ctx }),
        (proptest::collection::vec(any::<u8>(), 0..2), small())
            .prop_map(|(ctx, index)| MessageBody::ReadIndexResponse { ctx, index }),
    ]
}

fn arb_msg() -> impl Strategy<Value = Message> {
    (
        0u64..5,
        0u64..5,
        prop_oneof![0u64..6, Just(u64::MAX)],
        arb_body(),
    )
        .prop_map(|(from, to, term, body)| Message {
            from,
            to,
            term,
            body,
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary messages, ticks and storage acknowledgements never panic, and the node keeps
    /// its basic invariants.
    #[test]
    fn random_input_never_panics(msgs in proptest::collection::vec(arb_msg(), 1..40), lead in any::<bool>()) {
        let mut c = Cluster::new(&[1, 2, 3]);
        if lead {
            c.campaign(1);
        }
        c.queue.clear();
        for (i, m) in msgs.into_iter().enumerate() {
            let mut m = m;
            if i % 2 == 0 {
                m.to = 1;
            }
            c.node_mut(1).step(m);
            if i % 3 == 0 {
                c.node_mut(1).tick();
            }
            let _ = c.handle_ready(1);
            c.queue.clear();
            let r = c.node(1).raft();
            prop_assert!(r.log.committed <= r.log.last_index());
            prop_assert!(r.log.applied <= r.log.committed);
        }
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = Message::decode(&bytes);
        let _ = ConfChange::decode(&bytes);
    }
}
