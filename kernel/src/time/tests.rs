//! The timer futures on a real executor over the simulated HAL (virtual time: the core parks
//! until the wheel's next deadline and the clock jumps there).

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::{poll_fn, Future};
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use seastar_hal::sim::SimPlatform;
use seastar_hal::Instant;

use super::*;
use crate::executor::{self, block_on, now};
use crate::sync::test_util::CountingWaker;
use crate::task::spawn;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn t(d: Duration) -> Instant {
    Instant::ZERO + d
}

fn run<F: Future>(f: F) -> F::Output {
    block_on(SimPlatform::new(), f).expect("no executor already running")
}

fn pending_timers() -> usize {
    executor::try_with_timers(|w| w.len()).expect("inside an executor")
}

/// Poll `f` once with the task's waker.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

#[test]
fn sleep_ends_exactly_at_its_deadline_in_virtual_time() {
    run(async {
        let start = now();
        sleep(Duration::from_secs(3600)).await;
        assert_eq!(now(), start + Duration::from_secs(3600));
        sleep(Duration::from_nanos(1_537)).await;
        assert_eq!(
            now(),
            start + Duration::from_secs(3600) + Duration::from_nanos(1_537)
        );
        assert_eq!(pending_timers(), 0);
    });
}

#[test]
fn elapsed_sleep_is_ready_without_registering() {
    run(async {
        let mut s = sleep(Duration::ZERO);
        assert!(s.is_elapsed());
        assert_eq!(poll_once(&mut s).await, Poll::Ready(()));
        let mut past = sleep_until(Instant::ZERO);
        assert_eq!(poll_once(&mut past).await, Poll::Ready(()));
        assert_eq!(pending_timers(), 0);
    });
}

#[test]
fn concurrent_sleeps_wake_in_deadline_order_at_their_deadlines() {
    let log = Rc::new(RefCell::new(Vec::new()));
    run({
        let log = log.clone();
        async move {
            let handles: Vec<_> = [30u64, 10, 20, 10, 5000]
                .into_iter()
                .enumerate()
                .map(|(i, d)| {
                    let log = log.clone();
                    spawn(async move {
                        sleep(ms(d)).await;
                        log.borrow_mut().push((i, now()));
                    })
                })
                .collect();
            for h in handles {
                h.await.expect("task completes");
            }
        }
    });
    assert_eq!(
        *log.borrow(),
        vec![
            (1, t(ms(10))),
            (3, t(ms(10))),
            (2, t(ms(20))),
            (0, t(ms(30))),
            (4, t(ms(5000)))
        ]
    );
}

#[test]
fn dropping_a_registered_sleep_cancels_its_timer() {
    run(async {
        let mut s = sleep(ms(10));
        assert!(poll_once(&mut s).await.is_pending());
        assert_eq!(pending_timers(), 1);
        drop(s);
        assert_eq!(pending_timers(), 0);
    });
}

#[test]
fn repoll_keeps_or_replaces_the_waker() {
    run(async {
        let ((a, wa), (b, wb)) = (CountingWaker::new(), CountingWaker::new());
        let mut s = sleep(ms(10));
        let mut s = Pin::new(&mut s);
        assert!(s.as_mut().poll(&mut Context::from_waker(&wa)).is_pending());
        // Same waker: nothing changes. Another waker: it replaces the stored one.
        assert!(s.as_mut().poll(&mut Context::from_waker(&wa)).is_pending());
        assert!(s.as_mut().poll(&mut Context::from_waker(&wb)).is_pending());
        assert_eq!(pending_timers(), 1, "re-polls reuse the timer");
        sleep(ms(20)).await;
        assert_eq!((a.wakes(), b.wakes()), (0, 1));
        assert!(s.as_mut().poll(&mut Context::from_waker(&wb)).is_ready());
    });
}

#[test]
fn reset_rearms_in_place() {
    run(async {
        let mut s = sleep(ms(10));
        assert!(poll_once(&mut s).await.is_pending());
        s.reset(t(ms(50)));
        assert_eq!(pending_timers(), 1);
        s.await;
        assert_eq!(now(), t(ms(50)));

        // A completed sleep can be reset and awaited again.
        let mut s = sleep(ms(1));
        (&mut s).await;
        s.reset(now() + ms(7));
        s.await;
        assert_eq!(now(), t(ms(58)));
    });
}

#[test]
fn sleep_until_max_never_registers_or_completes() {
    run(async {
        let out = timeout(ms(5), sleep_until(Instant::MAX)).await;
        assert_eq!(out, Err(Elapsed));
        let mut s = sleep_until(Instant::MAX);
        assert!(poll_once(&mut s).await.is_pending());
        assert_eq!(pending_timers(), 0);
    });
}

