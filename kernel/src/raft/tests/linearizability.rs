//! A small Wing & Gong style linearizability checker for a key-value store of registers,
//! with memoization of visited (linearized-set, value) states as in Porcupine. Keys are
//! independent, so each key's history is checked on its own.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Wrote this value.
    Write(u64),
    /// Read this value (`None`: key absent).
    Read(Option<u64>),
}

/// One client operation. `ret == u64::MAX` means the outcome is unknown (it may or may not
/// have taken effect); only writes may be unknown (unanswered reads are left out).
#[derive(Clone, Copy, Debug)]
pub struct Op {
    pub key: u64,
    pub call: u64,
    pub ret: u64,
    pub kind: OpKind,
}

/// Result of a check.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Not linearizable; the key whose history fails.
    Violation(u64),
    /// The search budget ran out.
    Unknown,
}

pub fn check(history: &[Op]) -> Verdict {
    // A write with unknown outcome whose value nobody read can always be linearized last
    // (or not at all); dropping it shrinks the search without changing the verdict. This
    // relies on written values being unique per key, which the simulation guarantees.
    // An observed write of unknown outcome must precede its earliest observing read, so its
    // return time can be tightened to that read's return without losing any linearization.
    let mut observed: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for o in history {
        if let OpKind::Read(Some(v)) = o.kind {
            let r = observed.entry((o.key, v)).or_insert(o.ret);
            *r = (*r).min(o.ret);
        }
    }
    let mut by_key: BTreeMap<u64, Vec<Op>> = BTreeMap::new();
    for op in history {
        let mut op = *op;
        if let OpKind::Write(v) = op.kind {
            if op.ret == u64::MAX {
                match observed.get(&(op.key, v)) {
                    Some(&r) => op.ret = r.max(op.call + 1),
                    None => continue,
                }
            }
        }
        by_key.entry(op.key).or_default().push(op);
    }
    let mut unknown = false;
    for (key, ops) in by_key {
        match check_register(&ops) {
            Some(true) => {}
            Some(false) => return Verdict::Violation(key),
            None => unknown = true,
        }
    }
    if unknown {
        Verdict::Unknown
    } else {
        Verdict::Ok
    }
}

/// `Some(linearizable)`, or `None` if the budget ran out.
fn check_register(ops: &[Op]) -> Option<bool> {
    let n = ops.len();
    let words = n.div_ceil(64);
    let mut memo: BTreeSet<(Vec<u64>, Option<u64>)> = BTreeSet::new();
    let mut budget: u64 = 2_000_000;
    // Iterative DFS over (done-set, register value).
    let mut stack: Vec<(Vec<u64>, Option<u64>)> = alloc::vec![(alloc::vec![0u64; words], None)];
    while let Some((done, value)) = stack.pop() {
        budget = budget.checked_sub(1)?;
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        if (0..n).all(is_done) {
            return Some(true);
        }
        // An op can come next only if it was called before every pending op returned.
        let min_ret = (0..n)
            .filter(|&i| !is_done(i))
            .map(|i| ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        let candidates = (0..n).filter(|&i| !is_done(i) && ops[i].call < min_ret);
        // A read that is legal now can always be taken now: it does not change the value and
        // only relaxes constraints. Taking it greedily avoids exploring every subset of
        // concurrent reads.
        let mut greedy = None;
        let mut moves = Vec::new();
        for i in candidates {
            match ops[i].kind {
                OpKind::Read(v) if v == value => {
                    greedy = Some(i);
                    break;
                }
                OpKind::Read(_) => {}
                OpKind::Write(v) => moves.push((i, Some(v))),
            }
        }
        if let Some(i) = greedy {
            moves.clear();
            moves.push((i, value));
        }
        for (i, next_value) in moves {
            let mut d = done.clone();
            d[i / 64] |= 1 << (i % 64);
            if memo.insert((d.clone(), next_value)) {
                stack.push((d, next_value));
            }
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: u64, call: u64, ret: u64, v: u64) -> Op {
        Op {
            key,
            call,
            ret,
            kind: OpKind::Write(v),
        }
    }

    fn r(key: u64, call: u64, ret: u64, v: Option<u64>) -> Op {
        Op {
            key,
            call,
            ret,
            kind: OpKind::Read(v),
        }
    }

    #[test]
    fn accepts_linearizable_histories() {
        assert_eq!(check(&[w(1, 0, 2, 5), r(1, 3, 4, Some(5))]), Verdict::Ok);
        // Concurrent write and read: the read may see either value.
        assert_eq!(
            check(&[w(1, 0, 10, 5), r(1, 1, 2, None), r(1, 3, 4, Some(5))]),
            Verdict::Ok
        );
        // An unknown write may have happened...
        assert_eq!(
            check(&[w(1, 0, u64::MAX, 5), r(1, 3, 4, Some(5))]),
            Verdict::Ok
        );
        // ...or not.
        assert_eq!(
            check(&[w(1, 0, u64::MAX, 5), r(1, 3, 4, None)]),
            Verdict::Ok
        );
    }

    #[test]
    fn rejects_stale_reads() {
        // Read after a completed write sees the old value.
        assert_eq!(
            check(&[w(1, 0, 2, 5), r(1, 3, 4, None)]),
            Verdict::Violation(1)
        );
        // Value flips back: 5 then 6 then 5 again.
        let h = [
            w(1, 0, 1, 5),
            w(1, 2, 3, 6),
            r(1, 4, 5, Some(6)),
            r(1, 6, 7, Some(5)),
        ];
        assert_eq!(check(&h), Verdict::Violation(1));
        // Reads that see a value no one wrote.
        assert_eq!(check(&[r(2, 0, 1, Some(9))]), Verdict::Violation(2));
    }
}
