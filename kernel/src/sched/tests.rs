//! Scheduling groups, the task quota and the stall detector, over the simulated platform.
//!
//! Virtual time does not move while tasks run, so the busy tasks here say how much work a
//! poll did by advancing the simulated clock themselves (`SimClock::advance`): the executor
//! sees exactly that much time pass during the poll.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::time::Duration;

use seastar_hal::sim::{SimClock, SimIo, SimPlatform, SimUnparker};
use seastar_hal::{Instant, Platform, PollInfo, StallWatch};

use super::*;
use crate::executor::{Executor, ExecutorConfig};
use crate::task::{self, yield_now, Builder};
use crate::time::sleep;

fn exec() -> Executor<SimPlatform> {
    Executor::new(SimPlatform::new())
}

/// Smaller runs under Miri, which is slow.
fn scaled(native: Duration, miri: Duration) -> Duration {
    if cfg!(miri) {
        miri
    } else {
        native
    }
}

/// Work slice per poll of the busy tasks.
const SLICE: Duration = Duration::from_micros(50);

/// A task that "works" `SLICE` per poll, adding it to `done`, until `stop` is set.
async fn busy(clock: SimClock, done: Rc<Cell<Duration>>, stop: Rc<Cell<bool>>) {
    while !stop.get() {
        clock.advance(SLICE);
        done.set(done.get() + SLICE);
        yield_now().await;
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_nanos() as f64 / b.as_nanos() as f64
}

fn assert_within(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= expected * tolerance,
        "{what}: {actual:.3}, expected {expected:.3} within {:.0}%",
        tolerance * 100.0
    );
}

#[test]
fn busy_groups_split_the_cpu_by_shares() {
    let mut ex = exec();
    let clock = ex.platform().clock().clone();
    let run_for = scaled(Duration::from_millis(300), Duration::from_millis(10));
    let (a_done, b_done) = ex
        .block_on(async move {
            let a = create_scheduling_group("a", 100).expect("group a");
            let b = create_scheduling_group("b", 200).expect("group b");
            let stop = Rc::new(Cell::new(false));
            let a_done = Rc::new(Cell::new(Duration::ZERO));
            let b_done = Rc::new(Cell::new(Duration::ZERO));
            let mut hs = Vec::new();
            // Two tasks per group: the split is per group, not per task.
            for _ in 0..2 {
                hs.push(Builder::new().group(a.clone()).spawn(busy(
                    clock.clone(),
                    a_done.clone(),
                    stop.clone(),
                )));
                hs.push(Builder::new().group(b.clone()).spawn(busy(
                    clock.clone(),
                    b_done.clone(),
                    stop.clone(),
                )));
            }
            sleep(run_for).await;
            stop.set(true);
            for h in hs {
                h.await.expect("busy task");
            }
            (a_done.get(), b_done.get())
        })
        .expect("runs");
    // The tasks' own counters...
    assert_within(
        ratio(a_done, b_done),
        0.5,
        0.10,
        "a:b by the tasks' counters",
    );
    assert!(a_done + b_done >= run_for, "the core was busy all along");
    // ...and the executor's accounting agree.
    let stats = ex.stats();
    let a_rt = stats.group_runtime("a").expect("a in stats");
    let b_rt = stats.group_runtime("b").expect("b in stats");
    assert_eq!(a_rt, a_done);
    assert_eq!(b_rt, b_done);
    assert_within(ratio(a_rt, b_rt), 0.5, 0.10, "a:b by the executor's stats");
    assert_eq!(stats.groups[0].name, DEFAULT_GROUP_NAME);
    assert_eq!(stats.groups[1].shares, 100);
}

