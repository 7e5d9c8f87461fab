//! The load generator for the echo servers, built on a neutral peer (tokio's current-thread
//! runtime on one pinned core), never on our runtime.
//!
//! It opens `--connections` connections, then for `--warmup` seconds drives load without
//! measuring, then for `--duration` seconds measures: messages per second, and latency
//! percentiles (hdrhistogram, nanosecond resolution). With `--server-pid` it also reads the
//! server's CPU time (utime and stime from `/proc/<pid>/stat`) and its threads' context
//! switches (`/proc/<pid>/task/*/status`) at the start and end of the measured window: the
//! server's user and kernel CPU and its voluntary / involuntary switches per message. With
//! `--perf-control FIFO` it writes `enable` and `disable` to that FIFO at the window's edges,
//! so a `perf stat --control fifo:FIFO -D -1` attached to the server counts exactly the
//! measured window (`cargo xtask bench`'s counting pass). The last line on standard output is
//! one JSON object with every figure; `--progress` (on by default for runs of 10 s or more)
//! prints one line per second on standard error.
//!
//! Two modes:
//! * closed loop (default): each connection keeps `--inflight` messages outstanding, sending
//!   one more for each one echoed; latency is from the send to the whole echo coming back.
//! * fixed rate (`--rate R`, messages per second over all connections): each connection sends
//!   on its schedule whatever the replies do; latency is measured from the *intended* send
//!   time, so a stalled server shows up in the tail (no coordinated omission). The schedule is
//!   kept with tokio's timer (1 ms granularity): messages due within one tick go out together,
//!   late by up to a tick, and that lateness is part of the latency reported.
//!
//! Reads take whatever has arrived and count every whole message in it; new messages go out
//! in one write per batch, so the generator spends as little CPU per message as it can.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use seastar_benches::cli::parse_or_exit;
use seastar_benches::proc_stat::{self, CpuTimes, CtxSwitches};

const USAGE: &str = "\
usage: loadgen [--addr HOST:PORT] [--connections C] [--size BYTES] [--inflight N | --rate MSGS_PER_S]
               [--duration SECS] [--warmup SECS] [--core N | --no-pin] [--server-pid PID]
               [--perf-control FIFO] [--progress | --quiet] [--label TEXT]
defaults: --addr 127.0.0.1:7000 --connections 16 --size 64 --inflight 1 --duration 10
          --warmup 2 --core 1; progress lines when --duration >= 10";

#[derive(Debug, Clone)]
struct Args {
    addr: SocketAddr,
    connections: usize,
    size: usize,
    inflight: usize,
    rate: Option<f64>,
    duration: Duration,
    warmup: Duration,
    core: Option<usize>,
    server_pid: Option<u32>,
    perf_control: Option<PathBuf>,
    progress: bool,
    label: String,
}

fn parse_args() -> Args {
    parse_or_exit("loadgen", USAGE, |f| {
        let secs = |v: f64, name: &str| {
            Duration::try_from_secs_f64(v).map_err(|e| format!("bad {name} {v}: {e}"))
        };
        let duration = secs(f.value("--duration")?.unwrap_or(10.0), "--duration")?;
        let warmup = secs(f.value("--warmup")?.unwrap_or(2.0), "--warmup")?;
        let core = f.value::<usize>("--core")?;
        let no_pin = f.switch("--no-pin")?;
        let progress = f.switch("--progress")?;
        let quiet = f.switch("--quiet")?;
        let inflight = f.value::<usize>("--inflight")?;
        let rate = f.value::<f64>("--rate")?;
        if inflight.is_some() && rate.is_some() {
            return Err(
                "--inflight (closed loop) and --rate (fixed rate) exclude each other".into(),
            );
        }
        if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("--rate must be a positive number".into());
        }
        let args = Args {
            addr: f
                .value("--addr")?
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7000))),
            connections: f.value("--connections")?.unwrap_or(16),
            size: f.value("--size")?.unwrap_or(64),
            inflight: inflight.unwrap_or(1),
            rate,
            duration,
            warmup,
            core: if no_pin {
                None
            } else {
                Some(core.unwrap_or(1))
            },
            server_pid: f.value("--server-pid")?,
            perf_control: f.value("--perf-control")?,
            progress: (progress || duration >= Duration::from_secs(10)) && !quiet,
            label: f.value("--label")?.unwrap_or_default(),
        };
        if args.connections == 0 || args.size == 0 || args.inflight == 0 {
            return Err("--connections, --size and --inflight must be at least 1".into());
        }
        if args.duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        Ok(args)
    })
}

