use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};
use std::sync::Mutex;

use seastar_hal::sim::SimPlatform;
use seastar_hal::Platform;

use super::{block_on, AlreadyRunning, Executor};
use crate::task::{self, spawn, yield_now, Builder, JoinError};

fn exec() -> Executor<SimPlatform> {
    Executor::new(SimPlatform::new())
}

/// Sets a flag when dropped: shows when (and whether) a future was destroyed.
struct DropFlag(Rc<Cell<bool>>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// A future that stays pending forever (until dropped).
async fn pending_forever() {
    poll_fn(|_| Poll::<()>::Pending).await
}

#[test]
fn block_on_returns_the_root_output() {
    assert_eq!(block_on(SimPlatform::new(), async { 40 + 2 }), Ok(42));
}

#[test]
fn spawned_task_output_reaches_join_handle() {
    let out = exec().block_on(async {
        let h = spawn(async { "done".to_string() });
        h.await
    });
    assert_eq!(out, Ok(Ok("done".to_string())));
}

#[test]
fn tasks_may_hold_non_send_state() {
    let shared = Rc::new(RefCell::new(Vec::new()));
    let mut ex = exec();
    ex.block_on({
        let shared = shared.clone();
        async move {
            let hs: Vec<_> = (0..3)
                .map(|i| {
                    let s = shared.clone();
                    spawn(async move { s.borrow_mut().push(i) })
                })
                .collect();
            for h in hs {
                h.await.expect("task completes");
            }
        }
    })
    .expect("runs");
    assert_eq!(*shared.borrow(), vec![0, 1, 2]);
}

#[test]
fn dropping_the_join_handle_detaches_the_task() {
    let ran = Rc::new(Cell::new(false));
    let mut ex = exec();
    ex.block_on({
        let ran = ran.clone();
        async move {
            drop(spawn(async move {
                yield_now().await;
                ran.set(true);
            }));
            // Give the detached task a chance to run.
            for _ in 0..3 {
                yield_now().await;
            }
        }
    })
    .expect("runs");
    assert!(ran.get(), "a detached task still runs to completion");
    assert_eq!(ex.stats().live_tasks, 0);
}

#[test]
fn cancel_drops_the_future_and_join_reports_cancelled() {
    let dropped = Rc::new(Cell::new(false));
    let mut ex = exec();
    let result = ex
        .block_on({
            let dropped = dropped.clone();
            async move {
                let guard = DropFlag(dropped.clone());
                let h = spawn(async move {
                    let _g = guard;
                    pending_forever().await
                });
                yield_now().await; // let it start and block
                assert!(!dropped.get());
                h.cancel();
                assert!(dropped.get(), "cancel drops the future at once");
                h.await
            }
        })
        .expect("runs");
    assert_eq!(result, Err(JoinError::Cancelled));
}

#[test]
fn cancel_after_completion_keeps_the_output() {
    let out = exec()
        .block_on(async {
            let h = spawn(async { 7 });
            yield_now().await;
            assert!(h.is_finished());
            h.cancel();
            h.await
        })
        .expect("runs");
    assert_eq!(out, Ok(7));
}

#[test]
fn a_task_cancelling_itself_is_dropped_after_its_poll() {
    let slot: Rc<RefCell<Option<task::JoinHandle<()>>>> = Rc::new(RefCell::new(None));
    let dropped = Rc::new(Cell::new(false));
    let mut ex = exec();
    let result = ex
        .block_on({
            let slot = slot.clone();
            let dropped = dropped.clone();
            async move {
                let inner_slot = slot.clone();
                let guard = DropFlag(dropped.clone());
                let h = spawn(async move {
                    let _g = guard;
                    yield_now().await;
                    if let Some(me) = inner_slot.borrow().as_ref() {
                        me.cancel();
                    }
                    pending_forever().await
                });
                *slot.borrow_mut() = Some(h);
                for _ in 0..4 {
                    yield_now().await;
                }
                let h = slot.borrow_mut().take().expect("handle");
                h.await
            }
        })
        .expect("runs");
    assert!(dropped.get());
    assert_eq!(result, Err(JoinError::Cancelled));
}

#[test]
fn a_panicking_task_reports_the_panic_and_the_core_lives_on() {
    let out = exec()
        .block_on(async {
            let bad = spawn(async {
                if core::hint::black_box(true) {
                    panic!("boom");
                }
            });
            let good = spawn(async { 5 });
            (bad.await, good.await)
        })
        .expect("runs");
    assert_eq!(out.0, Err(JoinError::Panicked("boom".to_string())));
    assert_eq!(out.1, Ok(5));
}

#[test]
fn a_task_that_always_wakes_itself_cannot_starve_others() {
    let spins = Rc::new(Cell::new(0u64));
    let mut ex = exec();
    ex.block_on({
        let spins = spins.clone();
        async move {
            let hog = spawn({
                let spins = spins.clone();
                async move {
                    loop {
                        spins.set(spins.get() + 1);
                        yield_now().await;
                    }
                }
            });
            let worker = spawn(async {
                for _ in 0..100 {
                    yield_now().await;
                }
            });
            worker.await.expect("worker completes");
            hog.cancel();
        }
    })
    .expect("runs");
    // Round-robin: the hog got about one poll per worker poll, not unbounded time.
    let s = spins.get();
    assert!(
        (90..=110).contains(&s),
        "hog ran {s} times during 100 worker polls"
    );
}

#[test]
fn yield_now_alternates_ready_tasks() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut ex = exec();
    ex.block_on({
        let log = log.clone();
        async move {
            let a = spawn({
                let log = log.clone();
                async move {
                    for i in 0..3 {
                        log.borrow_mut().push(('a', i));
                        yield_now().await;
                    }
                }
            });
            let b = spawn({
                let log = log.clone();
                async move {
                    for i in 0..3 {
                        log.borrow_mut().push(('b', i));
                        yield_now().await;
                    }
                }
            });
            a.await.expect("a");
            b.await.expect("b");
        }
    })
    .expect("runs");
    assert_eq!(
        *log.borrow(),
        vec![('a', 0), ('b', 0), ('a', 1), ('b', 1), ('a', 2), ('b', 2)]
    );
}

