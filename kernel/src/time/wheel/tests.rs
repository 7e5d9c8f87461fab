use super::*;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::time::Duration;
use proptest::prelude::*;

fn at(nanos: u64) -> Instant {
    Instant::from_nanos(nanos)
}

fn expire_all<T>(wheel: &mut TimerWheel<T>, now: u64) -> Vec<T> {
    let mut out = Vec::new();
    wheel.expire(at(now), |v| out.push(v));
    out
}

#[test]
fn fires_in_deadline_order_with_ties_in_insertion_order() {
    let mut w = TimerWheel::new(Instant::ZERO);
    w.insert(at(5_000_000), 'c');
    w.insert(at(3), 'a');
    w.insert(at(5_000_000), 'd');
    w.insert(at(4_000), 'b');
    w.insert(at(u64::MAX), 'z');
    assert_eq!(w.len(), 5);
    assert_eq!(w.next_deadline(), Some(at(3)));
    assert_eq!(expire_all(&mut w, 2), []);
    assert_eq!(expire_all(&mut w, 10_000_000), ['a', 'b', 'c', 'd']);
    assert_eq!(w.len(), 1);
    assert_eq!(w.next_deadline(), Some(at(u64::MAX)));
    assert_eq!(expire_all(&mut w, u64::MAX), ['z']);
    assert!(w.is_empty());
    assert_eq!(w.next_deadline(), None);
}

#[test]
fn never_early_within_a_tick() {
    let mut w = TimerWheel::new(Instant::ZERO);
    // Same 1024 ns tick, different nanoseconds.
    w.insert(at(2_050), 2);
    w.insert(at(2_049), 1);
    w.insert(at(2_060), 3);
    assert_eq!(expire_all(&mut w, 2_048), Vec::<i32>::new());
    assert_eq!(w.next_deadline(), Some(at(2_049)));
    assert_eq!(expire_all(&mut w, 2_049), [1]);
    assert_eq!(w.next_deadline(), Some(at(2_050)));
    assert_eq!(expire_all(&mut w, 2_059), [2]);
    assert_eq!(w.next_deadline(), Some(at(2_060)));
    assert_eq!(expire_all(&mut w, 2_060), [3]);
}

#[test]
fn past_deadline_fires_at_next_expire() {
    let mut w = TimerWheel::new(at(1_000_000_000));
    w.expire(at(2_000_000_000), |_: u8| unreachable!());
    w.insert(at(5), 1u8);
    w.insert(Instant::ZERO, 0u8);
    assert_eq!(w.next_deadline(), Some(Instant::ZERO));
    assert_eq!(expire_all(&mut w, 2_000_000_000), [0, 1]);
}

#[test]
fn cancel_and_stale_keys() {
    let mut w = TimerWheel::new(Instant::ZERO);
    let a = w.insert(at(100), "a");
    let b = w.insert(at(200), "b");
    assert_eq!(w.cancel(a), Some("a"));
    assert_eq!(w.cancel(a), None);
    // The freed cell is reused; the old key must not reach the new timer.
    let c = w.insert(at(300), "c");
    assert_eq!(c.index, a.index);
    assert_eq!(w.cancel(a), None);
    assert!(!w.reset(a, at(1)));
    assert_eq!(w.get_mut(a), None);
    assert_eq!(w.deadline(c), Some(at(300)));
    assert_eq!(expire_all(&mut w, 250), ["b"]);
    assert_eq!(w.cancel(b), None, "a fired key is stale");
    assert_eq!(w.get(c), Some(&"c"));
    assert_eq!(w.len(), 1);
}

#[test]
fn keys_of_another_wheel_match_nothing() {
    let mut a = TimerWheel::new(Instant::ZERO);
    let mut b = TimerWheel::new(Instant::ZERO);
    let ka = a.insert(at(10), 'a');
    let kb = b.insert(at(10), 'b');
    assert_eq!(ka.index, kb.index);
    assert_eq!(ka.generation, kb.generation);
    assert_eq!(b.cancel(ka), None);
    assert!(!b.reset(ka, at(1)));
    assert_eq!(b.get_mut(ka), None);
    assert_eq!(b.cancel(kb), Some('b'));
    assert_eq!(a.cancel(ka), Some('a'));
}

