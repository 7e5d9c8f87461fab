//! Graceful shutdown across cores, and SIGINT/SIGTERM.
//!
//! Every core of a running [`Runtime`](crate::Runtime) has its own kernel
//! [`Shutdown`] coordinator (ordered phases: stop accepting, drain, cleanup; see
//! [`seastar_kernel::shutdown`]); [`current()`] returns it. A *process-wide* trigger reaches
//! every core through a [`ShutdownHandle`]:
//!
//! * [`Runtime::shutdown_handle`](crate::Runtime::shutdown_handle) triggers the cores of one
//!   runtime (tests, an admin command, another thread);
//! * [`handle()`] is the same handle, from inside a core;
//! * [`trigger_all()`] triggers every running runtime of the process;
//! * with [`Builder::handle_signals(true)`](crate::runtime::Builder::handle_signals), SIGINT
//!   and SIGTERM trigger the runtimes that asked for it. A second signal, once they are all
//!   shutting down, takes the signal's default effect (the process ends): Ctrl-C twice
//!   always quits.
//!
//! When a core sees the trigger (or its own coordinator is triggered locally), the runtime
//! runs that core's phases, each bounded by
//! [`Builder::shutdown_deadline`](crate::runtime::Builder::shutdown_deadline). The application
//! takes part by registering:
//!
//! ```no_run
//! use seastar::future::{select, Either};
//! use seastar::net::TcpListener;
//! use seastar::shutdown::{self, Phase};
//!
//! async fn serve() -> std::io::Result<()> {
//!     let shutdown = shutdown::current();
//!     let listener = TcpListener::bind("127.0.0.1:7000".parse().unwrap())?;
//!     let accepting = shutdown.register(Phase::STOP_ACCEPTING, "listener").unwrap();
//!     loop {
//!         // The stop first: it wins ties, so a flood of connections cannot delay it.
//!         match select(accepting.phase_started(), listener.accept()).await {
//!             Either::Left(()) => break,
//!             Either::Right(Ok((stream, peer))) => {
//!                 // Refused once the drain has started: then just close the connection.
//!                 let Ok(conn) = shutdown.register(Phase::DRAIN, format!("{peer}")) else {
//!                     continue;
//!                 };
//!                 seastar::spawn(async move {
//!                     // ... serve requests; between two, stop if `conn.is_phase_started()`
//!                     drop((stream, conn));
//!                 })
//!                 .detach();
//!             }
//!             Either::Right(Err(_)) => continue,
//!         }
//!     }
//!     drop((listener, accepting)); // new connections are refused from here
//!     let report = shutdown.finished().await; // every phase done (or its deadline passed)
//!     println!("drained: {report}");
//!     Ok(())
//! }
//! ```
//!
//! How the trigger crosses threads: each core spawns a small watcher task that parks its
//! waker in the runtime's trigger (a `Mutex<Vec<Option<Waker>>>`, one slot per core) after
//! checking an `AtomicBool`; triggering sets the flag, then takes and wakes every waker. The
//! kernel's wakers are thread-safe (a foreign wake queues the task on its core and unparks
//! it), and the watcher re-checks the flag after registering, so no trigger is missed. The
//! signal side is in `signal.rs` (a self-pipe read by a `seastar-signals` thread): the handler
//! itself does nothing but `write(2)`.
//!
//! A trigger that arrives while no run is in progress applies to the runtime's next run; the
//! end of a run clears it.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use seastar_kernel::future::{select, Either};
pub use seastar_kernel::shutdown::{
    Phase, PhaseReport, RegisterError, Registration, Shutdown, ShutdownReport,
};

use crate::error::Error;
use crate::signal;

/// Triggers the graceful shutdown of every core of one runtime, from any thread. Cheap to
/// clone; `Send + Sync`. See the [module documentation](self).
#[derive(Clone)]
pub struct ShutdownHandle {
    inner: Arc<Trigger>,
}

