//! A process's CPU time and context switches from `/proc`: user and system time of all its
//! threads (`/proc/<pid>/stat`), the figure "server CPU per message" is made of, and the
//! voluntary / involuntary context switches of its threads (`/proc/<pid>/task/*/status`).

use std::io;
use std::time::Duration;

/// User and system CPU time of a process, all threads together (exited ones included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// utime: time spent in user space.
    pub user: Duration,
    /// stime: time spent in the kernel on the process's behalf.
    pub system: Duration,
}

impl CpuTimes {
    /// User + system.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// What was used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// User and system CPU time `pid` has used so far (all threads, including exited ones).
///
/// The resolution is one clock tick (10 ms on Linux), so measure windows of seconds.
pub fn cpu_times(pid: u32) -> io::Result<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (utime, stime) = parse_utime_stime(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat format"),
        )
    })?;
    let per_sec = crate::sys::clock_ticks_per_sec();
    let time = |ticks: u64| Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_sec);
    Ok(CpuTimes {
        user: time(utime),
        system: time(stime),
    })
}

/// utime and stime, in clock ticks, from the text of a `stat` file. The command name (field 2)
/// is in parentheses and may itself hold spaces or parentheses, so fields are counted from the
/// last `)`: after it come field 3 (state) onwards; utime and stime are fields 14 and 15.
pub fn parse_utime_stime(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the first after ')'; field 14 is the 12th after it.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Context switches of a process's threads so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtxSwitches {
    /// The thread gave up the CPU itself: it blocked (waited for I/O, a futex, a sleep).
    pub voluntary: u64,
    /// The scheduler took the CPU away (time slice over, a higher-priority task woke).
    pub involuntary: u64,
}

impl CtxSwitches {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &CtxSwitches) -> CtxSwitches {
        CtxSwitches {
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            involuntary: self.involuntary.saturating_sub(earlier.involuntary),
        }
    }
}

/// The context switches of every thread `pid` has now, summed over `/proc/<pid>/task/*/status`
/// (a process's own `status` counts only its main thread). A thread that exits between two
/// readings takes its counts with it, so read around windows in which the threads stay.
pub fn ctx_switches(pid: u32) -> io::Result<CtxSwitches> {
    let mut sum = CtxSwitches::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread may exit between listing and reading: skip it.
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        let one = parse_ctxt_switches(&status).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no ctxt_switches lines in a /proc/{pid}/task/*/status"),
            )
        })?;
        sum.voluntary += one.voluntary;
        sum.involuntary += one.involuntary;
    }
    Ok(sum)
}

/// `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` from the text of a `status`
/// file; `None` unless both are there.
pub fn parse_ctxt_switches(status: &str) -> Option<CtxSwitches> {
    let mut voluntary = None;
    let mut involuntary = None;
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().parse::<u64>().ok();
        match key {
            "voluntary_ctxt_switches" => voluntary = value,
            "nonvoluntary_ctxt_switches" => involuntary = value,
            _ => {}
        }
    }
    Some(CtxSwitches {
        voluntary: voluntary?,
        involuntary: involuntary?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_after_a_tricky_command_name() {
        let stat = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 1 0 12345 1000 100";
        assert_eq!(parse_utime_stime(stat), Some((250, 75)));
        assert_eq!(parse_utime_stime("4242 (x) S 1 2"), None);
    }

    #[test]
    fn parses_context_switches() {
        let status = "Name:\techo-seastar\nState:\tS (sleeping)\nThreads:\t2\n\
                      voluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n";
        assert_eq!(
            parse_ctxt_switches(status),
            Some(CtxSwitches {
                voluntary: 1234,
                involuntary: 56
            })
        );
        assert_eq!(parse_ctxt_switches("voluntary_ctxt_switches:\t3\n"), None);
        assert_eq!(
            parse_ctxt_switches("voluntary_ctxt_switches:\tx\nnonvoluntary_ctxt_switches:\t1\n"),
            None
        );
    }

    #[test]
    fn differences_never_go_below_zero() {
        let a = CtxSwitches {
            voluntary: 5,
            involuntary: 9,
        };
        let b = CtxSwitches {
            voluntary: 7,
            involuntary: 4,
        };
        assert_eq!(
            b.since(&a),
            CtxSwitches {
                voluntary: 2,
                involuntary: 0
            }
        );
        let t = CpuTimes {
            user: Duration::from_millis(30),
            system: Duration::from_millis(70),
        };
        assert_eq!(t.total(), Duration::from_millis(100));
        assert_eq!(t.since(&t), CpuTimes::default());
    }

    #[test]
    fn reads_our_own_process() {
        assert!(cpu_times(std::process::id()).is_ok());
        let before = ctx_switches(std::process::id()).expect("reads task/*/status");
        std::thread::sleep(Duration::from_millis(5));
        let after = ctx_switches(std::process::id()).expect("reads task/*/status");
        assert!(after.voluntary > before.voluntary, "sleeping blocks");
    }
}
