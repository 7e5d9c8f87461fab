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
        if executor::now() >= this.deadline {
            // The timer may not have fired yet (the clock moved since the last expire):
            // free its entry now rather than leave it to wake us for nothing.
            this.disarm();
            return Poll::Ready(());
        }
        if this.deadline == Instant::MAX {
            return Poll::Pending;
        }
        let old = executor::with_timers(|w| register(w, &mut this.key, this.deadline, cx.waker()));
        drop(old);
        Poll::Pending
    }
}

/// Make sure the wheel holds a timer for `deadline` with a waker that wakes `waker`'s task.
/// Returns a replaced waker, for the caller to drop outside the wheel's borrow.
fn register(
    wheel: &mut TimerWheel<Waker>,
    key: &mut Option<TimerKey>,
    deadline: Instant,
    waker: &Waker,
) -> Option<Waker> {
    if let Some(stored) = key.and_then(|k| wheel.get_mut(k)) {
        if stored.will_wake(waker) {
            return None;
        }
        return Some(core::mem::replace(stored, waker.clone()));
    }
    // Never registered, or the timer fired although the clock is not yet at the deadline
    // (the sleep was reset later): register it (again).
    *key = Some(wheel.insert(deadline, waker.clone()));
    None
}

impl Drop for Sleep {
    fn drop(&mut self) {
        // `try_`: a sleep may be dropped after its executor is gone (returned out of
        // `block_on`); its timer died with the wheel, or will fire into a stale waker.
        self.disarm();
    }
}
