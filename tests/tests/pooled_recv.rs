//! `TcpStream::recv`: receiving into the core's buffer pool (io_uring: provided-buffer ring and
//! a multishot receive; mio: the emulated pool), on both backends:
//!
//! - data integrity: 32 connections × messages of 1 B..=64 KiB echoed by a `recv` server
//!   (each `RecvBuf` sent back as it is), every byte checked by the client;
//! - pool exhaustion: 200 connections whose handlers hold up to 24 buffers each until the pool
//!   has run empty (the backend's `pool_empty` counter), then release: receives stalled for
//!   lack of buffers resume, and every byte arrives in order;
//! - a slow consumer (a handler that stops calling `recv` while its peer sends 4 MiB) is
//!   stopped at its hold limit (the backend's `pool_pauses` counter), neither starves the other
//!   connections nor loses data once it consumes again;
//! - end of stream: all data, then `None`, then `None` again; `read` after `recv` is refused;
//!   `try_recv` never waits and returns what arrived, in order;
//! - dropping the `recv` future while it waits loses nothing; dropping 64 streams with
//!   receives in flight and buffers queued (peers still sending) leaks no pool buffer (the
//!   backend's pool counters: every buffer back), twice, and the pool still echoes after.
//!
//! Every scenario that ends with its connections closed checks that all buffers are back.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use seastar::future::{select, Either};
use seastar::net::{TcpListener, TcpStream};
use seastar::time::{sleep, timeout};
use seastar::Backend;
use seastar_tests::client::{self, must_runtime};
use seastar_tests::pool_counts;
use seastar_tests::rng::Rng;

/// Byte `i` of connection `conn`'s stream: depends on the position beyond any buffer size, so
/// a lost, duplicated or reordered buffer shows.
fn pattern(conn: u64, i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11).wrapping_mul(131) ^ conn.wrapping_mul(7)) as u8
}

fn pattern_chunk(conn: u64, from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64)
        .map(|i| pattern(conn, i))
        .collect()
}

fn check_pattern(conn: u64, from: u64, got: &[u8]) {
    for (k, &b) in got.iter().enumerate() {
        let i = from + k as u64;
        assert_eq!(b, pattern(conn, i), "connection {conn}: byte {i} differs");
    }
}

/// Echo with `recv`: each received buffer goes back as it is.
async fn recv_echo(stream: TcpStream) -> io::Result<u64> {
    let mut total = 0;
    while let Some(buf) = stream.recv().await? {
        total += buf.len() as u64;
        let (res, _buf) = stream.write_all(buf).await;
        res?;
    }
    Ok(total)
}

/// Accept `n` connections and run `handler` on each in its own task.
fn serve<F, Fut>(listener: TcpListener, n: usize, handler: F)
where
    F: Fn(TcpStream, usize) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    seastar::spawn(async move {
        for i in 0..n {
            let (s, _) = listener.accept().await.expect("accept");
            seastar::spawn(handler(s, i)).detach();
        }
    })
    .detach();
}

/// Times a pooled receive found the core's pool empty.
fn pool_empty_count() -> u64 {
    match seastar::runtime::io_stats() {
        Some(seastar::runtime::IoStats::Uring(s)) => s.pool_empty,
        Some(seastar::runtime::IoStats::Mio(s)) => s.pool_empty,
        _ => 0,
    }
}

/// Times a pooled receive was stopped at its hold limit.
fn pool_pause_count() -> u64 {
    match seastar::runtime::io_stats() {
        Some(seastar::runtime::IoStats::Uring(s)) => s.pool_pauses,
        Some(seastar::runtime::IoStats::Mio(s)) => s.pool_pauses,
        _ => 0,
    }
}

