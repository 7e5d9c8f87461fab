//! One-shot and multishot operations, timeouts and parking: every `RawOp` over loopback TCP
//! and files in a temp dir.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::IntoRawFd;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use seastar_hal::io::{complete_read, Completion, Fd, IoDriver, MultiOp, Op, OpId, Shutdown};
use seastar_hal::{ErrorKind, Instant, Platform};

use crate::harness::{
    abort, accept, block_on, close, connect, flag_waker, join_all, listener, pair, park_until,
    pattern_vec, recv_exact, recv_once, refused_addr, send_all, tcp_pair_fd, tcp_socket, BoxFut,
    TempDir,
};

fn read_timeout(s: &TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
}

/// A nop is never complete inline; the next park completes it and wakes its waker, even a
/// park without a deadline (the nop is work to do), and its id is released.
pub fn nop_completes_at_the_next_park<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let io = p.io();
    let (flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    let mut op = Op::nop(io).expect("submit");
    assert!(op.poll_complete(&mut cx).is_pending(), "never inline");
    assert_eq!(io.in_flight(), 1);
    p.park(None);
    assert!(flag.woken.load(Ordering::SeqCst), "park woke the waker");
    match op.poll_complete(&mut cx) {
        Poll::Ready((c, ())) => assert_eq!(c, Completion::done(Ok(0))),
        Poll::Pending => panic!("nop not complete after a park"),
    }
    assert_eq!(io.in_flight(), 0);
    drop(op);
    p
}

/// Polling an id the driver never handed out is `Ready` with `InvalidInput`.
pub fn polling_an_unknown_id_is_invalid_input<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let (_flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    match p.io().poll_op(OpId(12345), &mut cx) {
        Poll::Ready(c) => assert_eq!(c.result.expect_err("error").kind(), ErrorKind::InvalidInput),
        Poll::Pending => panic!("unknown id pending"),
    }
    p
}

/// Timeouts submitted out of order fire in deadline order, each at or after its deadline
/// (an expired timeout is a success, `Ok(0)`), none seconds late.
pub fn timeouts_fire_in_order_never_early<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let io = p.io();
    let start = p.now();
    let delays_ms = [40u64, 10, 25, 0, 60, 1];
    let fired = RefCell::new(Vec::new());
    let futs: Vec<BoxFut<'_>> = delays_ms
        .iter()
        .map(|&ms| {
            let deadline = start + Duration::from_millis(ms);
            let (p, fired) = (&p, &fired);
            Box::pin(async move {
                let (c, ()) = Op::timeout(io, deadline).expect("submit").await;
                assert_eq!(c.result, Ok(0), "an expired timeout is a success");
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
    block_on(&p, join_all(futs));
    assert_eq!(*fired.borrow(), vec![0, 1, 10, 25, 40, 60]);
    assert_eq!(io.in_flight(), 0);
    p
}

/// A timeout whose deadline has passed completes at once, successfully.
pub fn a_timeout_in_the_past_completes_at_once<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let op = Op::timeout(p.io(), p.now() - Duration::from_secs(1)).expect("submit");
    let before = std::time::Instant::now();
    assert_eq!(block_on(&p, op).0.result, Ok(0));
    assert!(before.elapsed() < Duration::from_secs(1));
    p
}

/// A park returns no earlier than its deadline when nothing happens, and a deadline at or
/// before `now()` (or at zero) does not block.
pub fn park_honours_its_deadline<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let t0 = std::time::Instant::now();
    p.park(Some(p.now()));
    p.park(Some(Instant::ZERO));
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "a past deadline blocked"
    );
    let deadline = p.now() + Duration::from_millis(30);
    p.park(Some(deadline));
    assert!(p.now() >= deadline, "park returned early without any event");
    p
}

/// Dropping a pending timeout cancels it: its id is released promptly, not at its deadline.
pub fn dropping_a_timeout_cancels_it<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let op = Op::timeout(p.io(), p.now() + Duration::from_secs(30)).expect("submit");
    p.flush();
    assert_eq!(p.io().in_flight(), 1);
    drop(op);
    let t = std::time::Instant::now();
    park_until(&p, || p.io().in_flight() == 0);
    assert!(t.elapsed() < Duration::from_secs(2));
    p
}

/// An accept submitted before the client connects gets it; the accepted socket receives what
/// the client writes; closing it through the driver gives the client end of stream.
pub fn accept_then_recv_and_close_gives_the_peer_eof<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let io = p.io();
    let (lfd, addr) = listener();
    let mut op = Op::accept(io, lfd).expect("submit");
    let (_flag, waker) = flag_waker();
    assert!(op
        .poll_complete(&mut Context::from_waker(&waker))
        .is_pending());
    let mut client = TcpStream::connect(addr).expect("connect");
    let (c, ()) = block_on(&p, op);
    let fd = c.result.expect("accepted") as Fd;
    assert!(fd >= 0);
    client.write_all(b"hello").expect("write");
    assert_eq!(block_on(&p, recv_exact(io, fd, 5, 64)), b"hello");
    block_on(&p, close(io, fd));
    read_timeout(&client);
    let mut buf = [0u8; 8];
    assert_eq!(
        client.read(&mut buf).expect("read"),
        0,
        "close: peer sees EOF"
    );
    block_on(&p, close(io, lfd));
    assert_eq!(io.in_flight(), 0);
    p
}

