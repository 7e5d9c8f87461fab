//! The per-core executor.
//!
//! One [`Executor`] per core, driven by that core's [`Platform`]. Its loop:
//!
//! 1. poll the root future (the one given to [`Executor::block_on`]) if it was woken;
//! 2. run ready tasks until the run queues are empty or the task quota is used up (a batch;
//!    when a task wakes the root future, the root is polled next within the same batch, its
//!    polls counting towards the quota and the batch's poll cap like a task's): the next
//!    task is the head of the scheduling group with the least virtual runtime (see
//!    [`crate::sched`]), FIFO within a group; a task that wakes itself goes to the back of its
//!    group, so it cannot starve the others. Each poll's time is charged to its group and a
//!    poll that reaches the stall threshold is reported (`klog!` warning, `stalls` counter,
//!    [`ExecutorStats::last_stall`]);
//! 3. park on the platform: with the next timer deadline when there is nothing to run, or
//!    without blocking when tasks are still ready (so I/O completions are collected at least
//!    once per quota; with no I/O in flight that is a [`Platform::flush`], no system call).
//!    With nothing to run, the core may first poll for a while (see
//!    [idle polling](#idle-polling)) and skip the park if work shows up;
//! 4. fire due timers, take in wakes that other threads sent and, with an smp endpoint
//!    attached ([`Executor::attach_smp`]), messages from other cores (the task of arriving
//!    work is polled right there when no other task waits, see [`crate::smp`]); repeat.
//!    Cross-core messages are published right before step 3, and a blocking park first
//!    re-checks the incoming rings.
//!
//! # Idle polling
//!
//! An idle core polls its rings, wakes from other threads, completions that need no system
//! call and its timers for [`ExecutorConfig::idle_poll`] after every busy period, and for
//! [`ExecutorConfig::smp_idle_poll`] (default [`DEFAULT_SMP_IDLE_POLL`]) after one that sent or
//! received a cross-core message, before it parks. Its `sleeping` flag stays down while it
//! spins (peers do not ring it) and goes up only right before a blocking park. Counted in
//! [`ExecutorStats::idle_spins`], [`ExecutorStats::idle_spin_hits`] and
//! [`ExecutorStats::sleeps`].

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::task::Wake;
use core::future::Future;
use core::ops::ControlFlow;
use core::pin::{pin, Pin};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use seastar_hal::io::IoDriver;
use seastar_hal::{Instant, Platform, PollInfo};

pub(crate) mod context;
mod idle;
mod percore;
mod stats;

