//! A bounded, core-local, multi-producer single-consumer channel.
//!
//! [`channel`]`(capacity)` returns a cloneable [`Sender`] and a [`Receiver`]. At most `capacity`
//! values wait in the channel; [`Sender::send`] waits for room when it is full, in FIFO order
//! with the other waiting senders, and [`Sender::try_send`] hands the value back instead.
//!
//! ```
//! # use seastar_kernel::sync::mpsc;
//! # async fn example() {
//! let (tx, mut rx) = mpsc::channel::<u32>(16);
//! let tx2 = tx.clone();
//! tx.send(1).await.ok();
//! tx2.send(2).await.ok();
//! drop((tx, tx2));
//! while let Some(value) = rx.recv().await {
//!     // 1, then 2, then the loop ends: every sender is gone and the buffer is drained.
//! #   let _ = value;
//! }
//! # }
//! ```
//!
//! # Ending
//!
//! * When every [`Sender`] is dropped, the receiver gets the values still buffered, then
//!   `None`.
//! * When the [`Receiver`] is dropped or [`close`](Receiver::close)d, every waiting and later
//!   send fails and returns its value; a closed (not dropped) receiver can still drain what was
//!   buffered before.
//!
//! # Cancellation
//!
//! Dropping a [`SendFuture`] that is waiting removes it from the queue of senders and its value
//! is *not* sent. When room frees up, the slot is reserved for the oldest waiting sender and its
//! value moves in when it is next polled; if it is dropped before that, the reservation passes
//! to the next waiting sender, so no slot is lost and no value is half-sent. [`Receiver::recv`]
//! holds no state: dropping it loses nothing.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use core::cell::RefCell;
use core::fmt;
use core::future::Future;
use core::mem;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use super::wait_list::{store_waker, WaitList, WaiterKey, Wakers};

/// A send failed because the receiver is gone or closed; the value is handed back.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mpsc channel closed")]
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

/// Why [`Sender::try_send`] failed; the value is handed back either way.
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrySendError<T> {
    /// The channel has no free slot now (or other senders are waiting for one).
    #[error("mpsc channel full")]
    Full(T),
    /// The receiver is gone or closed.
    #[error("mpsc channel closed")]
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(value) | Self::Closed(value) => value,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// Why [`Receiver::try_recv`] returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing buffered now; senders may still send.
    #[error("mpsc channel empty")]
    Empty,
    /// Nothing buffered and nothing will come: every sender is gone or the receiver closed.
    #[error("mpsc channel closed")]
    Closed,
}

struct Chan<T> {
    buffer: VecDeque<T>,
    capacity: usize,
    /// Slots promised to waiting senders that have not moved their value in yet.
    reserved: usize,
    senders: usize,
    receiver_closed: bool,
    receiver_waker: Option<Waker>,
    waiting_senders: WaitList<SendWaiter>,
}

#[derive(Debug)]
struct SendWaiter {
    waker: Option<Waker>,
    outcome: SendOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendOutcome {
    Waiting,
    SlotReserved,
    Closed,
}

impl<T> Chan<T> {
    fn free_slots(&self) -> usize {
        self.capacity
            .saturating_sub(self.buffer.len())
            .saturating_sub(self.reserved)
    }

    /// Reserves the free slots for the oldest waiting senders.
    fn reserve_for_waiters(&mut self, wakers: &mut Wakers) {
        while self.free_slots() > 0 {
            let Some(waiter) = self.waiting_senders.pop_front() else {
                break;
            };
            waiter.outcome = SendOutcome::SlotReserved;
            wakers.push(waiter.waker.take());
            self.reserved += 1;
        }
    }

    fn push(&mut self, value: T) -> Option<Waker> {
        self.buffer.push_back(value);
        self.receiver_waker.take()
    }

    /// Fails every waiting sender and returns the buffered values, to be dropped by the caller
    /// once the borrow is released (the values' `Drop` may use this very channel).
    fn close(&mut self, wakers: &mut Wakers) {
        self.receiver_closed = true;
        while let Some(waiter) = self.waiting_senders.pop_front() {
            waiter.outcome = SendOutcome::Closed;
            wakers.push(waiter.waker.take());
        }
    }
}

/// A channel holding at most `capacity` values.
///
/// A `capacity` of 0 is taken as 1: a rendezvous channel would need the sender to wait for a
/// receiver that is waiting, which this channel does not model. [`Sender::max_capacity`] tells
/// the capacity in effect. The buffer grows on demand; nothing is allocated up front.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let chan = Rc::new(RefCell::new(Chan {
        buffer: VecDeque::new(),
        capacity: capacity.max(1),
        reserved: 0,
        senders: 1,
        receiver_closed: false,
        receiver_waker: None,
        waiting_senders: WaitList::new(),
    }));
    (
        Sender {
            chan: Rc::clone(&chan),
        },
        Receiver { chan },
    )
}

