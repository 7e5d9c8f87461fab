//! Cross-core tests: N `Executor<SimPlatform>`s, each on its own std thread. An idle simulated
//! core with nothing to wait for blocks until another thread unparks it, so these tests also
//! check the doorbell: a lost wake-up shows as a 30-second "deadlock" panic.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::{poll_fn, Future};
use core::pin::{pin, Pin};
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use seastar_hal::sim::SimPlatform;

use super::*;
use crate::executor::{Executor, ExecutorConfig, ExecutorStats};
use crate::sync::oneshot;
use crate::sync::test_util::CountingWaker;
use crate::task::{spawn, yield_now};

std::thread_local! {
    /// Set by a non-main core's root future; a message from core 0 fires it.
    static STOP: RefCell<Option<oneshot::Sender<()>>> = const { RefCell::new(None) };
}

std::thread_local! {
    /// Each core's simulated platform, for work that moves its clock or submits I/O.
    static PLATFORM: RefCell<Option<Rc<SimPlatform>>> = const { RefCell::new(None) };
}

/// This core's simulated platform.
fn platform() -> Rc<SimPlatform> {
    PLATFORM
        .with(|p| p.borrow().clone())
        .expect("a core of run_cores_with")
}

async fn wait_for_stop() {
    let (tx, rx) = oneshot::channel();
    STOP.with(|s| *s.borrow_mut() = Some(tx));
    let _ = rx.await;
}

/// Tell `core` to leave its root future (its executor then shuts down).
async fn stop_core(core: usize) {
    // The answer may be "shut down" if the core exits before its reply is read: both fine.
    let _ = submit_to(core, || async {
        STOP.with(|s| {
            if let Some(tx) = s.borrow_mut().take() {
                let _ = tx.send(());
            }
        })
    })
    .await;
}

/// Run `n` cores. Core 0 runs `main`, then stops the others; every core reports its final
/// smp statistics.
fn run_cores<F, Fut, R>(n: usize, config: SmpConfig, main: F) -> (R, Vec<SmpStats>)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let (out, stats) = run_cores_with(n, config, |_| ExecutorConfig::default(), main);
    (out, stats.into_iter().map(|(s, _)| s).collect())
}

/// [`run_cores`] with each core's executor settings from `exec(core)`; also reports each
/// core's final executor statistics.
fn run_cores_with<F, Fut, R>(
    n: usize,
    config: SmpConfig,
    exec: impl Fn(usize) -> ExecutorConfig,
    main: F,
) -> (R, Vec<(SmpStats, ExecutorStats)>)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let endpoints = SmpSystem::build(n, config).expect("system");
    let mut main = Some(main);
    let threads: Vec<_> = endpoints
        .into_iter()
        .map(|ep| {
            let main = if ep.index() == 0 { main.take() } else { None };
            let exec_config = exec(ep.index());
            std::thread::spawn(move || {
                let platform = Rc::new(SimPlatform::new());
                PLATFORM.with(|p| *p.borrow_mut() = Some(platform.clone()));
                let mut ex = Executor::with_config(platform, exec_config);
                ex.attach_smp(ep).expect("attach");
                ex.block_on(async move {
                    let out = match main {
                        Some(main) => {
                            let r = main().await;
                            for c in 1..core_count().expect("attached") {
                                stop_core(c).await;
                            }
                            Some(r)
                        }
                        None => {
                            wait_for_stop().await;
                            None
                        }
                    };
                    let ex_stats = crate::executor::stats().expect("running");
                    (out, (stats().expect("attached"), ex_stats))
                })
                .expect("runs")
            })
        })
        .collect();
    let mut out = None;
    let mut stats = Vec::new();
    for t in threads {
        let (o, s) = t.join().expect("core thread");
        if o.is_some() {
            out = o;
        }
        stats.push(s);
    }
    (out.expect("core 0 result"), stats)
}

fn small() -> SmpConfig {
    SmpConfig::with_capacity(4).batch(2)
}

async fn pending_forever() {
    poll_fn(|_| Poll::<()>::Pending).await
}

#[test]
fn submit_to_runs_on_the_target_and_brings_the_output_back() {
    let (out, _) = run_cores(2, small(), || async {
        let here = current_core();
        let there = submit_to(1, || async {
            // The future may hold `!Send` state: it lives on core 1 only.
            let local = Rc::new(Cell::new(20));
            yield_now().await;
            local.set(local.get() + 1);
            (current_core(), local.get() * 2)
        })
        .await;
        let itself = submit_to(0, || async { current_core() }).await;
        (here, there, itself)
    });
    assert_eq!(out, (Some(0), Ok((Some(1), 42)), Ok(Some(0))));
}

/// Yield until `done()` holds (a test's bounded wait: a wake that never comes fails the
/// assertion after it instead of hanging).
async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..1_000_000 {
        if done() {
            return;
        }
        yield_now().await;
    }
}

