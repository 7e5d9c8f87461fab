//! Cancellation on io_uring: buffers of dropped in-flight operations are freed exactly once,
//! only after the kernel is done with them (not at the drop, as a readiness driver may), and
//! data is never corrupted. The contract's own cancellation checks are in `conformance.rs`.

mod common;

use std::cell::Cell;
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{block_on, park_until, platform, tcp_pair};
use seastar_hal::io::{IoDriver, Op, RawOp};
use seastar_hal::Platform;
use seastar_hal_linux::{UringDriver, UringPlatform};

/// The byte at `offset` of the test stream: values 0..251, so 0xFF (the unwritten filler)
/// never occurs, and each byte is the one before plus one (mod 251).
fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// A receive buffer that counts its drops.
struct Tracked {
    data: Vec<u8>,
    drops: Rc<Cell<usize>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

fn submit_recv<'a>(
    p: &'a UringPlatform,
    fd: RawFd,
    drops: &Rc<Cell<usize>>,
) -> Op<Tracked, &'a UringDriver> {
    let t = Tracked {
        data: vec![0xFF; 4096],
        drops: drops.clone(),
    };
    // SAFETY: the pointer is into `t.data`'s heap allocation, which does not move when `t`
    // moves into the Op (or, after a cancel, into the driver), and nothing touches it until
    // the operation is finished.
    unsafe {
        Op::submit_with(p.io(), t, |t| RawOp::Recv {
            fd,
            ptr: t.data.as_mut_ptr(),
            len: t.data.len(),
        })
    }
    .map_err(|(e, _)| e)
    .expect("submit recv")
}

/// `n` received bytes must be a contiguous run of the stream, and nothing past them written.
fn check(t: &Tracked, n: usize) {
    for w in t.data[..n].windows(2) {
        assert_eq!(
            w[1],
            ((u16::from(w[0]) + 1) % 251) as u8,
            "received bytes are not a contiguous run of the stream"
        );
    }
    assert!(
        t.data[n..].iter().all(|&b| b == 0xFF),
        "bytes past the reported count were written"
    );
}

fn writer(mut peer: TcpStream, stop: Arc<AtomicBool>, chunk: usize, pause: Duration) {
    peer.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut off = 0u64;
    let mut buf = vec![0u8; chunk];
    while !stop.load(Ordering::Relaxed) {
        for (j, b) in buf.iter_mut().enumerate() {
            *b = pattern(off + j as u64);
        }
        match peer.write(&buf) {
            Ok(n) => off += n as u64,
            Err(_) => break, // we closed our end, or nobody read for 2 s
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

fn stress(iterations: usize, chunk: usize, pause: Duration, expect_effective: bool) {
    let p = platform();
    let (ours, peer) = tcp_pair();
    let fd = ours.as_raw_fd();
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let stop = stop.clone();
        std::thread::spawn(move || writer(peer, stop, chunk, pause))
    };
    let drops = Rc::new(Cell::new(0usize));
    let (mut created, mut completed, mut cancelled, mut bytes) = (0usize, 0usize, 0usize, 0usize);
    let mut cx = Context::from_waker(Waker::noop());
    for i in 0..iterations {
        let mut op = submit_recv(&p, fd, &drops);
        created += 1;
        // Drop at many points: before the SQE reaches the kernel, after it was submitted
        // (and maybe completed but not reaped), after a short wait...
        for _ in 0..(i % 4) {
            let wait = if i % 8 < 4 { 0 } else { 200 };
            p.park(Some(p.now() + Duration::from_micros(wait)));
        }
        let keep = i % 3 == 0;
        match op.poll_complete(&mut cx) {
            Poll::Ready((c, t)) => {
                let n = c.result.expect("recv ok") as usize;
                assert!(n > 0, "unexpected EOF");
                check(&t, n);
                completed += 1;
                bytes += n;
            }
            Poll::Pending if keep => {
                let (c, t) = block_on(&p, op);
                let n = c.result.expect("recv ok") as usize;
                assert!(n > 0, "unexpected EOF");
                check(&t, n);
                completed += 1;
                bytes += n;
            }
            Poll::Pending => {
                let before = drops.get();
                drop(op);
                // Its completion was not reaped (poll said Pending, and only park/flush reap),
                // so the driver must still hold the buffer.
                assert_eq!(drops.get(), before, "buffer freed before its completion");
                cancelled += 1;
            }
        }
    }
    park_until(&p, || p.io().in_flight() == 0);
    assert_eq!(drops.get(), created, "every buffer freed exactly once");
    let s = p.stats();
    println!("created {created} completed {completed} cancelled {cancelled} bytes {bytes}; {s:?}");
    assert_eq!(s.stale_cqes, 0);
    assert!(cancelled > 0 && completed > 0);
    assert_eq!(s.cancels, cancelled as u64);
    if expect_effective {
        // Some recvs were really waiting in the kernel when cancelled.
        assert!(
            s.cancels_effective > 0,
            "no cancellation hit a pending recv"
        );
    }
    stop.store(true, Ordering::Relaxed);
    drop(ours); // unread data: RST, the writer's next write fails
    w.join().expect("writer");
}

#[test]
fn dropping_in_flight_recvs_under_load_is_safe() {
    stress(1000, 8192, Duration::ZERO, false);
}

#[test]
fn dropping_in_flight_recvs_with_a_trickling_peer_is_safe() {
    stress(600, 300, Duration::from_micros(300), true);
}

#[test]
fn dropping_the_platform_frees_cancelled_buffers_after_the_kernel_lets_go() {
    let p = platform();
    let (ours, _peer) = tcp_pair();
    let drops = Rc::new(Cell::new(0usize));
    let op = submit_recv(&p, ours.as_raw_fd(), &drops);
    p.park(Some(p.now())); // the recv is in the kernel, waiting for data that never comes
    drop(op);
    assert_eq!(drops.get(), 0);
    assert_eq!(p.io().in_flight(), 1);
    drop(p);
    assert_eq!(drops.get(), 1, "freed once its cancellation completed");
}
