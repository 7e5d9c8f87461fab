//! The type-erased state of one core's executor: run queue, task registry, timers, the
//! remote-wake queue and statistics. Reached through `context` by free functions and wakers.

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::Waker;
use core::time::Duration;

use seastar_hal::{Instant, PollInfo, StallWatch, Unpark};

use super::stats::{StallReport, Stats};
use crate::sched::{self, SchedError, Scheduler, SchedulingGroup, PREEMPT_CHECK_INTERVAL};
use crate::task::raw::{state, CellCache, NewTask, TaskRef};
use crate::task::JoinHandle;
use crate::time::wheel::TimerWheel;

/// Cores get ids that are never reused, so a waker from a dead core can never be mistaken
/// for one of a live core that happens to sit at the same address. (`usize`, not `u64`:
/// 32-bit microcontrollers have no 64-bit atomics.)
static NEXT_CORE_ID: AtomicUsize = AtomicUsize::new(1);

/// What the core needs of its platform outside the loop: the clock (free functions read it)
/// and the stall watch (a task polled right where its work arrives, outside the run loop,
/// is watched like any other), erased from the platform type.
pub(crate) trait CorePlatform {
    fn read_clock(&self) -> Instant;
    fn watch(&self) -> Option<&dyn StallWatch>;
}

impl<P: seastar_hal::Platform> CorePlatform for P {
    fn read_clock(&self) -> Instant {
        seastar_hal::Platform::now(self)
    }
    fn watch(&self) -> Option<&dyn StallWatch> {
        seastar_hal::Platform::stall_watch(self)
    }
}

/// Wakes that arrive from other threads. The only part of a core other threads touch.
pub(crate) struct RemoteQueue {
    inner: spin::Mutex<RemoteInner>,
    /// `inner.tasks` may be non-empty: set under the lock by a push, cleared under the lock
    /// by a drain. The owner's loop reads it without the lock, so a core that gets no
    /// foreign wakes (the common case) never takes the lock. A push the owner misses here
    /// is seen on its next look; a blocking park cannot miss it, because the push unparks.
    pending: AtomicBool,
    unparker: Box<dyn Unpark>,
}

struct RemoteInner {
    tasks: Vec<TaskRef>,
    /// Set when the core shuts down: later wakes just drop their reference.
    closed: bool,
}

impl RemoteQueue {
    pub(crate) fn new(unparker: Box<dyn Unpark>) -> Self {
        RemoteQueue {
            inner: spin::Mutex::new(RemoteInner {
                tasks: Vec::new(),
                closed: false,
            }),
            pending: AtomicBool::new(false),
            unparker,
        }
    }

    /// Hand a task to its owner core from any thread, and wake that core.
    pub(crate) fn push(&self, task: TaskRef) {
        let mut inner = self.inner.lock();
        if inner.closed {
            drop(inner);
            drop(task);
            return;
        }
        inner.tasks.push(task);
        // Release: pairs with the owner's Acquire load, though the lock it then takes orders
        // the tasks anyway.
        self.pending.store(true, Ordering::Release);
        drop(inner);
        self.unparker.unpark();
    }

    pub(crate) fn unpark(&self) {
        self.unparker.unpark();
    }

    /// Whether wakes are waiting to be drained (the idle poll's check).
    pub(crate) fn has_tasks(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    fn drain_into(&self, out: &mut Vec<TaskRef>) {
        if !self.has_tasks() {
            return;
        }
        let mut inner = self.inner.lock();
        core::mem::swap(&mut inner.tasks, out);
        self.pending.store(false, Ordering::Relaxed);
    }

    fn close(&self) -> Vec<TaskRef> {
        let mut inner = self.inner.lock();
        inner.closed = true;
        self.pending.store(false, Ordering::Relaxed);
        core::mem::take(&mut inner.tasks)
    }
}

/// Every live task of a core (future not yet dropped), so shutdown can drop them all on the
/// owner thread. A slab: O(1) insert and remove through the slot stored in the task header.
#[derive(Default)]
struct Registry {
    slots: Vec<Option<TaskRef>>,
    free: Vec<usize>,
    len: usize,
}

impl Registry {
    fn insert(&mut self, task: TaskRef) {
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        task.header().slot.set(slot);
        self.slots[slot] = Some(task);
        self.len += 1;
    }