/// A reply slot keeps the waker of its last request for the next one (no clone per
/// request); the reply must still wake exactly the waker of its own `Submit`'s latest poll,
/// never one a finished request or an earlier poll left behind.
#[test]
fn a_reply_wakes_the_latest_poll_of_its_submit_only() {
    let (out, _) = run_cores(2, small(), || async {
        // A finished task's request leaves its waker in the slot the next request takes.
        let first = spawn(async { submit_to(1, || async { 1 }).await }).await;
        let ((stale, stale_w), (earlier, earlier_w), (latest, latest_w)) = (
            CountingWaker::new(),
            CountingWaker::new(),
            CountingWaker::new(),
        );
        let poll_with =
            |sub: Pin<&mut Submit<u32>>, w: &Waker| sub.poll(&mut Context::from_waker(w));
        // A request polled once (its waker kept in the slot), answered, read.
        let mut sub = pin!(submit_to(1, || async { 2 }));
        assert!(poll_with(sub.as_mut(), &stale_w).is_pending());
        let wakes = || stale.wakes() + earlier.wakes() + latest.wakes();
        wait_until(|| wakes() > 0).await;
        let second = poll_with(sub.as_mut(), &stale_w);
        // The next request in that slot, polled under two wakers in turn.
        let mut sub = pin!(submit_to(1, || async { 3 }));
        assert!(poll_with(sub.as_mut(), &earlier_w).is_pending());
        assert!(poll_with(sub.as_mut(), &latest_w).is_pending());
        wait_until(|| wakes() > 1).await;
        let third = poll_with(sub.as_mut(), &latest_w);
        (
            first.ok(),
            second,
            third,
            stale.wakes(),
            earlier.wakes(),
            latest.wakes(),
        )
    });
    assert_eq!(
        out,
        (Some(Ok(1)), Poll::Ready(Ok(2)), Poll::Ready(Ok(3)), 1, 0, 1),
        "(outputs, wakes of the stale, earlier and latest wakers)"
    );
}

#[test]
fn invoke_on_all_others_and_map_reduce_cover_every_core() {
    let (out, _) = run_cores(3, small(), || async {
        let all = invoke_on_all(|| async { current_core().expect("core") }).await;
        let others = invoke_on_others(|| async { current_core().expect("core") * 10 }).await;
        let sum = map_reduce(
            || async { current_core().expect("core") + 1 },
            100,
            |a, b| a + b,
        )
        .await;
        (all, others, sum)
    });
    assert_eq!(out, (Ok(vec![0, 1, 2]), Ok(vec![10, 20]), Ok(106)));
}

#[test]
fn a_panic_on_the_target_comes_back_as_an_error_and_the_core_lives_on() {
    let (out, _) = run_cores(2, small(), || async {
        let in_closure = submit_to(1, || -> core::future::Ready<u8> {
            panic!("boom in closure")
        })
        .await;
        let in_future = submit_to(1, || async {
            yield_now().await;
            panic!("boom in future");
        })
        .await;
        let after = submit_to(1, || async { 7u8 }).await;
        (in_closure, in_future.map(|()| 0u8), after)
    });
    assert_eq!(
        out.0,
        Err(SmpError::Panicked {
            core: 1,
            message: "boom in closure".to_string()
        })
    );
    assert_eq!(
        out.1,
        Err(SmpError::Panicked {
            core: 1,
            message: "boom in future".to_string()
        })
    );
    assert_eq!(out.2, Ok(7));
}

#[test]
fn bad_targets_and_missing_executor_are_errors() {
    let (out, _) = run_cores(2, small(), || async { submit_to(5, || async {}).await });
    assert_eq!(out, Err(SmpError::NoSuchCore { core: 5, count: 2 }));

    let mut outside = pin!(submit_to(0, || async {}));
    let mut cx = Context::from_waker(Waker::noop());
    assert_eq!(
        outside.as_mut().poll(&mut cx),
        Poll::Ready(Err(SmpError::NotAttached))
    );
    assert_eq!(current_core(), None);
    assert_eq!(core_count(), None);
    assert!(SmpSystem::build(0, SmpConfig::default()).is_err());
    assert!(SmpSystem::build(2, SmpConfig::with_capacity(3)).is_err());
}

#[test]
fn attaching_twice_is_refused() {
    let mut eps = SmpSystem::build(1, small()).expect("system");
    let ep = eps.pop().expect("one");
    let mut ex = Executor::new(SimPlatform::new());
    ex.attach_smp(ep).expect("first");
    let again = SmpSystem::build(1, small())
        .expect("system")
        .pop()
        .expect("one");
    assert_eq!(ex.attach_smp(again), Err(SmpError::AlreadyAttached));
    // A single-core system works: submit_to(0) runs locally. (`submit_to` sends at once,
    // so it must be called inside the executor, not to build the root future.)
    assert_eq!(
        ex.block_on(async { submit_to(0, || async { 5 }).await }),
        Ok(Ok(5))
    );
}

#[test]
fn work_dropped_by_a_shutting_down_core_is_cancelled_and_later_work_fails() {
    let (out, _) = run_cores(2, small(), || async {
        let stuck = submit_to(1, pending_forever);
        // Make sure it reached core 1 before core 1 goes (same ring, FIFO).
        submit_to(1, || async {}).await.expect("core 1 alive");
        stop_core(1).await;
        let stuck = stuck.await;
        let later = submit_to(1, || async {}).await;
        (stuck, later)
    });
    assert_eq!(out.0, Err(SmpError::Cancelled(1)));
    assert_eq!(out.1, Err(SmpError::CoreShutDown(1)));
}

#[test]
fn a_target_that_disappears_with_unread_work_fails_the_caller_instead_of_hanging() {
    let mut eps = SmpSystem::build(2, small()).expect("system");
    let ep1 = eps.pop().expect("core 1");
    let ep0 = eps.pop().expect("core 0");
    // Core 1 never runs: its endpoint is dropped on another thread while core 0 sleeps
    // waiting for the answer. The drop must wake core 0.
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        drop(ep1);
    });
    let mut ex = Executor::new(SimPlatform::new());
    ex.attach_smp(ep0).expect("attach");
    let out = ex.block_on(async {
        let first = submit_to(1, || async { 1 }).await;
        let second = submit_to(1, || async { 2 }).await;
        (first, second)
    });
    killer.join().expect("killer");
    assert_eq!(
        out,
        Ok((
            Err(SmpError::CoreShutDown(1)),
            Err(SmpError::CoreShutDown(1))
        ))
    );
}