fn echo_integrity_many_connections(backend: Backend) {
    const CONNS: usize = 32;
    const MESSAGES: usize = 40;
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (l, addr) = client::bind_loopback();
            serve(l, CONNS, |s, _| async move {
                recv_echo(s).await.expect("echo");
            });
            let mut clients = Vec::new();
            for c in 0..CONNS as u64 {
                clients.push(seastar::spawn(async move {
                    let s = TcpStream::connect(addr).await.expect("connect");
                    let mut rng = Rng::new(0x5EED_0000 + c);
                    let mut pos = 0u64;
                    for _ in 0..MESSAGES {
                        // Mostly small, sometimes up to 64 KiB (several pool buffers).
                        let len = if rng.next_u64().is_multiple_of(4) {
                            1 + (rng.next_u64() % (64 * 1024)) as usize
                        } else {
                            1 + (rng.next_u64() % 300) as usize
                        };
                        let msg = pattern_chunk(c, pos, len);
                        client::write_all(&s, msg).await.expect("send");
                        let got = client::read_exact(&s, len).await.expect("echo back");
                        check_pattern(c, pos, &got);
                        pos += len as u64;
                    }
                    s.shutdown(std::net::Shutdown::Write)
                        .await
                        .expect("shutdown");
                    let rest = client::read_to_end(&s, 1).await.expect("eof");
                    assert!(rest.is_empty(), "nothing after the echoes");
                    pos
                }));
            }
            for c in clients {
                assert!(c.await.expect("client") > 0);
            }
            client::assert_all_pool_buffers_back("after the echoes").await;
        })
        .expect("runtime");
}

/// Handlers keep up to 24 buffers each and release nothing until the pool has run empty at
/// least once (200 × 24 wanted, 4,096 in the pool, and the platform queues more per
/// connection): receives stall for lack of buffers and must resume when they come back.
fn pool_exhaustion_recovers(backend: Backend) {
    // 200 × 24 held (plus what the platform queues per connection) > the pool's 4,096.
    const CONNS: usize = 200;
    const WINDOW: usize = 24;
    const BYTES: u64 = 1 << 19;
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (l, addr) = client::bind_loopback();
            let drain = Rc::new(Cell::new(false));
            let done = Rc::new(Cell::new(0usize));
            {
                let (drain, done) = (drain.clone(), done.clone());
                serve(l, CONNS, move |s, _| {
                    let (drain, done) = (drain.clone(), done.clone());
                    async move {
                        // The connection's number comes first (8 bytes).
                        let mut window = Vec::new();
                        let mut head = Vec::new();
                        let mut conn = None;
                        let mut pos = 0u64;
                        let mut waited = 0;
                        loop {
                            if window.len() >= WINDOW && !drain.get() {
                                // Hold the full window until the pool has run dry.
                                if pool_empty_count() > 0 {
                                    drain.set(true);
                                } else {
                                    waited += 1;
                                    assert!(waited < 5000, "the pool never ran empty");
                                    sleep(Duration::from_millis(2)).await;
                                    continue;
                                }
                            }
                            if window.len() >= WINDOW {
                                window.clear();
                            }
                            let next = timeout(Duration::from_millis(20), s.recv()).await;
                            match next {
                                Ok(Ok(Some(buf))) => {
                                    let mut data: &[u8] = &buf;
                                    if conn.is_none() {
                                        let take = (8 - head.len()).min(data.len());
                                        head.extend_from_slice(&data[..take]);
                                        data = &data[take..];
                                        if head.len() == 8 {
                                            let mut b = [0u8; 8];
                                            b.copy_from_slice(&head);
                                            conn = Some(u64::from_le_bytes(b));
                                        }
                                    }
                                    if let Some(c) = conn {
                                        check_pattern(c, pos, data);
                                        pos += data.len() as u64;
                                    }
                                    window.push(buf);
                                }
                                Ok(Ok(None)) => break,
                                Ok(Err(e)) => panic!("recv: {e}"),
                                // Quiet: with the pool dry (everyone holding part of a
                                // window), start releasing.
                                Err(_) => {
                                    if pool_empty_count() > 0 {
                                        drain.set(true);
                                    }
                                    if drain.get() {
                                        window.clear();
                                    }
                                }
                            }
                        }
                        drop(window);
                        assert_eq!(pos, BYTES, "every byte of connection {conn:?}");
                        s.write_all(b"ok".as_slice()).await.0.expect("ack");
                        done.set(done.get() + 1);
                    }
                });
            }
            if std::env::var_os("POOL_DEBUG").is_some() {
                let done = done.clone();
                seastar::spawn(async move {
                    loop {
                        sleep(Duration::from_millis(500)).await;
                        eprintln!(
                            "done {} stats {:?}",
                            done.get(),
                            seastar::runtime::io_stats()
                        );
                    }
                })
                .detach();
            }
            let mut clients = Vec::new();
            for c in 0..CONNS as u64 {
                clients.push(seastar::spawn(async move {
                    let s = TcpStream::connect(addr).await.expect("connect");
                    client::write_all(&s, c.to_le_bytes().to_vec())
                        .await
                        .expect("header");
                    let mut pos = 0;
                    while pos < BYTES {
                        let n = (64 * 1024).min(BYTES - pos) as usize;
                        client::write_all(&s, pattern_chunk(c, pos, n))
                            .await
                            .expect("send");
                        pos += n as u64;
                    }
                    s.shutdown(std::net::Shutdown::Write)
                        .await
                        .expect("shutdown");
                    let ack = client::read_to_end(&s, 16).await.expect("ack");
                    assert_eq!(ack, b"ok");
                }));
            }
            for c in clients {
                c.await.expect("client");
            }
            assert_eq!(done.get(), CONNS);
            assert!(drain.get() && pool_empty_count() > 0, "the pool ran empty");
            client::assert_all_pool_buffers_back("after exhaustion").await;
        })
        .expect("runtime");
}

