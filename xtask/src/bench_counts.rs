//! The counting pass of `cargo xtask bench`: what the kernel does for a server per message,
//! counted by `perf stat` in a run of its own after a point's timed rounds (tracing perturbs
//! timing, so it never runs inside them).
//!
//! `perf stat -x, -D -1 --control fifo:CTL -p <server pid>` is attached to the server with its
//! counters disabled; whoever owns the measured window writes `enable` and `disable` into the
//! control FIFO at its edges (`loadgen --perf-control CTL` for echo, this module for `wrk`),
//! so the counts cover the same window as the messages they are divided by. perf is then
//! stopped with SIGINT, and its `-x,` output read from a file.
//!
//! Counted: the tracepoints of [`TRACEPOINTS`] (events of the server's threads: system calls,
//! io_uring submissions and completions, packets sent, context switches) and, where `perf
//! probe` can set uprobes, calls of libc's allocation functions ([`ALLOC_FUNCTIONS`]) in the
//! libc the server maps. The uprobes are added once per bench under a group named after this
//! process (`xtask_bench_<pid>`) and deleted when the bench ends; a guard process deletes them
//! too if this process dies first (Ctrl-C), and a later bench deletes groups whose process is
//! gone. Anything perf cannot count comes out as n/a with the reason, never as a failure of
//! the bench.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::run::capture;

/// The tracepoints counted. They fire in the context of the task doing the work, so `-p` counts
/// what the server's own threads do (an io_uring completion posted by task work the server
/// runs included).
pub const TRACEPOINTS: &[&str] = &[SYSCALLS, SQES, CQES, PACKETS_SENT, SCHED_SWITCH];

/// System calls entered.
pub const SYSCALLS: &str = "raw_syscalls:sys_enter";
/// io_uring submission queue entries consumed.
pub const SQES: &str = "io_uring:io_uring_submit_req";
/// io_uring completion queue entries posted.
pub const CQES: &str = "io_uring:io_uring_complete";
/// Packets handed to a network device (loopback included).
pub const PACKETS_SENT: &str = "net:net_dev_xmit";
/// Context switches away from the server's threads: the same as the timed runs' voluntary +
/// involuntary counts from /proc (both are counted in `__schedule` for the task switched
/// out), so the report keeps it in the JSON only, as a check.
pub const SCHED_SWITCH: &str = "sched:sched_switch";

/// libc's allocation entry points: every allocation of a Rust server on the system allocator
/// goes through one of them (`posix_memalign` only for alignments above 16, so glibc's relay
/// of small-alignment `memalign`s to `malloc` does not count one allocation twice).
pub const ALLOC_FUNCTIONS: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "posix_memalign",
    "aligned_alloc",
];

/// How long perf may take to attach, or to exit once its target is gone.
const PERF_TIMEOUT: Duration = Duration::from_secs(10);

/// One counter as `perf stat -x,` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Counted.
    Value(u64),
    /// `<not counted>`: the counter never ran (the task was not scheduled while it was enabled).
    NotCounted,
    /// `<not supported>`: the event cannot be counted here.
    NotSupported,
}

impl Count {
    pub fn value(self) -> Option<u64> {
        match self {
            Count::Value(v) => Some(v),
            Count::NotCounted | Count::NotSupported => None,
        }
    }

    /// For the JSON: the number, or perf's own marker as a string.
    pub fn json(self) -> String {
        match self {
            Count::Value(v) => v.to_string(),
            Count::NotCounted => "\"<not counted>\"".to_owned(),
            Count::NotSupported => "\"<not supported>\"".to_owned(),
        }
    }
}

/// The counters of `perf stat -x,` output, in order: `value,unit,event,run time,percent,...`
/// per line; comment lines (`# started on ...`) and blank lines are skipped. Values that are
/// not integers (a `task-clock` in milliseconds) are rounded.
pub fn parse_perf_stat_csv(text: &str) -> Vec<(String, Count)> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(value), Some(event)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let count = match *value {
            "<not counted>" => Count::NotCounted,
            "<not supported>" => Count::NotSupported,
            v => match v.parse::<u64>() {
                Ok(n) => Count::Value(n),
                Err(_) => match v.parse::<f64>() {
                    Ok(x) if x.is_finite() && x >= 0.0 => Count::Value(x.round() as u64),
                    _ => continue,
                },
            },
        };
        if !event.is_empty() {
            out.push(((*event).to_owned(), count));
        }
    }
    out
}