#[test]
fn changing_shares_at_run_time_changes_the_split() {
    let mut ex = exec();
    let clock = ex.platform().clock().clone();
    let phase = scaled(Duration::from_millis(200), Duration::from_millis(10));
    let (first, second) = ex
        .block_on(async move {
            let a = create_scheduling_group("a", 100).expect("group a");
            let b = create_scheduling_group("b", 200).expect("group b");
            let stop = Rc::new(Cell::new(false));
            let a_done = Rc::new(Cell::new(Duration::ZERO));
            let b_done = Rc::new(Cell::new(Duration::ZERO));
            let ha = Builder::new().group(a.clone()).spawn(busy(
                clock.clone(),
                a_done.clone(),
                stop.clone(),
            ));
            let hb = Builder::new().group(b.clone()).spawn(busy(
                clock.clone(),
                b_done.clone(),
                stop.clone(),
            ));
            sleep(phase).await;
            let first = ratio(a_done.get(), b_done.get());
            let (a0, b0) = (a_done.get(), b_done.get());
            a.set_shares(600).expect("valid shares");
            assert_eq!(a.shares(), 600);
            sleep(phase).await;
            let second = ratio(a_done.get() - a0, b_done.get() - b0);
            stop.set(true);
            ha.await.expect("a");
            hb.await.expect("b");
            (first, second)
        })
        .expect("runs");
    assert_within(first, 0.5, 0.10, "before the change (100:200)");
    assert_within(second, 3.0, 0.10, "after the change (600:200)");
}

#[test]
fn a_group_that_was_idle_gets_no_burst() {
    let mut ex = exec();
    let clock = ex.platform().clock().clone();
    let alone = scaled(Duration::from_millis(100), Duration::from_millis(5));
    let window = scaled(Duration::from_millis(20), Duration::from_millis(2));
    let a_in_window = ex
        .block_on(async move {
            let a = create_scheduling_group("a", 100).expect("group a");
            let b = create_scheduling_group("b", 100).expect("group b");
            let stop = Rc::new(Cell::new(false));
            let a_done = Rc::new(Cell::new(Duration::ZERO));
            let ha =
                Builder::new()
                    .group(a)
                    .spawn(busy(clock.clone(), a_done.clone(), stop.clone()));
            // `a` runs alone for a while; `b` has nothing to run and must not bank credit.
            sleep(alone).await;
            let a0 = a_done.get();
            let b_done = Rc::new(Cell::new(Duration::ZERO));
            let hb = Builder::new().group(b).spawn({
                let clock = clock.clone();
                let b_done = b_done.clone();
                async move {
                    while b_done.get() < window {
                        clock.advance(SLICE);
                        b_done.set(b_done.get() + SLICE);
                        yield_now().await;
                    }
                }
            });
            hb.await.expect("b");
            let a_in_window = a_done.get() - a0;
            stop.set(true);
            ha.await.expect("a");
            a_in_window
        })
        .expect("runs");
    // Equal shares: while `b` did `window` of work, `a` did as much (not zero, which is what
    // `b` catching up on its idle time would look like).
    assert_within(
        ratio(a_in_window, window),
        1.0,
        0.10,
        "a's work while b caught up",
    );
}

#[test]
fn need_preempt_turns_true_after_the_quota() {
    assert!(!need_preempt(), "no executor: nothing to yield to");
    let quota = Duration::from_micros(500);
    let step = Duration::from_micros(10);
    let mut ex = Executor::with_config(
        SimPlatform::new(),
        ExecutorConfig::default().task_quota(quota),
    );
    let clock = ex.platform().clock().clone();
    let steps = ex
        .block_on(async move {
            task::spawn(async move {
                let mut steps = 0u32;
                loop {
                    clock.advance(step);
                    steps += 1;
                    if need_preempt() {
                        break steps;
                    }
                }
            })
            .await
        })
        .expect("runs")
        .expect("task");
    let min = (quota.as_micros() / step.as_micros()) as u32;
    assert!(
        (min..=min + PREEMPT_CHECK_INTERVAL).contains(&steps),
        "need_preempt after {steps} steps of {step:?}, quota {quota:?}"
    );
}