/// The sending half of an [`mpsc`](self) channel. Clone it for more producers.
pub struct Sender<T> {
    chan: Rc<RefCell<Chan<T>>>,
}

impl<T> Sender<T> {
    /// Sends `value`, waiting for a free slot if the channel is full.
    ///
    /// Waiting senders get slots in the order they first polled. Fails, returning the value, if
    /// the receiver is dropped or closed before the value is in the channel. Dropping the
    /// future before it completes means the value was not sent.
    pub fn send(&self, value: T) -> SendFuture<'_, T> {
        SendFuture {
            chan: &self.chan,
            value: Some(value),
            key: None,
        }
    }

    /// Sends `value` if a slot is free now and no other sender is waiting for one.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut chan = self.chan.borrow_mut();
            if chan.receiver_closed {
                return Err(TrySendError::Closed(value));
            }
            if chan.free_slots() == 0 || !chan.waiting_senders.is_empty() {
                return Err(TrySendError::Full(value));
            }
            chan.push(value)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver was dropped or closed: every send fails from now on.
    pub fn is_closed(&self) -> bool {
        self.chan.borrow().receiver_closed
    }

    /// How many values could be sent now without waiting.
    pub fn capacity(&self) -> usize {
        let chan = self.chan.borrow();
        if chan.waiting_senders.is_empty() {
            chan.free_slots()
        } else {
            0
        }
    }

    /// The most values the channel buffers.
    pub fn max_capacity(&self) -> usize {
        self.chan.borrow().capacity
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.borrow_mut().senders += 1;
        Self {
            chan: Rc::clone(&self.chan),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut chan = self.chan.borrow_mut();
            chan.senders = chan.senders.saturating_sub(1);
            if chan.senders == 0 {
                chan.receiver_waker.take()
            } else {
                None
            }
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

/// The future of [`Sender::send`].
#[must_use = "futures do nothing unless polled; dropping this one means the value is not sent"]
pub struct SendFuture<'a, T> {
    chan: &'a Rc<RefCell<Chan<T>>>,
    value: Option<T>,
    key: Option<WaiterKey>,
}

// The value is never pinned: it is only moved into the channel, never borrowed in place.
impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = Pin::into_inner(self);
        let Some(value) = this.value.take() else {
            return Poll::Pending;
        };
        let mut chan = this.chan.borrow_mut();
        let reserved = match this.key {
            None => {
                if chan.receiver_closed {
                    return Poll::Ready(Err(SendError(value)));
                }
                if chan.free_slots() == 0 || !chan.waiting_senders.is_empty() {
                    this.key = Some(chan.waiting_senders.push_back(SendWaiter {
                        waker: Some(cx.waker().clone()),
                        outcome: SendOutcome::Waiting,
                    }));
                    this.value = Some(value);
                    return Poll::Pending;
                }
                false
            }
            Some(key) => {
                let outcome = match chan.waiting_senders.get_mut(key) {
                    Some(waiter) if waiter.outcome == SendOutcome::Waiting => {
                        store_waker(&mut waiter.waker, cx.waker());
                        this.value = Some(value);
                        return Poll::Pending;
                    }
                    Some(waiter) => waiter.outcome,
                    // Unreachable: only this future frees its slot. Failing beats hanging.
                    None => SendOutcome::Closed,
                };
                chan.waiting_senders.remove(key);
                this.key = None;
                if outcome == SendOutcome::SlotReserved {
                    chan.reserved -= 1;
                }
                if outcome == SendOutcome::Closed || chan.receiver_closed {
                    return Poll::Ready(Err(SendError(value)));
                }
                true
            }
        };
        debug_assert!(reserved || chan.free_slots() > 0);
        let waker = chan.push(value);
        drop(chan);
        if let Some(waker) = waker {
            waker.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        let Some(key) = self.key else {
            return;
        };
        let mut wakers = Wakers::new();
        {
            let mut chan = self.chan.borrow_mut();
            if let Some(waiter) = chan.waiting_senders.remove(key) {
                if waiter.outcome == SendOutcome::SlotReserved {
                    chan.reserved -= 1;
                    chan.reserve_for_waiters(&mut wakers);
                }
            }
        }
        wakers.wake_all();
        // `self.value` drops after this, with the channel no longer borrowed.
    }
}