#[test]
#[allow(clippy::async_yields_async)] // hands the registered `Sleep` out on purpose
fn sleep_dropped_outside_the_executor_is_harmless() {
    let s = run(async {
        let mut s = sleep(ms(10));
        assert!(poll_once(&mut s).await.is_pending());
        s
    });
    drop(s);
}

#[test]
#[allow(clippy::async_yields_async)] // hands the registered `Sleep` out on purpose
fn a_stale_sleep_cannot_cancel_another_executors_timer() {
    let stale = run(async {
        let mut s = sleep(ms(10));
        assert!(poll_once(&mut s).await.is_pending());
        s
    });
    run(async move {
        // Registered in the same wheel slot and generation as `stale`'s, in a new wheel.
        let mut mine = sleep(ms(10));
        assert!(poll_once(&mut mine).await.is_pending());
        drop(stale);
        assert_eq!(pending_timers(), 1);
        mine.await;
        assert_eq!(now(), t(ms(10)));
    });
}

#[test]
#[allow(clippy::async_yields_async)] // hands the registered `Sleep` out on purpose
fn a_sleep_carried_to_a_later_executor_is_not_taken_for_fired() {
    // Its key names the first executor's wheel, where it is gone; the second wheel did not
    // issue it, so the sleep waits for its deadline on the second core's clock.
    let carried = run(async {
        let mut s = sleep(ms(10));
        assert!(poll_once(&mut s).await.is_pending());
        s
    });
    run(async move {
        let mut carried = carried;
        assert!(poll_once(&mut carried).await.is_pending());
        assert_eq!(pending_timers(), 1);
        carried.await;
        assert_eq!(now(), t(ms(10)));
    });
}

#[test]
fn a_fired_sleep_is_ready_when_polled_again() {
    run(async {
        let mut s = sleep(ms(5));
        assert!(poll_once(&mut s).await.is_pending());
        // A second timer, later: the core jumps to 5 ms and fires `s`'s timer, then to 7 ms.
        sleep(ms(7)).await;
        assert_eq!(pending_timers(), 0);
        assert!(poll_once(&mut s).await.is_ready());
    });
}

#[test]
fn timeout_passes_the_output_through() {
    run(async {
        assert_eq!(timeout(ms(10), async { 7 }).await, Ok(7));
        assert_eq!(pending_timers(), 0, "a ready future never arms the timer");
        let slow_enough = timeout(ms(10), async {
            sleep(ms(4)).await;
            8
        });
        assert_eq!(slow_enough.await, Ok(8));
        assert_eq!(now(), t(ms(4)));
        assert_eq!(pending_timers(), 0, "the unused timer was cancelled");
    });
}

#[test]
fn timeout_elapses_exactly_at_the_deadline_and_drops_the_future() {
    struct Flag(Rc<RefCell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            *self.0.borrow_mut() = true;
        }
    }
    run(async {
        let dropped = Rc::new(RefCell::new(false));
        let flag = Flag(dropped.clone());
        let out = timeout_at(t(ms(25)), async move {
            let _flag = flag;
            sleep(ms(100)).await;
        })
        .await;
        assert_eq!(out, Err(Elapsed));
        assert_eq!(now(), t(ms(25)));
        assert!(*dropped.borrow());
        assert_eq!(pending_timers(), 0, "the inner sleep was cancelled");
        assert_eq!(alloc::format!("{}", Elapsed), "deadline has elapsed");
    });
}

#[test]
fn timeout_wraps_non_unpin_futures() {
    run(async {
        let fut = async {
            let local = [0u8; 4];
            sleep(ms(1)).await;
            local.len()
        };
        let out = timeout(ms(5), fut).await;
        assert_eq!(out, Ok(4));
        let t = timeout(ms(5), core::future::ready(1));
        assert_eq!(t.deadline(), now() + ms(5));
        assert_eq!(t.into_inner().await, 1);
    });
}

#[test]
fn interval_ticks_on_schedule() {
    run(async {
        let mut iv = interval(ms(10));
        assert_eq!(iv.missed_tick_behavior(), MissedTickBehavior::Skip);
        let mut ticks = Vec::new();
        for _ in 0..4 {
            ticks.push(iv.tick().await);
            assert_eq!(now(), *ticks.last().expect("pushed"));
        }
        assert_eq!(ticks, [t(ms(0)), t(ms(10)), t(ms(20)), t(ms(30))]);
        assert!(pending_timers() <= 1);
    });
}

