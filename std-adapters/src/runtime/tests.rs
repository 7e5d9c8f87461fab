use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use super::*;

fn mio(cores: usize) -> Runtime {
    Runtime::builder()
        .cores(cores)
        .pin(false)
        .backend(Backend::Mio)
        .build()
        .expect("mio runtime")
}

/// io_uring if this machine allows it (the tests of the other backend still run).
fn uring(cores: usize) -> Option<Runtime> {
    match Runtime::builder()
        .cores(cores)
        .pin(false)
        .backend(Backend::IoUring)
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("io_uring unavailable here, skipping: {e}");
            None
        }
    }
}

fn runtimes(cores: usize) -> Vec<Runtime> {
    let mut v = vec![mio(cores)];
    v.extend(uring(cores));
    v
}

#[test]
fn run_on_all_returns_per_core_results_in_order() {
    for rt in runtimes(3) {
        let out = rt
            .run_on_all(|core| async move {
                // !Send state is fine: the future is made on the core's thread.
                let local = Rc::new(Cell::new(core));
                crate::time::sleep(Duration::from_millis(5)).await;
                let h = crate::spawn(async move { local.get() * 10 });
                crate::task::yield_now().await;
                let v = h.await.expect("task");
                (
                    v,
                    current_core(),
                    std::thread::current().name().map(str::to_owned),
                )
            })
            .expect("run");
        assert_eq!(out.len(), 3);
        for (i, (v, core, name)) in out.into_iter().enumerate() {
            assert_eq!(v, i * 10);
            assert_eq!(core, Some(i));
            assert_eq!(name.as_deref(), Some(format!("seastar-core-{i}").as_str()));
        }
    }
}

#[test]
fn run_on_one_runs_once_and_can_run_again() {
    for rt in runtimes(4) {
        let b = rt.backend();
        let out = rt
            .run_on_one(|| async { (current_core(), current_backend()) })
            .expect("run");
        assert_eq!(out, (Some(0), Some(b)));
        assert_eq!(rt.run_on_one(|| async { 7 }).expect("again"), 7);
    }
    assert_eq!(current_core(), None, "the caller's thread is no core");
}

#[test]
fn a_panicking_core_is_an_error_and_stops_the_others() {
    for rt in runtimes(3) {
        let res: Result<Vec<()>, Error> = rt.run_on_all(|core| async move {
            if core == 1 {
                crate::time::sleep(Duration::from_millis(10)).await;
                panic!("core one gives up");
            }
            // The others would wait forever.
            std::future::pending::<()>().await;
        });
        match res {
            Err(Error::Panicked { core, message }) => {
                assert_eq!(core, 1);
                assert!(message.contains("core one gives up"), "{message}");
            }
            other => panic!("expected a panic report, got {other:?}"),
        }
    }
}

#[test]
fn a_panicking_task_is_a_join_error_not_a_core_failure() {
    let rt = mio(1);
    let out = rt
        .run_on_one(|| async {
            let h = crate::spawn(async { panic!("task boom") });
            matches!(h.await, Err(crate::task::JoinError::Panicked(_)))
        })
        .expect("run");
    assert!(out);
}

#[test]
fn builder_validates() {
    assert!(matches!(
        Runtime::builder().cores(0).pin(false).build(),
        Err(Error::Config(_))
    ));
    let cpus = crate::sys::allowed_cpus().expect("affinity");
    let too_many = Runtime::builder()
        .cores(cpus.len() + 1)
        .pin(true)
        .backend(Backend::Mio)
        .build();
    match too_many {
        Err(e @ Error::Config(_)) => assert!(e.to_string().contains("pin(false)"), "{e}"),
        other => panic!("expected a config error, got {other:?}"),
    }
    // Without pinning, more cores than CPUs is fine.
    let rt = Runtime::builder()
        .cores(cpus.len() + 1)
        .pin(false)
        .backend(Backend::Mio)
        .build()
        .expect("unpinned");
    assert_eq!(rt.cores(), cpus.len() + 1);
    assert!(rt.cpus().is_none());
}

#[test]
fn defaults_use_every_cpu_pinned() {
    let rt = Runtime::builder()
        .backend(Backend::Mio)
        .build()
        .expect("defaults");
    let cpus = crate::sys::allowed_cpus().expect("affinity");
    assert_eq!(rt.cores(), cpus.len());
    assert_eq!(rt.cpus(), Some(cpus.as_slice()));
    // Each core really runs on its CPU.
    let seen = rt
        .run_on_all(|_| async { crate::sys::allowed_cpus().expect("affinity") })
        .expect("run");
    for (i, set) in seen.into_iter().enumerate() {
        assert_eq!(set, vec![cpus[i]]);
    }
}

