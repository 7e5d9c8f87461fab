//! The stall watchdog: reports a task that holds its core too long *while* it does.
//!
//! The kernel reports a long poll once it returns (a warning, `ExecutorStats::stalls`). A task
//! stuck in a blocking call or an endless loop never returns, so this module adds a watchdog
//! thread per `run_*` call:
//!
//! ```text
//!  core thread (every poll, through the HAL hook `Platform::stall_watch`)   watchdog thread
//!    poll_started: task not known to have the published names?              wake up:
//!                  -> compare; changed? -> try_lock + copy (rare; not root)
//!                  task_id.store; poll_start.store(start, Release)           start = poll_start
//!    ... the task runs ...                                                   now - start >= threshold
//!    poll_ended:   poll_start.store(0, Release)                              and not yet reported?
//!                                                                            -> warn with the names
//!                                                                            sleep until the earliest
//!                                                                            start + threshold
//! ```
//!
//! The core's side is a few relaxed/release stores per poll and one lookup of the task's id in
//! a small table of tasks whose names are the published ones; a task not found there is
//! compared by name once. It never blocks (a `try_lock` that fails leaves the names marked
//! stale). The platform clock (`CLOCK_MONOTONIC` nanoseconds) and the
//! watchdog's `std::time::Instant` are related by an offset each core measures at start.
//! No unsafe code.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread;
use std::time::{Duration, Instant as StdInstant};

use seastar_hal::{Instant, Platform, PollInfo, StallWatch};
use seastar_kernel::executor::ROOT_NAME;
use seastar_kernel::sched::DEFAULT_GROUP_NAME;

/// The task id under which the kernel watches the root future of `block_on` (named
/// [`ROOT_NAME`], in the default group).
const ROOT_TASK_ID: u64 = 0;

/// One core's published state, shared with the watchdog thread.
#[derive(Debug)]
pub(crate) struct CoreWatch {
    core: usize,
    /// Platform-clock nanoseconds at which the running poll started; 0 between polls.
    poll_start: AtomicU64,
    task_id: AtomicU64,
    /// Platform clock minus nanoseconds since the watchdog's origin.
    offset: AtomicI64,
    /// `offset` has been measured.
    ready: AtomicBool,
    names: Mutex<Names>,
    /// The names in `names` may belong to an earlier task (a `try_lock` failed).
    names_stale: AtomicBool,
    /// Stalls the watchdog reported while they happened.
    reports: AtomicU64,
}

#[derive(Debug, Default)]
struct Names {
    task: Option<String>,
    group: String,
}

impl CoreWatch {
    pub(crate) fn new(core: usize) -> Self {
        CoreWatch {
            core,
            poll_start: AtomicU64::new(0),
            task_id: AtomicU64::new(0),
            offset: AtomicI64::new(0),
            ready: AtomicBool::new(false),
            names: Mutex::new(Names::default()),
            names_stale: AtomicBool::new(false),
            reports: AtomicU64::new(0),
        }
    }

    /// Stalls the watchdog reported on this core while they happened.
    pub(crate) fn reports(&self) -> u64 {
        self.reports.load(Ordering::Relaxed)
    }

