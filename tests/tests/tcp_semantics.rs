//! TCP semantics on both backends: half-close in each direction and with each side ours,
//! connection refused, and a peer's reset surfacing as the right `io::ErrorKind`.
//!
//! Error kinds asserted here are Linux's, exactly:
//! - connect to a loopback port nobody listens on: RST → `ECONNREFUSED` → `ConnectionRefused`;
//! - the peer closes with `SO_LINGER` 0 (RST): the *first* operation that notices gets
//!   `ECONNRESET` → `ConnectionReset` (the kernel reports the pending socket error once);
//!   after that a write gets `EPIPE` → `BrokenPipe` (never a SIGPIPE: the process survives).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::time::Duration;

use seastar::net::TcpStream;
use seastar::Backend;
use seastar_tests::client::{self, must_runtime};
use seastar_tests::payload::PatternStream;
use seastar_tests::server::Server;
use seastar_tests::stdnet::{self, StdListener, StdServer};
use seastar_tests::IO_TIMEOUT;

const SEED: u64 = 0x5EA5_7A12_0000_0002;
/// What the half-closing side sends before its shutdown.
const REQUEST: usize = 300 * 1024;
/// What the other side answers after it saw EOF.
const REPLY: usize = 500 * 1024;

fn request() -> Vec<u8> {
    PatternStream::new(SEED).next_chunk(REQUEST)
}

fn reply() -> Vec<u8> {
    PatternStream::new(SEED + 1).next_chunk(REPLY)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Our side of "the client half-closed": read the request to EOF, check it, then reply (the
/// write side is still open) and shut down.
async fn our_server_reply_after_eof(s: TcpStream) -> io::Result<u64> {
    let got = client::read_to_end(&s, 2 * REQUEST).await?;
    if got != request() {
        return Err(invalid(format!(
            "request: {} bytes, not the expected {REQUEST}",
            got.len()
        )));
    }
    client::write_all(&s, reply()).await?;
    s.shutdown(Shutdown::Write).await?;
    Ok(got.len() as u64)
}

/// Our client: send the request, half-close, then read the whole reply to EOF.
async fn our_client_half_close(addr: std::net::SocketAddr) -> io::Result<()> {
    let s = TcpStream::connect(addr).await?;
    client::write_all(&s, request()).await?;
    s.shutdown(Shutdown::Write).await?;
    let got = client::read_to_end(&s, 2 * REPLY).await?;
    if got != reply() {
        return Err(invalid(format!("reply: {} bytes, want {REPLY}", got.len())));
    }
    Ok(())
}

/// std client half-closes; our server reads to EOF, then still replies in full.
fn half_close_std_client_our_server(backend: Backend) {
    let server = Server::spawn(backend, 1, |s, _| our_server_reply_after_eof(s));
    let mut c = stdnet::connect(server.addr()).expect("connect");
    c.write_all(&request()).expect("write request");
    c.shutdown(Shutdown::Write).expect("half-close");
    let got = stdnet::read_to_end(&mut c).expect("read reply");
    assert!(got == reply(), "reply: {} bytes, want {REPLY}", got.len());
    let report = server.stop();
    assert_eq!(
        report.assert_all_ok(),
        vec![(c.local_addr().expect("addr"), REQUEST as u64)]
    );
}

/// Our client half-closes; a std server reads to EOF and then replies in full.
fn half_close_our_client_std_server(backend: Backend) {
    let server = StdServer::spawn(1, |mut s, _| -> io::Result<()> {
        let got = stdnet::read_to_end(&mut s)?;
        if got != request() {
            return Err(invalid(format!("request: {} bytes", got.len())));
        }
        s.write_all(&reply())?;
        s.shutdown(Shutdown::Write)
    })
    .expect("std server");
    let addr = server.addr();
    must_runtime(backend, 1)
        .run_on_one(move || our_client_half_close(addr))
        .expect("runtime")
        .expect("our client");
    server
        .join_ok()
        .into_iter()
        .for_each(|r| r.expect("std server side"));
}

/// Both ours: the client half-closes, the server replies after EOF.
fn half_close_ours_to_ours(backend: Backend) {
    let server = Server::spawn(backend, 1, |s, _| our_server_reply_after_eof(s));
    let addr = server.addr();
    must_runtime(backend, 1)
        .run_on_one(move || our_client_half_close(addr))
        .expect("runtime")
        .expect("our client");
    assert_eq!(server.stop().assert_all_ok().len(), 1);
}

/// The reverse: our server sends first and half-closes; the std client reads to EOF, then
/// answers on its still-open write side, and our server reads that answer to EOF.
fn half_close_by_our_server(backend: Backend) {
    let server = Server::spawn(backend, 1, |s, _| async move {
        client::write_all(&s, reply()).await?;
        s.shutdown(Shutdown::Write).await?;
        let got = client::read_to_end(&s, 2 * REQUEST).await?;
        if got != request() {
            return Err(invalid(format!("answer: {} bytes", got.len())));
        }
        Ok(got.len() as u64)
    });
    let mut c = stdnet::connect(server.addr()).expect("connect");
    let got = stdnet::read_to_end(&mut c).expect("read to server's EOF");
    assert!(
        got == reply(),
        "server data: {} bytes, want {REPLY}",
        got.len()
    );
    c.write_all(&request()).expect("answer after EOF");
    c.shutdown(Shutdown::Write).expect("half-close");
    let report = server.stop();
    assert_eq!(
        report.assert_all_ok(),
        vec![(c.local_addr().expect("addr"), REQUEST as u64)]
    );
}

/// The reverse with our client: a std server sends and half-closes; our client reads to EOF
/// and then still writes its answer, which the server reads in full.
fn half_close_by_std_server_our_client(backend: Backend) {
    let server = StdServer::spawn(1, |mut s, _| -> io::Result<()> {
        s.write_all(&reply())?;
        s.shutdown(Shutdown::Write)?;
        let got = stdnet::read_to_end(&mut s)?;
        if got != request() {
            return Err(invalid(format!("answer: {} bytes", got.len())));
        }
        Ok(())
    })
    .expect("std server");
    let addr = server.addr();
    must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await?;
            let got = client::read_to_end(&s, 2 * REPLY).await?;
            if got != reply() {
                return Err(invalid(format!("server data: {} bytes", got.len())));
            }
            client::write_all(&s, request()).await?;
            s.shutdown(Shutdown::Write).await
        })
        .expect("runtime")
        .expect("our client");
    server
        .join_ok()
        .into_iter()
        .for_each(|r| r.expect("std server side"));
}