    fn remove(&mut self, task: &TaskRef) -> Option<TaskRef> {
        let slot = task.header().slot.replace(usize::MAX);
        let removed = self.slots.get_mut(slot)?.take();
        if removed.is_some() {
            self.free.push(slot);
            self.len -= 1;
        }
        removed
    }

    fn take_all(&mut self) -> Vec<TaskRef> {
        self.free.clear();
        self.len = 0;
        let all: Vec<TaskRef> = self.slots.drain(..).flatten().collect();
        for t in &all {
            t.header().slot.set(usize::MAX);
        }
        all
    }
}

/// Whether a task being polled is in the core's registry (see `Core::spawn_and_poll`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Registered {
    Yes,
    No,
}

pub(crate) struct Core {
    id: u64,
    /// The run queues, one per scheduling group, and the choice of the next task.
    sched: RefCell<Scheduler>,
    /// The group of the task being polled (0, the default group, between polls): spawned
    /// tasks inherit it.
    running_group: Cell<u32>,
    /// The task quota is used up (set by the executor or by `need_preempt`'s clock check).
    preempt: Cell<bool>,
    /// When the current quota ends.
    quota_deadline: Cell<Instant>,
    /// `need_preempt` calls left before it reads the clock again.
    preempt_countdown: Cell<u32>,
    /// The last poll that exceeded the stall threshold.
    last_stall: RefCell<Option<StallReport>>,
    registry: RefCell<Registry>,
    remote: Arc<RemoteQueue>,
    /// Reused buffer for draining `remote` without allocating each loop.
    remote_buf: RefCell<Vec<TaskRef>>,
    pub(crate) timers: RefCell<TimerWheel<Waker>>,
    /// Reused buffer for expired timer wakers.
    expired: RefCell<Vec<Waker>>,
    clock: Rc<dyn CorePlatform>,
    /// A poll at least this long (in nanoseconds) is reported as a stall.
    stall_threshold_ns: u64,
    /// The latest clock reading of the loop or of a task poll's end. A task polled where its
    /// work arrives starts here (whatever ran since is charged to it, as the end of one poll
    /// is the start of the next), and the loop goes on from the last such poll's end.
    clock_mark: Cell<Instant>,
    /// A task (or the root future) is being polled: work arriving now must be queued, not
    /// polled on the spot.
    polling: Cell<bool>,
    next_task_id: Cell<u64>,
    pub(crate) stats: Stats,
    /// Cross-core messaging, once an endpoint is attached (`Executor::attach_smp`).
    smp: RefCell<Option<Rc<crate::smp::CoreSmp>>>,
    /// Memory of finished tasks, for the next ones. Declared last: dropped after
    /// everything that may still hold a task.
    cells: CellCache,
}

