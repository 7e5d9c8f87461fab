//! The membership-change cases of etcd-io/raft's `confchange/testdata`, re-expressed as our
//! own table-driven tests: a script of operations on a changer, each with the expected
//! configuration (rendered compactly) or the expected error.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::raft::confchange;
use crate::raft::*;

/// `v<id>` add voter, `l<id>` add learner/demote, `r<id>` remove.
fn parse(changes: &str) -> Vec<ConfChangeSingle> {
    changes
        .split_whitespace()
        .map(|t| {
            let (k, id) = t.split_at(1);
            let kind = match k {
                "v" => ConfChangeKind::AddVoter,
                "l" => ConfChangeKind::AddLearner,
                "r" => ConfChangeKind::Remove,
                _ => panic!("bad op {t}"),
            };
            ConfChangeSingle {
                kind,
                node: id.parse().unwrap(),
            }
        })
        .collect()
}

fn ids(s: &alloc::collections::BTreeSet<NodeId>) -> String {
    let v: Vec<String> = s.iter().map(|i| format!("{i}")).collect();
    format!("({})", v.join(" "))
}

fn render(t: &ProgressTracker) -> String {
    let c = &t.config;
    let mut out = format!("voters={}", ids(&c.voters.incoming.voters));
    if c.voters.is_joint() {
        out += &format!("&&{}", ids(&c.voters.outgoing.voters));
    }
    if !c.learners.is_empty() {
        out += &format!(" learners={}", ids(&c.learners));
    }
    if !c.learners_next.is_empty() {
        out += &format!(" learners_next={}", ids(&c.learners_next));
    }
    if c.auto_leave {
        out += " autoleave";
    }
    let learners: Vec<NodeId> = t
        .progress
        .iter()
        .filter(|(_, p)| p.is_learner)
        .map(|(i, _)| *i)
        .collect();
    let members: Vec<NodeId> = t.progress.keys().copied().collect();
    out + &format!(" | progress={members:?} learner_flags={learners:?}")
}