/// One line of `perf probe --list`: `  group:event  (on function@source in /path/lib.so)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEntry {
    pub group: String,
    pub event: String,
    /// The binary the probe is in, when the line names one.
    pub binary: Option<String>,
}

pub fn parse_probe_list(text: &str) -> Vec<ProbeEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let name = line.split_whitespace().next()?;
            let (group, event) = name.split_once(':')?;
            if group.is_empty() || event.is_empty() {
                return None;
            }
            let binary = line
                .rfind(" in ")
                .map(|i| line[i + 4..].trim_end_matches(')').trim().to_owned())
                .filter(|b| !b.is_empty());
            Some(ProbeEntry {
                group: group.to_owned(),
                event: event.to_owned(),
                binary,
            })
        })
        .collect()
}

/// The libc a process maps, from the text of its `/proc/<pid>/maps` (the path is the last
/// field of a line; glibc's is `libc.so.6`, older ones `libc-2.NN.so`).
pub fn libc_in_maps(maps: &str) -> Option<PathBuf> {
    maps.lines().find_map(|line| {
        let path = line.split_whitespace().nth(5)?;
        let name = Path::new(path).file_name()?.to_str()?;
        let is_libc =
            name.starts_with("libc.so") || (name.starts_with("libc-") && name.ends_with(".so"));
        is_libc.then(|| PathBuf::from(path))
    })
}

/// The pid in a probe group of ours (`xtask_bench_<pid>` or `xtask_bench_<pid>_<n>`).
fn group_pid(group: &str) -> Option<u32> {
    let rest = group.strip_prefix("xtask_bench_")?;
    rest.split('_').next()?.parse().ok()
}

/// Why perf failed, with the fix when the cause is known: no perf, or not permitted.
fn perf_failure(perf_said: &str) -> String {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    match paranoid {
        Some(level) if level > -1 && !is_root() => format!(
            "perf may not trace as a non-root user with kernel.perf_event_paranoid = {level}: \
             run `sudo sysctl kernel.perf_event_paranoid=-1` or run as root (perf said: {perf_said})"
        ),
        _ => format!("perf cannot count: {perf_said}"),
    }
}

/// Effective uid 0, from `/proc/self/status` (std has no `geteuid`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The last non-empty line of `text`, or a placeholder.
fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output")
        .to_owned()
}

/// The guard's script (`$0` is our probe group, `$1` our directory): once its standard input
/// closes, remove the directory's files and delete the group, retrying for up to 10 s while a
/// perf that is still stopping keeps the events busy.
const GUARD: &str = r#"trap '' INT TERM HUP; read _
rm -f "$1"/ctl-* "$1"/stat-*.csv; rmdir "$1" 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    perf probe -l "$0:*" 2>/dev/null | grep -q . || exit 0
    perf probe -q -d "$0:*" >/dev/null 2>&1 && exit 0
    sleep 0.5
done"#;

/// Uprobes on the allocation functions of one libc, deleted on drop.
struct Probes {
    libc: PathBuf,
    group: String,
    /// perf's names of the events that were added (`group:function`).
    events: Vec<String>,
}