/// What every connection task shares (one thread: `Cell`s and `RefCell`s).
struct Shared {
    measure_start: Instant,
    measure_end: Instant,
    /// Messages echoed in the measured window.
    measured: Cell<u64>,
    /// Messages echoed since the start (for the progress lines).
    total: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    hist: RefCell<Histogram<u64>>,
}

impl Shared {
    /// A message sent (or due) at `sent` came back whole at `now`.
    fn done(&self, sent: Instant, now: Instant) {
        self.total.set(self.total.get() + 1);
        if sent >= self.measure_start && now < self.measure_end {
            self.measured.set(self.measured.get() + 1);
            let ns = now.saturating_duration_since(sent).as_nanos();
            let ns = u64::try_from(ns).unwrap_or(u64::MAX).max(1);
            self.hist.borrow_mut().saturating_record(ns);
        }
    }

    fn error(&self, e: &io::Error) {
        self.errors.set(self.errors.get() + 1);
        self.first_error
            .borrow_mut()
            .get_or_insert_with(|| e.to_string());
    }
}

/// Closed loop on one connection: keep `inflight` messages outstanding until the end.
async fn closed_loop(mut stream: TcpStream, args: Rc<Args>, shared: Rc<Shared>) -> io::Result<()> {
    let size = args.size;
    let out = vec![0x5a_u8; size * args.inflight];
    let mut buf = vec![0u8; (size * args.inflight).max(64 * 1024)];
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(args.inflight);
    let mut partial = 0usize;
    let now = Instant::now();
    stream.write_all(&out).await?;
    sent.extend(std::iter::repeat_n(now, args.inflight));
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        let now = Instant::now();
        partial += n;
        let whole = partial / size;
        partial %= size;
        for _ in 0..whole {
            let Some(t) = sent.pop_front() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "more bytes came back than were sent",
                ));
            };
            shared.done(t, now);
        }
        if now >= shared.measure_end {
            return Ok(());
        }
        if whole > 0 {
            stream.write_all(&out[..whole * size]).await?;
            sent.extend(std::iter::repeat_n(Instant::now(), whole));
        }
    }
}

/// Fixed rate on one connection: send on schedule (`period` apart, starting at `start`),
/// read replies in another task; latency counts from the intended send time.
async fn fixed_rate(
    stream: TcpStream,
    args: Rc<Args>,
    shared: Rc<Shared>,
    start: Instant,
    period: Duration,
) -> io::Result<()> {
    let size = args.size;
    let (mut rd, mut wr) = stream.into_split();
    let due: Rc<RefCell<VecDeque<Instant>>> = Rc::default();
    let writer_due = due.clone();
    let end = shared.measure_end;
    let writer = tokio::task::spawn_local(async move {
        let mut out = vec![0x5a_u8; size * 64];
        let mut sent: u64 = 0;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok::<(), io::Error>(());
            }
            // Every send whose time has come (the timer is coarse: catch up in one write).
            if now < start {
                tokio::time::sleep_until(start).await;
                continue;
            }
            let elapsed = now.saturating_duration_since(start).as_nanos();
            let owed = ((elapsed / period.as_nanos()) as u64 + 1).saturating_sub(sent);
            if owed > 0 {
                let bytes = owed as usize * size;
                if out.len() < bytes {
                    out.resize(bytes, 0x5a);
                }
                {
                    let mut due = writer_due.borrow_mut();
                    for i in sent..sent + owed {
                        due.push_back(start + period.mul_f64(i as f64));
                    }
                }
                sent += owed;
                wr.write_all(&out[..bytes]).await?;
            }
            tokio::time::sleep_until(start + period.mul_f64(sent as f64)).await;
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial = 0usize;
    let result = loop {
        let n = match rd.read(&mut buf).await {
            // The writer half closes at the end; the server then closes too.
            Ok(0) if Instant::now() >= end => break Ok(()),
            Ok(0) => {
                break Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ))
            }
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        let now = Instant::now();
        partial += n;
        let whole = partial / size;
        partial %= size;
        let mut due = due.borrow_mut();
        if due.len() < whole {
            break Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more bytes came back than were sent",
            ));
        }
        for t in due.drain(..whole) {
            shared.done(t, now);
        }
        drop(due);
        if now >= end {
            break Ok(());
        }
    };
    writer.abort();
    result
}

