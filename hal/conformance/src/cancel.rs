//! Cancellation: a dropped operation frees its buffer exactly once, no later than the driver
//! is done with it, and never disturbs the byte stream.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use seastar_hal::io::{complete_read, IoDriver, Op};
use seastar_hal::Platform;

use crate::harness::{
    block_on, close, flag_waker, pair, park_until, pattern, pattern_vec, recv_exact, send_all,
    LIMIT,
};
use crate::tracked::Tracked;

/// A receive that completed but was never polled frees its buffer on drop, at once (the
/// driver is done with it; its data goes with it); a pending one, dropped, frees its buffer
/// once the driver lets go, and the next receive gets the next bytes.
pub fn a_completed_but_unpolled_op_frees_its_buffer_on_drop<P: Platform>(
    make: &dyn Fn() -> P,
) -> P {
    let p = make();
    let io = p.io();
    let (c, s) = pair(&p);
    let drops = Rc::new(RefCell::new(Vec::new()));
    block_on(&p, send_all(io, c, b"data", 16));
    let op = Op::recv(io, s, Tracked::new(&drops, Vec::with_capacity(16)))
        .map_err(|(e, _)| e)
        .expect("submit");
    assert_eq!(io.in_flight(), 1);
    park_until(&p, || io.has_completion(op.id()));
    drop(op);
    assert_eq!(*drops.borrow(), [1], "driver already done: freed at once");
    assert_eq!(io.in_flight(), 0);

    let (_flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    let mut op = Op::recv(io, s, Tracked::new(&drops, Vec::with_capacity(16)))
        .map_err(|(e, _)| e)
        .expect("submit");
    assert!(op.poll_complete(&mut cx).is_pending());
    p.park(Some(p.now()));
    drop(op);
    park_until(&p, || io.in_flight() == 0);
    assert_eq!(*drops.borrow(), [1, 1], "every buffer freed exactly once");
    block_on(&p, send_all(io, c, b"next", 16));
    assert_eq!(block_on(&p, recv_exact(io, s, 4, 16)), b"next");
    block_on(&p, close(io, c));
    block_on(&p, close(io, s));
    p
}

/// Operations dropped at random points (queued, submitted, completed but not yet polled;
/// receives, sends, timeouts, nops) over three seeds: every buffer is freed exactly once,
/// and a checked stream running alongside loses, duplicates or corrupts no byte.
pub fn cancel_at_random_points_keeps_remaining_ops_intact<P: Platform>(make: &dyn Fn() -> P) -> P {
    cancel_at_random_points(make, false)
}

/// [`cancel_at_random_points_keeps_remaining_ops_intact`]; with `readiness`, also what a
/// readiness driver promises beyond the contract: every drop releases its id at once, and
/// up to six concurrent receives on the checked socket complete in submission order.
pub fn cancel_at_random_points<P: Platform>(make: &dyn Fn() -> P, readiness: bool) -> P {
    let p = make();
    for seed in [0x9E37_79B9_7F4A_7C15, 42, 0xDEAD_BEEF] {
        drive(&p, seed, readiness);
    }
    p
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

type TOp<'a, D> = Op<Tracked, &'a D>;
type UOp<'a, D> = Op<(), &'a D>;

/// Operations whose outcome is not checked: they exist to be cancelled.
enum Noise<'a, D: IoDriver> {
    Buf(TOp<'a, D>),
    Unit(UOp<'a, D>),
}

fn drive<P: Platform>(p: &P, seed: u64, readiness: bool) {
    const STREAM: u64 = 192 << 10;
    const STEPS: usize = 4000;
    let io = p.io();
    let (c1, s1) = pair(p); // the checked stream: c1 -> s1
    let (c2, s2) = pair(p); // noise in both directions
    let drops = Rc::new(RefCell::new(Vec::new()));
    let mut rng = Rng(seed);
    let (_flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);

    let mut recvs: VecDeque<TOp<'_, P::Io>> = VecDeque::new();
    // One at a time keeps the stream ordered: (the op, where it starts, its length).
    let mut send: Option<(TOp<'_, P::Io>, u64, u64)> = None;
    let mut noise: Vec<Noise<'_, P::Io>> = Vec::new();
    let mut sent: u64 = 0; // bytes the kernel accepted on c1
    let mut seen: u64 = 0; // bytes handed out by completed receives on s1
    let mut cancelled = 0usize;
    let mut cancelled_checked = 0usize;

    let at_most_once = |drops: &Rc<RefCell<Vec<u32>>>, before: usize| {
        // A cancelled op's buffer is freed at most once (a readiness driver frees it at once;
        // a completion driver once the platform lets go).
        let d = drops.borrow();
        assert!(d[before..].iter().all(|&n| n <= 1), "double free");
    };

    // Concurrent receives on one socket complete in submission order on a readiness driver;
    // the contract does not promise it (io_uring may complete them out of order), so a
    // completion driver gets one receive of the checked stream at a time.
    // The lone receive takes bigger bites, so the stream still drains often enough for the
    // quiescent cancels below.
    let (max_recvs, recv_cap) = if readiness { (6, 700) } else { (1, 8192) };
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
            0 | 1 if recvs.len() < max_recvs => {
                let cap = 1 + rng.below(recv_cap) as usize;
                let buf = Tracked::new(&drops, Vec::with_capacity(cap));
                recvs.push_back(Op::recv(io, s1, buf).map_err(|(e, _)| e).expect("recv"));
            }
            2 if send.is_none() && sent < STREAM => {
                let len = (1 + rng.below(8192)).min(STREAM - sent);
                let buf = Tracked::new(&drops, pattern_vec(sent, len as usize));
                let op = Op::send(io, c1, buf).map_err(|(e, _)| e).expect("send");
                send = Some((op, sent, len));
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
                if readiness {
                    assert_eq!(
                        io.in_flight(),
                        in_flight - 1,
                        "cancel releases the id at once"
                    );
                }
                at_most_once(&drops, before);
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
        // A completion driver may hand out received bytes before their send's completion
        // was polled: at most the send in flight's bytes.
        let sending = send.as_ref().map_or(0, |(_, _, len)| *len);
        assert!(seen <= sent + sending, "received bytes nobody sent");
        if let Some((op, at, _)) = &mut send {
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
        "enough receives of the checked stream were cancelled ({cancelled_checked}; {cancelled} others)"
    );
    drop(noise);
    drop(recvs);
    drop(send);
    if readiness {
        assert_eq!(io.in_flight(), 0, "cancel releases the ids at once");
    }
    park_until(p, || io.in_flight() == 0);
    for fd in [c1, s1, c2, s2] {
        block_on(p, close(io, fd));
    }
    let d = drops.borrow();
    assert!(
        d.iter().all(|&n| n == 1),
        "every buffer dropped exactly once"
    );
    assert!(d.len() > 500, "enough buffers went through ({})", d.len());
}
