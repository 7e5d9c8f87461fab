//! CPU scheduling on one core: scheduling groups with shares, the task quota and cooperative
//! preemption (Seastar's CPU scheduler).
//!
//! # Scheduling groups
//!
//! Every task belongs to a [`SchedulingGroup`]. Each group has its own FIFO run queue inside
//! the core, and a number of *shares*. Under contention the CPU time of the groups follows
//! their shares: two always-busy groups with 100 and 200 shares get one third and two thirds
//! of the core. A group with nothing to run takes nothing, and its share goes to the others.
//!
//! ```ignore
//! let background = create_scheduling_group("compaction", 100)?;
//! task::Builder::new().group(background.clone()).spawn(compact());
//! background.set_shares(50)?; // at run time, effective from the next poll
//! ```
//!
//! Tasks spawned from a task inherit its group; tasks spawned from the root future (or from
//! cross-core work arriving through `smp`) go to the default group `"main"` (1000 shares).
//!
//! Groups are **per core**: [`create_scheduling_group`] creates one on the calling core, and
//! its handle is `!Send`. (Seastar creates a group on every shard at once; with Seastar-RS
//! call it on each core, e.g. from the closure given to `run_on_all`.) Groups live as long as
//! their core.
//!
//! # The algorithm: least virtual runtime (CFS / Seastar style)
//!
//! * Each group keeps a *virtual runtime*. After every poll of one of its tasks, the poll's
//!   wall time (two reads of the platform clock; the end of one poll is the start of the
//!   next, so one read per poll) is charged as `vruntime += elapsed_ns * 1000 / shares`
//!   (a group with the default 1000 shares advances at the speed of real time).
//! * The next task polled is the head of the non-empty group queue with the **least**
//!   vruntime (ties: the group created first). The core's `min_vruntime` follows the
//!   vruntime of the group picked; it never goes back.
//! * A group that becomes active again (its queue goes from empty to non-empty) has its
//!   vruntime clamped **up** to `min_vruntime`, so a group that was idle cannot bank credit
//!   and then monopolise the core; at most it runs first, once.
//! * Changing the shares ([`SchedulingGroup::set_shares`]) changes the rate from the next
//!   charge on; past charges stand.
//!
//! The cost is a scan over the core's groups per poll (at most [`MAX_GROUPS`], usually a
//! handful) and the clock read.
//!
//! # The task quota and preemption
//!
//! The executor polls tasks back to back for at most one task quota (default 500 µs, see
//! `ExecutorConfig::task_quota`), then goes back to I/O and timers. A long-running task
//! cooperates through [`need_preempt`] (cheap enough for a tight loop) or
//! [`maybe_yield`]`.await`, which yields only when the quota is used up.
//!
//! [`need_preempt`] does not read the clock on every call: it checks a flag the executor sets,
//! and every [`PREEMPT_CHECK_INTERVAL`]th call compares the clock with the quota's deadline.
//! Measured with `cargo test --release -p seastar-kernel need_preempt_cost -- --ignored
//! --nocapture` (a platform on `std::time::Instant`, a quota that does not expire): about
//! 10 ns per call on the (virtualised) development machine, where one clock read costs about
//! 80 ns: some 5 ns for the thread-local lookup of the core, the flag and the countdown, and
//! 5 ns for the clock read amortised over 16 calls. With a vDSO clock (~20 ns) it is ~6 ns.
//! The price of the amortisation: the quota can be overrun by up to 15 calls' worth of work.
//!
//! # Under virtual time
//!
//! The simulator's clock does not move while tasks run, so every poll costs zero and no
//! quota expires. Tests of the share split make their busy tasks advance the simulated clock
//! explicitly (`SimPlatform::clock().advance(d)`: "this poll did `d` of work"), which is
//! deterministic and models exactly what is being tested.

use alloc::borrow::Cow;
use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use crate::executor::context;
use crate::task::raw::TaskRef;

/// The shares of the default group, and a sensible scale for others.
pub const DEFAULT_SHARES: u32 = 1000;
/// The most shares a group may have.
pub const MAX_SHARES: u32 = 1_000_000;
/// The most scheduling groups one core may have (the default group included).
pub const MAX_GROUPS: usize = 64;
/// The name of the default group.
pub const DEFAULT_GROUP_NAME: &str = "main";
/// [`need_preempt`] reads the clock once per this many calls.
pub const PREEMPT_CHECK_INTERVAL: u32 = 16;

/// vruntime units per nanosecond for a group with `VRUNTIME_SCALE` shares.
const VRUNTIME_SCALE: u64 = DEFAULT_SHARES as u64;
/// When `min_vruntime` passes this, every group's vruntime is rebased (keeps the sums far
/// from overflow on a core that runs for years).
const REBASE_AT: u64 = 1 << 62;