impl Probes {
    fn add(libc: &Path, group: &str) -> Result<Probes, String> {
        let mut probes = Probes {
            libc: libc.to_owned(),
            group: group.to_owned(),
            events: Vec::new(),
        };
        // One function at a time: one that this libc lacks must not cost the others.
        let mut errors = Vec::new();
        for func in ALLOC_FUNCTIONS {
            let spec = format!("{group}:{func}={func}");
            let mut add = Command::new("perf");
            add.arg("probe").arg("-x").arg(libc).args(["-a", &spec]);
            if let Err(e) = capture(&mut add) {
                errors.push(format!("{func}: {e}"));
            }
        }
        let listed = capture(Command::new("perf").args(["probe", "-l", &format!("{group}:*")]))
            .unwrap_or_default();
        probes.events = parse_probe_list(&listed)
            .into_iter()
            .filter(|p| p.group == group)
            .map(|p| format!("{}:{}", p.group, p.event))
            .collect();
        if probes.events.len() < ALLOC_FUNCTIONS.len() {
            let why = if errors.is_empty() {
                "the probes were not listed after adding them".to_owned()
            } else {
                errors.join("; ")
            };
            return Err(format!(
                "`perf probe -x {} -a FUNC` set {} of the {} uprobes ({why}); adding uprobes \
                 needs root (it writes the tracefs uprobe_events)",
                libc.display(),
                probes.events.len(),
                ALLOC_FUNCTIONS.len()
            ));
        }
        Ok(probes)
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        let group = format!("{}:*", self.group);
        let _ = capture(Command::new("perf").args(["probe", "-q", "-d", &group]));
    }
}

