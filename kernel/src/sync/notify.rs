//! [`Notify`]: wake one waiting task or all of them, without data.
//!
//! * [`Notify::notify_one`] wakes the oldest waiter, or stores a single permit if nobody waits,
//!   which the next [`notified`](Notify::notified) consumes at once. Permits do not add up:
//!   two `notify_one` with nobody waiting leave one permit.
//! * [`Notify::notify_waiters`] wakes every [`Notified`] future that exists at the time of the
//!   call, including those created but not yet polled, and stores no permit.
//!
//! The second rule makes the check-then-wait pattern race-free, which is how `Notify` stands
//! in for a condition variable:
//!
//! ```
//! # use core::cell::Cell;
//! # use seastar_kernel::sync::Notify;
//! async fn wait_until_ready(ready: &Cell<bool>, changed: &Notify) {
//!     loop {
//!         // Created before the check: a `notify_waiters` between the check and the
//!         // `.await` still wakes it.
//!         let notified = changed.notified();
//!         if ready.get() {
//!             return;
//!         }
//!         notified.await;
//!     }
//! }
//! ```
//!
//! # Cancellation
//!
//! A `notify_one` given to a [`Notified`] that is dropped before it observed it passes on to the
//! next waiter (or becomes the permit). A `notify_waiters` is not passed on: every other waiter
//! got it too.

use core::cell::RefCell;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use super::wait_list::{store_waker, WaitList, WaiterKey, Wakers};

/// Wakes tasks waiting on it: one at a time with a stored permit, or all at once.
///
/// See the [module documentation](self). `Send` but `!Sync`.
pub struct Notify {
    state: RefCell<State>,
}

#[derive(Debug)]
struct State {
    permit: bool,
    /// Bumped by every `notify_waiters`, so a `Notified` created before the call can tell it
    /// happened even if it was never queued.
    generation: u64,
    waiters: WaitList<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    waker: Option<Waker>,
    notified_by: Option<Notification>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notification {
    One,
    All,
}

impl State {
    /// Gives one notification to the oldest waiter, or stores the permit.
    fn notify_one(&mut self) -> Option<Waker> {
        match self.waiters.pop_front() {
            Some(waiter) => {
                waiter.notified_by = Some(Notification::One);
                waiter.waker.take()
            }
            None => {
                self.permit = true;
                None
            }
        }
    }
}

impl Notify {
    /// A `Notify` with no permit stored.
    pub const fn new() -> Self {
        Self {
            state: RefCell::new(State {
                permit: false,
                generation: 0,
                waiters: WaitList::new(),
            }),
        }
    }

    /// A future that completes on the next notification.
    ///
    /// It consumes the stored permit, if any, when first polled; it is also completed by any
    /// [`notify_waiters`](Self::notify_waiters) called after this method, even before the
    /// future is polled.
    pub fn notified(&self) -> Notified<'_> {
        let generation = self.state.borrow().generation;
        Notified {
            notify: self,
            progress: Progress::NotPolled { generation },
        }
    }

    /// Wakes the oldest waiting task, or stores a permit for the next one if none waits.
    pub fn notify_one(&self) {
        let waker = self.state.borrow_mut().notify_one();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes every task waiting now (see [`notified`](Self::notified) for which ones count);
    /// stores no permit.
    pub fn notify_waiters(&self) {
        let mut wakers = Wakers::new();
        {
            let mut state = self.state.borrow_mut();
            state.generation = state.generation.wrapping_add(1);
            while let Some(waiter) = state.waiters.pop_front() {
                waiter.notified_by = Some(Notification::All);
                wakers.push(waiter.waker.take());
            }
        }
        wakers.wake_all();
    }

    /// Waits until `condition` holds, re-checking it after every notification: the condition
    /// variable's `wait_until`.
    ///
    /// Pair it with [`notify_waiters`](Self::notify_waiters) on every change of the state the
    /// condition reads. A [`notify_one`](Self::notify_one) wakes a single waiter, which
    /// consumes the notification even if its own condition is still false.
    pub async fn wait_until(&self, mut condition: impl FnMut() -> bool) {
        loop {
            // Created before the check, so a change between the check and the `.await` is
            // not missed.
            let notified = self.notified();
            if condition() {
                return;
            }
            notified.await;
        }
    }

    /// How many [`Notified`] futures are queued, waiting.
    pub fn waiters(&self) -> usize {
        self.state.borrow().waiters.len()
    }
}

impl Default for Notify {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state.try_borrow() {
            Ok(state) => f
                .debug_struct("Notify")
                .field("permit", &state.permit)
                .field("waiters", &state.waiters.len())
                .finish(),
            Err(_) => f.write_str("Notify { <borrowed> }"),
        }
    }
}

