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

use std::future::Future;

pub use seastar_hal_linux::UringConfig;

mod backend;
mod core_thread;

pub use self::backend::{Backend, BACKEND_ENV};
use crate::error::Error;
pub use crate::io_handle::{current_backend, current_core, io_stats, IoStats};
use crate::sys;

/// Settings for a [`Runtime`]; from [`Runtime::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    cores: Option<usize>,
    pin: bool,
    backend: Backend,
    uring: UringConfig,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            cores: None,
            pin: true,
            backend: Backend::Auto,
            uring: UringConfig::default(),
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
        let starters: Vec<_> = (0..self.cores).map(|core| move || f(core)).collect();
        core_thread::run_cores(self.backend, &self.uring, self.cpus.as_deref(), starters)
    }

    /// Run `f()`'s future on one core (core 0: its own thread, platform and executor; pinned
    /// to the first CPU when pinning is on) and return its output.
    pub fn run_on_one<F, Fut, T>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        let mut out =
            core_thread::run_cores(self.backend, &self.uring, self.cpus.as_deref(), vec![f])?;
        out.pop()
            .ok_or_else(|| Error::Config("internal: core 0 returned no value".into()))
    }
}

#[cfg(test)]
mod tests;