struct Trigger {
    triggered: AtomicBool,
    /// The watcher of each core, while a run is in progress.
    wakers: Mutex<Vec<Option<Waker>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: carry on.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ShutdownHandle {
    pub(crate) fn new() -> Self {
        ShutdownHandle {
            inner: Arc::new(Trigger {
                triggered: AtomicBool::new(false),
                wakers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Start the graceful shutdown of every core. Returns `true` the first time (per run),
    /// `false` if it was already triggered.
    pub fn trigger(&self) -> bool {
        if self.inner.triggered.swap(true, Ordering::AcqRel) {
            return false;
        }
        let wakers: Vec<Waker> = lock(&self.inner.wakers)
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
        true
    }

    /// Whether the shutdown has been triggered (and not cleared by the end of a run).
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// Completes when triggered; the caller is a task on core `core`.
    async fn triggered(&self, core: usize) {
        let _deregister = Deregister { handle: self, core };
        std::future::poll_fn(|cx| {
            if self.is_triggered() {
                return Poll::Ready(());
            }
            {
                let mut wakers = lock(&self.inner.wakers);
                if wakers.len() <= core {
                    wakers.resize(core + 1, None);
                }
                let slot = &mut wakers[core];
                if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *slot = Some(cx.waker().clone());
                }
            }
            // A trigger between the check and the registration took no waker of ours.
            if self.is_triggered() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// The end of a run: forget the trigger and the wakers of its cores.
    fn clear(&self) {
        lock(&self.inner.wakers).clear();
        self.inner.triggered.store(false, Ordering::Release);
    }
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

/// Takes a watcher's waker out when it stops waiting (done, or dropped with its core).
struct Deregister<'a> {
    handle: &'a ShutdownHandle,
    core: usize,
}

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        if let Some(slot) = lock(&self.handle.inner.wakers).get_mut(self.core) {
            *slot = None;
        }
    }
}

// ---- process-wide: the runs in progress ------------------------------------------------------

struct Running {
    id: u64,
    trigger: Weak<Trigger>,
    signals: bool,
}

static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());
static NEXT_RUN: AtomicU64 = AtomicU64::new(0);

/// Trigger the graceful shutdown of every runtime running in this process, as a signal
/// would (whether or not they handle signals). Returns how many were newly triggered.
pub fn trigger_all() -> usize {
    let handles: Vec<ShutdownHandle> = lock(&RUNNING)
        .iter()
        .filter_map(|r| r.trigger.upgrade())
        .map(|inner| ShutdownHandle { inner })
        .collect();
    handles.iter().filter(|h| h.trigger()).count()
}

/// The signal thread's callback (see `signal.rs`).
fn on_signal(sig: libc::c_int) {
    let name = if sig == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    let handles: Vec<ShutdownHandle> = lock(&RUNNING)
        .iter()
        .filter(|r| r.signals)
        .filter_map(|r| r.trigger.upgrade())
        .map(|inner| ShutdownHandle { inner })
        .collect();
    let newly = handles.iter().filter(|h| h.trigger()).count();
    if newly == 0 {
        // Nobody listening, or everyone already shutting down (a second Ctrl-C): the signal
        // gets its ordinary meaning.
        log::warn!("seastar: {name} with no graceful shutdown left to start: exiting now");
        signal::default_action(sig);
    } else {
        log::info!("seastar: {name}: graceful shutdown started (send it again to force)");
    }
}

/// Registers a run in progress (and the signal handler, if asked); deregisters and clears
/// the trigger when dropped.
pub(crate) struct RunGuard {
    id: u64,
    handle: ShutdownHandle,
}

impl RunGuard {
    pub(crate) fn start(handle: &ShutdownHandle, signals: bool) -> Result<RunGuard, Error> {
        if signals {
            signal::install(on_signal).map_err(Error::Signals)?;
        }
        let id = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
        lock(&RUNNING).push(Running {
            id,
            trigger: Arc::downgrade(&handle.inner),
            signals,
        });
        Ok(RunGuard {
            id,
            handle: handle.clone(),
        })
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        lock(&RUNNING).retain(|r| r.id != self.id);
        self.handle.clear();
    }
}

// ---- per core --------------------------------------------------------------------------------

struct CoreShutdown {
    shutdown: Shutdown,
    handle: ShutdownHandle,
}

std::thread_local! {
    static CURRENT: RefCell<Option<CoreShutdown>> = const { RefCell::new(None) };
}

/// This core's coordinator.
///
/// # Panics
///
/// Outside a runtime core (see [`try_current`]).
pub fn current() -> Shutdown {
    match try_current() {
        Some(s) => s,
        None => panic!(
            "seastar::shutdown::current() called outside a runtime core \
             (inside Runtime::run_on_all/run_on_one only)"
        ),
    }
}

/// This core's coordinator, or `None` outside a runtime core.
pub fn try_current() -> Option<Shutdown> {
    CURRENT.with(|c| c.borrow().as_ref().map(|c| c.shutdown.clone()))
}

/// The handle that shuts down every core of the runtime this core belongs to; `None`
/// outside a runtime core.
pub fn handle() -> Option<ShutdownHandle> {
    CURRENT.with(|c| c.borrow().as_ref().map(|c| c.handle.clone()))
}

/// Removes the core's coordinator from the thread when dropped.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let old = CURRENT.with(|c| c.borrow_mut().take());
        drop(old);
    }
}

/// Wrap a core's root future: install the core's coordinator before the user's closure
/// builds the future (so it may call [`current`]), and, once running, spawn the watcher that
/// turns a trigger into a run of the phases.
pub(crate) fn wrap_core<S, Fut>(
    core: usize,
    handle: ShutdownHandle,
    per_phase: Duration,
    start: S,
) -> impl std::future::Future<Output = Fut::Output>
where
    S: FnOnce() -> Fut,
    Fut: std::future::Future,
{
    let shutdown = Shutdown::new();
    let old = CURRENT.with(|c| {
        c.borrow_mut().replace(CoreShutdown {
            shutdown: shutdown.clone(),
            handle: handle.clone(),
        })
    });
    drop(old);
    let installed = Installed;
    let fut = start();
    async move {
        let _installed = installed;
        seastar_kernel::task::Builder::new()
            .name("shutdown-watcher")
            .spawn(watch(core, shutdown, handle, per_phase))
            .detach();
        fut.await
    }
}

/// Waits for a trigger, from any side, then runs this core's phases.
async fn watch(core: usize, shutdown: Shutdown, handle: ShutdownHandle, per_phase: Duration) {
    match select(shutdown.triggered(), handle.triggered(core)).await {
        Either::Left(()) => log::debug!("seastar: core {core}: shutdown triggered on the core"),
        Either::Right(()) => log::debug!("seastar: core {core}: shutdown triggered"),
    }
    let report = shutdown.run(per_phase).await;
    if report.is_clean() {
        log::debug!("seastar: core {core}: shut down: {report}");
    } else {
        log::warn!("seastar: core {core}: shut down with stragglers: {report}");
    }
}
