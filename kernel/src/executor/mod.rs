//! The per-core executor.
//!
//! One [`Executor`] per core, driven by that core's [`Platform`]. Its loop:
//!
//! 1. poll the root future (the one given to [`Executor::block_on`]) if it was woken;
//! 2. run ready tasks until the run queues are empty or the task quota is used up: the next
//!    task is the head of the scheduling group with the least virtual runtime (see
//!    [`crate::sched`]), FIFO within a group; a task that wakes itself goes to the back of its
//!    group, so it cannot starve the others. Each poll's time is charged to its group and a
//!    poll that reaches the stall threshold is reported (`klog!` warning, `stalls` counter,
//!    [`ExecutorStats::last_stall`]);
//! 3. park on the platform: with the next timer deadline when there is nothing to run, or
//!    without blocking when tasks are still ready (so I/O completions are collected at least
//!    once per quota);
//! 4. fire due timers, take in wakes that other threads sent and, with an smp endpoint
//!    attached ([`Executor::attach_smp`]), messages from other cores; repeat. Cross-core
//!    messages are published right before step 3, and a blocking park first re-checks the
//!    incoming rings.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::task::Wake;
use core::future::Future;
use core::pin::pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use seastar_hal::{Instant, Platform, PollInfo};

pub(crate) mod context;
mod percore;
mod stats;

pub(crate) use self::percore::RemoteQueue;
use self::percore::{Clock, Core};
use self::stats::Stats;
pub use self::stats::{ExecutorStats, GroupStats, StallReport};
use crate::sched::DEFAULT_GROUP_NAME;
use crate::smp::{CoreSmp, SmpEndpoint, SmpError};
use crate::task::{JoinHandle, NoExecutor};
use crate::time::wheel::TimerWheel;

/// Executor settings.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ExecutorConfig {
    /// How long tasks may run back to back before the loop collects I/O completions and
    /// fires timers again (Seastar's task quota); [`crate::sched::need_preempt`] turns true
    /// when it is used up. Default 500 µs.
    pub task_quota: Duration,
    /// A single task poll that takes at least this long is reported as a stall (a warning
    /// with the task's name, group and duration, and [`ExecutorStats::stalls`]). Default
    /// 25 ms; `Duration::MAX` turns reports off.
    pub stall_threshold: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            task_quota: DEFAULT_TASK_QUOTA,
            stall_threshold: DEFAULT_STALL_THRESHOLD,
        }
    }
}

impl ExecutorConfig {
    /// Set the task quota.
    pub fn task_quota(mut self, quota: Duration) -> Self {
        self.task_quota = quota;
        self
    }

    /// Set the stall threshold.
    pub fn stall_threshold(mut self, threshold: Duration) -> Self {
        self.stall_threshold = threshold;
        self
    }
}

/// The default task quota.
pub const DEFAULT_TASK_QUOTA: Duration = Duration::from_micros(500);
/// The default stall threshold.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_millis(25);

/// How stall reports and the HAL's stall watch name the root future of `block_on`.
pub const ROOT_NAME: &str = "(root)";

/// Upper bound on task polls between two looks at I/O, whatever the clock says.
const MAX_POLLS_PER_BATCH: u32 = 4096;

/// `block_on` was called while another executor is running on this thread (nested), or,
/// without `std`, anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an executor is already running on this thread")]
pub struct AlreadyRunning;

/// One core's executor over platform `P`.
pub struct Executor<P: Platform> {
    platform: Rc<P>,
    core: Core,
    config: ExecutorConfig,
}

impl<P: Platform> core::fmt::Debug for Executor<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Executor")
            .field("core", &self.core.id())
            .field("config", &self.config)
            .finish()
    }
}

/// Wakes the root future of `block_on`.
struct RootWake {
    woken: AtomicBool,
    owner: u64,
    remote: Arc<RemoteQueue>,
}

impl Wake for RootWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        // From another thread the core may be parked: wake it. Locally it is running.
        if context::with_current(|c| c.id()) != Some(self.owner) {
            self.remote.unpark();
        }
    }
}

