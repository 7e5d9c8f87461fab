//! A Seastar-RS server on its own runtime in a background thread.
//!
//! [`Server::spawn`] builds a runtime (`cores` cores, unpinned, the chosen backend); every core
//! binds a `seastar::net::TcpListener` to the same loopback port (core 0 picks an ephemeral
//! port, the others join it through `SO_REUSEPORT`), signals readiness, and accepts in a loop,
//! spawning `handler(stream, info)` for each connection. The test gets the address once every
//! core is listening.
//!
//! [`Server::stop`] sets a stop flag and connects to the port until every core has seen the
//! flag (an accept is the only thing a core waits on, so a connection is what wakes it); each
//! core then stops accepting, waits for its connection tasks (bounded by [`DRAIN_TIMEOUT`]) and
//! returns one [`ConnRecord`] per connection, so tests can assert what the server saw.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use seastar::net::{TcpListener, TcpStream};
use seastar::Backend;

use crate::LOOPBACK_ANY_PORT;

/// How long a stopping core waits for its remaining connection tasks.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a connection handler learns about its connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The core it runs on.
    pub core: usize,
    /// The client's address (from `accept`).
    pub peer: SocketAddr,
    /// Shared server counters.
    pub stats: Arc<ServerStats>,
}

/// How one connection ended, as the server saw it.
#[derive(Debug)]
pub struct ConnRecord {
    /// The core that served it.
    pub core: usize,
    /// The client's address.
    pub peer: SocketAddr,
    /// The handler's result (typically the number of bytes it received), the error kind and
    /// message if it failed, or a description of a panic / join failure / drain timeout
    /// (kind `Other`).
    pub result: Result<u64, (io::ErrorKind, String)>,
}

/// Counters shared by all cores of one server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted (not counting the stop pokes).
    pub accepted: AtomicUsize,
    /// Connections whose handler has not returned yet.
    pub open: AtomicUsize,
    /// The largest value `open` reached.
    pub max_open: AtomicUsize,
    /// Handlers that returned.
    pub finished: AtomicUsize,
}

impl ServerStats {
    fn opened(&self) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_open.fetch_max(now, Ordering::SeqCst);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a stopped server reports.
#[derive(Debug)]
pub struct ServerReport {
    /// One record per accepted connection, all cores.
    pub conns: Vec<ConnRecord>,
    /// Errors `accept` returned (a healthy run has none).
    pub accept_errors: Vec<String>,
    /// Connections served per core.
    pub per_core: Vec<usize>,
    /// The largest number of connections open at once.
    pub max_open: usize,
}

impl ServerReport {
    /// Panics unless there were no accept errors and every connection's handler returned `Ok`;
    /// returns the `Ok` values in accept order per core.
    pub fn assert_all_ok(&self) -> Vec<(SocketAddr, u64)> {
        assert!(
            self.accept_errors.is_empty(),
            "accept errors: {:?}",
            self.accept_errors
        );
        self.conns
            .iter()
            .map(|c| match &c.result {
                Ok(v) => (c.peer, *v),
                Err(e) => panic!(
                    "server connection from {} (core {}) failed: {e:?}",
                    c.peer, c.core
                ),
            })
            .collect()
    }

    /// The record of the connection from `peer`.
    pub fn conn_from(&self, peer: SocketAddr) -> &ConnRecord {
        self.conns
            .iter()
            .find(|c| c.peer == peer)
            .unwrap_or_else(|| panic!("no server record for peer {peer}; have {:?}", self.conns))
    }
}

/// Core 0 publishes the bound address; the other cores bind the same one.
#[derive(Debug, Default)]
struct Rendezvous {
    addr: Mutex<Option<Result<SocketAddr, String>>>,
    cv: Condvar,
}

impl Rendezvous {
    fn publish(&self, v: Result<SocketAddr, String>) {
        *self.addr.lock().expect("rendezvous lock") = Some(v);
        self.cv.notify_all();
    }

    fn wait(&self) -> Result<SocketAddr, String> {
        let g = self.addr.lock().expect("rendezvous lock");
        let (g, _) = self
            .cv
            .wait_timeout_while(g, Duration::from_secs(30), |a| a.is_none())
            .expect("rendezvous lock");
        g.clone()
            .unwrap_or_else(|| Err("core 0 never published its address".into()))
    }
}

/// A running server (see the module docs).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    cores: usize,
    stop: Arc<AtomicBool>,
    left_accept_loop: Arc<AtomicUsize>,
    stats: Arc<ServerStats>,
    thread: Option<thread::JoinHandle<Result<Vec<CoreReport>, String>>>,
}