#[test]
fn reset_moves_timer_and_keeps_key() {
    let mut w = TimerWheel::new(Instant::ZERO);
    let k = w.insert(at(1_000), 1);
    w.insert(at(5_000), 2);
    assert!(w.reset(k, at(10_000_000_000)));
    assert_eq!(expire_all(&mut w, 9_999_999_999), [2]);
    if let Some(v) = w.get_mut(k) {
        *v = 7;
    }
    assert!(w.reset(k, at(3)));
    assert_eq!(expire_all(&mut w, 9_999_999_999), [7]);
    assert!(!w.reset(k, at(3)));
}

#[test]
fn cascades_fire_at_exact_deadline_when_driven_by_next_deadline() {
    let mut w = TimerWheel::new(Instant::ZERO);
    let deadlines = [
        1u64,
        1_023,
        1_024,
        65_537,
        4_194_303,
        268_435_457,
        17_179_869_184,
        3_600_000_000_000,
        1 << 62,
    ];
    for d in deadlines {
        w.insert(at(d), d);
    }
    let mut now = 0;
    let mut fired = Vec::new();
    while let Some(next) = w.next_deadline() {
        assert!(next.as_nanos() > now, "progress");
        now = next.as_nanos();
        w.expire(at(now), |d| {
            assert_eq!(d, now, "fired exactly at its deadline");
            fired.push(d);
        });
    }
    assert_eq!(fired, deadlines);
}

#[test]
fn stale_lower_bound_after_cancel_still_makes_progress() {
    let mut w = TimerWheel::new(Instant::ZERO);
    // Same level-3 slot (≈268 ms), so the slot's minimum goes stale on cancel.
    let first = w.insert(at(10_000_000_000), 1);
    w.insert(at(10_001_000_000), 2);
    w.cancel(first);
    let bound = w.next_deadline().expect("pending");
    assert_eq!(bound, at(10_000_000_000), "stale but safe lower bound");
    assert_eq!(expire_all(&mut w, bound.as_nanos()), Vec::<i32>::new());
    let next = w.next_deadline().expect("pending");
    assert!(next > bound);
    assert_eq!(next, at(10_001_000_000), "exact once the slot has cascaded");
    assert_eq!(expire_all(&mut w, 10_001_000_000), [2]);
}

#[test]
fn values_are_dropped_exactly_once() {
    let token = Rc::new(());
    {
        let mut w = TimerWheel::new(Instant::ZERO);
        let k = w.insert(at(10), token.clone());
        w.insert(at(20), token.clone());
        w.insert(at(1 << 40), token.clone());
        assert_eq!(Rc::strong_count(&token), 4);
        drop(w.cancel(k));
        assert_eq!(Rc::strong_count(&token), 3);
        w.expire(at(20), drop);
        assert_eq!(Rc::strong_count(&token), 2);
    }
    assert_eq!(
        Rc::strong_count(&token),
        1,
        "dropping the wheel drops the rest"
    );
}

#[test]
fn panicking_callback_loses_no_timer() {
    let mut w = TimerWheel::new(Instant::ZERO);
    for i in 0..4u32 {
        w.insert(at(u64::from(i) * 10), i);
    }
    let result = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
        w.expire(at(100), |v| {
            if v == 1 {
                panic!("boom");
            }
        })
    }));
    assert!(result.is_err());
    assert_eq!(w.len(), 2);
    assert_eq!(w.next_deadline(), Some(Instant::ZERO));
    assert_eq!(expire_all(&mut w, 100), [2, 3]);
    assert!(w.is_empty());
}

#[test]
fn slab_is_reused_in_steady_state() {
    let mut w = TimerWheel::new(Instant::ZERO);
    let mut now = 0;
    for round in 0..100u64 {
        let a = w.insert(at(now + 1_000_000), round);
        w.insert(at(now + 500), round);
        w.cancel(a);
        now += 1_000;
        w.expire(at(now), drop);
    }
    assert!(w.entries.len() <= 2);
    assert!(w.is_empty());
}

