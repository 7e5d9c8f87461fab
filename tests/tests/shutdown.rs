//! Graceful shutdown, on both backends:
//!
//! - Under steady load from several std clients (request, wait for the whole response, loop),
//!   a trigger through the runtime's `ShutdownHandle` stops the accept loops (new connections
//!   are refused while a request is still in flight), every request the server started to
//!   read is answered in full, no client ever sees a partial response (a request sent after the
//!   stop is answered or its connection closed before any byte of a response), and the
//!   runtime returns well within the phase deadline with a clean report.
//! - A connection stuck mid-request does not hold the shutdown past its deadline: the report
//!   names it and the runtime returns.
//! - The real signal path: this test binary re-runs itself as a child process whose server
//!   handles signals (`handle_signals(true)`); the parent sends it SIGTERM with a request in
//!   flight, sees new connections refused, gets the full response, and the child exits 0
//!   saying what it drained. (In a child, because a SIGTERM handler is process-wide: the
//!   parallel tests of this binary must not share one.)
//!
//! Protocol: a request is a 4-byte big-endian length and that many bytes; the response is the
//! same frame echoed. The server counts a request as accepted when it has read its first byte.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use seastar::future::{select, Either};
use seastar::net::{TcpListener, TcpStream};
use seastar::shutdown::{self, Phase, Registration, ShutdownReport};
use seastar::{Backend, Runtime};
use seastar_tests::rng::Rng;
use seastar_tests::watchdog::wait_until;
use seastar_tests::{client, stdnet, IO_TIMEOUT, LOOPBACK_ANY_PORT};

seastar_tests::on_both_backends!(
    accepted_requests_are_answered_under_load,
    a_stuck_connection_is_reported_at_the_deadline,
    sigterm_drains_a_child_process_gracefully,
);

/// Held while this process starts a child, and from before a trigger until the check that
/// connects are refused: a child forked meanwhile holds a copy of every listening socket
/// until its exec (close-on-exec closes them only then), and the kernel completes a
/// handshake on that copy, so a listener our server closed would still take a connection.
static SPAWN: Mutex<()> = Mutex::new(());

/// Server state shared by its cores and the test.
#[derive(Default)]
struct Shared {
    addr: Mutex<Option<SocketAddr>>,
    addr_ready: Condvar,
    /// Requests whose first byte the server read.
    accepted: AtomicUsize,
    /// Responses written in full.
    answered: AtomicUsize,
    /// Connections accepted but refused a drain registration (closed unread).
    refused_late: AtomicUsize,
    /// Cores whose listener is closed.
    listeners_closed: AtomicUsize,
    /// Print `ACCEPTED n` on stdout for each accepted request (the child process).
    announce: bool,
}

impl Shared {
    fn wait_addr(&self) -> SocketAddr {
        let g = self.addr.lock().expect("lock");
        let (g, _) = self
            .addr_ready
            .wait_timeout_while(g, IO_TIMEOUT, |a| a.is_none())
            .expect("lock");
        g.expect("core 0 published its address")
    }
}

