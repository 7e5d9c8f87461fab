//! Cross-core messaging on the real runtime, both backends: every core sends to every other
//! core at once, many requests in flight, and every message is accounted for.

use std::cell::Cell;
use std::rc::Rc;

use seastar::smp::{self, Sharded};
use seastar::Backend;
use seastar_tests::client::must_runtime;
use seastar_tests::on_both_backends;

/// Round trips per ordered pair of cores in the normal run: a request and a reply each, so
/// the 2-core runtime moves 4 × this many messages.
const ROUND_TRIPS_PER_PAIR: u64 = 500_000;
/// Requests kept in flight by each core.
const IN_FLIGHT: u64 = 64;

fn all_pairs_stress(backend: Backend) {
    let cores = 2;
    let rt = must_runtime(backend, cores);
    let per_core: Vec<(u64, u64, u64)> = rt
        .run_on_all(move |me: usize| async move {
            let n = smp::core_count().expect("smp attached");
            assert_eq!(n, cores);
            assert_eq!(smp::current_core(), Some(me));
            // Each worker task owns a slice of the sequence numbers sent to each peer.
            let mut workers = Vec::new();
            for w in 0..IN_FLIGHT {
                workers.push(seastar::spawn(async move {
                    let mut sum = 0u64;
                    let mut count = 0u64;
                    for peer in (0..n).filter(|&p| p != me) {
                        let mut seq = w;
                        while seq < ROUND_TRIPS_PER_PAIR {
                            let reply = smp::submit_to(peer, move || async move {
                                // Runs on `peer`: prove it, and echo a value derived from
                                // the request so a mixed-up reply shows.
                                let here = smp::current_core().expect("on a core");
                                (here, seq.wrapping_mul(31).wrapping_add(me as u64))
                            })
                            .await
                            .expect("submit_to succeeds");
                            assert_eq!(reply.0, peer, "ran on the wrong core");
                            assert_eq!(reply.1, seq.wrapping_mul(31).wrapping_add(me as u64));
                            sum = sum.wrapping_add(seq);
                            count += 1;
                            seq += IN_FLIGHT;
                        }
                    }
                    (count, sum)
                }));
            }
            let mut count = 0;
            let mut sum = 0u64;
            for h in workers {
                let (c, s) = h.await.expect("worker completes");
                count += c;
                sum = sum.wrapping_add(s);
            }
            let stats = smp::stats().expect("smp attached");
            (count, sum, stats.received)
        })
        .expect("runtime runs");
    let expected_sum: u64 = (0..ROUND_TRIPS_PER_PAIR).sum();
    for (core, (count, sum, received)) in per_core.iter().enumerate() {
        let peers = (cores - 1) as u64;
        assert_eq!(*count, ROUND_TRIPS_PER_PAIR * peers, "core {core} replies");
        assert_eq!(*sum, expected_sum * peers, "core {core} sequence numbers");
        // It received a request from each peer and a reply for each of its own requests.
        assert!(
            *received >= 2 * ROUND_TRIPS_PER_PAIR * peers,
            "core {core} received {received}"
        );
    }
}

/// A core whose own work is done still answers the others.
fn finished_core_keeps_serving(backend: Backend) {
    let rt = must_runtime(backend, 2);
    let out = rt
        .run_on_all(|me: usize| async move {
            if me == 0 {
                return 0u64; // done at once
            }
            // Core 1 asks core 0 after a while: core 0 has long returned.
            seastar::time::sleep(std::time::Duration::from_millis(50)).await;
            smp::submit_to(0, || async { 41u64 + 1 })
                .await
                .expect("core 0 still serves")
        })
        .expect("runtime runs");
    assert_eq!(out, vec![0, 42]);
}

/// `Sharded`: one instance per core, reached from any core, stopped together. Core 0 drives;
/// core 1 only serves (its root future returns at once).
fn sharded_counts_per_core(backend: Backend) {
    let rt = must_runtime(backend, 2);
    let out = rt
        .run_on_all(|me: usize| async move {
            if me != 0 {
                return (0, Vec::new());
            }
            let counters = Sharded::start(|_core| Cell::new(0u64))
                .await
                .expect("start");
            for i in 0..100u64 {
                let core = (i % 3 % 2) as usize;
                counters
                    .invoke_on(core, |c: Rc<Cell<u64>>| async move { c.set(c.get() + 1) })
                    .await
                    .expect("invoke");
            }
            let per_core = counters
                .invoke_on_all(|c: Rc<Cell<u64>>| async move { c.get() })
                .await
                .expect("invoke_on_all");
            let total = counters
                .map_reduce(
                    |c: Rc<Cell<u64>>| async move { c.get() },
                    0u64,
                    |a, b| a + b,
                )
                .await
                .expect("map_reduce");
            counters.stop().await.expect("stop");
            (total, per_core)
        })
        .expect("runtime runs");
    // i % 3 % 2 sends 67 calls to core 0 and 33 to core 1: distinct counts show each call
    // reached the instance of the core it named.
    assert_eq!(out[0], (100, vec![67, 33]));
}

on_both_backends!(
    all_pairs_stress => 180,
    finished_core_keeps_serving,
    sharded_counts_per_core,
);