#[test]
fn auto_resolves_to_a_concrete_backend() {
    let rt = Runtime::builder()
        .cores(1)
        .pin(false)
        .build_with_env(None)
        .expect("auto");
    assert_ne!(rt.backend(), Backend::Auto);
    assert!(rt.backend_reason().starts_with("auto"));
    let b = rt.backend();
    let ran = rt.run_on_one(|| async { current_backend() }).expect("run");
    assert_eq!(ran, Some(b));
    let forced = Runtime::builder()
        .cores(1)
        .pin(false)
        .build_with_env(Some("mio"))
        .expect("env");
    assert_eq!(forced.backend(), Backend::Mio);
}

#[test]
fn io_stats_are_per_core() {
    for rt in runtimes(1) {
        let b = rt.backend();
        let stats = rt.run_on_one(|| async { io_stats() }).expect("run");
        match (b, stats) {
            (Backend::IoUring, Some(IoStats::Uring(_))) | (Backend::Mio, Some(IoStats::Mio(_))) => {
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(io_stats().is_none());
}

fn with_backends(b: Builder) -> Vec<Runtime> {
    let mut v = vec![b
        .clone()
        .backend(Backend::Mio)
        .build()
        .expect("mio runtime")];
    match b.backend(Backend::IoUring).build() {
        Ok(rt) => v.push(rt),
        Err(e) => eprintln!("io_uring unavailable here, skipping: {e}"),
    }
    v
}

/// With an idle poll window far longer than any reply takes, core 0 never sleeps in the
/// kernel while it awaits its replies: each arrives during the spin. (The window only bounds
/// the spin; nothing here depends on how fast the replies are.)
#[test]
fn replies_arriving_during_the_idle_poll_need_no_sleep() {
    let b = Runtime::builder()
        .cores(2)
        .pin(false)
        .smp_idle_poll(Duration::from_secs(120));
    for rt in with_backends(b) {
        let out = rt
            .run_on_all(|core| async move {
                if core != 0 {
                    return None;
                }
                let before = core_stats().expect("stats").executor;
                for i in 0..200u32 {
                    let r = crate::smp::submit_to(1, move || async move { i + 1 }).await;
                    assert_eq!(r, Ok(i + 1));
                }
                let after = core_stats().expect("stats").executor;
                Some((before, after))
            })
            .expect("run");
        let (before, after) = out[0].clone().expect("core 0");
        assert_eq!(
            after.sleeps,
            before.sleeps,
            "{}: slept awaiting",
            rt.backend()
        );
        assert!(after.idle_spin_hits - before.idle_spin_hits >= 200);
    }
}

/// Without idle polling every idle core parks at once, and round trips still complete (each
/// woken through its doorbell).
#[test]
fn without_idle_polling_cores_park_and_still_answer() {
    let b = Runtime::builder()
        .cores(2)
        .pin(false)
        .idle_poll(Duration::ZERO)
        .smp_idle_poll(Duration::ZERO);
    for rt in with_backends(b) {
        let out = rt
            .run_on_all(|core| async move {
                if core == 0 {
                    for i in 0..50u32 {
                        let r = crate::smp::submit_to(1, move || async move {
                            // Now and then an answer takes a while, so core 0 surely has
                            // nothing to do: it must sleep then (a quick answer may land
                            // before its last look, and it rightly skips the sleep).
                            if i % 10 == 0 {
                                crate::time::sleep(Duration::from_millis(2)).await;
                            }
                            i
                        })
                        .await;
                        assert_eq!(r, Ok(i));
                    }
                }
                core_stats().expect("stats").executor
            })
            .expect("run");
        assert!(out.iter().all(|e| e.idle_spins == 0), "{}", rt.backend());
        assert!(out[0].sleeps >= 1);
    }
}

/// `idle_poll` makes every idle period spin (here, a core that never talks to another).
#[test]
fn idle_poll_spins_after_any_busy_period() {
    let b = Runtime::builder()
        .cores(1)
        .pin(false)
        .idle_poll(Duration::from_micros(20));
    for rt in with_backends(b) {
        let stats = rt
            .run_on_one(|| async {
                for _ in 0..3 {
                    crate::time::sleep(Duration::from_millis(1)).await;
                }
                core_stats().expect("stats").executor
            })
            .expect("run");
        assert!(stats.idle_spins >= 3, "{}: {stats:?}", rt.backend());
    }
}
