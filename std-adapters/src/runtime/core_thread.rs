//! The body of a core's thread, and how the cores of one `run_*` call stop together.
//!
//! ```text
//!  run_cores ──spawn_scoped──> core i: pin ─> platform (ON this thread) ─> install CoreIo
//!      │   (one smp endpoint each)     ─> Executor::with_config(Watched(platform))
//!      │                                  + attach_smp(endpoint)
//!      │                               ─> block_on(Abortable(fut), then wait for all cores)
//!      │                                        │ root future returns ─> Ok(T)
//!      │                                        │ panic / setup error  ─> ExitGuard aborts the
//!      │                                        │                         others (flag + wake)
//!      ├─ (unless turned off) a stall watchdog thread reads each core's `CoreWatch`
//!      └─ join all: Vec<T>, or the first real error (a panic beats "stopped because ...");
//!         then stop the watchdog.
//! ```

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Instant as StdInstant;

use seastar_hal::Platform;
use seastar_hal_linux::{UringConfig, UringPlatform};
use seastar_hal_mio::MioPlatform;
use seastar_kernel::executor::{Executor, ExecutorConfig};
use seastar_kernel::smp::{SmpConfig, SmpEndpoint, SmpSystem};

use super::watchdog::{self, CoreWatch, WatchLocal, Watchdog, Watched};
use super::{Backend, SchedSettings};
use crate::error::Error;
use crate::io_handle::{self, CoreIo, RecvPoolSize};

/// Shared by the cores of one `run_*` call: when one fails, the others stop.
pub(crate) struct Coordinator {
    aborted: AtomicBool,
    /// Cores whose root future has returned. A finished core keeps serving cross-core
    /// requests (`submit_to`, `Sharded`) until every core has finished, so a fast core
    /// leaving early does not fail the others' calls to it.
    finished: AtomicUsize,
    /// The root-future waker of each core, to wake it when aborting.
    wakers: Mutex<Vec<Option<Waker>>>,
}

impl Coordinator {
    pub(crate) fn new(cores: usize) -> Self {
        Coordinator {
            aborted: AtomicBool::new(false),
            finished: AtomicUsize::new(0),
            wakers: Mutex::new(vec![None; cores]),
        }
    }

    fn abort(&self) {
        if self.aborted.swap(true, Ordering::AcqRel) {
            return;
        }
        let wakers: Vec<Waker> = match self.wakers.lock() {
            Ok(mut w) => w.iter_mut().filter_map(Option::take).collect(),
            Err(poisoned) => poisoned
                .into_inner()
                .iter_mut()
                .filter_map(Option::take)
                .collect(),
        };
        for w in wakers {
            w.wake();
        }
    }

    fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Count this core as finished; the last one wakes every core waiting in
    /// [`Coordinator::all_finished`].
    fn core_finished(&self) {
        let cores = self.cores();
        if self.finished.fetch_add(1, Ordering::AcqRel) + 1 == cores {
            let wakers: Vec<Waker> = match self.wakers.lock() {
                Ok(mut w) => w.iter_mut().filter_map(Option::take).collect(),
                Err(poisoned) => poisoned
                    .into_inner()
                    .iter_mut()
                    .filter_map(Option::take)
                    .collect(),
            };
            for w in wakers {
                w.wake();
            }
        }
    }

    fn cores(&self) -> usize {
        match self.wakers.lock() {
            Ok(w) => w.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// Resolves when every core has finished its root future, or a core failed.
    fn all_finished(&self, core: usize) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let done =
                || self.is_aborted() || self.finished.load(Ordering::Acquire) == self.cores();
            if done() {
                return Poll::Ready(());
            }
            self.register(core, cx.waker());
            // The last core may have finished between the check and the registration.
            if done() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn register(&self, core: usize, waker: &Waker) {
        let mut slots = match self.wakers.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(slot) = slots.get_mut(core) {
            *slot = Some(waker.clone());
        }
    }
}

/// Aborts the other cores unless disarmed: on a panic (during unwinding) or an early error.
struct ExitGuard<'a> {
    coord: &'a Coordinator,
    armed: bool,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.coord.abort();
        }
    }
}

