//! Dropping a future whose operation is in flight (here through `seastar::time::timeout`), on
//! both backends: the operation is cancelled, nothing is lost or corrupted, and the stream,
//! listener and runtime stay usable.
//!
//! - A read cancelled while no data was in flight loses nothing: the next read gets every byte.
//! - An accept cancelled by a timeout: the next accept gets the connection.
//! - `connect_timeout` to a listener whose accept queue is full gives up with `TimedOut`
//!   (the kernel drops the SYNs, so only our timer ends it), and the core connects elsewhere
//!   right after.
//! - A `write_all` blocked on a peer that does not read, cancelled: the peer then receives an
//!   exact prefix of the data followed by a clean EOF once we drop the stream; not a byte of
//!   freed memory (the buffer is kept until the kernel is done with it).

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use seastar::net::{TcpListener, TcpStream};
use seastar::time::{sleep, timeout};
use seastar::Backend;
use seastar_tests::client::{self, must_runtime};
use seastar_tests::payload::PatternStream;
use seastar_tests::stdnet::{self, StdListener};
use seastar_tests::{IO_TIMEOUT, LOOPBACK_ANY_PORT};

const SEED: u64 = 0x5EA5_7A12_0000_0005;

fn cancelled_read_loses_nothing(backend: Backend) {
    const ROUNDS: usize = 20;
    let l = StdListener::bind().expect("bind");
    let addr = l.addr();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut tx = PatternStream::new(SEED);
        for _ in 0..ROUNDS {
            // Send only after our side cancelled a read and let the core run the cancel.
            go_rx.recv_timeout(IO_TIMEOUT).expect("go");
            s.write_all(&tx.next_chunk(10_000)).expect("send");
        }
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
    });
    let received = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            let mut rx = PatternStream::new(SEED);
            for round in 0..ROUNDS {
                let r = timeout(Duration::from_millis(20), s.read(vec![0xEEu8; 4096])).await;
                assert!(
                    r.is_err(),
                    "round {round}: a read with no data sent completed"
                );
                sleep(Duration::from_millis(30)).await;
                go_tx.send(()).expect("go");
                let got = client::read_exact(&s, 10_000)
                    .await
                    .expect("read after cancel");
                rx.check(&got)
                    .unwrap_or_else(|e| panic!("round {round}: data after a cancelled read: {e}"));
            }
            assert!(client::read_to_end(&s, 0).await.expect("EOF").is_empty());
            rx.position()
        })
        .expect("runtime");
    peer.join().expect("peer");
    assert_eq!(received, (ROUNDS * 10_000) as u64);
}

fn cancelled_accept_then_accept(backend: Backend) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let addr = addr_rx.recv_timeout(IO_TIMEOUT).expect("server address");
        go_rx.recv_timeout(IO_TIMEOUT).expect("go");
        let mut s = stdnet::connect(addr).expect("connect");
        s.write_all(b"after the cancelled accept").expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("EOF");
        rest
    });
    let got = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let l = TcpListener::bind(LOOPBACK_ANY_PORT).expect("bind");
            addr_tx
                .send(l.local_addr().expect("addr"))
                .expect("send addr");
            for _ in 0..3 {
                let r = timeout(Duration::from_millis(20), l.accept()).await;
                assert!(r.is_err(), "accept returned with no client");
            }
            go_tx.send(()).expect("go");
            let (s, _) = timeout(IO_TIMEOUT, l.accept())
                .await
                .expect("accept after cancelled accepts timed out")
                .expect("accept");
            let data = client::read_to_end(&s, 1024).await.expect("read");
            client::write_all(&s, b"ok".to_vec()).await.expect("reply");
            data
        })
        .expect("runtime");
    assert_eq!(got, b"after the cancelled accept");
    assert_eq!(client.join().expect("client"), b"ok");
}

fn connect_timeout_backlog_full(backend: Backend) {
    let (full, _fillers) = stdnet::full_backlog_listener().expect("full listener");
    let full_addr = full.local_addr().expect("addr");
    let ok_server = stdnet::StdServer::spawn(1, |s, _| stdnet::echo(s)).expect("echo server");
    let ok_addr = ok_server.addr();
    let (err, elapsed) = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let start = Instant::now();
            let r = TcpStream::connect_timeout(full_addr, Duration::from_millis(300)).await;
            let elapsed = start.elapsed();
            let err = r
                .map(|_| ())
                .expect_err("connect to a full accept queue must time out");
            // The core is fine: a connect elsewhere works and echoes.
            let s = TcpStream::connect(ok_addr)
                .await
                .expect("connect after timeout");
            client::write_all(&s, b"ping".to_vec())
                .await
                .expect("write");
            assert_eq!(client::read_exact(&s, 4).await.expect("echo"), b"ping");
            s.shutdown(std::net::Shutdown::Write)
                .await
                .expect("half-close");
            assert!(client::read_to_end(&s, 0).await.expect("EOF").is_empty());
            (err, elapsed)
        })
        .expect("runtime");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(10),
        "connect_timeout(300 ms) returned after {elapsed:?}"
    );
    assert_eq!(
        ok_server
            .join_ok()
            .into_iter()
            .map(|r| r.expect("echo"))
            .collect::<Vec<_>>(),
        [4]
    );
}

