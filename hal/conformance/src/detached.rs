//! Detached sends (`IoDriver::send_detached`): the driver owns the bytes, sends them whole
//! with nobody polling, frees them (pool buffers: back to the pool) and tells only the
//! status. Also the peek of a pooled receive (`RecvStream::is_ready`) that `try_recv` uses
//! before echoing a buffer back, and the hold-limit rule (`POOL_HOLD_LIMIT`), where the
//! buffers inside unfinished detached sends decide whether a paused receive waits or fails.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use seastar_hal::io::{
    IoDriver, PooledBuf, RecvStream, SendBuf, SendBufs, SendStatus, POOL_HOLD_LIMIT,
};
use seastar_hal::{ErrorKind, Platform};

use crate::harness::{
    abort, block_on, close, flag_waker, park_until, pattern, pattern_vec, pipe, tcp_pair,
    tcp_pair_fd, LIMIT,
};

/// More than loopback socket buffers take (they autotune to several MiB) before the peer
/// reads: the send must be resumed by the driver, with nobody polling it.
const BIG: usize = 16 * 1024 * 1024;

/// A big send, then a `'static` one, then a gather of a `Vec`, a boxed buffer and a
/// `'static` slice: every byte arrives in order, the status's waker is woken once, finished
/// sends free their slots and the driver keeps no reference to the status.
pub fn detached_sends_go_out_whole_in_order_and_wake_only_the_status<P: Platform>(
    make: &dyn Fn() -> P,
) -> P {
    let p = make();
    let io = p.io();
    let (fd, mut peer) = tcp_pair_fd();
    let big: Vec<u8> = (0..BIG as u64).map(pattern).collect();
    let mut expected = big.clone();
    expected.extend_from_slice(b"static|vec|boxed|tail");
    let total = expected.len();
    let status = Rc::new(SendStatus::default());
    // The peer starts reading only after: the send cannot be finished yet.
    io.send_detached(fd, SendBufs::One(SendBuf::from_vec(big)), &status)
        .expect("send");
    assert_eq!((status.in_flight(), io.in_flight()), (1, 1));
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        peer.read_exact(&mut got).expect("peer read");
        got
    });
    let (flag, waker) = flag_waker();
    assert!(status
        .poll_idle(&mut Context::from_waker(&waker))
        .is_pending());
    park_until(&p, || status.in_flight() == 0);
    assert_eq!(
        flag.count.load(Ordering::SeqCst),
        1,
        "the status's waker, once"
    );

    io.send_detached(fd, SendBufs::One(SendBuf::from_static(b"static|")), &status)
        .expect("send");
    park_until(&p, || status.in_flight() == 0);
    let gather = vec![
        SendBuf::from_vec(b"vec|".to_vec()),
        SendBuf::boxed(b"boxed|".to_vec().into_boxed_slice()),
        SendBuf::from_static(b"tail"),
    ];
    io.send_detached(fd, SendBufs::Gather(gather), &status)
        .expect("send");
    park_until(&p, || status.in_flight() == 0);

    assert_eq!(status.take_error(), None);
    assert_eq!(io.in_flight(), 0, "finished sends free their slots");
    assert!(
        reader.join().expect("reader") == expected,
        "bytes lost or reordered"
    );
    assert_eq!(
        Rc::strong_count(&status),
        1,
        "the driver keeps no reference"
    );
    block_on(&p, close(io, fd));
    p
}

/// A pool buffer sent detached goes back to its pool when the send is done: with a pool of
/// one buffer, the next receive can only get data once the driver released it.
pub fn a_detached_pool_buffer_returns_to_its_pool_when_sent<P: Platform>(
    make: &dyn Fn() -> P,
) -> P {
    let p = make();
    let io = p.io();
    let (fd, mut peer) = tcp_pair_fd();
    let pool = io.create_pool(1, 4096).expect("pool");
    let mut recv = RecvStream::new(io, fd, pool).expect("recv");
    let status = Rc::new(SendStatus::default());
    for word in [&b"ping"[..], b"pong", b"again"] {
        peer.write_all(word).expect("peer write");
        let buf = block_on(&p, std::future::poll_fn(|cx| recv.poll_next(cx)))
            .expect("data")
            .expect("no error");
        assert_eq!(&buf[..], word);
        io.send_detached(fd, SendBufs::One(buf.into_send_buf()), &status)
            .expect("send");
        park_until(&p, || status.in_flight() == 0);
        assert_eq!(status.take_error(), None);
        let mut got = vec![0u8; word.len()];
        peer.read_exact(&mut got).expect("peer read");
        assert_eq!(got, word);
    }
    drop(recv);
    block_on(&p, close(io, fd));
    p
}

/// A detached send on a connection the peer reset reports the failure to the status, once.
pub fn a_failed_detached_send_is_reported_to_the_status<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let io = p.io();
    let (fd, peer) = tcp_pair_fd();
    abort(peer).expect("reset");
    let status = Rc::new(SendStatus::default());
    io.send_detached(
        fd,
        SendBufs::One(SendBuf::from_vec(vec![7u8; BIG])),
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
    block_on(&p, close(io, fd));
    p
}