impl<T> fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture")
            .field("queued", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

/// The receiving half of an [`mpsc`](self) channel.
pub struct Receiver<T> {
    chan: Rc<RefCell<Chan<T>>>,
}

impl<T> Receiver<T> {
    /// Receives the next value, waiting for one; `None` once every sender is gone (or the
    /// receiver was closed) and the buffer is drained.
    pub fn recv(&mut self) -> Recv<'_, T> {
        Recv { receiver: self }
    }

    /// Polls for the next value; the building block of [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.take() {
            Ok(value) => Poll::Ready(Some(value)),
            Err(TryRecvError::Closed) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                let mut chan = self.chan.borrow_mut();
                store_waker(&mut chan.receiver_waker, cx.waker());
                Poll::Pending
            }
        }
    }

    /// Receives the next value if one is buffered, without waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.take()
    }

    /// Refuses new values: waiting and later sends fail and return their value. What is
    /// already buffered can still be received.
    pub fn close(&mut self) {
        let mut wakers = Wakers::new();
        self.chan.borrow_mut().close(&mut wakers);
        wakers.wake_all();
    }

    /// How many values are buffered.
    pub fn len(&self) -> usize {
        self.chan.borrow().buffer.len()
    }

    /// Whether no value is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&mut self) -> Result<T, TryRecvError> {
        let mut wakers = Wakers::new();
        let result = {
            let mut chan = self.chan.borrow_mut();
            match chan.buffer.pop_front() {
                Some(value) => {
                    chan.reserve_for_waiters(&mut wakers);
                    Ok(value)
                }
                // A sender holding a reserved slot cannot exist without a live `Sender`, so
                // `senders == 0` means nothing more can arrive.
                None if chan.senders == 0 || chan.receiver_closed => Err(TryRecvError::Closed),
                None => Err(TryRecvError::Empty),
            }
        };
        wakers.wake_all();
        result
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut wakers = Wakers::new();
        let unreceived = {
            let mut chan = self.chan.borrow_mut();
            chan.close(&mut wakers);
            mem::take(&mut chan.buffer)
        };
        // Dropped outside the borrow: a value may hold a `Sender` of this very channel.
        drop(unreceived);
        wakers.wake_all();
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

/// The future of [`Receiver::recv`].
#[must_use = "futures do nothing unless polled"]
pub struct Recv<'a, T> {
    receiver: &'a mut Receiver<T>,
}

impl<T> Future for Recv<'_, T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        Pin::into_inner(self).receiver.poll_recv(cx)
    }
}