#[test]
fn extreme_instants() {
    let mut w = TimerWheel::new(at(u64::MAX - 5));
    w.insert(at(u64::MAX), 1);
    w.insert(at(u64::MAX - 5), 0);
    assert_eq!(expire_all(&mut w, u64::MAX - 1), [0]);
    assert_eq!(expire_all(&mut w, u64::MAX), [1]);
    let _ = Duration::ZERO;
}

// ---------------------------------------------------------------------------------------
// Property test against a BTreeMap model.

#[derive(Clone, Debug)]
enum Op {
    /// Deadline `now + offset`, or `now - back` when `past`.
    Insert {
        offset: u64,
        past: bool,
    },
    Cancel(usize),
    Reset {
        pick: usize,
        offset: u64,
    },
    Expire(u64),
    /// Jump to `next_deadline()` like the simulator does.
    SimStep,
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..2_048u64,
        4 => 0..(1u64 << 20),
        3 => 0..(1u64 << 30),
        2 => 0..(1u64 << 42),
        1 => any::<u64>(),
        1 => Just(u64::MAX),
    ]
}

fn advance() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..2_048u64,
        4 => 0..(1u64 << 20),
        3 => 0..(1u64 << 30),
        2 => 0..(1u64 << 40),
        1 => 0..(1u64 << 50),
        1 => any::<u64>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (offset(), prop::bool::weighted(0.1)).prop_map(|(offset, past)| Op::Insert { offset, past }),
        2 => any::<usize>().prop_map(Op::Cancel),
        2 => (any::<usize>(), offset()).prop_map(|(pick, offset)| Op::Reset { pick, offset }),
        3 => advance().prop_map(Op::Expire),
        2 => Just(Op::SimStep),
    ]
}

struct Model {
    now: u64,
    seq: u64,
    pending: BTreeMap<(u64, u64), u32>,
    /// id -> model key of a pending timer.
    live: BTreeMap<u32, (u64, u64)>,
}

impl Model {
    fn fire(&mut self, now: u64) -> Vec<u32> {
        let later = self.pending.split_off(&(now, u64::MAX));
        let due = core::mem::replace(&mut self.pending, later);
        due.into_values()
            .inspect(|id| {
                self.live.remove(id);
            })
            .collect()
    }
}

fn run(start: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut wheel = TimerWheel::new(at(start));
    let mut model = Model {
        now: start,
        seq: 0,
        pending: BTreeMap::new(),
        live: BTreeMap::new(),
    };
    let mut keys: Vec<(TimerKey, u32)> = Vec::new();
    let mut next_id = 0u32;

    for op in ops {
        match op {
            Op::Insert { offset, past } => {
                let deadline = if past {
                    model.now.saturating_sub(offset)
                } else {
                    model.now.saturating_add(offset)
                };
                let id = next_id;
                next_id += 1;
                keys.push((wheel.insert(at(deadline), id), id));
                model.pending.insert((deadline, model.seq), id);
                model.live.insert(id, (deadline, model.seq));
                model.seq += 1;
            }
            Op::Cancel(pick) if !keys.is_empty() => {
                let (key, id) = keys[pick % keys.len()];
                let expected = model.live.remove(&id).map(|k| {
                    model.pending.remove(&k);
                    id
                });
                prop_assert_eq!(wheel.cancel(key), expected);
            }
            Op::Reset { pick, offset } if !keys.is_empty() => {
                let (key, id) = keys[pick % keys.len()];
                let deadline = model.now.saturating_add(offset);
                let was_live = model.live.contains_key(&id);
                prop_assert_eq!(wheel.reset(key, at(deadline)), was_live);
                if let Some(old) = model.live.remove(&id) {
                    model.pending.remove(&old);
                    model.pending.insert((deadline, model.seq), id);
                    model.live.insert(id, (deadline, model.seq));
                    model.seq += 1;
                }
            }
            Op::Cancel(_) | Op::Reset { .. } => {}
            Op::Expire(by) => {
                let now = model.now.saturating_add(by);
                check_expire(&mut wheel, &mut model, now)?;
            }
            Op::SimStep => {
                if let Some(next) = wheel.next_deadline() {
                    let now = model.now.max(next.as_nanos());
                    check_expire(&mut wheel, &mut model, now)?;
                }
            }
        }
        prop_assert_eq!(wheel.len(), model.live.len());
        // Every key, live or stale, answers as the model says (the generation check, also
        // on cells reused since).
        for &(key, id) in &keys {
            let live = model.live.get(&id);
            prop_assert_eq!(wheel.contains(key), live.is_some());
            prop_assert_eq!(wheel.deadline(key), live.map(|&(d, _)| at(d)));
            prop_assert_eq!(wheel.get(key), live.map(|_| &id));
        }
        let model_min = model.pending.keys().next().map(|&(d, _)| d);
        match (wheel.next_deadline(), model_min) {
            (None, None) => {}
            (Some(bound), Some(min)) => {
                prop_assert!(bound.as_nanos() <= min, "bound after earliest")
            }
            (got, want) => prop_assert!(false, "next_deadline {:?}, model {:?}", got, want),
        }
    }
    // Drain like the simulator: every timer fires, exactly at its deadline or at the time
    // the last expire had already reached.
    let mut steps = 0;
    while let Some(next) = wheel.next_deadline() {
        steps += 1;
        prop_assert!(steps < 100_000, "no progress");
        let now = model.now.max(next.as_nanos());
        check_expire(&mut wheel, &mut model, now)?;
    }
    prop_assert!(model.pending.is_empty());
    Ok(())
}

