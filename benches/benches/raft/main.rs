//! Raft side by side: our core (`seastar_kernel::raft`) against raft-rs (tikv's `raft`), both
//! as 3 nodes in one process with in-memory storage and a loop that delivers the messages,
//! under the same closed-loop clients (see `driver.rs` for exactly what a client and a batch
//! are, and `ours.rs` / `peer.rs` for how each API is driven).
//!
//! Two modes, one binary (`harness = false`):
//!
//! * `cargo bench -p seastar-benches --bench raft`: criterion, one benchmark per
//!   (implementation, clients, batch), throughput in commits (elements) per second.
//! * `cargo bench -p seastar-benches --bench raft -- --report [--quick] [--rounds N]`: the
//!   fixed-work measurement that `cargo xtask bench` reports: for every cell, a fresh cluster
//!   per run, a fixed number of commits, the two implementations interleaved in the same
//!   process (A B, then B A in the next round, so drift hits both alike), one JSON line per
//!   run on stdout. A warm-up run of each precedes every cell's measured rounds.

mod driver;
mod ours;
mod peer;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};

use driver::Cluster;

/// raft-rs's `batch_append`: merge a new append into one already queued for the same
/// follower. Ours always sends one append per follower per Ready for everything proposed
/// since the previous one; this is raft-rs's knob for the same batching, so it is on.
const PEER_BATCH_APPEND: bool = true;

const CLIENTS: [u64; 3] = [1, 64, 1024];
const BATCHES: [u64; 2] = [1, 64];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Impl {
    Ours,
    RaftRs,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::RaftRs => "raft-rs",
        }
    }

    /// One measured run on a fresh cluster (set-up and election are not timed).
    fn run(self, clients: u64, batch: u64, commits: u64) -> driver::Measured {
        fn go<C: Cluster>(mut c: C, clients: u64, batch: u64, commits: u64) -> driver::Measured {
            let r = driver::run(&mut c, clients, batch, commits);
            // The cluster (and its log) is dropped outside the timed window.
            black_box(c);
            r
        }
        match self {
            Impl::Ours => go(ours::Ours::new(), clients, batch, commits),
            Impl::RaftRs => go(peer::Peer::new(PEER_BATCH_APPEND), clients, batch, commits),
        }
    }
}

/// Commits per measured run: enough for about a second per run at the full matrix (the
/// 1-client cells pay a full replication round trip per commit, so they get fewer). Quick
/// runs do a tenth, but at least 20,000 so that a run lasts tens of milliseconds: the CPU
/// time from `schedstat` is only as fine as the scheduler tick.
fn commits_for(clients: u64, quick: bool) -> u64 {
    let full = match clients {
        1 => 50_000,
        64 => 300_000,
        _ => 600_000,
    };
    if quick {
        (full / 10).max(20_000)
    } else {
        full
    }
}

fn report(args: &[String]) {
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(if quick { 2 } else { 5 })
        .max(1);
    // Filters for profiling one side or one cell: `--impl ours`, `--clients 1024 --batch 64`.
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let only_impl = value("--impl");
    let num = |name: &str| value(name).and_then(|v| v.parse::<u64>().ok());
    let (only_clients, only_batch) = (num("--clients"), num("--batch"));
    let impls: Vec<Impl> = [Impl::Ours, Impl::RaftRs]
        .into_iter()
        .filter(|i| only_impl.as_deref().is_none_or(|n| n == i.name()))
        .collect();
    for clients in CLIENTS {
        if only_clients.is_some_and(|c| c != clients) {
            continue;
        }
        for batch in BATCHES {
            if only_batch.is_some_and(|b| b != batch) {
                continue;
            }
            let commits = commits_for(clients, quick);
            for &imp in &impls {
                // Warm-up: caches, allocator, page faults of a first large log.
                imp.run(clients, batch, commits / 10);
            }
            for round in 1..=rounds {
                let mut order = impls.clone();
                if round % 2 == 0 {
                    order.reverse();
                }
                for imp in order {
                    let m = imp.run(clients, batch, commits);
                    let secs = m.wall.as_secs_f64();
                    let cpu = m.cpu.map_or(f64::NAN, |c| c.as_secs_f64());
                    let per_cpu = m.commits as f64 / cpu;
                    let (cpu, per_cpu) = if cpu.is_finite() {
                        (format!("{cpu:.6}"), format!("{per_cpu:.1}"))
                    } else {
                        ("null".to_owned(), "null".to_owned())
                    };
                    println!(
                        "{{\"impl\":\"{}\",\"clients\":{clients},\"batch\":{batch},\"round\":{round},\
                         \"commits\":{},\"secs\":{secs:.6},\"commits_per_s\":{:.1},\
                         \"cpu_secs\":{cpu},\"commits_per_cpu_s\":{per_cpu}}}",
                        imp.name(),
                        m.commits,
                        m.commits as f64 / secs
                    );
                }
            }
        }
    }
}

fn criterion_benches() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut g = c.benchmark_group("raft_commit");
    // One element = one committed (and applied) client proposal.
    g.throughput(Throughput::Elements(1));
    for clients in CLIENTS {
        for batch in BATCHES {
            for imp in [Impl::Ours, Impl::RaftRs] {
                let id = BenchmarkId::new(imp.name(), format!("{clients}c_{batch}b"));
                g.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let m = imp.run(clients, batch, iters);
                        // The last cycle may commit more than asked (every free client
                        // proposes at once): charge per commit actually made.
                        m.wall.mul_f64(iters as f64 / m.commits.max(1) as f64)
                    });
                });
            }
        }
    }
    g.finish();
    c.final_summary();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--report") {
        report(&args);
    } else {
        criterion_benches();
    }
}