impl Core {
    pub(crate) fn new(
        clock: Rc<dyn CorePlatform>,
        unparker: Box<dyn Unpark>,
        stall_threshold: Duration,
    ) -> Self {
        let now = clock.read_clock();
        Core {
            id: NEXT_CORE_ID.fetch_add(1, Ordering::Relaxed) as u64,
            sched: RefCell::new(Scheduler::new()),
            running_group: Cell::new(0),
            preempt: Cell::new(false),
            quota_deadline: Cell::new(Instant::MAX),
            preempt_countdown: Cell::new(PREEMPT_CHECK_INTERVAL),
            last_stall: RefCell::new(None),
            registry: RefCell::new(Registry::default()),
            remote: Arc::new(RemoteQueue::new(unparker)),
            remote_buf: RefCell::new(Vec::new()),
            timers: RefCell::new(TimerWheel::new(now)),
            expired: RefCell::new(Vec::new()),
            clock,
            stall_threshold_ns: u64::try_from(stall_threshold.as_nanos()).unwrap_or(u64::MAX),
            clock_mark: Cell::new(now),
            polling: Cell::new(false),
            next_task_id: Cell::new(1),
            stats: Stats::default(),
            smp: RefCell::new(None),
            cells: CellCache::default(),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.read_clock()
    }

    pub(crate) fn remote(&self) -> &Arc<RemoteQueue> {
        &self.remote
    }

    /// This core's recycled task cells.
    pub(crate) fn cells(&self) -> &CellCache {
        &self.cells
    }

    /// This core's cross-core messaging state, if attached.
    pub(crate) fn smp(&self) -> Option<Rc<crate::smp::CoreSmp>> {
        self.smp.borrow().clone()
    }

    pub(crate) fn set_smp(&self, smp: Rc<crate::smp::CoreSmp>) {
        *self.smp.borrow_mut() = Some(smp);
    }

    pub(crate) fn spawn<F>(
        &self,
        name: Option<Cow<'static, str>>,
        group: Option<&SchedulingGroup>,
        future: F,
    ) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
    {
        let (handle, task) = self.create_task(name, group, future);
        self.schedule(task);
        handle
    }

    /// Spawn `future` detached and, if no other task is waiting to run, poll it right away:
    /// for work that arrives from another core, so that work that completes at once answers
    /// within the same loop iteration without a trip through the run queue. The poll is
    /// charged, watched and stall-checked like any other. With tasks waiting (or inside a
    /// poll) it is queued like any spawn: polling it first would put it ahead of them,
    /// whatever their groups' shares.
    ///
    /// The task polled right away has no `JoinHandle` and enters the registry only if its
    /// first poll leaves it pending: work that is ready at once costs a (recycled) cell and
    /// no registry or reference-count traffic beyond the cell's own.
    pub(crate) fn spawn_and_poll<F>(&self, future: F)
    where
        F: Future + 'static,
    {
        if self.polling.get() || self.run_queue_len() > 0 {
            let (handle, task) = self.create_task(None, None, future);
            drop(handle);
            self.schedule(task);
            return;
        }
        let group = self.running_group.get();
        // One reference: the poll's; it moves into the registry if the task stays pending.
        let [task] = self.new_task(future, None, group);
        task.header().state.set(state::DETACHED);
        self.poll_task(group, task, self.clock_mark.get(), Registered::No);
    }

    /// Call `call` (synchronous work that arrived from another core) right away if no task
    /// is waiting to run, as a poll of its own: it gets a task id of its own and is counted,
    /// charged, watched and stall-checked like a task poll, but needs no task (no cell, no
    /// waker, no registry). With tasks waiting (or inside a poll) it is queued as a task,
    /// for the same reason as in [`spawn_and_poll`](Self::spawn_and_poll).
    pub(crate) fn call_or_spawn<F>(&self, call: F)
    where
        F: FnOnce() + 'static,
    {
        if self.polling.get() || self.run_queue_len() > 0 {
            let (handle, task) = self.create_task(None, None, async move { call() });
            drop(handle);
            self.schedule(task);
            return;
        }
        let group = self.running_group.get();
        let id = self.next_task_id.get();
        self.next_task_id.set(id + 1);
        self.timed_poll(group, id, None, self.clock_mark.get(), call);
    }

    /// A new task in the registry, its handle, and the reference for the run queue.
    fn create_task<F>(
        &self,
        name: Option<Cow<'static, str>>,
        group: Option<&SchedulingGroup>,
        future: F,
    ) -> (JoinHandle<F::Output>, TaskRef)
    where
        F: Future + 'static,
    {
        let group = match group {
            Some(g) if g.core() == self.id => g.raw_index(),
            Some(g) => {
                klog!(
                    warn,
                    "scheduling group {} belongs to another core: task spawned in the default group",
                    g.name()
                );
                0
            }
            None => self.running_group.get(),
        };
        // Three references: the registry's, the handle's and the run queue's.
        let [registered, handled, task] = self.new_task(future, name, group);
        self.registry.borrow_mut().insert(registered);
        (JoinHandle::new(handled), task)
    }

    /// A new task of this core with `N` references, counted as spawned.
    fn new_task<F, const N: usize>(
        &self,
        future: F,
        name: Option<Cow<'static, str>>,
        group: u32,
    ) -> [TaskRef; N]
    where
        F: Future + 'static,
    {
        let id = self.next_task_id.get();
        self.next_task_id.set(id + 1);
        self.stats
            .tasks_spawned
            .set(self.stats.tasks_spawned.get() + 1);
        TaskRef::new(
            future,
            NewTask {
                owner: self.id,
                remote: &self.remote,
                cells: &self.cells,
                id,
                name,
                group,
            },
        )
    }

    /// Put a task on the run queue unless it is already there or finished. Owner thread.
    pub(crate) fn schedule(&self, task: TaskRef) {
        let h = task.header();
        let s = h.state.get();
        if s & (state::SCHEDULED | state::COMPLETE) != 0 {
            return;
        }
        h.state.set(s | state::SCHEDULED);
        let group = h.group;
        self.sched.borrow_mut().push(group, task);
    }

    pub(crate) fn run_queue_len(&self) -> usize {
        self.sched.borrow().len()
    }

    /// Create a scheduling group on this core.
    pub(crate) fn add_group(
        &self,
        name: Cow<'static, str>,
        shares: u32,
    ) -> Result<SchedulingGroup, SchedError> {
        let (index, info) = self.sched.borrow_mut().add_group(name, shares)?;
        Ok(sched::handle(self.id, index, info))
    }

    /// A handle to group `index` (the default group if there is no such group).
    pub(crate) fn group_handle(&self, index: u32) -> SchedulingGroup {
        let sched = self.sched.borrow();
        let (index, info) = sched.info_or_default(index);
        sched::handle(self.id, index, info.clone())
    }

    pub(crate) fn current_group(&self) -> SchedulingGroup {
        self.group_handle(self.running_group.get())
    }

    pub(crate) fn group_stats(&self) -> alloc::vec::Vec<sched::GroupStats> {
        self.sched.borrow().stats()
    }

    pub(crate) fn last_stall(&self) -> Option<StallReport> {
        self.last_stall.borrow().clone()
    }

    /// Start a task quota that ends at `deadline`.
    pub(crate) fn begin_quota(&self, deadline: Instant) {
        self.quota_deadline.set(deadline);
        self.preempt.set(false);
        self.preempt_countdown.set(PREEMPT_CHECK_INTERVAL);
    }

    /// The quota is used up.
    pub(crate) fn set_preempt(&self) {
        self.preempt.set(true);
    }

    /// See [`crate::sched::need_preempt`]: a flag, and a clock read every
    /// `PREEMPT_CHECK_INTERVAL` calls.
    #[inline]
    pub(crate) fn need_preempt(&self) -> bool {
        if self.preempt.get() {
            return true;
        }
        let left = self.preempt_countdown.get();
        if left > 1 {
            self.preempt_countdown.set(left - 1);
            return false;
        }
        self.preempt_countdown.set(PREEMPT_CHECK_INTERVAL);
        if self.clock.read_clock() >= self.quota_deadline.get() {
            self.preempt.set(true);
            return true;
        }
        false
    }

    /// Has `deadline` passed? A deadline after the end of the running task quota has not,
    /// unless the running poll overran the quota; that is taken for granted without reading
    /// the clock (a timer registered for a deadline that passed during an overrun fires at
    /// the next expiry: late by at most the overrun, never early). Nearer deadlines are
    /// checked against the clock.
    #[inline]
    pub(crate) fn deadline_passed(&self, deadline: Instant) -> bool {
        if deadline > self.quota_deadline.get() {
            return false;
        }
        self.clock.read_clock() >= deadline
    }

    pub(crate) fn live_tasks(&self) -> usize {
        self.registry.borrow().len
    }

    /// Whether wakes from other threads wait in the remote queue.
    pub(crate) fn remote_pending(&self) -> bool {
        self.remote.has_tasks()
    }

    /// Move wakes that arrived from other threads onto the run queue.
    pub(crate) fn drain_remote(&self) {
        if !self.remote.has_tasks() {
            return;
        }
        let mut buf = self.remote_buf.borrow_mut();
        self.remote.drain_into(&mut buf);
        for task in buf.drain(..) {
            self.schedule(task);
        }
    }

    /// Fire due timers. Returns how many fired.
    pub(crate) fn fire_timers(&self, now: Instant) -> usize {
        // The loop calls this every iteration; most find nothing due (a message round trip
        // is far shorter than a timer tick), and the earliest deadline says so in a few
        // instructions. Skipping `expire` then is what a busy batch does anyway: the wheel
        // catches up at the next call.
        if self.next_timer().is_none_or(|t| t > now) {
            return 0;
        }
        let mut expired = self.expired.borrow_mut();
        self.timers
            .borrow_mut()
            .expire(now, |waker| expired.push(waker));
        let n = expired.len();
        // Wake outside the wheel's borrow: a woken future may be polled later and touch the
        // wheel, and a foreign waker type might do anything.
        for w in expired.drain(..) {
            w.wake();
        }
        n
    }

    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.timers.borrow().next_deadline()
    }

