//! Per-core runtime statistics: the executor's, the I/O backend's and the cross-core
//! messaging counters of the calling core, in one snapshot. Every counter is kept by its core
//! in plain cells (no atomics); a snapshot is taken on the core itself.

use std::fmt;
use std::time::Duration;

use seastar_kernel::executor::ExecutorStats;
use seastar_kernel::smp::SmpStats;

use crate::io_handle::IoStats;

/// One core's statistics, from [`core_stats`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CoreStats {
    /// The core's index in its runtime.
    pub core: usize,
    /// Tasks, polls, loop iterations, run-queue length, time per scheduling group, stalls.
    pub executor: ExecutorStats,
    /// The I/O backend's counters (operations, completions, system calls).
    pub io: Option<IoStats>,
    /// Cross-core messages sent and received.
    pub smp: Option<SmpStats>,
    /// Stalls the runtime's watchdog reported while they happened (0 without a watchdog).
    pub watchdog_stalls: u64,
}

impl CoreStats {
    /// I/O operations submitted to the backend.
    pub fn io_submitted(&self) -> u64 {
        match self.io {
            Some(IoStats::Uring(s)) => s.ops,
            Some(IoStats::Mio(s)) => s.submitted,
            None => 0,
        }
    }

    /// I/O completions handed back (each shot of a multishot operation counts).
    pub fn io_completed(&self) -> u64 {
        match self.io {
            Some(IoStats::Uring(s)) => s.completed,
            Some(IoStats::Mio(s)) => s.completed,
            None => 0,
        }
    }

    /// System calls made on this core's behalf.
    pub fn syscalls(&self) -> u64 {
        match self.io {
            Some(IoStats::Uring(s)) => s.syscalls,
            Some(IoStats::Mio(s)) => s.syscalls(),
            None => 0,
        }
    }

    /// Cross-core messages sent.
    pub fn messages_sent(&self) -> u64 {
        self.smp.map_or(0, |s| s.sent)
    }

    /// Cross-core messages received.
    pub fn messages_received(&self) -> u64 {
        self.smp.map_or(0, |s| s.received)
    }
}

/// One line per core, for logs and the examples.
impl fmt::Display for CoreStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.executor;
        write!(
            f,
            "core {}: {} tasks spawned, {} live, {} polls ({:.1}/loop), run queue {}, \
             io {} submitted / {} completed, {} syscalls, smp {} sent / {} received, {} stalls",
            self.core,
            e.tasks_spawned,
            e.live_tasks,
            e.polls,
            e.polls_per_iteration(),
            e.run_queue_len,
            self.io_submitted(),
            self.io_completed(),
            self.syscalls(),
            self.messages_sent(),
            self.messages_received(),
            e.stalls,
        )?;
        if self.watchdog_stalls > 0 {
            write!(f, " ({} caught running)", self.watchdog_stalls)?;
        }
        for g in &e.groups {
            write!(
                f,
                "; group {} ({} shares) {}",
                g.name,
                g.shares,
                ms(g.runtime)
            )?;
        }
        if let Some(s) = &e.last_stall {
            write!(
                f,
                "; last stall: task {} in {} for {}",
                s.task_name.as_deref().unwrap_or("(unnamed)"),
                s.group,
                ms(s.duration)
            )?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A snapshot of the calling core's statistics, if this thread is a runtime core (inside
/// [`Runtime::run_on_all`](crate::Runtime::run_on_all) or `run_on_one`).
pub fn core_stats() -> Option<CoreStats> {
    let core = crate::io_handle::current_core()?;
    let executor = seastar_kernel::executor::stats()?;
    Some(CoreStats {
        core,
        executor,
        io: crate::io_handle::io_stats(),
        smp: seastar_kernel::smp::stats(),
        watchdog_stalls: super::watchdog::current_reports().unwrap_or(0),
    })
}