/// Why a scheduling-group operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedError {
    /// No executor runs on this thread.
    #[error("no Seastar-RS executor is running on this thread")]
    NoExecutor,
    /// Shares must be in `1..=MAX_SHARES`.
    #[error("shares must be between 1 and {max}, got {0}", max = MAX_SHARES)]
    InvalidShares(u32),
    /// The core already has [`MAX_GROUPS`] groups.
    #[error("this core already has the maximum of {0} scheduling groups")]
    TooManyGroups(usize),
}

/// What a group handle and the core's queue share: the name and the shares.
#[derive(Debug)]
pub(crate) struct GroupInfo {
    name: Cow<'static, str>,
    shares: Cell<u32>,
}

/// A scheduling group on one core (see the module docs). Cheap to clone; `!Send`.
#[derive(Clone)]
pub struct SchedulingGroup {
    core: u64,
    index: u32,
    info: Rc<GroupInfo>,
}

impl core::fmt::Debug for SchedulingGroup {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SchedulingGroup")
            .field("name", &self.name())
            .field("shares", &self.shares())
            .field("index", &self.index)
            .finish()
    }
}

impl PartialEq for SchedulingGroup {
    fn eq(&self, other: &Self) -> bool {
        self.core == other.core && self.index == other.index
    }
}
impl Eq for SchedulingGroup {}

impl SchedulingGroup {
    /// The group's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The group's shares.
    pub fn shares(&self) -> u32 {
        self.info.shares.get()
    }

    /// Change the group's shares; effective from the next poll.
    pub fn set_shares(&self, shares: u32) -> Result<(), SchedError> {
        check_shares(shares)?;
        self.info.shares.set(shares);
        Ok(())
    }

    /// The group's position on its core (0 is the default group); indexes
    /// `ExecutorStats::groups`.
    pub fn index(&self) -> usize {
        self.index as usize
    }

    /// Is this the core's default group?
    pub fn is_default(&self) -> bool {
        self.index == 0
    }

    pub(crate) fn core(&self) -> u64 {
        self.core
    }

    pub(crate) fn raw_index(&self) -> u32 {
        self.index
    }
}

fn check_shares(shares: u32) -> Result<(), SchedError> {
    if shares == 0 || shares > MAX_SHARES {
        return Err(SchedError::InvalidShares(shares));
    }
    Ok(())
}

/// Create a scheduling group on the current core.
pub fn create_scheduling_group(
    name: impl Into<Cow<'static, str>>,
    shares: u32,
) -> Result<SchedulingGroup, SchedError> {
    check_shares(shares)?;
    let name = name.into();
    context::with_current(|core| core.add_group(name, shares)).ok_or(SchedError::NoExecutor)?
}

/// The group of the running task (the default group outside task polls), if an executor
/// runs on this thread.
pub fn current_scheduling_group() -> Option<SchedulingGroup> {
    context::with_current(|core| core.current_group())
}

/// The default group of the current core, if an executor runs on this thread.
pub fn default_scheduling_group() -> Option<SchedulingGroup> {
    context::with_current(|core| core.group_handle(0))
}

/// Has the running task used up the task quota? Cheap enough for a tight loop (see the
/// module docs); `false` outside an executor.
pub fn need_preempt() -> bool {
    context::with_current(|core| core.need_preempt()).unwrap_or(false)
}

/// Yield to the executor if the task quota is used up ([`need_preempt`]); otherwise return
/// at once.
pub fn maybe_yield() -> MaybeYield {
    MaybeYield { yielded: false }
}

/// Future of [`maybe_yield`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct MaybeYield {
    yielded: bool,
}

impl Future for MaybeYield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded || !need_preempt() {
            return Poll::Ready(());
        }
        self.yielded = true;
        // To the back of this task's group queue; the executor ends the batch because the
        // quota is used up, collects I/O and timers, and comes back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// One group's queue and accounting, owned by the core's [`Scheduler`].
#[derive(Debug)]
struct GroupQueue {
    info: Rc<GroupInfo>,
    queue: VecDeque<TaskRef>,
    vruntime: u64,
    runtime_ns: u64,
    polls: u64,
}

/// A snapshot of one group's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GroupStats {
    /// The group's name.
    pub name: String,
    /// Its shares now.
    pub shares: u32,
    /// CPU time its tasks' polls took.
    pub runtime: Duration,
    /// Polls of its tasks.
    pub polls: u64,
    /// Its tasks waiting in its run queue now.
    pub queued: u64,
}

/// The per-core run queues (one per group) and the choice of what runs next. Owner thread.
#[derive(Debug)]
pub(crate) struct Scheduler {
    groups: Vec<GroupQueue>,
    /// Bit `i`: group `i`'s queue is non-empty (`MAX_GROUPS` is 64), so `pop` looks only at
    /// the groups with work, and at none when only one has any.
    ready: u64,
    min_vruntime: u64,
    len: usize,
}

const _: () = assert!(MAX_GROUPS <= u64::BITS as usize);

impl Scheduler {
    /// A scheduler with the default group.
    pub(crate) fn new() -> Self {
        let mut s = Scheduler {
            groups: Vec::new(),
            ready: 0,
            min_vruntime: 0,
            len: 0,
        };
        s.push_group(Cow::Borrowed(DEFAULT_GROUP_NAME), DEFAULT_SHARES);
        s
    }

