//! Criterion micro-benchmarks of one cross-core round trip, in one group with the references
//! it is measured against: `cargo bench -p seastar-benches --bench cross_core`.
//!
//! * `seastar_submit_to/busy_target`: core 0 awaits `submit_to(1, ..)` of an empty closure,
//!   one at a time; core 1's root future keeps yielding, so its loop never blocks (it still
//!   enters the kernel once per loop iteration to look for I/O). Default settings: an idle
//!   core that just sent or received a cross-core message polls for
//!   `DEFAULT_SMP_IDLE_POLL` (50 µs) before it sleeps, so core 0 spins for its reply.
//! * `seastar_submit_to/idle_target`: the same, core 1 otherwise idle. With the default
//!   settings it lingers (polling) after each request, so the next one finds it awake.
//! * `seastar_submit_sync/{busy,idle}_target`: the same two with `submit_sync(1, ..)` of a
//!   plain closure: no task on the target when nothing else waits to run there.
//! * `seastar_submit_to_parking/{busy,idle}_target`: the same two with `smp_idle_poll(0)`:
//!   every idle core parks at once (an `io_uring_enter` that sleeps), so core 0 sleeps for
//!   each reply and an idle core 1 is woken through its doorbell (an eventfd) for every
//!   request. What a round trip costs when nobody spins.
//! * `cache_line_ping_pong`: the hardware floor: two threads pinned to CPUs 0 and 1 spinning
//!   on one cache line, handing a counter back and forth.
//! * `crossbeam_channel`: two threads pinned to CPUs 0 and 1, a request and a reply over two
//!   `crossbeam_channel::bounded(1)` channels.
//!
//! Needs two CPUs; on a machine others use the figures are noisy (a spinning thread loses its
//! CPU now and then).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use seastar::{Backend, Runtime};
use seastar_benches::affinity::pin_current_thread;
use seastar_kernel::smp::{submit_sync, submit_to};

/// A pinned two-core io_uring runtime; `spin` keeps the default idle polling, otherwise
/// idle cores park at once.
fn two_cores(spin: bool) -> Runtime {
    let mut b = Runtime::builder()
        .cores(2)
        .pin(true)
        .backend(Backend::IoUring);
    if !spin {
        b = b.idle_poll(Duration::ZERO).smp_idle_poll(Duration::ZERO);
    }
    let rt = b.build();
    match rt {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a 2-core seastar runtime: {e}"),
    }
}

/// How core 0 sends its requests.
#[derive(Clone, Copy)]
enum Call {
    /// `submit_to` of a closure returning a future.
    Future,
    /// `submit_sync` of a plain closure.
    Sync,
}

/// One measured way of making round trips.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    /// The runtime with idle polling (else the one that parks at once).
    spin: bool,
    /// Core 1 keeps yielding (else it sleeps).
    busy: bool,
    call: Call,
}

const CASES: [Case; 6] = {
    const fn case(name: &'static str, spin: bool, busy: bool, call: Call) -> Case {
        Case {
            name,
            spin,
            busy,
            call,
        }
    }
    [
        case("seastar_submit_to/busy_target", true, true, Call::Future),
        case("seastar_submit_to/idle_target", true, false, Call::Future),
        case("seastar_submit_sync/busy_target", true, true, Call::Sync),
        case("seastar_submit_sync/idle_target", true, false, Call::Sync),
        case(
            "seastar_submit_to_parking/busy_target",
            false,
            true,
            Call::Future,
        ),
        case(
            "seastar_submit_to_parking/idle_target",
            false,
            false,
            Call::Future,
        ),
    ]
};

/// `iters` sequential round trips from core 0 to core 1; core 1 yields (`busy`) or sleeps
/// until core 0 is done.
fn submit_to_round_trips(rt: &Runtime, iters: u64, busy: bool, call: Call) -> Duration {
    submit_to_batches(rt, 1, iters, busy, call)
}