    fn lock_names(&self) -> MutexGuard<'_, Names> {
        match self.names.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Slots of [`WatchLocal::verified`] (a power of two).
const VERIFIED_SLOTS: usize = 256;

/// The core's side: implements the HAL hook. Lives on the core's thread.
#[derive(Debug)]
pub(crate) struct WatchLocal {
    shared: Arc<CoreWatch>,
    /// What the shared names hold, as far as this core knows (compared with a task's names
    /// the first time it is polled, so the lock is taken only when they change).
    cache: RefCell<Cached>,
    /// Tasks known to have the published names: slot `id % VERIFIED_SLOTS` holds
    /// `(id, generation)`. A task's name and group never change and ids are never reused on
    /// a core, so a task found here with the current `generation` needs no comparison, even
    /// when many tasks take turns (a server's connections: one poll each, round robin).
    /// Entries of an older generation are stale; a collision only costs a comparison.
    verified: Box<[Cell<(u64, u64)>]>,
    /// Bumped whenever the published names change (or may have: a failed `try_lock`);
    /// starts at 1, so the zeroed table knows no task.
    generation: Cell<u64>,
    /// The index of the group whose unnamed tasks have the published names (no task name,
    /// that group's name), or [`NO_GROUP`]. Unnamed tasks (every cross-core request is a new
    /// one) are checked against it alone: a group's index stands for its name, which never
    /// changes, so they need neither the table nor a comparison.
    unnamed_group: Cell<u32>,
}

/// [`WatchLocal::unnamed_group`] when the published names are not an unnamed task's.
const NO_GROUP: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Cached {
    valid: bool,
    has_task: bool,
    task: String,
    group: String,
}

impl Cached {
    fn matches(&self, poll: &PollInfo<'_>) -> bool {
        self.valid
            && self.group == poll.group
            && match poll.task_name {
                Some(n) => self.has_task && self.task == n,
                None => !self.has_task,
            }
    }