    fn push_group(&mut self, name: Cow<'static, str>, shares: u32) -> Rc<GroupInfo> {
        let info = Rc::new(GroupInfo {
            name,
            shares: Cell::new(shares),
        });
        self.groups.push(GroupQueue {
            info: info.clone(),
            queue: VecDeque::new(),
            // Starts level with the others: a new group gets no credit either.
            vruntime: self.min_vruntime,
            runtime_ns: 0,
            polls: 0,
        });
        info
    }

    /// Add a group; returns its index and shared info.
    pub(crate) fn add_group(
        &mut self,
        name: Cow<'static, str>,
        shares: u32,
    ) -> Result<(u32, Rc<GroupInfo>), SchedError> {
        check_shares(shares)?;
        if self.groups.len() >= MAX_GROUPS {
            return Err(SchedError::TooManyGroups(MAX_GROUPS));
        }
        let index = self.groups.len() as u32;
        Ok((index, self.push_group(name, shares)))
    }

    /// Group `index`'s info, or the default group's if there is no such group.
    pub(crate) fn info_or_default(&self, index: u32) -> (u32, &Rc<GroupInfo>) {
        match self.groups.get(index as usize) {
            Some(g) => (index, &g.info),
            // `new` creates the default group first and groups are never removed.
            None => (0, &self.groups[0].info),
        }
    }

    pub(crate) fn group_name(&self, index: u32) -> &str {
        self.groups
            .get(index as usize)
            .map_or(DEFAULT_GROUP_NAME, |g| &g.info.name)
    }

    /// Queue a task at the back of its group.
    #[inline]
    pub(crate) fn push(&mut self, group: u32, task: TaskRef) {
        let min = self.min_vruntime;
        let i = if (group as usize) < self.groups.len() {
            group as usize
        } else {
            0
        };
        let g = &mut self.groups[i];
        // (The group of the task being polled may have an empty queue too; its vruntime is
        // `min_vruntime` already, set when it was picked, so the clamp leaves it alone.)
        if g.queue.is_empty() && g.vruntime < min {
            // Becoming active again: no banked credit from the idle time.
            g.vruntime = min;
        }
        g.queue.push_back(task);
        self.ready |= 1 << i;
        self.len += 1;
    }

    /// Take the next task: the head of the non-empty group with the least vruntime.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<(u32, TaskRef)> {
        if self.ready == 0 {
            return None;
        }
        let mut b = self.ready.trailing_zeros() as usize;
        // Several groups have work: the least vruntime wins, ties going to the group
        // created first (the lowest index, visited first).
        let mut rest = self.ready & (self.ready - 1);
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            if self.groups[i].vruntime < self.groups[b].vruntime {
                b = i;
            }
        }
        let g = &mut self.groups[b];
        let task = g.queue.pop_front()?;
        if g.queue.is_empty() {
            self.ready &= !(1 << b);
        }
        self.len -= 1;
        if g.vruntime > self.min_vruntime {
            self.min_vruntime = g.vruntime;
        }
        Some((b as u32, task))
    }

    /// Charge a poll of `ns` nanoseconds to `group`.
    #[inline]
    pub(crate) fn charge_ns(&mut self, group: u32, ns: u64) {
        let Some(g) = self.groups.get_mut(group as usize) else {
            return;
        };
        let shares = u64::from(g.info.shares.get().max(1));
        // The default shares advance at the speed of real time: no division on that path.
        let weighted = if shares == VRUNTIME_SCALE {
            ns
        } else {
            ns.saturating_mul(VRUNTIME_SCALE) / shares
        };
        g.vruntime = g.vruntime.saturating_add(weighted);
        g.runtime_ns = g.runtime_ns.saturating_add(ns);
        g.polls += 1;
        if self.min_vruntime > REBASE_AT {
            self.rebase();
        }
    }

    #[cold]
    fn rebase(&mut self) {
        let base = self.min_vruntime;
        for g in &mut self.groups {
            g.vruntime = g.vruntime.saturating_sub(base);
        }
        self.min_vruntime = 0;
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Empty every queue (shutdown).
    pub(crate) fn clear(&mut self) {
        for g in &mut self.groups {
            g.queue.clear();
        }
        self.ready = 0;
        self.len = 0;
    }

    pub(crate) fn stats(&self) -> Vec<GroupStats> {
        self.groups
            .iter()
            .map(|g| GroupStats {
                name: String::from(&*g.info.name),
                shares: g.info.shares.get(),
                runtime: Duration::from_nanos(g.runtime_ns),
                polls: g.polls,
                queued: g.queue.len() as u64,
            })
            .collect()
    }
}

/// Build a handle for group `index` of core `core`.
pub(crate) fn handle(core: u64, index: u32, info: Rc<GroupInfo>) -> SchedulingGroup {
    SchedulingGroup { core, index, info }
}

#[cfg(test)]
mod tests;