#[test]
fn nested_block_on_is_refused() {
    let mut outer = exec();
    let inner_result = outer
        .block_on(async { exec().block_on(async { 1 }) })
        .expect("outer runs");
    assert_eq!(inner_result, Err(AlreadyRunning));
}

#[test]
fn spawn_outside_an_executor_is_an_error() {
    assert!(task::try_spawn(async {}).is_err());
    assert!(super::try_now().is_err());
}

#[test]
fn builder_names_tasks() {
    exec()
        .block_on(async {
            let h = Builder::new().name("acceptor").spawn(async {});
            assert_eq!(h.name(), Some("acceptor"));
            assert!(h.id().is_some());
            h.await.expect("runs");
        })
        .expect("runs");
}

#[test]
fn dropping_the_executor_drops_pending_tasks() {
    let dropped = Rc::new(Cell::new(false));
    let mut ex = exec();
    let guard = DropFlag(dropped.clone());
    ex.spawn(async move {
        let _g = guard;
        pending_forever().await
    })
    .detach();
    ex.block_on(yield_now()).expect("runs");
    assert!(!dropped.get());
    drop(ex);
    assert!(dropped.get());
}

/// A flag another thread sets, with the waker to call.
#[derive(Default)]
struct CrossThreadSignal {
    set: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl CrossThreadSignal {
    fn fire(&self) {
        self.set.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().expect("lock").take() {
            w.wake();
        }
    }

    fn wait(self: &Arc<Self>) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx: &mut Context<'_>| {
            *self.waker.lock().expect("lock") = Some(cx.waker().clone());
            if self.set.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

#[test]
fn a_wake_from_another_thread_unparks_the_core_for_the_root_future() {
    let signal = Arc::new(CrossThreadSignal::default());
    let remote = signal.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        remote.fire();
    });
    exec().block_on(signal.wait()).expect("runs");
    t.join().expect("thread");
}