/// The user's root future, which gives up (`None`) when another core failed.
struct Abortable<'a, F> {
    fut: Pin<Box<F>>,
    coord: &'a Coordinator,
    core: usize,
    registered: Option<Waker>,
}

impl<F: Future> Future for Abortable<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.coord.is_aborted() {
            return Poll::Ready(None);
        }
        if !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            this.coord.register(this.core, cx.waker());
            this.registered = Some(cx.waker().clone());
            // An abort between the check and the registration would have missed this waker.
            if this.coord.is_aborted() {
                return Poll::Ready(None);
            }
        }
        this.fut.as_mut().poll(cx).map(Some)
    }
}

/// What a core thread needs to know.
pub(crate) struct CoreSpec<'a> {
    pub(crate) core: usize,
    pub(crate) cpu: Option<usize>,
    pub(crate) backend: Backend,
    pub(crate) uring: &'a UringConfig,
    pub(crate) coord: &'a Coordinator,
    /// This core's end of the cross-core rings.
    pub(crate) smp: SmpEndpoint,
    /// Task quota and stall threshold.
    pub(crate) sched: SchedSettings,
    /// The size of the receive pool, created on the core's first `recv()`.
    pub(crate) pool_size: RecvPoolSize,
    /// What this core publishes for the stall watchdog, and the watchdog's clock origin.
    pub(crate) watch: Option<(Arc<CoreWatch>, StdInstant)>,
}

/// Why a core produced no value.
pub(crate) enum CoreFailure {
    /// Its own failure.
    Failed(Error),
    /// Stopped because another core failed.
    Aborted,
}