/// One handler stops consuming while its peer sends 4 MiB; 16 other connections echo
/// meanwhile. The stalled one is then drained in full.
fn slow_consumer_does_not_starve_others(backend: Backend) {
    const OTHERS: usize = 16;
    const SLOW_BYTES: u64 = 4 << 20;
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (slow_l, slow_addr) = client::bind_loopback();
            let (l, addr) = client::bind_loopback();
            let others_done = Rc::new(Cell::new(0usize));
            let others_done2 = others_done.clone();
            let slow = seastar::spawn(async move {
                let (s, _) = slow_l.accept().await.expect("accept slow");
                // One buffer, then nothing until every other connection is done.
                let first = s.recv().await.expect("recv").expect("data");
                let mut pos = first.len() as u64;
                check_pattern(99, 0, &first);
                drop(first);
                while others_done2.get() < OTHERS {
                    sleep(Duration::from_millis(5)).await;
                }
                while let Some(buf) = s.recv().await.expect("recv") {
                    check_pattern(99, pos, &buf);
                    pos += buf.len() as u64;
                }
                pos
            });
            let sender = seastar::spawn(async move {
                let s = TcpStream::connect(slow_addr).await.expect("connect slow");
                let mut pos = 0;
                while pos < SLOW_BYTES {
                    let n = (256 * 1024).min(SLOW_BYTES - pos) as usize;
                    client::write_all(&s, pattern_chunk(99, pos, n))
                        .await
                        .expect("send slow");
                    pos += n as u64;
                }
                s.shutdown(std::net::Shutdown::Write)
                    .await
                    .expect("shutdown");
            });
            serve(l, OTHERS, |s, _| async move {
                recv_echo(s).await.expect("echo");
            });
            // Give the slow connection time to fill what it may hold.
            sleep(Duration::from_millis(50)).await;
            let mut clients = Vec::new();
            for c in 0..OTHERS as u64 {
                let done = others_done.clone();
                clients.push(seastar::spawn(async move {
                    let s = TcpStream::connect(addr).await.expect("connect");
                    let mut pos = 0;
                    for len in [1usize, 100, 5000, 40_000, 3] {
                        client::write_all(&s, pattern_chunk(c, pos, len))
                            .await
                            .expect("send");
                        let got = client::read_exact(&s, len).await.expect("echo");
                        check_pattern(c, pos, &got);
                        pos += len as u64;
                    }
                    done.set(done.get() + 1);
                }));
            }
            for c in clients {
                timeout(Duration::from_secs(10), c)
                    .await
                    .expect("an echo connection starved behind the slow consumer")
                    .expect("client");
            }
            // The stalled receive was stopped at its hold limit (back-pressure), not left to
            // drain the pool.
            assert!(
                pool_pause_count() > 0,
                "the slow connection was never paused"
            );
            sender.await.expect("sender");
            assert_eq!(slow.await.expect("slow"), SLOW_BYTES);
            client::assert_all_pool_buffers_back("after the slow consumer").await;
        })
        .expect("runtime");
}