/// A multishot accept hands out connections in connect order, each a working socket, with
/// `more` set; a connection it accepted but never handed out is closed when it is dropped,
/// and accepting stops there (the next connection waits for a new accept).
pub fn multishot_accept_until_dropped_closes_unclaimed_connections<P: Platform>(
    make: &dyn Fn() -> P,
) -> P {
    let p = make();
    let io = p.io();
    let (lfd, addr) = listener();
    let mut multi = MultiOp::accept_multishot(io, lfd).expect("submit");
    let (flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(multi.poll_next(&mut cx).is_pending());

    let mut clients: Vec<TcpStream> = Vec::new();
    let mut accepted: Vec<Fd> = Vec::new();
    for i in 0..4u8 {
        let mut client = TcpStream::connect(addr).expect("connect");
        client.write_all(&[i]).expect("write");
        clients.push(client);
        let c = block_on(&p, std::future::poll_fn(|cx| multi.poll_next(cx))).expect("some");
        assert!(c.more, "multishot keeps going");
        let fd = c.result.expect("accept") as Fd;
        assert_eq!(
            block_on(&p, recv_exact(io, fd, 1, 8)),
            [i],
            "connection {i} in order"
        );
        accepted.push(fd);
    }

    // One more connection, accepted (its completion woke the waker) but never handed out.
    flag.woken.store(false, Ordering::SeqCst);
    assert!(multi.poll_next(&mut cx).is_pending());
    let mut late = TcpStream::connect(addr).expect("connect");
    park_until(&p, || flag.woken.load(Ordering::SeqCst));
    drop(multi);
    park_until(&p, || io.in_flight() == 0);
    read_timeout(&late);
    let mut b = [0u8; 1];
    assert_eq!(late.read(&mut b).expect("EOF, not a timeout"), 0, "closed");

    // Accepting stopped: the next connection waits for a new accept.
    let _next = TcpStream::connect(addr).expect("connect");
    for _ in 0..3 {
        p.park(Some(p.now() + Duration::from_millis(10)));
    }
    let fd = block_on(&p, accept(io, lfd));
    block_on(&p, close(io, fd));
    for fd in accepted {
        block_on(&p, close(io, fd));
    }
    block_on(&p, close(io, lfd));
    assert_eq!(io.in_flight(), 0);
    p
}

/// A connect through the driver, then 256 KiB each way with a std peer on a thread that
/// checks every byte; sends may come back short and are resumed by the caller.
pub fn connect_then_send_and_recv_every_byte<P: Platform>(make: &dyn Fn() -> P) -> P {
    const N: usize = 256 * 1024;
    let p = make();
    let io = p.io();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sock = tcp_socket(&addr).into_raw_fd();
    let (c, ()) = block_on(&p, Op::connect(io, sock, addr).expect("submit"));
    assert_eq!(c.result, Ok(0));
    let (mut peer, _) = listener.accept().expect("accept");
    let echo = std::thread::spawn(move || {
        let mut got = vec![0u8; N];
        peer.read_exact(&mut got).expect("peer read");
        assert!(got == pattern_vec(0, N), "bytes sent corrupted");
        peer.write_all(&pattern_vec(7, N)).expect("peer write");
        peer
    });
    block_on(&p, send_all(io, sock, &pattern_vec(0, N), N));
    let got = block_on(&p, recv_exact(io, sock, N, 64 * 1024));
    assert!(got == pattern_vec(7, N), "bytes received corrupted");
    drop(echo.join().expect("peer thread"));
    block_on(&p, close(io, sock));
    p
}

/// Far beyond a loopback socket buffer both ways at once, both ends on the driver: sends come
/// back short, every byte arrives in order, and `shutdown(Write)` ends the stream.
pub fn large_transfer_both_ways_every_byte_checked<P: Platform>(make: &dyn Fn() -> P) -> P {
    const UP: usize = 8 << 20;
    const DOWN: usize = 3 << 20;
    let p = make();
    let io = p.io();
    let (c, s) = pair(&p);
    let up = pattern_vec(0, UP);
    let down = pattern_vec(1 << 40, DOWN);
    block_on(
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
    block_on(&p, close(io, c));
    block_on(&p, close(io, s));
    assert_eq!(io.in_flight(), 0);
    p
}

/// A gather write to a socket sends its buffers in order (an empty one included) and gives
/// them back; `shutdown(Write)` then gives the peer end of stream while the other direction
/// still works.
pub fn writev_gathers_in_order_and_shutdown_write_half_closes<P: Platform>(
    make: &dyn Fn() -> P,
) -> P {
    let p = make();
    let io = p.io();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fd = block_on(&p, connect(io, addr)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    read_timeout(&server);
    let bufs = vec![
        b"hello ".to_vec(),
        Vec::new(),
        b"gathered ".to_vec(),
        b"world".to_vec(),
    ];
    let (c, bufs) = block_on(
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

    let (c, ()) = block_on(&p, Op::shutdown(io, fd, Shutdown::Write).expect("submit"));
    assert_eq!(c.result, Ok(0));
    let mut b = [0u8; 4];
    assert_eq!(server.read(&mut b).expect("read"), 0, "peer sees EOF");
    server.write_all(b"back").expect("write");
    assert_eq!(block_on(&p, recv_exact(io, fd, 4, 16)), b"back");
    block_on(&p, close(io, fd));
    p
}

/// A send after our own `shutdown(Write)` fails with `EPIPE` (an error, not a SIGPIPE).
pub fn send_after_shutdown_write_is_broken_pipe<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let io = p.io();
    let (fd, mut peer) = tcp_pair_fd();
    let (c, ()) = block_on(&p, Op::shutdown(io, fd, Shutdown::Write).expect("submit"));
    assert_eq!(c.result, Ok(0));
    read_timeout(&peer);
    let mut buf = [0u8; 8];
    assert_eq!(peer.read(&mut buf).expect("read"), 0, "peer sees EOF");
    let (c, _) = block_on(
        &p,
        Op::send(io, fd, b"x".to_vec())
            .map_err(|(e, _)| e)
            .expect("send"),
    );
    let e = c.result.expect_err("send after shutdown");
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
    block_on(&p, close(io, fd));
    p
}

/// Connecting where nobody listens is `ConnectionRefused` (`ECONNREFUSED`), and releases the
/// operation.
pub fn connect_refused<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let io = p.io();
    let err = block_on(&p, connect(io, refused_addr())).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED));
    assert_eq!(io.in_flight(), 0);
    p
}

