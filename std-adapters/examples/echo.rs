//! An echo server on every core: `cargo run --release --example echo` (from the workspace
//! root), then `printf 'hello\n' | nc -q1 127.0.0.1 7000`.
//!
//! Every core binds the same port with `SO_REUSEPORT` (the kernel spreads connections over
//! them) and runs an accept loop that spawns one task per connection; each task echoes with
//! one reused buffer.
//!
//! Ctrl-C or SIGTERM shuts it down gracefully (`seastar::shutdown`): every core stops
//! accepting (new connections are refused), each connection finishes echoing what it has
//! received and then closes, and the process exits 0 with a line saying what was drained.
//! Each phase waits at most 10 s; a second Ctrl-C quits at once.
//!
//! Options: `--port N` (default 7000; 0 picks a free one), `--host IP` (default 0.0.0.0),
//! `--cores N` (default: every CPU), `--backend auto|uring|mio` (default auto; the environment
//! variable SEASTAR_BACKEND overrides auto), `--no-pin`, `--stats [SECS]` (print every core's
//! runtime statistics every SECS seconds, default 5: tasks, polls per loop, run queue, I/O
//! operations and system calls, cross-core messages, time per scheduling group, stalls).
//! Logs go to stderr; `SEASTAR_LOG=debug` shows more.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use seastar::future::{select, Either};
use seastar::net::{TcpListener, TcpStream};
use seastar::shutdown::{self, Phase, Registration, ShutdownReport};
use seastar::{Backend, Runtime};

/// How long each shutdown phase (stop accepting, drain, cleanup) may take.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: echo [--port N] [--host IP] [--cores N] [--backend auto|uring|mio] \
                     [--no-pin] [--stats [SECS]]";

#[derive(Debug)]
struct Args {
    host: IpAddr,
    port: u16,
    cores: Option<usize>,
    backend: Backend,
    pin: bool,
    /// Print per-core statistics this often.
    stats: Option<Duration>,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut out = Args {
        host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 7000,
        cores: None,
        backend: Backend::Auto,
        pin: true,
        stats: None,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value ({what})"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port" | "-p" => {
                let v = value("a port number")?;
                out.port = v
                    .parse()
                    .map_err(|_| format!("bad port {v:?}: expected 0-65535"))?;
            }
            "--host" => {
                let v = value("an IP address")?;
                out.host = v
                    .parse()
                    .map_err(|_| format!("bad host {v:?}: expected an IP address"))?;
            }
            "--cores" | "-c" => {
                let v = value("a number of cores")?;
                let n: usize = v
                    .parse()
                    .map_err(|_| format!("bad core count {v:?}: expected a positive number"))?;
                if n == 0 {
                    return Err("--cores must be at least 1".into());
                }
                out.cores = Some(n);
            }
            "--backend" | "-b" => {
                let v = value("auto, uring or mio")?;
                out.backend = v.parse().map_err(|e| format!("{e}"))?;
            }
            "--no-pin" => out.pin = false,
            "--stats" => {
                // The period is optional: take the next argument only if it is a number.
                let v = inline
                    .clone()
                    .or_else(|| args.next_if(|a| !a.starts_with('-') && a.parse::<f64>().is_ok()));
                let secs = match v {
                    Some(v) => v
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| format!("bad --stats period {v:?}: expected seconds > 0"))?,
                    None => 5.0,
                };
                out.stats = Some(Duration::from_secs_f64(secs));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(out))
}

/// A tiny stderr logger for the `log` facade (no dependencies).
struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("[{:5}] {}", record.level(), record.args());
        }
    }
    fn flush(&self) {}
}

fn init_logging() {
    let level = match std::env::var("SEASTAR_LOG").ok().as_deref() {
        Some("trace") => log::LevelFilter::Trace,
        Some("debug") => log::LevelFilter::Debug,
        Some("warn") => log::LevelFilter::Warn,
        Some("error") => log::LevelFilter::Error,
        Some("off") => log::LevelFilter::Off,
        _ => log::LevelFilter::Info,
    };
    let logger: &'static StderrLogger = Box::leak(Box::new(StderrLogger { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Echo one connection until the peer closes it, an error ends it, or the shutdown's drain
/// phase starts (then after the message in hand is echoed). `conn` keeps the drain waiting
/// until this returns.
async fn echo(stream: &TcpStream, conn: &Registration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        // Data that has arrived wins over the drain (the read is polled first); an idle
        // connection closes as soon as the drain starts.
        let (res, b) = match select(stream.read(buf), conn.phase_started()).await {
            Either::Left(r) => r,
            Either::Right(()) => return Ok(()),
        };
        buf = b;
        if res? == 0 {
            return Ok(());
        }
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        res?;
        if conn.is_phase_started() {
            return linger(stream).await;
        }
    }
}