/// The body of a core's thread: pin, build the platform here, run `start()`'s future.
pub(crate) fn core_main<S, Fut>(spec: CoreSpec<'_>, start: S) -> Result<Fut::Output, CoreFailure>
where
    S: FnOnce() -> Fut,
    Fut: Future,
{
    let mut guard = ExitGuard {
        coord: spec.coord,
        armed: true,
    };
    let core = spec.core;
    if let Some(cpu) = spec.cpu {
        sys_pin(core, cpu)?;
    }
    let platform_err = |backend, source| {
        CoreFailure::Failed(Error::Platform {
            core,
            backend,
            source,
        })
    };
    let out = match spec.backend {
        Backend::IoUring => {
            let p = Rc::new(
                UringPlatform::new(spec.uring.clone())
                    .map_err(|e| platform_err(Backend::IoUring, e))?,
            );
            run_executor(spec, p.clone(), CoreIo::Uring(p), start)
        }
        Backend::Mio => {
            let p = Rc::new(MioPlatform::new().map_err(|e| platform_err(Backend::Mio, e))?);
            run_executor(spec, p.clone(), CoreIo::Mio(p), start)
        }
        Backend::Auto => Err(CoreFailure::Failed(Error::Config(
            "internal: Auto reached a core unresolved".into(),
        ))),
    }?;
    guard.armed = false;
    Ok(out)
}

fn sys_pin(core: usize, cpu: usize) -> Result<(), CoreFailure> {
    crate::sys::pin_current_thread(cpu)
        .map_err(|source| CoreFailure::Failed(Error::Pin { core, cpu, source }))
}

fn run_executor<P, S, Fut>(
    spec: CoreSpec<'_>,
    platform: P,
    io: CoreIo,
    start: S,
) -> Result<Fut::Output, CoreFailure>
where
    P: Platform + 'static,
    S: FnOnce() -> Fut,
    Fut: Future,
{
    // Dropped last: the executor's shutdown drops tasks whose sockets reach the handle.
    let _installed = io_handle::install(spec.core, io, spec.pool_size);
    let local = spec
        .watch
        .map(|(shared, origin)| WatchLocal::new(shared, origin, platform.now()));
    let _watch = watchdog::set_current(local.as_ref().map(|l| l.shared().clone()));
    let config = ExecutorConfig::default()
        .task_quota(spec.sched.task_quota)
        .stall_threshold(spec.sched.stall_threshold)
        .idle_poll(spec.sched.idle_poll)
        .smp_idle_poll(spec.sched.smp_idle_poll);
    let mut executor = Executor::with_config(Watched::new(platform, local), config);
    executor
        .attach_smp(spec.smp)
        .map_err(|e| CoreFailure::Failed(Error::Config(e.to_string())))?;
    let coord = spec.coord;
    let core = spec.core;
    let root = Abortable {
        fut: Box::pin(start()),
        coord,
        core,
        registered: None,
    };
    let res = executor.block_on(async move {
        let out = root.await;
        coord.core_finished();
        coord.all_finished(core).await;
        out
    });
    drop(executor);
    match res {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Err(CoreFailure::Aborted),
        Err(e) => Err(CoreFailure::Failed(Error::Config(e.to_string()))),
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_owned()
    }
}

/// Run one thread per starter (core `i` runs `starters[i]`), wait for all, collect.
pub(crate) fn run_cores<S, Fut>(
    backend: Backend,
    uring: &UringConfig,
    cpus: Option<&[usize]>,
    sched: &SchedSettings,
    pool_size: RecvPoolSize,
    starters: Vec<S>,
) -> Result<Vec<Fut::Output>, Error>
where
    S: FnOnce() -> Fut + Send,
    Fut: Future,
    Fut::Output: Send,
{
    let coord = Coordinator::new(starters.len());
    let endpoints = SmpSystem::build(starters.len(), SmpConfig::default())
        .map_err(|e| Error::Config(format!("cross-core rings: {e}")))?;
    let watchdog = (sched.watchdog && sched.stall_threshold != std::time::Duration::MAX)
        .then(|| Watchdog::new(starters.len(), sched.stall_threshold));
    let outcomes: Vec<Result<Fut::Output, CoreFailure>> = thread::scope(|scope| {
        let watchdog_thread = watchdog.as_ref().and_then(|w| {
            thread::Builder::new()
                .name("seastar-watchdog".into())
                .spawn_scoped(scope, move || w.run())
                .inspect_err(|e| log::warn!("seastar: no stall watchdog: {e}"))
                .ok()
        });
        let mut handles = Vec::with_capacity(starters.len());
        for ((core, start), smp) in starters.into_iter().enumerate().zip(endpoints) {
            let spec = CoreSpec {
                core,
                cpu: cpus.and_then(|c| c.get(core).copied()),
                backend,
                uring,
                coord: &coord,
                smp,
                sched: *sched,
                pool_size,
                watch: watchdog
                    .as_ref()
                    .and_then(|w| Some((w.core(core)?, w.origin()))),
            };
            let spawned = thread::Builder::new()
                .name(format!("seastar-core-{core}"))
                .spawn_scoped(scope, move || core_main(spec, start));
            match spawned {
                Ok(h) => handles.push(Ok(h)),
                Err(source) => {
                    coord.abort();
                    handles.push(Err(Error::Thread { core, source }));
                }
            }
        }
        let outcomes = handles
            .into_iter()
            .enumerate()
            .map(|(core, h)| match h {
                Ok(h) => match h.join() {
                    Ok(r) => r,
                    Err(payload) => Err(CoreFailure::Failed(Error::Panicked {
                        core,
                        message: panic_message(&*payload),
                    })),
                },
                Err(e) => Err(CoreFailure::Failed(e)),
            })
            .collect();
        if let (Some(w), Some(t)) = (&watchdog, watchdog_thread) {
            w.stop();
            t.thread().unpark();
        }
        outcomes
    });
    let mut values = Vec::with_capacity(outcomes.len());
    let mut aborted = None;
    for (core, o) in outcomes.into_iter().enumerate() {
        match o {
            Ok(v) => values.push(v),
            Err(CoreFailure::Failed(e)) => return Err(e),
            Err(CoreFailure::Aborted) => aborted = aborted.or(Some(core)),
        }
    }
    match aborted {
        // Unreachable in practice (an abort always has a failed core behind it), but say so.
        Some(core) => Err(Error::Config(format!(
            "core {core} was stopped, but no core reported a failure"
        ))),
        None => Ok(values),
    }
}