    /// Poll the next task (the scheduler's choice), which starts at `start`. Returns when
    /// the poll ended (the next one's start), or `None` if no task was ready.
    pub(crate) fn run_one(&self, start: Instant) -> Option<Instant> {
        let (group, task) = self.sched.borrow_mut().pop()?;
        Some(self.poll_task(group, task, start, Registered::Yes))
    }

    /// Poll `task` of `group` (just taken off the run queue, or never queued), which starts
    /// at `start`. Charges the poll's time to the group and reports it if it reached the stall
    /// threshold. An unregistered task that stays pending is registered (with `task`, the
    /// reference of the poll). Returns when the poll ended.
    fn poll_task(
        &self,
        group: u32,
        task: TaskRef,
        start: Instant,
        registered: Registered,
    ) -> Instant {
        let h = task.header();
        let s = h.state.get() & !state::SCHEDULED;
        h.state.set(s);
        if s & state::COMPLETE != 0 {
            return start;
        }
        if s & state::CANCEL_REQUESTED != 0 {
            // Dropping the future may take a while; the next poll pays for it otherwise.
            self.cancel(&task);
            return self.clock.read_clock();
        }
        h.state.set(s | state::RUNNING);
        let (done, end) = self.timed_poll(group, h.id, h.name.as_deref(), start, || task.poll());
        let s = h.state.get() & !state::RUNNING;
        h.state.set(s);
        if done {
            self.finish(&task);
        } else if s & state::CANCEL_REQUESTED != 0 {
            self.cancel(&task);
        } else if registered == Registered::No {
            // From now on it is a task like any other: shutdown must find it.
            self.registry.borrow_mut().insert(task);
        }
        end
    }

