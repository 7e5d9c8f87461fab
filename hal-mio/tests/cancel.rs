//! Cancellation: operations dropped at random points (queued on an fd, registered, completed
//! but not yet polled, timers, deferred work) free their buffers exactly once, at once, and
//! never disturb the operations that remain.

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use seastar_hal::buf::{IoBuf, IoBufMut};
use seastar_hal::io::{complete_read, IoDriver, Op};
use seastar_hal::Platform;
use seastar_hal_mio::{MioDriver, MioPlatform};

/// A buffer that records how many times it was dropped, by id.
struct Tracked {
    v: Vec<u8>,
    id: usize,
    drops: Rc<RefCell<Vec<u32>>>,
}

impl Tracked {
    fn new(drops: &Rc<RefCell<Vec<u32>>>, v: Vec<u8>) -> Self {
        let mut d = drops.borrow_mut();
        d.push(0);
        Tracked {
            v,
            id: d.len() - 1,
            drops: drops.clone(),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.borrow_mut()[self.id] += 1;
    }
}

// SAFETY: delegates to the inner Vec, whose heap allocation does not move when `Tracked`
// moves and is not reallocated through `&self`.
unsafe impl IoBuf for Tracked {
    fn stable_ptr(&self) -> *const u8 {
        self.v.stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.v.bytes_init()
    }
    fn bytes_total(&self) -> usize {
        self.v.bytes_total()
    }
}

// SAFETY: delegates to the inner Vec (same allocation as `stable_ptr`).
unsafe impl IoBufMut for Tracked {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.v.stable_mut_ptr()
    }
    unsafe fn set_init(&mut self, len: usize) {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { self.v.set_init(len) }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type TOp<'a> = Op<Tracked, &'a MioDriver>;
type UOp<'a> = Op<(), &'a MioDriver>;

/// Operations whose outcome is not checked: they exist to be cancelled.
enum Noise<'a> {
    Buf(TOp<'a>),
    Unit(UOp<'a>),
}

fn drive(p: &MioPlatform, seed: u64) {
    const STREAM: u64 = 192 << 10;
    const STEPS: usize = 4000;
    let io = p.io();
    let (c1, s1) = pair(p); // the checked stream: c1 -> s1
    let (c2, s2) = pair(p); // noise in both directions
    let drops = Rc::new(RefCell::new(Vec::new()));
    let mut rng = Rng(seed);
    let (_flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);

    let mut recvs: VecDeque<TOp<'_>> = VecDeque::new();
    let mut send: Option<(TOp<'_>, u64)> = None; // one at a time keeps the stream ordered
    let mut noise: Vec<Noise<'_>> = Vec::new();
    let mut sent: u64 = 0; // bytes the kernel accepted on c1
    let mut seen: u64 = 0; // bytes handed out by completed receives on s1
    let mut cancelled = 0usize;
    let mut cancelled_checked = 0usize;

    let drop_now = |drops: &Rc<RefCell<Vec<u32>>>, before: usize| {
        // Cancelling a readiness op frees its buffer at once, exactly once.
        let d = drops.borrow();
        assert!(d[before..].iter().all(|&n| n <= 1), "double free");
    };

    let mut step = 0;
    let t0 = std::time::Instant::now();
    while step < STEPS || seen < STREAM {
        assert!(
            t0.elapsed() < LIMIT,
            "stress did not finish (seen {seen} of {STREAM})"
        );
        step += 1;
        let winding_down = step >= STEPS;
        match rng.below(12) {
            0 | 1 if recvs.len() < 6 => {
                let cap = 1 + rng.below(700) as usize;
                let buf = Tracked::new(&drops, Vec::with_capacity(cap));
                recvs.push_back(Op::recv(io, s1, buf).map_err(|(e, _)| e).expect("recv"));
            }
            2 if send.is_none() && sent < STREAM => {
                let len = (1 + rng.below(8192)).min(STREAM - sent);
                let buf = Tracked::new(&drops, pattern_vec(sent, len as usize));
                let op = Op::send(io, c1, buf).map_err(|(e, _)| e).expect("send");
                send = Some((op, sent));
            }
            3 | 4 if !winding_down && noise.len() < 24 => {
                let op = match rng.below(6) {
                    0 => Noise::Unit(
                        Op::timeout(io, p.now() + Duration::from_micros(rng.below(20_000)))
                            .expect("timeout"),
                    ),
                    1 => Noise::Unit(Op::nop(io).expect("nop")),
                    2 => {
                        let buf =
                            Tracked::new(&drops, Vec::with_capacity(1 + rng.below(4096) as usize));
                        Noise::Buf(Op::recv(io, s2, buf).map_err(|(e, _)| e).expect("recv"))
                    }
                    3 => {
                        let buf =
                            Tracked::new(&drops, vec![0xAB; 1 + rng.below(64 << 10) as usize]);
                        Noise::Buf(Op::send(io, c2, buf).map_err(|(e, _)| e).expect("send"))
                    }
                    4 => {
                        let buf =
                            Tracked::new(&drops, vec![0xCD; 1 + rng.below(32 << 10) as usize]);
                        Noise::Buf(Op::send(io, s2, buf).map_err(|(e, _)| e).expect("send"))
                    }
                    _ => {
                        let buf =
                            Tracked::new(&drops, Vec::with_capacity(1 + rng.below(4096) as usize));
                        Noise::Buf(Op::recv(io, c2, buf).map_err(|(e, _)| e).expect("recv"))
                    }
                };
                noise.push(op);
            }
            5 | 6 if !noise.is_empty() => {
                // Cancel a noise op wherever it is: queued, registered, completed, timer...
                let i = rng.below(noise.len() as u64) as usize;
                let before = drops.borrow().len();
                let in_flight = io.in_flight();
                drop(noise.swap_remove(i));
                cancelled += 1;
                assert_eq!(
                    io.in_flight(),
                    in_flight - 1,
                    "cancel releases the id at once"
                );
                drop_now(&drops, before);
            }
            7 if sent == seen && send.is_none() && !recvs.is_empty() => {
                // Quiescent: every byte sent was already seen, so no receive holds data and
                // cancelling one must not lose any. Cancel one from anywhere in the queue.
                let i = rng.below(recvs.len() as u64) as usize;
                let op = recvs.remove(i).expect("index");
                drop(op);
                cancelled_checked += 1;
                assert!(drops.borrow().iter().all(|&n| n <= 1), "double free");
            }
            _ => {
                let deadline = if rng.below(4) == 0 {
                    p.now() + Duration::from_millis(1)
                } else {
                    p.now()
                };
                p.park(Some(deadline));
            }
        }

        // Receives complete in submission order: the completed ones are a prefix.
        let mut blocked = false;
        let mut i = 0;
        while i < recvs.len() {
            match recvs[i].poll_complete(&mut cx) {
                Poll::Pending => blocked = true,
                Poll::Ready((c, mut buf)) => {
                    assert!(!blocked, "a later receive completed before an earlier one");
                    let n = complete_read(&c, &mut buf.v).expect("recv on the checked stream");
                    assert!(n > 0, "unexpected EOF");
                    for (k, &b) in buf.v[..n].iter().enumerate() {
                        assert_eq!(
                            b,
                            pattern(seen + k as u64),
                            "byte {} corrupted",
                            seen + k as u64
                        );
                    }
                    seen += n as u64;
                    recvs.remove(i);
                    continue;
                }
            }
            i += 1;
        }
        assert!(seen <= sent);
        if let Some((op, at)) = &mut send {
            if let Poll::Ready((c, _buf)) = op.poll_complete(&mut cx) {
                let n = c.result.expect("send on the checked stream") as u64;
                assert_eq!(*at, sent);
                sent += n;
                send = None;
            }
        }
        noise.retain_mut(|op| match op {
            Noise::Buf(o) => o.poll_complete(&mut cx).is_pending(),
            Noise::Unit(o) => o.poll_complete(&mut cx).is_pending(),
        });
        if winding_down && recvs.is_empty() && seen < STREAM {
            let buf = Tracked::new(&drops, Vec::with_capacity(4096));
            recvs.push_back(Op::recv(io, s1, buf).map_err(|(e, _)| e).expect("recv"));
        }
    }
    assert_eq!(seen, STREAM);
    assert!(
        cancelled > 30,
        "the schedule cancelled enough ({cancelled})"
    );
    assert!(
        cancelled_checked > 10,
        "enough receives of the checked stream were cancelled ({cancelled_checked})"
    );
    drop(noise);
    drop(recvs);
    drop(send);
    assert_eq!(io.in_flight(), 0);
    for fd in [c1, s1, c2, s2] {
        run(p, close(io, fd));
    }
    let d = drops.borrow();
    assert!(
        d.iter().all(|&n| n == 1),
        "every buffer dropped exactly once"
    );
    assert!(d.len() > 500, "enough buffers went through ({})", d.len());
}

#[test]
fn cancel_at_random_points_keeps_remaining_ops_intact() {
    let p = MioPlatform::new().expect("platform");
    for seed in [0x9E37_79B9_7F4A_7C15, 42, 0xDEAD_BEEF] {
        drive(&p, seed);
    }
    let s = p.stats();
    assert!(s.cancelled > 150, "{s:?}");
    assert!(s.would_block > 0, "{s:?}");
}

#[test]
fn cancel_of_a_completed_but_unpolled_op_frees_the_buffer() {
    let p = MioPlatform::new().expect("platform");
    let io = p.io();
    let (c, s) = pair(&p);
    let drops = Rc::new(RefCell::new(Vec::new()));
    run(&p, send_all(io, c, b"data", 16));
    let (_flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    // The data is there: recv completes inside submit, but the result is only reported
    // through poll_op. Drop it unpolled: its data is gone with it (as on io_uring), its
    // buffer is freed once.
    let op = Op::recv(io, s, Tracked::new(&drops, Vec::with_capacity(16)))
        .map_err(|(e, _)| e)
        .expect("submit");
    assert_eq!(io.in_flight(), 1);
    drop(op);
    assert_eq!(*drops.borrow(), [1]);
    assert_eq!(io.in_flight(), 0);
    // A pending one, queued on the fd, then cancelled: the next receive gets the next bytes.
    let mut op = Op::recv(io, s, Tracked::new(&drops, Vec::with_capacity(16)))
        .map_err(|(e, _)| e)
        .expect("submit");
    assert!(op.poll_complete(&mut cx).is_pending());
    p.park(Some(p.now()));
    drop(op);
    assert_eq!(*drops.borrow(), [1, 1]);
    run(&p, send_all(io, c, b"next", 16));
    assert_eq!(run(&p, recv_exact(io, s, 4, 16)), b"next");
    run(&p, close(io, c));
    run(&p, close(io, s));
}