/// Connecting to a loopback port with no listener fails with `ConnectionRefused`, promptly.
fn connect_refused(backend: Backend) {
    let addr = stdnet::refused_addr();
    let res = must_runtime(backend, 1)
        .run_on_one(move || async move { TcpStream::connect(addr).await.map(|_| ()) })
        .expect("runtime");
    let err = res.expect_err("connect to a closed port must fail");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
}

/// A std peer that accepts one connection, waits for "go" (or hits `wait` first), optionally
/// sends `before` bytes, then resets (SO_LINGER 0 close). Sends "reset done" back.
fn resetting_peer(before: usize) -> (std::net::SocketAddr, mpsc::Sender<()>, mpsc::Receiver<()>) {
    let l = StdListener::bind().expect("bind");
    let addr = l.addr();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        go_rx.recv_timeout(IO_TIMEOUT).expect("go signal");
        if before > 0 {
            s.write_all(&vec![7u8; before]).expect("write before reset");
        }
        stdnet::abort(s).expect("abortive close");
        let _ = done_tx.send(());
    });
    (addr, go_tx, done_rx)
}

/// Waits (off the reactor's back: a short sleep between polls) for the peer's "reset done".
async fn wait_reset(done: &mpsc::Receiver<()>) {
    for _ in 0..30_000 {
        if done.try_recv().is_ok() {
            // Loopback delivers the RST within the close() call; a little slack anyway.
            seastar::time::sleep(Duration::from_millis(20)).await;
            return;
        }
        seastar::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("peer never reset");
}

/// A read that is already waiting when the peer resets fails with `ConnectionReset`; after
/// that, a write fails with `BrokenPipe`.
fn pending_read_sees_reset(backend: Backend) {
    let (addr, go, done) = resetting_peer(0);
    let (read_err, write_err) = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            let reader = seastar::spawn(async move {
                let (res, _) = s.read(Vec::with_capacity(1024)).await;
                (res, s)
            });
            // Let the read be submitted and wait, then have the peer reset.
            seastar::time::sleep(Duration::from_millis(50)).await;
            go.send(()).expect("go");
            let (res, s) = reader.await.expect("reader task");
            wait_reset(&done).await;
            let (wres, _) = s.write(b"x".to_vec()).await;
            (res, wres)
        })
        .expect("runtime");
    let err = read_err.expect_err("read must fail after the peer's RST");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    let err = write_err.expect_err("write after a reset must fail");
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
}

