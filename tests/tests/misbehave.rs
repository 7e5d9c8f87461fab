//! Our server keeps serving when clients misbehave, on both backends. Each test uses a
//! one-core server, so "keeps serving meanwhile" means the one core was not blocked by the
//! bad connection.
//!
//! - A client that sends half a framed message and resets: that connection's handler ends
//!   with exactly `ConnectionReset`; a client that connects and leaves at once ends cleanly;
//!   good clients before and after are served byte-exactly.
//! - A client that writes without ever reading: the server's echo write blocks (TCP
//!   backpressure) while another client is served in full; when the bad client resets, its
//!   blocked handler ends with `ConnectionReset`, and new clients are still served.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use seastar::Backend;
use seastar_tests::client;
use seastar_tests::payload::Pool;
use seastar_tests::proto::{self, frame};
use seastar_tests::rng::Rng;
use seastar_tests::server::Server;
use seastar_tests::stdnet;
use seastar_tests::IO_TIMEOUT;

const SEED: u64 = 0x5EA5_7A12_0000_0004;
const GOOD_ROUNDS: usize = 50;

/// A well-behaved framed client: `GOOD_ROUNDS` framed messages, echoes checked. Returns its
/// local address and the payload bytes sent.
fn good_framed_client(addr: SocketAddr, pool: &Pool, conn: u64) -> (SocketAddr, u64) {
    use std::io::Read;
    let mut s = stdnet::connect(addr).expect("connect");
    let mut rng = Rng::for_stream(SEED, conn);
    let mut total = 0;
    for round in 0..GOOD_ROUNDS {
        let len = proto::message_size(&mut rng, round);
        let m = pool.pick(&mut rng, len);
        let f = frame(pool.slice(m));
        s.write_all(&f).expect("write frame");
        let mut got = vec![0u8; f.len()];
        s.read_exact(&mut got).expect("read echo");
        assert!(
            got == f,
            "good client {conn}: echo of round {round} differs"
        );
        total += len as u64;
    }
    (s.local_addr().expect("addr"), total)
}

fn reset_mid_message(backend: Backend) {
    let pool = Pool::standard(SEED);
    let server = Server::spawn(backend, 1, |s, _| client::framed_echo(s));
    let addr = server.addr();

    let before = good_framed_client(addr, &pool, 1);

    // Half a message: the header announces 64 KiB, 20,000 bytes follow, then an RST.
    let mut bad = stdnet::connect(addr).expect("connect bad");
    let bad_addr = bad.local_addr().expect("addr");
    let mut partial = 65_536u32.to_le_bytes().to_vec();
    partial.extend_from_slice(&vec![0xAB; 20_000]);
    bad.write_all(&partial).expect("write half a message");
    // Reset only once the server took the connection (a connection reset while still in
    // the accept queue never reaches a handler).
    server.wait_accepted(2, IO_TIMEOUT);
    std::thread::sleep(Duration::from_millis(20)); // let the handler start reading
    stdnet::abort(bad).expect("reset");

    // Connects and leaves without a byte.
    let rude = stdnet::connect(addr).expect("connect rude");
    let rude_addr = rude.local_addr().expect("addr");
    drop(rude);

    server.wait_finished(3, IO_TIMEOUT);
    let after = good_framed_client(addr, &pool, 2);

    let report = server.stop();
    assert!(
        report.accept_errors.is_empty(),
        "{:?}",
        report.accept_errors
    );
    assert_eq!(report.conns.len(), 4, "{:?}", report.conns);
    for (peer, n) in [before, after] {
        assert_eq!(
            report.conn_from(peer).result.as_ref().ok(),
            Some(&n),
            "good client {peer}"
        );
    }
    match &report.conn_from(bad_addr).result {
        Err((kind, msg)) => assert_eq!(*kind, io::ErrorKind::ConnectionReset, "{msg}"),
        Ok(n) => panic!("the reset connection ended cleanly ({n} bytes)"),
    }
    assert_eq!(report.conn_from(rude_addr).result.as_ref().ok(), Some(&0));
}