/// `RecvStream::is_ready` (the driver's `has_completion`, which `try_recv` asks instead of
/// polling): `false` exactly while a poll would be `Pending`, `true` with data queued and at
/// the end of the stream.
pub fn a_pooled_receive_is_ready_only_with_a_completion_queued<P: Platform>(
    make: &dyn Fn() -> P,
) -> P {
    let p = make();
    let io = p.io();
    let (fd, mut peer) = tcp_pair_fd();
    let pool = io.create_pool(8, 4096).expect("pool");
    let mut recv = RecvStream::new(io, fd, pool).expect("recv");
    let mut peek = Context::from_waker(Waker::noop());
    assert!(!recv.is_ready(), "nothing sent yet");
    assert!(recv.poll_next(&mut peek).is_pending());
    peer.write_all(b"ping").expect("peer write");
    park_until(&p, || recv.is_ready());
    let buf = match recv.poll_next(&mut peek) {
        Poll::Ready(Some(Ok(buf))) => buf,
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
    assert!(matches!(recv.poll_next(&mut peek), Poll::Ready(None)));
    assert!(
        recv.is_ready(),
        "a finished receive polls ready (None) at once"
    );
    drop((buf, recv));
    block_on(&p, close(io, fd));
    p
}

/// Detached gathers one after another, of different lengths (a driver may reuse a finished
/// one's header): every byte still goes out, in order.
pub fn consecutive_detached_gathers_send_every_byte_in_order<P: Platform>(
    make: &dyn Fn() -> P,
) -> P {
    let p = make();
    let io = p.io();
    let (fd, mut peer) = tcp_pair_fd();
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
        io.send_detached(fd, SendBufs::Gather(gather), &status)
            .expect("send");
        park_until(&p, || status.in_flight() == 0);
        assert_eq!(status.take_error(), None, "round {round}");
    }
    let mut got = vec![0u8; expected.len()];
    peer.read_exact(&mut got).expect("peer read");
    assert!(got == expected, "bytes lost or reordered");
    assert_eq!(io.in_flight(), 0);
    block_on(&p, close(io, fd));
    p
}

/// A detached gather to a descriptor that is not a socket (a pipe) writes every byte in
/// order too, twice in a row.
pub fn a_detached_gather_on_a_pipe_sends_every_byte<P: Platform>(make: &dyn Fn() -> P) -> P {
    let p = make();
    let io = p.io();
    let (mut reader, writer) = pipe();
    let status = Rc::new(SendStatus::default());
    for word in [&b"one|"[..], b"two|"] {
        let gather = vec![
            SendBuf::from_static(word),
            SendBuf::from_vec(b"vec|".to_vec()),
        ];
        io.send_detached(writer.as_raw_fd(), SendBufs::Gather(gather), &status)
            .expect("send");
        park_until(&p, || status.in_flight() == 0);
        assert_eq!(status.take_error(), None);
    }
    assert_eq!(io.in_flight(), 0);
    block_on(&p, close(io, writer.into_raw_fd()));
    let mut got = Vec::new();
    reader.read_to_end(&mut got).expect("read");
    assert_eq!(got, b"one|vec|two|vec|");
    p
}

/// Dropping the platform with a detached send stuck (the peer reads nothing) finishes it:
/// the bytes are released, the status has no send in flight, learns that it was cut short,
/// and holds the only reference.
pub fn dropping_the_platform_finishes_a_detached_send_in_flight<P: Platform>(
    make: &dyn Fn() -> P,
) -> P {
    let p = make();
    let (ours, _peer) = tcp_pair();
    let status = Rc::new(SendStatus::default());
    p.io()
        .send_detached(
            ours.as_raw_fd(),
            SendBufs::One(SendBuf::from_vec(vec![7u8; BIG])),
            &status,
        )
        .expect("send");
    // Hand it over; it blocks once the socket buffers are full.
    p.park(Some(p.now()));
    assert_eq!((status.in_flight(), p.io().in_flight()), (1, 1));
    drop(p);
    assert_eq!(status.in_flight(), 0, "finished by the drop");
    assert!(status.take_error().is_some(), "cut short: reported");
    assert_eq!(Rc::strong_count(&status), 1, "the driver let go of it");
    make()
}