#[test]
fn a_full_ring_overflows_without_dropping_or_blocking() {
    let n: usize = if cfg!(miri) { 20 } else { 500 };
    let config = SmpConfig::with_capacity(2).batch(1);
    let (out, stats) = run_cores(2, config, move || async move {
        // All submitted before the first await: far more than the ring holds.
        let subs: Vec<_> = (0..n)
            .map(|i| submit_to(1, move || async move { i }))
            .collect();
        let mut got = Vec::new();
        for s in subs {
            got.push(s.await.expect("answer"));
        }
        let overflowed = stats().expect("attached").overflowed;
        (got, overflowed)
    });
    assert!(out.0.iter().copied().eq(0..n), "every answer, in order");
    assert!(out.1 > 0, "the ring overflowed");
    assert_eq!(stats[0].overflow_queued, 0);
    assert_eq!(stats[0].dropped, 0);
    // Core 1 received every request (plus the stop message).
    assert_eq!(stats[1].received, n as u64 + 1);
}

/// Both directions overflow (requests and replies), over and over: a lost wake on either
/// side parks both cores for good (the simulated platform then panics). The consumer of a
/// full ring once cleared the producer's "space wanted" request while the producer was not
/// yet seen sleeping, so the release the sleeping producer waited for woke nobody: about
/// one run in fifty hung.
#[test]
fn back_pressure_never_loses_a_wake() {
    let (runs, n) = if cfg!(miri) { (2, 12) } else { (500, 100) };
    for _ in 0..runs {
        let config = SmpConfig::with_capacity(2).batch(1);
        let (sum, _) = run_cores(2, config, move || async move {
            let subs: Vec<_> = (0..n)
                .map(|i| submit_to(1, move || async move { i }))
                .collect();
            let mut sum = 0;
            for s in subs {
                sum += s.await.expect("answer");
            }
            sum
        });
        assert_eq!(sum, n * (n - 1) / 2);
    }
}

std::thread_local! {
    static ARRIVED: Cell<usize> = const { Cell::new(0) };
    static ALL_IN: Rc<crate::sync::Notify> = Rc::new(crate::sync::Notify::new());
}

#[test]
fn a_sender_sleeping_on_a_full_ring_is_woken_when_space_appears() {
    let n: usize = if cfg!(miri) { 12 } else { 200 };
    let config = SmpConfig::with_capacity(2).batch(1);
    let (out, stats) = run_cores(2, config, move || async move {
        // Core 1 answers nothing before every request has arrived. While core 0 sleeps with
        // requests still in its overflow queue, only core 1's "space released" doorbell can
        // wake it: without it this deadlocks (the simulator panics after 30 s).
        let subs: Vec<_> = (0..n)
            .map(|i| {
                submit_to(1, move || async move {
                    ARRIVED.with(|a| a.set(a.get() + 1));
                    let all_in = ALL_IN.with(Rc::clone);
                    all_in.notify_waiters();
                    all_in.wait_until(|| ARRIVED.with(Cell::get) >= n).await;
                    i
                })
            })
            .collect();
        let mut got = Vec::new();
        for s in subs {
            got.push(s.await.expect("answer"));
        }
        got
    });
    assert!(out.iter().copied().eq(0..n));
    assert!(stats[0].overflowed > 0);
}

/// An instance that records on which core, and after how many hits, it was dropped.
struct Counter {
    core: usize,
    hits: Cell<u64>,
    _not_send: Rc<()>,
    dropped_right: Arc<AtomicUsize>,
}

impl Drop for Counter {
    fn drop(&mut self) {
        if current_core() == Some(self.core) {
            self.dropped_right
                .fetch_add(1 + self.hits.get() as usize * 100, Ordering::SeqCst);
        }
    }
}

#[test]
fn sharded_starts_serves_and_stops_on_every_core() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let (out, _) = run_cores(3, small(), move || async move {
        let svc = Sharded::start(move |core| Counter {
            core,
            hits: Cell::new(0),
            _not_send: Rc::new(()),
            dropped_right: d.clone(),
        })
        .await
        .expect("start");
        let local_core = svc.local().expect("local instance").core;
        svc.invoke_on(2, |c| async move { c.hits.set(c.hits.get() + 1) })
            .await
            .expect("invoke");
        // A slow call in flight: stop must wait for it before dropping core 1's instance.
        let slow = svc.invoke_on(1, |c| async move {
            crate::time::sleep(Duration::from_millis(5)).await;
            c.hits.set(c.hits.get() + 1);
        });
        let cores = svc
            .invoke_on_all(|c| async move { c.core })
            .await
            .expect("all");
        let total = svc
            .map_reduce(|c| async move { c.hits.get() }, 0, |a, b| a + b)
            .await
            .expect("map_reduce");
        let stopped = svc.stop().await;
        (local_core, cores, total, slow.await, stopped)
    });
    assert_eq!(out.0, 0);
    assert_eq!(out.1, vec![0, 1, 2]);
    // The slow call may or may not have finished when map_reduce looked.
    assert!(out.2 == 1 || out.2 == 2);
    assert_eq!(out.3, Ok(()));
    assert_eq!(out.4, Ok(()));
    // Three instances dropped on their own cores; cores 1 and 2 each after one hit.
    assert_eq!(dropped.load(Ordering::SeqCst), 3 + 100 + 100);
}

