//! `cargo xtask bench`: the echo servers side by side under one load generator (`loadgen`),
//! and the HTTP plaintext servers under `wrk`.
//!
//! Builds the binaries of `seastar-benches` in release, then for every point of the matrix
//! (message size × connections × messages in flight) runs every server in turn, round after
//! round (A B C … A B C …, so drift on a shared machine hits every server alike): the server
//! pinned to one CPU, `loadgen` pinned to another, warm-up, then a measured window in which
//! `loadgen` samples the server's CPU time (user and kernel) and its threads' context switches
//! from `/proc`. Every figure in the tables is next to its ratio against the peers measured in
//! the same run; the raw figures of every run go to `target/bench-report/report.json`, the
//! tables to `report.md`. After a point's timed rounds, a counting pass (`bench_counts`) runs
//! each server once more under `perf stat` for the per-message counts of the second table.
//!
//! Benchmarks are not tests: nothing here asserts a timing. The task fails only when a run
//! could not be made (a server that did not start, a load generator that failed).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bench_counts::{Count, Counter, Figures, CQES, PACKETS_SENT, SQES, SYSCALLS};
use crate::run;

const HELP: &str = "\
cargo xtask bench: servers side by side (ours, tokio, monoio, hyper, a raw io_uring floor)

USAGE:
    cargo xtask bench [--quick] [OPTIONS]

Builds `seastar-benches` (release), then runs the matrix: each server pinned to the server
CPU, the load (`loadgen` for echo, `wrk` for HTTP) pinned to the load CPU; servers alternated
A B A B over the rounds. Prints two markdown tables per matrix point and writes them, with
every run's raw figures, to target/bench-report/report.md and report.json: throughput,
p50/p99/p999 latency, server CPU per message and the ratio of ours to every peer; then, per
message, where the server's CPU goes and what the kernel does for it (see COUNTS).

MATRIX:
    full (default)  echo: 64 B and 4 KiB messages × 16 and 256 connections × 1 and 16 in
                    flight; HTTP plaintext: 16 and 256 connections; 4 rounds, 2 s warm-up +
                    5 s measured per run, then a counting run per server and point, 2 s
                    warm-up + 2 s counted (about 35 minutes)
    --quick         echo: 64 B × 16 conns × 1 in flight, 4 KiB × 256 conns × 16 in flight;
                    HTTP: 16 conns; 2 rounds, 1 s warm-up + 2 s measured; no counting pass
                    (under 2 minutes, plus the build); with --counts, counting runs of 0.5 s
                    warm-up + 0.5 s counted (wrk: 1 s + 1 s)

OPTIONS:
    --quick             The reduced matrix above.
    --servers A,B,...   Only these servers (default: all). Echo: seastar-uring, seastar-mio,
                        tokio-ct, tokio-mt, monoio, raw-uring. HTTP: seastar-uring, hyper,
                        monoio.
    --no-http           Skip the HTTP points.
    --rounds N          Rounds (each runs every server once).
    --warmup SECS       Warm-up per run (wrk: rounded up to whole seconds).
    --duration SECS     Measured window per run (wrk: rounded up to whole seconds).
    --server-cpu N      CPU for the servers (default 0).
    --load-cpu N        CPU for loadgen / wrk (default 1).
    --counts            Run the counting pass with --quick too (about 30 s more).
    --no-counts         Skip the counting pass (no perf).
    --no-alloc-counts   Count without the allocation uprobes (they slow a server that
                        allocates per message: hyper serves about half as fast under them,
                        which moves its other counts by a few percent).
    --count-window SECS Counted window of a counting run (default: 2 s, at most --duration;
                        --quick: 0.5 s). Its warm-up is --warmup, at most 2 s (--quick: 0.5 s).
    --no-build          Use the binaries already built.
    -h, --help          Print this message.

The HTTP points need `wrk` and `taskset` on PATH (`sudo apt-get install wrk util-linux`);
without them they are skipped, and the report says why.

The server's CPU per message (utime + stime over the measured window, divided by the messages
echoed in it) is the fair figure on a 2-CPU machine, where the load generator saturates its CPU
before the server does. Figures from a machine others use are noisy: compare ratios from one
run, never absolute numbers across runs.

COUNTS (the second table of each point, per message):
    From the timed runs: user and kernel CPU (utime and stime of /proc/<pid>/stat) and the
    voluntary / involuntary context switches of the server's threads (/proc/<pid>/task/*/
    status), read at the measured window's edges like the CPU.
    From the counting pass: after a point's timed rounds, one more run per server (tracing
    perturbs timing, so never in the timed runs) with `perf stat -x, -D -1 --control fifo:..
    -p <server pid>` attached and enabled only over that run's measured window: system calls
    (raw_syscalls:sys_enter), io_uring SQEs (io_uring:io_uring_submit_req) and CQEs
    (io_uring:io_uring_complete), packets sent (net:net_dev_xmit), sched:sched_switch (JSON
    only: the same switches as the /proc counts), and allocations: uprobes (`perf probe -x
    <libc> -a`, group xtask_bench_<pid>) on malloc, calloc, realloc, posix_memalign and
    aligned_alloc of the libc the server maps, deleted when the bench ends (by a guard process
    if it is killed; a later bench deletes groups whose process is gone).
    Needs `perf` (Debian: `sudo apt-get install linux-perf`) and root, or
    `sudo sysctl kernel.perf_event_paranoid=-1` for the tracepoints (the uprobes need root).
    Whatever perf cannot count is n/a, with the reason in the report; the timed figures come
    out regardless.
";

/// Ours: the figure every ratio is taken against.
const OURS: &str = "seastar-uring";

/// What a matrix point measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The echo protocol, driven by `loadgen`.
    Echo,
    /// HTTP/1.1 plaintext `GET /` → "Hello, World!", driven by `wrk`.
    Http,
}

/// A server of the matrix: its name in the report, its binary and extra arguments.
#[derive(Debug, Clone, Copy)]
struct Server {
    kind: Kind,
    name: &'static str,
    bin: &'static str,
    args: &'static [&'static str],
    what: &'static str,
}

const SERVERS: &[Server] = &[
    Server {
        kind: Kind::Echo,
        name: "seastar-uring",
        bin: "echo-seastar",
        args: &["--backend", "uring"],
        what: "ours, io_uring backend, 1 core",
    },
    Server {
        kind: Kind::Echo,
        name: "seastar-mio",
        bin: "echo-seastar",
        args: &["--backend", "mio"],
        what: "ours, mio (epoll) backend, 1 core",
    },
    Server {
        kind: Kind::Echo,
        name: "tokio-ct",
        bin: "echo-tokio-ct",
        args: &[],
        what: "tokio current-thread",
    },
    Server {
        kind: Kind::Echo,
        name: "tokio-mt",
        bin: "echo-tokio-mt",
        args: &["--threads", "1"],
        what: "tokio multi-thread, 1 worker",
    },
    Server {
        kind: Kind::Echo,
        name: "monoio",
        bin: "echo-monoio",
        args: &[],
        what: "monoio (io_uring)",
    },
    Server {
        kind: Kind::Echo,
        name: "raw-uring",
        bin: "echo-raw-uring",
        args: &[],
        what: "the floor: raw io_uring, multishot recv + provided buffers, no runtime",
    },
    Server {
        kind: Kind::Http,
        name: "seastar-uring",
        bin: "http-seastar",
        args: &["--backend", "uring"],
        what: "ours, io_uring, 1 core, minimal HTTP/1.1 in the bench crate",
    },
    Server {
        kind: Kind::Http,
        name: "hyper",
        bin: "http-hyper",
        args: &[],
        what: "hyper (http1) on tokio current-thread",
    },
    Server {
        kind: Kind::Http,
        name: "monoio",
        bin: "http-monoio",
        args: &[],
        what: "monoio, the same minimal HTTP/1.1 as ours",
    },
];