/// Delete probe groups of earlier benches whose process is gone (one killed with SIGKILL,
/// whose perf kept the events busy until its guard gave up, say).
fn delete_stale_groups() {
    let Ok(listed) = capture(Command::new("perf").args(["probe", "-l"])) else {
        return;
    };
    let mut stale: Vec<String> = parse_probe_list(&listed)
        .into_iter()
        .filter(|p| {
            group_pid(&p.group).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|p| p.group)
        .collect();
    stale.sort();
    stale.dedup();
    for group in stale {
        let _ = capture(Command::new("perf").args(["probe", "-q", "-d", &format!("{group}:*")]));
    }
}

/// The counting pass's tool: perf, checked once, and the uprobes it set.
pub struct Counter {
    /// Why nothing can be counted (no perf, not permitted).
    unavailable: Option<String>,
    /// Tracepoints perf can count here.
    usable: Vec<&'static str>,
    /// Tracepoints it cannot, and why.
    unusable: Vec<(&'static str, String)>,
    /// Whether to set uprobes on the allocation functions.
    allocs: bool,
    /// The uprobes, or why they could not be set; `None` until the first server is seen.
    probes: Option<Result<Probes, String>>,
    /// Control FIFOs and perf's output files.
    dir: PathBuf,
    sessions: usize,
    /// Removes `dir` and deletes our probe group if this process dies before [`Drop`] does it:
    /// it waits for its standard input to close, which happens however this process ends,
    /// and ignores the Ctrl-C that reaches the whole process group.
    guard: Option<(Child, ChildStdin)>,
}

/// Our uprobe group: named after this process, so a later bench can tell a stale one.
fn probe_group() -> String {
    format!("xtask_bench_{}", std::process::id())
}

impl Counter {
    /// Checks that perf is there and can count each tracepoint (`perf stat -- true`).
    pub fn new(allocs: bool) -> Counter {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        let mut counter = Counter {
            unavailable: None,
            usable: Vec::new(),
            unusable: Vec::new(),
            allocs,
            probes: None,
            dir,
            sessions: 0,
            guard: None,
        };
        let on_path = std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join("perf").is_file())
        });
        if !on_path {
            counter.unavailable = Some(
                "`perf` is not on PATH: install it (Debian: `sudo apt-get install linux-perf`; \
                 Ubuntu: `sudo apt-get install linux-tools-$(uname -r)`)"
                    .to_owned(),
            );
            return counter;
        }
        let check = |events: &str| {
            capture(Command::new("perf").args(["stat", "-x,", "-e", events, "--", "true"]))
        };
        if check(&TRACEPOINTS.join(",")).is_ok() {
            counter.usable = TRACEPOINTS.to_vec();
        } else {
            for &event in TRACEPOINTS {
                match check(event) {
                    Ok(_) => counter.usable.push(event),
                    Err(e) => counter.unusable.push((event, e)),
                }
            }
            if counter.usable.is_empty() {
                let first = counter
                    .unusable
                    .first()
                    .map_or(String::new(), |(_, e)| e.clone());
                counter.unavailable = Some(perf_failure(&first));
                return counter;
            }
        }
        if let Err(e) = std::fs::create_dir_all(&counter.dir) {
            counter.unavailable = Some(format!("cannot create {}: {e}", counter.dir.display()));
            return counter;
        }
        counter.guard = Command::new("sh")
            .args(["-c", GUARD, &probe_group()])
            .arg(&counter.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .and_then(|mut child| child.stdin.take().map(|stdin| (child, stdin)));
        counter
    }

    /// Why nothing can be counted, if so.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// What the report says once about figures that are n/a, and why.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(why) = &self.unavailable {
            notes.push(format!("every count is n/a: {why}"));
            return notes;
        }
        for (event, why) in &self.unusable {
            notes.push(format!(
                "`{event}` is n/a: perf cannot count it here (unknown to this kernel?): {why}"
            ));
        }
        if let Some(Err(why)) = &self.probes {
            notes.push(format!("allocations are n/a: {why}"));
        }
        if !self.allocs {
            notes.push("allocations are n/a: not counted (--no-alloc-counts)".to_owned());
        }
        notes
    }

    /// Attach perf to `pid`, counters disabled until `enable` is written to the session's
    /// control FIFO. `Err` says why this run cannot be counted.
    pub fn attach(&mut self, pid: u32) -> Result<Session, String> {
        if let Some(why) = &self.unavailable {
            return Err(why.clone());
        }
        let allocs = if self.allocs {
            self.alloc_events(pid)
        } else {
            Err("not counted (--no-alloc-counts)".to_owned())
        };
        self.sessions += 1;
        let ctl = self.dir.join(format!("ctl-{}", self.sessions));
        let out = self.dir.join(format!("stat-{}.csv", self.sessions));
        let _ = std::fs::remove_file(&ctl);
        capture(Command::new("mkfifo").arg(&ctl))?;
        // Read and write: opening a FIFO so never blocks (Linux), and perf finds it open.
        let ctl_file = File::options()
            .read(true)
            .write(true)
            .open(&ctl)
            .map_err(|e| format!("cannot open {}: {e}", ctl.display()))?;
        let mut events: Vec<String> = self.usable.iter().map(|e| (*e).to_owned()).collect();
        if let Ok(probes) = &allocs {
            events.extend(probes.iter().cloned());
        }
        let mut perf = Command::new("perf")
            .args(["stat", "-x,", "-D", "-1"])
            .arg("-o")
            .arg(&out)
            .arg(format!("--control=fifo:{}", ctl.display()))
            .args(["-e", &events.join(",")])
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start perf: {e}"))?;
        let (tx, lines) = mpsc::channel();
        if let Some(stderr) = perf.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut session = Session {
            perf,
            ctl,
            ctl_file,
            out,
            lines,
            said: Vec::new(),
            allocs: allocs.map(|_| ()),
        };
        session.wait_until_attached()?;
        Ok(session)
    }

    /// The uprobe events for the libc `pid` maps, set the first time a server is seen. Every
    /// server is built by one toolchain on one machine, so one libc is probed.
    fn alloc_events(&mut self, pid: u32) -> Result<Vec<String>, String> {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map_err(|e| format!("cannot read /proc/{pid}/maps: {e}"))?;
        let libc = libc_in_maps(&maps).ok_or(
            "the server maps no libc.so (statically linked?): its allocator is not libc's",
        )?;
        let probes = self.probes.get_or_insert_with(|| {
            delete_stale_groups();
            Probes::add(&libc, &probe_group())
        });
        match probes {
            Ok(p) if p.libc == libc => Ok(p.events.clone()),
            Ok(p) => Err(format!(
                "the server maps {}, the uprobes are on {}",
                libc.display(),
                p.libc.display()
            )),
            Err(why) => Err(why.clone()),
        }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        // Deletes the uprobes (every session has ended: perf no longer holds them).
        self.probes = None;
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((mut guard, stdin)) = self.guard.take() {
            drop(stdin);
            let _ = guard.wait();
        }
    }
}

/// perf attached to one server.
pub struct Session {
    perf: Child,
    ctl: PathBuf,
    ctl_file: File,
    out: PathBuf,
    /// perf's standard error, line by line.
    lines: mpsc::Receiver<String>,
    said: Vec<String>,
    /// Whether the allocation probes are among the events, or why not.
    allocs: Result<(), String>,
}