    /// Run `poll` as a poll of task `id` of `group` that started at `start`: counted,
    /// watched, charged to the group and stall-checked. Returns its result and its end.
    #[inline(always)] // one copy per caller: `poll_task` and `call_or_spawn`
    fn timed_poll<R>(
        &self,
        group: u32,
        id: u64,
        name: Option<&str>,
        start: Instant,
        poll: impl FnOnce() -> R,
    ) -> (R, Instant) {
        Stats::bump(&self.stats.polls, 1);
        self.running_group.set(group);
        self.polling.set(true);
        let watch = self.clock.watch();
        if let Some(w) = watch {
            let sched = self.sched.borrow();
            w.poll_started(&PollInfo::new(
                id,
                name,
                sched.group_name(group),
                group,
                start,
            ));
        }
        let out = poll();
        let end = self.clock.read_clock();
        if let Some(w) = watch {
            w.poll_ended(end);
        }
        self.polling.set(false);
        self.running_group.set(0);
        self.clock_mark.set(end);
        // Plain nanoseconds: the per-poll path stays clear of `Duration`'s 128-bit math.
        let elapsed_ns = end.as_nanos().saturating_sub(start.as_nanos());
        self.sched.borrow_mut().charge_ns(group, elapsed_ns);
        if elapsed_ns >= self.stall_threshold_ns {
            let elapsed = Duration::from_nanos(elapsed_ns);
            self.report_stall(id, name, group, start, elapsed);
        }
        (out, end)
    }