/// One point of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    kind: Kind,
    size: usize,
    connections: usize,
    inflight: usize,
}

impl Point {
    fn title(&self) -> String {
        if self.kind == Kind::Http {
            return format!("HTTP/1.1 plaintext (wrk), {} connections", self.connections);
        }
        let size = if self.size % 1024 == 0 {
            format!("{} KiB", self.size / 1024)
        } else {
            format!("{} B", self.size)
        };
        format!(
            "{size} messages, {} connections, {} in flight each",
            self.connections, self.inflight
        )
    }
}

#[derive(Debug)]
struct Options {
    quick: bool,
    servers: Vec<Server>,
    rounds: usize,
    warmup: f64,
    duration: f64,
    server_cpu: usize,
    load_cpu: usize,
    build: bool,
    http: bool,
    /// Run the counting pass (perf) after each point's timed rounds.
    counts: bool,
    /// Count allocations in it (uprobes on libc).
    alloc_counts: bool,
    /// The counting run's warm-up and counted window.
    count_warmup: f64,
    count_window: f64,
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Options {
        quick,
        servers: SERVERS.to_vec(),
        rounds: if quick { 2 } else { 4 },
        warmup: if quick { 1.0 } else { 2.0 },
        duration: if quick { 2.0 } else { 5.0 },
        server_cpu: 0,
        load_cpu: 1,
        build: true,
        http: true,
        // `--quick` stays under two minutes only without it (~30 s more).
        counts: !quick,
        alloc_counts: true,
        // Counts per message need few messages.
        count_warmup: if quick { 0.5 } else { 2.0 },
        count_window: if quick { 0.5 } else { 2.0 },
    };
    let mut count_window = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |name: &str, v: String| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| *x >= 0.0 && x.is_finite())
                .ok_or_else(|| format!("bad value {v:?} for {name}"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => {}
            "--no-build" => o.build = false,
            "--no-http" => o.http = false,
            "--counts" => o.counts = true,
            "--no-counts" => o.counts = false,
            "--no-alloc-counts" => o.alloc_counts = false,
            "--count-window" => count_window = Some(num(arg, value(arg)?)?.max(0.1)),
            "--servers" => {
                let list = value(arg)?;
                let names: Vec<&str> = list.split(',').map(str::trim).collect();
                if let Some(bad) = names
                    .iter()
                    .find(|n| !SERVERS.iter().any(|s| s.name == **n))
                {
                    return Err(format!("unknown server {bad:?}"));
                }
                o.servers = SERVERS
                    .iter()
                    .filter(|s| names.contains(&s.name))
                    .copied()
                    .collect();
            }
            "--rounds" => o.rounds = num(arg, value(arg)?)?.max(1.0) as usize,
            "--warmup" => o.warmup = num(arg, value(arg)?)?,
            "--duration" => o.duration = num(arg, value(arg)?)?.max(0.1),
            "--server-cpu" => o.server_cpu = num(arg, value(arg)?)? as usize,
            "--load-cpu" => o.load_cpu = num(arg, value(arg)?)? as usize,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    // The counting run: the timed runs' warm-up (at most the default) and a window of
    // its own, never longer than the timed one.
    o.count_warmup = o.count_warmup.min(o.warmup);
    o.count_window = count_window.unwrap_or_else(|| o.count_window.min(o.duration));
    Ok(Some(o))
}

fn matrix(quick: bool, http: bool) -> Vec<Point> {
    let echo = |size, connections, inflight| Point {
        kind: Kind::Echo,
        size,
        connections,
        inflight,
    };
    let web = |connections| Point {
        kind: Kind::Http,
        size: 0,
        connections,
        inflight: 1,
    };
    let mut points = Vec::new();
    if quick {
        points.push(echo(64, 16, 1));
        points.push(echo(4096, 256, 16));
        if http {
            points.push(web(16));
        }
        return points;
    }
    for size in [64, 4096] {
        for connections in [16, 256] {
            for inflight in [1, 16] {
                points.push(echo(size, connections, inflight));
            }
        }
    }
    if http {
        points.push(web(16));
        points.push(web(256));
    }
    points
}

/// What the counting run of one server counted, with the messages of its window.
#[derive(Debug)]
struct Counted {
    messages: u64,
    window_s: f64,
    figures: Figures,
    /// The load's JSON line (loadgen's, or a short one for wrk).
    load: String,
}

/// The counting run of one server at one point, or why there is none.
#[derive(Debug)]
struct CountRun {
    point: Point,
    server: &'static str,
    outcome: Result<Counted, String>,
}

/// One run: one server under one point of the matrix, in one round.
#[derive(Debug)]
struct RunResult {
    point: Point,
    server: &'static str,
    round: usize,
    /// The load generator's JSON line, or why the run failed.
    outcome: Result<String, String>,
}

/// `cargo xtask bench`: the servers (below), then the Raft section, which lives in
/// `bench_raft.rs` and appends itself to the report this writes.
pub fn run(args: &[String]) -> ExitCode {
    crate::bench_raft::around(args, &target_dir().join("bench-report"), run_servers)
}

fn run_servers(args: &[String]) -> ExitCode {
    let opts = match parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n");
            eprint!("{HELP}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    if opts.build {
        let mut cmd = run::cargo();
        cmd.args(["build", "--release", "-p", "seastar-benches", "--bins"]);
        println!("bench: building the servers and the load generator (release)");
        if let Err(e) = run::stream(&mut cmd, None) {
            eprintln!("bench: build failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut opts = opts;
    let mut http_skipped = None;
    if opts.http && opts.servers.iter().any(|s| s.kind == Kind::Http) {
        if let Some(missing) = missing_http_tools() {
            println!("bench: {missing}; the HTTP points are skipped");
            http_skipped = Some(missing);
            opts.http = false;
        }
    }
    let bin_dir = target_dir().join("release");
    for name in opts
        .servers
        .iter()
        .filter(|s| opts.http || s.kind == Kind::Echo)
        .map(|s| s.bin)
        .chain(std::iter::once("loadgen"))
    {
        if !bin_dir.join(name).is_file() {
            eprintln!(
                "bench: {} is missing; build it with `cargo build --release -p seastar-benches --bins` \
                 (or drop --no-build)",
                bin_dir.join(name).display()
            );
            return ExitCode::FAILURE;
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if opts.server_cpu == opts.load_cpu || cpus < 2 {
        println!(
            "bench: warning: server and load share a CPU ({cpus} available): the figures \
             measure the two together"
        );
    }
    let points = matrix(opts.quick, opts.http);
    let servers_of = |kind: Kind| -> Vec<Server> {
        opts.servers
            .iter()
            .filter(|s| s.kind == kind)
            .copied()
            .collect()
    };
    let total: usize = points
        .iter()
        .map(|p| opts.rounds * servers_of(p.kind).len())
        .sum();
    let mut counter = opts.counts.then(|| Counter::new(opts.alloc_counts));
    if let Some(why) = counter.as_ref().and_then(Counter::unavailable) {
        println!("bench: no counting pass: {why}");
    }
    let counting = counter.as_ref().is_some_and(|c| c.unavailable().is_none());
    let count_runs: usize = if counting {
        points.iter().map(|p| servers_of(p.kind).len()).sum()
    } else {
        0
    };
    let per_run = opts.warmup.ceil() + opts.duration.ceil() + 0.5;
    let per_count = opts.count_warmup + opts.count_window.ceil() + 1.0;
    println!(
        "bench: {total} runs ({} points × {} rounds × their servers) and {count_runs} counting \
         runs, about {:.0} s",
        points.len(),
        opts.rounds,
        total as f64 * per_run + count_runs as f64 * per_count
    );
    let load_before = loadavg();
    let mut results = Vec::with_capacity(total);
    let mut counts = Vec::with_capacity(count_runs);
    let mut n = 0;
    for &point in &points {
        for round in 1..=opts.rounds {
            for server in &servers_of(point.kind) {
                n += 1;
                let outcome = one_run(&bin_dir, server, point, &opts);
                match &outcome {
                    Ok(line) => println!(
                        "[{n:>3}/{total}] {}  round {round}: \
                         {:>10.0} msg/s  p99 {:>8.1} us  server {:>6.2} us/msg",
                        run_label(server.name, point),
                        json_num(line, "msgs_per_s").unwrap_or(0.0),
                        json_num(line, "p99_us").unwrap_or(0.0),
                        json_num(line, "server_cpu_us_per_msg").unwrap_or(f64::NAN),
                    ),
                    Err(e) => println!(
                        "[{n:>3}/{total}] {}  round {round}: FAILED: {e}",
                        run_label(server.name, point)
                    ),
                }
                results.push(RunResult {
                    point,
                    server: server.name,
                    round,
                    outcome,
                });
            }
        }
        // Tracing perturbs timing: count in runs of their own, after the timed ones.
        if let Some(counter) = counter.as_mut().filter(|_| counting) {
            for server in &servers_of(point.kind) {
                let outcome = count_run(&bin_dir, server, point, &opts, counter);
                match &outcome {
                    Ok(c) => println!(
                        "[count] {}: {} msgs, per msg {} syscalls, {} allocations",
                        run_label(server.name, point),
                        c.messages,
                        per_msg(
                            c.figures.tracepoint(SYSCALLS).and_then(Count::value),
                            c.messages
                        ),
                        per_msg(c.figures.allocations(), c.messages),
                    ),
                    Err(e) => println!(
                        "[count] {}: not counted: {e}",
                        run_label(server.name, point)
                    ),
                }
                counts.push(CountRun {
                    point,
                    server: server.name,
                    outcome,
                });
            }
        }
    }
    let meta = Meta {
        date: utc_now(),
        quick: opts.quick,
        rounds: opts.rounds,
        warmup: opts.warmup,
        duration: opts.duration,
        server_cpu: opts.server_cpu,
        load_cpu: opts.load_cpu,
        cpus,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        load_before,
        load_after: loadavg(),
        elapsed: started.elapsed(),
        http_skipped,
        counting: if opts.counts {
            Ok((opts.count_warmup, opts.count_window))
        } else if opts.quick {
            Err("`--quick` skips it to stay under two minutes; `--counts` adds it (about 30 s)")
        } else {
            Err("`--no-counts`")
        },
        count_notes: counter.as_ref().map(Counter::notes).unwrap_or_default(),
    };
    // Deletes the uprobes as soon as they are no longer needed.
    drop(counter);
    let md = markdown(&meta, &opts.servers, &points, &results, &counts);
    println!("\n{md}");
    let out_dir = target_dir().join("bench-report");
    let written = std::fs::create_dir_all(&out_dir)
        .and_then(|()| std::fs::write(out_dir.join("report.md"), &md))
        .and_then(|()| std::fs::write(out_dir.join("report.json"), json(&meta, &results, &counts)));
    match written {
        Ok(()) => println!(
            "bench: wrote {} and report.json",
            out_dir.join("report.md").display()
        ),
        Err(e) => {
            eprintln!("bench: cannot write {}: {e}", out_dir.display());
            return ExitCode::FAILURE;
        }
    }
    let failed = results.iter().filter(|r| r.outcome.is_err()).count();
    if failed > 0 {
        eprintln!("bench: {failed} of {total} runs failed (see above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `$CARGO_TARGET_DIR` (relative to the workspace root if relative), else `<root>/target`.
fn target_dir() -> PathBuf {
    let root = crate::project_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Kills the server when dropped, whatever happened to the run.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A run's server and point as the progress lines show them, in aligned columns.
fn run_label(server: &str, point: Point) -> String {
    format!(
        "{server:<14} {:>5} B {:>3} conns {:>2} in flight",
        point.size, point.connections, point.inflight
    )
}

/// Start `server` on a free port, pinned to the server CPU, and wait for `listening on`.
fn start_server(
    bin_dir: &Path,
    server: &Server,
    opts: &Options,
) -> Result<(ServerProcess, u16), String> {
    let port = free_port()?;
    let mut cmd = Command::new(bin_dir.join(server.bin));
    cmd.args(server.args)
        .args(["--port", &port.to_string()])
        .args(["--core", &opts.server_cpu.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = ServerProcess(
        cmd.spawn()
            .map_err(|e| format!("cannot start {}: {e}", server.bin))?,
    );
    let stdout = child.0.stdout.take().ok_or("no server stdout")?;
    // Wait for "listening on", then keep draining its output so it can never block on it.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("listening on") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let status = child.0.try_wait().ok().flatten();
        return Err(match status {
            Some(s) => format!("{} exited before listening ({s})", server.bin),
            None => format!("{} did not print `listening on` within 10 s", server.bin),
        });
    }
    Ok((child, port))
}

/// `loadgen` against the server on `port` (pid `pid`) for one point.
fn loadgen(
    bin_dir: &Path,
    (port, pid): (u16, u32),
    point: Point,
    opts: &Options,
    (warmup, duration): (f64, f64),
    label: &str,
) -> Command {
    let mut load = Command::new(bin_dir.join("loadgen"));
    load.args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--connections", &point.connections.to_string()])
        .args(["--size", &point.size.to_string()])
        .args(["--inflight", &point.inflight.to_string()])
        .args(["--warmup", &warmup.to_string()])
        .args(["--duration", &duration.to_string()])
        .args(["--core", &opts.load_cpu.to_string()])
        .args(["--server-pid", &pid.to_string()])
        .args(["--label", label])
        .arg("--quiet");
    load
}

/// Run `loadgen` and return its JSON line, checked: no errors, messages echoed, the server
/// still alive.
fn loadgen_line(
    load: &mut Command,
    server: &mut ServerProcess,
    bin: &str,
) -> Result<String, String> {
    let out = run::capture(load)?;
    if let Ok(Some(status)) = server.0.try_wait() {
        return Err(format!("{bin} died during the run ({status})"));
    }
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or("loadgen printed no JSON line")?
        .to_owned();
    if json_num(&line, "errors").unwrap_or(0.0) > 0.0 {
        return Err(format!(
            "loadgen saw errors: {}",
            json_str(&line, "first_error").unwrap_or_default()
        ));
    }
    if json_num(&line, "messages").unwrap_or(0.0) == 0.0 {
        return Err("no message was echoed in the measured window".into());
    }
    Ok(line)
}

fn one_run(
    bin_dir: &Path,
    server: &Server,
    point: Point,
    opts: &Options,
) -> Result<String, String> {
    let (mut child, port) = start_server(bin_dir, server, opts)?;
    let pid = child.0.id();
    if point.kind == Kind::Http {
        return wrk_run(port, point, opts, pid, server.name);
    }
    let window = (opts.warmup, opts.duration);
    let mut load = loadgen(bin_dir, (port, pid), point, opts, window, server.name);
    loadgen_line(&mut load, &mut child, server.bin)
}

/// The counting run of one server at one point: perf attached through a window of its own
/// (see `bench_counts`), after the timed rounds.
fn count_run(
    bin_dir: &Path,
    server: &Server,
    point: Point,
    opts: &Options,
    counter: &mut Counter,
) -> Result<Counted, String> {
    let (mut child, port) = start_server(bin_dir, server, opts)?;
    let pid = child.0.id();
    let mut session = counter.attach(pid)?;
    let (messages, window_s, load) = if point.kind == Kind::Http {
        // wrk takes whole seconds, so the warm-up is one at least: without one, a server's
        // cold start (monoio's: a few thousand requests in the first seconds) is counted.
        if opts.count_warmup > 0.0 {
            run::capture(&mut wrk(opts.load_cpu, point, port, opts.count_warmup))?;
        }
        session.enable()?;
        let t0 = Instant::now();
        let out = run::capture(&mut wrk(opts.load_cpu, point, port, opts.count_window));
        let wall = t0.elapsed().as_secs_f64();
        session.disable()?;
        let w = parse_wrk(&out?).ok_or("cannot read wrk's output")?;
        let load = format!(
            "{{\"tool\":\"wrk\",\"messages\":{},\"msgs_per_s\":{:.1},\"window_s\":{wall:.4}}}",
            w.requests, w.requests_per_sec
        );
        (w.requests, wall, load)
    } else {
        let window = (opts.count_warmup, opts.count_window);
        let mut load = loadgen(bin_dir, (port, pid), point, opts, window, server.name);
        load.arg("--perf-control").arg(session.control_fifo());
        let line = loadgen_line(&mut load, &mut child, server.bin)?;
        let messages = json_num(&line, "messages").unwrap_or(0.0) as u64;
        (
            messages,
            json_num(&line, "window_s").unwrap_or(f64::NAN),
            line,
        )
    };
    let figures = session.finish()?;
    drop(child);
    Ok(Counted {
        messages,
        window_s,
        figures,
        load,
    })
}

/// `wrk` (and `taskset`, to pin it) on `PATH`, or which is missing and how to install it.
fn missing_http_tools() -> Option<String> {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false)
    };
    if !on_path("wrk") {
        return Some(
            "`wrk` is not on PATH: install it with `sudo apt-get install wrk` (Debian/Ubuntu), \
             `sudo dnf install wrk` (Fedora) or `brew install wrk` (macOS)"
                .to_owned(),
        );
    }
    if !on_path("taskset") {
        return Some(
            "`taskset` (to pin wrk) is not on PATH: install it with \
             `sudo apt-get install util-linux`"
                .to_owned(),
        );
    }
    None
}

/// Drive an HTTP server with `wrk` (one thread, pinned to the load CPU): a warm-up run, then
/// the measured run, with the server's CPU time read from `/proc/<pid>/stat` around it. The
/// figures come back as a JSON line shaped like `loadgen`'s (wrk reports no p99.9, and its
/// window includes its own connection setup, the same for every server).
fn wrk_run(
    port: u16,
    point: Point,
    opts: &Options,
    pid: u32,
    label: &str,
) -> Result<String, String> {
    if opts.warmup > 0.0 {
        run::capture(&mut wrk(opts.load_cpu, point, port, opts.warmup))?;
    }
    let cpu0 = proc_cpu_secs(pid)?;
    let switches0 = proc_ctx_switches(pid)?;
    let t0 = Instant::now();
    let out = run::capture(&mut wrk(opts.load_cpu, point, port, opts.duration))?;
    let wall = t0.elapsed().as_secs_f64();
    let (user, kernel) = proc_cpu_secs(pid)?;
    let switches1 = proc_ctx_switches(pid)?;
    let (user, kernel) = (user - cpu0.0, kernel - cpu0.1);
    let cpu = user + kernel;
    let voluntary = switches1.0.saturating_sub(switches0.0);
    let involuntary = switches1.1.saturating_sub(switches0.1);
    let w = parse_wrk(&out).ok_or_else(|| {
        format!(
            "cannot read wrk's output: {}",
            out.lines().collect::<Vec<_>>().join(" / ")
        )
    })?;
    if w.bad_responses > 0 || w.requests == 0 {
        return Err(format!(
            "wrk: {} requests, {} non-2xx/3xx responses",
            w.requests, w.bad_responses
        ));
    }
    let per_req = |x: f64| x / w.requests as f64;
    Ok(format!(
        "{{\"label\":\"{label}\",\"tool\":\"wrk\",\"connections\":{},\"messages\":{},\
         \"msgs_per_s\":{:.1},\"p50_us\":{:.2},\"p90_us\":{:.2},\"p99_us\":{:.2},\
         \"socket_errors\":{},\"errors\":0,\"window_s\":{wall:.4},\"server_cpu_s\":{cpu:.4},\
         \"server_cpu_util\":{:.4},\"server_cpu_us_per_msg\":{:.4},\
         \"server_user_cpu_s\":{user:.4},\"server_kernel_cpu_s\":{kernel:.4},\
         \"server_user_us_per_msg\":{:.4},\"server_kernel_us_per_msg\":{:.4},\
         \"server_ctx_voluntary\":{voluntary},\"server_ctx_involuntary\":{involuntary},\
         \"server_ctx_voluntary_per_msg\":{:.6},\"server_ctx_involuntary_per_msg\":{:.6}}}",
        point.connections,
        w.requests,
        w.requests_per_sec,
        w.p50_us,
        w.p90_us,
        w.p99_us,
        w.socket_errors,
        cpu / wall.max(1e-9),
        per_req(cpu * 1e6),
        per_req(user * 1e6),
        per_req(kernel * 1e6),
        per_req(voluntary as f64),
        per_req(involuntary as f64),
    ))
}

/// `wrk` for one HTTP point against `port`, pinned to `load_cpu`, for `secs` (wrk takes whole
/// seconds: rounded up, at least one).
fn wrk(load_cpu: usize, point: Point, port: u16, secs: f64) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &load_cpu.to_string(), "wrk", "-t1"])
        .args(["-c", &point.connections.to_string()])
        .args(["-d", &format!("{}s", secs.ceil().max(1.0) as u64)])
        .args(["--latency", &format!("http://127.0.0.1:{port}/")]);
    cmd
}

/// What `cargo xtask bench` reads from `wrk --latency`'s report.
#[derive(Debug, Default, PartialEq)]
struct WrkFigures {
    requests: u64,
    requests_per_sec: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    bad_responses: u64,
    socket_errors: u64,
}

fn parse_wrk(out: &str) -> Option<WrkFigures> {
    let mut w = WrkFigures::default();
    let mut seen_rate = false;
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => {
                w.requests_per_sec = rate.parse().ok()?;
                seen_rate = true;
            }
            [n, "requests", "in", ..] => w.requests = n.parse().ok()?,
            ["50%", t] => w.p50_us = wrk_time_us(t)?,
            ["90%", t] => w.p90_us = wrk_time_us(t)?,
            ["99%", t] => w.p99_us = wrk_time_us(t)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => w.bad_responses = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                w.socket_errors = rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    seen_rate.then_some(w)
}

/// wrk's times ("105.83us", "2.01ms", "1.20s", "3.00m") in microseconds.
fn wrk_time_us(t: &str) -> Option<f64> {
    let split = t.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(v * scale)
}

/// A process's user and system CPU time in seconds, from `/proc/<pid>/stat` (fields 14 and
/// 15, counted after the command name's closing parenthesis).
fn proc_cpu_secs(pid: u32) -> Result<(f64, f64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let secs = |t: u64| t as f64 / clock_ticks() as f64;
    match (ticks(11), ticks(12)) {
        (Some(utime), Some(stime)) => Ok((secs(utime), secs(stime))),
        _ => Err(format!("unexpected /proc/{pid}/stat format")),
    }
}

/// Voluntary and involuntary context switches of all of a process's threads, summed over
/// `/proc/<pid>/task/*/status` (the echo path reads the same through
/// `seastar_benches::proc_stat`, which xtask, having no dependencies, cannot use).
fn proc_ctx_switches(pid: u32) -> Result<(u64, u64), String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("cannot read /proc/{pid}/task: {e}"))?;
    let mut sum = (0, 0);
    for task in tasks.flatten() {
        // A thread may exit between listing and reading: skip it.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let (v, i) = parse_ctxt_switches(&status)
            .ok_or_else(|| format!("no ctxt_switches lines in {}", task.path().display()))?;
        sum = (sum.0 + v, sum.1 + i);
    }
    Ok(sum)
}

/// `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` from a `status` file's text.
fn parse_ctxt_switches(status: &str) -> Option<(u64, u64)> {
    let field = |key: &str| {
        status.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == key).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    Some((
        field("voluntary_ctxt_switches")?,
        field("nonvoluntary_ctxt_switches")?,
    ))
}

/// `getconf CLK_TCK` (100 on Linux; std has no sysconf).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        run::capture(Command::new("getconf").arg("CLK_TCK"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// A port nobody listens on now (bind port 0, read it, let it go).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// The number after `"key":` in a flat JSON object (the load generator's line).
fn json_num(line: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let rest = &line[line.find(&pat)? + pat.len()..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// The string after `"key":` in a flat JSON object (escapes kept as they are).
fn json_str(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let rest = &line[line.find(&pat)? + pat.len()..];
    let mut out = String::new();
    let mut escaped = false;
    for c in rest.chars() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => return Some(out),
            (_, c) => {
                escaped = false;
                out.push(c);
            }
        }
    }
    None
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC` (no dependencies: civil-from-days).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[derive(Debug)]
struct Meta {
    date: String,
    quick: bool,
    rounds: usize,
    warmup: f64,
    duration: f64,
    server_cpu: usize,
    load_cpu: usize,
    cpus: usize,
    kernel: String,
    load_before: String,
    load_after: String,
    elapsed: Duration,
    /// Why the HTTP points did not run (a missing tool), if so.
    http_skipped: Option<String>,
    /// The counting pass's warm-up and window, or why it was skipped.
    counting: Result<(f64, f64), &'static str>,
    /// Why figures of the counting pass are n/a, once per cause.
    count_notes: Vec<String>,
}

/// One server's figures at one point, over its successful rounds.
#[derive(Debug, Default)]
struct Summary {
    runs: usize,
    msgs_per_s: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    cpu_per_msg: f64,
    cpu_min: f64,
    cpu_max: f64,
    cpu_util: f64,
    client_util: f64,
    user_per_msg: f64,
    kernel_per_msg: f64,
    voluntary_per_msg: f64,
    involuntary_per_msg: f64,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn summarize(results: &[RunResult], point: Point, server: &str) -> Summary {
    let lines: Vec<&str> = results
        .iter()
        .filter(|r| r.point == point && r.server == server)
        .filter_map(|r| r.outcome.as_deref().ok())
        .collect();
    let get = |key: &str| -> Vec<f64> {
        lines
            .iter()
            .filter_map(|l| json_num(l, key))
            .collect::<Vec<_>>()
    };
    let cpu = get("server_cpu_us_per_msg");
    Summary {
        runs: lines.len(),
        msgs_per_s: mean(&get("msgs_per_s")),
        p50: median(&get("p50_us")),
        p99: median(&get("p99_us")),
        p999: median(&get("p999_us")),
        cpu_per_msg: mean(&cpu),
        cpu_min: cpu.iter().copied().fold(f64::INFINITY, f64::min),
        cpu_max: cpu.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        cpu_util: mean(&get("server_cpu_util")),
        client_util: mean(&get("client_cpu_util")),
        user_per_msg: mean(&get("server_user_us_per_msg")),
        kernel_per_msg: mean(&get("server_kernel_us_per_msg")),
        voluntary_per_msg: mean(&get("server_ctx_voluntary_per_msg")),
        involuntary_per_msg: mean(&get("server_ctx_involuntary_per_msg")),
    }
}

/// `count` per message with 3 decimals, or "n/a" when it was not counted.
fn per_msg(count: Option<u64>, messages: u64) -> String {
    match count {
        Some(n) if messages > 0 => format!("{:.3}", n as f64 / messages as f64),
        _ => "n/a".to_owned(),
    }
}

fn ratio(ours: f64, peer: f64) -> String {
    if ours.is_finite() && peer.is_finite() && peer > 0.0 {
        format!("{:.2}", ours / peer)
    } else {
        "–".to_owned()
    }
}

/// `v` with `prec` decimals, or "–" when there is no figure.
fn num(v: f64, prec: usize) -> String {
    if v.is_finite() {
        format!("{v:.prec$}")
    } else {
        "–".to_owned()
    }
}

fn percent(v: f64) -> String {
    if v.is_finite() {
        format!("{:.0}%", v * 100.0)
    } else {
        "–".to_owned()
    }
}

fn markdown(
    meta: &Meta,
    servers: &[Server],
    points: &[Point],
    results: &[RunResult],
    counts: &[CountRun],
) -> String {
    let mut md = String::new();
    let matrix = if meta.quick { "quick" } else { "full" };
    md.push_str(&format!(
        "Server benchmark, {}: {matrix} matrix, {} rounds (servers alternated A B A B), \
         {} s warm-up + {} s measured per run; server pinned to CPU {}, `loadgen` or `wrk` to CPU {} \
         ({} CPUs, Linux {}; load average {} before, {} after; took {:.0} s).\n\n",
        meta.date,
        meta.rounds,
        meta.warmup,
        meta.duration,
        meta.server_cpu,
        meta.load_cpu,
        meta.cpus,
        meta.kernel,
        meta.load_before,
        meta.load_after,
        meta.elapsed.as_secs_f64(),
    ));
    md.push_str(
        "Throughput: mean over rounds; latency: median over rounds of each run's percentile; \
         server CPU: utime + stime over the measured window ÷ messages echoed in it (mean, \
         min–max over rounds). `ours ÷ peer` divides seastar-uring's figure by the row's: \
         below 1 in CPU/msg means we spend less, above 1 in msg/s means we serve more. HTTP \
         points count requests as messages; `wrk` reports no p99.9 and no CPU of its own.\n",
    );
    md.push_str(
        "\nPer message, second table of each point: user and kernel CPU (utime and stime \
         separately) and the server threads' voluntary / involuntary context switches (summed \
         over `/proc/<pid>/task/*/status`) come from the timed runs (mean over rounds). The \
         other columns come from a counting pass: after a point's timed rounds, one more run \
         per server with `perf stat -p <server pid>` attached and enabled only for that run's \
         measured window (tracing perturbs timing, so never in the timed runs): system calls \
         (`raw_syscalls:sys_enter`), io_uring SQEs (`io_uring:io_uring_submit_req`) and CQEs \
         (`io_uring:io_uring_complete`), packets sent (`net:net_dev_xmit`), each as it happens \
         in the server's threads, and allocations (uprobes on malloc, calloc, realloc, \
         posix_memalign and aligned_alloc of the libc the server maps; a call is one \
         allocation). `sched:sched_switch` is counted too but shown only in the JSON: it is \
         the timed runs' voluntary + involuntary switches again. HTTP: wrk's whole run is the \
         window, connection setup included, as in the timed runs.",
    );
    match meta.counting {
        Ok((warmup, window)) => md.push_str(&format!(
            " The uprobes slow a server that allocates per message (hyper serves about half as \
             fast under them), which moves its other counts by a few percent; \
             `--no-alloc-counts` counts without them. Counting runs here: {warmup} s warm-up + \
             {window} s counted{}.\n",
            if meta.quick {
                " (`--quick`: a short window; counts per message need few messages)"
            } else {
                ""
            }
        )),
        Err(why) => md.push_str(&format!(
            " The counting pass did not run here, so its columns are n/a: {why}.\n"
        )),
    }
    for note in &meta.count_notes {
        md.push_str(&format!("\nn/a: {note}\n"));
    }
    if let Some(why) = &meta.http_skipped {
        md.push_str(&format!("\nThe HTTP points were skipped: {why}.\n"));
    }
    for &point in points {
        let servers: Vec<&Server> = servers.iter().filter(|s| s.kind == point.kind).collect();
        let has_ours = servers.iter().any(|s| s.name == OURS);
        md.push_str(&format!("\n### {}\n\n", point.title()));
        md.push_str(
            "| server | msg/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/msg (min–max) | \
             server CPU use | load CPU use | ours ÷ peer: CPU/msg | ours ÷ peer: msg/s |\n",
        );
        md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        let ours = summarize(results, point, OURS);
        for server in &servers {
            let s = summarize(results, point, server.name);
            if s.runs == 0 {
                md.push_str(&format!("| {} | failed | | | | | | | | |\n", server.name));
                continue;
            }
            let (r_cpu, r_tput) = if has_ours && server.name != OURS {
                (
                    ratio(ours.cpu_per_msg, s.cpu_per_msg),
                    ratio(ours.msgs_per_s, s.msgs_per_s),
                )
            } else {
                ("–".to_owned(), "–".to_owned())
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} ({}–{}) | {} | {} | {r_cpu} | {r_tput} |\n",
                server.name,
                num(s.msgs_per_s, 0),
                num(s.p50, 1),
                num(s.p99, 1),
                num(s.p999, 1),
                num(s.cpu_per_msg, 2),
                num(s.cpu_min, 2),
                num(s.cpu_max, 2),
                percent(s.cpu_util),
                percent(s.client_util),
            ));
        }
        let floor = summarize(results, point, "raw-uring");
        if point.kind == Kind::Echo && has_ours && ours.runs > 0 && floor.runs > 0 {
            md.push_str(&format!(
                "\nOverhead of seastar-uring over the raw io_uring floor: {:+.2} µs of server CPU \
                 per message ({}×).\n",
                ours.cpu_per_msg - floor.cpu_per_msg,
                ratio(ours.cpu_per_msg, floor.cpu_per_msg)
            ));
        }
        md.push_str(&per_message_table(&servers, point, results, counts));
    }
    md.push_str("\nServers:\n\n");
    for s in servers {
        md.push_str(&format!("- `{}`: {} (`{}`)\n", s.name, s.what, s.bin));
    }
    let failures: Vec<_> = results.iter().filter(|r| r.outcome.is_err()).collect();
    if !failures.is_empty() {
        md.push_str("\nFailed runs:\n\n");
        for r in failures {
            if let Err(e) = &r.outcome {
                md.push_str(&format!(
                    "- {} at {} (round {}): {e}\n",
                    r.server,
                    r.point.title(),
                    r.round
                ));
            }
        }
    }
    md
}

/// The second table of a point: where the server's CPU goes per message, and what the kernel
/// does for it (timed runs: user/kernel CPU, context switches; the counting pass: the rest).
fn per_message_table(
    servers: &[&Server],
    point: Point,
    results: &[RunResult],
    counts: &[CountRun],
) -> String {
    let mut md = String::from(
        "\nPer message (CPU and context switches: timed runs; the rest: counting pass):\n\n\
         | server | user µs | kernel µs | ours ÷ peer: user | ours ÷ peer: kernel | \
         ctx switches vol / invol | syscalls | io_uring SQEs | io_uring CQEs | packets sent | \
         allocations |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let has_ours = servers.iter().any(|s| s.name == OURS);
    let ours = summarize(results, point, OURS);
    for server in servers {
        let s = summarize(results, point, server.name);
        let (r_user, r_kernel) = if has_ours && server.name != OURS {
            (
                ratio(ours.user_per_msg, s.user_per_msg),
                ratio(ours.kernel_per_msg, s.kernel_per_msg),
            )
        } else {
            ("–".to_owned(), "–".to_owned())
        };
        let counted = counts
            .iter()
            .find(|c| c.point == point && c.server == server.name)
            .and_then(|c| c.outcome.as_ref().ok());
        let event = |name: &str| {
            counted.map_or("n/a".to_owned(), |c| {
                per_msg(
                    c.figures.tracepoint(name).and_then(Count::value),
                    c.messages,
                )
            })
        };
        let allocations = counted.map_or("n/a".to_owned(), |c| {
            per_msg(c.figures.allocations(), c.messages)
        });
        md.push_str(&format!(
            "| {} | {} | {} | {r_user} | {r_kernel} | {} / {} | {} | {} | {} | {} | {allocations} |\n",
            server.name,
            num(s.user_per_msg, 2),
            num(s.kernel_per_msg, 2),
            num(s.voluntary_per_msg, 4),
            num(s.involuntary_per_msg, 4),
            event(SYSCALLS),
            event(SQES),
            event(CQES),
            event(PACKETS_SENT),
        ));
    }
    let failed: Vec<String> = counts
        .iter()
        .filter(|c| c.point == point)
        .filter_map(|c| {
            c.outcome
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", c.server))
        })
        .collect();
    if !failed.is_empty() {
        md.push_str(&format!("\nNot counted: {}.\n", failed.join("; ")));
    }
    md
}

fn json(meta: &Meta, results: &[RunResult], counts: &[CountRun]) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut runs = Vec::new();
    for r in results {
        let figures = match &r.outcome {
            Ok(line) => format!("\"loadgen\":{line}"),
            Err(e) => format!("\"error\":\"{}\"", esc(e)),
        };
        runs.push(format!(
            "    {{\"kind\":\"{}\",\"server\":\"{}\",\"round\":{},\"size\":{},\"connections\":{},\"inflight\":{},{figures}}}",
            if r.point.kind == Kind::Http { "http" } else { "echo" },
            r.server,
            r.round, r.point.size, r.point.connections, r.point.inflight
        ));
    }
    let mut counting_runs = Vec::new();
    for c in counts {
        let figures = match &c.outcome {
            Ok(counted) => {
                let mut events: Vec<String> = counted
                    .figures
                    .tracepoints
                    .iter()
                    .map(|(event, count)| format!("\"{}\":{}", esc(event), count.json()))
                    .collect();
                let allocs = match &counted.figures.allocs {
                    Ok(calls) => {
                        events.extend(
                            calls
                                .iter()
                                .map(|(f, count)| format!("\"{}\":{}", esc(f), count.json())),
                        );
                        "null".to_owned()
                    }
                    Err(why) => format!("\"{}\"", esc(why)),
                };
                format!(
                    "\"messages\":{},\"window_s\":{:.4},\"counts\":{{{}}},\"allocs_na\":{allocs},\"load\":{}",
                    counted.messages,
                    counted.window_s,
                    events.join(","),
                    counted.load
                )
            }
            Err(e) => format!("\"error\":\"{}\"", esc(e)),
        };
        counting_runs.push(format!(
            "    {{\"kind\":\"{}\",\"server\":\"{}\",\"size\":{},\"connections\":{},\"inflight\":{},{figures}}}",
            if c.point.kind == Kind::Http { "http" } else { "echo" },
            c.server,
            c.point.size,
            c.point.connections,
            c.point.inflight
        ));
    }
    let counting = match meta.counting {
        Ok((warmup, window)) => format!("{{\"warmup_s\":{warmup},\"window_s\":{window}}}"),
        Err(why) => format!("{{\"skipped\":\"{}\"}}", esc(why)),
    };
    let notes: Vec<String> = meta
        .count_notes
        .iter()
        .map(|n| format!("\"{}\"", esc(n)))
        .collect();
    let mut by_server: BTreeMap<&str, usize> = BTreeMap::new();
    for r in results.iter().filter(|r| r.outcome.is_ok()) {
        *by_server.entry(r.server).or_default() += 1;
    }
    format!(
        "{{\n  \"date\":\"{}\",\"matrix\":\"{}\",\"rounds\":{},\"warmup_s\":{},\"duration_s\":{},\
         \"server_cpu\":{},\"load_cpu\":{},\"cpus\":{},\"kernel\":\"{}\",\
         \"loadavg_before\":\"{}\",\"loadavg_after\":\"{}\",\"elapsed_s\":{:.1},\
         \"ok_runs\":{},\"http_skipped\":{},\"counting\":{counting},\"count_notes\":[{}],\n  \"runs\":[\n{}\n  ],\n  \"counting_runs\":[\n{}\n  ]\n}}\n",
        meta.date,
        if meta.quick { "quick" } else { "full" },
        meta.rounds,
        meta.warmup,
        meta.duration,
        meta.server_cpu,
        meta.load_cpu,
        meta.cpus,
        esc(&meta.kernel),
        meta.load_before,
        meta.load_after,
        meta.elapsed.as_secs_f64(),
        by_server.values().sum::<usize>(),
        match &meta.http_skipped {
            Some(why) => format!("\"{}\"", esc(why)),
            None => "null".to_owned(),
        },
        notes.join(","),
        runs.join(",\n"),
        counting_runs.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_loadgen_line() {
        let line = r#"{"label":"a \"b\"","messages":12,"p99_us":3.50,"errors":0}"#;
        assert_eq!(json_num(line, "messages"), Some(12.0));
        assert_eq!(json_num(line, "p99_us"), Some(3.5));
        assert_eq!(json_num(line, "missing"), None);
        assert_eq!(json_str(line, "label").as_deref(), Some("a \"b\""));
    }

    #[test]
    fn quick_matrix_is_small() {
        let quick = parse(&["--quick".to_owned()]).ok().flatten();
        let Some(o) = quick else {
            panic!("--quick parses")
        };
        let runs: usize = matrix(true, true)
            .iter()
            .map(|p| o.rounds * o.servers.iter().filter(|s| s.kind == p.kind).count())
            .sum();
        let secs = runs as f64 * (o.warmup.ceil() + o.duration.ceil() + 0.5);
        assert!(secs < 120.0, "quick matrix takes {secs} s");
        assert_eq!(matrix(false, false).len(), 8);
        assert_eq!(matrix(false, true).len(), 10);
    }

    #[test]
    fn counting_pass_options() {
        let parsed = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            match parse(&args) {
                Ok(Some(o)) => o,
                other => panic!("{args:?} does not parse: {other:?}"),
            }
        };
        let full = parsed(&[]);
        assert!(full.counts && full.alloc_counts);
        assert_eq!((full.count_warmup, full.count_window), (2.0, 2.0));
        let quick = parsed(&["--quick"]);
        assert!(!quick.counts, "--quick stays under two minutes without it");
        let quick = parsed(&["--quick", "--counts", "--no-alloc-counts"]);
        assert!(quick.counts && !quick.alloc_counts);
        assert_eq!((quick.count_warmup, quick.count_window), (0.5, 0.5));
        let short = parsed(&["--warmup", "0.2", "--duration", "1"]);
        assert_eq!((short.count_warmup, short.count_window), (0.2, 1.0));
        let wide = parsed(&["--count-window", "3", "--no-counts"]);
        assert!(!wide.counts);
        assert_eq!(wide.count_window, 3.0);
        assert!(parse(&["--count-window".to_owned()]).is_err());
    }

    #[test]
    fn reads_context_switches_from_status() {
        let status = "Name:\thttp-hyper\nvoluntary_ctxt_switches:\t1500\n\
                      nonvoluntary_ctxt_switches:\t27\n";
        assert_eq!(parse_ctxt_switches(status), Some((1500, 27)));
        assert_eq!(parse_ctxt_switches("voluntary_ctxt_switches:\t1\n"), None);
    }

    fn meta(counting: Result<(f64, f64), &'static str>, count_notes: Vec<String>) -> Meta {
        Meta {
            date: "2026-12-01 00:00 UTC".to_owned(),
            quick: true,
            rounds: 1,
            warmup: 1.0,
            duration: 2.0,
            server_cpu: 0,
            load_cpu: 1,
            cpus: 2,
            kernel: "6.1".to_owned(),
            load_before: String::new(),
            load_after: String::new(),
            elapsed: Duration::from_secs(1),
            http_skipped: None,
            counting,
            count_notes,
        }
    }

    /// The row of `server` in the per-message table, split into its cells.
    fn per_message_row(md: &str, server: &str) -> Vec<String> {
        let table = &md[md.find("Per message (").expect("a per-message table")..];
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {server} |")))
            .unwrap_or_else(|| panic!("no row for {server} in {table}"));
        row.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    }

    #[test]
    fn renders_counts_and_what_is_not_available() {
        let point = matrix(true, false)[0];
        let servers: Vec<Server> = SERVERS
            .iter()
            .filter(|s| ["seastar-uring", "tokio-ct", "raw-uring"].contains(&s.name))
            .copied()
            .collect();
        let line = |user: f64, kernel: f64, vol: f64| {
            format!(
                "{{\"messages\":1000,\"msgs_per_s\":500.0,\"server_cpu_us_per_msg\":{},\
                 \"server_user_us_per_msg\":{user},\"server_kernel_us_per_msg\":{kernel},\
                 \"server_ctx_voluntary_per_msg\":{vol},\"server_ctx_involuntary_per_msg\":0.001}}",
                user + kernel
            )
        };
        let run = |server, outcome| RunResult {
            point,
            server,
            round: 1,
            outcome,
        };
        let results = vec![
            run("seastar-uring", Ok(line(0.5, 4.0, 0.02))),
            run("tokio-ct", Ok(line(0.25, 5.0, 0.005))),
            run("raw-uring", Ok(line(0.1, 4.0, 0.01))),
        ];
        let counted = Counted {
            messages: 1000,
            window_s: 0.5,
            figures: Figures {
                tracepoints: vec![
                    (SYSCALLS.to_owned(), Count::Value(280)),
                    (SQES.to_owned(), Count::Value(990)),
                    (CQES.to_owned(), Count::Value(1970)),
                    (PACKETS_SENT.to_owned(), Count::NotSupported),
                ],
                allocs: Err("uprobes need root".to_owned()),
            },
            load: "{}".to_owned(),
        };
        let counts = vec![
            CountRun {
                point,
                server: "seastar-uring",
                outcome: Ok(counted),
            },
            CountRun {
                point,
                server: "tokio-ct",
                outcome: Err("perf stat did not attach".to_owned()),
            },
        ];
        let notes = vec!["allocations in /lib/libc.so.6 are n/a: uprobes need root".to_owned()];
        let md = markdown(
            &meta(Ok((0.5, 0.5)), notes),
            &servers,
            &[point],
            &results,
            &counts,
        );
        assert_eq!(
            per_message_row(&md, "seastar-uring"),
            [
                "seastar-uring",
                "0.50",
                "4.00",
                "–",
                "–",
                "0.0200 / 0.0010",
                "0.280",
                "0.990",
                "1.970",
                "n/a",
                "n/a"
            ]
        );
        let tokio = per_message_row(&md, "tokio-ct");
        assert_eq!(tokio[1..5], ["0.25", "5.00", "2.00", "0.80"]);
        assert_eq!(tokio[6..], ["n/a", "n/a", "n/a", "n/a", "n/a"]);
        // No counting run at all for the floor: n/a too, and no failure to list.
        assert_eq!(per_message_row(&md, "raw-uring")[6..], ["n/a"; 5]);
        assert!(md.contains("Not counted: tokio-ct: perf stat did not attach."));
        assert!(md.contains("n/a: allocations in /lib/libc.so.6 are n/a: uprobes need root"));
        assert!(md.contains("Counting runs here: 0.5 s warm-up + 0.5 s counted"));

        let skipped = markdown(
            &meta(Err("`--no-counts`"), Vec::new()),
            &servers,
            &[point],
            &results,
            &[],
        );
        assert!(skipped.contains("did not run here, so its columns are n/a: `--no-counts`."));
        assert_eq!(per_message_row(&skipped, "seastar-uring")[6..], ["n/a"; 5]);
        let json = json(&meta(Err("`--no-counts`"), Vec::new()), &results, &counts);
        assert!(json.contains("\"counting\":{\"skipped\":\"`--no-counts`\"}"));
        assert!(json.contains("\"net:net_dev_xmit\":\"<not supported>\""));
        assert!(json.contains("\"allocs_na\":\"uprobes need root\""));
    }

    #[test]
    fn per_message_figures() {
        assert_eq!(per_msg(Some(28), 100), "0.280");
        assert_eq!(per_msg(None, 100), "n/a");
        assert_eq!(per_msg(Some(5), 0), "n/a");
    }

    #[test]
    fn reads_wrk_latency_report() {
        let out = "Running 2s test @ http://127.0.0.1:7000/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   105.83us   45.12us   2.01ms   90.12%
    Req/Sec    95.12k     5.23k  101.23k    80.00%
  Latency Distribution
     50%  100.00us
     75%  112.00us
     90%  130.00us
     99%    1.25ms
  190246 requests in 2.00s, 11.23MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  95000.12
Transfer/sec:     11.23MB
";
        let w = parse_wrk(out).expect("parses");
        assert_eq!(w.requests, 190_246);
        assert_eq!(w.p50_us, 100.0);
        assert_eq!(w.p99_us, 1250.0);
        assert_eq!(w.socket_errors, 3);
        assert_eq!(w.requests_per_sec, 95000.12);
        assert_eq!(parse_wrk("unable to connect"), None);
    }
}
