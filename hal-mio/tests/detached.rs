//! Detached sends (`IoDriver::send_detached`) over mio: the driver owns the bytes, sends
//! them whole (resuming on writability), frees them (pool buffers: back to the pool) and
//! tells only the status.
//! Also the peek of a pooled receive (`RecvStream::is_ready`) that `try_recv` uses before
//! echoing a buffer back.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use common::{pattern, run};
use seastar_hal::io::{IoDriver, RecvStream, SendBuf, SendBufs, SendStatus};
use seastar_hal::{ErrorKind, Platform};
use seastar_hal_mio::MioPlatform;

/// More than loopback socket buffers take (they autotune to several MiB) before the peer
/// reads: the driver must resume the send on writability, with nobody polling it.
const BIG: usize = 16 * 1024 * 1024;

#[test]
fn detached_sends_go_out_whole_in_order_and_wake_only_the_status() {
    let p = platform();
    let (ours, mut peer) = tcp_pair();
    let big: Vec<u8> = (0..BIG as u64).map(pattern).collect();
    let mut expected = big.clone();
    expected.extend_from_slice(b"static|vec|boxed|tail");
    let total = expected.len();
    let status = Rc::new(SendStatus::default());
    let fd = ours.as_raw_fd();
    // mio tries a send at once: the peer starts reading only after, so it cannot be done yet.
    p.io()
        .send_detached(fd, SendBufs::One(SendBuf::from_vec(big)), &status)
        .expect("send");
    assert_eq!((status.in_flight(), p.io().in_flight()), (1, 1));
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        peer.read_exact(&mut got).expect("peer read");
        got
    });
    let counter = Arc::new(common::Flag::default());
    let waker = Waker::from(counter.clone());
    assert!(status
        .poll_idle(&mut Context::from_waker(&waker))
        .is_pending());
    park_until(&p, || status.in_flight() == 0);
    assert_eq!(
        counter.count.load(Ordering::SeqCst),
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
    p.io().release_fd(fd);
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
    let buf = run(&p, std::future::poll_fn(|cx| recv.poll_next(cx)))
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
    // (mio tries the send at once: a small one is finished before `send_detached` returns.)
    park_until(&p, || status.in_flight() == 0);
    assert_eq!(p.stats().pool_buffers_free, 8, "released by the driver");
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).expect("peer read");
    assert_eq!(&got, b"ping");
    drop(recv);
    p.io().release_fd(ours.as_raw_fd());
}

#[test]
fn a_failed_detached_send_is_reported_to_the_status() {
    let p = platform();
    let (ours, peer) = tcp_pair();
    common::reset(peer);
    let status = Rc::new(SendStatus::default());
    let big = vec![7u8; BIG];
    p.io()
        .send_detached(
            ours.as_raw_fd(),
            SendBufs::One(SendBuf::from_vec(big)),
            &status,
        )
        .expect("send");
    park_until(&p, || status.in_flight() == 0);
    let e = status.take_error().expect("the failure is reported");
    assert!(
        matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "{e:?}"
    );
    assert_eq!(status.take_error(), None, "reported once");
    p.io().release_fd(ours.as_raw_fd());
}

#[test]
fn releasing_the_descriptor_fails_a_detached_send_and_frees_it() {
    let p = platform();
    let (ours, peer) = tcp_pair();
    let status = Rc::new(SendStatus::default());
    p.io()
        .send_detached(
            ours.as_raw_fd(),
            SendBufs::One(SendBuf::from_vec(vec![1u8; BIG])),
            &status,
        )
        .expect("send");
    assert_eq!(status.in_flight(), 1, "blocked: the peer does not read");
    p.io().release_fd(ours.as_raw_fd());
    assert_eq!((status.in_flight(), p.io().in_flight()), (0, 0));
    assert_eq!(
        status.take_error().map(|e| e.kind()),
        Some(ErrorKind::Canceled)
    );
    drop(peer);
}

fn platform() -> MioPlatform {
    MioPlatform::new().expect("mio platform")
}

/// Park until `done()` holds; panics after [`common::LIMIT`].
fn park_until(p: &MioPlatform, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < common::LIMIT,
            "condition not reached in time"
        );
        p.park(Some(p.now() + Duration::from_millis(50)));
    }
}

/// A connected loopback pair: (our end, the peer as a std stream). Our end is released from
/// the driver before it closes.
fn tcp_pair() -> (Ours, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (ours, _) = listener.accept().expect("accept");
    (Ours(OwnedFd::from(ours)), peer)
}

struct Ours(OwnedFd);

impl AsRawFd for Ours {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
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
    p.io().release_fd(ours.as_raw_fd());
}