impl<P: Platform + 'static> Executor<P> {
    /// An executor with default settings.
    pub fn new(platform: P) -> Self {
        Self::with_config(platform, ExecutorConfig::default())
    }

    /// An executor with `config`.
    pub fn with_config(platform: P, config: ExecutorConfig) -> Self {
        let platform = Rc::new(platform);
        let clock: Rc<dyn Clock> = platform.clone();
        let unparker: Box<dyn seastar_hal::Unpark> = Box::new(platform.unparker());
        Executor {
            core: Core::new(clock, unparker),
            platform,
            config,
        }
    }

    /// The platform this core runs on.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Connect this core to the cross-core message system: registers the platform's
    /// unparker as this core's doorbell and makes the loop drain the endpoint's incoming
    /// rings every iteration (see [`crate::smp`]). Call once, before `block_on`.
    pub fn attach_smp(&mut self, endpoint: SmpEndpoint) -> Result<(), SmpError> {
        if self.core.smp().is_some() {
            return Err(SmpError::AlreadyAttached);
        }
        endpoint.register_unparker(Box::new(self.platform.unparker()));
        self.core.set_smp(Rc::new(CoreSmp::new(endpoint)));
        Ok(())
    }

    /// Spawn a task (in the default scheduling group); it runs once the executor runs
    /// (`block_on`).
    pub fn spawn<F: Future + 'static>(&self, future: F) -> JoinHandle<F::Output> {
        self.core.spawn(None, None, future)
    }

    /// The settings this executor runs with.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// Statistics of this core.
    pub fn stats(&self) -> ExecutorStats {
        snapshot(&self.core)
    }

    /// Run `future` to completion on this thread, running spawned tasks meanwhile.
    pub fn block_on<F: Future>(&mut self, future: F) -> Result<F::Output, AlreadyRunning> {
        let _entered = context::enter(&self.core).ok_or(AlreadyRunning)?;
        let root = Arc::new(RootWake {
            woken: AtomicBool::new(true),
            owner: self.core.id(),
            remote: self.core.remote().clone(),
        });
        let waker = Waker::from(root.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        let core = &self.core;
        // Attaching needs `&mut self`, so this cannot change while the loop runs.
        let smp = core.smp();
        loop {
            Stats::bump(&core.stats.loop_iterations, 1);
            // One quota covers the root future's poll and the batch of tasks after it.
            let quota_start = self.platform.now();
            core.begin_quota(quota_start.saturating_add(self.config.task_quota));
            if root.woken.swap(false, Ordering::AcqRel) {
                // The root future is not a task (no group is charged), but a blocking call in
                // it stalls the core all the same: watch and report it as task 0, "(root)".
                let watch = self.platform.stall_watch();
                if let Some(w) = watch {
                    w.poll_started(&PollInfo::new(
                        0,
                        Some(ROOT_NAME),
                        DEFAULT_GROUP_NAME,
                        quota_start,
                    ));
                }
                let polled = future.as_mut().poll(&mut cx);
                let end = self.platform.now();
                if let Some(w) = watch {
                    w.poll_ended(end);
                }
                let elapsed = end.saturating_duration_since(quota_start);
                if elapsed >= self.config.stall_threshold {
                    core.report_stall(0, Some(ROOT_NAME), 0, quota_start, elapsed);
                }
                if let Poll::Ready(out) = polled {
                    return Ok(out);
                }
            }
            self.run_tasks(&root.woken, quota_start);
            let idle = core.run_queue_len() == 0 && !root.woken.load(Ordering::Acquire);
            // With work pending, park only to collect completions without blocking.
            let mut deadline = if idle {
                core.next_timer()
            } else {
                Some(Instant::ZERO)
            };
            // Publish this iteration's cross-core messages; before a blocking park, announce
            // the sleep and re-check the rings (the doorbell protocol in `smp`'s docs).
            if let Some(smp) = &smp {
                if !smp.before_park(deadline != Some(Instant::ZERO)) {
                    deadline = Some(Instant::ZERO);
                }
            }
            Stats::bump(&core.stats.parks, 1);
            self.platform.park(deadline);
            if let Some(smp) = &smp {
                smp.after_park();
            }
            let fired = core.fire_timers(self.platform.now());
            Stats::bump(&core.stats.timers_fired, fired as u64);
            core.drain_remote();
            // Take in messages from other cores (spawning their work, completing replies).
            if let Some(smp) = &smp {
                smp.poll();
            }
        }
    }

    /// Run ready tasks until none is left, the quota that began at `quota_start` is used up,
    /// or the root future was woken (it is the program's main task; it goes first).
    fn run_tasks(&self, root_woken: &AtomicBool, quota_start: Instant) {
        let core = &self.core;
        core.drain_remote();
        let deadline = quota_start.saturating_add(self.config.task_quota);
        let platform = &*self.platform;
        let now = || platform.now();
        let watch = platform.stall_watch();
        let stall_threshold = self.config.stall_threshold;
        // One clock read per poll: the end of a poll is the start of the next. The scheduler
        // needs it to charge groups; the quota and the stall check reuse it.
        let mut t = now();
        let mut polls = 0u32;
        while let Some(end) = core.run_one(t, &now, stall_threshold, watch) {
            t = end;
            polls += 1;
            if root_woken.load(Ordering::Relaxed) {
                break;
            }
            if t >= deadline {
                core.set_preempt();
                Stats::bump(&core.stats.quota_expirations, 1);
                break;
            }
            // The poll cap bounds a batch even where the clock stands still while tasks run
            // (the simulator's virtual time).
            if polls >= MAX_POLLS_PER_BATCH {
                break;
            }
            if polls % 16 == 0 {
                let fired = core.fire_timers(t);
                Stats::bump(&core.stats.timers_fired, fired as u64);
            }
        }
        if polls > 0 {
            Stats::bump(&core.stats.batches, 1);
            if u64::from(polls) > core.stats.max_batch_polls.get() {
                core.stats.max_batch_polls.set(u64::from(polls));
            }
        }
    }
}