fn eof_after_all_data(backend: Backend) {
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (l, addr) = client::bind_loopback();
            let client = seastar::spawn(async move {
                let s = TcpStream::connect(addr).await.expect("connect");
                client::write_all(&s, pattern_chunk(5, 0, 100_000))
                    .await
                    .expect("send");
                // Dropping closes: the server sees end of stream after the data.
            });
            let (s, _) = l.accept().await.expect("accept");
            client.await.expect("client");
            let mut pos = 0u64;
            while let Some(buf) = s.recv().await.expect("recv") {
                assert!(!buf.is_empty(), "a buffer carries data");
                check_pattern(5, pos, &buf);
                pos += buf.len() as u64;
            }
            assert_eq!(pos, 100_000);
            assert!(
                s.recv().await.expect("recv after EOF").is_none(),
                "EOF sticks"
            );
            let (res, _) = s.read(Vec::with_capacity(8)).await;
            // After recv() the plain read is refused (it would race the pooled receive) or,
            // once the pooled receive ended at EOF, reads EOF itself.
            match res {
                Ok(n) => assert_eq!(n, 0),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput),
            }
        })
        .expect("runtime");
}

fn read_refused_while_recv_active(backend: Backend) {
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (c, s) = client::connected_pair().await;
            client::write_all(&c, b"first".to_vec())
                .await
                .expect("send");
            let got = s.recv().await.expect("recv").expect("data");
            assert_eq!(&got[..], b"first");
            let (res, _) = s.read(Vec::with_capacity(8)).await;
            assert_eq!(
                res.expect_err("read while recv is armed").kind(),
                io::ErrorKind::InvalidInput
            );
        })
        .expect("runtime");
}

/// `try_recv` never waits: `None` before the first `recv` (nothing armed) and when nothing
/// has arrived; after a `recv`, what arrived meanwhile comes out in order.
fn try_recv_never_waits(backend: Backend) {
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (c, s) = client::connected_pair().await;
            client::write_all(&c, pattern_chunk(11, 0, 10))
                .await
                .expect("send");
            sleep(Duration::from_millis(10)).await;
            assert!(s.try_recv().expect("try_recv").is_none(), "not armed yet");
            let first = s.recv().await.expect("recv").expect("data");
            let mut pos = first.len() as u64;
            check_pattern(11, 0, &first);
            // Three more writes land while we do not look.
            for len in [100usize, 20_000, 7] {
                client::write_all(&c, pattern_chunk(11, pos, len))
                    .await
                    .expect("send");
                pos += len as u64;
            }
            sleep(Duration::from_millis(20)).await;
            let mut got = first.len() as u64;
            while got < pos {
                match s.try_recv().expect("try_recv") {
                    Some(buf) => {
                        check_pattern(11, got, &buf);
                        got += buf.len() as u64;
                    }
                    // Not all of it was there yet: wait the normal way.
                    None => {
                        let buf = s.recv().await.expect("recv").expect("data");
                        check_pattern(11, got, &buf);
                        got += buf.len() as u64;
                    }
                }
            }
            assert_eq!(got, pos);
            assert!(s.try_recv().expect("try_recv").is_none(), "nothing left");
        })
        .expect("runtime");
}

/// A `recv` future dropped while waiting (timed out) loses nothing: the next call gets the
/// data in order.
fn dropped_recv_future_loses_nothing(backend: Backend) {
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (c, s) = client::connected_pair().await;
            let mut pos = 0u64;
            for round in 0..20u64 {
                // Nothing sent yet: the receive waits, and the timer wins.
                match select(s.recv(), sleep(Duration::from_millis(2))).await {
                    Either::Left(r) => panic!("round {round}: data before any was sent: {r:?}"),
                    Either::Right(()) => {}
                }
                let len = 1 + (round as usize * 977) % 20_000;
                client::write_all(&c, pattern_chunk(7, pos, len))
                    .await
                    .expect("send");
                let mut got = 0;
                while got < len {
                    let buf = s.recv().await.expect("recv").expect("data");
                    check_pattern(7, pos + got as u64, &buf);
                    got += buf.len();
                }
                assert_eq!(got, len, "round {round}: exactly what was sent");
                pos += len as u64;
            }
        })
        .expect("runtime");
}