    /// See `clock_mark`.
    pub(crate) fn clock_mark(&self) -> Instant {
        self.clock_mark.get()
    }

    /// The loop read the clock: `now`.
    pub(crate) fn set_clock_mark(&self, now: Instant) {
        self.clock_mark.set(now);
    }

    /// The root future of `block_on` is being polled (or no longer is): work arriving from
    /// other cores meanwhile is queued, not polled inside it.
    pub(crate) fn set_polling(&self, polling: bool) {
        self.polling.set(polling);
    }

    /// Report a poll of task `task_id` (0: the root future) that held the core for
    /// `elapsed`, at least the stall threshold.
    #[cold]
    pub(crate) fn report_stall(
        &self,
        task_id: u64,
        task_name: Option<&str>,
        group: u32,
        start: Instant,
        elapsed: Duration,
    ) {
        let group_name = String::from(self.sched.borrow().group_name(group));
        let name = task_name.unwrap_or("(unnamed)");
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        klog!(
            warn,
            "stall: task {} #{} in scheduling group {} held core {} for {} us",
            name,
            task_id,
            group_name.as_str(),
            self.id,
            micros
        );
        Stats::bump(&self.stats.stalls, 1);
        *self.last_stall.borrow_mut() = Some(StallReport {
            task_id,
            task_name: task_name.map(String::from),
            group: group_name,
            duration: elapsed,
            started: start,
        });
    }

    /// The future is gone (completed or cancelled): release it from the registry, drop the
    /// output if nobody will read it, and wake whoever awaits the JoinHandle.
    fn finish(&self, task: &TaskRef) {
        let h = task.header();
        let s = h.state.get() | state::COMPLETE;
        h.state.set(s);
        if s & state::DETACHED != 0 {
            task.drop_output();
        }
        task.wake_join_waker();
        let removed = self.registry.borrow_mut().remove(task);
        drop(removed);
    }

    /// Cancel a task: drop its future now, or as soon as its current poll returns.
    pub(crate) fn cancel(&self, task: &TaskRef) {
        let h = task.header();
        let s = h.state.get();
        if s & state::COMPLETE != 0 {
            return;
        }
        if s & state::RUNNING != 0 {
            h.state.set(s | state::CANCEL_REQUESTED);
            return;
        }
        task.cancel_now();
        self.finish(task);
    }

    /// Drop every task's future (on this, the owner thread) and stop accepting remote wakes.
    /// Futures dropped here may spawn or wake others; repeat until nothing is left.
    pub(crate) fn shutdown(&self) {
        self.drop_all_tasks();
        // Cross-core messaging closes after the tasks (a dropped task still answers its
        // requester with "cancelled") and before a last sweep (dropping the core's sharded
        // service instances may spawn or wake tasks). It stays reachable while it shuts
        // down, so instance destructors still see their core (`smp::current_core`); sends
        // from them fail quietly.
        if let Some(smp) = self.smp() {
            smp.shutdown();
            drop(self.smp.borrow_mut().take());
            self.drop_all_tasks();
        }
        self.sched.borrow_mut().clear();
        drop(self.remote.close());
        self.remote_buf.borrow_mut().clear();
    }

    /// Drop every task's future; repeat while dropping them creates new ones.
    fn drop_all_tasks(&self) {
        loop {
            let tasks = self.registry.borrow_mut().take_all();
            if tasks.is_empty() {
                break;
            }
            for task in tasks {
                let h = task.header();
                h.state.set(h.state.get() & !state::RUNNING);
                task.cancel_now();
                let s = h.state.get() | state::COMPLETE;
                h.state.set(s);
                if s & state::DETACHED != 0 {
                    task.drop_output();
                }
                task.wake_join_waker();
            }
        }
    }
}