/// A receive waiting when the peer resets the connection fails with `ConnectionReset`
/// (`ECONNRESET`); a send after it fails too (no SIGPIPE).
pub fn peer_reset_is_connection_reset<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let io = p.io();
    let (fd, peer) = tcp_pair_fd();
    let recv = Op::recv(io, fd, vec![0u8; 64])
        .map_err(|(e, _)| e)
        .expect("recv");
    p.flush();
    abort(peer).expect("reset");
    let (c, _) = block_on(&p, recv);
    let e = c.result.expect_err("reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset);
    assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
    let (c, _) = block_on(
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
    block_on(&p, close(io, fd));
    p
}

/// Positional writes and reads, `fsync` and `fdatasync` on a file; a read past the end is
/// zero bytes; a gather write to a file writes at the file position, like writev(2).
pub fn file_write_at_read_at_fsync_and_writev<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let io = p.io();
    let dir = TempDir::new("file");
    let path = dir.0.join("data");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("open");
    let fd = file.into_raw_fd();
    block_on(&p, async {
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
        let (c, _) = Op::write_at(io, fd, &b"W"[..], 6)
            .map_err(|(e, _)| e)
            .expect("submit")
            .await;
        assert_eq!(c.result, Ok(1));
        for datasync in [false, true] {
            let (c, ()) = Op::fsync(io, fd, datasync).expect("submit").await;
            assert_eq!(c.result, Ok(0));
        }
        let (c, mut buf) = Op::read_at(io, fd, Vec::with_capacity(64), 0)
            .map_err(|(e, _)| e)
            .expect("submit")
            .await;
        assert_eq!(complete_read(&c, &mut buf), Ok(11));
        assert_eq!(buf, b"hello World");
        let (c, mut buf) = Op::read_at(io, fd, vec![0u8; 5].into_boxed_slice(), 6)
            .map_err(|(e, _)| e)
            .expect("submit")
            .await;
        assert_eq!(complete_read(&c, &mut buf), Ok(5));
        assert_eq!(&buf[..], b"World");
        let (c, mut buf) = Op::read_at(io, fd, Vec::with_capacity(8), 100)
            .map_err(|(e, _)| e)
            .expect("submit")
            .await;
        assert_eq!(complete_read(&c, &mut buf), Ok(0), "past the end");
        // Gather writes at the file position (0, then 5).
        for bufs in [vec![b"HEL".to_vec(), b"LO".to_vec()], vec![b"_".to_vec()]] {
            let len = bufs.iter().map(Vec::len).sum::<usize>() as u32;
            let (c, _) = Op::writev(io, fd, bufs)
                .map_err(|(e, _)| e)
                .expect("submit")
                .await;
            assert_eq!(c.result, Ok(len));
        }
    });
    block_on(&p, close(io, fd));
    assert_eq!(std::fs::read(&path).expect("read back"), b"HELLO_World");
    assert_eq!(io.in_flight(), 0);
    p
}

/// An operation on a descriptor that is not open completes with `EBADF` (`InvalidInput`);
/// nothing panics.
pub fn bad_descriptor_is_an_error_not_a_panic<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    for fd in [-1, 1_000_000] {
        let (c, _) = block_on(
            &p,
            Op::recv(p.io(), fd, Vec::with_capacity(8))
                .map_err(|(e, _)| e)
                .expect("submit"),
        );
        let e = c.result.expect_err("EBADF");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "fd {fd}");
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "fd {fd}");
    }
    p
}
