//! 1,000 concurrent connections on both backends: every connection is open at the same time
//! (proved on the side that is not under test), each sends one framed message of 1 B..=4 KiB
//! and checks its echo byte for byte.
//!
//! - std client (one thread holding all 1,000 sockets) → our two-core server: the server's
//!   high-water mark of open connections must be exactly 1,000.
//! - our client (1,000 tasks on two cores, writing only once all are connected) → our server.
//! - our client → a std server that accepts all 1,000 before it answers any.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use seastar::net::TcpStream;
use seastar::runtime::UringConfig;
use seastar::{Backend, Runtime};
use seastar_tests::client::{self, must_runtime};
use seastar_tests::payload::Pool;
use seastar_tests::proto::frame;
use seastar_tests::rng::Rng;
use seastar_tests::server::{ConnInfo, Server};
use seastar_tests::stdnet::{self, StdListener};
use seastar_tests::{limits, IO_TIMEOUT};

const SEED: u64 = 0x5EA5_7A12_0000_0003;
const CONNS: usize = 1_000;

/// Descriptors: up to two ends per connection in this process, plus the other tests running
/// in parallel.
fn raise_fd_limit() {
    let (old, new, hard) = limits::raise_nofile(4 * CONNS as u64 + 1024)
        .unwrap_or_else(|e| panic!("need more file descriptors: {e}"));
    if old != new {
        eprintln!("RLIMIT_NOFILE soft limit raised from {old} to {new} (hard {hard})");
    }
}

/// Message of connection `conn`: a frame around a pool slice of 1 B..=4 KiB.
fn message(pool: &Pool, conn: usize) -> Vec<u8> {
    let mut rng = Rng::for_stream(SEED, conn as u64);
    let len = rng.log_uniform(1, 4096);
    frame(pool.slice(pool.pick(&mut rng, len)))
}

/// One std thread opens all connections, then writes every message, then reads and checks
/// every echo, then half-closes each and reads its EOF.
fn std_clients_our_server(backend: Backend) {
    raise_fd_limit();
    let pool = Pool::standard(SEED);
    let server = Server::spawn(backend, 2, |s, _: ConnInfo| client::echo(s));
    let addr = server.addr();
    let mut socks = Vec::with_capacity(CONNS);
    for i in 0..CONNS {
        socks.push(stdnet::connect(addr).unwrap_or_else(|e| panic!("connect #{i}: {e}")));
    }
    // All sockets are connected (handshakes done by the kernel); every one must be accepted
    // and served concurrently.
    for (i, s) in socks.iter_mut().enumerate() {
        s.write_all(&message(&pool, i))
            .unwrap_or_else(|e| panic!("write #{i}: {e}"));
    }
    for (i, s) in socks.iter_mut().enumerate() {
        let want = message(&pool, i);
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("read echo #{i}: {e}"));
        assert!(got == want, "echo of connection {i} differs");
    }
    assert_eq!(
        server.stats().open.load(Ordering::SeqCst),
        CONNS,
        "open on the server"
    );
    for (i, s) in socks.iter_mut().enumerate() {
        s.shutdown(Shutdown::Write).expect("half-close");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("EOF #{i}: {e}"));
        assert!(rest.is_empty());
    }
    let expected: Vec<(SocketAddr, u64)> = socks
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.local_addr().expect("addr"),
                message(&pool, i).len() as u64,
            )
        })
        .collect();
    drop(socks);
    let report = server.stop();
    let served = report.assert_all_ok();
    assert_eq!(served.len(), CONNS);
    for (local, n) in &expected {
        assert_eq!(report.conn_from(*local).result.as_ref().ok(), Some(n));
    }
    assert_eq!(
        report.max_open, CONNS,
        "connections open at once on our server"
    );
    assert!(
        report.per_core.iter().all(|&n| n > 0),
        "{:?}",
        report.per_core
    );
}

/// Our client: `CONNS` tasks over two cores; each connects, waits until all are connected,
/// then sends its message and checks the echo, waits until every echo arrived, then
/// half-closes and reads EOF. Returns each connection's local address and message length.
fn our_clients(backend: Backend, addr: SocketAddr, pool: &Pool) -> Vec<(SocketAddr, u64)> {
    our_clients_on(&must_runtime(backend, 2), addr, pool)
}

/// [`our_clients`] on a given runtime (its cores share the connections).
fn our_clients_on(rt: &Runtime, addr: SocketAddr, pool: &Pool) -> Vec<(SocketAddr, u64)> {
    let connected = Arc::new(AtomicUsize::new(0));
    let echoed = Arc::new(AtomicUsize::new(0));
    let cores = rt.cores();
    let per_core = rt
        .run_on_all(|core| {
            let pool = pool.clone();
            let connected = connected.clone();
            let echoed = echoed.clone();
            async move {
                let mut tasks = Vec::new();
                for conn in (core..CONNS).step_by(cores) {
                    let pool = pool.clone();
                    let connected = connected.clone();
                    let echoed = echoed.clone();
                    tasks.push(seastar::spawn(async move {
                        let s = TcpStream::connect(addr)
                            .await
                            .unwrap_or_else(|e| panic!("connect #{conn}: {e}"));
                        connected.fetch_add(1, Ordering::SeqCst);
                        let start = Instant::now();
                        while connected.load(Ordering::SeqCst) < CONNS {
                            assert!(
                                start.elapsed() < IO_TIMEOUT,
                                "not all connections were made"
                            );
                            seastar::time::sleep(Duration::from_millis(2)).await;
                        }
                        let msg = message(&pool, conn);
                        client::write_all(&s, msg.clone()).await.expect("write");
                        let got = client::read_exact(&s, msg.len()).await.expect("read echo");
                        assert!(got == msg, "echo of connection {conn} differs");
                        // Second barrier: nobody closes before every echo arrived, so the
                        // server holds all connections at once.
                        echoed.fetch_add(1, Ordering::SeqCst);
                        while echoed.load(Ordering::SeqCst) < CONNS {
                            assert!(start.elapsed() < IO_TIMEOUT, "not all echoes arrived");
                            seastar::time::sleep(Duration::from_millis(2)).await;
                        }
                        s.shutdown(Shutdown::Write).await.expect("half-close");
                        let rest = client::read_to_end(&s, 1 << 16).await.expect("EOF");
                        assert!(rest.is_empty());
                        (s.local_addr().expect("addr"), msg.len() as u64)
                    }));
                }
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.expect("client task"));
                }
                out
            }
        })
        .expect("client runtime");
    per_core.into_iter().flatten().collect()
}

