//! What the mio driver does beyond the contract checks of `conformance.rs`: its counters
//! after those checks, cancellation that completes inside the drop, and `close` failing the
//! operations still queued on the descriptor (a readiness driver keeps them itself).

use std::io::Read;
use std::net::TcpStream;
use std::task::{Context, Poll};
use std::time::Duration;

use seastar_hal::io::{IoDriver, MultiOp, Op};
use seastar_hal::{ErrorKind, Platform};
use seastar_hal_conformance::harness::{
    block_on, close, flag_waker, listener, pair, recv_once, LIMIT,
};
use seastar_hal_conformance::ops;
use seastar_hal_mio::MioPlatform;

fn platform() -> MioPlatform {
    MioPlatform::new().expect("platform")
}

#[test]
fn a_nop_is_one_submission_one_completion_one_park() {
    let s = ops::nop_completes_at_the_next_park(&platform).stats();
    assert_eq!((s.submitted, s.completed, s.parks), (1, 1, 1));
}

#[test]
fn every_park_polls_once() {
    assert_eq!(ops::park_honours_its_deadline(&platform).stats().polls, 3);
}

#[test]
fn a_large_transfer_goes_through_the_would_block_paths() {
    let st = ops::large_transfer_both_ways_every_byte_checked(&platform).stats();
    assert!(
        st.would_block > 0,
        "the EAGAIN paths were exercised: {st:?}"
    );
}

/// Connections a multishot accept took but never handed out are closed by the drop itself:
/// cancelling releases the operation at once, with no park.
#[test]
fn dropping_a_multishot_accept_closes_its_queued_connections_at_once() {
    let p = platform();
    let io = p.io();
    let (lfd, addr) = listener();
    let mut multi = MultiOp::accept_multishot(io, lfd).expect("submit");
    let (_flag, waker) = flag_waker();
    assert!(multi
        .poll_next(&mut Context::from_waker(&waker))
        .is_pending());
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
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).expect("read"), 0, "queued fd was closed");
    }
    block_on(&p, close(io, lfd));
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
    block_on(&p, close(io, s));
    match pending.poll_complete(&mut cx) {
        Poll::Ready((c, _)) => assert_eq!(c.result.expect_err("x").kind(), ErrorKind::Canceled),
        Poll::Pending => panic!("recv on a closed fd still pending"),
    }
    // The client sees the close as end of stream.
    assert!(block_on(&p, recv_once(io, c, 8)).expect("recv").is_empty());
    block_on(&p, close(io, c));
}