use self::idle::IdleState;
pub use self::idle::DEFAULT_SMP_IDLE_POLL;
use self::percore::CorePlatform;
pub(crate) use self::percore::{Core, RemoteQueue};
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
    /// How long an idle core keeps polling (its rings, wakes from other threads, completions
    /// that need no system call, timers) before it parks, after every busy period
    /// (Seastar's idle poll time). Default zero: an idle core parks at once. See the
    /// [idle polling](crate::executor#idle-polling).
    pub idle_poll: Duration,
    /// How long an idle core keeps polling after a busy period that sent or received a
    /// cross-core message (awaiting a `submit_to` reply, or serving a stream of requests).
    /// The larger of this and `idle_poll` applies. Default [`DEFAULT_SMP_IDLE_POLL`].
    pub smp_idle_poll: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            task_quota: DEFAULT_TASK_QUOTA,
            stall_threshold: DEFAULT_STALL_THRESHOLD,
            idle_poll: Duration::ZERO,
            smp_idle_poll: DEFAULT_SMP_IDLE_POLL,
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

    /// Set the idle poll window after every busy period.
    pub fn idle_poll(mut self, window: Duration) -> Self {
        self.idle_poll = window;
        self
    }

    /// Set the idle poll window after a busy period with cross-core traffic.
    pub fn smp_idle_poll(mut self, window: Duration) -> Self {
        self.smp_idle_poll = window;
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

/// Most root polls straight out of the idle spin (see [`Executor::root_alone`]) between two
/// full passes of the loop.
const ROOT_ONLY_BUDGET: u32 = 64;

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
        let clock: Rc<dyn CorePlatform> = platform.clone();
        let unparker: Box<dyn seastar_hal::Unpark> = Box::new(platform.unparker());
        Executor {
            core: Core::new(clock, unparker, config.stall_threshold),
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
        // Attaching needs `&mut self`, so this cannot change while the loop runs. A core
        // without peers (a one-core system) has no rings to drain, publish or re-check before
        // a park, and a `submit_to` to itself runs locally: the loop leaves its smp state
        // alone, as if none were attached.
        let smp = core.smp().filter(|s| s.count() > 1);
        let mut idle_state = IdleState::default();
        // The latest clock reading: the loop reads the clock once per iteration (after the
        // park or the idle spin) and otherwise reuses the end of the last poll, which is as
        // fresh (see "One clock read per task poll" in ARCHITECTURE.md).
        let mut now = self.platform.now();
        loop {
            Stats::bump(&core.stats.loop_iterations, 1);
            let mut root_only_left = ROOT_ONLY_BUDGET;
            // One quota covers the batch: the root future's polls and the tasks'.
            let quota_start = now;
            core.begin_quota(quota_start.saturating_add(self.config.task_quota));
            match self.run_batch(future.as_mut(), &mut cx, &root.woken, quota_start) {
                ControlFlow::Break(out) => return Ok(out),
                ControlFlow::Continue(batch_end) => now = batch_end,
            }
            let idle = core.run_queue_len() == 0 && !root.woken.load(Ordering::Acquire);
            // Idle: poll for a while before parking (`idle.rs`); work found there skips the
            // park (and its system call) altogether, and the spin's last clock reading
            // stands for this iteration's.
            let mut spun = if idle {
                self.idle_poll(&mut idle_state, &root.woken, smp.as_deref(), now)
            } else {
                None
            };
            // What the spin served woke the root future and nothing else (a caller awaiting
            // its `submit_to` reply): poll it right here and spin again, without the loop's
            // pass (see `root_alone`).
            while let Some(spin_now) = spun {
                now = spin_now;
                if root_only_left == 0 || !self.root_alone(&root.woken, smp.as_deref(), now) {
                    break;
                }
                root_only_left -= 1;
                core.begin_quota(now.saturating_add(self.config.task_quota));
                // A swap, as in `run_batch`: it takes in what a wake from another thread
                // published, however late it came.
                root.woken.swap(false, Ordering::AcqRel);
                let (polled, end) = self.poll_root(future.as_mut(), &mut cx, now);
                if let Poll::Ready(out) = polled {
                    return Ok(out);
                }
                now = end;
                // The start of a poll of work the spin serves next (`Core::spawn_and_poll`).
                core.set_clock_mark(now);
                if core.run_queue_len() > 0 || root.woken.load(Ordering::Acquire) {
                    // The loop's pass, then a batch.
                    break;
                }
                spun = self.idle_poll(&mut idle_state, &root.woken, smp.as_deref(), now);
            }
            if spun.is_none() {
                // The spin may have made work runnable (a completion, a wake) without
                // skipping the park: then the park must not block.
                let idle = idle
                    && core.run_queue_len() == 0
                    && !root.woken.load(Ordering::Acquire)
                    && !core.remote_pending();
                self.park(idle, smp.as_deref());
                now = self.platform.now();
                idle_state.last_park = now;
            }
            core.set_clock_mark(now);
            let fired = core.fire_timers(now);
            Stats::bump(&core.stats.timers_fired, fired as u64);
            core.drain_remote();
            // Take in messages from other cores (running their work, completing replies).
            if let Some(smp) = &smp {
                smp.poll();
                // Work that arrived was polled right away; its last poll ended later.
                now = core.clock_mark();
            }
        }
    }

    /// Whether the root future is all there is to do at `now`: woken, with no task queued, no
    /// wake from another thread, no timer due and no overflow to retry. The idle spin then
    /// hands it to the loop, which polls it and spins again without a pass of its own: the
    /// spin looks at messages, wakes, timers and I/O itself (`idle.rs`; `idle_poll` still
    /// makes the park due once per quota), and at most [`ROOT_ONLY_BUDGET`] such polls go by
    /// before a full pass anyway (dead peers, the iteration's statistics).
    fn root_alone(&self, root_woken: &AtomicBool, smp: Option<&CoreSmp>, now: Instant) -> bool {
        let core = &self.core;
        root_woken.load(Ordering::Acquire)
            && core.run_queue_len() == 0
            && !core.remote_pending()
            && core.next_timer().is_none_or(|t| t > now)
            && smp.is_none_or(|s| !s.overflowing())
    }

    /// Park on the platform: until the next timer if `idle`, else only to collect what is
    /// ready. Publishes this iteration's cross-core messages first; before a blocking park it
    /// announces the sleep and re-checks the rings (the doorbell protocol in `smp`'s docs).
    /// A park that may not block while no I/O is in flight has nothing to collect: it is a
    /// [`Platform::flush`] (no system call), so a busy core that does no I/O never enters the
    /// kernel.
    fn park(&self, idle: bool, smp: Option<&CoreSmp>) {
        let core = &self.core;
        // With work pending, park only to collect completions without blocking.
        let mut deadline = if idle {
            core.next_timer()
        } else {
            Some(Instant::ZERO)
        };
        if let Some(smp) = smp {
            if !smp.before_park(deadline != Some(Instant::ZERO)) {
                deadline = Some(Instant::ZERO);
            }
        }
        Stats::bump(&core.stats.parks, 1);
        if deadline == Some(Instant::ZERO) && self.platform.io().in_flight() == 0 {
            self.platform.flush();
        } else {
            if deadline != Some(Instant::ZERO) {
                Stats::bump(&core.stats.sleeps, 1);
            }
            self.platform.park(deadline);
        }
        if let Some(smp) = smp {
            smp.after_park();
        }
    }

    /// One batch of polls between two looks at I/O and timers: the root future if it was
    /// woken, then ready tasks, until none is left, the quota that began at `quota_start` is
    /// used up, or [`MAX_POLLS_PER_BATCH`] polls were made. The root future is the program's
    /// main task: when a task wakes it, it is polled next, inside the same batch (its polls
    /// count towards the quota and the cap like a task's), so handing it a result costs no
    /// trip through the platform. Returns the root future's output once it is ready, else
    /// when the batch's last poll ended (`quota_start` if nothing was polled).
    fn run_batch<F: Future>(
        &self,
        mut future: Pin<&mut F>,
        cx: &mut Context<'_>,
        root_woken: &AtomicBool,
        quota_start: Instant,
    ) -> ControlFlow<F::Output, Instant> {
        let core = &self.core;
        core.drain_remote();
        let mut batch = Batch {
            deadline: quota_start.saturating_add(self.config.task_quota),
            t: quota_start,
            polls: 0,
            task_polls: 0,
        };
        loop {
            if root_woken.swap(false, Ordering::AcqRel) {
                let (polled, end) = self.poll_root(future.as_mut(), cx, batch.t);
                if let Poll::Ready(out) = polled {
                    self.count_batch(&batch);
                    return ControlFlow::Break(out);
                }
                batch.t = end;
                batch.polls += 1;
                // After the batch's first root poll the tasks get their turn whatever it
                // cost; a later one may end the batch.
                if batch.polls > 1 && !self.room_left(&batch) {
                    break;
                }
            }
            if !self.run_tasks(root_woken, &mut batch) {
                break;
            }
        }
        self.count_batch(&batch);
        ControlFlow::Continue(batch.t)
    }

    fn count_batch(&self, batch: &Batch) {
        let stats = &self.core.stats;
        if batch.task_polls > 0 {
            Stats::bump(&stats.batches, 1);
            if u64::from(batch.task_polls) > stats.max_batch_polls.get() {
                stats.max_batch_polls.set(u64::from(batch.task_polls));
            }
        }
    }

    /// Poll the root future, starting at `start`; returns the result and when the poll
    /// ended. The root future is not a task (no group is charged), but a blocking call in it
    /// stalls the core all the same: it is watched and reported as task 0, "(root)".
    fn poll_root<F: Future>(
        &self,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
        start: Instant,
    ) -> (Poll<F::Output>, Instant) {
        let watch = self.platform.stall_watch();
        if let Some(w) = watch {
            w.poll_started(&PollInfo::new(
                0,
                Some(ROOT_NAME),
                DEFAULT_GROUP_NAME,
                0,
                start,
            ));
        }
        self.core.set_polling(true);
        let polled = future.poll(cx);
        self.core.set_polling(false);
        let end = self.platform.now();
        if let Some(w) = watch {
            w.poll_ended(end);
        }
        let elapsed = end.saturating_duration_since(start);
        if elapsed >= self.config.stall_threshold {
            self.core
                .report_stall(0, Some(ROOT_NAME), 0, start, elapsed);
        }
        (polled, end)
    }

    /// May the batch go on? Not once the quota is used up (which also raises the preempt
    /// flag) or the poll cap is reached.
    fn room_left(&self, batch: &Batch) -> bool {
        if batch.t >= batch.deadline {
            self.core.set_preempt();
            Stats::bump(&self.core.stats.quota_expirations, 1);
            return false;
        }
        // The poll cap bounds a batch even where the clock stands still while tasks run
        // (the simulator's virtual time).
        batch.polls < MAX_POLLS_PER_BATCH
    }

    /// Run ready tasks until none is left, the batch is over (see [`Self::room_left`]) or the
    /// root future was woken. Returns true in the last case: the root goes next.
    fn run_tasks(&self, root_woken: &AtomicBool, batch: &mut Batch) -> bool {
        let core = &self.core;
        // One clock read per poll: the end of a poll is the start of the next. The scheduler
        // needs it to charge groups; the quota and the stall check reuse it.
        while let Some(end) = core.run_one(batch.t) {
            batch.t = end;
            batch.polls += 1;
            batch.task_polls += 1;
            if !self.room_left(batch) {
                return false;
            }
            if batch.polls % 16 == 0 {
                let fired = core.fire_timers(batch.t);
                Stats::bump(&core.stats.timers_fired, fired as u64);
            }
            if root_woken.load(Ordering::Relaxed) {
                return true;
            }
        }
        false
    }
}