/// Close gently after the last echo: send FIN, then discard what the peer still sends (for at
/// most a second) until its FIN. Closing with unread input would make the kernel answer with
/// a reset, which can destroy echoed bytes not yet delivered.
async fn linger(stream: &TcpStream) -> io::Result<()> {
    stream.shutdown(std::net::Shutdown::Write).await?;
    let discard = async {
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            let (res, b) = stream.read(buf).await;
            buf = b;
            if !matches!(res, Ok(n) if n > 0) {
                return;
            }
        }
    };
    let _ = seastar::time::timeout(Duration::from_secs(1), discard).await;
    Ok(())
}

/// Print this core's statistics every `period`.
async fn print_stats(period: Duration) {
    let mut tick = seastar::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Some(s) = seastar::runtime::core_stats() {
            println!("{s}");
        }
    }
}

/// One core: bind, accept until the shutdown stops it, then wait for the drain and return
/// what the shutdown did.
async fn serve(
    core: usize,
    addr: SocketAddr,
    stats: Option<Duration>,
) -> io::Result<ShutdownReport> {
    let shutdown = shutdown::current();
    let listener = TcpListener::bind(addr).inspect_err(|e| {
        eprintln!("echo: core {core}: cannot listen on {addr}: {e}");
    })?;
    if core == 0 {
        println!("listening on {}", listener.local_addr()?);
    }
    if let Some(period) = stats {
        seastar::task::Builder::new()
            .name("stats")
            .spawn(print_stats(period))
            .detach();
    }
    let accepting = shutdown
        .register(Phase::STOP_ACCEPTING, format!("listener of core {core}"))
        .map_err(io::Error::other)?;
    loop {
        // The stop goes first: it wins over a steady stream of connections.
        let accepted = match select(accepting.phase_started(), listener.accept()).await {
            Either::Left(()) => break,
            Either::Right(accepted) => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                log::debug!("core {core}: connection from {peer}");
                // Refused once the drain has started: the connection is closed unread.
                let Ok(conn) = shutdown.register(Phase::DRAIN, format!("{peer}")) else {
                    continue;
                };
                seastar::spawn(async move {
                    if let Err(e) = echo(&stream, &conn).await {
                        log::debug!("core {core}: {peer}: {e}");
                    }
                    drop(stream);
                    drop(conn);
                })
                .detach();
            }
            Err(e) => {
                // Out of descriptors, or a connection aborted before we took it: keep going,
                // without spinning.
                log::warn!("core {core}: accept failed: {e}");
                seastar::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // Closing the listener refuses new connections (and closes those queued, not taken).
    drop(listener);
    drop(accepting);
    Ok(shutdown.finished().await)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("echo: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging();

    let mut builder = Runtime::builder()
        .backend(args.backend)
        .pin(args.pin)
        .handle_signals(true)
        .shutdown_deadline(SHUTDOWN_DEADLINE);
    if let Some(n) = args.cores {
        builder = builder.cores(n);
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo: {e}");
            if args.pin && args.cores.is_some() {
                eprintln!("echo: (--no-pin runs more cores than CPUs)");
            }
            return ExitCode::from(2);
        }
    };
    // Port 0: pick a free port once, so every core binds the same one.
    let port = if args.port == 0 {
        match std::net::TcpListener::bind((args.host, 0)).and_then(|l| l.local_addr()) {
            Ok(a) => a.port(),
            Err(e) => {
                eprintln!("echo: cannot find a free port: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        args.port
    };
    let addr = SocketAddr::new(args.host, port);
    // SO_REUSEPORT would let this server share the port with another one of this user
    // without a word: check first that nobody listens there (an exclusive bind fails if so).
    if let Err(e) = std::net::TcpListener::bind(addr) {
        eprintln!("echo: cannot listen on {addr}: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "echo: backend {} ({}), {} core{}{}",
        rt.backend(),
        rt.backend_reason(),
        rt.cores(),
        if rt.cores() == 1 { "" } else { "s" },
        match rt.cpus() {
            Some(cpus) => format!(", pinned to CPUs {cpus:?}"),
            None => ", not pinned".to_owned(),
        }
    );

    let stats = args.stats;
    match rt.run_on_all(move |core| serve(core, addr, stats)) {
        Ok(results) => {
            let mut failed = false;
            let (mut drained, mut late) = (0, 0);
            for (core, r) in results.into_iter().enumerate() {
                match r {
                    Ok(report) => {
                        log::info!("core {core}: {report}");
                        if let Some(drain) = report.phase(Phase::DRAIN) {
                            drained += drain.waited_for.saturating_sub(drain.stragglers.len());
                        }
                        late += report.stragglers().count();
                    }
                    Err(e) => {
                        eprintln!("echo: core {core}: {e} (address {addr})");
                        failed = true;
                    }
                }
            }
            println!(
                "echo: shut down gracefully: {drained} connection{} drained, {late} late",
                if drained == 1 { "" } else { "s" }
            );
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
    }
}