#[test]
fn sharded_instances_left_running_drop_on_their_cores_at_shutdown() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let (_, _) = run_cores(3, small(), move || async move {
        let svc = Sharded::start(move |core| Counter {
            core,
            hits: Cell::new(0),
            _not_send: Rc::new(()),
            dropped_right: d.clone(),
        })
        .await
        .expect("start");
        // No stop: the instances live until their cores shut down.
        let _ = svc;
    });
    assert_eq!(dropped.load(Ordering::SeqCst), 3);
}

#[test]
fn sharded_calls_during_and_after_stop_fail() {
    let (out, _) = run_cores(2, small(), || async {
        let svc = Arc::new(
            Sharded::<Cell<u32>>::start(|_| Cell::new(3))
                .await
                .expect("start"),
        );
        let id = svc.id();
        let inner = svc.clone();
        // Holds core 1's gate; by the time it calls again, stop has closed the gate.
        let slow = svc.invoke_on(1, move |_| async move {
            crate::time::sleep(Duration::from_millis(5)).await;
            inner.invoke_on(1, |v| async move { v.get() }).await
        });
        let stopped = svc.stop().await;
        let during = slow.await;
        let after = svc.invoke_on(1, |v| async move { v.get() }).await;
        let local = svc.local().map(|v| v.get());
        let again = svc.stop().await;
        (id, stopped, during, after, local, again)
    });
    let (id, stopped, during, after, local, again) = out;
    assert_eq!(stopped, Ok(()));
    assert_eq!(during, Ok(Err(SmpError::Stopping { id, core: 1 })));
    assert_eq!(after, Err(SmpError::NotRunning { id, core: 1 }));
    assert_eq!(local, Err(SmpError::NotRunning { id, core: 0 }));
    assert_eq!(again, Ok(()));
}

/// Counts its drops.
struct Tracked(Arc<AtomicUsize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_failed_start_reports_the_error_and_removes_the_instances_built() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let (out, _) = run_cores(2, small(), move || async move {
        let failed = Sharded::start(move |core| {
            assert!(core == 0, "no instance on core {core}");
            Tracked(d.clone())
        })
        .await;
        let err = failed.map(|s| s.id()).unwrap_err();
        // Another service works normally afterwards.
        let ok = Sharded::<u32>::start(|_| 3).await.expect("start");
        let answer = ok.invoke_on(1, |v| async move { *v }).await;
        ok.stop().await.expect("stop");
        (err, answer)
    });
    assert!(matches!(out.0, SmpError::Panicked { core: 1, .. }));
    assert_eq!(out.1, Ok(3));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "core 0's instance was removed"
    );
}

std::thread_local! {
    /// Stress accounting on the receiving core: per sender, how many and the sum of seqs.
    static SEEN: RefCell<Vec<(u64, u64)>> = const { RefCell::new(Vec::new()) };
}

fn record(from: usize, seq: u64) {
    SEEN.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() <= from {
            s.resize(from + 1, (0, 0));
        }
        s[from].0 += 1;
        s[from].1 += seq;
    });
}

/// Every core sends `per_pair` requests to every other core from `workers` concurrent tasks
/// per destination; every request and every reply is checked and counted.
fn stress(n: usize, per_pair: u64, workers: u64, config: SmpConfig) {
    let (out, stats) = run_cores(n, config, move || async move {
        let sent = invoke_on_all(move || async move {
            let me = current_core().expect("core");
            let count = core_count().expect("count");
            let mut handles = Vec::new();
            for to in (0..count).filter(|&c| c != me) {
                for w in 0..workers {
                    handles.push(spawn(async move {
                        let mut ok = 0u64;
                        let mut seq = w;
                        while seq < per_pair {
                            let s = seq;
                            let r = submit_to(to, move || async move {
                                record(me, s);
                                s * 2 + 1
                            })
                            .await;
                            assert_eq!(r, Ok(seq * 2 + 1));
                            ok += 1;
                            seq += workers;
                        }
                        ok
                    }));
                }
            }
            let mut total = 0;
            for h in handles {
                total += h.await.expect("worker");
            }
            total
        })
        .await
        .expect("senders");
        let seen = invoke_on_all(|| async { SEEN.with(|s| s.borrow().clone()) })
            .await
            .expect("seen");
        (sent, seen)
    });
    let (sent, seen) = out;
    let expected_sum: u64 = (0..per_pair).sum();
    for (core, sent) in sent.iter().enumerate() {
        assert_eq!(*sent, per_pair * (n as u64 - 1), "core {core} round trips");
    }
    for (to, per_from) in seen.iter().enumerate() {
        for from in (0..n).filter(|&f| f != to) {
            let (count, sum) = per_from.get(from).copied().unwrap_or_default();
            assert_eq!(count, per_pair, "{from} -> {to} count");
            assert_eq!(sum, expected_sum, "{from} -> {to} seqs");
        }
    }
    let total_sent: u64 = stats.iter().map(|s| s.sent).sum();
    let total_received: u64 = stats.iter().map(|s| s.received).sum();
    // Every core's last reply (to the stop) may still be in flight when its peer reports.
    assert!(total_sent >= total_received);
    assert!(total_sent - total_received <= n as u64);
    assert!(stats
        .iter()
        .all(|s| s.dropped == 0 && s.overflow_queued == 0));
}

#[test]
fn stress_all_pairs_every_message_accounted_for() {
    if cfg!(miri) {
        stress(3, 6, 2, SmpConfig::with_capacity(2).batch(1));
    } else {
        stress(4, 3_000, 8, SmpConfig::with_capacity(8).batch(4));
    }
}

