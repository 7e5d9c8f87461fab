use core::cell::Cell;

/// Counters kept by the owning core without atomics.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub tasks_spawned: Cell<u64>,
    pub polls: Cell<u64>,
    pub loop_iterations: Cell<u64>,
    pub parks: Cell<u64>,
    pub timers_fired: Cell<u64>,
}

/// A snapshot of one core's executor statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecutorStats {
    /// Tasks spawned since the executor was created.
    pub tasks_spawned: u64,
    /// Task polls.
    pub polls: u64,
    /// Iterations of the scheduling loop.
    pub loop_iterations: u64,
    /// Calls to the platform's `park` (blocking or not).
    pub parks: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// Tasks whose future is still alive.
    pub live_tasks: u64,
    /// Tasks waiting in the run queue right now.
    pub run_queue_len: u64,
}

impl Stats {
    pub(crate) fn bump(c: &Cell<u64>, n: u64) {
        c.set(c.get().wrapping_add(n));
    }
}
