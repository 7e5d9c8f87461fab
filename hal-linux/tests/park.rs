//! Batching, system-call accounting, and unpark from other threads.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{block_on, park_until, platform};
use seastar_hal::io::{IoDriver, Op};
use seastar_hal::{Platform, Unpark};
use seastar_hal_linux::{UringConfig, UringPlatform};

#[test]
fn one_enter_per_park_for_a_batch_of_submissions() {
    let p = platform();
    let before = p.stats();
    let mut ops: Vec<_> = (0..32).map(|_| Op::nop(p.io()).expect("nop")).collect();
    assert_eq!(p.stats().enters, before.enters, "submit makes no syscall");
    assert_eq!(p.stats().ops, before.ops + 32);

    p.park(Some(p.now())); // deadline already passed: submit + reap, no wait
    let after = p.stats();
    assert_eq!(
        after.enters,
        before.enters + 1,
        "one io_uring_enter per park"
    );
    assert_eq!(after.parks, before.parks + 1);
    assert_eq!(after.syscalls, before.syscalls + 1);
    assert!(after.submitted >= before.submitted + 32);
    assert_eq!(after.completed, before.completed + 32);

    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    for op in &mut ops {
        match op.poll_complete(&mut cx) {
            std::task::Poll::Ready((c, ())) => assert_eq!(c.result, Ok(0)),
            std::task::Poll::Pending => panic!("nop not reaped by the park"),
        }
    }
    assert_eq!(p.io().in_flight(), 0);

    // Several loop iterations of "submit a few, park once": still one enter each.
    for round in 0..5u64 {
        let s = p.stats();
        let batch: Vec<_> = (0..8).map(|_| Op::nop(p.io()).expect("nop")).collect();
        p.park(Some(p.now() + Duration::from_secs(1)));
        let e = p.stats();
        assert_eq!(e.enters, s.enters + 1, "round {round}");
        for op in batch {
            assert_eq!(block_on(&p, op).0.result, Ok(0));
        }
    }
}

#[test]
fn a_full_submission_queue_is_flushed_early() {
    let p = UringPlatform::new(UringConfig::new().entries(16)).expect("platform");
    let ops: Vec<_> = (0..100).map(|_| Op::nop(p.io()).expect("nop")).collect();
    let s = p.stats();
    assert!(s.sq_full_flushes > 0);
    assert_eq!(s.enters, s.sq_full_flushes, "only full-SQ flushes so far");
    for op in ops {
        assert_eq!(block_on(&p, op).0.result, Ok(0));
    }
    assert_eq!(p.stats().completed, 100);
}

#[test]
fn unpark_wakes_a_parked_core_promptly() {
    let p = platform();
    p.park(Some(p.now())); // settle: the eventfd read is in the kernel
    let u = p.unparker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        u.unpark();
        // Later unparks while the core is running again cost nothing.
        for _ in 0..100 {
            u.unpark();
        }
    });
    let start = Instant::now();
    p.park(Some(p.now() + Duration::from_secs(10)));
    let waited = start.elapsed();
    t.join().expect("unparker");
    // A lost wake-up shows as the full 10 s; the margin absorbs a loaded machine.
    assert!(waited < Duration::from_secs(4), "parked {waited:?}");
    let s = p.stats();
    assert!(s.eventfd_writes <= 1, "{s:?}");
    // The wake-up's eventfd read completes (now or at the next park).
    park_until(&p, || p.stats().unpark_wakeups >= p.stats().eventfd_writes);
}

#[test]
fn unpark_of_a_running_core_makes_no_syscall_and_the_next_park_returns() {
    let p = platform();
    p.park(Some(p.now()));
    let u = p.unparker();
    let before = p.stats();
    // From this thread and from another one: the core is not parked.
    u.unpark();
    let u2 = u.clone();
    std::thread::spawn(move || u2.unpark())
        .join()
        .expect("thread");
    let after = p.stats();
    assert_eq!(
        after.syscalls, before.syscalls,
        "no syscall for a running core"
    );
    assert_eq!(after.eventfd_writes, 0);

    let start = Instant::now();
    p.park(Some(p.now() + Duration::from_secs(5)));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "pending unpark was lost"
    );
    assert_eq!(
        p.stats().eventfd_writes,
        0,
        "consumed without any eventfd write"
    );
    assert_eq!(p.stats().enters, after.enters + 1);

    // Consumed: the next park waits for its deadline again.
    let deadline = p.now() + Duration::from_millis(20);
    p.park(Some(deadline));
    assert!(p.now() >= deadline);
}

#[test]
fn no_lost_wakeups_when_unpark_races_with_park() {
    let p = platform();
    let u = p.unparker();
    let round = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    const ROUNDS: u64 = 300;
    let t = {
        let (round, done) = (round.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            let start = Instant::now();
            while seen < ROUNDS && start.elapsed() < Duration::from_secs(30) {
                let r = round.load(Ordering::SeqCst);
                if r > seen {
                    seen = r;
                    // Vary the timing: before, during and after the core enters the kernel.
                    if seen % 3 == 1 {
                        std::thread::yield_now();
                    } else if seen % 3 == 2 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    // Publish first: a core woken by this unpark must see the round done.
                    done.store(seen, Ordering::SeqCst);
                    u.unpark();
                } else {
                    std::hint::spin_loop();
                }
            }
        })
    };
    for r in 1..=ROUNDS {
        round.store(r, Ordering::SeqCst);
        // Park until this round's unpark has been delivered; each park must return promptly.
        loop {
            let start = Instant::now();
            p.park(Some(p.now() + Duration::from_secs(10)));
            assert!(
                start.elapsed() < Duration::from_secs(4),
                "round {r}: lost wake-up"
            );
            if done.load(Ordering::SeqCst) >= r {
                break;
            }
        }
    }
    t.join().expect("unparker");
    let s = p.stats();
    println!("{s:?}");
    assert!(s.eventfd_writes <= ROUNDS);
}

#[test]
fn a_non_blocking_park_still_runs_deferred_completion_work() {
    // With DEFER_TASKRUN, an expired timer's completion is only posted by an enter with
    // GETEVENTS: a park whose deadline has passed must still ask for it.
    let p = platform();
    let op = Op::timeout(p.io(), p.now() + Duration::from_millis(5)).expect("t");
    p.flush();
    std::thread::sleep(Duration::from_millis(30));
    p.park(Some(p.now()));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut op = op;
    match op.poll_complete(&mut cx) {
        std::task::Poll::Ready((c, ())) => assert_eq!(c.result, Ok(0)),
        std::task::Poll::Pending => panic!("expired timeout not reaped by a non-blocking park"),
    }
}

#[test]
fn unparker_is_send_sync_clone_static() {
    fn check<T: Unpark + Clone + Send + Sync + 'static>() {}
    check::<seastar_hal_linux::UringUnparker>();
}

#[test]
fn flush_submits_without_waiting() {
    let p = platform();
    let op = Op::timeout(p.io(), p.now() + Duration::from_millis(30)).expect("t");
    let e0 = p.stats().enters;
    p.flush();
    assert_eq!(p.stats().enters, e0 + 1);
    p.flush(); // nothing queued: no syscall
    assert_eq!(p.stats().enters, e0 + 1);
    assert_eq!(block_on(&p, op).0.result, Ok(0));
}
