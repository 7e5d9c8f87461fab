//! A core-local channel for exactly one value.
//!
//! [`channel`] returns a [`Sender`] and a [`Receiver`]. The receiver is itself the future of the
//! value; it fails with [`RecvError`] if the sender is dropped without sending. The sender
//! learns that nobody listens any more through [`Sender::is_closed`] or by awaiting
//! [`Sender::closed`], and [`Sender::send`] then hands the value back.
//!
//! ```
//! # use seastar_kernel::sync::oneshot;
//! # async fn example() {
//! let (reply_tx, reply_rx) = oneshot::channel::<u32>();
//! // ... pass `reply_tx` to the task that computes the answer ...
//! # let _ = reply_tx.send(42);
//! match reply_rx.await {
//!     Ok(answer) => { /* use it */ }
//!     Err(oneshot::RecvError) => { /* the task gave up without answering */ }
//! }
//! # }
//! ```

use alloc::rc::Rc;
use core::cell::RefCell;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use super::wait_list::store_waker;

/// The sender was dropped without sending a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("oneshot sender dropped without sending")]
pub struct RecvError;

/// Why [`Receiver::try_recv`] returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No value yet; the sender may still send one.
    #[error("oneshot channel is empty")]
    Empty,
    /// No value and none will come: the sender was dropped, or the receiver was closed, or the
    /// value was already received.
    #[error("oneshot channel is closed")]
    Closed,
}

struct Shared<T> {
    value: Option<T>,
    sender_alive: bool,
    receiver_closed: bool,
    receiver_waker: Option<Waker>,
    sender_waker: Option<Waker>,
}

/// A new channel for one value of type `T`.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Rc::new(RefCell::new(Shared {
        value: None,
        sender_alive: true,
        receiver_closed: false,
        receiver_waker: None,
        sender_waker: None,
    }));
    (
        Sender {
            shared: Rc::clone(&shared),
        },
        Receiver { shared },
    )
}

/// The sending half of a [`oneshot`](self) channel.
pub struct Sender<T> {
    shared: Rc<RefCell<Shared<T>>>,
}

impl<T> Sender<T> {
    /// Sends `value`, waking the receiver. Gives the value back if the receiver was dropped or
    /// closed.
    pub fn send(self, value: T) -> Result<(), T> {
        let waker = {
            let mut shared = self.shared.borrow_mut();
            if shared.receiver_closed {
                return Err(value);
            }
            shared.value = Some(value);
            shared.receiver_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver was dropped or closed: a value sent now would come back.
    pub fn is_closed(&self) -> bool {
        self.shared.borrow().receiver_closed
    }

    /// Polls for the receiver going away; `Ready` once it was dropped or closed.
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut shared = self.shared.borrow_mut();
        if shared.receiver_closed {
            return Poll::Ready(());
        }
        store_waker(&mut shared.sender_waker, cx.waker());
        Poll::Pending
    }

    /// Completes once the receiver was dropped or closed, so that a task computing a reply can
    /// stop when nobody wants it any more.
    pub fn closed(&mut self) -> Closed<'_, T> {
        Closed { sender: self }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut shared = self.shared.borrow_mut();
            shared.sender_alive = false;
            shared.receiver_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The future of [`Sender::closed`].
#[must_use = "futures do nothing unless polled"]
pub struct Closed<'a, T> {
    sender: &'a mut Sender<T>,
}

impl<T> Future for Closed<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().sender.poll_closed(cx)
    }
}

impl<T> fmt::Debug for Closed<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closed").finish_non_exhaustive()
    }
}

/// The receiving half of a [`oneshot`](self) channel, and the future of its value.
///
/// Its output is `Err(`[`RecvError`]`)` when the sender was dropped without sending, when the
/// receiver was [`close`](Self::close)d with no value in it, or when it is polled again after
/// it returned the value.
#[must_use = "futures do nothing unless polled"]
pub struct Receiver<T> {
    shared: Rc<RefCell<Shared<T>>>,
}