#[test]
fn a_wake_from_another_thread_schedules_a_task() {
    let signal = Arc::new(CrossThreadSignal::default());
    let remote = signal.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        remote.fire();
    });
    let out = exec()
        .block_on(async move {
            let s = signal.clone();
            spawn(async move {
                s.wait().await;
                11
            })
            .await
        })
        .expect("runs");
    assert_eq!(out, Ok(11));
    t.join().expect("thread");
}

#[test]
fn wakers_outliving_the_executor_are_harmless_on_any_thread() {
    let stash: Arc<Mutex<Vec<Waker>>> = Arc::default();
    let mut ex = exec();
    {
        let stash = stash.clone();
        ex.spawn(async move {
            poll_fn(|cx| {
                stash.lock().expect("lock").push(cx.waker().clone());
                Poll::<()>::Pending
            })
            .await
        })
        .detach();
    }
    ex.block_on(yield_now()).expect("runs");
    drop(ex);
    // The task's future is gone; its wakers still point at the cell. Waking and dropping
    // them elsewhere must neither touch the dead executor nor leak (Miri checks both).
    let wakers = core::mem::take(&mut *stash.lock().expect("lock"));
    std::thread::spawn(move || {
        for w in wakers {
            w.wake_by_ref();
            w.wake();
        }
    })
    .join()
    .expect("thread");
}

#[test]
fn join_handle_wakes_its_awaiter_exactly_when_the_task_finishes() {
    let polls = Rc::new(Cell::new(0));
    let mut ex = exec();
    ex.block_on({
        let polls = polls.clone();
        async move {
            let h = spawn(async {
                for _ in 0..5 {
                    yield_now().await;
                }
            });
            let mut h = Some(h);
            poll_fn(|cx| {
                polls.set(polls.get() + 1);
                match h.as_mut() {
                    Some(jh) => Pin::new(jh).poll(cx).map(|r| r.expect("ok")),
                    None => Poll::Ready(()),
                }
            })
            .await;
        }
    })
    .expect("runs");
    // Polled once before the task finished and once after: no busy polling.
    assert_eq!(polls.get(), 2);
}

#[test]
fn stats_count_spawns_and_polls() {
    let mut ex = exec();
    ex.block_on(async {
        for _ in 0..4 {
            spawn(async {}).await.expect("ok");
        }
    })
    .expect("runs");
    let s = ex.stats();
    assert_eq!(s.tasks_spawned, 4);
    assert_eq!(s.polls, 4);
    assert_eq!(s.live_tasks, 0);
}

#[test]
fn a_task_waking_the_root_does_not_end_the_batch() {
    // Each join wakes the root, which is polled next inside the same batch: no trip through
    // the platform (park, timers) per spawned-and-joined task.
    let mut ex = exec();
    ex.block_on(async {
        for i in 0..100u32 {
            assert_eq!(spawn(async move { i }).await, Ok(i));
        }
    })
    .expect("runs");
    let s = ex.stats();
    assert_eq!(s.polls, 100);
    assert_eq!((s.loop_iterations, s.parks, s.batches), (1, 0, 1), "{s:?}");
    assert_eq!(s.max_batch_polls, 100);
}

#[test]
fn the_roots_polls_count_towards_the_batch_cap() {
    // Virtual time stands still, so only the poll cap ends these batches: 2 polls per join
    // (task, root), at most `MAX_POLLS_PER_BATCH` per batch.
    let n = if cfg!(miri) { 2_100 } else { 5_000 };
    let mut ex = exec();
    ex.block_on(async move {
        for i in 0..n {
            assert_eq!(spawn(async move { i }).await, Ok(i));
        }
    })
    .expect("runs");
    let s = ex.stats();
    let batches = (2 * n as u64).div_ceil(u64::from(super::MAX_POLLS_PER_BATCH));
    assert!(s.loop_iterations >= batches, "{s:?}");
    assert!(s.parks + 1 >= batches, "{s:?}");
    assert!(
        s.max_batch_polls <= u64::from(super::MAX_POLLS_PER_BATCH),
        "{s:?}"
    );
}