/// What the server and we used over the measured window.
#[derive(Default)]
struct CpuWindow {
    server: Option<CpuTimes>,
    server_switches: Option<CtxSwitches>,
    client: Option<CpuTimes>,
    wall: Duration,
}

/// Write one of perf's control commands (`enable`, `disable`) to the `--perf-control` FIFO.
fn perf_control(fifo: &mut Option<File>, command: &str, shared: &Shared) {
    if let Some(f) = fifo {
        if let Err(e) = f.write_all(format!("{command}\n").as_bytes()) {
            shared.error(&io::Error::new(
                e.kind(),
                format!("cannot write {command:?} to the --perf-control FIFO: {e}"),
            ));
        }
    }
}

async fn watch(
    args: Rc<Args>,
    shared: Rc<Shared>,
    start: Instant,
    mut perf_fifo: Option<File>,
) -> CpuWindow {
    let sample = |pid: Option<u32>| pid.and_then(|p| proc_stat::cpu_times(p).ok());
    let switches = |pid: Option<u32>| pid.and_then(|p| proc_stat::ctx_switches(p).ok());
    let me = Some(std::process::id());
    let mut window = CpuWindow::default();
    let mut server0 = None;
    let mut switches0 = None;
    let mut client0 = None;
    let mut t0 = shared.measure_start;
    let mut measuring = false;
    let mut last_total = 0u64;
    let mut next_tick = start + Duration::from_secs(1);
    loop {
        let wake = if measuring {
            next_tick.min(shared.measure_end)
        } else {
            next_tick.min(shared.measure_start)
        };
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        if !measuring && now >= shared.measure_start {
            measuring = true;
            perf_control(&mut perf_fifo, "enable", &shared);
            server0 = sample(args.server_pid);
            switches0 = switches(args.server_pid);
            client0 = sample(me);
            t0 = now;
        }
        if measuring && now >= shared.measure_end {
            let server1 = sample(args.server_pid);
            let switches1 = switches(args.server_pid);
            let client1 = sample(me);
            perf_control(&mut perf_fifo, "disable", &shared);
            window.wall = now.saturating_duration_since(t0);
            window.server = server0.zip(server1).map(|(a, b)| b.since(&a));
            window.server_switches = switches0.zip(switches1).map(|(a, b)| b.since(&a));
            window.client = client0.zip(client1).map(|(a, b)| b.since(&a));
            return window;
        }
        if now >= next_tick {
            let total = shared.total.get();
            if args.progress {
                let phase = if measuring { "measure" } else { "warmup" };
                let hist = shared.hist.borrow();
                eprintln!(
                    "[loadgen] t={:>4.0}s {phase:<7} {:>10} msg/s  p50 {:>8.1} us  p99 {:>8.1} us  errors {}",
                    now.saturating_duration_since(start).as_secs_f64(),
                    total - last_total,
                    hist.value_at_quantile(0.5) as f64 / 1e3,
                    hist.value_at_quantile(0.99) as f64 / 1e3,
                    shared.errors.get(),
                );
            }
            last_total = total;
            next_tick += Duration::from_secs(1);
        }
    }
}

async fn run(args: Args) -> io::Result<String> {
    // Read and write: opening a FIFO so never blocks (Linux), even if its reader is gone.
    let perf_fifo = match &args.perf_control {
        Some(path) => Some(
            File::options()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("--perf-control {}: {e}", path.display()))
                })?,
        ),
        None => None,
    };
    let args = Rc::new(args);
    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(args.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let start = Instant::now();
    let measure_start = start + args.warmup;
    let hist = Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let shared = Rc::new(Shared {
        measure_start,
        measure_end: measure_start + args.duration,
        measured: Cell::new(0),
        total: Cell::new(0),
        errors: Cell::new(0),
        first_error: RefCell::new(None),
        hist: RefCell::new(hist),
    });
    let period = args
        .rate
        .map(|r| Duration::from_secs_f64(args.connections as f64 / r));
    let mut tasks = Vec::with_capacity(args.connections);
    for (i, stream) in streams.into_iter().enumerate() {
        let (a, s) = (args.clone(), shared.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let result = match period {
                None => closed_loop(stream, a, s.clone()).await,
                // Stagger the connections' schedules over one period.
                Some(p) => {
                    let offset = p.mul_f64(i as f64 / a.connections as f64);
                    fixed_rate(stream, a, s.clone(), start + offset, p).await
                }
            };
            if let Err(e) = result {
                s.error(&e);
            }
        }));
    }
    let window = watch(args.clone(), shared.clone(), start, perf_fifo).await;
    // Connections stop at their first read after the window; a stalled one is cut off.
    let grace = Instant::now() + Duration::from_secs(2);
    for task in tasks {
        if tokio::time::timeout_at(grace, async { task.await.ok() })
            .await
            .is_err()
        {
            shared.error(&io::Error::new(
                io::ErrorKind::TimedOut,
                "a connection was still waiting for its echo 2 s after the end",
            ));
        }
    }
    Ok(report(&args, &shared, &window))
}