/// `batches` batches of `per_batch` round trips as in [`submit_to_round_trips`]; the fastest
/// batch's time.
fn submit_to_batches(
    rt: &Runtime,
    batches: u64,
    per_batch: u64,
    busy: bool,
    call: Call,
) -> Duration {
    let done = Arc::new(AtomicBool::new(false));
    let out = rt.run_on_all(|core| {
        let done = done.clone();
        async move {
            if core == 0 {
                let mut elapsed = Duration::MAX;
                for _ in 0..batches {
                    let start = Instant::now();
                    for i in 0..per_batch {
                        let r = match call {
                            Call::Future => submit_to(1, move || async move { black_box(i) }),
                            Call::Sync => submit_sync(1, move || black_box(i)),
                        };
                        black_box(r.await.ok());
                    }
                    elapsed = elapsed.min(start.elapsed());
                }
                done.store(true, Ordering::Release);
                // Wake core 1 if it is parked.
                let _ = submit_to(1, || async {}).await;
                elapsed
            } else {
                while !done.load(Ordering::Acquire) {
                    if busy {
                        seastar::task::yield_now().await;
                    } else {
                        seastar::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Duration::ZERO
            }
        }
    });
    match out {
        Ok(v) => v[0],
        Err(e) => panic!("seastar runtime failed: {e}"),
    }
}

#[repr(align(128))]
struct Line(AtomicU64);

fn ping_pong(iters: u64) -> Duration {
    ping_pong_batches(1, iters)
}

/// `batches` batches of `per_batch` ping-pong round trips; the fastest batch's time.
fn ping_pong_batches(batches: u64, per_batch: u64) -> Duration {
    let iters = batches * per_batch;
    let line = Line(AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = pin_current_thread(1);
            // Answer every odd value with the next even one.
            for i in 0..iters {
                while line.0.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                line.0.store(2 * i + 2, Ordering::Release);
            }
        });
        // Not on the calling thread: its CPU mask must stay whole for the runtime.
        let a = s.spawn(|| {
            let _ = pin_current_thread(0);
            let mut best = Duration::MAX;
            for b in 0..batches {
                let start = Instant::now();
                for i in b * per_batch..(b + 1) * per_batch {
                    line.0.store(2 * i + 1, Ordering::Release);
                    while line.0.load(Ordering::Acquire) != 2 * i + 2 {
                        std::hint::spin_loop();
                    }
                }
                best = best.min(start.elapsed());
            }
            best
        });
        a.join().unwrap_or_default()
    })
}

fn crossbeam_round_trips(iters: u64) -> Duration {
    let (req_tx, req_rx) = crossbeam_channel::bounded::<u64>(1);
    let (rep_tx, rep_rx) = crossbeam_channel::bounded::<u64>(1);
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = pin_current_thread(1);
            while let Ok(v) = req_rx.recv() {
                if rep_tx.send(v).is_err() {
                    break;
                }
            }
        });
        let a = s.spawn(move || {
            let _ = pin_current_thread(0);
            let start = Instant::now();
            for i in 0..iters {
                if req_tx.send(i).is_err() {
                    break;
                }
                black_box(rep_rx.recv().ok());
            }
            start.elapsed()
        });
        a.join().unwrap_or_default()
    })
}

/// Best-of-batches round trips, printed before the criterion lines: on a machine others use,
/// a spinning thread loses its CPU now and then and the means move a lot; the fastest of
/// many short batches shows what the code costs when it is not interrupted. Ratios are to
/// the ping-pong floor of the same run.
fn print_best_of_batches(spinning: &Runtime, parking: &Runtime) {
    const BATCHES: u64 = 300;
    const PER_BATCH: u64 = 100;
    let per = |d: Duration, n: u64| d.as_nanos() as f64 / n as f64;
    let floor = per(ping_pong_batches(BATCHES, PER_BATCH), PER_BATCH);
    eprintln!("best of {BATCHES} batches of {PER_BATCH} round trips (ns per round trip):");
    eprintln!("  cache_line_ping_pong                    {floor:>10.0}");
    for case in CASES {
        let (rt, n) = if case.spin {
            (spinning, PER_BATCH)
        } else {
            // A parking round trip takes tens of microseconds.
            (parking, 10)
        };
        let ns = per(
            submit_to_batches(rt, BATCHES / 3, n, case.busy, case.call),
            n,
        );
        let name = case.name;
        eprintln!("  {name:<39} {ns:>10.0}  {:>7.1}x floor", ns / floor);
    }
}

fn cross_core(c: &mut Criterion) {
    let spinning = two_cores(true);
    let parking = two_cores(false);
    print_best_of_batches(&spinning, &parking);
    let mut g = c.benchmark_group("cross_core_round_trip");
    g.throughput(Throughput::Elements(1));
    for case in CASES {
        let rt = if case.spin { &spinning } else { &parking };
        g.bench_function(case.name, |b| {
            b.iter_custom(|iters| submit_to_round_trips(rt, iters, case.busy, case.call))
        });
    }
    g.bench_function("cache_line_ping_pong", |b| b.iter_custom(ping_pong));
    g.bench_function("crossbeam_channel", |b| {
        b.iter_custom(crossbeam_round_trips)
    });
    g.finish();
}

criterion_group!(benches, cross_core);
criterion_main!(benches);