#[test]
fn many_tasks_complete_and_free_their_cells() {
    let done = Rc::new(AtomicUsize::new(0));
    let mut ex = exec();
    let n = if cfg!(miri) { 50 } else { 5_000 };
    ex.block_on({
        let done = done.clone();
        async move {
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    let done = done.clone();
                    spawn(async move {
                        if i % 3 == 0 {
                            yield_now().await;
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        i
                    })
                })
                .collect();
            for (i, h) in hs.into_iter().enumerate() {
                assert_eq!(h.await, Ok(i));
            }
        }
    })
    .expect("runs");
    assert_eq!(done.load(Ordering::Relaxed), n);
    assert_eq!(ex.stats().live_tasks, 0);
}

/// Between batches a busy core looks at the platform without blocking. With no I/O in flight
/// there is nothing to collect, so that look is a `flush` (no system call on a real
/// platform); with an op in flight it is a real park.
#[test]
fn a_busy_core_parks_the_platform_only_with_io_in_flight() {
    for with_io in [false, true] {
        let platform = Rc::new(SimPlatform::new());
        let mut ex = Executor::new(platform.clone());
        let shared = platform.clone();
        ex.block_on(async move {
            let far = seastar_hal::Instant::from_nanos(u64::MAX / 2);
            let op =
                with_io.then(|| seastar_hal::io::Op::timeout(shared.io(), far).expect("submit"));
            let clock = shared.clock().clone();
            let spinner = spawn(async move {
                for _ in 0..4 {
                    // Each poll uses up a whole task quota, so each ends its batch.
                    clock.advance(super::DEFAULT_TASK_QUOTA);
                    yield_now().await;
                }
            });
            spinner.await.expect("task");
            drop(op);
        })
        .expect("runs");
        let s = ex.stats();
        assert!(s.parks >= 3, "{s:?}");
        if with_io {
            assert!(platform.parks() >= 3, "{}", platform.parks());
        } else {
            assert_eq!(platform.parks(), 0, "every look was a flush");
        }
    }
}

/// The number of free task cells the current core keeps.
fn cached_cells() -> usize {
    super::context::with_current(|c| c.cells().len()).expect("running")
}

/// A finished task's cell goes back to its core and the next task of its size class takes
/// it; cells too large for any class, cells beyond a class's cap, and cells whose last
/// reference dies on another thread go back to the allocator (Miri checks that none leaks
/// or is freed twice).
#[test]
fn task_cells_are_recycled_by_their_core() {
    let out = exec().block_on(async {
        assert_eq!(cached_cells(), 0);
        assert_eq!(spawn(async { 1u8 }).await, Ok(1));
        assert_eq!(cached_cells(), 1, "the finished task's cell is kept");
        let h = spawn(async { 2u8 });
        assert_eq!(cached_cells(), 0, "and taken by the next task");
        assert_eq!(h.await, Ok(2));
        assert_eq!(cached_cells(), 1);
        // Too large for any class: never kept.
        let big = [7u8; 4096];
        assert_eq!(spawn(async move { big[100] }).await, Ok(7));
        assert_eq!(cached_cells(), 1);
        // The last reference dies on another thread: freed there, not kept.
        let (tx, rx) = std::sync::mpsc::channel::<Waker>();
        let keep_waker = poll_fn(move |cx| {
            let _ = tx.send(cx.waker().clone());
            Poll::Ready(3u8)
        });
        let h = spawn(keep_waker);
        assert_eq!(cached_cells(), 0);
        assert_eq!(h.await, Ok(3));
        assert_eq!(cached_cells(), 0, "a waker still holds the cell");
        std::thread::spawn(move || drop(rx.recv()))
            .join()
            .expect("thread");
        assert_eq!(cached_cells(), 0);
        // A burst: its class keeps at most its cap.
        let n = crate::task::raw::CELLS_PER_CLASS + 8;
        let hs: Vec<_> = (0..n).map(|i| spawn(async move { i })).collect();
        for (i, h) in hs.into_iter().enumerate() {
            assert_eq!(h.await, Ok(i));
        }
        cached_cells()
    });
    assert_eq!(out, Ok(crate::task::raw::CELLS_PER_CLASS));
}