fn report(args: &Args, shared: &Shared, window: &CpuWindow) -> String {
    let hist = shared.hist.borrow();
    let measured = shared.measured.get();
    let secs = args.duration.as_secs_f64();
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let mut fields = vec![
        format!("\"label\":{}", json_str(&args.label)),
        format!("\"addr\":{}", json_str(&args.addr.to_string())),
        format!(
            "\"mode\":{}",
            json_str(if args.rate.is_some() {
                "rate"
            } else {
                "closed"
            })
        ),
        format!("\"connections\":{}", args.connections),
        format!("\"size\":{}", args.size),
        format!("\"inflight\":{}", args.inflight),
        format!("\"rate\":{}", args.rate.unwrap_or(0.0)),
        format!("\"warmup_s\":{}", args.warmup.as_secs_f64()),
        format!("\"duration_s\":{secs}"),
        format!("\"messages\":{measured}"),
        format!("\"msgs_per_s\":{:.1}", measured as f64 / secs),
        format!("\"p50_us\":{:.2}", us(0.5)),
        format!("\"p90_us\":{:.2}", us(0.9)),
        format!("\"p99_us\":{:.2}", us(0.99)),
        format!("\"p999_us\":{:.2}", us(0.999)),
        format!("\"max_us\":{:.2}", hist.max() as f64 / 1e3),
        format!("\"mean_us\":{:.2}", hist.mean() / 1e3),
        format!("\"errors\":{}", shared.errors.get()),
        format!("\"window_s\":{:.4}", window.wall.as_secs_f64()),
    ];
    let per_msg = |cpu: Duration| {
        if measured == 0 {
            0.0
        } else {
            cpu.as_secs_f64() * 1e6 / measured as f64
        }
    };
    for (name, sample) in [("server", window.server), ("client", window.client)] {
        if let Some(times) = sample {
            let cpu = times.total();
            fields.push(format!("\"{name}_cpu_s\":{:.4}", cpu.as_secs_f64()));
            fields.push(format!(
                "\"{name}_cpu_util\":{:.4}",
                cpu.as_secs_f64() / window.wall.as_secs_f64().max(1e-9)
            ));
            fields.push(format!("\"{name}_cpu_us_per_msg\":{:.4}", per_msg(cpu)));
            fields.push(format!(
                "\"{name}_user_cpu_s\":{:.4}",
                times.user.as_secs_f64()
            ));
            fields.push(format!(
                "\"{name}_kernel_cpu_s\":{:.4}",
                times.system.as_secs_f64()
            ));
            fields.push(format!(
                "\"{name}_user_us_per_msg\":{:.4}",
                per_msg(times.user)
            ));
            fields.push(format!(
                "\"{name}_kernel_us_per_msg\":{:.4}",
                per_msg(times.system)
            ));
        }
    }
    if let Some(sw) = window.server_switches {
        let per_msg = |n: u64| {
            if measured == 0 {
                0.0
            } else {
                n as f64 / measured as f64
            }
        };
        fields.push(format!("\"server_ctx_voluntary\":{}", sw.voluntary));
        fields.push(format!("\"server_ctx_involuntary\":{}", sw.involuntary));
        fields.push(format!(
            "\"server_ctx_voluntary_per_msg\":{:.6}",
            per_msg(sw.voluntary)
        ));
        fields.push(format!(
            "\"server_ctx_involuntary_per_msg\":{:.6}",
            per_msg(sw.involuntary)
        ));
    }
    if let Some(e) = shared.first_error.borrow().as_deref() {
        fields.push(format!("\"first_error\":{}", json_str(e)));
    }
    format!("{{{}}}", fields.join(","))
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let args = parse_args();
    if let Some(cpu) = args.core {
        if let Err(e) = seastar_benches::affinity::pin_current_thread(cpu) {
            eprintln!("loadgen: cannot pin to CPU {cpu}: {e}");
            std::process::exit(1);
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&rt, run(args)) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}