#[derive(Debug)]
struct CoreReport {
    conns: Vec<ConnRecord>,
    accept_errors: Vec<String>,
}

impl Server {
    /// Starts a server and returns once every core listens. `handler` runs once per accepted
    /// connection, as its own task on the accepting core.
    pub fn spawn<H, F>(backend: Backend, cores: usize, handler: H) -> Self
    where
        H: Fn(TcpStream, ConnInfo) -> F + Send + Sync + 'static,
        F: Future<Output = io::Result<u64>> + 'static,
    {
        Self::spawn_at(backend, cores, LOOPBACK_ANY_PORT, handler)
    }

    /// [`spawn`](Self::spawn) on another local address (e.g. `[::1]:0`); port 0 picks one.
    pub fn spawn_at<H, F>(backend: Backend, cores: usize, bind: SocketAddr, handler: H) -> Self
    where
        H: Fn(TcpStream, ConnInfo) -> F + Send + Sync + 'static,
        F: Future<Output = io::Result<u64>> + 'static,
    {
        Self::spawn_with(backend, cores, bind, None, handler)
    }

    /// [`spawn_at`](Self::spawn_at) with an io_uring ring configuration (ignored by mio).
    pub fn spawn_with<H, F>(
        backend: Backend,
        cores: usize,
        bind: SocketAddr,
        uring: Option<seastar::runtime::UringConfig>,
        handler: H,
    ) -> Self
    where
        H: Fn(TcpStream, ConnInfo) -> F + Send + Sync + 'static,
        F: Future<Output = io::Result<u64>> + 'static,
    {
        let handler = Arc::new(handler);
        let stop = Arc::new(AtomicBool::new(false));
        let left_accept_loop = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(ServerStats::default());
        let rendezvous = Arc::new(Rendezvous::default());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, String>>();

        let (stop2, left2, stats2) = (stop.clone(), left_accept_loop.clone(), stats.clone());
        let thread = thread::Builder::new()
            .name("seastar-server".into())
            .spawn(move || -> Result<Vec<CoreReport>, String> {
                let rt = match crate::client::runtime_with(backend, cores, uring) {
                    Ok(rt) => rt,
                    Err(e) => {
                        let msg = format!("building the server runtime: {e}");
                        let _ = ready_tx.send(Err(msg.clone()));
                        return Err(msg);
                    }
                };
                let ready_tx = Mutex::new(ready_tx);
                let res = rt.run_on_all(move |core: usize| {
                    let handler = handler.clone();
                    let stop = stop2.clone();
                    let left = left2.clone();
                    let stats = stats2.clone();
                    let rendezvous = rendezvous.clone();
                    let ready_tx = ready_tx.lock().expect("ready lock").clone();
                    let setup = CoreSetup {
                        core,
                        bind,
                        stop,
                        left,
                        stats,
                        rendezvous,
                        ready_tx,
                    };
                    async move { serve_core(setup, handler).await }
                });
                match res {
                    Ok(v) => Ok(v),
                    Err(e) => Err(format!("run_on_all: {e:?}")),
                }
            })
            .expect("spawn server thread");

        let mut addr = None;
        for _ in 0..cores {
            match ready_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Ok(a)) => addr = Some(a),
                Ok(Err(e)) => panic!("server failed to start: {e}"),
                Err(e) => panic!("server did not become ready: {e}"),
            }
        }
        Server {
            addr: addr.expect("cores >= 1"),
            cores,
            stop,
            left_accept_loop,
            stats,
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// The live counters, shareable (e.g. with client code on another runtime).
    pub fn stats_arc(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Waits until `n` connections have been accepted (bounded; panics after `limit`).
    pub fn wait_accepted(&self, n: usize, limit: Duration) {
        crate::watchdog::wait_until(&format!("{n} server accepts"), limit, || {
            self.stats.accepted.load(Ordering::SeqCst) >= n
        });
    }

    /// Waits until `n` handlers have returned (bounded; panics after `limit`).
    pub fn wait_finished(&self, n: usize, limit: Duration) {
        crate::watchdog::wait_until(&format!("{n} server connections to finish"), limit, || {
            self.stats.finished.load(Ordering::SeqCst) >= n
        });
    }

    /// Stops accepting, waits for the connection tasks, and reports.
    pub fn stop(mut self) -> ServerReport {
        self.stop.store(true, Ordering::SeqCst);
        let start = Instant::now();
        // Every core waits in `accept`: poke until each has left its loop.
        while self.left_accept_loop.load(Ordering::SeqCst) < self.cores {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "server cores did not leave their accept loops"
            );
            if let Ok(s) = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))
            {
                drop(s);
            }
            thread::sleep(Duration::from_millis(10));
        }
        let thread = self.thread.take().expect("stopped once");
        crate::watchdog::wait_until("the server runtime to return", DRAIN_TIMEOUT * 2, || {
            thread.is_finished()
        });
        let cores = match thread.join() {
            Ok(Ok(cores)) => cores,
            Ok(Err(e)) => panic!("server runtime failed: {e}"),
            Err(p) => panic!(
                "server thread panicked: {}",
                crate::stdnet::panic_message(&*p)
            ),
        };
        let mut report = ServerReport {
            conns: Vec::new(),
            accept_errors: Vec::new(),
            per_core: Vec::new(),
            max_open: self.stats.max_open.load(Ordering::SeqCst),
        };
        for c in cores {
            report.per_core.push(c.conns.len());
            report.conns.extend(c.conns);
            report.accept_errors.extend(c.accept_errors);
        }
        report
    }
}