fn our_clients_our_server(backend: Backend) {
    raise_fd_limit();
    let pool = Pool::standard(SEED);
    let server = Server::spawn(backend, 2, |s, _: ConnInfo| client::echo(s));
    let clients = our_clients(backend, server.addr(), &pool);
    assert_eq!(clients.len(), CONNS);
    let report = server.stop();
    assert_eq!(report.assert_all_ok().len(), CONNS);
    for (local, n) in &clients {
        assert_eq!(report.conn_from(*local).result.as_ref().ok(), Some(n));
    }
    assert_eq!(
        report.max_open, CONNS,
        "connections open at once on our server"
    );
}

/// A std server that accepts all `CONNS` connections before echoing any message, so our
/// client must hold them all open at once.
fn our_clients_std_server(backend: Backend) {
    raise_fd_limit();
    let pool = Pool::standard(SEED);
    let l = StdListener::bind().expect("bind");
    let addr = l.addr();
    let server = std::thread::spawn(move || -> Vec<u64> {
        let mut socks = Vec::with_capacity(CONNS);
        for i in 0..CONNS {
            socks.push(
                l.accept()
                    .unwrap_or_else(|e| panic!("std accept #{i}: {e}"))
                    .0,
            );
        }
        let mut lens = Vec::new();
        for s in &mut socks {
            let mut h = [0u8; 4];
            s.read_exact(&mut h).expect("frame header");
            let mut body = vec![0u8; u32::from_le_bytes(h) as usize];
            s.read_exact(&mut body).expect("frame body");
            s.write_all(&h).expect("echo header");
            s.write_all(&body).expect("echo body");
            lens.push(4 + body.len() as u64);
        }
        for s in &mut socks {
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).expect("client EOF");
            assert!(rest.is_empty());
        }
        lens
    });
    let clients = our_clients(backend, addr, &pool);
    let mut sent: Vec<u64> = clients.iter().map(|c| c.1).collect();
    let mut echoed = server.join().expect("std server");
    sent.sort_unstable();
    echoed.sort_unstable();
    assert_eq!(sent, echoed);
}

/// Ours to ours with everything on one core each side: 1,000 receives in flight on one ring
/// (far more than its 256 submission entries), bursts of 1,000 completions.
fn single_core_each_side(backend: Backend) {
    burst(backend, None);
}

fn burst(backend: Backend, uring: Option<UringConfig>) {
    raise_fd_limit();
    let pool = Pool::standard(SEED);
    let server = Server::spawn_with(
        backend,
        1,
        seastar_tests::LOOPBACK_ANY_PORT,
        uring.clone(),
        |s, _: ConnInfo| client::echo(s),
    );
    let rt = client::runtime_with(backend, 1, uring).expect("client runtime");
    let clients = our_clients_on(&rt, server.addr(), &pool);
    assert_eq!(clients.len(), CONNS);
    let report = server.stop();
    assert_eq!(report.assert_all_ok().len(), CONNS);
    for (local, n) in &clients {
        assert_eq!(report.conn_from(*local).result.as_ref().ok(), Some(n));
    }
    assert_eq!(report.max_open, CONNS);
}

/// io_uring under ring pressure and in its other modes, with the single-core burst above.
mod uring_modes {
    use super::*;
    use seastar_tests::watchdog::with_deadline;
    use seastar_tests::TEST_DEADLINE;

    /// An 8-entry ring (16 completion entries): the submission queue fills constantly and
    /// completions overflow into the kernel's backlog (`IORING_FEAT_NODROP`).
    #[test]
    fn tiny_ring() {
        with_deadline("uring_modes::tiny_ring", TEST_DEADLINE, || {
            burst(Backend::IoUring, Some(UringConfig::new().entries(8)))
        });
    }

    /// Without `DEFER_TASKRUN`.
    #[test]
    fn no_defer_taskrun() {
        with_deadline("uring_modes::no_defer_taskrun", TEST_DEADLINE, || {
            burst(
                Backend::IoUring,
                Some(UringConfig::new().defer_taskrun(false)),
            )
        });
    }

    /// Multishot accept emulated by re-arming single-shot accepts.
    #[test]
    fn emulated_multishot_accept() {
        with_deadline(
            "uring_modes::emulated_multishot_accept",
            TEST_DEADLINE,
            || {
                burst(
                    Backend::IoUring,
                    Some(UringConfig::new().native_multishot_accept(false)),
                )
            },
        );
    }
}

seastar_tests::on_both_backends! {
    single_core_each_side,
    std_clients_our_server,
    our_clients_our_server,
    our_clients_std_server,
}
