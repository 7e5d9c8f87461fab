use crate::io::IoDriver;
use crate::Instant;

/// Wakes a parked core. Handed out by [`Platform::unparker`] and used from any core or thread.
///
/// Contract: `unpark` makes the core's current or next [`Platform::park`] return promptly. It
/// must be cheap when the core is not parked (check a flag before making a system call), must
/// not allocate, and must be safe to call from any thread at any time, any number of times.
pub trait Unpark: Send + Sync + 'static {
    /// Wake the core if it is parked, or make its next `park` return at once.
    fn unpark(&self);
}

/// Everything one core of the kernel needs from the platform it runs on.
///
/// One value per core, used only from that core's thread (it need not be `Send` or `Sync`).
/// Implemented by the io_uring and mio HALs, by the simulator behind the `sim` feature, and by
/// anyone who wants to run the kernel somewhere new: see the README's "building against a
/// custom HAL".
pub trait Platform {
    /// The cross-thread handle that wakes this core.
    type Unparker: Unpark + Clone;
    /// This core's I/O driver.
    type Io: IoDriver;

    /// The monotonic clock. Never goes backwards; nanosecond units.
    fn now(&self) -> Instant;

    /// Sleep the core until one of: an I/O completion arrives, `deadline` passes, or the core is
    /// unparked. `None` means no deadline; a deadline at or before [`now`](Self::now) means
    /// "do not block, just collect what is ready".
    ///
    /// Before returning, the platform records every completion that arrived and wakes the
    /// wakers registered for them (see [`IoDriver::poll_op`]). Spurious returns are allowed;
    /// the kernel re-checks its own state after each.
    fn park(&self, deadline: Option<Instant>);

    /// A handle other cores use to wake this one.
    fn unparker(&self) -> Self::Unparker;

    /// The I/O driver of this core.
    fn io(&self) -> &Self::Io;

    /// Submit queued I/O to the platform without waiting for anything. Platforms that batch
    /// submissions (io_uring) override this; the kernel calls it when it is about to run for a
    /// long time without parking. The default does nothing.
    ///
    /// The kernel's idle poll (an idle core polling for a while before it parks) calls it
    /// every few spin rounds, so it must be cheap when nothing is queued (no system call).
    /// A platform may also collect completions that are visible without a system call here
    /// (io_uring's completion ring), waking their wakers; those it can only collect with
    /// one wait for `park`, which the idle poll calls with a past deadline every few
    /// microseconds while [`IoDriver::in_flight`](crate::io::IoDriver::in_flight) is not zero.
    fn flush(&self) {}

    /// An observer of task polls as they happen, for a stall watchdog that reports a task
    /// *while* it holds the core (the kernel itself reports a long poll only after it
    /// returns). The kernel calls it around every task poll, so an implementation must be
    /// cheap: a few stores, no system call, no allocation in the common case. The default is
    /// none.
    fn stall_watch(&self) -> Option<&dyn StallWatch> {
        None
    }
}

/// What the kernel tells a [`StallWatch`] about the poll it is about to make.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PollInfo<'a> {
    /// The task's id, unique on its core.
    pub task_id: u64,
    /// The task's name, if it was given one.
    pub task_name: Option<&'a str>,
    /// The name of the task's scheduling group.
    pub group: &'a str,
    /// The index of the task's scheduling group on its core. For as long as the platform
    /// runs one executor, one index always means the same group and name (groups are never
    /// removed or renamed), so a watch may key what it published on it instead of comparing
    /// names.
    pub group_index: u32,
    /// When the poll starts, on this platform's clock ([`Platform::now`]).
    pub start: Instant,
}

impl<'a> PollInfo<'a> {
    /// Describe a poll.
    pub fn new(
        task_id: u64,
        task_name: Option<&'a str>,
        group: &'a str,
        group_index: u32,
        start: Instant,
    ) -> Self {
        PollInfo {
            task_id,
            task_name,
            group,
            group_index,
            start,
        }
    }
}

/// Watches task polls on one core (see [`Platform::stall_watch`]). Called only on the core's
/// own thread; an implementation typically publishes the poll's start time in an atomic that
/// a watchdog thread or timer reads.
pub trait StallWatch {
    /// A task poll starts.
    fn poll_started(&self, poll: &PollInfo<'_>);
    /// The poll that started last has returned, at `end` on the platform's clock.
    fn poll_ended(&self, end: Instant);
}

/// A shared platform is still the same platform: lets an adapter keep a handle to the core's
/// platform (for its I/O driver) while the executor owns another.
impl<P: Platform + ?Sized> Platform for alloc::rc::Rc<P> {
    type Unparker = P::Unparker;
    type Io = P::Io;

    fn now(&self) -> Instant {
        (**self).now()
    }
    fn park(&self, deadline: Option<Instant>) {
        (**self).park(deadline)
    }
    fn unparker(&self) -> Self::Unparker {
        (**self).unparker()
    }
    fn io(&self) -> &Self::Io {
        (**self).io()
    }
    fn flush(&self) {
        (**self).flush()
    }
    fn stall_watch(&self) -> Option<&dyn StallWatch> {
        (**self).stall_watch()
    }
}