fn cancelled_blocked_write_sends_exact_prefix(backend: Backend) {
    const TOTAL: usize = 32 << 20;
    let l = StdListener::bind().expect("bind");
    let addr = l.addr();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || -> Vec<u8> {
        let (mut s, _) = l.accept().expect("accept");
        // Do not read until our side has cancelled its write and dropped the stream.
        go_rx.recv_timeout(IO_TIMEOUT).expect("go");
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .expect("read to EOF (a clean close, not a reset)");
        got
    });
    must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            let data = PatternStream::new(SEED).next_chunk(TOTAL);
            let r = timeout(Duration::from_millis(300), s.write_all(data)).await;
            assert!(r.is_err(), "32 MiB written to a peer that does not read");
            // Reuse freed memory with junk: a send still reading a freed buffer would show it.
            let junk: Vec<Vec<u8>> = (0..64).map(|_| vec![0xEEu8; 1 << 20]).collect();
            drop(s);
            sleep(Duration::from_millis(50)).await;
            drop(junk);
            go_tx.send(()).expect("go");
        })
        .expect("runtime");
    let got = peer.join().expect("peer");
    assert!(
        !got.is_empty() && got.len() < TOTAL,
        "peer got {} bytes",
        got.len()
    );
    PatternStream::new(SEED)
        .check(&got)
        .unwrap_or_else(|e| panic!("after a cancelled write the peer got other bytes: {e}"));
}

/// Cancelled operations never act on a descriptor number that was reused: stream A gets a
/// write (blocked: its peer does not read) and a read cancelled, then is dropped; stream B,
/// opened right after on the same core, very likely gets A's descriptor number. B's peer must
/// receive exactly B's bytes (not A's 0xAA filler) and B must receive exactly its peer's reply
/// (not have it taken by A's stale read). Repeated.
fn cancelled_ops_do_not_touch_a_reused_descriptor(backend: Backend) {
    const ITERS: usize = 20;
    let stuck = StdListener::bind().expect("bind");
    let stuck_addr = stuck.addr();
    let stuck_peer = std::thread::spawn(move || {
        // Accept and hold every A connection without reading.
        let mut held = Vec::new();
        for _ in 0..ITERS {
            held.push(stuck.accept().expect("accept A").0);
        }
        held
    });
    let checker = stdnet::StdServer::spawn(ITERS, |mut s, _| -> std::io::Result<Vec<u8>> {
        let got = stdnet::read_to_end(&mut s)?;
        s.write_all(b"reply for B")?;
        Ok(got)
    })
    .expect("checker");
    let b_addr = checker.addr();
    must_runtime(backend, 1)
        .run_on_one(move || async move {
            for i in 0..ITERS {
                let a = TcpStream::connect(stuck_addr).await.expect("connect A");
                let w = timeout(
                    Duration::from_millis(20),
                    a.write_all(vec![0xAAu8; 16 << 20]),
                )
                .await;
                assert!(w.is_err(), "16 MiB to a peer that does not read");
                let r = timeout(Duration::from_millis(5), a.read(Vec::with_capacity(64))).await;
                assert!(r.is_err(), "A's peer sends nothing");
                drop(a);
                let b = TcpStream::connect(b_addr).await.expect("connect B");
                let msg = format!("B message {i:02}").into_bytes();
                client::write_all(&b, msg).await.expect("write B");
                b.shutdown(std::net::Shutdown::Write)
                    .await
                    .expect("half-close B");
                let reply = timeout(IO_TIMEOUT, client::read_to_end(&b, 1024))
                    .await
                    .expect("B's reply never arrived (taken by a stale read?)")
                    .expect("read B");
                assert_eq!(reply, b"reply for B", "iteration {i}");
            }
        })
        .expect("runtime");
    let mut got: Vec<Vec<u8>> = checker
        .join_ok()
        .into_iter()
        .map(|r| r.expect("checker"))
        .collect();
    got.sort();
    let want: Vec<Vec<u8>> = (0..ITERS)
        .map(|i| format!("B message {i:02}").into_bytes())
        .collect();
    assert_eq!(got, want, "B's peers must get exactly B's bytes");
    drop(stuck_peer.join().expect("stuck peer"));
}

seastar_tests::on_both_backends! {
    cancelled_ops_do_not_touch_a_reused_descriptor,
    cancelled_read_loses_nothing,
    cancelled_accept_then_accept,
    connect_timeout_backlog_full,
    cancelled_blocked_write_sends_exact_prefix,
}