impl<T> fmt::Debug for Recv<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recv").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_util::{callback_waker, poll_noop, poll_with, CountingWaker};
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::cell::Cell;
    use proptest::prelude::*;

    fn drain<T>(rx: &mut Receiver<T>) -> Vec<T> {
        let mut values = Vec::new();
        while let Ok(value) = rx.try_recv() {
            values.push(value);
        }
        values
    }

    #[test]
    fn values_arrive_in_order_and_recv_ends_after_the_last_sender() {
        let (tx, mut rx) = channel(4);
        let tx2 = tx.clone();
        assert!(poll_noop(&mut tx.send(1)).is_ready());
        assert_eq!(tx2.try_send(2), Ok(()));
        drop(tx);
        assert_eq!(poll_noop(&mut rx.recv()), Poll::Ready(Some(1)));
        assert_eq!(poll_noop(&mut rx.recv()), Poll::Ready(Some(2)));
        assert_eq!(
            poll_noop(&mut rx.recv()),
            Poll::Pending,
            "tx2 is still alive"
        );
        assert_eq!(tx2.try_send(3), Ok(()));
        drop(tx2);
        // Buffered values outlive the senders.
        assert_eq!(rx.len(), 1);
        assert_eq!(poll_noop(&mut rx.recv()), Poll::Ready(Some(3)));
        assert_eq!(poll_noop(&mut rx.recv()), Poll::Ready(None));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn receiver_is_woken_by_a_send_and_by_the_last_sender_drop_only() {
        let (tx, mut rx) = channel::<u8>(2);
        let tx2 = tx.clone();
        let (counter, waker) = CountingWaker::new();
        assert_eq!(poll_with(&mut rx.recv(), &waker), Poll::Pending);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(counter.wakes(), 1);
        assert_eq!(poll_with(&mut rx.recv(), &waker), Poll::Ready(Some(1)));
        assert_eq!(poll_with(&mut rx.recv(), &waker), Poll::Pending);
        drop(tx);
        assert_eq!(counter.wakes(), 1, "another sender is alive");
        drop(tx2);
        assert_eq!(counter.wakes(), 2);
        assert_eq!(poll_noop(&mut rx.recv()), Poll::Ready(None));
    }

    #[test]
    fn full_channel_makes_senders_wait_and_serves_them_in_fifo_order() {
        let (tx, mut rx) = channel(1);
        assert_eq!(tx.try_send(0), Ok(()));
        assert_eq!(tx.capacity(), 0);
        let (first_counter, first_waker) = CountingWaker::new();
        let (second_counter, second_waker) = CountingWaker::new();
        let mut first = tx.send(1);
        let mut second = tx.send(2);
        assert!(poll_with(&mut first, &first_waker).is_pending());
        assert!(poll_with(&mut second, &second_waker).is_pending());
        assert_eq!(tx.try_send(9).map_err(TrySendError::into_inner), Err(9));

        assert_eq!(rx.try_recv(), Ok(0));
        assert_eq!((first_counter.wakes(), second_counter.wakes()), (1, 0));
        // The freed slot is reserved for `first`: a newcomer cannot take it.
        assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
        assert!(poll_with(&mut second, &second_waker).is_pending());
        assert_eq!(poll_noop(&mut first), Poll::Ready(Ok(())));

        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(second_counter.wakes(), 1);
        assert_eq!(poll_noop(&mut second), Poll::Ready(Ok(())));
        assert_eq!(rx.try_recv(), Ok(2));
    }

    #[test]
    fn dropping_a_waiting_send_frees_its_place_and_sends_nothing() {
        let (tx, mut rx) = channel(1);
        assert_eq!(tx.try_send(0), Ok(()));
        let (counter, waker) = CountingWaker::new();
        let mut cancelled = tx.send(1);
        let mut next = tx.send(2);
        assert!(poll_noop(&mut cancelled).is_pending());
        assert!(poll_with(&mut next, &waker).is_pending());
        drop(cancelled);
        assert_eq!(rx.try_recv(), Ok(0));
        assert_eq!(counter.wakes(), 1);
        assert_eq!(poll_noop(&mut next), Poll::Ready(Ok(())));
        assert_eq!(drain(&mut rx), [2]);
    }

    #[test]
    fn dropping_a_send_after_its_slot_was_reserved_passes_the_slot_on() {
        let (tx, mut rx) = channel(1);
        assert_eq!(tx.try_send(0), Ok(()));
        let (counter, waker) = CountingWaker::new();
        let mut reserved = tx.send(1);
        let mut next = tx.send(2);
        assert!(poll_noop(&mut reserved).is_pending());
        assert!(poll_with(&mut next, &waker).is_pending());
        assert_eq!(rx.try_recv(), Ok(0));
        assert_eq!(counter.wakes(), 0);
        drop(reserved);
        assert_eq!(counter.wakes(), 1);
        assert_eq!(poll_noop(&mut next), Poll::Ready(Ok(())));
        assert_eq!(drain(&mut rx), [2], "the cancelled value must not be sent");
    }

    #[test]
    fn dropping_the_last_reserved_send_frees_the_slot_for_anyone() {
        let (tx, mut rx) = channel(1);
        assert_eq!(tx.try_send(0), Ok(()));
        let mut reserved = tx.send(1);
        assert!(poll_noop(&mut reserved).is_pending());
        assert_eq!(rx.try_recv(), Ok(0));
        assert_eq!(tx.capacity(), 0);
        drop(reserved);
        assert_eq!(tx.capacity(), 1);
        assert_eq!(tx.try_send(3), Ok(()));
    }

    #[test]
    fn receiver_drop_fails_waiting_and_later_sends_with_their_values() {
        let (tx, rx) = channel(1);
        assert_eq!(tx.try_send(String::from("buffered")), Ok(()));
        let (counter, waker) = CountingWaker::new();
        let mut waiting = tx.send(String::from("waiting"));
        assert!(poll_with(&mut waiting, &waker).is_pending());
        drop(rx);
        assert_eq!(counter.wakes(), 1);
        assert!(tx.is_closed());
        match poll_noop(&mut waiting) {
            Poll::Ready(Err(SendError(value))) => assert_eq!(value, "waiting"),
            other => panic!("expected the value back, got {:?}", other.is_ready()),
        }
        assert!(matches!(
            poll_noop(&mut tx.send(String::from("later"))),
            Poll::Ready(Err(SendError(value))) if value == "later"
        ));
        assert!(matches!(
            tx.try_send(String::from("try")),
            Err(TrySendError::Closed(value)) if value == "try"
        ));
    }

    #[test]
    fn reserved_send_fails_if_the_receiver_closes_before_it_is_polled() {
        let (tx, mut rx) = channel(1);
        assert_eq!(tx.try_send(0), Ok(()));
        let mut reserved = tx.send(1);
        assert!(poll_noop(&mut reserved).is_pending());
        assert_eq!(rx.try_recv(), Ok(0));
        rx.close();
        assert_eq!(poll_noop(&mut reserved), Poll::Ready(Err(SendError(1))));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn close_keeps_buffered_values_receivable() {
        let (tx, mut rx) = channel(4);
        assert_eq!(tx.try_send(1), Ok(()));
        rx.close();
        assert!(matches!(tx.try_send(2), Err(TrySendError::Closed(2))));
        assert_eq!(poll_noop(&mut rx.recv()), Poll::Ready(Some(1)));
        assert_eq!(
            poll_noop(&mut rx.recv()),
            Poll::Ready(None),
            "sender alive but closed"
        );
    }

    #[test]
    fn zero_capacity_is_taken_as_one() {
        let (tx, mut rx) = channel(0);
        assert_eq!(tx.max_capacity(), 1);
        assert_eq!(tx.try_send(1), Ok(()));
        assert!(matches!(tx.try_send(2), Err(TrySendError::Full(2))));
        assert_eq!(rx.try_recv(), Ok(1));
    }

    #[test]
    fn dropping_the_receiver_drops_buffered_values_that_hold_senders() {
        // The value holds a sender of its own channel: dropping the buffer re-enters it.
        struct HoldsSender(#[allow(dead_code)] Sender<HoldsSender>);
        let (tx, rx) = channel::<HoldsSender>(2);
        assert!(tx.try_send(HoldsSender(tx.clone())).is_ok());
        assert_eq!(tx.chan.borrow().senders, 2);
        drop(rx);
        assert_eq!(tx.chan.borrow().senders, 1);

        struct DropCounter<'a>(&'a Cell<u32>);
        impl Drop for DropCounter<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let drops = Cell::new(0);
        let (tx, rx) = channel(2);
        assert!(tx.try_send(DropCounter(&drops)).is_ok());
        assert!(tx.try_send(DropCounter(&drops)).is_ok());
        drop(rx);
        assert_eq!(drops.get(), 2);
    }

    #[test]
    fn waker_may_reenter_the_channel() {
        let (tx, rx) = channel::<u8>(1);
        let rx = Rc::new(RefCell::new(rx));
        let received = Rc::new(Cell::new(None));
        let waker = {
            let rx = Rc::clone(&rx);
            let received = Rc::clone(&received);
            callback_waker(move || {
                if let Ok(mut rx) = rx.try_borrow_mut() {
                    received.set(rx.try_recv().ok());
                }
            })
        };
        if let Ok(mut rx) = rx.try_borrow_mut() {
            assert_eq!(poll_with(&mut rx.recv(), &waker), Poll::Pending);
        }
        assert_eq!(tx.try_send(5), Ok(()));
        assert_eq!(received.get(), Some(5));
    }

    // Model-based test: random sends (polled once), polls and cancellations of waiting sends,
    // receives and a final close, checked against a model of slots and FIFO waiters.
    #[derive(Debug, Clone)]
    enum Op {
        Send,
        TrySend,
        Poll(usize),
        Cancel(usize),
        Recv,
        Close,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Send),
            2 => Just(Op::TrySend),
            3 => any::<usize>().prop_map(Op::Poll),
            2 => any::<usize>().prop_map(Op::Cancel),
            4 => Just(Op::Recv),
            1 => Just(Op::Close),
        ]
    }

    struct Pending<'a> {
        value: u32,
        future: SendFuture<'a, u32>,
        counter: alloc::sync::Arc<CountingWaker>,
        waker: Waker,
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 10 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn matches_a_slot_model(capacity in 1..4_usize, ops in proptest::collection::vec(op(), 0..48)) {
            let (tx, mut rx) = channel::<u32>(capacity);
            // Model.
            let mut buffer: VecDeque<u32> = VecDeque::new();
            let mut waiting: VecDeque<u32> = VecDeque::new(); // values of queued senders
            let mut reserved: Vec<u32> = Vec::new(); // values whose slot is reserved
            let mut closed = false;
            // Real.
            let mut pending: Vec<Pending<'_>> = Vec::new();
            let mut next_value = 0;

            let free = |buffer: &VecDeque<u32>, reserved: &Vec<u32>| {
                capacity - buffer.len() - reserved.len()
            };

            for op in ops {
                match op {
                    Op::Send => {
                        let value = next_value;
                        next_value += 1;
                        let (counter, waker) = CountingWaker::new();
                        let mut future = tx.send(value);
                        let polled = poll_with(&mut future, &waker);
                        if closed {
                            prop_assert_eq!(polled, Poll::Ready(Err(SendError(value))));
                        } else if waiting.is_empty() && free(&buffer, &reserved) > 0 {
                            prop_assert_eq!(polled, Poll::Ready(Ok(())));
                            buffer.push_back(value);
                        } else {
                            prop_assert!(polled.is_pending());
                            waiting.push_back(value);
                            pending.push(Pending { value, future, counter, waker });
                        }
                    }
                    Op::TrySend => {
                        let value = next_value;
                        next_value += 1;
                        let result = tx.try_send(value);
                        if closed {
                            prop_assert_eq!(result, Err(TrySendError::Closed(value)));
                        } else if waiting.is_empty() && free(&buffer, &reserved) > 0 {
                            prop_assert_eq!(result, Ok(()));
                            buffer.push_back(value);
                        } else {
                            prop_assert_eq!(result, Err(TrySendError::Full(value)));
                        }
                    }
                    Op::Poll(pick) => {
                        if pending.is_empty() { continue; }
                        let index = pick % pending.len();
                        let entry = &mut pending[index];
                        let value = entry.value;
                        let polled = poll_with(&mut entry.future, &entry.waker);
                        if let Some(pos) = reserved.iter().position(|&v| v == value) {
                            reserved.remove(pos);
                            if closed {
                                prop_assert_eq!(polled, Poll::Ready(Err(SendError(value))));
                            } else {
                                prop_assert_eq!(polled, Poll::Ready(Ok(())));
                                buffer.push_back(value);
                            }
                            pending.remove(index);
                        } else if closed {
                            prop_assert_eq!(polled, Poll::Ready(Err(SendError(value))));
                            pending.remove(index);
                        } else {
                            prop_assert!(polled.is_pending());
                        }
                    }
                    Op::Cancel(pick) => {
                        if pending.is_empty() { continue; }
                        let entry = pending.remove(pick % pending.len());
                        if let Some(pos) = reserved.iter().position(|&v| v == entry.value) {
                            reserved.remove(pos);
                        } else if let Some(pos) = waiting.iter().position(|&v| v == entry.value) {
                            waiting.remove(pos);
                        }
                        drop(entry);
                    }
                    Op::Recv => {
                        let got = poll_noop(&mut rx.recv());
                        match buffer.pop_front() {
                            Some(value) => prop_assert_eq!(got, Poll::Ready(Some(value))),
                            None if closed => prop_assert_eq!(got, Poll::Ready(None)),
                            None => prop_assert_eq!(got, Poll::Pending),
                        }
                    }
                    Op::Close => {
                        rx.close();
                        closed = true;
                        waiting.clear();
                    }
                }
                // Room goes to the oldest waiting senders, as it frees up.
                if !closed {
                    while free(&buffer, &reserved) > 0 {
                        let Some(value) = waiting.pop_front() else { break };
                        reserved.push(value);
                    }
                }

                prop_assert_eq!(rx.len(), buffer.len());
                prop_assert_eq!(tx.is_closed(), closed);
                // A waiting sender has been woken iff its slot was reserved or the channel closed.
                for entry in &pending {
                    let woken = reserved.contains(&entry.value) || closed;
                    prop_assert_eq!(entry.counter.wakes(), usize::from(woken));
                }
            }
            // Everything buffered comes out in order; nothing cancelled slipped in.
            drop(pending);
            drop(tx);
            let mut rest = Vec::new();
            while let Poll::Ready(Some(value)) = poll_noop(&mut rx.recv()) {
                rest.push(value);
            }
            prop_assert_eq!(rest, Vec::from(buffer));
        }
    }
}