/// One core of the server: listen, accept until the stop-accepting phase, then wait for the
/// phases to finish and return the report.
async fn server_core(core: usize, shared: Arc<Shared>) -> io::Result<ShutdownReport> {
    let shutdown = shutdown::current();
    let listener = if core == 0 {
        let l = TcpListener::bind(LOOPBACK_ANY_PORT)?;
        *shared.addr.lock().expect("lock") = Some(l.local_addr()?);
        shared.addr_ready.notify_all();
        l
    } else {
        TcpListener::bind(shared.wait_addr())?
    };
    let accepting = shutdown
        .register(Phase::STOP_ACCEPTING, format!("listener {core}"))
        .map_err(io::Error::other)?;
    loop {
        match select(accepting.phase_started(), listener.accept()).await {
            Either::Left(()) => break,
            Either::Right(Ok((stream, peer))) => {
                match shutdown.register(Phase::DRAIN, format!("conn {peer}")) {
                    Ok(conn) => {
                        let shared = shared.clone();
                        seastar::spawn(async move {
                            let _ = serve_conn(&stream, &conn, &shared).await;
                            drop(stream);
                            drop(conn);
                        })
                        .detach();
                    }
                    Err(_) => {
                        shared.refused_late.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            Either::Right(Err(e)) => return Err(e),
        }
    }
    drop(listener);
    shared.listeners_closed.fetch_add(1, Ordering::SeqCst);
    drop(accepting);
    Ok(shutdown.finished().await)
}

/// Serve framed requests until the peer closes, or until the drain has started while no
/// request is in flight.
async fn serve_conn(stream: &TcpStream, conn: &Registration, shared: &Shared) -> io::Result<()> {
    loop {
        if conn.is_phase_started() {
            return Ok(());
        }
        // Idle between two requests: the read goes first, so bytes that arrived win a tie.
        let (res, mut head) =
            match select(stream.read(Vec::with_capacity(4)), conn.phase_started()).await {
                Either::Left(r) => r,
                Either::Right(()) => return Ok(()),
            };
        if res? == 0 {
            return Ok(());
        }
        // From the first byte on, the request is ours: finish it whatever the phase.
        let n = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        if shared.announce {
            println!("ACCEPTED {n}");
        }
        if head.len() < 4 {
            let rest = client::read_exact(stream, 4 - head.len()).await?;
            head.extend_from_slice(&rest);
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let payload = client::read_exact(stream, len).await?;
        head.extend_from_slice(&payload);
        let (res, _) = stream.write_all(head).await;
        res?;
        shared.answered.fetch_add(1, Ordering::SeqCst);
    }
}

fn runtime(backend: Backend, cores: usize, per_phase: Duration, signals: bool) -> Runtime {
    let rt = Runtime::builder()
        .cores(cores)
        .pin(false)
        .backend(backend)
        .shutdown_deadline(per_phase)
        .handle_signals(signals)
        .build()
        .expect("runtime");
    assert_eq!(rt.backend(), backend);
    rt
}

/// A running server; `join` waits for its cores.
struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    thread: thread::JoinHandle<Result<Vec<io::Result<ShutdownReport>>, seastar::Error>>,
}

impl Server {
    fn start(rt: Runtime) -> Server {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = thread::spawn(move || {
            let s = &s;
            rt.run_on_all(move |core| server_core(core, s.clone()))
        });
        let addr = shared.wait_addr();
        Server {
            shared,
            addr,
            thread,
        }
    }

    fn join(self) -> (Vec<ShutdownReport>, Arc<Shared>) {
        let reports = self
            .thread
            .join()
            .expect("server thread")
            .expect("runtime")
            .into_iter()
            .map(|r| r.expect("server core"))
            .collect();
        (reports, self.shared)
    }
}

fn request(rng: &mut Rng, tag: u64) -> Vec<u8> {
    let len = 1 + (rng.next_u64() % (8 * 1024)) as usize;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend((0..len).map(|i| (tag as usize).wrapping_mul(31).wrapping_add(i) as u8));
    out
}

/// How a client's requests ended.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    sent: usize,
    answered: usize,
    /// Sent, then the connection closed before any byte of the response.
    unanswered: usize,
    /// A response that started but did not finish: must never happen.
    cut: usize,
    /// A response that differed from the request: must never happen.
    corrupt: usize,
    /// Connects refused (or reset in the accept queue) after the listeners closed.
    refused_connects: usize,
}

/// Read one response of `want.len()` bytes: `Ok(true)` complete, `Ok(false)` closed before
/// any byte, `Err(n)` cut after `n` bytes.
fn read_response(s: &mut std::net::TcpStream, want: &[u8]) -> Result<Vec<u8>, usize> {
    let mut got = vec![0u8; want.len()];
    let mut n = 0;
    while n < want.len() {
        match s.read(&mut got[n..]) {
            Ok(0) => return Err(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(n),
        }
    }
    Ok(got)
}

/// A client: request, whole response, repeat; reconnect when the server closes the
/// connection; stop when a connect is refused (the server stopped accepting) or on `stop`.
/// `served` counts the clients that got their first answer.
fn load_client(
    addr: SocketAddr,
    seed: u64,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
) -> Tally {
    let mut rng = Rng::new(seed);
    let mut t = Tally::default();
    let mut tag = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let mut s = match stdnet::connect(addr) {
            Ok(s) => s,
            // Refused once the listeners are closed; reset if the handshake completed in a
            // listener's accept queue just before its close (the kernel resets what nobody
            // accepted), which the connect sees when the RST beats its poll for completion.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                ) =>
            {
                t.refused_connects += 1;
                break;
            }
            Err(e) => panic!("client {seed}: connect: {e}"),
        };
        loop {
            tag += 1;
            let req = request(&mut rng, tag);
            t.sent += 1;
            if s.write_all(&req).is_err() {
                t.unanswered += 1;
                break;
            }
            match read_response(&mut s, &req) {
                Ok(resp) if resp == req => {
                    t.answered += 1;
                    if t.answered == 1 {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Ok(_) => {
                    t.corrupt += 1;
                    break;
                }
                Err(0) => {
                    t.unanswered += 1;
                    break;
                }
                Err(_) => {
                    t.cut += 1;
                    break;
                }
            }
            if stop.load(Ordering::SeqCst) {
                return t;
            }
        }
    }
    t
}

fn accepted_requests_are_answered_under_load(backend: Backend) {
    const CLIENTS: u64 = 6;
    const PER_PHASE: Duration = Duration::from_secs(20);
    let rt = runtime(backend, 2, PER_PHASE, false);
    let handle = rt.shutdown_handle();
    let server = Server::start(rt);
    let addr = server.addr;
    let shared = server.shared.clone();

    // A request kept in flight across the trigger: header and half the payload now, and
    // accepted by the server before the load starts.
    let mut slow = stdnet::connect(addr).expect("slow client connect");
    let slow_req = request(&mut Rng::new(7), 1);
    let half = 4 + (slow_req.len() - 4) / 2;
    slow.write_all(&slow_req[..half])
        .expect("slow client: first half");
    wait_until("the slow request to be accepted", IO_TIMEOUT, || {
        shared.accepted.load(Ordering::SeqCst) == 1
    });

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (stop, served) = (stop.clone(), served.clone());
            thread::spawn(move || load_client(addr, 0x5eed + i, stop, served))
        })
        .collect();
    // Every client answered at least once (a client thread the OS started late would
    // otherwise meet the trigger with nothing sent), and 2,000 in all.
    wait_until(
        "steady load (2,000 answered, every client)",
        IO_TIMEOUT,
        || {
            served.load(Ordering::SeqCst) == CLIENTS as usize
                && shared.answered.load(Ordering::SeqCst) >= 2_000
        },
    );
    let no_spawn = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
    let triggered_at = Instant::now();
    assert!(handle.trigger(), "first trigger");
    assert!(!handle.trigger(), "the trigger is idempotent");

    // Every listener closes while the slow request is still in flight; then nothing connects.
    wait_until("both listeners closed", IO_TIMEOUT, || {
        shared.listeners_closed.load(Ordering::SeqCst) == 2
    });
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("a connection after stop-accepting was not refused: {other:?}"),
    }
    drop(no_spawn);
    // The request accepted before the stop is still answered, in full, and then the server
    // closes the connection.
    slow.write_all(&slow_req[half..])
        .expect("slow client: second half");
    let resp = read_response(&mut slow, &slow_req).expect("the in-flight request's response");
    assert_eq!(resp, slow_req);
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).expect("EOF after the drain");
    assert!(rest.is_empty());

    let (reports, shared) = server.join();
    let took = triggered_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    let tallies: Vec<Tally> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    eprintln!("shutdown took {took:?}; clients {tallies:?}; reports {reports:?}");
    assert!(took < PER_PHASE, "the shutdown took {took:?}");
    for (core, r) in reports.iter().enumerate() {
        assert!(r.is_clean(), "core {core}: {r}");
        let phases: Vec<Phase> = r.phases.iter().map(|p| p.phase).collect();
        assert_eq!(phases, Phase::STANDARD);
    }
    let accepted = shared.accepted.load(Ordering::SeqCst);
    let answered = shared.answered.load(Ordering::SeqCst);
    assert_eq!(accepted, answered, "every accepted request was answered");
    let client_answered: usize = tallies.iter().map(|t| t.answered).sum::<usize>() + 1;
    assert_eq!(
        client_answered, answered,
        "every response the server wrote reached its client whole"
    );
    for t in &tallies {
        assert_eq!((t.cut, t.corrupt), (0, 0), "{t:?}");
        assert_eq!(t.sent, t.answered + t.unanswered, "{t:?}");
        assert!(t.answered > 0, "{t:?}");
        // The connection closed by the drain, and perhaps one that reached a listener's
        // queue (or the other core's) between the trigger and the close.
        assert!(t.unanswered <= 3, "{t:?}");
    }
}

