//! Every operation over loopback TCP and a temporary file, driven by a bounded test loop.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::IntoRawFd;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use seastar_hal::io::{complete_read, Completion, Fd, IoDriver, MultiOp, Op, Shutdown};
use seastar_hal::{ErrorKind, Instant, Platform};
use seastar_hal_mio::MioPlatform;

fn platform() -> MioPlatform {
    MioPlatform::new().expect("platform")
}

fn read_timeout(s: &TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
}

#[test]
fn nop_completes_through_poll_op_at_the_next_park() {
    let p = platform();
    let io = p.io();
    let (flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    let mut op = Op::nop(io).expect("submit");
    assert!(op.poll_complete(&mut cx).is_pending(), "never inline");
    assert_eq!(io.in_flight(), 1);
    p.park(None); // does not block: the nop is work to do
    assert!(flag.woken.load(Ordering::SeqCst), "park woke the waker");
    match op.poll_complete(&mut cx) {
        Poll::Ready((c, ())) => assert_eq!(c, Completion::done(Ok(0))),
        Poll::Pending => panic!("nop not complete after a park"),
    }
    assert_eq!(io.in_flight(), 0);
    let s = p.stats();
    assert_eq!((s.submitted, s.completed, s.parks), (1, 1, 1));
}

#[test]
fn polling_an_unknown_id_is_invalid_input() {
    let p = platform();
    let (_flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    match p.io().poll_op(seastar_hal::io::OpId(12345), &mut cx) {
        Poll::Ready(c) => assert_eq!(c.result.expect_err("error").kind(), ErrorKind::InvalidInput),
        Poll::Pending => panic!("unknown id pending"),
    }
}

#[test]
fn timeouts_fire_in_order_never_early() {
    let p = platform();
    let io = p.io();
    let start = p.now();
    let delays_ms = [40u64, 10, 25, 0];
    let fired = std::cell::RefCell::new(Vec::new());
    let futs: Vec<BoxFut<'_>> = delays_ms
        .iter()
        .map(|&ms| {
            let deadline = start + Duration::from_millis(ms);
            let p = &p;
            let fired = &fired;
            Box::pin(async move {
                let (c, ()) = Op::timeout(io, deadline).expect("submit").await;
                assert_eq!(c.result, Ok(0));
                let now = p.now();
                assert!(now >= deadline, "fired {:?} early", deadline - now);
                // Generous: the machine is shared, but a timer must not be seconds late.
                assert!(
                    now - deadline < Duration::from_secs(1),
                    "fired {:?} late",
                    now - deadline
                );
                fired.borrow_mut().push(ms);
            }) as BoxFut<'_>
        })
        .collect();
    run(&p, join_all(futs));
    assert_eq!(*fired.borrow(), vec![0, 10, 25, 40]);
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn park_honours_its_deadline() {
    let p = platform();
    let t0 = std::time::Instant::now();
    p.park(Some(p.now())); // in the past: just collect
    p.park(Some(Instant::ZERO));
    assert!(t0.elapsed() < Duration::from_secs(1));
    let t1 = p.now();
    p.park(Some(t1 + Duration::from_millis(30)));
    assert!(
        p.now() - t1 >= Duration::from_millis(30),
        "park returned early"
    );
    assert_eq!(p.stats().polls, 3);
}

#[test]
fn accept_single_then_recv_from_a_std_client() {
    let p = platform();
    let io = p.io();
    let (lfd, addr) = listener();
    let mut client = TcpStream::connect(addr).expect("connect");
    let fd = run(&p, accept(io, lfd));
    assert!(fd >= 0);
    client.write_all(b"hello").expect("write");
    assert_eq!(run(&p, recv_exact(io, fd, 5, 64)), b"hello");
    run(&p, close(io, fd));
    read_timeout(&client);
    let mut buf = [0u8; 8];
    assert_eq!(
        client.read(&mut buf).expect("read"),
        0,
        "close: peer sees EOF"
    );
    run(&p, close(io, lfd));
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn multishot_accept_until_cancelled_and_queued_connections_are_closed() {
    let p = platform();
    let io = p.io();
    let (lfd, addr) = listener();
    let mut multi = MultiOp::accept_multishot(io, lfd).expect("submit");
    let (_flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(multi.poll_next(&mut cx).is_pending());

    let mut clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let mut accepted: Vec<Fd> = Vec::new();
    let t0 = std::time::Instant::now();
    while accepted.len() < 3 {
        assert!(t0.elapsed() < LIMIT);
        p.park(Some(p.now() + Duration::from_millis(50)));
        while let Poll::Ready(Some(c)) = multi.poll_next(&mut cx) {
            assert!(c.more, "multishot keeps going");
            accepted.push(c.result.expect("accept") as Fd);
        }
    }
    assert_eq!(accepted.len(), 3);
    // Each accepted socket is a distinct, working connection, in connect order.
    for (i, (client, &fd)) in clients.iter_mut().zip(&accepted).enumerate() {
        client.write_all(&[i as u8]).expect("write");
        assert_eq!(run(&p, recv_exact(io, fd, 1, 8)), [i as u8]);
    }

    // Two more connections get accepted but never handed out; cancelling closes them.
    let completed = p.stats().completed;
    let mut late: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let t0 = std::time::Instant::now();
    while p.stats().completed < completed + 2 {
        assert!(t0.elapsed() < LIMIT);
        p.park(Some(p.now() + Duration::from_millis(50)));
    }
    drop(multi);
    assert_eq!(io.in_flight(), 0);
    for c in &mut late {
        read_timeout(c);
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).expect("read"), 0, "queued fd was closed");
    }

    // Accepting stopped: the next connection waits for a new accept.
    let _sixth = TcpStream::connect(addr).expect("connect");
    for _ in 0..3 {
        p.park(Some(p.now() + Duration::from_millis(10)));
    }
    let fd = run(&p, accept(io, lfd));
    run(&p, close(io, fd));
    for fd in accepted {
        run(&p, close(io, fd));
    }
    run(&p, close(io, lfd));
    clients.clear();
}

#[test]
fn large_transfer_both_ways_every_byte_checked() {
    // Far beyond a loopback socket buffer, so sends come back short and both sides see EAGAIN.
    const UP: usize = 8 << 20;
    const DOWN: usize = 3 << 20;
    let p = platform();
    let io = p.io();
    let (c, s) = pair(&p);
    let up = pattern_vec(0, UP);
    let down = pattern_vec(1 << 40, DOWN);
    run(
        &p,
        join_all(vec![
            Box::pin(async {
                send_all(io, c, &up, 1 << 20).await;
                let got = recv_exact(io, c, DOWN, 100_000).await;
                assert!(got == down, "download corrupted");
                let (r, ()) = Op::shutdown(io, c, Shutdown::Write).expect("submit").await;
                r.result.expect("shutdown");
            }),
            Box::pin(async {
                let got = recv_exact(io, s, UP, 65_536).await;
                assert!(got == up, "upload corrupted");
                send_all(io, s, &down, 512 << 10).await;
                // After the client's shutdown(Write), the server reads end of stream.
                assert!(recv_once(io, s, 16).await.expect("recv").is_empty());
            }),
        ]),
    );
    let st = p.stats();
    assert!(
        st.would_block > 0,
        "the EAGAIN paths were exercised: {st:?}"
    );
    run(&p, close(io, c));
    run(&p, close(io, s));
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn writev_gathers_in_order_to_a_socket() {
    let p = platform();
    let io = p.io();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fd = run(&p, connect(io, addr)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    read_timeout(&server);
    let bufs = vec![
        b"hello ".to_vec(),
        Vec::new(),
        b"gathered ".to_vec(),
        b"world".to_vec(),
    ];
    let (c, bufs) = run(
        &p,
        Op::writev(io, fd, bufs)
            .map_err(|(e, _)| e)
            .expect("submit"),
    );
    assert_eq!(c.result, Ok(20));
    assert_eq!(bufs.into_inner().len(), 4, "buffers come back");
    let mut got = vec![0u8; 20];
    server.read_exact(&mut got).expect("read");
    assert_eq!(got, b"hello gathered world");

    // shutdown(Write): the peer sees end of stream; the other direction still works.
    let (c, ()) = run(&p, Op::shutdown(io, fd, Shutdown::Write).expect("submit"));
    c.result.expect("shutdown");
    let mut b = [0u8; 4];
    assert_eq!(server.read(&mut b).expect("read"), 0);
    server.write_all(b"back").expect("write");
    assert_eq!(run(&p, recv_exact(io, fd, 4, 16)), b"back");
    run(&p, close(io, fd));
}

#[test]
fn connection_refused() {
    let p = platform();
    let io = p.io();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }; // closed: nobody listens there now
    let err = run(&p, connect(io, addr)).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn peer_reset_is_connection_reset() {
    let p = platform();
    let io = p.io();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fd = run(&p, connect(io, addr)).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    run(&p, send_all(io, fd, b"unread data", 64));
    // Closing a socket with unread received data makes Linux answer with RST.
    std::thread::sleep(Duration::from_millis(20));
    drop(server);
    let err = run(&p, recv_once(io, fd, 64)).expect_err("reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET));
    // Writing to the reset connection fails too (EPIPE, no SIGPIPE thanks to MSG_NOSIGNAL).
    let (c, _) = run(
        &p,
        Op::send(io, fd, b"more".to_vec())
            .map_err(|(e, _)| e)
            .expect("submit"),
    );
    let kind = c.result.expect_err("send after reset").kind();
    assert!(
        matches!(kind, ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
        "{kind:?}"
    );
    run(&p, close(io, fd));
}

#[test]
fn close_fails_ops_still_waiting_on_the_fd() {
    let p = platform();
    let io = p.io();
    let (c, s) = pair(&p);
    let (_flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    let mut pending = Op::recv(io, s, Vec::with_capacity(16))
        .map_err(|(e, _)| e)
        .expect("submit");
    assert!(pending.poll_complete(&mut cx).is_pending());
    run(&p, close(io, s));
    match pending.poll_complete(&mut cx) {
        Poll::Ready((c, _)) => assert_eq!(c.result.expect_err("x").kind(), ErrorKind::Canceled),
        Poll::Pending => panic!("recv on a closed fd still pending"),
    }
    // The client sees the close as end of stream.
    assert!(run(&p, recv_once(io, c, 8)).expect("recv").is_empty());
    run(&p, close(io, c));
}

#[test]
fn file_write_at_read_at_fsync_writev() {
    let p = platform();
    let io = p.io();
    let dir = std::env::temp_dir().join(format!("hal-mio-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("data");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("open");
    let fd = file.into_raw_fd();
    run(&p, async {
        let (c, _) = Op::write_at(io, fd, b" world".to_vec(), 5)
            .map_err(|(e, _)| e)
            .expect("submit")
            .await;
        assert_eq!(c.result, Ok(6));
        let (c, _) = Op::write_at(io, fd, &b"hello"[..], 0)
            .map_err(|(e, _)| e)
            .expect("submit")
            .await;
        assert_eq!(c.result, Ok(5));
        for datasync in [false, true] {
            let (c, ()) = Op::fsync(io, fd, datasync).expect("submit").await;
            assert_eq!(c.result, Ok(0));
        }
        let (c, mut buf) = Op::read_at(io, fd, Vec::with_capacity(64), 0)
            .map_err(|(e, _)| e)
            .expect("submit")
            .await;
        assert_eq!(complete_read(&c, &mut buf), Ok(11));
        assert_eq!(buf, b"hello world");
        let (c, mut buf) = Op::read_at(io, fd, vec![0u8; 5].into_boxed_slice(), 6)
            .map_err(|(e, _)| e)
            .expect("submit")
            .await;
        assert_eq!(complete_read(&c, &mut buf), Ok(5));
        assert_eq!(&buf[..], b"world");
        // Past the end: zero bytes.
        let (c, _) = Op::read_at(io, fd, Vec::with_capacity(8), 100)
            .map_err(|(e, _)| e)
            .expect("submit")
            .await;
        assert_eq!(c.result, Ok(0));
        // A gather write to a file (writev, not sendmsg) at the current offset (0).
        let (c, _) = Op::writev(io, fd, vec![b"HEL".to_vec(), b"LO".to_vec()])
            .map_err(|(e, _)| e)
            .expect("submit")
            .await;
        assert_eq!(c.result, Ok(5));
    });
    run(&p, close(io, fd));
    assert_eq!(std::fs::read(&path).expect("read back"), b"HELLO world");
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn bad_fd_is_reported_through_the_completion() {
    let p = platform();
    let io = p.io();
    let (c, _) = run(
        &p,
        Op::recv(io, -1, Vec::with_capacity(4))
            .map_err(|(e, _)| e)
            .expect("submit"),
    );
    assert_eq!(
        c.result.expect_err("bad fd").kind(),
        ErrorKind::InvalidInput
    );
}
