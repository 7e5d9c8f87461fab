//! The timer workloads of the `timers_1m` criterion group (`benches/kernel.rs`) and of the
//! `timer_cost` example (the same loops under callgrind), written once so both measure the
//! same thing, ours and tokio's through the same generic code.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::time::Duration;

use seastar_kernel::time::wheel::{TimerKey, TimerWheel};

/// Deadlines spread over [1 s, 2 s) ahead in a scrambled order.
pub fn spread(i: u64) -> Duration {
    Duration::from_nanos(1_000_000_000 + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 34))
}

/// Deadlines within about 1 ms, scrambled.
pub fn near(i: u64) -> Duration {
    Duration::from_nanos(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44)
}

/// Poll every future once with a waker that does nothing (registers each timer); how many
/// were ready.
pub fn poll_once_all<F: Future + ?Sized>(futures: &mut [Pin<Box<F>>]) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    let mut ready = 0;
    for f in futures.iter_mut() {
        if f.as_mut().poll(&mut cx).is_ready() {
            ready += 1;
        }
    }
    ready
}

/// Poll a future once with a waker that does nothing (registers a timer), and hand it back.
pub fn registered<F: Future + ?Sized>(mut future: Pin<Box<F>>) -> Pin<Box<F>> {
    let mut cx = Context::from_waker(Waker::noop());
    let _ = future.as_mut().poll(&mut cx);
    future
}

/// Create `n` boxed sleeps with `sleep` (deadlines from [`spread`]), register each (one poll),
/// drop them all; how many were ready (none should be).
pub fn insert_cancel<S: Future>(n: u64, sleep: impl Fn(Duration) -> S) -> usize {
    let mut sleeps: Vec<Pin<Box<S>>> = (0..n).map(|i| Box::pin(sleep(spread(i)))).collect();
    let ready = poll_once_all(&mut sleeps);
    drop(sleeps);
    ready
}

/// Create `n` boxed sleeps with `sleep` (deadlines from [`near`]), each registered as soon as
/// it is created, sleep 2 ms past them all, poll each once more; how many were ready (all
/// should be). Registered at creation: created all first, most would already be due at their
/// first poll (creating 1M takes far longer than 1 ms), and a sleep that finds its deadline
/// passed completes without registering (ours does that; tokio's registers anyway, its
/// driver's time standing still until it parks). Run tokio's `unconstrained`: its
/// cooperative budget (128 per task poll) would make all but the first 128 final polls return
/// `Pending` without looking at their timers.
pub async fn insert_fire<S: Future>(n: u64, sleep: impl Fn(Duration) -> S) -> usize {
    let mut sleeps: Vec<Pin<Box<S>>> = (0..n)
        .map(|i| registered(Box::pin(sleep(near(i)))))
        .collect();
    sleep(Duration::from_millis(2)).await;
    poll_once_all(&mut sleeps)
}

/// Our wheel alone (no executor, no wakers, the deadlines handed in): insert `n` timers with
/// deadlines from [`spread`] into `wheel`, then cancel them all (`fire` false; their keys are
/// kept in `keys`, whose capacity the caller may reserve outside a timed part) or fire them
/// all with one `expire` past them; how many fired.
pub fn wheel_alone(
    wheel: &mut TimerWheel<u64>,
    keys: &mut Vec<TimerKey>,
    n: u64,
    fire: bool,
) -> u64 {
    let at = |i: u64| seastar_hal::Instant::from_nanos(spread(i).as_nanos() as u64);
    if fire {
        for i in 0..n {
            wheel.insert(at(i), i);
        }
        let mut fired = 0;
        wheel.expire(seastar_hal::Instant::MAX, |v| {
            black_box(v);
            fired += 1;
        });
        fired
    } else {
        keys.extend((0..n).map(|i| wheel.insert(at(i), i)));
        for key in keys.drain(..) {
            black_box(wheel.cancel(key));
        }
        0
    }
}