/// The future of [`Notify::notified`].
#[must_use = "futures do nothing unless polled"]
pub struct Notified<'a> {
    notify: &'a Notify,
    progress: Progress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    NotPolled { generation: u64 },
    Queued(WaiterKey),
    Done,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = this.notify.state.borrow_mut();
        match this.progress {
            Progress::NotPolled { generation } => {
                if state.generation != generation {
                    this.progress = Progress::Done;
                    return Poll::Ready(());
                }
                if state.permit {
                    state.permit = false;
                    this.progress = Progress::Done;
                    return Poll::Ready(());
                }
                let key = state.waiters.push_back(Waiter {
                    waker: Some(cx.waker().clone()),
                    notified_by: None,
                });
                this.progress = Progress::Queued(key);
                Poll::Pending
            }
            Progress::Queued(key) => {
                if let Some(waiter) = state.waiters.get_mut(key) {
                    if waiter.notified_by.is_none() {
                        store_waker(&mut waiter.waker, cx.waker());
                        return Poll::Pending;
                    }
                }
                state.waiters.remove(key);
                this.progress = Progress::Done;
                Poll::Ready(())
            }
            Progress::Done => Poll::Pending,
        }
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        let Progress::Queued(key) = self.progress else {
            return;
        };
        let waker = {
            let mut state = self.notify.state.borrow_mut();
            match state.waiters.remove(key) {
                Some(Waiter {
                    notified_by: Some(Notification::One),
                    ..
                }) => state.notify_one(),
                _ => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl fmt::Debug for Notified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notified")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_util::{callback_waker, poll_noop, poll_with, CountingWaker};
    use alloc::rc::Rc;
    use alloc::vec::Vec;
    use core::cell::Cell;

    #[test]
    fn notify_one_wakes_exactly_the_oldest_waiter() {
        let notify = Notify::new();
        let (first_counter, first_waker) = CountingWaker::new();
        let (second_counter, second_waker) = CountingWaker::new();
        let mut first = notify.notified();
        let mut second = notify.notified();
        assert!(poll_with(&mut first, &first_waker).is_pending());
        assert!(poll_with(&mut second, &second_waker).is_pending());
        assert_eq!(notify.waiters(), 2);

        notify.notify_one();
        assert_eq!((first_counter.wakes(), second_counter.wakes()), (1, 0));
        assert!(poll_noop(&mut first).is_ready());
        assert!(poll_with(&mut second, &second_waker).is_pending());

        notify.notify_one();
        assert_eq!(second_counter.wakes(), 1);
        assert!(poll_noop(&mut second).is_ready());
    }

    #[test]
    fn notify_one_without_waiters_stores_a_single_permit() {
        let notify = Notify::new();
        notify.notify_one();
        notify.notify_one();
        assert!(poll_noop(&mut notify.notified()).is_ready());
        assert!(
            poll_noop(&mut notify.notified()).is_pending(),
            "permits must not accumulate"
        );
    }

    #[test]
    fn notify_waiters_wakes_all_and_stores_no_permit() {
        let notify = Notify::new();
        let counters: Vec<_> = (0..3).map(|_| CountingWaker::new()).collect();
        let mut futures: Vec<_> = (0..3).map(|_| notify.notified()).collect();
        for (future, (_, waker)) in futures.iter_mut().zip(&counters) {
            assert!(poll_with(future, waker).is_pending());
        }
        notify.notify_waiters();
        for ((_, _), future) in counters.iter().zip(&mut futures) {
            assert!(poll_noop(future).is_ready());
        }
        assert!(counters.iter().all(|(counter, _)| counter.wakes() == 1));
        assert!(poll_noop(&mut notify.notified()).is_pending());
    }

    #[test]
    fn notify_waiters_completes_futures_created_but_not_yet_polled() {
        let notify = Notify::new();
        let mut created_before = notify.notified();
        notify.notify_waiters();
        let mut created_after = notify.notified();
        assert!(poll_noop(&mut created_before).is_ready());
        assert!(poll_noop(&mut created_after).is_pending());
    }

    #[test]
    fn dropped_waiter_passes_its_notify_one_to_the_next() {
        let notify = Notify::new();
        let (counter, waker) = CountingWaker::new();
        let mut first = notify.notified();
        let mut second = notify.notified();
        assert!(poll_noop(&mut first).is_pending());
        assert!(poll_with(&mut second, &waker).is_pending());
        notify.notify_one();
        assert_eq!(counter.wakes(), 0);
        drop(first);
        assert_eq!(counter.wakes(), 1);
        assert!(poll_noop(&mut second).is_ready());
    }

    #[test]
    fn dropped_last_waiter_turns_its_notify_one_into_the_permit() {
        let notify = Notify::new();
        let mut only = notify.notified();
        assert!(poll_noop(&mut only).is_pending());
        notify.notify_one();
        drop(only);
        assert!(poll_noop(&mut notify.notified()).is_ready());
    }

    #[test]
    fn dropped_waiter_does_not_pass_on_a_notify_waiters() {
        let notify = Notify::new();
        let mut first = notify.notified();
        assert!(poll_noop(&mut first).is_pending());
        notify.notify_waiters();
        drop(first);
        assert!(poll_noop(&mut notify.notified()).is_pending());
    }

    #[test]
    fn dropping_a_waiting_future_removes_it() {
        let notify = Notify::new();
        let mut first = notify.notified();
        assert!(poll_noop(&mut first).is_pending());
        drop(first);
        assert_eq!(notify.waiters(), 0);
        notify.notify_one();
        // The notification was not swallowed by the dropped future: it became the permit.
        assert!(poll_noop(&mut notify.notified()).is_ready());
    }

    #[test]
    fn wait_until_returns_only_once_the_condition_holds() {
        let notify = Notify::new();
        let ready = Cell::new(false);
        let (counter, waker) = CountingWaker::new();
        let mut wait = core::pin::pin!(notify.wait_until(|| ready.get()));
        assert!(poll_with(&mut wait, &waker).is_pending());
        notify.notify_waiters();
        assert_eq!(counter.wakes(), 1);
        assert!(
            poll_with(&mut wait, &waker).is_pending(),
            "still false: wait again"
        );
        ready.set(true);
        assert_eq!(counter.wakes(), 1, "a change alone does not wake");
        notify.notify_waiters();
        assert_eq!(counter.wakes(), 2);
        assert!(poll_with(&mut wait, &waker).is_ready());
        assert_eq!(notify.waiters(), 0);
    }

    #[test]
    fn wait_until_with_a_true_condition_does_not_wait() {
        let notify = Notify::new();
        assert!(poll_noop(&mut core::pin::pin!(notify.wait_until(|| true))).is_ready());
        assert_eq!(notify.waiters(), 0);
    }

    #[test]
    fn waker_may_reenter_notify() {
        let notify = Rc::new(Notify::new());
        let reentering = Rc::clone(&notify);
        let waker = callback_waker(move || reentering.notify_one());
        let mut waiting = notify.notified();
        assert!(poll_with(&mut waiting, &waker).is_pending());
        notify.notify_waiters();
        assert!(poll_noop(&mut waiting).is_ready());
        // The waker's `notify_one` found nobody waiting and left the permit.
        assert!(poll_noop(&mut notify.notified()).is_ready());
    }
}