impl Drop for Server {
    /// A server dropped without [`stop`](Server::stop) (a test failed first): ask it to stop
    /// and wake its cores, without waiting, so its threads do not serve on for the rest of the
    /// test binary.
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        self.stop.store(true, Ordering::SeqCst);
        for _ in 0..(2 * self.cores) {
            if self.left_accept_loop.load(Ordering::SeqCst) >= self.cores {
                break;
            }
            let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
        }
    }
}

struct CoreSetup {
    core: usize,
    bind: SocketAddr,
    stop: Arc<AtomicBool>,
    left: Arc<AtomicUsize>,
    stats: Arc<ServerStats>,
    rendezvous: Arc<Rendezvous>,
    ready_tx: mpsc::Sender<Result<SocketAddr, String>>,
}

async fn serve_core<H, F>(setup: CoreSetup, handler: Arc<H>) -> CoreReport
where
    H: Fn(TcpStream, ConnInfo) -> F + 'static,
    F: Future<Output = io::Result<u64>> + 'static,
{
    let CoreSetup {
        core,
        bind,
        stop,
        left,
        stats,
        rendezvous,
        ready_tx,
    } = setup;
    let bound = if core == 0 {
        let r = TcpListener::bind(bind).and_then(|l| {
            let a = l.local_addr()?;
            Ok((l, a))
        });
        rendezvous.publish(r.as_ref().map(|(_, a)| *a).map_err(|e| e.to_string()));
        r.map_err(|e| format!("core 0: bind {bind}: {e}"))
    } else {
        rendezvous.wait().and_then(|a| {
            TcpListener::bind(a)
                .map(|l| (l, a))
                .map_err(|e| format!("core {core}: bind {a} (SO_REUSEPORT): {e}"))
        })
    };
    let listener = match bound {
        Ok((l, a)) => {
            let _ = ready_tx.send(Ok(a));
            l
        }
        Err(e) => {
            let _ = ready_tx.send(Err(e.clone()));
            left.fetch_add(1, Ordering::SeqCst);
            return CoreReport {
                conns: Vec::new(),
                accept_errors: vec![e],
            };
        }
    };
    drop(ready_tx);

    let mut tasks = Vec::new();
    let mut accept_errors = Vec::new();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                stats.opened();
                let info = ConnInfo {
                    core,
                    peer,
                    stats: stats.clone(),
                };
                let fut = handler(stream, info);
                let stats = stats.clone();
                let task = seastar::spawn(async move {
                    let r = fut.await;
                    stats.closed();
                    r
                });
                tasks.push((peer, task));
            }
            Err(e) => {
                accept_errors.push(format!("core {core}: accept: {e} ({:?})", e.kind()));
                if stop.load(Ordering::SeqCst) || accept_errors.len() > 100 {
                    break;
                }
            }
        }
    }
    drop(listener);
    left.fetch_add(1, Ordering::SeqCst);

    let mut conns = Vec::with_capacity(tasks.len());
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    for (peer, task) in tasks {
        let left_time = deadline.saturating_duration_since(Instant::now());
        let result = match seastar::time::timeout(left_time, task).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err((e.kind(), e.to_string())),
            Ok(Err(join)) => Err((io::ErrorKind::Other, format!("join error: {join:?}"))),
            Err(_) => Err((
                io::ErrorKind::Other,
                format!("connection task still running {DRAIN_TIMEOUT:?} after stop"),
            )),
        };
        conns.push(ConnRecord { core, peer, result });
    }
    CoreReport {
        conns,
        accept_errors,
    }
}
