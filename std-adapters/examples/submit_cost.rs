//! A fixed number of cross-core round trips for counting instructions with callgrind: two
//! cores (mio backend, which valgrind runs everywhere); core 0 awaits `submit_to(1, ..)` of
//! an empty closure `N` times, one at a time, while core 1 is idle (`idle`, the default) or
//! keeps yielding (`busy`). `park` is `idle` without idle polling: every wait is a blocking
//! park, so nothing spins and the total over `N` is the instructions of a round trip
//! (start-up and shutdown aside: take the difference of two `N`). A third argument `sync`
//! sends a plain closure with `submit_sync` instead (no task on the target). `spin` is `idle` with a
//! 10 s idle-poll window and task quota, so that under valgrind (where time runs slowly) both cores spin
//! as they do natively; the waiting is then all in `Executor::spin`, and a core's total
//! minus that function's inclusive cost, plus that of `CoreSmp::serve` (the messages the
//! spin serves itself), is its work. Use `--separate-threads=yes` to get one count per
//! core. An idle core 1 waits for a stop message from core 0, not on a timer, so nothing
//! but the round trips (and start and stop) varies with `N` or with how slowly valgrind ran.
//!
//! ```text
//! cargo build --release -p seastar --example submit_cost
//! valgrind --tool=callgrind target/release/examples/submit_cost 2000 idle
//! valgrind --tool=callgrind target/release/examples/submit_cost 2000 spin sync
//! callgrind_annotate --inclusive=yes callgrind.out.<pid>
//! ```
//!
//! Valgrind runs the threads one at a time, so the spinning of a waiting core is counted
//! too: read the inclusive cost of the loop's steps (`CoreSmp::poll`, `Executor::run_batch`,
//! `CoreSmp::flush_all`, ...) per round trip rather than the total.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use seastar::{Backend, Runtime};
use seastar_kernel::sync::oneshot;

thread_local! {
    /// Core 1's stop signal: whether it came, and the sender of the channel core 1 waits on.
    static STOP: RefCell<(bool, Option<oneshot::Sender<()>>)> = const { RefCell::new((false, None)) };
}

/// Runs on core 1: tell its root future to return.
fn stop_here() {
    STOP.with_borrow_mut(|(stopped, slot)| {
        *stopped = true;
        if let Some(tx) = slot.take() {
            let _ = tx.send(());
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let trips: u64 = match args.next().map(|a| a.parse()) {
        Some(Ok(n)) => n,
        _ => 2_000,
    };
    let mode = args.next();
    let busy = mode.as_deref() == Some("busy");
    let sync = args.next().as_deref() == Some("sync");
    let mut builder = Runtime::builder().cores(2).pin(false).backend(Backend::Mio);
    match mode.as_deref() {
        Some("park") => builder = builder.smp_idle_poll(Duration::ZERO),
        // Under valgrind time runs many times slower: a long window keeps both cores
        // spinning, as they do natively, instead of parking when the default window ends.
        // The quota too: a park is due once per quota even while work keeps coming.
        Some("spin") => {
            builder = builder
                .smp_idle_poll(Duration::from_secs(10))
                .task_quota(Duration::from_secs(10));
        }
        _ => {}
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => panic!("cannot start a seastar runtime: {e}"),
    };
    let done = Arc::new(AtomicBool::new(false));
    let out = rt.run_on_all(|core| {
        let done = done.clone();
        async move {
            if core == 0 {
                for i in 0..trips {
                    let r = if sync {
                        seastar::smp::submit_sync(1, move || black_box(i))
                    } else {
                        seastar::smp::submit_to(1, move || async move { black_box(i) })
                    };
                    black_box(r.await.ok());
                }
                done.store(true, Ordering::Release);
                // Stop core 1 (and wake it if it is parked).
                let _ = seastar::smp::submit_sync(1, stop_here).await;
            } else if busy {
                while !done.load(Ordering::Acquire) {
                    seastar::task::yield_now().await;
                }
            } else {
                // No timer: a timer firing now and then would show in the count, more often
                // the slower the run.
                let (tx, rx) = oneshot::channel();
                let stopped = STOP.with_borrow_mut(|(stopped, slot)| {
                    *slot = Some(tx);
                    *stopped
                });
                if !stopped {
                    let _ = rx.await;
                }
            }
        }
    });
    if let Err(e) = out {
        panic!("seastar runtime failed: {e}");
    }
}