    fn set(&mut self, poll: &PollInfo<'_>) {
        self.task.clear();
        self.has_task = poll.task_name.is_some();
        self.task.push_str(poll.task_name.unwrap_or(""));
        self.group.clear();
        self.group.push_str(poll.group);
        self.valid = true;
    }
}

impl WatchLocal {
    /// The core's side of `shared`; measures the clock offset against `origin` with the
    /// core's platform clock `now`.
    pub(crate) fn new(shared: Arc<CoreWatch>, origin: StdInstant, now: Instant) -> Self {
        let since_origin = i64::try_from(origin.elapsed().as_nanos()).unwrap_or(i64::MAX);
        let platform = i64::try_from(now.as_nanos()).unwrap_or(i64::MAX);
        shared
            .offset
            .store(platform.saturating_sub(since_origin), Ordering::Relaxed);
        shared.ready.store(true, Ordering::Release);
        WatchLocal {
            shared,
            cache: RefCell::new(Cached::default()),
            verified: (0..VERIFIED_SLOTS).map(|_| Cell::new((0, 0))).collect(),
            generation: Cell::new(1),
            unnamed_group: Cell::new(NO_GROUP),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<CoreWatch> {
        &self.shared
    }
}

impl StallWatch for WatchLocal {
    fn poll_started(&self, poll: &PollInfo<'_>) {
        let shared = &*self.shared;
        // The root future (task 0) always has the same names, which `check` knows: keeping
        // them out of the cache spares a republish on every root/task alternation (a task
        // handing its result to the root), which would otherwise be the common case.
        match poll.task_name {
            _ if poll.task_id == ROOT_TASK_ID => {}
            None => {
                if self.unnamed_group.get() != poll.group_index {
                    self.publish_names(poll, None);
                }
            }
            Some(_) => {
                let slot = &self.verified[(poll.task_id as usize) & (VERIFIED_SLOTS - 1)];
                if slot.get() != (poll.task_id, self.generation.get()) {
                    self.publish_names(poll, Some(slot));
                }
            }
        }
        shared.task_id.store(poll.task_id, Ordering::Relaxed);
        // 0 means "between polls"; a poll starting at the clock's origin shows as 1 ns.
        shared
            .poll_start
            .store(poll.start.as_nanos().max(1), Ordering::Release);
    }

    fn poll_ended(&self, _end: Instant) {
        self.shared.poll_start.store(0, Ordering::Release);
    }
}

impl WatchLocal {
    /// Make the shared names those of `poll`'s task, unless they are already; then remember
    /// the task in `slot` (its slot of `verified`; none for an unnamed task) as having them,
    /// or, for an unnamed task, its group in `unnamed_group`.
    #[cold]
    fn publish_names(&self, poll: &PollInfo<'_>, slot: Option<&Cell<(u64, u64)>>) {
        let shared = &*self.shared;
        let mut cache = self.cache.borrow_mut();
        let verified = |generation| {
            if let Some(slot) = slot {
                slot.set((poll.task_id, generation));
            }
            self.unnamed_group.set(match poll.task_name {
                None => poll.group_index,
                Some(_) => NO_GROUP,
            });
        };
        if cache.matches(poll) {
            verified(self.generation.get());
        } else {
            // Every task verified so far has the names being replaced (or unknown ones).
            let generation = self.generation.get() + 1;
            self.generation.set(generation);
            // Never block the core: if the watchdog is reading the names right now, publish
            // them on a later poll and let it know these may be old.
            let guard = match shared.names.try_lock() {
                Ok(g) => Some(g),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            match guard {
                Some(mut names) => {
                    names.task = poll.task_name.map(str::to_owned);
                    names.group.clear();
                    names.group.push_str(poll.group);
                    drop(names);
                    cache.set(poll);
                    verified(generation);
                    shared.names_stale.store(false, Ordering::Relaxed);
                }
                None => {
                    cache.valid = false;
                    self.unnamed_group.set(NO_GROUP);
                    shared.names_stale.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A core's platform with the stall watch attached: everything else is forwarded.
#[derive(Debug)]
pub(crate) struct Watched<P> {
    inner: P,
    watch: Option<WatchLocal>,
}

impl<P: Platform> Watched<P> {
    pub(crate) fn new(inner: P, watch: Option<WatchLocal>) -> Self {
        Watched { inner, watch }
    }
}

impl<P: Platform> Platform for Watched<P> {
    type Unparker = P::Unparker;
    type Io = P::Io;

    fn now(&self) -> Instant {
        self.inner.now()
    }
    fn park(&self, deadline: Option<Instant>) {
        self.inner.park(deadline)
    }
    fn unparker(&self) -> Self::Unparker {
        self.inner.unparker()
    }
    fn io(&self) -> &Self::Io {
        self.inner.io()
    }
    fn flush(&self) {
        self.inner.flush()
    }
    fn stall_watch(&self) -> Option<&dyn StallWatch> {
        match &self.watch {
            Some(w) => Some(w),
            None => self.inner.stall_watch(),
        }
    }
}

/// The watchdog thread's side.
#[derive(Debug)]
pub(crate) struct Watchdog {
    cores: Vec<Arc<CoreWatch>>,
    threshold: Duration,
    origin: StdInstant,
    stop: AtomicBool,
}

impl Watchdog {
    pub(crate) fn new(cores: usize, threshold: Duration) -> Self {
        Watchdog {
            cores: (0..cores).map(|c| Arc::new(CoreWatch::new(c))).collect(),
            threshold,
            origin: StdInstant::now(),
            stop: AtomicBool::new(false),
        }
    }

    pub(crate) fn origin(&self) -> StdInstant {
        self.origin
    }

    pub(crate) fn core(&self, core: usize) -> Option<Arc<CoreWatch>> {
        self.cores.get(core).cloned()
    }

    /// Ask `run` to return; the caller then unparks its thread.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// The watchdog thread's body: look at every core until stopped, each time sleeping
    /// until the earliest moment a poll could reach the threshold. A poll running since
    /// `start` cannot before `start + threshold`, and one that has not started yet not
    /// before `now + threshold`; so a stuck poll is seen right when it reaches the threshold
    /// (not up to a quarter of it later, as with a fixed period of threshold / 4), and a busy
    /// core whose polls are short costs about one wake-up per threshold instead of four.
    pub(crate) fn run(&self) {
        let mut reported = vec![0u64; self.cores.len()];
        while !self.stop.load(Ordering::Acquire) {
            let mut sleep = self.threshold;
            for (watch, last) in self.cores.iter().zip(reported.iter_mut()) {
                sleep = sleep.min(self.check(watch, last));
            }
            thread::park_timeout(sleep.clamp(MIN_SLEEP, MAX_SLEEP));
        }
    }

    /// Report `w`'s running poll if it has held the core for the threshold (once per poll);
    /// returns how long it is certain no poll of `w` reaches the threshold unseen: the
    /// time the running poll has left, else the whole threshold (a poll starting now).
    fn check(&self, w: &CoreWatch, last_reported: &mut u64) -> Duration {
        if !w.ready.load(Ordering::Acquire) {
            // The core is starting: its offset is not measured yet. Look again soon.
            return MIN_SLEEP;
        }
        let start = w.poll_start.load(Ordering::Acquire);
        if start == 0 || start == *last_reported {
            return self.threshold;
        }
        let since_origin = i64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(i64::MAX);
        let now = since_origin.saturating_add(w.offset.load(Ordering::Relaxed));
        let held = u64::try_from(now.saturating_sub(i64::try_from(start).unwrap_or(i64::MAX)))
            .unwrap_or(0);
        let held = Duration::from_nanos(held);
        if held < self.threshold {
            return self.threshold - held;
        }
        let id = w.task_id.load(Ordering::Relaxed);
        let (task, group, stale) = if id == ROOT_TASK_ID {
            (
                Some(ROOT_NAME.to_owned()),
                DEFAULT_GROUP_NAME.to_owned(),
                false,
            )
        } else {
            let names = w.lock_names();
            let (task, group) = (names.task.clone(), names.group.clone());
            drop(names);
            (task, group, w.names_stale.load(Ordering::Relaxed))
        };
        if w.poll_start.load(Ordering::Acquire) != start {
            // It returned meanwhile; the kernel reports it (with exact names) itself.
            return self.threshold;
        }
        *last_reported = start;
        w.reports.fetch_add(1, Ordering::Relaxed);
        let task = if stale {
            "(name not published)".to_owned()
        } else {
            task.unwrap_or_else(|| "(unnamed)".to_owned())
        };
        log::warn!(
            "seastar: stall on core {}: task {task} #{id} in scheduling group {group} has held \
             the core for {} ms and is still running",
            w.core,
            held.as_millis()
        );
        self.threshold
    }
}

/// Shortest sleep of the watchdog thread: bounds its wake-ups when a poll is about to reach
/// the threshold or a core is starting.
const MIN_SLEEP: Duration = Duration::from_millis(1);
/// Longest sleep (a huge threshold): `stop` unparks the thread anyway.
const MAX_SLEEP: Duration = Duration::from_secs(1);

std::thread_local! {
    /// This core's watch, for `core_stats`.
    static CURRENT: RefCell<Option<Arc<CoreWatch>>> = const { RefCell::new(None) };
}

/// Keeps this thread's watch reachable until dropped.
pub(crate) struct CurrentGuard {
    _private: (),
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

pub(crate) fn set_current(watch: Option<Arc<CoreWatch>>) -> CurrentGuard {
    CURRENT.with(|c| *c.borrow_mut() = watch);
    CurrentGuard { _private: () }
}

/// Stalls the watchdog reported on this thread's core, if it has a watchdog.
pub(crate) fn current_reports() -> Option<u64> {
    CURRENT.with(|c| c.borrow().as_ref().map(|w| w.reports()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(w: &CoreWatch) -> (Option<String>, String) {
        let n = w.lock_names();
        (n.task.clone(), n.group.clone())
    }

    /// The groups of these tests, at their index on the core.
    const GROUPS: [&str; 6] = [DEFAULT_GROUP_NAME, "main", "slow", "batch", "old!", "new!"];

    fn group_index(name: &str) -> u32 {
        match GROUPS.iter().position(|g| *g == name) {
            Some(i) => u32::try_from(i).expect("few groups"),
            None => panic!("test group {name} has no index"),
        }
    }

    fn poll(local: &WatchLocal, id: u64, task: Option<&str>, group: &str) {
        local.poll_started(&PollInfo::new(
            id,
            task,
            group,
            group_index(group),
            Instant::from_nanos(5),
        ));
        local.poll_ended(Instant::from_nanos(6));
    }

    #[test]
    fn the_published_names_follow_the_polled_task() {
        let shared = Arc::new(CoreWatch::new(0));
        let local = WatchLocal::new(shared.clone(), StdInstant::now(), Instant::from_nanos(1));
        let a = (Some("a".to_owned()), "main".to_owned());
        let b = (Some("b".to_owned()), "slow".to_owned());
        poll(&local, 1, Some("a"), "main");
        assert_eq!(names(&shared), a);
        // The same task again (no comparison), another one, then the first again.
        poll(&local, 1, Some("a"), "main");
        assert_eq!(names(&shared), a);
        poll(&local, 2, Some("b"), "slow");
        assert_eq!(names(&shared), b);
        poll(&local, 1, Some("a"), "main");
        assert_eq!(names(&shared), a);
        // The root is never published: the watchdog knows its names.
        poll(&local, ROOT_TASK_ID, Some(ROOT_NAME), DEFAULT_GROUP_NAME);
        assert_eq!(names(&shared), a);
        // An unnamed task with the same group is still a change.
        poll(&local, 3, None, "main");
        assert_eq!(names(&shared), (None, "main".to_owned()));
    }

    #[test]
    fn tasks_taking_turns_are_compared_once_and_a_new_group_is_published() {
        let shared = Arc::new(CoreWatch::new(0));
        let local = WatchLocal::new(shared.clone(), StdInstant::now(), Instant::from_nanos(1));
        // Connections' tasks in one group, polled round robin: the names are published once
        // and each task is compared once, not on every poll. (Named: unnamed tasks are known
        // by their group alone, see the next test.)
        for _ in 0..3 {
            for id in 1..=20 {
                poll(&local, id, Some("conn"), "main");
            }
        }
        assert_eq!(names(&shared), (Some("conn".to_owned()), "main".to_owned()));
        let generation = local.generation.get();
        for id in 1..=20 {
            let slot = &local.verified[id as usize % VERIFIED_SLOTS];
            assert_eq!(slot.get(), (id, generation), "task {id} verified");
        }
        // A group created later, whose name lives where a dropped group's did (same address,
        // same length, other bytes): a new task in it publishes its own name.
        let mut group = String::from("old!");
        poll(&local, 21, Some("t"), &group);
        assert_eq!(names(&shared), (Some("t".to_owned()), "old!".to_owned()));
        group.replace_range(.., "new!");
        poll(&local, 22, Some("t"), &group);
        assert_eq!(names(&shared), (Some("t".to_owned()), "new!".to_owned()));
        // A task verified before the change is compared again, and republishes its names.
        poll(&local, 5, Some("conn"), "main");
        assert_eq!(names(&shared), (Some("conn".to_owned()), "main".to_owned()));
        // Two tasks sharing a slot: each gets its own names.
        let other = 5 + VERIFIED_SLOTS as u64;
        poll(&local, other, Some("conn"), "batch");
        assert_eq!(
            names(&shared),
            (Some("conn".to_owned()), "batch".to_owned())
        );
        poll(&local, 5, Some("conn"), "main");
        assert_eq!(names(&shared), (Some("conn".to_owned()), "main".to_owned()));
    }

    #[test]
    fn unnamed_tasks_are_known_by_their_group() {
        let shared = Arc::new(CoreWatch::new(0));
        let local = WatchLocal::new(shared.clone(), StdInstant::now(), Instant::from_nanos(1));
        // A stream of new unnamed tasks (cross-core requests): published once, then known
        // by their group's index without the table or a comparison.
        poll(&local, 1, None, "main");
        let generation = local.generation.get();
        for id in 2..=600 {
            poll(&local, id, None, "main");
        }
        assert_eq!(names(&shared), (None, "main".to_owned()));
        assert_eq!(local.generation.get(), generation, "no republish");
        // A named task in between, then unnamed ones again, in another group and back.
        poll(&local, 601, Some("a"), "main");
        assert_eq!(names(&shared), (Some("a".to_owned()), "main".to_owned()));
        poll(&local, 602, None, "main");
        assert_eq!(names(&shared), (None, "main".to_owned()));
        poll(&local, 603, None, "batch");
        assert_eq!(names(&shared), (None, "batch".to_owned()));
        poll(&local, 604, None, "main");
        assert_eq!(names(&shared), (None, "main".to_owned()));
        // The named task again: compared, and republished.
        poll(&local, 601, Some("a"), "main");
        assert_eq!(names(&shared), (Some("a".to_owned()), "main".to_owned()));
        // Names the watchdog held when an unnamed task started are published by the next.
        {
            let _reading = shared.lock_names();
            poll(&local, 605, None, "slow");
        }
        assert!(shared.names_stale.load(Ordering::Relaxed));
        poll(&local, 606, None, "slow");
        assert!(!shared.names_stale.load(Ordering::Relaxed));
        assert_eq!(names(&shared), (None, "slow".to_owned()));
    }

    #[test]
    fn names_the_watchdog_held_are_published_on_the_next_poll() {
        let shared = Arc::new(CoreWatch::new(0));
        let local = WatchLocal::new(shared.clone(), StdInstant::now(), Instant::from_nanos(1));
        poll(&local, 1, Some("a"), "main");
        {
            // The watchdog is reading: task 2's names cannot be published now.
            let _reading = shared.lock_names();
            poll(&local, 2, Some("b"), "main");
        }
        assert!(shared.names_stale.load(Ordering::Relaxed));
        assert_eq!(names(&shared).0.as_deref(), Some("a"));
        // Task 2 polled again publishes them, though it was the last task seen.
        poll(&local, 2, Some("b"), "main");
        assert!(!shared.names_stale.load(Ordering::Relaxed));
        assert_eq!(names(&shared).0.as_deref(), Some("b"));
    }

    #[test]
    fn the_watchdog_sleeps_until_a_poll_could_reach_the_threshold() {
        // A threshold far beyond how long the test runs: what it asserts does not depend on
        // how fast it runs.
        let threshold = Duration::from_secs(1000);
        let dog = Watchdog::new(1, threshold);
        let shared = dog.core(0).expect("core 0");
        let mut reported = 0;
        // A core still starting (offset not measured): look again soon.
        assert_eq!(dog.check(&shared, &mut reported), MIN_SLEEP);
        // The core's clock reads 10,000 s now.
        let local = WatchLocal::new(
            shared.clone(),
            dog.origin(),
            Instant::from_nanos(10_000 * SEC),
        );
        // Between polls: a poll starting now needs the whole threshold.
        assert_eq!(dog.check(&shared, &mut reported), threshold);
        // A poll running for a second has at most the rest of the threshold left.
        let started = |at: u64| {
            local.poll_started(&PollInfo::new(7, None, "main", 1, Instant::from_nanos(at)))
        };
        started(9_999 * SEC);
        let left = dog.check(&shared, &mut reported);
        assert!(
            left <= Duration::from_secs(999) && left > Duration::ZERO,
            "{left:?}"
        );
        assert_eq!(shared.reports(), 0);
        // One running for 2,000 s is reported, once; then a new poll may start any moment.
        started(8_000 * SEC);
        assert_eq!(dog.check(&shared, &mut reported), threshold);
        assert_eq!(dog.check(&shared, &mut reported), threshold);
        assert_eq!(shared.reports(), 1);
        local.poll_ended(Instant::from_nanos(10_001 * SEC));
        assert_eq!(dog.check(&shared, &mut reported), threshold);
        assert_eq!(shared.reports(), 1);
    }

    const SEC: u64 = 1_000_000_000;
}
