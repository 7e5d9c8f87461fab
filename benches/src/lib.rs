//! # seastar-benches: shared code of the benchmark binaries
//!
//! Not an API: the pieces the load generator and the echo servers of this package share, so
//! each binary is only its runtime's accept/echo loop.
//!
//! * [`cli`]: a small `--name value` / `--name=value` flag parser and the servers' common flags
//!   ([`cli::ServerArgs`]: `--port`, `--core`, `--host`, `--threads`, `--backend`).
//! * [`http`]: the request counting and fixed response of the HTTP plaintext servers.
//! * [`affinity`]: pin the calling thread to one CPU (threads it starts inherit the mask).
//! * [`proc_stat`]: a process's CPU time (utime + stime) from `/proc/<pid>/stat`.
//! * [`raw_uring`]: the floor: an echo server on io_uring with no runtime at all.
//! * [`tokio_echo`]: the echo server of both tokio binaries.
//! * [`timer_work`]: the timer workloads of the `timers_1m` bench and the `timer_cost` example.
//! * [`monoio_server`]: flags, runtime, accept loop of the monoio servers.
//! * `sys`: **unsafe** — the libc calls of the modules above; `raw_uring` holds the rest.
//!
//! The echo protocol is the simplest one: the server writes back every byte it reads, on the
//! same connection, in order. The load generator sends fixed-size messages and counts a
//! message done when as many bytes have come back.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod affinity;
pub mod cli;
pub mod http;
pub mod monoio_server;
pub mod proc_stat;
#[allow(unsafe_code)] // the ring, its provided-buffer ring and the SQEs pointing into them
pub mod raw_uring;
pub mod seastar_server;
#[allow(unsafe_code)] // sched_setaffinity, sysconf, setsockopt, shutdown
mod sys;
pub mod timer_work;
pub mod tokio_echo;

use std::io::Write;
use std::net::SocketAddr;

/// Tell whoever started the server (`cargo xtask bench` waits for this line) that it accepts
/// connections: `listening on ADDR`, flushed at once.
pub fn announce(server: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // A closed stdout only loses the announcement; the server still serves.
    let _ = writeln!(out, "listening on {addr} ({server})");
    let _ = out.flush();
}

/// The buffer size the echo servers read with (one read's worth; larger messages take several).
pub const ECHO_BUF: usize = 16 * 1024;
