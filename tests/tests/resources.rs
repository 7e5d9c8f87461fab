//! Runtimes give everything back, on both backends: after many cycles of building a server
//! runtime and a client runtime, serving connections (including ones dropped with unread
//! data, cancelled reads, streams dropped mid-write, and a detached task still reading when
//! its runtime ends), and dropping it all, the process has
//! the same open file descriptors (rings, epoll and wake-up descriptors, sockets) and the same
//! threads as before.
//!
//! The two tests of this file take a lock, so the counts are not disturbed by each other.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use seastar::net::TcpStream;
use seastar::Backend;
use seastar_tests::client::{self, must_runtime};
use seastar_tests::payload::Pool;
use seastar_tests::server::Server;
use seastar_tests::watchdog::wait_until;

const SEED: u64 = 0x5EA5_7A12_0000_0007;
const CYCLES: usize = 10;

static SERIAL: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The ids of this process's threads.
fn threads() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn cycle(backend: Backend, pool: &Pool) {
    let server = Server::spawn(backend, 2, |s, _| client::echo(s));
    let addr = server.addr();
    let rt = must_runtime(backend, 1);
    let pool2 = pool.clone();
    rt.run_on_one(move || async move {
        let mut tasks = Vec::new();
        for conn in 0..8u64 {
            let pool = pool2.clone();
            tasks.push(seastar::spawn(async move {
                client::round_trips(addr, &pool, SEED, conn, 10).await
            }));
        }
        for t in tasks {
            t.await.expect("join").expect("round trips");
        }
        // Dropped with unread data: the echo of 100 KiB is never read.
        let s = TcpStream::connect(addr).await.expect("connect");
        client::write_all(&s, vec![1u8; 100_000])
            .await
            .expect("write");
        drop(s);
        // A cancelled read, then dropped.
        let s = TcpStream::connect(addr).await.expect("connect");
        let r =
            seastar::time::timeout(Duration::from_millis(5), s.read(Vec::with_capacity(64))).await;
        assert!(r.is_err());
        drop(s);
        // Dropped while a write is in flight (cancelled by the timeout).
        let s = TcpStream::connect(addr).await.expect("connect");
        let r = seastar::time::timeout(Duration::from_millis(20), s.write_all(vec![2u8; 64 << 20]))
            .await;
        assert!(r.is_err(), "64 MiB to an echo server nobody reads from");
        drop(s);
        // A detached task still waiting for data when the root future returns: the runtime
        // must not wait for it, and must close its stream.
        let s = TcpStream::connect(addr).await.expect("connect");
        seastar::spawn(async move {
            let _ = s.read(Vec::with_capacity(16)).await;
            unreachable!("nobody sends to this connection");
        })
        .detach();
        seastar::time::sleep(Duration::from_millis(20)).await;
    })
    .expect("client runtime");
    drop(rt);
    // The client is gone, but the last connections may still sit in the listen backlog of
    // a busy server core: wait for them, or `stop` would leave them unaccepted.
    server.wait_accepted(12, Duration::from_secs(10));
    let report = server.stop();
    assert!(
        report.accept_errors.is_empty(),
        "{:?}",
        report.accept_errors
    );
    assert_eq!(report.conns.len(), 12);
    // Clean EOFs: the connection whose read was cancelled, and the detached reader's, closed
    // when its runtime ended (a task left running would keep it open past the drain).
    let eofs = report
        .conns
        .iter()
        .filter(|c| c.result.as_ref().ok() == Some(&0))
        .count();
    assert_eq!(eofs, 2, "{:?}", report.conns);
}

fn runtimes_release_fds_and_threads(backend: Backend) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let pool = Pool::standard(SEED);
    cycle(backend, &pool); // warm-up: lazily created process-wide state, if any
    let (fds, thr) = (open_fds(), threads());
    for _ in 0..CYCLES {
        cycle(backend, &pool);
    }
    // Threads are compared by id, not counted: a thread that was there before may still
    // be on its way out (the other test's, or one just joined), which a count would take
    // for a missing one, or let hide a leaked one.
    let started = || threads().difference(&thr).copied().collect::<Vec<_>>();
    wait_until("threads to exit", Duration::from_secs(10), || {
        started().is_empty()
    });
    wait_until("descriptors to close", Duration::from_secs(10), || {
        open_fds() <= fds
    });
    assert_eq!(
        open_fds(),
        fds,
        "open descriptors after {CYCLES} runtime cycles"
    );
    assert_eq!(
        started(),
        Vec::<u32>::new(),
        "threads left after {CYCLES} runtime cycles"
    );
}

seastar_tests::on_both_backends! {
    runtimes_release_fds_and_threads,
}
