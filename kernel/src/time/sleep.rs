//! `sleep` and `sleep_until`.

use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use seastar_hal::Instant;

use super::wheel::{TimerKey, TimerWheel};
use crate::executor;

/// Completes after `duration`, measured from now (the call, not the first poll).
///
/// # Panics
///
/// Outside an executor.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(executor::now() + duration)
}

/// Completes at `deadline` (at once if it has passed). [`Instant::MAX`] never comes.
///
/// Does not touch the executor until polled, so it may be created anywhere.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        key: None,
        _core_local: PhantomData,
    }
}

/// Future returned by [`sleep`] and [`sleep_until`].
///
/// Registers a timer in the current core's wheel on the first poll that finds the deadline
/// still ahead, keeps the stored waker current on later polls, and cancels the timer when
/// dropped. It is `Unpin` (poll it through `&mut`) and `!Send`, because the timer lives in
/// one core's wheel.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Sleep {
    deadline: Instant,
    /// The timer, once registered and until it is seen to fire or is cancelled.
    key: Option<TimerKey>,
    /// `!Send + !Sync`: the key is only meaningful to this core's wheel.
    _core_local: PhantomData<*const ()>,
}

impl Sleep {
    /// When this sleep completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// `true` once the deadline has passed on the current core's clock.
    ///
    /// # Panics
    ///
    /// Outside an executor.
    pub fn is_elapsed(&self) -> bool {
        executor::now() >= self.deadline
    }

    /// Move the deadline, re-arming the timer in place if it is registered (no new wheel
    /// entry), or making a completed sleep pending again. The stored waker is kept; the
    /// next poll replaces it if needed.
    ///
    /// Outside an executor it only records the deadline; a timer registered earlier is then
    /// left to fire harmlessly.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        let Some(key) = self.key else {
            return;
        };
        if deadline == Instant::MAX {
            self.disarm();
            return;
        }
        let rearmed = executor::try_with_timers(|w| w.reset(key, deadline)).unwrap_or(false);
        if !rearmed {
            // Already fired (or another core's wheel): register afresh on the next poll.
            self.key = None;
        }
    }

    /// Cancel the registered timer, if any. Its waker is dropped after the wheel is released:
    /// dropping a waker may drop a task, whose futures may cancel their own timers.
    fn disarm(&mut self) {
        if let Some(key) = self.key.take() {
            let waker = executor::try_with_timers(|w| w.cancel(key));
            drop(waker);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let deadline = this.deadline;
        let key = &mut this.key;
        // One look-up of the core for the wheel and the clock, which is read only when the
        // answer depends on it: not for a timer that has fired, nor for a deadline beyond the
        // running task quota (see `executor::CoreClock::passed`).
        let (ready, old) = executor::with_timers_clock(|w, clock| {
            if let Some(k) = *key {
                if w.contains(k) {
                    if clock.passed(deadline) {
                        // Due but not fired yet (the clock moved since the last expire):
                        // free the entry now rather than leave it to wake us for nothing.
                        *key = None;
                        return (true, w.cancel(k));
                    }
                    return (false, update_waker(w, k, cx.waker()));
                }
                *key = None;
                if w.issued(k) {
                    // Fired: the wheel fires a timer only once its deadline has passed, and
                    // `reset` forgets the key of a timer it could not move.
                    return (true, None);
                }
                // A key of another wheel (an executor that ran earlier on this thread).
            }
            if clock.passed(deadline) {
                (true, None)
            } else if deadline == Instant::MAX {
                (false, None)
            } else {
                *key = Some(w.insert(deadline, cx.waker().clone()));
                (false, None)
            }
        });
        // Wakers are dropped outside the wheel's borrow (see `disarm`).
        drop(old);
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Keep the waker stored with pending timer `key` current. Returns a replaced waker, for the
/// caller to drop outside the wheel's borrow.
fn update_waker(wheel: &mut TimerWheel<Waker>, key: TimerKey, waker: &Waker) -> Option<Waker> {
    let stored = wheel.get_mut(key)?;
    if stored.will_wake(waker) {
        return None;
    }
    Some(core::mem::replace(stored, waker.clone()))
}

impl Drop for Sleep {
    fn drop(&mut self) {
        // `try_`: a sleep may be dropped after its executor is gone (returned out of
        // `block_on`); its timer died with the wheel, or will fire into a stale waker.
        self.disarm();
    }
}
