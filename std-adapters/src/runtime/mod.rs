//! The runtime: how many cores, pinned or not, on which backend; and running a closure on
//! every core (Seastar's app template) or on one.
//!
//! ```no_run
//! use seastar::{Backend, Runtime};
//!
//! let rt = Runtime::builder().cores(2).pin(false).backend(Backend::Auto).build()?;
//! println!("running on {} ({})", rt.backend(), rt.backend_reason());
//! let per_core: Vec<usize> = rt.run_on_all(|core| async move { core * 10 })?;
//! assert_eq!(per_core, [0, 10]);
//! # Ok::<(), seastar::Error>(())
//! ```
//!
//! Each core is an OS thread with its own platform (io_uring ring or epoll instance), created
//! on that thread, and its own executor. The closure given to [`Runtime::run_on_all`] runs on
//! each core's thread and returns the core's root future, which need not be `Send`: spawn
//! tasks from it with [`crate::spawn`]. The call returns when every core's future has, with
//! their outputs in core order.
//!
//! Each core also gets a graceful-shutdown coordinator ([`crate::shutdown::current`]); the
//! runtime's [`ShutdownHandle`] (and, with [`Builder::handle_signals`], SIGINT/SIGTERM)
//! triggers it on every core, and each core then runs its phases within
//! [`Builder::shutdown_deadline`] each.

use std::future::Future;
use std::time::Duration;

pub use seastar_hal_linux::UringConfig;

mod backend;
mod core_thread;
mod stats;
mod watchdog;

pub use self::backend::{Backend, BACKEND_ENV};
pub use self::stats::{core_stats, CoreStats};
use crate::error::Error;
pub use crate::io_handle::{
    current_backend, current_core, io_stats, IoStats, DEFAULT_RECV_BUF_SIZE,
    DEFAULT_RECV_POOL_BUFFERS,
};
use crate::io_handle::{RecvPoolSize, MAX_RECV_POOL_BUFFERS};
use crate::shutdown::{self, ShutdownHandle};
use crate::sys;
pub use seastar_kernel::executor::{
    ExecutorStats, GroupStats, StallReport, DEFAULT_SMP_IDLE_POLL, DEFAULT_STALL_THRESHOLD,
    DEFAULT_TASK_QUOTA,
};

/// Settings for a [`Runtime`]; from [`Runtime::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    cores: Option<usize>,
    pin: bool,
    backend: Backend,
    uring: UringConfig,
    handle_signals: bool,
    shutdown_deadline: Duration,
    sched: SchedSettings,
    recv_pool: RecvPoolSize,
}

/// CPU scheduling settings of every core (see [`Builder::task_quota`],
/// [`Builder::stall_threshold`], [`Builder::stall_watchdog`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SchedSettings {
    pub(crate) task_quota: Duration,
    pub(crate) stall_threshold: Duration,
    pub(crate) watchdog: bool,
    pub(crate) idle_poll: Duration,
    pub(crate) smp_idle_poll: Duration,
}

impl Default for SchedSettings {
    fn default() -> Self {
        SchedSettings {
            task_quota: DEFAULT_TASK_QUOTA,
            stall_threshold: DEFAULT_STALL_THRESHOLD,
            watchdog: true,
            idle_poll: Duration::ZERO,
            smp_idle_poll: DEFAULT_SMP_IDLE_POLL,
        }
    }
}

/// Default of [`Builder::shutdown_deadline`].
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

impl Default for Builder {
    fn default() -> Self {
        Builder {
            cores: None,
            pin: true,
            backend: Backend::Auto,
            uring: UringConfig::default(),
            handle_signals: false,
            shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
            sched: SchedSettings::default(),
            recv_pool: RecvPoolSize::default(),
        }
    }
}

impl Builder {
    /// The defaults: every CPU this process may use, pinned, backend [`Backend::Auto`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cores (threads). Default: every CPU this process may run on.
    pub fn cores(mut self, cores: usize) -> Self {
        self.cores = Some(cores);
        self
    }

    /// Pin core `i` to the `i`-th CPU this process may run on. Default on. With pinning,
    /// asking for more cores than CPUs is an error.
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// The I/O backend. Default [`Backend::Auto`].
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Ring settings for the io_uring backend (ignored on mio).
    pub fn uring_config(mut self, config: UringConfig) -> Self {
        self.uring = config;
        self
    }