/// Runs a script; each step is (operation, changes, expected rendering or error text).
fn run(script: &[(&str, &str, &str)]) {
    let mut t = ProgressTracker::new(256, 0);
    let mut last_index = 0;
    for (i, (op, changes, want)) in script.iter().enumerate() {
        last_index += 1;
        let ccs = parse(changes);
        let ch = Changer::new(&t, last_index);
        let res = match *op {
            "simple" => ch.simple(&ccs),
            "enter" => ch.enter_joint(false, &ccs),
            "enter-auto" => ch.enter_joint(true, &ccs),
            "leave" => ch.leave_joint(),
            _ => panic!("bad op {op}"),
        };
        let got = match res {
            Ok((cfg, prs)) => {
                check_invariants(&cfg, &prs).unwrap();
                t.config = cfg;
                t.progress = prs;
                render(&t)
            }
            Err(Error::InvalidConfChange(e)) => String::from(e),
            Err(e) => format!("{e:?}"),
        };
        assert!(
            got.starts_with(want),
            "step {i} ({op} {changes}): got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn joint_safety() {
    run(&[
        ("leave", "", "can't leave a non-joint config"),
        ("enter", "", "can't make a zero-voter config joint"),
        ("enter", "v1", "can't make a zero-voter config joint"),
        ("simple", "v1", "voters=(1) |"),
        ("leave", "", "can't leave a non-joint config"),
        ("enter", "", "voters=(1)&&(1) |"),
        ("enter", "", "config is already joint"),
        ("leave", "", "voters=(1) |"),
        ("leave", "", "can't leave a non-joint config"),
        (
            "enter",
            "r1 v2 v3 l4",
            "voters=(2 3)&&(1) learners=(4) | progress=[1, 2, 3, 4] learner_flags=[4]",
        ),
        ("enter", "", "config is already joint"),
        ("enter", "v12", "config is already joint"),
        (
            "simple",
            "l15",
            "can't apply simple config change in joint config",
        ),
        (
            "leave",
            "",
            "voters=(2 3) learners=(4) | progress=[2, 3, 4]",
        ),
        (
            "simple",
            "l9",
            "voters=(2 3) learners=(4 9) | progress=[2, 3, 4, 9] learner_flags=[4, 9]",
        ),
    ]);
}

#[test]
fn simple_safety() {
    run(&[
        ("simple", "l1", "removed all voters"),
        ("simple", "v1", "voters=(1) |"),
        ("simple", "v2 l3", "voters=(1 2) learners=(3) |"),
        (
            "simple",
            "r1 v5",
            "more than one voter changed without entering joint config",
        ),
        ("simple", "r1 r2", "removed all voters"),
        (
            "simple",
            "v3 v4",
            "more than one voter changed without entering joint config",
        ),
        (
            "simple",
            "l1 v5",
            "more than one voter changed without entering joint config",
        ),
        ("simple", "l1 l2", "removed all voters"),
        ("simple", "l2 l3 l4 l5", "voters=(1) learners=(2 3 4 5) |"),
        ("simple", "r1", "removed all voters"),
        ("simple", "r2 r3 r4 r5", "voters=(1) | progress=[1]"),
    ]);
}

#[test]
fn joint_learners_next_keeps_progress() {
    run(&[("simple", "v1", "voters=(1) |")]);
    let mut t = ProgressTracker::new(256, 0);
    let (c, p) = Changer::new(&t, 1).simple(&parse("v1")).unwrap();
    t.config = c;
    t.progress = p;
    t.progress.get_mut(&1).unwrap().matched = 5;
    let (c, p) = Changer::new(&t, 2)
        .enter_joint(false, &parse("v2 l1"))
        .unwrap();
    t.config = c;
    t.progress = p;
    assert!(render(&t)
        .starts_with("voters=(2)&&(1) learners_next=(1) | progress=[1, 2] learner_flags=[]"));
    let (c, p) = Changer::new(&t, 3).leave_joint().unwrap();
    t.config = c;
    t.progress = p;
    assert!(render(&t).starts_with("voters=(2) learners=(1) | progress=[1, 2] learner_flags=[1]"));
    assert_eq!(t.progress[&1].matched, 5, "demotion keeps the progress");
}

#[test]
fn joint_idempotency() {
    run(&[
        ("simple", "v1", "voters=(1) |"),
        (
            "enter",
            "r1 r2 r9 v2 v3 v4 v2 v3 v4 l2 l2 r4 r4 l1 l1",
            "voters=(3)&&(1) learners=(2) learners_next=(1) | progress=[1, 2, 3] learner_flags=[2]",
        ),
        (
            "leave",
            "",
            "voters=(3) learners=(1 2) | progress=[1, 2, 3] learner_flags=[1, 2]",
        ),
    ]);
}

#[test]
fn joint_autoleave() {
    run(&[
        ("simple", "v1", "voters=(1) |"),
        ("enter-auto", "v2 v3", "voters=(1 2 3)&&(1) autoleave |"),
        ("enter", "", "config is already joint"),
        ("leave", "", "voters=(1 2 3) |"),
    ]);
}

#[test]
fn simple_idempotency() {
    run(&[
        ("simple", "v1", "voters=(1) |"),
        ("simple", "v1", "voters=(1) |"),
        ("simple", "v2", "voters=(1 2) |"),
        ("simple", "l1", "voters=(2) learners=(1) |"),
        ("simple", "l1", "voters=(2) learners=(1) |"),
        ("simple", "r1", "voters=(2) | progress=[2]"),
        ("simple", "r1", "voters=(2) |"),
        ("simple", "v3", "voters=(2 3) |"),
        ("simple", "r3", "voters=(2) |"),
        ("simple", "r3", "voters=(2) |"),
        ("simple", "r4", "voters=(2) | progress=[2]"),
    ]);
}

#[test]
fn simple_promote_demote() {
    run(&[
        ("simple", "v1", "voters=(1) |"),
        ("simple", "v2", "voters=(1 2) |"),
        ("simple", "v3", "voters=(1 2 3) |"),
        (
            "simple",
            "l1 v1",
            "voters=(1 2 3) | progress=[1, 2, 3] learner_flags=[]",
        ),
        (
            "simple",
            "l2",
            "voters=(1 3) learners=(2) | progress=[1, 2, 3] learner_flags=[2]",
        ),
        ("simple", "v2 l2", "voters=(1 3) learners=(2) |"),
        (
            "simple",
            "v2",
            "voters=(1 2 3) | progress=[1, 2, 3] learner_flags=[]",
        ),
    ]);
}

#[test]
fn zero_is_ignored() {
    run(&[("simple", "v1 r0 v0 l0", "voters=(1) | progress=[1]")]);
}

#[test]
fn restore_rejects_inconsistent_conf_state() {
    let t = ProgressTracker::new(256, 0);
    let mut cs = ConfState::with_voters([1, 2]);
    cs.learners.insert(2);
    assert!(
        confchange::restore(&t, &cs, 5).is_err(),
        "learner and voter at once"
    );
    let mut cs = ConfState::with_voters([1]);
    cs.learners_next.insert(1);
    assert!(
        confchange::restore(&t, &cs, 5).is_err(),
        "learners_next outside a joint config"
    );
    let mut cs = ConfState::with_voters([1, 2]);
    cs.voters_outgoing = [1, 3].into_iter().collect();
    cs.learners_next.insert(3);
    cs.auto_leave = true;
    let (cfg, prs) = confchange::restore(&t, &cs, 5).unwrap();
    assert_eq!(cfg.to_conf_state(), cs);
    assert_eq!(prs.len(), 3);
}