#[test]
fn maybe_yield_lets_other_tasks_run() {
    let mut ex = exec();
    let clock = ex.platform().clock().clone();
    let iterations = 200u32;
    let (seen_by_b, a_polls) = ex
        .block_on(async move {
            let progress = Rc::new(Cell::new(0u32));
            let seen_by_b = Rc::new(Cell::new(None));
            let a = task::spawn({
                let progress = progress.clone();
                async move {
                    for _ in 0..iterations {
                        clock.advance(Duration::from_micros(10));
                        progress.set(progress.get() + 1);
                        maybe_yield().await;
                    }
                }
            });
            let b = task::spawn({
                let seen_by_b = seen_by_b.clone();
                async move { seen_by_b.set(Some(progress.get())) }
            });
            a.await.expect("a");
            b.await.expect("b");
            let a_polls = crate::executor::stats().expect("stats").groups[0].polls;
            (seen_by_b.get(), a_polls)
        })
        .expect("runs");
    let seen = seen_by_b.expect("b ran");
    // 500 µs quota, 10 µs per iteration: `a` yields after about 50 iterations, not 200.
    assert!(
        (50..=50 + PREEMPT_CHECK_INTERVAL).contains(&seen),
        "b ran after {seen} of a's iterations"
    );
    // And it yields only when the quota is up: a handful of polls, not one per iteration.
    assert!(a_polls <= 10, "{a_polls} polls in the default group");
}

#[test]
fn a_long_poll_is_reported_as_a_stall() {
    let mut ex = exec();
    let clock = ex.platform().clock().clone();
    let held = Duration::from_millis(30);
    ex.block_on(async move {
        let g = create_scheduling_group("batch", 100).expect("group");
        let c = clock.clone();
        Builder::new()
            .name("quick")
            .group(g.clone())
            .spawn(async move { c.advance(Duration::from_millis(10)) })
            .await
            .expect("quick");
        assert_eq!(crate::executor::stats().expect("stats").stalls, 0);
        Builder::new()
            .name("hog")
            .group(g)
            .spawn(async move { clock.advance(held) })
            .await
            .expect("hog");
    })
    .expect("runs");
    let stats = ex.stats();
    assert_eq!(stats.stalls, 1);
    let stall = stats.last_stall.expect("a stall report");
    assert_eq!(stall.task_name.as_deref(), Some("hog"));
    assert_eq!(stall.group, "batch");
    assert_eq!(stall.duration, held);
    assert_eq!(stall.started, Instant::ZERO + Duration::from_millis(10));
}

#[test]
fn stall_threshold_is_configurable() {
    let mut ex = Executor::with_config(
        SimPlatform::new(),
        ExecutorConfig::default().stall_threshold(Duration::from_millis(5)),
    );
    let clock = ex.platform().clock().clone();
    ex.block_on(async move {
        task::spawn(async move { clock.advance(Duration::from_millis(6)) })
            .await
            .expect("task");
    })
    .expect("runs");
    let stats = ex.stats();
    assert_eq!(stats.stalls, 1);
    let stall = stats.last_stall.expect("report");
    assert_eq!(stall.task_name, None);
    assert_eq!(stall.group, DEFAULT_GROUP_NAME);
}

#[test]
fn a_stall_in_the_root_future_is_reported_too() {
    let mut ex = exec();
    let clock = ex.platform().clock().clone();
    ex.block_on(async move { clock.advance(Duration::from_millis(40)) })
        .expect("runs");
    let stats = ex.stats();
    assert_eq!(stats.stalls, 1);
    let stall = stats.last_stall.expect("report");
    assert_eq!(
        (stall.task_id, stall.task_name.as_deref()),
        (0, Some(crate::executor::ROOT_NAME))
    );
    assert_eq!(stall.duration, Duration::from_millis(40));
    // The root future is not a task: no group is charged for it.
    assert_eq!(stats.groups[0].runtime, Duration::ZERO);
}

/// A simulated core with a stall watch that records what the kernel tells it.
#[derive(Default)]
struct Watched {
    sim: SimPlatform,
    log: RecordingWatch,
}

#[derive(Default)]
struct RecordingWatch {
    events: RefCell<Vec<String>>,
}

impl StallWatch for RecordingWatch {
    fn poll_started(&self, poll: &PollInfo<'_>) {
        self.events.borrow_mut().push(alloc::format!(
            "start #{} {:?} {} at {}",
            poll.task_id,
            poll.task_name,
            poll.group,
            poll.start.as_nanos()
        ));
    }
    fn poll_ended(&self, end: Instant) {
        self.events
            .borrow_mut()
            .push(alloc::format!("end at {}", end.as_nanos()));
    }
}