/// Millions of messages: 4 cores x 3 destinations x 250k requests, plus as many replies.
/// `cargo test -p seastar-kernel --release smp::tests::stress_millions -- --ignored`
#[test]
#[ignore = "long: run with --release -- --ignored"]
fn stress_millions_of_messages_between_all_pairs() {
    stress(4, 250_000, 32, SmpConfig::default());
}

/// Idle cores park at once (no idle polling).
fn parking(_core: usize) -> ExecutorConfig {
    ExecutorConfig::default()
        .idle_poll(Duration::ZERO)
        .smp_idle_poll(Duration::ZERO)
}

#[test]
fn idle_cores_sleep_and_are_woken_only_through_the_doorbell() {
    let (out, stats) = run_cores_with(2, small(), parking, || async {
        // Core 1 sleeps between requests (nothing else to do), so they need doorbells.
        for i in 0..20u32 {
            assert_eq!(submit_to(1, move || async move { i }).await, Ok(i));
        }
        stats().expect("attached").doorbells
    });
    assert!(out >= 1, "core 0 rang core 1's doorbell");
    assert!(stats[1].0.doorbells >= 1, "core 1 rang core 0's doorbell");
    assert!(stats.iter().all(|(_, e)| e.idle_spins == 0));
}

/// Work from another core is polled where it arrives, inside the target's loop: work that is
/// ready at once answers without a trip through the run queue (no batch of the target polls
/// it), and work that waits is then polled by the loop like any task.
#[test]
fn work_from_another_core_is_polled_on_arrival() {
    let n = if cfg!(miri) { 3 } else { 20u64 };
    let (out, stats) = run_cores_with(2, small(), parking, move || async move {
        for i in 0..n {
            assert_eq!(submit_to(1, move || async move { i }).await, Ok(i));
        }
        submit_to(1, || async {
            yield_now().await;
            7
        })
        .await
    });
    assert_eq!(out, Ok(7));
    let target = &stats[1].1;
    // The `n` ready ones, the yielding one and the stop message, each a task.
    assert_eq!(target.tasks_spawned, n + 2, "{target:?}");
    // The yielding one is polled twice: on arrival, then by the loop after its wake.
    assert_eq!(target.polls, n + 3, "{target:?}");
    assert_eq!(
        (target.batches, target.max_batch_polls),
        (1, 1),
        "{target:?}"
    );
}

std::thread_local! {
    /// Core 1's end of a oneshot that work waiting on arrival awaits.
    static PARKED: RefCell<Option<oneshot::Sender<u32>>> = const { RefCell::new(None) };
}

/// Work polled on arrival is a task that enters the core's registry only if it waits:
/// work that is ready at once leaves nothing behind, work that waits is found there (by
/// shutdown, and by `live_tasks`) and finishes through its waker like any task.
#[test]
fn work_that_waits_on_arrival_is_registered_and_ready_work_is_not() {
    let (out, stats) = run_cores(2, small(), || async {
        let live = || {
            submit_to(1, || async {
                crate::executor::stats().expect("running").live_tasks
            })
        };
        let before = live().await.expect("core 1 alive");
        let waiting = submit_to(1, || async {
            let (tx, rx) = oneshot::channel();
            PARKED.with(|p| *p.borrow_mut() = Some(tx));
            rx.await.unwrap_or(0)
        });
        let during = live().await.expect("core 1 alive");
        submit_to(1, || async {
            let tx = PARKED.with(|p| p.borrow_mut().take()).expect("parked");
            tx.send(9).expect("receiver waits");
        })
        .await
        .expect("core 1 alive");
        let got = waiting.await;
        let after = live().await.expect("core 1 alive");
        (before, during, got, after)
    });
    let (before, during, got, after) = out;
    assert_eq!(got, Ok(9));
    assert_eq!(during, before + 1, "the waiting work is a registered task");
    assert_eq!(after, before, "finished work leaves no task behind");
    assert_eq!(
        stats[1].received,
        5 + 1,
        "five requests and the stop message"
    );
}

/// Core 0's idle windows are long enough for any reply (bounded by rounds under the virtual
/// clock, about a second of real spinning): each reply arrives while it spins, and it never
/// sleeps while awaiting one. Core 1 parks at once, so every request rings its doorbell.
#[test]
fn a_reply_arriving_during_the_idle_poll_is_taken_without_a_park() {
    let rounds = if cfg!(miri) { 1 << 14 } else { 1 << 26 };
    let window = Duration::from_nanos(rounds * 16);
    let n = if cfg!(miri) { 3 } else { 50u32 };
    let exec = move |core: usize| {
        if core == 0 {
            ExecutorConfig::default()
                .idle_poll(Duration::ZERO)
                .smp_idle_poll(window)
        } else {
            parking(core)
        }
    };
    let (out, _) = run_cores_with(2, small(), exec, move || async move {
        let before = crate::executor::stats().expect("running");
        for i in 0..n {
            assert_eq!(submit_to(1, move || async move { i + 1 }).await, Ok(i + 1));
        }
        let after = crate::executor::stats().expect("running");
        (before, after, stats().expect("attached"))
    });
    let (before, after, smp) = out;
    assert_eq!(
        after.sleeps, before.sleeps,
        "core 0 never slept awaiting a reply"
    );
    assert!(after.idle_spins - before.idle_spins >= u64::from(n));
    assert!(after.idle_spin_hits - before.idle_spin_hits >= u64::from(n));
    assert!(smp.doorbells >= 1, "core 1 parks, so core 0 rang it");
}