impl<P: Platform> Drop for Executor<P> {
    fn drop(&mut self) {
        // Drop remaining futures with this core current, so their destructors (cancelling a
        // timer, an I/O op) reach this core and not whichever one the thread runs next.
        let entered = context::enter(&self.core);
        self.core.shutdown();
        drop(entered);
    }
}

fn snapshot(core: &Core) -> ExecutorStats {
    ExecutorStats {
        tasks_spawned: core.stats.tasks_spawned.get(),
        polls: core.stats.polls.get(),
        loop_iterations: core.stats.loop_iterations.get(),
        parks: core.stats.parks.get(),
        timers_fired: core.stats.timers_fired.get(),
        live_tasks: core.live_tasks() as u64,
        run_queue_len: core.run_queue_len() as u64,
        batches: core.stats.batches.get(),
        quota_expirations: core.stats.quota_expirations.get(),
        max_batch_polls: core.stats.max_batch_polls.get(),
        stalls: core.stats.stalls.get(),
        last_stall: core.last_stall(),
        groups: core.group_stats(),
    }
}

/// Run `future` to completion on a new executor over `platform`.
pub fn block_on<P: Platform + 'static, F: Future>(
    platform: P,
    future: F,
) -> Result<F::Output, AlreadyRunning> {
    Executor::new(platform).block_on(future)
}

/// Statistics of the current core, if an executor is running on this thread.
pub fn stats() -> Option<ExecutorStats> {
    context::with_current(snapshot)
}

/// The current core's clock, if an executor is running on this thread.
pub fn try_now() -> Result<Instant, NoExecutor> {
    context::with_current(|c| c.now()).ok_or(NoExecutor)
}

/// The current core's clock.
///
/// # Panics
/// Outside an executor (a bug in the caller); see [`try_now`].
pub fn now() -> Instant {
    match try_now() {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// Run `f` on the current core's timer wheel, if an executor is running on this thread.
pub(crate) fn try_with_timers<R>(f: impl FnOnce(&mut TimerWheel<Waker>) -> R) -> Option<R> {
    context::with_current(|c| f(&mut c.timers.borrow_mut()))
}

/// Run `f` on the current core's timer wheel.
///
/// # Panics
/// Outside an executor.
pub(crate) fn with_timers<R>(f: impl FnOnce(&mut TimerWheel<Waker>) -> R) -> R {
    match try_with_timers(f) {
        Some(r) => r,
        None => panic!("{}", NoExecutor),
    }
}

#[cfg(test)]
mod tests;
