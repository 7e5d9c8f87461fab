//! Detached sends (`IoDriver::send_detached`) over a real io_uring: the driver owns the bytes,
//! sends them whole, frees them (pool buffers: back to the pool) and tells only the status.
//! Also the peek of a pooled receive (`RecvStream::is_ready`) that `try_recv` uses before
//! echoing a buffer back.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Waker};

use common::{block_on, park_until, pattern, platform, tcp_pair};
use seastar_hal::io::{IoDriver, RecvStream, SendBuf, SendBufs, SendStatus};
use seastar_hal::{ErrorKind, Platform};
use seastar_hal_linux::UringPlatform;

/// More than loopback socket buffers take (they autotune to several MiB) before the peer
/// reads: the kernel must resume the send (`MSG_WAITALL`), with nobody polling it.
const BIG: usize = 16 * 1024 * 1024;

/// Start a detached send of [`BIG`] bytes on `fd`: it stays in the kernel until the peer
/// reads them or the connection fails.
fn start_big_send(p: &UringPlatform, fd: RawFd, status: &Rc<SendStatus>) {
    p.io()
        .send_detached(fd, SendBufs::One(SendBuf::from_vec(vec![7u8; BIG])), status)
        .expect("send");
}

#[test]
fn detached_sends_go_out_whole_in_order_and_wake_only_the_status() {
    let p = platform();
    let (ours, mut peer) = tcp_pair();
    let big: Vec<u8> = (0..BIG as u64).map(pattern).collect();
    let mut expected = big.clone();
    expected.extend_from_slice(b"static|vec|boxed|tail");
    let total = expected.len();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        peer.read_exact(&mut got).expect("peer read");
        got
    });

    let status = Rc::new(SendStatus::default());
    let fd = ours.as_raw_fd();
    p.io()
        .send_detached(fd, SendBufs::One(SendBuf::from_vec(big)), &status)
        .expect("send");
    assert_eq!((status.in_flight(), p.io().in_flight()), (1, 1));
    let counter = Arc::new(common::CountingWaker::default());
    let waker = Waker::from(counter.clone());
    assert!(status
        .poll_idle(&mut Context::from_waker(&waker))
        .is_pending());
    park_until(&p, || status.in_flight() == 0);
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "the status's waker, once"
    );

    p.io()
        .send_detached(fd, SendBufs::One(SendBuf::from_static(b"static|")), &status)
        .expect("send");
    park_until(&p, || status.in_flight() == 0);
    let gather = vec![
        SendBuf::from_vec(b"vec|".to_vec()),
        SendBuf::boxed(b"boxed|".to_vec().into_boxed_slice()),
        SendBuf::from_static(b"tail"),
    ];
    p.io()
        .send_detached(fd, SendBufs::Gather(gather), &status)
        .expect("send");
    park_until(&p, || status.in_flight() == 0);

    assert_eq!(status.take_error(), None);
    assert_eq!(p.io().in_flight(), 0, "finished sends free their slots");
    assert!(
        reader.join().expect("reader") == expected,
        "bytes lost or reordered"
    );
    assert_eq!(
        Rc::strong_count(&status),
        1,
        "the driver keeps no reference"
    );
}

#[test]
fn a_detached_pool_buffer_returns_to_its_pool_when_sent() {
    let p = platform();
    let (ours, mut peer) = tcp_pair();
    let pool = p.io().create_pool(8, 4096).expect("pool");
    let mut recv = RecvStream::new(p.io(), ours.as_raw_fd(), pool).expect("recv");
    peer.write_all(b"ping").expect("peer write");
    let buf = block_on(&p, std::future::poll_fn(|cx| recv.poll_next(cx)))
        .expect("data")
        .expect("no error");
    assert_eq!(&buf[..], b"ping");
    assert_eq!(p.stats().pool_buffers_free, 7);

    let status = Rc::new(SendStatus::default());
    p.io()
        .send_detached(
            ours.as_raw_fd(),
            SendBufs::One(buf.into_send_buf()),
            &status,
        )
        .expect("send");
    assert_eq!(
        p.stats().pool_buffers_free,
        7,
        "held while the send is in flight"
    );
    park_until(&p, || status.in_flight() == 0);
    assert_eq!(p.stats().pool_buffers_free, 8, "released by the driver");
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).expect("peer read");
    assert_eq!(&got, b"ping");
    drop(recv);
}

#[test]
fn a_failed_detached_send_is_reported_to_the_status() {
    let p = platform();
    let (ours, peer) = tcp_pair();
    common::reset(peer);
    let status = Rc::new(SendStatus::default());
    start_big_send(&p, ours.as_raw_fd(), &status);
    park_until(&p, || status.in_flight() == 0);
    let e = status.take_error().expect("the failure is reported");
    assert!(
        matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "{e:?}"
    );
    assert_eq!(status.take_error(), None, "reported once");
}