/// Core 1 spins briefly after each request and then parks; core 0 waits until core 1 has
/// announced its sleep before each request, so each one finds core 1 asleep: the
/// spin-then-park path must still raise the `sleeping` flag and be woken by the doorbell
/// (a lost wake hangs the test).
#[test]
fn a_core_that_spins_then_parks_is_woken_by_the_doorbell() {
    let n = if cfg!(miri) { 3 } else { 20u32 };
    let exec = |core: usize| {
        if core == 1 {
            ExecutorConfig::default().smp_idle_poll(Duration::from_nanos(1))
        } else {
            parking(core)
        }
    };
    let (out, stats) = run_cores_with(2, small(), exec, move || async move {
        for i in 0..n {
            assert_eq!(submit_to(1, move || async move { i * 3 }).await, Ok(i * 3));
            // Holds this core's thread: nothing else runs here meanwhile.
            while !local::with_smp(|s| s.is_sleeping(1)).expect("attached") {
                std::thread::yield_now();
            }
        }
        stats().expect("attached").doorbells
    });
    // A sleeping core may also wake on a stale unpark and find the request by its own
    // re-check (the protocol's other half), so not every request needs a ring.
    assert!(cfg!(miri) || out >= 1, "core 0 rang core 1's doorbell");
    let core1 = &stats[1].1;
    assert!(
        core1.idle_spins >= u64::from(n),
        "core 1 polled after each request"
    );
    assert!(core1.sleeps >= 1, "and then slept");
}

/// The idle poll also ends on a timer (the virtual clock does not move while spinning; the
/// round bound ends the window, then the park jumps to the deadline) and on a local wake.
#[test]
fn an_idle_poll_with_nothing_to_find_ends_and_timers_still_fire() {
    let exec = |_core: usize| ExecutorConfig::default().idle_poll(Duration::from_micros(5));
    let (out, stats) = run_cores_with(2, small(), exec, || async {
        crate::time::sleep(Duration::from_millis(3)).await;
        let r = submit_to(1, || async {
            crate::time::sleep(Duration::from_millis(2)).await;
            7u8
        })
        .await;
        (r, crate::executor::stats().expect("running"))
    });
    assert_eq!(out.0, Ok(7));
    assert!(out.1.idle_spins >= 2);
    assert!(stats.iter().all(|(_, e)| e.idle_spins >= 1));
}

/// Counts this thread's allocations (for the per-round-trip allocation test, and Raft's
/// per-commit one, which reads [`allocs_here`]).
struct CountingAlloc;

std::thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the counter is a plain
// thread-local cell with a const initialiser and no destructor, so it never allocates.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

pub(crate) fn allocs_here() -> u64 {
    ALLOCS.with(Cell::get)
}

/// A warm `submit_to` round trip with a small closure and result allocates nothing: the
/// request and the reply travel inline in the ring slots, the reply slab and the rings are
/// reused, and the target's task takes a recycled cell from its core's cache. (Before: three
/// — request box, task, reply box; then one, the task.)
#[test]
fn a_warm_round_trip_allocates_nothing() {
    assert!(
        core::mem::size_of::<Msg>() <= 64,
        "a message fits a cache line"
    );
    let n = if cfg!(miri) { 4 } else { 200u64 };
    let (out, _) = run_cores(2, small(), move || async move {
        // Warm up: slab slots, ring buffers, task pools, thread locals.
        for i in 0..8u64 {
            let _ = submit_to(1, move || async move { i }).await;
        }
        let there_before = submit_to(1, || async { allocs_here() }).await.expect("ok");
        let here_before = allocs_here();
        for i in 0..n {
            assert_eq!(submit_to(1, move || async move { i + 1 }).await, Ok(i + 1));
        }
        let here = allocs_here() - here_before;
        let there = submit_to(1, || async { allocs_here() }).await.expect("ok") - there_before;
        (here, there)
    });
    let (here, there) = out;
    std::eprintln!("allocations for {n} round trips: caller {here}, target {there}");
    // `there` includes the second probe's own task (recycled too, once warm).
    assert_eq!(here, 0, "the caller allocates nothing per round trip");
    assert!(
        there <= 1,
        "{there} allocations on the target for {n} round trips"
    );
}