impl Platform for Watched {
    type Unparker = SimUnparker;
    type Io = SimIo;
    fn now(&self) -> Instant {
        self.sim.now()
    }
    fn park(&self, deadline: Option<Instant>) {
        self.sim.park(deadline)
    }
    fn unparker(&self) -> SimUnparker {
        self.sim.unparker()
    }
    fn io(&self) -> &SimIo {
        self.sim.io()
    }
    fn stall_watch(&self) -> Option<&dyn StallWatch> {
        Some(&self.log)
    }
}

#[test]
fn the_platform_stall_watch_sees_every_poll() {
    let mut ex = Executor::new(Watched::default());
    let clock = ex.platform().sim.clock().clone();
    ex.block_on(async move {
        let g = create_scheduling_group("io", 500).expect("group");
        Builder::new()
            .name("worker")
            .group(g)
            .spawn(async move {
                clock.advance(Duration::from_micros(7));
                yield_now().await;
            })
            .await
            .expect("worker");
    })
    .expect("runs");
    let events = ex.platform().log.events.borrow().clone();
    assert_eq!(
        events,
        [
            // The root future is watched too (task 0).
            "start #0 Some(\"(root)\") main at 0",
            "end at 0",
            "start #1 Some(\"worker\") io at 0",
            "end at 7000",
            "start #1 Some(\"worker\") io at 7000",
            "end at 7000",
            "start #0 Some(\"(root)\") main at 7000",
            "end at 7000",
        ]
    );
}

#[test]
fn tasks_inherit_their_spawners_group() {
    let mut ex = exec();
    ex.block_on(async {
        let main = current_scheduling_group().expect("executor");
        assert!(main.is_default());
        assert_eq!(main.name(), DEFAULT_GROUP_NAME);
        assert_eq!(main.shares(), DEFAULT_SHARES);
        assert_eq!(default_scheduling_group(), Some(main.clone()));
        let g = create_scheduling_group("child-group", 300).expect("group");
        let (own, child) = Builder::new()
            .group(g.clone())
            .spawn(async {
                let own = current_scheduling_group().expect("group");
                let child = task::spawn(async { current_scheduling_group().expect("group") })
                    .await
                    .expect("child");
                (own, child)
            })
            .await
            .expect("parent");
        assert_eq!(own, g);
        assert_eq!(child, g);
        assert_eq!(child.name(), "child-group");
        // From the root future: the default group.
        let from_root = task::spawn(async { current_scheduling_group().expect("group") })
            .await
            .expect("task");
        assert_eq!(from_root, main);
    })
    .expect("runs");
}

#[test]
fn a_group_of_another_core_falls_back_to_the_default_group() {
    let foreign = exec()
        .block_on(async { create_scheduling_group("elsewhere", 10).expect("group") })
        .expect("runs");
    exec()
        .block_on(async move {
            let g = Builder::new()
                .group(foreign)
                .spawn(async { current_scheduling_group().expect("group") })
                .await
                .expect("task");
            assert!(g.is_default());
        })
        .expect("runs");
}

#[test]
fn invalid_groups_are_refused() {
    assert_eq!(
        create_scheduling_group("x", 100).err(),
        Some(SchedError::NoExecutor)
    );
    exec()
        .block_on(async {
            assert_eq!(
                create_scheduling_group("x", 0).err(),
                Some(SchedError::InvalidShares(0))
            );
            assert_eq!(
                create_scheduling_group("x", MAX_SHARES + 1).err(),
                Some(SchedError::InvalidShares(MAX_SHARES + 1))
            );
            let g = create_scheduling_group("x", 1).expect("group");
            assert_eq!(g.set_shares(0), Err(SchedError::InvalidShares(0)));
            assert_eq!(g.shares(), 1);
            for _ in 2..MAX_GROUPS {
                create_scheduling_group("more", 1).expect("room for more");
            }
            assert_eq!(
                create_scheduling_group("one too many", 1).err(),
                Some(SchedError::TooManyGroups(MAX_GROUPS))
            );
        })
        .expect("runs");
}

