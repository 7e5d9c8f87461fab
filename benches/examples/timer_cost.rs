//! A fixed amount of timer work for counting instructions per timer with callgrind, ours next
//! to tokio's: the loops of the `timers_1m` group in `benches/benches/kernel.rs`
//! (`seastar_benches::timer_work`).
//!
//! `timer_cost seastar|tokio|wheel cancel|fire N [ROUNDS]`:
//!
//! * `cancel`: create `N` boxed sleeps (deadlines spread over 1 s to 2 s ahead), poll each once
//!   (registers its timer), drop them all.
//! * `fire`: create `N` boxed sleeps due within about 1 ms, each polled (registered) right
//!   after its creation, sleep 2 ms past them all, poll each once more (all must be ready).
//! * `wheel`: our `TimerWheel` alone, as the bench's `seastar_wheel`.
//!
//! Ours runs on one core with the mio backend (which valgrind runs everywhere), tokio on its
//! current-thread runtime on the main thread while ours exists (as in the bench) and
//! `unconstrained` (its cooperative budget would otherwise skip most final polls).
//!
//! `ROUNDS` (default 1) repeats the work on the same runtime, as criterion's iterations do.
//! Run it with 2 and 3 rounds: the difference of the two totals over `N` is the instructions
//! per timer in the steady state (start-up, shutdown and the first round's growth of the heap
//! and the wheel cancel out).
//!
//! ```text
//! cargo build --release -p seastar-benches --example timer_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/timer_cost seastar cancel 100000 2
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/timer_cost seastar cancel 100000 3
//! ```

use std::hint::black_box;

use seastar::{Backend, Runtime};
use seastar_benches::timer_work;
use seastar_kernel::time::wheel::TimerWheel;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: timer_cost seastar|tokio|wheel cancel|fire N [ROUNDS]";
    let (Some(runtime), Some(work)) = (args.get(1), args.get(2)) else {
        panic!("{usage}");
    };
    let n: u64 = match args.get(3).map(|a| a.parse()) {
        Some(Ok(n)) => n,
        _ => 100_000,
    };
    let rounds: u64 = match args.get(4).map(|a| a.parse()) {
        Some(Ok(r)) => r,
        _ => 1,
    };
    let fire = match work.as_str() {
        "cancel" => false,
        "fire" => true,
        _ => panic!("{usage}"),
    };
    let ready = match runtime.as_str() {
        "seastar" => {
            let rt = match Runtime::builder()
                .cores(1)
                .pin(false)
                .backend(Backend::Mio)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => panic!("cannot start a seastar runtime: {e}"),
            };
            let out = rt.run_on_one(move || async move {
                let mut ready = 0;
                for _ in 0..rounds {
                    ready += if fire {
                        timer_work::insert_fire(n, seastar::time::sleep).await
                    } else {
                        timer_work::insert_cancel(n, seastar::time::sleep)
                    };
                }
                ready
            });
            match out {
                Ok(ready) => ready,
                Err(e) => panic!("seastar runtime failed: {e}"),
            }
        }
        "wheel" => {
            let mut keys = Vec::new();
            (0..rounds)
                .map(|_| {
                    let mut wheel = TimerWheel::new(seastar_hal::Instant::ZERO);
                    timer_work::wheel_alone(&mut wheel, &mut keys, n, fire) as usize
                })
                .sum()
        }
        "tokio" => {
            // As in the criterion bench, where our runtime's threads exist while tokio runs on
            // the main thread: the allocator then takes its multi-threaded paths for both.
            // (A failure to start it only changes that, so it is not checked.)
            let _ours = Runtime::builder()
                .cores(1)
                .pin(false)
                .backend(Backend::Mio)
                .build();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => panic!("cannot start a tokio runtime: {e}"),
            };
            // `unconstrained`: tokio's cooperative budget would make all but about 128 of the
            // final polls return `Pending` without looking at their timers.
            rt.block_on(tokio::task::unconstrained(async move {
                let mut ready = 0;
                for _ in 0..rounds {
                    ready += if fire {
                        timer_work::insert_fire(n, tokio::time::sleep).await
                    } else {
                        timer_work::insert_cancel(n, tokio::time::sleep)
                    };
                }
                ready
            }))
        }
        _ => panic!("{usage}"),
    };
    black_box(ready);
    let expected = if fire { (n * rounds) as usize } else { 0 };
    assert_eq!(ready, expected, "sleeps ready at their last poll");
}
