use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;
use core::time::Duration;

use seastar_hal::Instant;

pub use crate::sched::GroupStats;

/// Counters kept by the owning core without atomics.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub tasks_spawned: Cell<u64>,
    pub polls: Cell<u64>,
    pub loop_iterations: Cell<u64>,
    pub parks: Cell<u64>,
    pub sleeps: Cell<u64>,
    pub idle_spins: Cell<u64>,
    pub idle_spin_hits: Cell<u64>,
    pub timers_fired: Cell<u64>,
    pub batches: Cell<u64>,
    pub quota_expirations: Cell<u64>,
    pub max_batch_polls: Cell<u64>,
    pub stalls: Cell<u64>,
}

/// A poll that held the core for at least the stall threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StallReport {
    /// The task's id on its core.
    pub task_id: u64,
    /// The task's name, if it had one.
    pub task_name: Option<String>,
    /// The name of the task's scheduling group.
    pub group: String,
    /// How long the poll held the core.
    pub duration: Duration,
    /// When the poll started (the platform's clock).
    pub started: Instant,
}

/// A snapshot of one core's executor statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecutorStats {
    /// Tasks spawned since the executor was created.
    pub tasks_spawned: u64,
    /// Task polls.
    pub polls: u64,
    /// Iterations of the scheduling loop (each one looks at I/O and timers once).
    pub loop_iterations: u64,
    /// Calls to the platform's `park` (blocking or not).
    pub parks: u64,
    /// Of those, the parks that could block (with a deadline in the future, or none).
    pub sleeps: u64,
    /// Idle poll windows started (see `ExecutorConfig::idle_poll`).
    pub idle_spins: u64,
    /// Of those, the windows that ended because work showed up (not by running out).
    pub idle_spin_hits: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// Tasks whose future is still alive.
    pub live_tasks: u64,
    /// Tasks waiting in the run queues (all groups) right now.
    pub run_queue_len: u64,
    /// Batches of task polls (loop iterations that polled at least one task).
    pub batches: u64,
    /// Batches ended because the task quota was used up.
    pub quota_expirations: u64,
    /// The most polls in one batch.
    pub max_batch_polls: u64,
    /// Polls that reached the stall threshold.
    pub stalls: u64,
    /// The latest of those.
    pub last_stall: Option<StallReport>,
    /// Per scheduling group, in creation order (index 0 is the default group `"main"`).
    pub groups: Vec<GroupStats>,
}

impl ExecutorStats {
    /// Mean task polls per loop iteration (0 before the first iteration).
    pub fn polls_per_iteration(&self) -> f64 {
        if self.loop_iterations == 0 {
            0.0
        } else {
            self.polls as f64 / self.loop_iterations as f64
        }
    }

    /// CPU time of the group called `name`, if there is one.
    pub fn group_runtime(&self, name: &str) -> Option<Duration> {
        self.groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.runtime)
    }
}

impl Stats {
    pub(crate) fn bump(c: &Cell<u64>, n: u64) {
        c.set(c.get().wrapping_add(n));
    }
}