fn client_never_reads(backend: Backend) {
    let pool = Pool::standard(SEED);
    let server = Server::spawn(backend, 1, |s, _| client::echo(s));
    let addr = server.addr();

    // The bad client writes until its writes stall (it never reads, so the echo backs up).
    let mut bad = stdnet::connect(addr).expect("connect bad");
    let bad_addr = bad.local_addr().expect("addr");
    stdnet::set_buffer_sizes(&bad, 32 * 1024).expect("small buffers");
    bad.set_write_timeout(Some(Duration::from_millis(300)))
        .expect("write timeout");
    let chunk = vec![0x5Au8; 64 * 1024];
    let mut written = 0usize;
    let start = Instant::now();
    loop {
        match bad.write(&chunk) {
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("bad client write: {e}"),
        }
        assert!(
            written < 512 << 20,
            "512 MiB written to a client that never reads: no backpressure"
        );
        assert!(start.elapsed() < IO_TIMEOUT, "bad client never stalled");
    }
    eprintln!("bad client stalled after {written} bytes");

    // Meanwhile the server serves others, in full. (Plain echo: use the round-trip client.)
    let (meanwhile, n1) = proto::std_round_trips(addr, &pool, SEED, 10, GOOD_ROUNDS)
        .expect("client served meanwhile");
    // Still stalled: the server has not finished the bad connection.
    server.wait_finished(1, IO_TIMEOUT);
    assert_eq!(
        server
            .stats()
            .open
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the stalled connection is open"
    );

    stdnet::abort(bad).expect("reset the bad client");
    server.wait_finished(2, IO_TIMEOUT);
    let (after, n2) =
        proto::std_round_trips(addr, &pool, SEED, 11, GOOD_ROUNDS).expect("client served after");

    let report = server.stop();
    assert!(
        report.accept_errors.is_empty(),
        "{:?}",
        report.accept_errors
    );
    assert_eq!(report.conns.len(), 3, "{:?}", report.conns);
    assert_eq!(report.conn_from(meanwhile).result.as_ref().ok(), Some(&n1));
    assert_eq!(report.conn_from(after).result.as_ref().ok(), Some(&n2));
    match &report.conn_from(bad_addr).result {
        Err((kind, msg)) => assert_eq!(*kind, io::ErrorKind::ConnectionReset, "{msg}"),
        Ok(n) => panic!("the stalled connection ended cleanly ({n} bytes)"),
    }
}

/// A burst of clients that connect and reset at once (often before the server took the
/// connection from its accept queue): the server neither stops nor reports accept errors; each
/// such connection it did take ends with `ConnectionReset`; a good client is served next.
fn reset_burst_before_accept(backend: Backend) {
    const BURST: usize = 50;
    let pool = Pool::standard(SEED);
    let server = Server::spawn(backend, 1, |s, _| client::framed_echo(s));
    let addr = server.addr();
    let mut bad = Vec::new();
    for _ in 0..BURST {
        let s = stdnet::connect(addr).expect("connect");
        bad.push(s.local_addr().expect("addr"));
        stdnet::abort(s).expect("reset");
    }
    let good = good_framed_client(addr, &pool, 3);
    let report = server.stop();
    assert!(
        report.accept_errors.is_empty(),
        "{:?}",
        report.accept_errors
    );
    assert_eq!(report.conn_from(good.0).result.as_ref().ok(), Some(&good.1));
    let mut taken = 0;
    for c in report.conns.iter().filter(|c| c.peer != good.0) {
        assert!(bad.contains(&c.peer), "unknown peer {}", c.peer);
        match &c.result {
            Err((kind, msg)) => assert_eq!(*kind, io::ErrorKind::ConnectionReset, "{msg}"),
            Ok(n) => panic!("reset connection {} ended cleanly ({n} bytes)", c.peer),
        }
        taken += 1;
    }
    eprintln!("{taken} of {BURST} reset connections reached the handler");
}