impl<T> Receiver<T> {
    /// Takes the value if it has been sent, without waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut shared = self.shared.borrow_mut();
        match shared.value.take() {
            Some(value) => Ok(value),
            None if shared.sender_alive && !shared.receiver_closed => Err(TryRecvError::Empty),
            None => Err(TryRecvError::Closed),
        }
    }

    /// Refuses any value not sent yet: [`Sender::send`] fails from now on and the sender's
    /// [`closed`](Sender::closed) completes. A value already sent can still be received.
    pub fn close(&mut self) {
        let waker = {
            let mut shared = self.shared.borrow_mut();
            shared.receiver_closed = true;
            shared.sender_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut shared = self.shared.borrow_mut();
        if let Some(value) = shared.value.take() {
            return Poll::Ready(Ok(value));
        }
        if !shared.sender_alive || shared.receiver_closed {
            return Poll::Ready(Err(RecvError));
        }
        store_waker(&mut shared.receiver_waker, cx.waker());
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (unreceived, waker) = {
            let mut shared = self.shared.borrow_mut();
            shared.receiver_closed = true;
            (shared.value.take(), shared.sender_waker.take())
        };
        // Dropped outside the borrow: the value's own `Drop` may touch this channel.
        drop(unreceived);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_util::{callback_waker, poll_noop, poll_with, CountingWaker};
    use core::cell::Cell;

    #[test]
    fn value_sent_before_polling_is_ready_at_once() {
        let (tx, mut rx) = channel();
        assert_eq!(tx.send(7), Ok(()));
        assert_eq!(poll_noop(&mut rx), Poll::Ready(Ok(7)));
        assert_eq!(poll_noop(&mut rx), Poll::Ready(Err(RecvError)));
    }

    #[test]
    fn send_wakes_the_waiting_receiver_once() {
        let (tx, mut rx) = channel();
        let (counter, waker) = CountingWaker::new();
        assert_eq!(poll_with(&mut rx, &waker), Poll::Pending);
        assert_eq!(counter.wakes(), 0);
        assert_eq!(tx.send("hi"), Ok(()));
        assert_eq!(counter.wakes(), 1);
        assert_eq!(poll_noop(&mut rx), Poll::Ready(Ok("hi")));
    }

    #[test]
    fn dropping_the_sender_wakes_the_receiver_with_an_error() {
        let (tx, mut rx) = channel::<u8>();
        let (counter, waker) = CountingWaker::new();
        assert_eq!(poll_with(&mut rx, &waker), Poll::Pending);
        drop(tx);
        assert_eq!(counter.wakes(), 1);
        assert_eq!(poll_noop(&mut rx), Poll::Ready(Err(RecvError)));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn try_recv_reports_empty_then_value_then_closed() {
        let (tx, mut rx) = channel();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(tx.send(1), Ok(()));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn send_to_a_dropped_receiver_returns_the_value() {
        let (tx, rx) = channel();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.send(5), Err(5));
    }

    #[test]
    fn closed_completes_when_the_receiver_goes_away() {
        let (mut tx, rx) = channel::<u8>();
        let (counter, waker) = CountingWaker::new();
        assert_eq!(poll_with(&mut tx.closed(), &waker), Poll::Pending);
        drop(rx);
        assert_eq!(counter.wakes(), 1);
        assert_eq!(poll_noop(&mut tx.closed()), Poll::Ready(()));
    }

    #[test]
    fn close_refuses_later_sends_but_keeps_an_earlier_value() {
        let (tx, mut rx) = channel();
        assert_eq!(tx.send(3), Ok(()));
        rx.close();
        assert_eq!(poll_noop(&mut rx), Poll::Ready(Ok(3)));

        let (mut tx, mut rx) = channel::<u8>();
        let (counter, waker) = CountingWaker::new();
        assert_eq!(poll_with(&mut tx.closed(), &waker), Poll::Pending);
        rx.close();
        assert_eq!(counter.wakes(), 1);
        assert_eq!(poll_noop(&mut rx), Poll::Ready(Err(RecvError)));
        assert_eq!(tx.send(4), Err(4));
    }

    #[test]
    fn receiver_drop_drops_an_unreceived_value_that_touches_the_channel() {
        // The value holds the sender of its own channel: dropping it re-enters the shared
        // state, which must not be borrowed at that moment.
        let (tx, rx) = channel::<Option<Sender<u8>>>();
        let (inner_tx, inner_rx) = channel::<u8>();
        drop(inner_rx);
        let _ = tx.send(Some(inner_tx));
        drop(rx);

        struct DropCounter<'a>(&'a Cell<u32>);
        impl Drop for DropCounter<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let drops = Cell::new(0);
        let (tx, rx) = channel();
        assert!(tx.send(DropCounter(&drops)).is_ok());
        assert_eq!(drops.get(), 0);
        drop(rx);
        assert_eq!(drops.get(), 1);
    }

    #[test]
    fn waker_may_reenter_the_channel() {
        let (tx, rx) = channel::<u8>();
        let rx = Rc::new(RefCell::new(rx));
        let reentering = Rc::clone(&rx);
        let waker = callback_waker(move || {
            if let Ok(mut rx) = reentering.try_borrow_mut() {
                assert_eq!(rx.try_recv(), Ok(9));
            }
        });
        if let Ok(mut rx) = rx.try_borrow_mut() {
            assert_eq!(poll_with(&mut *rx, &waker), Poll::Pending);
        }
        assert_eq!(tx.send(9), Ok(()));
        assert_eq!(rx.borrow_mut().try_recv(), Err(TryRecvError::Closed));
    }
}
