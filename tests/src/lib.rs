//! Integration tests of Seastar-RS over the real HALs (io_uring and mio), loopback only, and
//! the helpers they share. Every scenario runs on both backends
//! ([`on_both_backends!`] makes `uring::name` and `mio::name` tests) and under a watchdog, so
//! a hang fails the test instead of the run.
//!
//! Test map (`tests/tests/`):
//!
//! | file | what it proves |
//! |------|----------------|
//! | `echo.rs` | 64 connections x 1,000 round trips (1 B..=64 KiB, every byte checked) ours-to-ours, std clients → our server, our client → std server; 100 MiB with an FNV-1a receipt both ways; full duplex on split halves; IPv6 loopback |
//! | `many_connections.rs` | 1,000 connections open at once (proved on the other side), each echo checked; one core per side; io_uring with an 8-entry ring, without `DEFER_TASKRUN`, with emulated multishot accept |
//! | `tcp_semantics.rs` | half-close both ways with each side ours; `ConnectionRefused`; peer reset → `ConnectionReset` (pending read, read after data, write) then `BrokenPipe`; our `SO_LINGER` 0 close resets the peer; zero-length operations; idle wake-up latency, sticky EOF |
//! | `misbehave.rs` | the server survives: a reset mid-message, a client that never reads (backpressure; others served meanwhile), a burst of resets before accept, a panicking handler, a busy handler |
//! | `cancellation.rs` | dropped in-flight read / accept / connect / write: nothing lost, no freed memory sent, everything still usable |
//! | `pooled_recv.rs` | `recv()` into the core's buffer pool: 32 connections × 1 B..=64 KiB echoed zero-copy, every byte checked; pool exhaustion (200 connections holding buffers) and recovery; a slow consumer paused at its hold limit without starving 16 others; EOF; `try_recv`; dropped `recv` futures and 64 dropped streams with receives in flight leak no buffer; `Builder::recv_pool` sizes are used (16 × 1 KiB) and unusable ones refused |
//! | `hold_limit.rs` | the hold-limit trap: a task keeping every `RecvBuf` gets `QuotaExceeded` from `recv` instead of a silent hang (`try_recv`: `Ok(None)`), and after dropping to 16 reads the rest in order; buffers in an unfinished write-behind send keep `recv` waiting (no error) once the task holds 16, and it completes when the send does |
//! | `buffers.rs` | the owned-buffer contract: read fills from the start within capacity, `Slice` windows, `writev_all` with 3,000 buffers, `writev` over `UIO_MAXIOV` |
//! | `split_halves.rs` | `into_split` / `reunite`, dropping one half, `shutdown(Read)` wakes a pending read |
//! | `listener.rs` | several tasks accepting on one listener, dropping a listener with queued connections, `SO_REUSEPORT` across runtimes |
//! | `resources.rs` | descriptors and threads return to their baseline after many runtime cycles |
//! | `runtime_failures.rs` | a panicking core ends `run_on_all` promptly, even with another core blocked in `accept` |
//! | `shutdown.rs` | graceful shutdown under load from 6 clients: every accepted request answered in full, none cut, new connections refused while a request is still in flight, a clean report; a stuck connection named at the deadline; SIGTERM to a child process (this binary re-run) drains it and it exits 0 |
//!
//! Helpers, all deterministic and bounded in time:
//!
//! - [`rng`]: a seeded SplitMix64 generator (no `rand` dependency), so a failing run replays.
//! - [`payload`]: data whose every byte the receiver can check: a random [`payload::Pool`]
//!   that messages are slices of, and an endless [`payload::PatternStream`] for bulk transfers.
//! - [`checksum`]: FNV-1a 64, streaming.
//! - [`proto`]: the small protocols (round trips, bulk with a receipt, framed messages) for
//!   `std::net` peers; [`client`] has the same for ours.
//! - [`stdnet`]: blocking `std::net` peers (clients and small servers) with timeouts on every
//!   operation, an abortive close (`SO_LINGER` 0 → RST), a refused address, a listener with a
//!   full accept queue.
//! - [`watchdog`]: a per-test deadline: the body runs in its own thread and the test fails
//!   (instead of hanging) when it is exceeded.
//! - [`limits`]: raise `RLIMIT_NOFILE` for the many-connections tests.
//! - [`server`] / [`client`]: run a Seastar-RS server on a runtime in a background thread (with
//!   a readiness signal, a stop, and a report of how every connection ended), build runtimes,
//!   and owned-buffer I/O loops (`read_exact`, `read_to_end`, ...) over
//!   `seastar::net::TcpStream`.
//!
//! All sockets are on loopback (`127.0.0.1`, once `[::1]`).

pub mod checksum;
pub mod client;
pub mod limits;
pub mod payload;
pub mod proto;
pub mod rng;
pub mod server;
pub mod stdnet;
pub mod watchdog;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use seastar::Backend;

/// `127.0.0.1:0`: the only address the tests bind.
pub const LOOPBACK_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Timeout of every blocking socket operation of the `std::net` peers. Generous: the VM has two
/// cores shared by several test binaries, and debug builds are slow.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Default deadline of a whole test (see [`watchdog::with_deadline`]).
pub const TEST_DEADLINE: Duration = Duration::from_secs(90);

/// (buffers in the current core's receive pools, of which free), from the backend's counters;
/// `(0, 0)` off a runtime core.
pub fn pool_counts() -> (u64, u64) {
    match seastar::runtime::io_stats() {
        Some(seastar::runtime::IoStats::Uring(s)) => (s.pool_buffers, s.pool_buffers_free),
        Some(seastar::runtime::IoStats::Mio(s)) => (s.pool_buffers, s.pool_buffers_free),
        _ => (0, 0),
    }
}

/// Generates one `#[test]` per backend for each listed scenario.
///
/// Each scenario is a function `fn name(backend: Backend)` in the including file; the macro
/// creates `uring::name` (io_uring) and `mio::name` (mio), each run under the default
/// [`watchdog::with_deadline`] (or the given one: `name => secs`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident $(=> $secs:expr)?),* $(,)?) => {
        mod uring {
            $(
                #[test]
                fn $name() {
                    $crate::on_both_backends!(@run $name, $crate::Backend::IoUring $(, $secs)?);
                }
            )*
        }
        mod mio {
            $(
                #[test]
                fn $name() {
                    $crate::on_both_backends!(@run $name, $crate::Backend::Mio $(, $secs)?);
                }
            )*
        }
    };
    (@run $name:ident, $backend:expr) => {
        $crate::watchdog::with_deadline(
            concat!(module_path!(), "::", stringify!($name)),
            $crate::TEST_DEADLINE,
            || super::$name($backend),
        )
    };
    (@run $name:ident, $backend:expr, $secs:expr) => {
        $crate::watchdog::with_deadline(
            concat!(module_path!(), "::", stringify!($name)),
            ::std::time::Duration::from_secs($secs),
            || super::$name($backend),
        )
    };
}