mod cell_cache_model {
    use proptest::prelude::*;

    use super::*;
    use crate::sync::oneshot;

    /// Tasks of three sizes, each in its own size class (the padding differs by two classes),
    /// and one too large for any.
    const PADS: [usize; 4] = [0, 128, 256, 2048];

    #[derive(Debug, Clone)]
    enum Op {
        Spawn(usize),
        Finish(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..PADS.len()).prop_map(Op::Spawn),
            any::<usize>().prop_map(Op::Finish),
        ]
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: if cfg!(miri) { 4 } else { 128 },
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A task `PAD` bytes larger than the smallest that finishes when told.
    fn waiting<const PAD: usize>(
        rx: oneshot::Receiver<u8>,
    ) -> task::JoinHandle<Result<u8, oneshot::RecvError>> {
        let pad = [1u8; PAD];
        spawn(async move {
            let v = rx.await;
            // Held across the await, so it is part of the future.
            core::hint::black_box(&pad);
            v.map(|v| v + 1)
        })
    }

    proptest! {
        #![proptest_config(config())]
        /// The core's cache against a model: a spawn takes a kept cell of its class if there
        /// is one, a finished task gives its cell back (below the cap, which this never
        /// reaches), and a task too large for any class never touches the cache.
        #[test]
        fn cached_cells_follow_the_model(
            ops in proptest::collection::vec(op(), 0..if cfg!(miri) { 12 } else { 60 }),
        ) {
            let out = exec().block_on(async move {
                let mut model = [0usize; PADS.len()];
                let mut live = Vec::new();
                for op in ops {
                    match op {
                        Op::Spawn(kind) => {
                            let (tx, rx) = oneshot::channel();
                            let h = match kind {
                                0 => waiting::<{ PADS[0] }>(rx),
                                1 => waiting::<{ PADS[1] }>(rx),
                                2 => waiting::<{ PADS[2] }>(rx),
                                _ => waiting::<{ PADS[3] }>(rx),
                            };
                            if kind < 3 {
                                model[kind] = model[kind].saturating_sub(1);
                            }
                            live.push((kind, tx, h));
                        }
                        Op::Finish(i) if !live.is_empty() => {
                            let (kind, tx, h) = live.remove(i % live.len());
                            let _ = tx.send(1);
                            if h.await != Ok(Ok(2)) {
                                return Err("the task's output");
                            }
                            if kind < 3 {
                                model[kind] += 1;
                            }
                        }
                        Op::Finish(_) => {}
                    }
                    if cached_cells() != model.iter().sum::<usize>() {
                        return Err("cached cells differ from the model");
                    }
                }
                Ok(())
            });
            prop_assert_eq!(out, Ok(Ok(())));
        }
    }
}

/// A one-core smp system has no peers, so the loop leaves its smp state alone (no drain,
/// publish or doorbell per pass): calls to the core itself still complete, run locally, from
/// the root future and from tasks, and timers still fire.
#[test]
fn a_one_core_smp_system_serves_its_own_calls_without_the_loops_smp_pass() {
    use crate::smp::{submit_sync, submit_to, SmpConfig, SmpSystem};

    let ep = SmpSystem::build(1, SmpConfig::default())
        .expect("system")
        .pop()
        .expect("one endpoint");
    let mut ex = exec();
    ex.attach_smp(ep).expect("attach");
    let out = ex
        .block_on(async {
            let from_task = spawn(async {
                let a = submit_to(0, || async { 2 }).await.expect("local call");
                let b = submit_sync(0, || 3).await.expect("local call");
                crate::time::sleep(core::time::Duration::from_millis(1)).await;
                a * b
            });
            let from_root = submit_to(0, || async { 7 }).await.expect("local call");
            let sent = crate::smp::stats().expect("attached").sent;
            (from_task.await.expect("task") * from_root, sent)
        })
        .expect("runs");
    assert_eq!(
        out,
        (42, 0),
        "answered locally, nothing sent through a ring"
    );
    // No cross-core traffic, so no busy period ends in an idle spin.
    assert_eq!(ex.stats().idle_spins, 0);
}
