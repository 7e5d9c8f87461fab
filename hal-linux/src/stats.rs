//! Counters of what a core's ring did: system calls, loop iterations, operations.

use std::cell::Cell;

/// A snapshot of a core's counters (see [`crate::UringPlatform::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UringStats {
    /// System calls made on this core's behalf: `enters + eventfd_writes`.
    pub syscalls: u64,
    /// `io_uring_enter` calls (park, flush, and submitting early because the SQ was full).
    pub enters: u64,
    /// eventfd writes by unparkers (from any thread): only made when the core was parked.
    pub eventfd_writes: u64,
    /// Calls to `park`: loop iterations.
    pub parks: u64,
    /// SQEs the kernel consumed (operations, cancels, eventfd reads, re-arms).
    pub submitted: u64,
    /// Operations accepted by `submit`.
    pub ops: u64,
    /// CQEs reaped for operations (excluding the eventfd read and cancel requests).
    pub completed: u64,
    /// Operations cancelled while in flight.
    pub cancels: u64,
    /// Cancelled operations the kernel stopped before they completed (`ECANCELED`); the rest
    /// of `cancels` completed anyway and their results were discarded.
    pub cancels_effective: u64,
    /// Times `submit` found the SQ full and entered the kernel early.
    pub sq_full_flushes: u64,
    /// Wake-ups through the eventfd (completed eventfd reads).
    pub unpark_wakeups: u64,
    /// CQEs whose `user_data` matched no live slot (should stay 0).
    pub stale_cqes: u64,
    /// `io_uring_enter` failures other than timeouts and interruptions.
    pub enter_errors: u64,
    /// Buffers in all pools (provided-buffer rings) of this core.
    pub pool_buffers: u64,
    /// Of those, buffers in the rings (not held by a receive's owner or queued for one).
    pub pool_buffers_free: u64,
    /// Pooled receives the kernel ended for lack of buffers (re-armed once some came back).
    pub pool_empty: u64,
    /// Pooled receives stopped because their owner held too many buffers (back-pressure).
    pub pool_pauses: u64,
}

/// Per-core counters; only touched from the core's thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) enters: Cell<u64>,
    pub(crate) parks: Cell<u64>,
    pub(crate) submitted: Cell<u64>,
    pub(crate) ops: Cell<u64>,
    pub(crate) completed: Cell<u64>,
    pub(crate) cancels: Cell<u64>,
    pub(crate) cancels_effective: Cell<u64>,
    pub(crate) sq_full_flushes: Cell<u64>,
    pub(crate) unpark_wakeups: Cell<u64>,
    pub(crate) stale_cqes: Cell<u64>,
    pub(crate) enter_errors: Cell<u64>,
    pub(crate) pool_empty: Cell<u64>,
    pub(crate) pool_pauses: Cell<u64>,
}

/// Add `n` to a counter.
pub(crate) fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

impl Counters {
    pub(crate) fn snapshot(&self, eventfd_writes: u64) -> UringStats {
        UringStats {
            syscalls: self.enters.get() + eventfd_writes,
            enters: self.enters.get(),
            eventfd_writes,
            parks: self.parks.get(),
            submitted: self.submitted.get(),
            ops: self.ops.get(),
            completed: self.completed.get(),
            cancels: self.cancels.get(),
            cancels_effective: self.cancels_effective.get(),
            sq_full_flushes: self.sq_full_flushes.get(),
            unpark_wakeups: self.unpark_wakeups.get(),
            stale_cqes: self.stale_cqes.get(),
            enter_errors: self.enter_errors.get(),
            pool_buffers: 0,
            pool_buffers_free: 0,
            pool_empty: self.pool_empty.get(),
            pool_pauses: self.pool_pauses.get(),
        }
    }
}