/// Ticks of an interval with `behavior` when the core stalls for 35 ms after the tick at 10.
fn ticks_after_stall(behavior: MissedTickBehavior) -> Vec<(Instant, Instant)> {
    let platform = SimPlatform::new();
    let clock = platform.clock().clone();
    block_on(platform, async move {
        let mut iv = interval_at(t(ms(10)), ms(10));
        iv.set_missed_tick_behavior(behavior);
        assert_eq!(iv.tick().await, t(ms(10)));
        clock.advance(ms(35)); // a stall: now = 45 ms
        let mut out = Vec::new();
        for _ in 0..4 {
            let scheduled = iv.tick().await;
            out.push((scheduled, now()));
        }
        out
    })
    .expect("no executor already running")
}

#[test]
fn missed_ticks_burst() {
    assert_eq!(
        ticks_after_stall(MissedTickBehavior::Burst),
        [
            (t(ms(20)), t(ms(45))),
            (t(ms(30)), t(ms(45))),
            (t(ms(40)), t(ms(45))),
            (t(ms(50)), t(ms(50)))
        ]
    );
}

#[test]
fn missed_ticks_skip() {
    assert_eq!(
        ticks_after_stall(MissedTickBehavior::Skip),
        [
            (t(ms(20)), t(ms(45))),
            (t(ms(50)), t(ms(50))),
            (t(ms(60)), t(ms(60))),
            (t(ms(70)), t(ms(70)))
        ]
    );
}

#[test]
fn missed_ticks_delay() {
    assert_eq!(
        ticks_after_stall(MissedTickBehavior::Delay),
        [
            (t(ms(20)), t(ms(45))),
            (t(ms(55)), t(ms(55))),
            (t(ms(65)), t(ms(65))),
            (t(ms(75)), t(ms(75)))
        ]
    );
}

#[test]
fn late_but_not_missed_tick_keeps_the_schedule() {
    let platform = SimPlatform::new();
    let clock = platform.clock().clone();
    let ticks = block_on(platform, async move {
        let mut iv = interval(ms(10));
        iv.set_missed_tick_behavior(MissedTickBehavior::Delay);
        iv.tick().await;
        clock.advance(ms(13));
        let a = iv.tick().await; // due at 10, noticed at 13: on schedule
        let b = iv.tick().await;
        (a, b, now())
    })
    .expect("no executor already running");
    assert_eq!(ticks, (t(ms(10)), t(ms(20)), t(ms(20))));
}

#[test]
fn interval_reset_restarts_the_schedule() {
    run(async {
        let mut iv = interval(ms(10));
        iv.tick().await;
        sleep(ms(3)).await;
        iv.reset();
        assert_eq!(iv.tick().await, t(ms(13)));
        iv.reset_immediately();
        assert_eq!(iv.tick().await, t(ms(13)));
        assert_eq!(iv.tick().await, t(ms(23)));
        assert_eq!(
            interval_at(now(), Duration::ZERO).period(),
            Duration::from_nanos(1)
        );
    });
}

#[test]
fn many_tasks_with_timeouts_and_intervals() {
    let fired = Rc::new(RefCell::new(0u32));
    run({
        let fired = fired.clone();
        async move {
            let mut hs = Vec::new();
            for i in 0..50u64 {
                let fired = fired.clone();
                hs.push(spawn(async move {
                    let mut iv = interval(Duration::from_micros(100 + i));
                    for _ in 0..5 {
                        let at = iv.tick().await;
                        assert_eq!(now(), at);
                    }
                    let slow = timeout(
                        Duration::from_micros(i * 7),
                        sleep(Duration::from_micros(300)),
                    );
                    if slow.await.is_err() {
                        *fired.borrow_mut() += 1;
                    }
                }));
            }
            for h in hs {
                h.await.expect("task completes");
            }
            assert_eq!(pending_timers(), 0);
        }
    });
    // Timeouts shorter than the 300 µs sleep: i * 7 < 300, i.e. i <= 42.
    assert_eq!(*fired.borrow(), 43);
}

#[test]
fn a_sleep_is_24_bytes() {
    // Every timeout embeds a sleep and the benchmarks box one per timer: the wheel id in a
    // key is never zero, so `Option<TimerKey>` needs no tag of its own.
    use core::mem::size_of;
    assert_eq!(
        size_of::<Option<wheel::TimerKey>>(),
        size_of::<wheel::TimerKey>()
    );
    assert_eq!(size_of::<Sleep>(), 24);
}