/// `RecvStream::is_ready` (the driver's `has_completion`, which `try_recv` asks instead of
/// polling): `false` exactly while a poll would be `Pending`, `true` with data queued and at
/// the end of the stream.
#[test]
fn a_pooled_receive_is_ready_only_with_a_completion_queued() {
    let p = platform();
    let (ours, mut peer) = tcp_pair();
    let pool = p.io().create_pool(8, 4096).expect("pool");
    let mut recv = RecvStream::new(p.io(), ours.as_raw_fd(), pool).expect("recv");
    let mut peek = Context::from_waker(Waker::noop());
    assert!(!recv.is_ready(), "nothing sent yet");
    assert!(recv.poll_next(&mut peek).is_pending());
    peer.write_all(b"ping").expect("peer write");
    park_until(&p, || recv.is_ready());
    let buf = match recv.poll_next(&mut peek) {
        std::task::Poll::Ready(Some(Ok(buf))) => buf,
        other => panic!(
            "ready, yet polled {:?}",
            other.map(|o| o.map(|r| r.map(|b| b.len())))
        ),
    };
    assert_eq!(&buf[..], b"ping");
    assert!(!recv.is_ready(), "its only completion was taken");
    assert!(recv.poll_next(&mut peek).is_pending());
    drop(peer);
    park_until(&p, || recv.is_ready());
    assert!(matches!(
        recv.poll_next(&mut peek),
        std::task::Poll::Ready(None)
    ));
    assert!(
        recv.is_ready(),
        "a finished receive polls ready (None) at once"
    );
    drop((buf, recv));
}

/// Detached gathers one after another, of different lengths: each reuses the header of a
/// finished one (the driver keeps them), and every byte still goes out, in order.
#[test]
fn consecutive_detached_gathers_send_every_byte_in_order() {
    let p = platform();
    let (ours, mut peer) = tcp_pair();
    let status = Rc::new(SendStatus::default());
    let mut expected = Vec::new();
    for round in 0..6u64 {
        let gather: Vec<SendBuf> = (0..1 + round * 3)
            .map(|k| {
                let chunk: Vec<u8> = (0..1 + (round * 7 + k) * 13).map(pattern).collect();
                expected.extend_from_slice(&chunk);
                SendBuf::from_vec(chunk)
            })
            .collect();
        p.io()
            .send_detached(ours.as_raw_fd(), SendBufs::Gather(gather), &status)
            .expect("send");
        park_until(&p, || status.in_flight() == 0);
        assert_eq!(status.take_error(), None, "round {round}");
    }
    let mut got = vec![0u8; expected.len()];
    peer.read_exact(&mut got).expect("peer read");
    assert!(got == expected, "bytes lost or reordered");
    assert_eq!(p.io().in_flight(), 0);
}

/// A detached gather on a descriptor that is not a socket (a pipe): the driver's `SENDMSG`
/// fails with `ENOTSOCK` and is re-submitted as `WRITEV` from the same slot; the bytes arrive
/// whole and in order, and the next gather (reusing the finished one's header) does too.
#[test]
fn a_detached_gather_on_a_pipe_falls_back_to_writev() {
    let p = platform();
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let status = Rc::new(SendStatus::default());
    for word in [&b"one|"[..], b"two|"] {
        let gather = vec![
            SendBuf::from_static(word),
            SendBuf::from_vec(b"vec|".to_vec()),
        ];
        p.io()
            .send_detached(writer.as_raw_fd(), SendBufs::Gather(gather), &status)
            .expect("send");
        park_until(&p, || status.in_flight() == 0);
        assert_eq!(status.take_error(), None);
    }
    assert_eq!(p.io().in_flight(), 0);
    drop(writer);
    let mut got = Vec::new();
    reader.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"one|vec|two|vec|");
}

/// Dropping the platform with a detached send stuck in the kernel (the peer reads nothing):
/// the driver cancels it, waits for its final CQE, then releases the bytes and tells the
/// status, so the status ends up with no send in flight and no reference from the driver.
#[test]
fn dropping_the_platform_finishes_a_detached_send_in_flight() {
    let p = platform();
    let (ours, _peer) = tcp_pair();
    let status = Rc::new(SendStatus::default());
    start_big_send(&p, ours.as_raw_fd(), &status);
    // Hand it to the kernel; it blocks once the socket buffers are full.
    p.park(Some(p.now()));
    assert_eq!((status.in_flight(), p.io().in_flight()), (1, 1));
    drop(p);
    assert_eq!(status.in_flight(), 0, "finished by the drop");
    assert!(status.take_error().is_some(), "cut short: reported");
    assert_eq!(Rc::strong_count(&status), 1, "the driver let go of it");
}
