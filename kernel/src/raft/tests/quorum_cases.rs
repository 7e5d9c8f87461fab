//! The commit-index cases of etcd-io/raft's `quorum/testdata` (majority and joint), and vote
//! counting, re-expressed as tables. `None` is a voter whose index is unknown.

use alloc::vec::Vec;

use crate::raft::*;

const U: Option<u64> = None;

type MajorityCase<'a> = (&'a [NodeId], &'a [Option<u64>], u64);
type JointCase<'a> = (&'a [NodeId], &'a [NodeId], &'a [Option<u64>], u64);

fn committed(cfg: &[NodeId], cfgj: Option<&[NodeId]>, idx: &[Option<u64>]) -> u64 {
    // Indexes are listed for the union of voters in ascending id order.
    let mut ids: Vec<NodeId> = cfg
        .iter()
        .chain(cfgj.unwrap_or(&[]).iter())
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), idx.len());
    let acked = |id: NodeId| ids.iter().position(|&x| x == id).and_then(|p| idx[p]);
    let majority = MajorityConfig::new(cfg.iter().copied());
    match cfgj {
        None => {
            let m = majority.committed_index(&acked);
            // A majority config joint with an empty one behaves identically.
            let j = JointConfig {
                incoming: majority.clone(),
                outgoing: MajorityConfig::default(),
            };
            assert_eq!(j.committed_index(&acked), m);
            m
        }
        Some(o) => JointConfig {
            incoming: majority,
            outgoing: MajorityConfig::new(o.iter().copied()),
        }
        .committed_index(&acked),
    }
}

#[test]
fn majority_commit() {
    assert_eq!(
        MajorityConfig::default().committed_index(&|_| None),
        u64::MAX,
        "empty quorum commits everything"
    );
    let cases: &[MajorityCase<'_>] = &[
        (&[1], &[U], 0),
        (&[1], &[Some(12)], 12),
        (&[1, 2], &[U, U], 0),
        (&[1, 2], &[Some(12), U], 0),
        (&[1, 2], &[Some(12), Some(5)], 5),
        (&[1, 2, 3], &[U, U, U], 0),
        (&[1, 2, 3], &[Some(12), U, U], 0),
        (&[1, 2, 3], &[Some(12), Some(5), U], 5),
        (&[1, 2, 3], &[Some(12), Some(5), Some(6)], 6),
        (&[1, 2, 3], &[Some(12), Some(5), Some(4)], 5),
        (&[1, 2, 3], &[Some(5), Some(5), U], 5),
        (&[1, 2, 3], &[Some(5), Some(5), Some(12)], 5),
        (&[1, 2, 3], &[Some(100), Some(101), Some(103)], 101),
        (
            &[1, 2, 3, 4, 5],
            &[Some(101), Some(104), Some(103), Some(103), U],
            103,
        ),
        (
            &[1, 2, 3, 4, 5],
            &[Some(101), Some(102), Some(103), Some(103), U],
            102,
        ),
    ];
    for (i, (cfg, idx, want)) in cases.iter().enumerate() {
        assert_eq!(committed(cfg, None, idx), *want, "case {i}");
    }
}

