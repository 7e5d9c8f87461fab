//! # seastar: the Seastar-RS library
//!
//! A thread-per-core runtime: one OS thread per core, each with its own executor and I/O
//! platform (io_uring, or epoll through mio), nothing shared by default.
//!
//! ```no_run
//! use seastar::net::TcpListener;
//! use seastar::{Backend, Runtime};
//!
//! fn main() -> Result<(), seastar::Error> {
//!     let rt = Runtime::builder().backend(Backend::Auto).build()?;
//!     println!("{} cores on {}", rt.cores(), rt.backend());
//!     rt.run_on_all(|_core| async {
//!         let listener = TcpListener::bind("0.0.0.0:7000".parse().unwrap())?;
//!         loop {
//!             let (stream, _peer) = listener.accept().await?;
//!             seastar::spawn(async move {
//!                 let mut buf = Vec::with_capacity(4096);
//!                 loop {
//!                     buf.clear();
//!                     let (res, b) = stream.read(buf).await;
//!                     buf = b;
//!                     match res {
//!                         Ok(0) | Err(_) => break,
//!                         Ok(_) => {}
//!                     }
//!                     let (res, b) = stream.write_all(buf).await;
//!                     buf = b;
//!                     if res.is_err() {
//!                         break;
//!                     }
//!                 }
//!             })
//!             .detach();
//!         }
//!         #[allow(unreachable_code)]
//!         Ok::<(), std::io::Error>(())
//!     })?;
//!     Ok(())
//! }
//! ```
//!
//! Code map:
//! * [`runtime`]: [`Runtime`], its [`Builder`](runtime::Builder) and [`Backend`]; the
//!   per-core thread body (pin, platform, executor) and how cores stop together on failure.
//! * [`net`]: [`TcpListener`](net::TcpListener), [`TcpStream`](net::TcpStream) and its halves.
//! * [`buf`]: owned buffers ([`IoBuf`](buf::IoBuf), [`IoBufMut`](buf::IoBufMut)) and
//!   [`Slice`](buf::Slice).
//! * [`task`], [`time`]: the kernel's tasks and timers, re-exported.
//! * `io_handle`: the core's I/O handle (`CoreIo`) in a thread local.
//! * `error`: [`Error`] and the one `IoError` → `std::io::Error` conversion.
//! * [`shutdown`]: graceful shutdown: each core's phased coordinator, the cross-core trigger,
//!   SIGINT/SIGTERM ([`runtime::Builder::handle_signals`]).
//! * [`future`]: `select` / `Either` (the kernel's, re-exported).
//! * `sys`: **unsafe** — libc calls and the two unsafe trait impls.
//! * `signal`: **unsafe** — the SIGINT/SIGTERM self-pipe (handler and reader thread).
//!   Nothing else is unsafe.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod buf;
mod error;
mod io_handle;
pub mod net;
pub mod runtime;
pub mod shutdown;
mod signal;
mod sys;

pub use error::Error;
pub use runtime::{Backend, Runtime};
pub use seastar_kernel::task::{spawn, JoinHandle};

/// Tasks on the current core (the kernel's, re-exported). Tasks may be `!Send`; dropping a
/// [`JoinHandle`] detaches the task.
pub mod task {
    pub use seastar_kernel::task::{
        spawn, try_spawn, yield_now, Builder, JoinError, JoinHandle, NoExecutor, YieldNow,
    };
}

/// Future combinators (the kernel's, re-exported): [`future::select`] races two futures.
pub mod future {
    pub use seastar_kernel::future::{select, Either};
}

/// CPU scheduling on the current core (the kernel's, re-exported): scheduling groups with
/// shares, [`sched::need_preempt`] and [`sched::maybe_yield`] for long-running tasks. Groups
/// are per core: create them on each core that uses them.
pub mod sched {
    pub use seastar_kernel::sched::{
        create_scheduling_group, current_scheduling_group, default_scheduling_group, maybe_yield,
        need_preempt, GroupStats, MaybeYield, SchedError, SchedulingGroup, DEFAULT_SHARES,
        MAX_GROUPS, MAX_SHARES,
    };
}

/// Timers on the current core (the kernel's, re-exported).
pub mod time {
    pub use seastar_hal::Instant;
    pub use seastar_kernel::executor::now;
    pub use seastar_kernel::time::{
        interval, interval_at, sleep, sleep_until, timeout, timeout_at, Elapsed, Interval,
        MissedTickBehavior, Sleep, Timeout,
    };
}

/// Cross-core messaging (the kernel's, re-exported): every core of a `run_on_all` call can
/// reach every other through `submit_to`, `invoke_on_all`, `map_reduce` and [`smp::Sharded`].
/// A core whose root future has returned keeps answering until all cores are done.
pub mod smp {
    pub use seastar_kernel::smp::{
        core_count, current_core, invoke_on_all, invoke_on_others, map_reduce, stats, submit_sync,
        submit_to, Sharded, SmpError, SmpStats,
    };
}