/// A connection handler that panics (on a message that says so) fails only its own task: the
/// server reports it as a join error and keeps serving everyone else on the same core.
fn panicking_handler_does_not_stop_server(backend: Backend) {
    let pool = Pool::standard(SEED);
    let server = Server::spawn(backend, 1, |s, _| async move {
        let first = client::read_some(&s, 4).await?;
        if first == b"boom" {
            panic!("handler asked to panic");
        }
        let mut total = first.len() as u64;
        client::write_all(&s, first).await?;
        total += client::echo(s).await?;
        Ok(total)
    });
    let addr = server.addr();
    let before = proto::std_round_trips(addr, &pool, SEED, 20, GOOD_ROUNDS).expect("before");
    let mut boom = stdnet::connect(addr).expect("connect");
    let boom_addr = boom.local_addr().expect("addr");
    boom.write_all(b"boom").expect("write");
    let mut rest = Vec::new();
    // The panicking task's stream is dropped: EOF (or a reset if unread data was left).
    match std::io::Read::read_to_end(&mut boom, &mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
    let after = proto::std_round_trips(addr, &pool, SEED, 21, GOOD_ROUNDS).expect("after");
    let report = server.stop();
    assert_eq!(
        report.conn_from(before.0).result.as_ref().ok(),
        Some(&before.1)
    );
    assert_eq!(
        report.conn_from(after.0).result.as_ref().ok(),
        Some(&after.1)
    );
    match &report.conn_from(boom_addr).result {
        Err((_, msg)) => assert!(
            msg.contains("join error") && msg.contains("Panicked"),
            "{msg}"
        ),
        Ok(n) => panic!("the panicking handler returned {n}"),
    }
}

/// A handler that keeps its core busy (it never waits for I/O, only yields between short
/// slices of work) must not starve the other connections on that core: the executor polls
/// I/O at least once per task quota. Another client gets all its round trips while the busy
/// handler is still running.
fn busy_handler_does_not_starve_others(backend: Backend) {
    const BUSY: Duration = Duration::from_secs(3);
    let pool = Pool::standard(SEED);
    let server = Server::spawn(backend, 1, |s, _| async move {
        let first = client::read_some(&s, 4).await?;
        if first == b"busy" {
            let start = Instant::now();
            let mut yields = 0u64;
            while start.elapsed() < BUSY {
                seastar::task::yield_now().await;
                yields += 1;
            }
            client::write_all(&s, b"done".to_vec()).await?;
            return Ok(yields);
        }
        let mut total = first.len() as u64;
        client::write_all(&s, first).await?;
        total += client::echo(s).await?;
        Ok(total)
    });
    let addr = server.addr();
    let mut busy = stdnet::connect(addr).expect("connect busy");
    busy.write_all(b"busy").expect("write");
    server.wait_accepted(1, IO_TIMEOUT);
    std::thread::sleep(Duration::from_millis(100)); // the handler is spinning now
    let start = Instant::now();
    let (other, n) =
        proto::std_round_trips(addr, &pool, SEED, 30, GOOD_ROUNDS).expect("other client");
    let other_took = start.elapsed();
    let mut done = [0u8; 4];
    std::io::Read::read_exact(&mut busy, &mut done).expect("busy reply");
    assert_eq!(&done, b"done");
    let busy_total = start.elapsed();
    assert!(
        other_took + Duration::from_millis(500) < busy_total,
        "the other client took {other_took:?}, the busy handler {busy_total:?}: it waited for the busy one"
    );
    let report = server.stop();
    assert_eq!(report.conn_from(other).result.as_ref().ok(), Some(&n));
}

seastar_tests::on_both_backends! {
    busy_handler_does_not_starve_others,
    panicking_handler_does_not_stop_server,
    reset_mid_message,
    client_never_reads,
    reset_burst_before_accept,
}