/// Where a batch stands (see [`Executor::run_batch`]).
struct Batch {
    /// When the batch's quota ends.
    deadline: Instant,
    /// The end of the last poll: the start of the next.
    t: Instant,
    /// Polls so far, the root future's included.
    polls: u32,
    /// Task polls so far.
    task_polls: u32,
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
        sleeps: core.stats.sleeps.get(),
        idle_spins: core.stats.idle_spins.get(),
        idle_spin_hits: core.stats.idle_spin_hits.get(),
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

/// Run `f` on the current core's timer wheel and clock.
///
/// # Panics
/// Outside an executor.
pub(crate) fn with_timers_clock<R>(
    f: impl FnOnce(&mut TimerWheel<Waker>, CoreClock<'_>) -> R,
) -> R {
    let r = context::with_current(|core| f(&mut core.timers.borrow_mut(), CoreClock { core }));
    match r {
        Some(r) => r,
        None => panic!("{}", NoExecutor),
    }
}

/// The current core's clock, as timer futures see it.
pub(crate) struct CoreClock<'a> {
    core: &'a Core,
}

impl CoreClock<'_> {
    /// Has `deadline` passed? A deadline after the end of the running task quota is taken
    /// as not passed without reading the clock (see `Core::deadline_passed`), so a timer
    /// future polled well before its deadline costs no clock read.
    pub(crate) fn passed(&self, deadline: Instant) -> bool {
        self.core.deadline_passed(deadline)
    }
}

#[cfg(test)]
mod tests;
