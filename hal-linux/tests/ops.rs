//! Every `RawOp` over a real io_uring: loopback TCP, files in a temp dir, timeouts.

mod common;

use std::future::poll_fn;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::time::Duration;

use common::{block_on, own, park_until, pattern, platform, tcp_pair, tcp_socket, TempDir};
use seastar_hal::io::{complete_read, Completion, IoDriver, MultiOp, Op, OpId, Shutdown};
use seastar_hal::{ErrorKind, Platform};
use seastar_hal_linux::{probe, UringConfig, UringPlatform};

#[test]
fn probe_reports_the_setup_used() {
    let f = probe(&UringConfig::new()).expect("probe");
    println!("{f:#?}");
    assert!(f.ext_arg);
    assert!(!f.setup.sqpoll);
    // DEFER_TASKRUN is never used without SINGLE_ISSUER.
    assert!(!f.setup.defer_taskrun || f.setup.single_issuer);
    // NO_SQARRAY is tried only on the top rung (with DEFER_TASKRUN).
    assert!(!f.setup.no_sqarray || f.setup.defer_taskrun);
    // Whatever was refused was tried before the combination in use.
    assert!(!f.refused.contains(&f.setup));
    assert!(f.sq_entries >= 256 && f.cq_entries >= f.sq_entries);
}

#[test]
fn nop_completes_at_the_next_park() {
    let p = platform();
    let op = Op::nop(p.io()).expect("submit");
    assert_eq!(p.io().in_flight(), 1);
    let (c, ()) = block_on(&p, op);
    assert_eq!(c, Completion::done(Ok(0)));
    assert_eq!(p.io().in_flight(), 0);
}

#[test]
fn timeout_fires_on_time_never_early() {
    let p = platform();
    for ms in [1u64, 20, 60] {
        let deadline = p.now() + Duration::from_millis(ms);
        let op = Op::timeout(p.io(), deadline).expect("submit");
        let (c, ()) = block_on(&p, op);
        let now = p.now();
        assert_eq!(c.result, Ok(0), "-ETIME is a timeout's success");
        assert!(now >= deadline, "fired {:?} early", deadline - now);
        assert!(
            now - deadline < Duration::from_secs(1),
            "fired {:?} late",
            now - deadline
        );
    }
    // A deadline in the past completes at once.
    let op = Op::timeout(p.io(), p.now() - Duration::from_secs(1)).expect("submit");
    let before = std::time::Instant::now();
    assert_eq!(block_on(&p, op).0.result, Ok(0));
    assert!(before.elapsed() < Duration::from_secs(1));
}