fn check_expire(
    wheel: &mut TimerWheel<u32>,
    model: &mut Model,
    now: u64,
) -> Result<(), TestCaseError> {
    let mut got = Vec::new();
    wheel.expire(at(now), |id| got.push(id));
    let want = model.fire(now);
    prop_assert_eq!(&got, &want, "fired at {}", now);
    model.now = now;
    if let Some(next) = wheel.next_deadline() {
        prop_assert!(
            next.as_nanos() > now,
            "next_deadline {:?} not after now {}",
            next,
            now
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 8 } else { 256 },
        failure_persistence: None,
        ..Default::default()
    })]

    #[test]
    fn wheel_matches_btreemap_model(
        start in prop_oneof![Just(0u64), 0..(1u64 << 40), any::<u64>()],
        ops in prop::collection::vec(op(), 0..if cfg!(miri) { 40 } else { 300 }),
    ) {
        run(start, ops)?;
    }

    /// Driven only by `next_deadline` jumps, every timer fires exactly at its deadline.
    #[test]
    fn sim_driver_fires_exactly_at_deadlines(
        deadlines in prop::collection::vec(offset(), 1..if cfg!(miri) { 20 } else { 200 }),
        cancel_mask in any::<u64>(),
    ) {
        let mut wheel = TimerWheel::new(Instant::ZERO);
        let mut want = Vec::new();
        for (i, &d) in deadlines.iter().enumerate() {
            let d = d.max(1);
            let key = wheel.insert(at(d), d);
            if cancel_mask >> (i % 64) & 1 == 1 && i % 3 == 0 {
                prop_assert_eq!(wheel.cancel(key), Some(d));
            } else {
                want.push(d);
            }
        }
        want.sort_unstable();
        let mut now = 0;
        let mut got = Vec::new();
        while let Some(next) = wheel.next_deadline() {
            prop_assert!(next.as_nanos() > now);
            now = next.as_nanos();
            let mut early = false;
            wheel.expire(at(now), |d| {
                early |= d != now;
                got.push(d);
            });
            prop_assert!(!early, "fired at {} instead of its deadline", now);
        }
        prop_assert_eq!(got, want);
    }
}

#[cfg(target_pointer_width = "64")]
#[test]
fn an_entry_with_a_waker_is_48_bytes() {
    // The slab is walked and written once per insert, cancel and fire: its entry size is
    // memory traffic per timer. A list head's `prev` carries its slot, so no field does.
    assert_eq!(core::mem::size_of::<Entry<core::task::Waker>>(), 48);
}