/// Data that arrived before the RST is still delivered; then the read fails with
/// `ConnectionReset`.
fn read_after_reset_gets_data_then_reset(backend: Backend) {
    const BEFORE: usize = 1000;
    let (addr, go, done) = resetting_peer(BEFORE);
    let (data, err) = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            go.send(()).expect("go");
            wait_reset(&done).await;
            let mut data = Vec::new();
            loop {
                match client::read_some(&s, 64 * 1024).await {
                    Ok(c) if c.is_empty() => return (data, None),
                    Ok(c) => data.extend_from_slice(&c),
                    Err(e) => return (data, Some(e)),
                }
            }
        })
        .expect("runtime");
    assert_eq!(data, vec![7u8; BEFORE], "bytes queued before the RST");
    let err = err.expect("the reset must surface, not a clean EOF");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
}

/// A write after the peer reset: the first fails with `ConnectionReset`, the next with
/// `BrokenPipe`.
fn write_after_reset(backend: Backend) {
    let (addr, go, done) = resetting_peer(0);
    let (first, second) = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            go.send(()).expect("go");
            wait_reset(&done).await;
            let (a, _) = s.write(vec![1u8; 100]).await;
            let (b, _) = s.write(vec![2u8; 100]).await;
            (a, b)
        })
        .expect("runtime");
    let e1 = first.expect_err("first write after RST");
    assert_eq!(e1.kind(), io::ErrorKind::ConnectionReset, "{e1}");
    let e2 = second.expect_err("second write after RST");
    assert_eq!(e2.kind(), io::ErrorKind::BrokenPipe, "{e2}");
}

/// A write blocked on a full send buffer (the peer does not read) fails with
/// `ConnectionReset` when the peer resets, instead of hanging.
fn blocked_write_sees_reset(backend: Backend) {
    let l = StdListener::bind().expect("bind");
    let addr = l.addr();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        stdnet::set_buffer_sizes(&s, 16 * 1024).expect("small buffers");
        go_rx.recv_timeout(IO_TIMEOUT).expect("go signal");
        stdnet::abort(s).expect("abortive close");
    });
    let res = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            // Far more than loopback socket buffers hold: this cannot complete.
            let writer = seastar::spawn(async move {
                let (res, _) = s.write_all(vec![9u8; 64 << 20]).await;
                res
            });
            seastar::time::sleep(Duration::from_millis(300)).await;
            go_tx.send(()).expect("go");
            writer.await.expect("writer task")
        })
        .expect("runtime");
    peer.join().expect("peer thread");
    let err = res.expect_err("write_all to a reset peer must fail");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
}

/// Our abortive close (`set_linger(Some(0))` then drop) resets the std peer: its read fails
/// with `ConnectionReset`.
fn our_linger_zero_close_resets_peer(backend: Backend) {
    let l = StdListener::bind().expect("bind");
    let addr = l.addr();
    let peer = std::thread::spawn(move || -> io::Result<usize> {
        let (mut s, _) = l.accept()?;
        let mut buf = [0u8; 16];
        s.read(&mut buf)
    });
    must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            s.set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
            assert_eq!(s.linger().expect("linger"), Some(Duration::ZERO));
            drop(s);
            // Give an asynchronous close time to run before the runtime exits.
            seastar::time::sleep(Duration::from_millis(50)).await;
        })
        .expect("runtime");
    let err = peer
        .join()
        .expect("peer thread")
        .expect_err("the std peer's read must see the RST");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
}

/// Both ours: our client sends part of what our server waits for, then closes abortively; the
/// server's pending read fails with `ConnectionReset`.
fn our_client_reset_seen_by_our_server(backend: Backend) {
    let server = Server::spawn(backend, 1, |s, _| async move {
        client::read_exact(&s, 1000).await.map(|v| v.len() as u64)
    });
    let addr = server.addr();
    let stats = server.stats_arc();
    let local = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            client::write_all(&s, vec![1u8; 10]).await.expect("write");
            // Reset only once the server took the connection and is reading.
            for _ in 0..30_000 {
                if stats.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1 {
                    break;
                }
                seastar::time::sleep(Duration::from_millis(1)).await;
            }
            seastar::time::sleep(Duration::from_millis(20)).await;
            s.set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
            let local = s.local_addr().expect("addr");
            drop(s);
            seastar::time::sleep(Duration::from_millis(50)).await;
            local
        })
        .expect("runtime");
    server.wait_finished(1, IO_TIMEOUT);
    let report = server.stop();
    match &report.conn_from(local).result {
        Err((kind, msg)) => assert_eq!(*kind, io::ErrorKind::ConnectionReset, "{msg}"),
        Ok(n) => panic!("server read {n} bytes and ended cleanly"),
    }
}