#[test]
fn joint_commit() {
    let s = Some;
    let cases: &[JointCase<'_>] = &[
        (&[1], &[2], &[U, U], 0),
        (&[1], &[2], &[s(100), U], 0),
        (&[1], &[2], &[s(13), s(100)], 13),
        (&[1], &[1], &[U], 0),
        (&[1], &[1], &[s(100)], 100),
        (&[1, 3], &[2], &[U, U, U], 0),
        (&[1, 3], &[2], &[s(100), U, U], 0),
        (&[1, 3], &[2], &[s(100), s(50), U], 0),
        (&[1, 3], &[2], &[s(100), s(50), s(45)], 45),
        (&[1, 2], &[2], &[U, U], 0),
        (&[1, 2], &[2], &[s(100), U], 0),
        (&[1, 2], &[2], &[U, s(100)], 0),
        (&[1, 2], &[2], &[s(50), s(100)], 50),
        (&[1, 2], &[2], &[s(100), s(50)], 50),
        (&[1, 2], &[3, 4], &[s(50), U, U, U], 0),
        (&[1, 2], &[3, 4], &[s(50), U, s(49), U], 0),
        (&[1, 2], &[3, 4], &[s(50), s(48), s(49), U], 0),
        (&[1, 2], &[3, 4], &[s(50), s(48), s(49), s(47)], 47),
        (&[1, 2], &[2, 3], &[U, U, U], 0),
        (&[1, 2], &[2, 3], &[s(100), U, U], 0),
        (&[1, 2], &[2, 3], &[U, s(100), U], 0),
        (&[1, 2], &[2, 3], &[U, s(100), s(99)], 0),
        (&[1, 2], &[2, 3], &[s(101), s(100), s(99)], 99),
        (&[1, 2], &[1, 2], &[U, U], 0),
        (&[1, 2], &[1, 2], &[U, s(40)], 0),
        (&[1, 2], &[1, 2], &[s(41), s(40)], 40),
        (&[1, 2, 3], &[4, 5, 6], &[U, U, U, U, U, U], 0),
        (&[1, 2, 3], &[4, 5, 6], &[s(100), U, U, U, U, U], 0),
        (&[1, 2, 3], &[4, 5, 6], &[s(100), U, U, s(90), U, U], 0),
        (&[1, 2, 3], &[4, 5, 6], &[s(100), s(99), U, U, U, U], 0),
        (
            &[1, 2, 3],
            &[4, 5, 6],
            &[U, s(99), s(90), s(97), s(95), U],
            90,
        ),
        (
            &[1, 2, 3],
            &[4, 5, 6],
            &[s(92), s(99), s(90), s(97), s(95), U],
            92,
        ),
        (
            &[1, 2, 3],
            &[4, 5, 6],
            &[s(92), s(99), s(90), s(97), s(95), s(77)],
            92,
        ),
        (&[1, 2, 3], &[1, 4, 5], &[U, U, U, U, U], 0),
        (&[1, 2, 3], &[1, 4, 5], &[s(100), U, U, U, U], 0),
        (&[1, 2, 3], &[1, 4, 5], &[s(100), s(101), U, U, U], 0),
        (&[1, 2, 3], &[1, 4, 5], &[s(100), s(101), s(100), U, U], 0),
        (&[1, 2, 3], &[1, 4, 5], &[U, s(100), U, s(99), s(98)], 0),
        (
            &[1, 2, 3],
            &[1, 4, 5],
            &[U, s(100), s(99), s(99), s(98)],
            98,
        ),
        (
            &[1, 2, 3],
            &[1, 4, 5],
            &[s(1), s(100), s(99), s(99), s(98)],
            98,
        ),
        (
            &[1, 2, 3],
            &[1, 4, 5],
            &[s(100), s(100), s(99), s(99), s(98)],
            99,
        ),
        (&[1, 2, 3], &[2, 3, 4], &[U, U, U, U], 0),
        (&[1, 2, 3], &[2, 3, 4], &[U, s(100), s(99), U], 99),
        (&[1, 2, 3], &[2, 3, 4], &[s(98), s(100), s(99), U], 99),
        (&[1, 2, 3], &[2, 3, 4], &[s(100), s(100), s(99), U], 99),
        (&[1, 2, 3], &[2, 3, 4], &[s(100), s(100), s(99), s(98)], 99),
        (&[1, 2, 3], &[2, 3, 4], &[s(100), U, U, s(101)], 0),
        (&[1, 2, 3], &[2, 3, 4], &[s(100), s(99), U, s(101)], 99),
        (&[1, 2, 3], &[1, 2, 3], &[s(50), s(45), U], 45),
    ];
    for (i, (cfg, cfgj, idx, want)) in cases.iter().enumerate() {
        assert_eq!(committed(cfg, Some(cfgj), idx), *want, "case {i}");
    }
    // Joint with the empty config equals the simple majority.
    assert_eq!(committed(&[1, 2, 3], None, &[s(100), s(101), s(99)]), 100);
}

#[test]
fn vote_results() {
    let m = MajorityConfig::new([1, 2, 3]);
    let votes = |v: &'static [(NodeId, bool)]| {
        move |id: NodeId| v.iter().find(|(i, _)| *i == id).map(|(_, g)| *g)
    };
    assert_eq!(m.vote_result(&votes(&[])), VoteResult::Pending);
    assert_eq!(m.vote_result(&votes(&[(1, true)])), VoteResult::Pending);
    assert_eq!(
        m.vote_result(&votes(&[(1, true), (2, true)])),
        VoteResult::Won
    );
    assert_eq!(
        m.vote_result(&votes(&[(1, false), (2, false)])),
        VoteResult::Lost
    );
    assert_eq!(
        m.vote_result(&votes(&[(1, true), (2, false)])),
        VoteResult::Pending
    );
    assert_eq!(
        MajorityConfig::default().vote_result(&votes(&[])),
        VoteResult::Won
    );
    let j = JointConfig {
        incoming: MajorityConfig::new([1, 2, 3]),
        outgoing: MajorityConfig::new([3, 4, 5]),
    };
    assert_eq!(
        j.vote_result(&votes(&[(1, true), (2, true)])),
        VoteResult::Pending
    );
    assert_eq!(
        j.vote_result(&votes(&[(1, true), (2, true), (3, true), (4, true)])),
        VoteResult::Won
    );
    assert_eq!(
        j.vote_result(&votes(&[(1, true), (2, true), (4, false), (5, false)])),
        VoteResult::Lost
    );
}