    /// Let SIGINT and SIGTERM start a graceful shutdown of every core while this runtime runs
    /// (see [`crate::shutdown`]); a second signal ends the process. Default off: the signals
    /// keep their default effect. The handler is installed for the whole process at the first
    /// run that asks for it and stays; outside such runs a signal takes its default effect.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.handle_signals = on;
        self
    }

    /// How long each shutdown phase of a core waits for its registrations before the next
    /// phase starts anyway (see [`crate::shutdown`]). Default [`DEFAULT_SHUTDOWN_DEADLINE`].
    pub fn shutdown_deadline(mut self, per_phase: Duration) -> Self {
        self.shutdown_deadline = per_phase;
        self
    }

    /// How long tasks may run back to back before a core looks at I/O and timers again
    /// (Seastar's task quota; `seastar_kernel::sched::need_preempt` turns true after it).
    /// Default [`DEFAULT_TASK_QUOTA`] (500 µs); must not be zero.
    pub fn task_quota(mut self, quota: Duration) -> Self {
        self.sched.task_quota = quota;
        self
    }

    /// A task poll that holds its core at least this long is a stall: the kernel logs a
    /// warning with the task's name, group and duration when the poll returns and counts it
    /// ([`CoreStats`]); the watchdog ([`Builder::stall_watchdog`]) reports it while it is
    /// still running. Default [`DEFAULT_STALL_THRESHOLD`] (25 ms); `Duration::MAX` turns
    /// both off.
    pub fn stall_threshold(mut self, threshold: Duration) -> Self {
        self.sched.stall_threshold = threshold;
        self
    }

    /// Run a watchdog thread that reports a stalled task while it holds its core (a task
    /// stuck in a blocking call never returns for the kernel to report it). Default on.
    pub fn stall_watchdog(mut self, on: bool) -> Self {
        self.sched.watchdog = on;
        self
    }

    /// How long an idle core keeps polling (cross-core rings, wakes, completions that need no
    /// system call, timers) before it sleeps in the kernel, after every busy period: Seastar's
    /// idle poll time. Lower latency for everything (no sleep/wake system calls while traffic
    /// keeps coming), at the price of a busy CPU: a server idle for longer than the window
    /// still sleeps, but one with a message every few tens of microseconds spins between
    /// them. Default zero (see [`Builder::smp_idle_poll`] for the cross-core case).
    pub fn idle_poll(mut self, window: Duration) -> Self {
        self.sched.idle_poll = window;
        self
    }

    /// How long an idle core keeps polling after a busy period that sent or received a
    /// cross-core message (a `submit_to` awaiting its reply; a core serving requests from
    /// others), before it sleeps. The larger of this and [`Builder::idle_poll`] applies.
    /// Default [`DEFAULT_SMP_IDLE_POLL`] (50 µs, about what a sleep and its wake-up cost, so
    /// spinning never costs more than twice the better choice); cores that never talk to
    /// each other never spin. Zero parks at once (each cross-core round trip to an idle
    /// core then pays two wake-ups).
    pub fn smp_idle_poll(mut self, window: Duration) -> Self {
        self.sched.smp_idle_poll = window;
        self
    }

    /// Size of each core's receive pool, the buffers [`TcpStream::recv`] returns: `buffers`
    /// of `buffer_size` bytes (the most one `recv()` returns). Each core creates its pool on
    /// its first `recv()`; memory becomes resident only as buffers get used. `buffers` must be
    /// a power of two from 1 to 32,768 (io_uring's buffer ring), `buffer_size` at least 1.
    /// Default [`DEFAULT_RECV_POOL_BUFFERS`] × [`DEFAULT_RECV_BUF_SIZE`]. A receive holds
    /// at most 32 buffers before it is paused (resumed at 16), so a pool of `n` buffers
    /// serves `n / 32` connections that do not consume before others see an empty pool. A
    /// task that keeps more than 16 of its stream's buffers while that receive is paused gets
    /// `io::ErrorKind::QuotaExceeded` from `recv()` instead of a wait that would never end
    /// (see [`TcpStream::recv`]); the buffer size bounds the bytes a stream holds at its
    /// limit (32 × 16 KiB = 512 KiB by default).
    ///
    /// [`TcpStream::recv`]: crate::net::TcpStream::recv
    pub fn recv_pool(mut self, buffers: u16, buffer_size: u32) -> Self {
        self.recv_pool = RecvPoolSize {
            buffers,
            buffer_size,
        };
        self
    }

    /// Check the settings, resolve [`Backend::Auto`] (probing io_uring; the environment
    /// variable [`BACKEND_ENV`] can override it) and find the CPUs to pin to. No thread is
    /// started until [`Runtime::run_on_all`] or [`Runtime::run_on_one`].
    pub fn build(self) -> Result<Runtime, Error> {
        let env = std::env::var(BACKEND_ENV).ok();
        self.build_with_env(env.as_deref())
    }

    fn build_with_env(self, env: Option<&str>) -> Result<Runtime, Error> {
        let allowed = match sys::allowed_cpus() {
            Ok(cpus) if !cpus.is_empty() => Some(cpus),
            Ok(_) => None,
            Err(e) => {
                log::warn!("seastar: cannot read this process's CPU affinity: {e}");
                None
            }
        };
        let available = match &allowed {
            Some(cpus) => cpus.len(),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let cores = self.cores.unwrap_or(available);
        if cores == 0 {
            return Err(Error::Config(
                "the number of cores must be at least 1".into(),
            ));
        }
        if self.sched.task_quota.is_zero() {
            return Err(Error::Config("the task quota must not be zero".into()));
        }
        let pool = self.recv_pool;
        if !pool.buffers.is_power_of_two() || pool.buffers > MAX_RECV_POOL_BUFFERS {
            return Err(Error::Config(format!(
                "recv_pool: {} buffers; the count must be a power of two from 1 to {}",
                pool.buffers, MAX_RECV_POOL_BUFFERS
            )));
        }
        if pool.buffer_size == 0 {
            return Err(Error::Config(
                "recv_pool: the buffer size must be at least 1 byte".into(),
            ));
        }
        let cpus = if self.pin {
            let Some(cpus) = allowed else {
                return Err(Error::Config(
                    "cannot pin: this process's CPU affinity is unknown; use pin(false)".into(),
                ));
            };
            if cores > cpus.len() {
                return Err(Error::Config(format!(
                    "{cores} cores requested, but this process may run on only {} CPUs \
                     ({cpus:?}) to pin them to: ask for fewer cores or use pin(false)",
                    cpus.len()
                )));
            }
            Some(cpus[..cores].to_vec())
        } else {
            None
        };
        let (backend, reason) = backend::choose(self.backend, &self.uring, env)?;
        Ok(Runtime {
            cores,
            cpus,
            backend,
            reason,
            uring: self.uring,
            handle_signals: self.handle_signals,
            shutdown_deadline: self.shutdown_deadline,
            shutdown: ShutdownHandle::new(),
            sched: self.sched,
            recv_pool: self.recv_pool,
        })
    }
}