/// A zero-capacity read completes at once with `Ok(0)` even on an idle connection, as
/// `TcpStream::read` documents ("`Ok(0)` is the end of the stream (or a zero-capacity
/// buffer)"); the stream then works normally.
fn zero_capacity_read_returns_immediately(backend: Backend) {
    zero_length_op(backend, true);
}

/// Empty writes complete at once: `write` gives `Ok(0)`, `write_all` `Ok(())`.
fn empty_writes_complete_immediately(backend: Backend) {
    zero_length_op(backend, false);
}

fn zero_length_op(backend: Backend, read: bool) {
    let server = StdServer::spawn(1, |s, _| stdnet::echo(s)).expect("echo server");
    let addr = server.addr();
    must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            let limit = Duration::from_secs(2);
            if read {
                let (r, _) = seastar::time::timeout(limit, s.read(Vec::new()))
                    .await
                    .expect("a zero-capacity read on an idle connection waited for data");
                assert_eq!(r.expect("zero-capacity read"), 0);
            } else {
                let (r, _) = seastar::time::timeout(limit, s.write(Vec::new()))
                    .await
                    .expect("empty write hung");
                assert_eq!(r.expect("empty write"), 0);
                let (r, _) = seastar::time::timeout(limit, s.write_all(Vec::new()))
                    .await
                    .expect("empty write_all hung");
                r.expect("empty write_all");
            }
            client::write_all(&s, b"still fine".to_vec())
                .await
                .expect("write");
            assert_eq!(
                client::read_exact(&s, 10).await.expect("echo"),
                b"still fine"
            );
            s.shutdown(Shutdown::Write).await.expect("half-close");
            assert!(client::read_to_end(&s, 0).await.expect("EOF").is_empty());
        })
        .expect("runtime");
    assert_eq!(
        server
            .join_ok()
            .into_iter()
            .map(|r| r.expect("echo"))
            .collect::<Vec<_>>(),
        [10]
    );
}

/// A read that has waited a long time on an idle connection (the core parked, no timers
/// due) wakes promptly when data arrives; EOF is then sticky (every later read gives 0).
fn idle_read_wakes_promptly_and_eof_is_sticky(backend: Backend) {
    let l = StdListener::bind().expect("bind");
    let addr = l.addr();
    let peer = std::thread::spawn(move || -> std::time::Instant {
        let (mut s, _) = l.accept().expect("accept");
        std::thread::sleep(Duration::from_millis(1500));
        let sent = std::time::Instant::now();
        s.write_all(b"wake up").expect("write");
        s.shutdown(Shutdown::Write).expect("half-close");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("our EOF");
        sent
    });
    let woke = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            let got = client::read_exact(&s, 7).await.expect("read");
            let woke = std::time::Instant::now();
            assert_eq!(got, b"wake up");
            for i in 0..3 {
                assert!(
                    client::read_some(&s, 16)
                        .await
                        .expect("read at EOF")
                        .is_empty(),
                    "read {i} after EOF"
                );
            }
            s.shutdown(Shutdown::Write).await.expect("half-close");
            woke
        })
        .expect("runtime");
    let sent = peer.join().expect("peer");
    let latency = woke.saturating_duration_since(sent);
    assert!(
        latency < Duration::from_millis(500),
        "woke {latency:?} after the data was sent"
    );
}

seastar_tests::on_both_backends! {
    zero_capacity_read_returns_immediately,
    empty_writes_complete_immediately,
    idle_read_wakes_promptly_and_eof_is_sticky,
    our_client_reset_seen_by_our_server,
    half_close_std_client_our_server,
    half_close_our_client_std_server,
    half_close_ours_to_ours,
    half_close_by_our_server,
    half_close_by_std_server_our_client,
    connect_refused,
    pending_read_sees_reset,
    read_after_reset_gets_data_then_reset,
    write_after_reset,
    blocked_write_sees_reset,
    our_linger_zero_close_resets_peer,
}