/// 64 streams dropped while their receives are armed and buffers are queued (peers still
/// sending), twice: every pool buffer must come back, and the pool must still echo after.
fn dropping_streams_mid_receive_leaks_no_buffer(backend: Backend) {
    // Each holds up to the per-connection limit (32 buffers) without consuming: 64 of them
    // stay under the pool's 4,096 buffers. (More non-consuming connections than
    // pool / limit would exhaust the pool for everyone.)
    const STREAMS: usize = 64;
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (l, addr) = client::bind_loopback();
            for round in 0..2 {
                let mut peers = Vec::new();
                for c in 0..STREAMS as u64 {
                    peers.push(seastar::spawn(async move {
                        let s = TcpStream::connect(addr).await.expect("connect");
                        // Keep sending until the server side is gone.
                        let mut pos = 0;
                        loop {
                            let (res, _) = s.write_all(pattern_chunk(c, pos, 64 * 1024)).await;
                            if res.is_err() {
                                break;
                            }
                            pos += 64 * 1024;
                        }
                    }));
                }
                let mut streams = Vec::new();
                for _ in 0..STREAMS {
                    let (s, _) = l.accept().await.expect("accept");
                    // Arm the pooled receive and take one buffer.
                    drop(s.recv().await.expect("recv").expect("data"));
                    streams.push(s);
                }
                // Let buffers queue up behind the armed receives, then drop everything.
                sleep(Duration::from_millis(30)).await;
                drop(streams);
                for p in peers {
                    timeout(Duration::from_secs(10), p)
                        .await
                        .unwrap_or_else(|_| panic!("round {round}: a peer never saw the close"))
                        .expect("peer");
                }
                // Every buffer queued for (or arriving to) the dropped receives is back.
                client::assert_all_pool_buffers_back(&format!("round {round}")).await;
            }
            // And the pool still works: a connection echoes through it.
            let server = seastar::spawn(async move {
                let (s, _) = l.accept().await.expect("accept");
                recv_echo(s).await.expect("echo")
            });
            let c = TcpStream::connect(addr).await.expect("connect");
            client::write_all(&c, pattern_chunk(3, 0, 200_000))
                .await
                .expect("send");
            let got = client::read_exact(&c, 200_000).await.expect("echo");
            check_pattern(3, 0, &got);
            drop(c);
            assert_eq!(server.await.expect("server"), 200_000);
        })
        .expect("runtime");
}

fn configured_pool_size_is_used(backend: Backend) {
    // A pool of 16 buffers of 1 KiB: every `recv()` returns at most 1 KiB, the core's pool
    // has 16 buffers, and 100 KiB still arrive intact through it (buffers are recycled).
    const SIZE: usize = 1024;
    let rt = seastar::Runtime::builder()
        .cores(1)
        .pin(false)
        .backend(backend)
        .recv_pool(16, SIZE as u32)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.run_on_one(|| async {
        let (l, addr) = client::bind_loopback();
        let server = seastar::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let mut got = Vec::new();
            while let Some(buf) = s.recv().await.expect("recv") {
                assert!(
                    buf.len() <= SIZE,
                    "a {} byte buffer from a 1 KiB pool",
                    buf.len()
                );
                got.extend_from_slice(&buf);
            }
            got
        });
        let c = TcpStream::connect(addr).await.expect("connect");
        client::write_all(&c, pattern_chunk(7, 0, 100 * 1024))
            .await
            .expect("send");
        drop(c);
        let got = server.await.expect("server");
        assert_eq!(got.len(), 100 * 1024);
        check_pattern(7, 0, &got);
        assert_eq!(
            pool_counts().0,
            16,
            "the pool has the configured 16 buffers"
        );
    })
    .expect("runtime");
}

#[test]
fn pool_sizes_that_cannot_work_are_refused_with_the_setting_named() {
    for (buffers, size) in [(0u16, 1024u32), (3, 1024), (16, 0)] {
        let err = seastar::Runtime::builder()
            .cores(1)
            .pin(false)
            .recv_pool(buffers, size)
            .build()
            .expect_err("an unusable pool size");
        assert!(err.to_string().contains("recv_pool"), "{err}");
    }
}

seastar_tests::on_both_backends! {
    echo_integrity_many_connections => 120,
    pool_exhaustion_recovers => 120,
    slow_consumer_does_not_starve_others => 120,
    eof_after_all_data,
    read_refused_while_recv_active,
    try_recv_never_waits,
    dropped_recv_future_loses_nothing,
    dropping_streams_mid_receive_leaks_no_buffer => 120,
    configured_pool_size_is_used,
}