/// A configured set of cores. Threads exist only while [`run_on_all`](Self::run_on_all) or
/// [`run_on_one`](Self::run_on_one) runs; a runtime can run any number of times.
#[derive(Debug)]
pub struct Runtime {
    cores: usize,
    cpus: Option<Vec<usize>>,
    backend: Backend,
    reason: String,
    uring: UringConfig,
    handle_signals: bool,
    shutdown_deadline: Duration,
    shutdown: ShutdownHandle,
    sched: SchedSettings,
    recv_pool: RecvPoolSize,
}

impl Runtime {
    /// Settings with their defaults.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The backend chosen at build time ([`Backend::IoUring`] or [`Backend::Mio`], never
    /// `Auto`).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why that backend: "requested", "auto: the io_uring probe succeeded ...", or
    /// "auto: io_uring is unavailable (...), falling back to mio".
    pub fn backend_reason(&self) -> &str {
        &self.reason
    }

    /// Number of cores [`run_on_all`](Self::run_on_all) runs.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Triggers the graceful shutdown of every core of this runtime's current run (or of the
    /// next run, if none is in progress), from any thread; see [`crate::shutdown`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The CPU each core is pinned to, or `None` without pinning.
    pub fn cpus(&self) -> Option<&[usize]> {
        self.cpus.as_deref()
    }

    /// Run `f(core)`'s future on every core, each on its own thread with its own platform and
    /// executor, and wait for all of them. Returns the outputs in core order.
    ///
    /// The closure is called on the core's thread, so the future may hold `!Send` state.
    /// A panic on a core, or a core that cannot start (platform, pinning), stops the other
    /// cores (their root futures are dropped) and is returned as the error, never a hang.
    pub fn run_on_all<F, Fut, T>(&self, f: F) -> Result<Vec<T>, Error>
    where
        F: Fn(usize) -> Fut + Send + Sync,
        Fut: Future<Output = T>,
        T: Send,
    {
        let f = &f;
        let _run = shutdown::RunGuard::start(&self.shutdown, self.handle_signals)?;
        let starters: Vec<_> = (0..self.cores)
            .map(|core| {
                let handle = self.shutdown.clone();
                let deadline = self.shutdown_deadline;
                move || shutdown::wrap_core(core, handle, deadline, move || f(core))
            })
            .collect();
        core_thread::run_cores(
            self.backend,
            &self.uring,
            self.cpus.as_deref(),
            &self.sched,
            self.recv_pool,
            starters,
        )
    }

    /// Run `f()`'s future on one core (core 0: its own thread, platform and executor; pinned
    /// to the first CPU when pinning is on) and return its output.
    pub fn run_on_one<F, Fut, T>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        let _run = shutdown::RunGuard::start(&self.shutdown, self.handle_signals)?;
        let handle = self.shutdown.clone();
        let deadline = self.shutdown_deadline;
        let start = move || shutdown::wrap_core(0, handle, deadline, f);
        let mut out = core_thread::run_cores(
            self.backend,
            &self.uring,
            self.cpus.as_deref(),
            &self.sched,
            self.recv_pool,
            vec![start],
        )?;
        out.pop()
            .ok_or_else(|| Error::Config("internal: core 0 returned no value".into()))
    }
}

#[cfg(test)]
mod sched_tests;
#[cfg(test)]
mod tests;