/// What one counting run counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Per tracepoint of [`TRACEPOINTS`] that perf counted.
    pub tracepoints: Vec<(String, Count)>,
    /// Per allocation function, or why allocations were not counted.
    pub allocs: Result<Vec<(String, Count)>, String>,
}

impl Figures {
    /// The count of tracepoint `event`, if it was counted.
    pub fn tracepoint(&self, event: &str) -> Option<Count> {
        self.tracepoints
            .iter()
            .find(|(e, _)| e == event)
            .map(|(_, c)| *c)
    }

    /// All allocation calls, if every function's count is there.
    pub fn allocations(&self) -> Option<u64> {
        let allocs = self.allocs.as_ref().ok().filter(|a| !a.is_empty())?;
        allocs.iter().map(|(_, c)| c.value()).sum()
    }
}

impl Session {
    /// The FIFO that takes perf's `enable` / `disable` commands.
    pub fn control_fifo(&self) -> &Path {
        &self.ctl
    }

    /// Start counting.
    pub fn enable(&mut self) -> Result<(), String> {
        self.command("enable")
    }

    /// Stop counting.
    pub fn disable(&mut self) -> Result<(), String> {
        self.command("disable")
    }

    fn command(&mut self, command: &str) -> Result<(), String> {
        self.ctl_file
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("cannot write {command:?} to {}: {e}", self.ctl.display()))
    }

    /// perf prints "Events disabled" once its counters are open on the target.
    fn wait_until_attached(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PERF_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains("Events disabled") => return Ok(()),
                Ok(line) => self.said.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.perf.kill();
                    let _ = self.perf.wait();
                    return Err(format!("perf stat did not attach within {PERF_TIMEOUT:?}"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.perf.wait();
                    return Err(perf_failure(&last_line(&self.said.join("\n"))));
                }
            }
        }
    }

    /// Stop perf and read what it counted.
    pub fn finish(mut self) -> Result<Figures, String> {
        // perf prints its counts and exits on SIGINT at once; it would notice its target's
        // exit only at its next one-second poll.
        #[cfg(target_os = "linux")]
        crate::run::signal("INT", &[self.perf.id()]);
        let deadline = Instant::now() + PERF_TIMEOUT;
        let status = loop {
            match self.perf.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = self.perf.kill();
                    let _ = self.perf.wait();
                    return Err(format!(
                        "perf stat did not exit within {PERF_TIMEOUT:?} of SIGINT"
                    ));
                }
                Err(e) => return Err(format!("waiting for perf stat failed: {e}")),
            }
        };
        self.said.extend(self.lines.try_iter());
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.ctl);
        let counted = parse_perf_stat_csv(&text);
        if counted.is_empty() {
            return Err(format!(
                "perf stat ({status}) counted nothing: {}",
                last_line(&self.said.join("\n"))
            ));
        }
        let (allocs, tracepoints): (Vec<_>, Vec<_>) = counted
            .into_iter()
            .partition(|(event, _)| event.starts_with("xtask_bench_"));
        let allocs = match std::mem::replace(&mut self.allocs, Ok(())) {
            Ok(()) => Ok(allocs
                .into_iter()
                .map(|(event, count)| {
                    let func = event.rsplit(':').next().unwrap_or(&event).to_owned();
                    (func, count)
                })
                .collect()),
            Err(why) => Err(why),
        };
        Ok(Figures {
            tracepoints,
            allocs,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Reached without `finish` only on an error path: do not leave perf running.
        if matches!(self.perf.try_wait(), Ok(None)) {
            let _ = self.perf.kill();
            let _ = self.perf.wait();
        }
        let _ = std::fs::remove_file(&self.ctl);
        let _ = std::fs::remove_file(&self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_perf_stat_csv() {
        let out = "# started on Mon Nov 30 23:53:02 2026

30344,,raw_syscalls:sys_enter,921049725,100.00,,
171010,,io_uring:io_uring_submit_req,921049725,100.00,,
<not counted>,,net:net_dev_xmit,0,100.00,,
<not supported>,,sched:sched_switch,0,100.00,,
12.50,msec,task-clock,12500000,100.00,0.010,CPUs utilized
garbage line
7,,xtask_bench_42:malloc,921049725,100.00,,
";
        assert_eq!(
            parse_perf_stat_csv(out),
            vec![
                ("raw_syscalls:sys_enter".to_owned(), Count::Value(30344)),
                (
                    "io_uring:io_uring_submit_req".to_owned(),
                    Count::Value(171010)
                ),
                ("net:net_dev_xmit".to_owned(), Count::NotCounted),
                ("sched:sched_switch".to_owned(), Count::NotSupported),
                ("task-clock".to_owned(), Count::Value(13)),
                ("xtask_bench_42:malloc".to_owned(), Count::Value(7)),
            ]
        );
        assert!(parse_perf_stat_csv("").is_empty());
    }

    #[test]
    fn reads_the_probe_list() {
        let listed = "  xtask_bench_42:aligned_alloc (on __GI___libc_memalign@./malloc/malloc.c in /usr/lib/x86_64-linux-gnu/libc.so.6)
  xtask_bench_42:malloc    (on __GI___libc_malloc@./malloc/malloc.c in /usr/lib/x86_64-linux-gnu/libc.so.6)
  probe:do_sys_open    (on do_sys_open%return)
not a probe line
";
        let entries = parse_probe_list(listed);
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[1],
            ProbeEntry {
                group: "xtask_bench_42".to_owned(),
                event: "malloc".to_owned(),
                binary: Some("/usr/lib/x86_64-linux-gnu/libc.so.6".to_owned()),
            }
        );
        assert_eq!(entries[2].group, "probe");
        assert_eq!(entries[2].binary, None);
        assert_eq!(group_pid("xtask_bench_42"), Some(42));
        assert_eq!(group_pid("xtask_bench_42_1"), Some(42));
        assert_eq!(group_pid("probe_libc"), None);
    }

    #[test]
    fn finds_libc_in_maps() {
        let maps = "\
55d0c8a00000-55d0c8a3b000 r--p 00000000 103:02 1234 /work/target/release/echo-seastar
7f3b1c000000-7f3b1c021000 rw-p 00000000 00:00 0
7f3b1d428000-7f3b1d44e000 r--p 00000000 103:02 5678 /usr/lib/x86_64-linux-gnu/libcap.so.2
7f3b1d600000-7f3b1d626000 r--p 00000000 103:02 9012 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd5a3f0000-7ffd5a411000 rw-p 00000000 00:00 0                          [stack]
";
        assert_eq!(
            libc_in_maps(maps),
            Some(PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(
            libc_in_maps("1-2 r-xp 0 08:01 7 /lib/libc-2.31.so\n"),
            Some(PathBuf::from("/lib/libc-2.31.so"))
        );
        assert_eq!(
            libc_in_maps("1-2 r-xp 0 08:01 7 /lib/libcrypto.so.3\n"),
            None
        );
    }

    #[test]
    fn allocations_need_every_function() {
        let figures = |allocs| Figures {
            tracepoints: vec![("raw_syscalls:sys_enter".to_owned(), Count::Value(5))],
            allocs,
        };
        let counted = figures(Ok(vec![
            ("malloc".to_owned(), Count::Value(3)),
            ("realloc".to_owned(), Count::Value(2)),
        ]));
        assert_eq!(counted.allocations(), Some(5));
        assert_eq!(
            counted.tracepoint("raw_syscalls:sys_enter"),
            Some(Count::Value(5))
        );
        assert_eq!(counted.tracepoint("net:net_dev_xmit"), None);
        let partly = figures(Ok(vec![
            ("malloc".to_owned(), Count::Value(3)),
            ("calloc".to_owned(), Count::NotCounted),
        ]));
        assert_eq!(partly.allocations(), None);
        assert_eq!(figures(Err("no uprobes".to_owned())).allocations(), None);
        assert_eq!(figures(Ok(Vec::new())).allocations(), None);
        assert_eq!(Count::NotSupported.json(), "\"<not supported>\"");
        assert_eq!(Count::Value(9).json(), "9");
    }
}
