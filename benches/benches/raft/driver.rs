//! The shared driver: one closed loop of clients over a 3-node cluster, identical for both
//! implementations. Each side implements [`Cluster`]; everything that is timed beyond the
//! Raft cores themselves (payload allocation, the client bookkeeping, the delivery queue) is
//! this file's and so is the same code for both.

use std::time::{Duration, Instant};

/// Bytes of application data per proposal.
pub const PAYLOAD: usize = 128;

/// The settings both sides are configured with (where the other has the same knob).
pub const ELECTION_TICK: usize = 10;
pub const HEARTBEAT_TICK: usize = 1;
/// Bytes of entries per append message (raft-rs defaults to one entry per message).
pub const MAX_SIZE_PER_MSG: u64 = 1024 * 1024;
/// Append messages in flight per follower.
pub const MAX_INFLIGHT_MSGS: usize = 256;
/// Bytes of committed entries per Ready.
pub const MAX_COMMITTED_SIZE_PER_READY: u64 = 16 * 1024 * 1024;

/// A 3-node in-memory cluster whose node 1 is the elected leader.
pub trait Cluster {
    /// The leader proposes `batch` (one or more payloads) in a single call.
    fn propose(&mut self, batch: Vec<Vec<u8>>);
    /// One cycle: every node (in id order) with a Ready persists its entries and hard
    /// state in memory, applies its committed entries and acknowledges it, queueing the
    /// messages it may send; then every queued message is delivered (stepped) in FIFO order.
    /// Returns the number of client entries the leader applied in this cycle.
    fn cycle(&mut self) -> u64;
}

/// Applying an entry: identical, trivial state-machine work on both sides (fold the bytes'
/// length and first byte into a digest), so that the data is touched once as a real state
/// machine would.
#[inline]
pub fn apply(digest: &mut u64, data: &[u8]) {
    *digest = digest
        .wrapping_mul(31)
        .wrapping_add(data.len() as u64 + u64::from(data.first().copied().unwrap_or(0)));
}

/// Client payloads: the client's number in the first bytes, the rest filler.
fn payload(client: u64) -> Vec<u8> {
    let mut v = vec![0xA5u8; PAYLOAD];
    v[..8].copy_from_slice(&client.to_le_bytes());
    v
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Client entries applied on the leader.
    pub commits: u64,
    /// Wall-clock time.
    pub wall: Duration,
    /// Time this thread was on a CPU (`/proc/thread-self/schedstat`), when available. On a
    /// shared machine this leaves out the time the run waited for a CPU, so it is the
    /// steadier figure of the two. The kernel updates it at scheduler ticks and switches, so
    /// it is off by up to a tick (1-4 ms): runs are made long enough for that not to matter.
    pub cpu: Option<Duration>,
}

/// Nanoseconds the calling thread has run on a CPU, from the first field of
/// `/proc/thread-self/schedstat` (no `unsafe` and no `libc` call needed).
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = s.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs `clients` closed-loop clients until at least `commits` client entries are applied on
/// the leader.
///
/// `clients` is the number of proposals kept outstanding: a client proposes again once its
/// previous proposal is applied. At the start of every cycle the free clients propose, grouped
/// `batch` per propose call (the last group may be smaller; with fewer free clients than
/// `batch`, one smaller call). So `batch` is the number of proposals per propose call, and
/// every proposal made between two cycles lands in the same Ready.
pub fn run<C: Cluster>(c: &mut C, clients: u64, batch: u64, commits: u64) -> Measured {
    let mut free = clients;
    let mut done = 0u64;
    let mut next_client = 0u64;
    let cpu_start = thread_cpu();
    let start = Instant::now();
    while done < commits {
        while free > 0 {
            let k = free.min(batch);
            let group: Vec<Vec<u8>> = (0..k)
                .map(|_| {
                    next_client = (next_client + 1) % clients;
                    payload(next_client)
                })
                .collect();
            c.propose(group);
            free -= k;
        }
        let applied = c.cycle();
        done += applied;
        free += applied;
    }
    let wall = start.elapsed();
    let cpu = match (cpu_start, thread_cpu()) {
        (Some(a), Some(b)) if b > a => Some(b - a),
        _ => None,
    };
    Measured {
        commits: done,
        wall,
        cpu,
    }
}