fn a_stuck_connection_is_reported_at_the_deadline(backend: Backend) {
    const PER_PHASE: Duration = Duration::from_millis(300);
    let rt = runtime(backend, 1, PER_PHASE, false);
    let handle = rt.shutdown_handle();
    let server = Server::start(rt);
    let mut stuck = stdnet::connect(server.addr).expect("connect");
    let local = stuck.local_addr().expect("local addr");
    // Half a request, never finished.
    stuck.write_all(&[0, 0, 1, 0, 42]).expect("write");
    let shared = server.shared.clone();
    wait_until("the request to be accepted", IO_TIMEOUT, || {
        shared.accepted.load(Ordering::SeqCst) == 1
    });
    let start = Instant::now();
    handle.trigger();
    let (reports, _) = server.join();
    let took = start.elapsed();
    assert!(
        took < 3 * PER_PHASE + Duration::from_secs(2),
        "took {took:?}"
    );
    let report = &reports[0];
    let late: Vec<(Phase, &str)> = report.stragglers().collect();
    let name = format!("conn {local}");
    assert_eq!(late, [(Phase::DRAIN, name.as_str())], "{report}");
    let drain = report.phase(Phase::DRAIN).expect("drain ran");
    assert!(drain.elapsed >= PER_PHASE, "{drain:?}");
    assert!(report
        .phase(Phase::CLEANUP)
        .expect("cleanup ran")
        .completed());
    // The runtime is gone: the stuck connection was closed, not left hanging.
    let mut rest = Vec::new();
    let _ = stuck.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

// ---- the signal path, in a child process ------------------------------------------------------

/// Set in the child: the backend to serve on.
const CHILD_ENV: &str = "SEASTAR_SHUTDOWN_TEST_CHILD";

/// The child: a one-core server that handles SIGINT/SIGTERM. It prints its address, serves
/// until a signal has shut it down, and prints what it drained. A no-op in a normal run.
#[test]
fn child_signal_server() {
    let backend = match std::env::var(CHILD_ENV).as_deref() {
        Ok("uring") => Backend::IoUring,
        Ok("mio") => Backend::Mio,
        _ => return,
    };
    let rt = runtime(backend, 1, Duration::from_secs(10), true);
    let shared = Arc::new(Shared {
        announce: true,
        ..Shared::default()
    });
    let s = shared.clone();
    let printer = thread::spawn(move || {
        let addr = s.wait_addr();
        println!("LISTENING {addr}");
        io::stdout().flush().expect("flush");
    });
    let s = &shared;
    let reports = rt
        .run_on_all(move |core| server_core(core, s.clone()))
        .expect("runtime");
    printer.join().expect("printer");
    let report = reports.into_iter().next().expect("one core").expect("core");
    println!(
        "DRAINED accepted={} answered={} clean={} report={report}",
        shared.accepted.load(Ordering::SeqCst),
        shared.answered.load(Ordering::SeqCst),
        report.is_clean()
    );
    io::stdout().flush().expect("flush");
}

fn sigterm_drains_a_child_process_gracefully(backend: Backend) {
    let exe = std::env::current_exe().expect("test binary");
    // `spawn` returns once the child has exec'd, so its copies of our descriptors are gone.
    let spawning = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "child_signal_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            match backend {
                Backend::IoUring => "uring",
                _ => "mio",
            },
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child");
    drop(spawning);
    let stdout = child.stdout.take().expect("child stdout");
    // Whatever happens below, the child does not outlive the test.
    let mut child = KillOnDrop(child);
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = line_tx.send(line);
        }
    });
    let addr: SocketAddr = loop {
        let line = line_rx
            .recv_timeout(IO_TIMEOUT)
            .expect("the child's address");
        // libtest may have printed "test child_signal_server ... " on the same line.
        if let Some((_, a)) = line.split_once("LISTENING ") {
            break a.trim().parse().expect("address");
        }
    };

    // One full round trip, then a request left half-sent across the signal.
    let mut s = stdnet::connect(addr).expect("connect");
    let first = request(&mut Rng::new(1), 1);
    s.write_all(&first).expect("write");
    assert_eq!(read_response(&mut s, &first).expect("response"), first);
    let second = request(&mut Rng::new(2), 2);
    let half = 4 + (second.len() - 4) / 2;
    s.write_all(&second[..half]).expect("write half");
    // The server has read into it before the signal (its first byte makes it accepted).
    loop {
        let line = line_rx.recv_timeout(IO_TIMEOUT).expect("ACCEPTED 2");
        if line.contains("ACCEPTED 2") {
            break;
        }
    }

    let pid = libc::pid_t::try_from(child.0.id()).expect("pid");
    // SAFETY: sending a signal to our own child process; integer arguments only.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);

    // The listener closes (connections are refused) while the request is still in flight.
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
            _ => {
                assert!(Instant::now() < deadline, "the child kept accepting");
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
    s.write_all(&second[half..]).expect("write the rest");
    assert_eq!(
        read_response(&mut s, &second).expect("the in-flight response"),
        second
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("EOF");
    assert!(rest.is_empty());

    let status = child.0.wait().expect("wait for the child");
    reader.join().expect("reader");
    let lines: Vec<String> = line_rx.try_iter().collect();
    assert!(
        status.success(),
        "child exited with {status}; output {lines:?}"
    );
    let drained = lines
        .iter()
        .find_map(|l| l.split_once("DRAINED ").map(|(_, d)| d))
        .unwrap_or_else(|| panic!("no DRAINED line in {lines:?}"));
    assert!(
        drained.starts_with("accepted=2 answered=2 clean=true"),
        "{drained}"
    );
}

/// Kills (SIGKILL) and reaps the child when dropped, if it is still running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