#[test]
fn statistics_count_what_happened() {
    let mut ex = exec();
    let clock = ex.platform().clock().clone();
    ex.block_on(async move {
        let g = create_scheduling_group("g", 100).expect("group");
        let mut hs = Vec::new();
        for _ in 0..3 {
            let clock = clock.clone();
            hs.push(Builder::new().group(g.clone()).spawn(async move {
                clock.advance(Duration::from_micros(100));
                yield_now().await;
            }));
        }
        for h in hs {
            h.await.expect("task");
        }
    })
    .expect("runs");
    let s = ex.stats();
    assert_eq!(s.tasks_spawned, 3);
    assert_eq!(s.polls, 6);
    assert_eq!(s.live_tasks, 0);
    assert_eq!(s.run_queue_len, 0);
    assert_eq!(s.stalls, 0);
    assert!(s.batches >= 1 && s.max_batch_polls >= 3, "{s:?}");
    assert!(s.polls_per_iteration() > 0.0);
    let g = &s.groups[1];
    assert_eq!((g.name.as_str(), g.polls, g.queued), ("g", 6, 0));
    assert_eq!(g.runtime, Duration::from_micros(300));
    assert_eq!(s.groups[0].polls, 0);
}

#[test]
fn the_quota_ends_a_batch() {
    let mut ex = exec();
    let clock = ex.platform().clock().clone();
    ex.block_on(async move {
        let mut hs = Vec::new();
        for _ in 0..4 {
            let clock = clock.clone();
            hs.push(task::spawn(async move {
                for _ in 0..10 {
                    clock.advance(Duration::from_micros(100));
                    yield_now().await;
                }
            }));
        }
        for h in hs {
            h.await.expect("task");
        }
    })
    .expect("runs");
    let s = ex.stats();
    // 44 polls of 100 µs (the last of each task takes no time), 500 µs per batch.
    assert!(s.quota_expirations >= 7, "{s:?}");
    assert!(s.max_batch_polls <= 6, "{s:?}");
}

/// A core on the real clock (the platform clock of a std build), for the timing test.
struct RealClock {
    sim: SimPlatform,
    origin: std::time::Instant,
}

impl Platform for RealClock {
    type Unparker = SimUnparker;
    type Io = SimIo;
    fn now(&self) -> Instant {
        Instant::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }
    fn park(&self, deadline: Option<Instant>) {
        self.sim.park(deadline)
    }
    fn unparker(&self) -> SimUnparker {
        self.sim.unparker()
    }
    fn io(&self) -> &SimIo {
        self.sim.io()
    }
}

/// The cost of `need_preempt` in a tight loop (a measurement, not a check: run with
/// `cargo test --release -p seastar-kernel need_preempt_cost -- --ignored --nocapture`).
#[test]
#[ignore = "timing measurement; run by hand with --release"]
fn need_preempt_cost() {
    let platform = RealClock {
        sim: SimPlatform::new(),
        origin: std::time::Instant::now(),
    };
    // A quota that does not expire during the measurement, so every call takes the path a
    // task sees while it still has time.
    let mut ex = Executor::with_config(
        platform,
        ExecutorConfig::default().task_quota(Duration::from_secs(3600)),
    );
    ex.block_on(async {
        const N: u32 = 10_000_000;
        let t = std::time::Instant::now();
        let mut hits = 0u32;
        for _ in 0..N {
            if core::hint::black_box(need_preempt()) {
                hits += 1;
            }
        }
        let per_call = t.elapsed().as_nanos() as f64 / f64::from(N);
        let t = std::time::Instant::now();
        for _ in 0..N / 10 {
            core::hint::black_box(crate::executor::now());
        }
        let clock = t.elapsed().as_nanos() as f64 / f64::from(N / 10);
        std::eprintln!(
            "need_preempt: {per_call:.2} ns per call ({hits} true); a clock read: {clock:.1} ns"
        );
    })
    .expect("runs");
}
