//! A fixed amount of executor work for counting instructions per task poll with callgrind:
//! one core (mio backend, which valgrind runs everywhere) with the stall watchdog on, where
//! one spawned task yields `N` times (each yield is one task poll through the scheduler).
//!
//! ```text
//! cargo build --release -p seastar --example poll_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/poll_cost 100000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/poll_cost 200000
//! ```
//!
//! The difference of the two totals over 100,000 is the instructions per poll (start-up and
//! shutdown cancel out).

use std::hint::black_box;

use seastar::{Backend, Runtime};

fn main() {
    let yields: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(n)) => n,
        _ => 100_000,
    };
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
        let task = seastar::spawn(async move {
            for i in 0..yields {
                black_box(i);
                seastar::task::yield_now().await;
            }
        });
        task.await.is_ok()
    });
    match out {
        Ok(true) => {}
        Ok(false) => panic!("the yielding task failed"),
        Err(e) => panic!("seastar runtime failed: {e}"),
    }
}