#[test]
fn park_honours_its_deadline() {
    let p = platform();
    let deadline = p.now() + Duration::from_millis(30);
    p.park(Some(deadline));
    assert!(p.now() >= deadline, "park returned early without any event");
    // A deadline in the past: submit + reap, no wait.
    let t = std::time::Instant::now();
    p.park(Some(p.now()));
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn dropping_a_timeout_cancels_it() {
    let p = platform();
    let op = Op::timeout(p.io(), p.now() + Duration::from_secs(30)).expect("submit");
    p.flush();
    drop(op);
    assert_eq!(p.io().in_flight(), 1, "cancelled op stays until its CQE");
    let t = std::time::Instant::now();
    park_until(&p, || p.io().in_flight() == 0);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(p.stats().cancels, 1);
}

#[test]
fn polling_an_unknown_id_is_invalid_input() {
    let p = platform();
    let c = block_on(&p, poll_fn(|cx| p.io().poll_op(OpId(12345), cx)));
    assert_eq!(c.result.map_err(|e| e.kind()), Err(ErrorKind::InvalidInput));
}

#[test]
fn accept_single() {
    let p = platform();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let op = Op::accept(p.io(), listener.as_raw_fd()).expect("submit");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (c, ()) = block_on(&p, op);
    let fd = own(c.result.expect("accepted") as i32);
    client.write_all(b"hi").expect("write");
    let (c, mut buf) = block_on(
        &p,
        Op::recv(p.io(), fd.as_raw_fd(), vec![0u8; 16]).expect("recv"),
    );
    let n = complete_read(&c, &mut buf).expect("recv ok");
    buf.truncate(n);
    assert_eq!(buf, b"hi");
}

fn multishot_accept(cfg: UringConfig, native: bool) {
    let p = UringPlatform::new(cfg).expect("platform");
    assert_eq!(p.features().native_multishot_accept, native);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut accepts = MultiOp::accept_multishot(p.io(), listener.as_raw_fd()).expect("submit");
    let mut clients = Vec::new();
    for i in 0..4u8 {
        let mut client = TcpStream::connect(addr).expect("connect");
        client.write_all(&[i]).expect("write");
        clients.push(client);
        let c = block_on(&p, poll_fn(|cx| accepts.poll_next(cx))).expect("a completion");
        assert!(c.more, "multishot keeps going");
        let fd = own(c.result.expect("accepted") as i32);
        let (c, mut buf) = block_on(
            &p,
            Op::recv(p.io(), fd.as_raw_fd(), vec![0u8; 4]).expect("recv"),
        );
        let n = complete_read(&c, &mut buf).expect("recv ok");
        buf.truncate(n);
        assert_eq!(buf, [i], "connection {i} in order");
    }
    drop(accepts);
    park_until(&p, || p.io().in_flight() == 0);
}

#[test]
fn accept_multishot_native() {
    multishot_accept(UringConfig::new(), true);
}

#[test]
fn accept_multishot_emulated() {
    multishot_accept(UringConfig::new().native_multishot_accept(false), false);
}

#[test]
fn connect_then_send_and_recv_every_byte() {
    const N: usize = 256 * 1024;
    let p = platform();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sock = tcp_socket(&addr);
    let (c, ()) = block_on(
        &p,
        Op::connect(p.io(), sock.as_raw_fd(), addr).expect("submit"),
    );
    assert_eq!(c.result, Ok(0));
    let (mut peer, _) = listener.accept().expect("accept");

    // The peer checks every byte we send, then answers with a shifted pattern.
    let echo = std::thread::spawn(move || {
        let mut got = vec![0u8; N];
        peer.read_exact(&mut got).expect("peer read");
        for (i, b) in got.iter().enumerate() {
            assert_eq!(*b, pattern(i as u64), "byte {i} sent corrupted");
        }
        let reply: Vec<u8> = (0..N as u64).map(|i| pattern(i + 7)).collect();
        peer.write_all(&reply).expect("peer write");
        peer
    });

    let data: Vec<u8> = (0..N as u64).map(pattern).collect();
    let mut sent = 0;
    while sent < N {
        let chunk = data[sent..].to_vec();
        let (c, _) = block_on(&p, Op::send(p.io(), sock.as_raw_fd(), chunk).expect("send"));
        let n = c.result.expect("send ok") as usize;
        assert!(n > 0);
        sent += n;
    }
    let mut got = Vec::with_capacity(N);
    while got.len() < N {
        let (c, mut buf) = block_on(
            &p,
            Op::recv(p.io(), sock.as_raw_fd(), Vec::with_capacity(64 * 1024)).expect("recv"),
        );
        let n = complete_read(&c, &mut buf).expect("recv ok");
        assert!(n > 0, "unexpected EOF at {}", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    for (i, b) in got.iter().enumerate() {
        assert_eq!(*b, pattern(i as u64 + 7), "byte {i} received corrupted");
    }
    drop(echo.join().expect("peer thread"));
}

#[test]
fn writev_gathers_in_order() {
    let p = platform();
    let (ours, mut peer) = tcp_pair();
    let bufs = vec![b"hello ".to_vec(), b"gather ".to_vec(), b"world".to_vec()];
    let (c, g) = block_on(
        &p,
        Op::writev(p.io(), ours.as_raw_fd(), bufs).expect("writev"),
    );
    assert_eq!(c.result, Ok(18));
    assert_eq!(g.into_inner().len(), 3);
    let mut got = [0u8; 18];
    peer.read_exact(&mut got).expect("read");
    assert_eq!(&got, b"hello gather world");
}

#[test]
fn shutdown_write_gives_the_peer_eof_and_send_after_is_broken_pipe() {
    let p = platform();
    let (ours, mut peer) = tcp_pair();
    let (c, ()) = block_on(
        &p,
        Op::shutdown(p.io(), ours.as_raw_fd(), Shutdown::Write).expect("submit"),
    );
    assert_eq!(c.result, Ok(0));
    let mut buf = [0u8; 8];
    assert_eq!(peer.read(&mut buf).expect("read"), 0, "peer sees EOF");
    // MSG_NOSIGNAL: an error, not a SIGPIPE.
    let (c, _) = block_on(
        &p,
        Op::send(p.io(), ours.as_raw_fd(), b"x".to_vec()).expect("send"),
    );
    let e = c.result.expect_err("send after shutdown");
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
}

#[test]
fn close_gives_the_peer_eof() {
    let p = platform();
    let (ours, mut peer) = tcp_pair();
    let (c, ()) = block_on(&p, Op::close(p.io(), ours.into_raw_fd()).expect("submit"));
    assert_eq!(c.result, Ok(0));
    let mut buf = [0u8; 8];
    assert_eq!(peer.read(&mut buf).expect("read"), 0);
}

#[test]
fn connect_refused() {
    let p = platform();
    let addr = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr"); // the listener is dropped: nobody listens there now
    let sock = tcp_socket(&addr);
    let (c, ()) = block_on(
        &p,
        Op::connect(p.io(), sock.as_raw_fd(), addr).expect("submit"),
    );
    let e = c.result.expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
}

#[test]
fn peer_reset() {
    let p = platform();
    let (ours, peer) = tcp_pair();
    let recv = Op::recv(p.io(), ours.as_raw_fd(), vec![0u8; 64]).expect("recv");
    p.flush();
    common::reset(peer);
    let (c, _) = block_on(&p, recv);
    let e = c.result.expect_err("reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset);
    assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
}

#[test]
fn file_write_at_read_at_fsync_and_writev() {
    let p = platform();
    let dir = TempDir::new("file");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.0.join("data"))
        .expect("open");
    let fd = file.as_raw_fd();
    let w =
        |buf: &'static [u8], off| block_on(&p, Op::write_at(p.io(), fd, buf, off).expect("w")).0;
    assert_eq!(w(b"hello world", 0).result, Ok(11));
    assert_eq!(w(b"W", 6).result, Ok(1));
    assert_eq!(
        block_on(&p, Op::fsync(p.io(), fd, false).expect("fsync"))
            .0
            .result,
        Ok(0)
    );
    assert_eq!(
        block_on(&p, Op::fsync(p.io(), fd, true).expect("fdatasync"))
            .0
            .result,
        Ok(0)
    );
    let (c, mut buf) = block_on(
        &p,
        Op::read_at(p.io(), fd, Vec::with_capacity(64), 0).expect("r"),
    );
    assert_eq!(complete_read(&c, &mut buf), Ok(11));
    assert_eq!(buf, b"hello World");
    let (c, mut buf) = block_on(
        &p,
        Op::read_at(p.io(), fd, Vec::with_capacity(64), 6).expect("r"),
    );
    assert_eq!(complete_read(&c, &mut buf), Ok(5));
    assert_eq!(buf, b"World");
    // Reading past the end: 0 bytes.
    let (c, mut buf) = block_on(
        &p,
        Op::read_at(p.io(), fd, Vec::with_capacity(8), 99).expect("r"),
    );
    assert_eq!(complete_read(&c, &mut buf), Ok(0));

    // Writev on a file (not a socket) writes at the file position, like writev(2).
    let log = std::fs::File::create(dir.0.join("log")).expect("create");
    for _ in 0..2 {
        let bufs = vec![b"ab".to_vec(), b"cd".to_vec()];
        let (c, _) = block_on(
            &p,
            Op::writev(p.io(), log.as_raw_fd(), bufs).expect("writev"),
        );
        assert_eq!(c.result, Ok(4));
    }
    assert_eq!(std::fs::read(dir.0.join("log")).expect("read"), b"abcdabcd");
}

#[test]
fn bad_descriptor_is_an_error_not_a_panic() {
    let p = platform();
    let (c, _) = block_on(
        &p,
        Op::recv(p.io(), 1_000_000, vec![0u8; 8]).expect("submit"),
    );
    let e = c.result.expect_err("EBADF");
    assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn works_without_defer_taskrun() {
    let p = UringPlatform::new(UringConfig::new().defer_taskrun(false)).expect("platform");
    assert!(!p.features().setup.defer_taskrun);
    assert!(!p.features().setup.no_sqarray);
    assert_eq!(block_on(&p, Op::nop(p.io()).expect("nop")).0.result, Ok(0));
    let deadline = p.now() + Duration::from_millis(10);
    assert_eq!(
        block_on(&p, Op::timeout(p.io(), deadline).expect("t"))
            .0
            .result,
        Ok(0)
    );
    assert!(p.now() >= deadline);
}

#[test]
fn works_with_sqpoll_when_permitted() {
    let p = match UringPlatform::new(UringConfig::new().entries(32).sqpoll(Some(10))) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SQPOLL not permitted here ({e}); skipping");
            return;
        }
    };
    assert!(p.features().setup.sqpoll);
    assert!(!p.features().setup.defer_taskrun);
    assert_eq!(block_on(&p, Op::nop(p.io()).expect("nop")).0.result, Ok(0));
    // More ops than SQ entries: the kernel thread must make room.
    let nops: Vec<_> = (0..100).map(|_| Op::nop(p.io()).expect("nop")).collect();
    for op in nops {
        assert_eq!(block_on(&p, op).0.result, Ok(0));
    }
    let (ours, mut peer) = tcp_pair();
    peer.write_all(b"sq").expect("write");
    let (c, mut buf) = block_on(
        &p,
        Op::recv(p.io(), ours.as_raw_fd(), vec![0u8; 8]).expect("r"),
    );
    let n = complete_read(&c, &mut buf).expect("ok");
    buf.truncate(n);
    assert_eq!(buf, b"sq");
}

/// A ring registers itself with its thread (enters then skip the descriptor lookup) and
/// unregisters on drop: a thread has only 16 registration slots, so creating and dropping
/// more platforms than that on one thread keeps getting registered rings that work.
#[test]
fn rings_register_with_their_thread_and_give_the_slot_back() {
    let first = platform();
    if !first.features().registered_ring {
        return; // a kernel older than 5.18: plain enters
    }
    drop(first);
    for _ in 0..40 {
        let p = platform();
        assert!(p.features().registered_ring, "slot not given back");
        let deadline = p.now() + Duration::from_millis(1);
        assert_eq!(
            block_on(&p, Op::timeout(p.io(), deadline).expect("t"))
                .0
                .result,
            Ok(0)
        );
    }
}
