//! The type-erased state of one core's executor: run queue, task registry, timers, the
//! remote-wake queue and statistics. Reached through `context` by free functions and wakers.

use alloc::borrow::Cow;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::Waker;

use seastar_hal::{Instant, Unpark};

use super::stats::Stats;
use crate::task::raw::{state, NewTask, TaskRef};
use crate::task::JoinHandle;
use crate::time::wheel::TimerWheel;

/// Cores get ids that are never reused, so a waker from a dead core can never be mistaken
/// for one of a live core that happens to sit at the same address. (`usize`, not `u64`:
/// 32-bit microcontrollers have no 64-bit atomics.)
static NEXT_CORE_ID: AtomicUsize = AtomicUsize::new(1);

/// The clock, erased from the platform type so free functions can read it.
pub(crate) trait Clock {
    fn read_clock(&self) -> Instant;
}

impl<P: seastar_hal::Platform> Clock for P {
    fn read_clock(&self) -> Instant {
        seastar_hal::Platform::now(self)
    }
}

/// Wakes that arrive from other threads. The only part of a core other threads touch.
pub(crate) struct RemoteQueue {
    inner: spin::Mutex<RemoteInner>,
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
        drop(inner);
        self.unparker.unpark();
    }

    pub(crate) fn unpark(&self) {
        self.unparker.unpark();
    }

    fn drain_into(&self, out: &mut Vec<TaskRef>) {
        let mut inner = self.inner.lock();
        core::mem::swap(&mut inner.tasks, out);
    }

    fn close(&self) -> Vec<TaskRef> {
        let mut inner = self.inner.lock();
        inner.closed = true;
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

pub(crate) struct Core {
    id: u64,
    run_queue: RefCell<VecDeque<TaskRef>>,
    registry: RefCell<Registry>,
    remote: Arc<RemoteQueue>,
    /// Reused buffer for draining `remote` without allocating each loop.
    remote_buf: RefCell<Vec<TaskRef>>,
    pub(crate) timers: RefCell<TimerWheel<Waker>>,
    /// Reused buffer for expired timer wakers.
    expired: RefCell<Vec<Waker>>,
    clock: Rc<dyn Clock>,
    next_task_id: Cell<u64>,
    pub(crate) stats: Stats,
    /// Cross-core messaging, once an endpoint is attached (`Executor::attach_smp`).
    smp: RefCell<Option<Rc<crate::smp::CoreSmp>>>,
}

impl Core {
    pub(crate) fn new(clock: Rc<dyn Clock>, unparker: Box<dyn Unpark>) -> Self {
        let now = clock.read_clock();
        Core {
            id: NEXT_CORE_ID.fetch_add(1, Ordering::Relaxed) as u64,
            run_queue: RefCell::new(VecDeque::new()),
            registry: RefCell::new(Registry::default()),
            remote: Arc::new(RemoteQueue::new(unparker)),
            remote_buf: RefCell::new(Vec::new()),
            timers: RefCell::new(TimerWheel::new(now)),
            expired: RefCell::new(Vec::new()),
            clock,
            next_task_id: Cell::new(1),
            stats: Stats::default(),
            smp: RefCell::new(None),
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
        future: F,
    ) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
    {
        let id = self.next_task_id.get();
        self.next_task_id.set(id + 1);
        let task = TaskRef::new(
            future,
            NewTask {
                owner: self.id,
                remote: &self.remote,
                id,
                name,
            },
        );
        self.registry.borrow_mut().insert(task.clone());
        self.stats
            .tasks_spawned
            .set(self.stats.tasks_spawned.get() + 1);
        let handle = JoinHandle::new(task.clone());
        self.schedule(task);
        handle
    }

    /// Put a task on the run queue unless it is already there or finished. Owner thread.
    pub(crate) fn schedule(&self, task: TaskRef) {
        let h = task.header();
        let s = h.state.get();
        if s & (state::SCHEDULED | state::COMPLETE) != 0 {
            return;
        }
        h.state.set(s | state::SCHEDULED);
        self.run_queue.borrow_mut().push_back(task);
    }

    pub(crate) fn run_queue_len(&self) -> usize {
        self.run_queue.borrow().len()
    }

    pub(crate) fn live_tasks(&self) -> usize {
        self.registry.borrow().len
    }

    /// Move wakes that arrived from other threads onto the run queue.
    pub(crate) fn drain_remote(&self) {
        let mut buf = self.remote_buf.borrow_mut();
        self.remote.drain_into(&mut buf);
        for task in buf.drain(..) {
            self.schedule(task);
        }
    }

    /// Fire due timers. Returns how many fired.
    pub(crate) fn fire_timers(&self, now: Instant) -> usize {
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

    /// Poll the task at the head of the run queue. Returns false if the queue was empty.
    pub(crate) fn run_one(&self) -> bool {
        let Some(task) = self.run_queue.borrow_mut().pop_front() else {
            return false;
        };
        let h = task.header();
        let s = h.state.get() & !state::SCHEDULED;
        h.state.set(s);
        if s & state::COMPLETE != 0 {
            return true;
        }
        if s & state::CANCEL_REQUESTED != 0 {
            self.cancel(&task);
            return true;
        }
        h.state.set(s | state::RUNNING);
        self.stats.polls.set(self.stats.polls.get() + 1);
        let done = task.poll();
        let s = h.state.get() & !state::RUNNING;
        h.state.set(s);
        if done {
            self.finish(&task);
        } else if s & state::CANCEL_REQUESTED != 0 {
            self.cancel(&task);
        }
        true
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
        self.run_queue.borrow_mut().clear();
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