std::thread_local! {
    /// Requests of a stream that core 1 served so far.
    static SERVED: Cell<u32> = const { Cell::new(0) };
    /// `SERVED` when core 1's probe (a timer, an I/O operation) completed.
    static PROBE_AT: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Core 1 spins long enough (bounded by rounds under the virtual clock) to serve a whole
/// stream of requests in its idle loop; core 0 parks while it waits for each reply.
fn serving_spin(core: usize) -> ExecutorConfig {
    if core == 1 {
        let rounds: u64 = if cfg!(miri) { 1 << 14 } else { 1 << 26 };
        ExecutorConfig::default()
            .idle_poll(Duration::ZERO)
            .smp_idle_poll(Duration::from_nanos(rounds * 16))
    } else {
        parking(core)
    }
}

/// Requests of a stream before the one that runs the probe: by then core 1 serves them in
/// its idle spin.
const PROBE_AFTER: u32 = 4;

/// Core 0 sends `n` requests, one at a time; each moves core 1's clock on by `step` (as
/// real work takes time) and counts itself in `SERVED`, and the one after [`PROBE_AFTER`]
/// also runs `probe` (which starts what should complete during the stream). Returns
/// `PROBE_AT` and how many loop iterations core 1 made during the stream.
fn stream_with_probe(n: u32, step: Duration, probe: fn()) -> (Option<u32>, u64) {
    let iterations = || crate::executor::stats().expect("running").loop_iterations;
    let (out, _) = run_cores_with(2, small(), serving_spin, move || async move {
        let before = submit_to(1, move || async move { iterations() })
            .await
            .expect("core 1 alive");
        for _ in 0..n {
            submit_to(1, move || async move {
                platform().clock().advance(step);
                SERVED.with(|s| s.set(s.get() + 1));
                if SERVED.get() == PROBE_AFTER + 1 {
                    probe();
                }
            })
            .await
            .expect("core 1 alive");
        }
        submit_to(
            1,
            move || async move { (PROBE_AT.get(), iterations() - before) },
        )
        .await
        .expect("core 1 alive")
    });
    out
}

fn probe_done() {
    PROBE_AT.set(Some(SERVED.get()));
}

std::thread_local! {
    /// A timer set by work served in the idle spin.
    static SLEEP: RefCell<Option<Pin<Box<crate::time::Sleep>>>> = const { RefCell::new(None) };
}

/// Calls [`probe_done`] when woken (on the core whose timer fires).
struct ProbeWake;

impl std::task::Wake for ProbeWake {
    fn wake(self: Arc<Self>) {
        probe_done();
    }
}

/// Requests served in the idle spin (the fast path: no loop pass per request) still let a
/// timer that one of them set, and that comes due among them, fire: never early, and
/// before the stream ends.
#[test]
fn a_timer_set_and_due_while_the_idle_spin_serves_requests_fires_during_the_stream() {
    let (n, step) = if cfg!(miri) {
        (16, Duration::from_micros(500))
    } else {
        (60, Duration::from_micros(100))
    };
    let (fired_at, iterations) = stream_with_probe(n, step, || {
        let mut sleep = Box::pin(crate::time::sleep(Duration::from_millis(2)));
        let waker = Waker::from(Arc::new(ProbeWake));
        assert!(sleep
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        SLEEP.with(|s| *s.borrow_mut() = Some(sleep));
    });
    let steps = Duration::from_millis(2).as_nanos() / step.as_nanos();
    let due = PROBE_AFTER + 1 + u32::try_from(steps).expect("small");
    assert_fired_in_a_spun_stream(fired_at, due, n, iterations);
}

/// A timer that came due after `due` of a stream's `n` round trips fired after `fired_at`
/// of them: on time (never early) and during the stream; and the stream took fewer than
/// half as many loop iterations as round trips (the idle spin did the work).
fn assert_fired_in_a_spun_stream(fired_at: Option<u32>, due: u32, n: u32, iterations: u64) {
    let fired_at = fired_at.expect("the timer fired");
    assert!(
        fired_at >= due,
        "fired early: after {fired_at} round trips, due after {due}"
    );
    assert!(
        fired_at < n,
        "fired only after the stream ({fired_at} of {n})"
    );
    assert!(
        u64::from(n) > 2 * iterations,
        "{iterations} loop iterations for {n} round trips: the spin did not do the work"
    );
}

/// Both cores spin while idle (bounded by rounds under the virtual clock).
fn both_spin(_core: usize) -> ExecutorConfig {
    serving_spin(1)
}

/// A caller spinning for its replies: each reply the spin takes in wakes only the root
/// future, which the loop polls straight out of the spin (no pass of its own per round
/// trip), and a timer of a task on the caller's core that comes due during the stream still
/// fires during it, never early. Core 0's clock moves by `step` per round trip.
#[test]
fn a_spinning_caller_polls_its_root_straight_out_of_the_spin_and_its_timers_still_fire() {
    // Steps well below the task quota (500 µs): the park due once per quota takes a loop
    // pass, so a step of a whole quota would make one per round trip.
    let (n, step) = if cfg!(miri) {
        (30, Duration::from_micros(100))
    } else {
        (200, Duration::from_micros(100))
    };
    let (out, _) = run_cores_with(2, small(), both_spin, move || async move {
        let iterations = || crate::executor::stats().expect("running").loop_iterations;
        let replies = Rc::new(Cell::new(0u32));
        let fired_at = Rc::new(Cell::new(None));
        let timer = {
            let (replies, fired_at) = (replies.clone(), fired_at.clone());
            spawn(async move {
                crate::time::sleep(Duration::from_millis(2)).await;
                fired_at.set(Some(replies.get()));
            })
        };
        // Let the timer task register its sleep before the stream starts.
        yield_now().await;
        let before = iterations();
        let mut sum = 0;
        for i in 0..n {
            sum += submit_to(1, move || async move { i })
                .await
                .expect("core 1 alive");
            replies.set(replies.get() + 1);
            platform().clock().advance(step);
        }
        let iterations = iterations() - before;
        timer.await.expect("timer task");
        (sum, fired_at.get(), iterations)
    });
    let (sum, fired_at, iterations) = out;
    assert_eq!(sum, n * (n - 1) / 2);
    let due = u32::try_from(Duration::from_millis(2).as_nanos() / step.as_nanos()).expect("small");
    assert_fired_in_a_spun_stream(fired_at, due, n, iterations);
}

/// A stream of requests served in the idle spin does not starve I/O: an operation started
/// among them completes while the stream goes on.
#[test]
fn requests_served_in_the_idle_spin_do_not_starve_io_completions() {
    let n = if cfg!(miri) { 12 } else { 60 };
    let (done_at, _) = stream_with_probe(n, Duration::from_micros(100), || {
        drop(spawn(async {
            let p = platform();
            let op = seastar_hal::io::Op::nop(seastar_hal::Platform::io(&*p)).expect("submit");
            assert!(op.await.0.result.is_ok());
            probe_done();
        }));
    });
    let done_at = done_at.expect("the operation completed");
    assert!(
        done_at < n,
        "completed only after the stream ({done_at} of {n})"
    );
}

/// A reply taken in by the idle spin for a `Submit` dropped meanwhile is discarded there:
/// the value is dropped once, the spin goes on waiting for the reply it is there for, and
/// later calls work.
#[test]
fn a_reply_served_in_the_idle_spin_for_a_dropped_submit_is_discarded() {
    let exec = |core: usize| serving_spin(1 - core);
    let (out, _) = run_cores_with(2, small(), exec, || async {
        let drops = Arc::new(AtomicUsize::new(0));
        let sleeps = || crate::executor::stats().expect("running").sleeps;
        let before = sleeps();
        let d = drops.clone();
        let abandoned = submit_to(1, move || async move {
            let (tx, rx) = oneshot::channel();
            PARKED.with(|p| *p.borrow_mut() = Some(tx));
            let _ = rx.await;
            Tracked(d)
        });
        // Taken in by core 1 before this one (one ring, in order); then dropped unanswered.
        let released = submit_to(1, || async {
            let tx = PARKED.with(|p| p.borrow_mut().take()).expect("parked");
            tx.send(1).is_ok()
        });
        drop(abandoned);
        assert_eq!(released.await, Ok(true));
        // Core 1 answers the abandoned work before this (its task was woken first).
        assert_eq!(submit_to(1, || async { 7 }).await, Ok(7));
        (drops.load(Ordering::Relaxed), sleeps() - before)
    });
    assert_eq!(
        out,
        (1, 0),
        "(drops of the abandoned reply, sleeps of core 0)"
    );
}

/// `submit_sync` calls a plain function on the target and brings its result back; on a
/// target with nothing queued it runs where the request arrives, with no task, yet counted
/// as a poll and stall-checked like one. For the caller's own core it runs as a task.
#[test]
fn submit_sync_calls_on_the_target_without_a_task_and_is_watched_like_a_poll() {
    let n = if cfg!(miri) { 3 } else { 20u64 };
    let (out, stats) = run_cores_with(2, small(), parking, move || async move {
        for i in 0..n {
            assert_eq!(
                submit_sync(1, move || (current_core(), i * 2)).await,
                Ok((Some(1), i * 2))
            );
        }
        let itself = submit_sync(0, current_core).await;
        // Holds core 1 for longer than the stall threshold (virtual time).
        let stalls_before = submit_sync(1, || crate::executor::stats().expect("running").stalls)
            .await
            .expect("core 1 alive");
        submit_sync(1, || platform().clock().advance(Duration::from_millis(30)))
            .await
            .expect("core 1 alive");
        let after = submit_sync(1, || crate::executor::stats().expect("running"))
            .await
            .expect("core 1 alive");
        (itself, stalls_before, after)
    });
    let (itself, stalls_before, after) = out;
    assert_eq!(itself, Ok(Some(0)));
    assert_eq!(after.stalls, stalls_before + 1, "{after:?}");
    let stall = after.last_stall.expect("the long call was reported");
    assert!(stall.duration >= Duration::from_millis(30), "{stall:?}");
    let target = &stats[1].1;
    // Only the stop message (a `submit_to`) was a task; every call was a poll of its own.
    assert_eq!(target.tasks_spawned, 1, "{target:?}");
    assert_eq!(target.polls, n + 4, "{target:?}");
}

#[test]
fn a_panic_in_a_sync_call_comes_back_as_an_error_and_the_core_lives_on() {
    let (out, _) = run_cores_with(2, small(), parking, || async {
        let panicked = submit_sync(1, || -> u8 { panic!("boom in call") }).await;
        let after = submit_sync(1, || 7u8).await;
        (panicked, after)
    });
    assert_eq!(
        out.0,
        Err(SmpError::Panicked {
            core: 1,
            message: "boom in call".to_string()
        })
    );
    assert_eq!(out.1, Ok(7));
}

std::thread_local! {
    /// What ran on core 1, in order.
    static RAN: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

/// A sync call that arrives while tasks wait to run on the target runs behind them (as a
/// queued task), not ahead of them: arriving work must not take more than its share.
#[test]
fn a_sync_call_arriving_while_tasks_wait_runs_behind_them() {
    let go = Arc::new(core::sync::atomic::AtomicBool::new(false));
    let (out, stats) = run_cores_with(2, small(), parking, move || async move {
        let go_there = go.clone();
        submit_to(1, move || async move {
            // The first holds the core until the call below was sent, then uses up the
            // task quota (virtual time): the batch ends with the second still queued, and
            // the loop takes in the call next.
            spawn(async move {
                while !go_there.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                platform().clock().advance(Duration::from_millis(1));
            })
            .detach();
            spawn(async { RAN.with(|r| r.borrow_mut().push("task")) }).detach();
        })
        .await
        .expect("core 1 alive");
        let call = submit_sync(1, || RAN.with(|r| r.borrow_mut().push("call")));
        // `call` is visible to core 1 as it is pushed.
        go.store(true, Ordering::Release);
        call.await.expect("core 1 alive");
        submit_sync(1, || RAN.with(|r| r.take())).await
    });
    assert_eq!(out, Ok(vec!["task", "call"]));
    // Two spawned tasks, the work that spawned them, the queued call, the stop message.
    assert_eq!(stats[1].1.tasks_spawned, 5, "{:?}", stats[1].1);
}