/// The hold-limit rule (`POOL_HOLD_LIMIT`). A pooled receive whose owner keeps every buffer
/// is paused at the limit; polled with nothing queued it fails at once with a `HoldLimit`
/// error that is not final (`is_ready` says so too, and it stays so while nothing changes)
/// as long as the owner itself holds more than half the limit, however many more sit in an
/// unfinished detached send. Once the owner's own share is down to half, the buffers of that
/// send will resume it: the poll waits instead, and the send finishing resumes the receive
/// and wakes the poller. Every byte arrives, in order.
pub fn a_pooled_receive_at_its_hold_limit_fails_only_while_its_owner_must_release<P: Platform>(
    make: &dyn Fn() -> P,
) -> P {
    const SIZE: usize = 256;
    let half = (POOL_HOLD_LIMIT / 2) as usize;
    let p = make();
    let io = p.io();
    let (fd, mut peer) = tcp_pair_fd();
    // Twice the limit's worth of buffers, queued on the socket before the receive starts (a
    // platform may take all of it before the pause takes effect), and a third part sent once
    // the receive is paused, which only a resumed receive can deliver.
    let data = pattern_vec(0, 3 * POOL_HOLD_LIMIT as usize * SIZE);
    let (first, last) = data.split_at(2 * POOL_HOLD_LIMIT as usize * SIZE);
    peer.write_all(first).expect("peer write");
    let pool = io.create_pool(256, SIZE as u32).expect("pool");
    let mut recv = RecvStream::new(io, fd, pool).expect("recv");
    let mut peek = Context::from_waker(Waker::noop());
    let mut held: Vec<PooledBuf<&P::Io>> = Vec::new();
    let mut got = Vec::new();
    let start = std::time::Instant::now();
    loop {
        match recv.poll_next(&mut peek) {
            Poll::Ready(Some(Ok(buf))) => {
                got.extend_from_slice(&buf);
                held.push(buf);
            }
            Poll::Ready(Some(Err(e))) => {
                assert_eq!(e.kind(), ErrorKind::HoldLimit, "{e:?}");
                break;
            }
            Poll::Ready(None) => panic!("end of stream: the peer has not closed"),
            Poll::Pending => {
                assert!(
                    start.elapsed() < LIMIT,
                    "no hold-limit error with {} buffers held: the poll waits forever",
                    held.len()
                );
                p.park(Some(p.now() + std::time::Duration::from_millis(10)));
            }
        }
    }
    assert!(
        held.len() >= POOL_HOLD_LIMIT as usize,
        "paused only at the limit: {} held",
        held.len()
    );
    assert!(!recv.is_finished(), "the error is not final");
    assert!(recv.is_ready(), "a peek sees the error");
    assert!(
        matches!(recv.poll_next(&mut peek), Poll::Ready(Some(Err(e))) if e.kind() == ErrorKind::HoldLimit),
        "still at the limit: the error again"
    );

    // The owner keeps half + 1 and sends the rest behind 16 MiB to a peer that reads nothing
    // yet: that send cannot finish, so its buffers stay held.
    let (sink, mut sink_peer) = tcp_pair_fd();
    let mut gather = vec![SendBuf::from_vec(vec![7u8; BIG])];
    let forwarded: Vec<u8> = held[half + 1..].iter().flat_map(|b| b.to_vec()).collect();
    gather.extend(
        held.split_off(half + 1)
            .into_iter()
            .map(PooledBuf::into_send_buf),
    );
    let status = Rc::new(SendStatus::default());
    io.send_detached(sink, SendBufs::Gather(gather), &status)
        .expect("send");
    p.park(Some(p.now()));
    assert_eq!(status.in_flight(), 1, "the send waits for its peer");
    assert!(
        matches!(recv.poll_next(&mut peek), Poll::Ready(Some(Err(e))) if e.kind() == ErrorKind::HoldLimit),
        "half + 1 held by the owner: the send's buffers cannot resume it"
    );

    // Half held by the owner: the send's buffers will resume it, so the poll waits.
    held.remove(0);
    // (`is_ready` may say yes here: a peek may poll when a poll would wait.)
    assert!(recv.poll_next(&mut peek).is_pending(), "waits for the send");
    assert!(
        recv.poll_next(&mut peek).is_pending(),
        "nothing to hand out while the send is stuck"
    );
    peer.write_all(last).expect("peer write");
    p.park(Some(p.now()));
    assert!(
        recv.poll_next(&mut peek).is_pending(),
        "paused: the new data waits on the socket"
    );
    // The last poll before the wait registers the waker (a peek may replace it).
    let (flag, waker) = flag_waker();
    assert!(recv
        .poll_next(&mut Context::from_waker(&waker))
        .is_pending());
    let total = BIG + forwarded.len();
    let reader = std::thread::spawn(move || {
        let mut out = vec![0u8; total];
        sink_peer.read_exact(&mut out).expect("sink read");
        out
    });
    // The send finishes, its buffers go back, the receive resumes and its data wakes us.
    park_until(&p, || flag.woken.load(Ordering::SeqCst));
    let sunk = reader.join().expect("sink reader");
    park_until(&p, || status.in_flight() == 0);
    assert_eq!(status.take_error(), None);
    assert!(
        sunk[BIG..] == forwarded[..],
        "the forwarded buffers went out in order"
    );
    drop(held);
    while got.len() < data.len() {
        match recv.poll_next(&mut peek) {
            Poll::Ready(Some(Ok(buf))) => got.extend_from_slice(&buf),
            Poll::Ready(other) => panic!(
                "after {} of {} bytes: {:?}",
                got.len(),
                data.len(),
                other.map(|r| r.map(|b| b.len()))
            ),
            Poll::Pending => {
                assert!(start.elapsed() < LIMIT, "the rest never arrived");
                p.park(Some(p.now() + std::time::Duration::from_millis(10)));
            }
        }
    }
    assert!(got == data, "bytes lost, duplicated or reordered");
    drop(recv);
    block_on(&p, close(io, sink));
    block_on(&p, close(io, fd));
    p
}
