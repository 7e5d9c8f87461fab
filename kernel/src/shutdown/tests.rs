//! The coordinator on a real executor over the simulated HAL (virtual time, so deadlines cost
//! nothing and elapsed times are exact). Kept small for Miri.

use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::Future;
use core::time::Duration;

use seastar_hal::sim::SimPlatform;

use super::*;
use crate::executor::{block_on, now};
use crate::future::{select, Either};
use crate::task::{spawn, yield_now};
use crate::time::sleep;

fn run<F: Future>(f: F) -> F::Output {
    block_on(SimPlatform::new(), f).expect("no executor already running")
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

type Log = Rc<RefCell<Vec<&'static str>>>;

/// A task that waits for its phase, logs `start`, works for `work`, logs `end`, and drops
/// its registration.
fn worker(reg: Registration, log: &Log, start: &'static str, end: &'static str, work: Duration) {
    let log = log.clone();
    spawn(async move {
        reg.phase_started().await;
        log.borrow_mut().push(start);
        sleep(work).await;
        log.borrow_mut().push(end);
        drop(reg);
    })
    .detach();
}

#[test]
fn phases_run_in_order_each_waiting_for_the_previous() {
    run(async {
        let s = Shutdown::new();
        let log: Log = Rc::default();
        // Registered out of order: the coordinator orders by phase.
        let cleanup = s.register(Phase::CLEANUP, "db").expect("register");
        let drain = s.register(Phase::DRAIN, "conn").expect("register");
        let accept = s
            .register(Phase::STOP_ACCEPTING, "listener")
            .expect("register");
        worker(cleanup, &log, "cleanup", "cleanup done", secs(1));
        worker(drain, &log, "drain", "drain done", secs(2));
        worker(accept, &log, "stop", "stop done", secs(3));
        yield_now().await;
        assert!(log.borrow().is_empty(), "nothing acts before the run");

        let report = s.run(secs(10)).await;
        assert_eq!(
            *log.borrow(),
            [
                "stop",
                "stop done",
                "drain",
                "drain done",
                "cleanup",
                "cleanup done"
            ]
        );
        assert!(report.is_clean(), "{report}");
        let phases: Vec<_> = report.phases.iter().map(|p| p.phase).collect();
        assert_eq!(phases, Phase::STANDARD);
        let elapsed: Vec<_> = report.phases.iter().map(|p| p.elapsed).collect();
        assert_eq!(elapsed, [secs(3), secs(2), secs(1)]);
        assert_eq!(now().as_nanos(), secs(6).as_nanos() as u64);
        assert_eq!(
            report.to_string(),
            "stop-accepting: 1 done; drain: 1 done; cleanup: 1 done"
        );
    });
}

#[test]
fn a_late_phase_is_reported_with_its_stragglers_and_the_next_one_starts_at_the_deadline() {
    run(async {
        let s = Shutdown::new();
        let log: Log = Rc::default();
        let fast = s.register(Phase::DRAIN, "fast conn").expect("register");
        let stuck = s.register(Phase::DRAIN, "stuck conn").expect("register");
        let cleanup = s.register(Phase::CLEANUP, "flush").expect("register");
        worker(fast, &log, "fast", "fast done", secs(1));
        worker(stuck, &log, "stuck", "stuck done", secs(100));
        worker(cleanup, &log, "cleanup", "cleanup done", secs(1));

        let report = s.run(secs(5)).await;
        assert!(!report.is_clean());
        let drain = report.phase(Phase::DRAIN).expect("drain ran");
        assert_eq!(drain.waited_for, 2);
        assert_eq!(drain.elapsed, secs(5));
        assert_eq!(drain.stragglers, ["stuck conn"]);
        assert!(report
            .phase(Phase::CLEANUP)
            .expect("cleanup ran")
            .completed());
        let stragglers: Vec<_> = report.stragglers().collect();
        assert_eq!(stragglers, [(Phase::DRAIN, "stuck conn")]);
        assert_eq!(
            report.to_string(),
            "stop-accepting: 0 done; drain: 1 of 2 done (late: stuck conn); cleanup: 1 done"
        );
        // Cleanup started at the deadline, while the straggler was still working.
        assert_eq!(
            *log.borrow(),
            ["fast", "stuck", "fast done", "cleanup", "cleanup done"]
        );
        assert_eq!(s.open(Phase::DRAIN), 1, "reported, not cancelled");
    });
}

#[test]
fn registration_after_the_trigger_works_until_its_phase_starts() {
    run(async {
        let s = Shutdown::new();
        assert!(s.trigger());
        // Triggered, no phase started: any phase still takes registrations.
        let accept = s
            .register(Phase::STOP_ACCEPTING, "listener")
            .expect("register");
        let runner = {
            let s = s.clone();
            spawn(async move { s.run(secs(5)).await })
        };
        accept.phase_started().await;
        assert_eq!(
            s.register(Phase::STOP_ACCEPTING, "late listener")
                .map(|_| ()),
            Err(RegisterError::PhaseStarted(Phase::STOP_ACCEPTING))
        );
        // A connection accepted during stop-accepting still gets into the drain.
        let conn = s
            .register(Phase::DRAIN, "conn")
            .expect("drain not started yet");
        drop(accept);
        conn.phase_started().await;
        assert!(conn.is_phase_started());
        assert!(s.register(Phase::DRAIN, "too late").is_err());
        drop(conn);
        let report = runner.await.expect("runner");
        assert_eq!(report.phase(Phase::DRAIN).map(|p| p.waited_for), Some(1));
        assert!(report.is_clean());
        assert!(s.register(Phase::CLEANUP, "after the end").is_err());
    });
}

#[test]
fn trigger_is_idempotent_and_run_runs_the_phases_once() {
    run(async {
        let s = Shutdown::new();
        let triggered = {
            let s = s.clone();
            spawn(async move {
                s.triggered().await;
                now()
            })
        };
        sleep(secs(1)).await;
        assert!(!s.is_triggered());
        assert!(s.trigger());
        assert!(!s.trigger());
        assert_eq!(
            triggered.await.expect("waiter"),
            seastar_hal::Instant::ZERO + secs(1)
        );

        let reg = s.register(Phase::DRAIN, "conn").expect("register");
        let second = {
            let s = s.clone();
            spawn(async move { s.run(secs(5)).await })
        };
        let finished = {
            let s = s.clone();
            spawn(async move { s.finished().await })
        };
        let release = spawn(async move {
            reg.phase_started().await;
            sleep(secs(2)).await;
            drop(reg);
        });
        let first = s.run(secs(5)).await;
        release.await.expect("release");
        assert_eq!(second.await.expect("second run"), first);
        assert_eq!(finished.await.expect("finished"), first);
        assert_eq!(
            s.run(secs(5)).await,
            first,
            "a later run returns the same report"
        );
        assert_eq!(first.phases.len(), 3, "the phases ran once");
        assert_eq!(s.report(), Some(first));
    });
}

#[test]
fn custom_phases_run_in_rank_order_only_when_used() {
    run(async {
        const FLUSH: Phase = Phase::custom(250, "flush");
        const UNUSED: Phase = Phase::custom(50, "unused");
        let _ = UNUSED;
        let s = Shutdown::new();
        let flush = s.register(FLUSH, "log").expect("register");
        let cleanup = s.register(Phase::CLEANUP, "x").expect("register");
        let order: Rc<RefCell<Vec<Phase>>> = Rc::default();
        for reg in [flush, cleanup] {
            let order = order.clone();
            spawn(async move {
                reg.phase_started().await;
                order.borrow_mut().push(reg.phase());
            })
            .detach();
        }
        let report = s.run(secs(1)).await;
        let phases: Vec<_> = report.phases.iter().map(|p| p.phase.name()).collect();
        assert_eq!(phases, ["stop-accepting", "drain", "flush", "cleanup"]);
        assert_eq!(*order.borrow(), vec![FLUSH, Phase::CLEANUP]);
    });
}

#[test]
fn an_accept_loop_stops_on_its_phase_even_with_work_always_ready() {
    run(async {
        let s = Shutdown::new();
        let reg = s
            .register(Phase::STOP_ACCEPTING, "accept loop")
            .expect("register");
        let accepted = Rc::new(RefCell::new(0u32));
        let acceptor = {
            let accepted = accepted.clone();
            spawn(async move {
                loop {
                    // `accept()` stand-in that is always ready: the stop must still win.
                    match select(reg.phase_started(), core::future::ready(())).await {
                        Either::Left(()) => break,
                        Either::Right(()) => *accepted.borrow_mut() += 1,
                    }
                    yield_now().await;
                }
                drop(reg);
            })
        };
        // (Virtual time stands still while a task is always ready: yield, do not sleep.)
        for _ in 0..8 {
            yield_now().await;
        }
        let report = s.run(secs(1)).await;
        acceptor.await.expect("acceptor");
        assert!(report.is_clean());
        assert!(*accepted.borrow() > 0);
    });
}

#[test]
fn dropping_the_run_midway_lets_a_waiting_run_carry_on() {
    run(async {
        let s = Shutdown::new();
        let drain = s.register(Phase::DRAIN, "conn").expect("register");
        // Polled after the root future: it finds the root's run driving and waits.
        let waiter = {
            let s = s.clone();
            spawn(async move { s.run(secs(100)).await })
        };
        // The first run is abandoned while it waits in the drain.
        let abandoned = select(s.run(secs(100)), sleep(secs(1))).await;
        assert!(matches!(abandoned, Either::Right(())));
        assert_eq!(s.current_phase(), Some(Phase::DRAIN));
        // The waiter took over from the next phase: the drain is not waited for again.
        let report = waiter.await.expect("waiter");
        let phases: Vec<_> = report.phases.iter().map(|p| p.phase).collect();
        assert_eq!(phases, [Phase::CLEANUP]);
        drop(drain);
        assert_eq!(s.run(secs(100)).await, report);
    });
}
