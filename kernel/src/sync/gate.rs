//! [`Gate`]: track in-flight work so that shutdown can wait for it (Seastar's `gate`).
//!
//! Work [`enter`](Gate::enter)s the gate and holds a guard until it is done. Shutdown calls
//! [`close`](Gate::close): from that moment new work is refused with [`GateClosed`], and the
//! returned future completes once every guard has been dropped.
//!
//! ```
//! # use std::rc::Rc;
//! # use seastar_kernel::sync::{Gate, GateClosed};
//! # fn spawn(_: impl core::future::Future<Output = ()> + 'static) {}
//! fn on_request(requests: &Rc<Gate>) -> Result<(), GateClosed> {
//!     let guard = requests.enter_owned()?;
//!     spawn(async move {
//!         // ... handle the request ...
//!         drop(guard);
//!     });
//!     Ok(())
//! }
//!
//! async fn shutdown(requests: &Gate) {
//!     requests.close().await; // every request that got in has finished
//! }
//! ```

use alloc::rc::Rc;
use core::cell::RefCell;
use core::fmt;
use core::future::Future;
use core::ops::Deref;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use super::wait_list::{store_waker, WaitList, WaiterKey, Wakers};

/// The gate was closed: no new work may enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("gate is closed")]
pub struct GateClosed;

/// Counts the holders of a section of work and lets shutdown wait until none is left.
///
/// See the [module documentation](self). `Send` but `!Sync`.
pub struct Gate {
    state: RefCell<State>,
}

#[derive(Debug)]
struct State {
    holders: usize,
    closed: bool,
    closers: WaitList<Option<Waker>>,
}

impl Gate {
    /// An open gate with no holders.
    pub const fn new() -> Self {
        Self {
            state: RefCell::new(State {
                holders: 0,
                closed: false,
                closers: WaitList::new(),
            }),
        }
    }

    /// Enters the gate: the returned guard keeps [`close`](Self::close) waiting until it is
    /// dropped. Fails once `close` has been called.
    pub fn enter(&self) -> Result<GateGuard<'_>, GateClosed> {
        self.try_enter()?;
        Ok(Guard { gate: self })
    }

    /// Like [`enter`](Self::enter), with a guard that keeps the gate alive, so it can move into
    /// a `'static` task.
    pub fn enter_owned(self: &Rc<Self>) -> Result<OwnedGateGuard, GateClosed> {
        self.try_enter()?;
        Ok(Guard {
            gate: Rc::clone(self),
        })
    }

    /// `Err(GateClosed)` once [`close`](Self::close) has been called: a cheap check for long
    /// running work that wants to stop early during shutdown.
    pub fn check(&self) -> Result<(), GateClosed> {
        if self.is_closed() {
            Err(GateClosed)
        } else {
            Ok(())
        }
    }

    /// Closes the gate and returns a future that completes when every holder has left.
    ///
    /// The gate closes when this method is *called*, not when the future is first polled:
    /// [`enter`](Self::enter) fails from this point on. Closing again is allowed; every
    /// returned future completes when the last holder leaves.
    pub fn close(&self) -> Close<'_> {
        self.state.borrow_mut().closed = true;
        Close {
            gate: self,
            key: None,
        }
    }

    /// Whether [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.state.borrow().closed
    }

    /// How many guards are alive.
    pub fn count(&self) -> usize {
        self.state.borrow().holders
    }

    fn try_enter(&self) -> Result<(), GateClosed> {
        let mut state = self.state.borrow_mut();
        if state.closed {
            return Err(GateClosed);
        }
        state.holders += 1;
        Ok(())
    }

    fn leave(&self) {
        let mut wakers = Wakers::new();
        {
            let mut state = self.state.borrow_mut();
            state.holders = state.holders.saturating_sub(1);
            if state.holders == 0 {
                while let Some(closer) = state.closers.pop_front() {
                    wakers.push(closer.take());
                }
            }
        }
        wakers.wake_all();
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state.try_borrow() {
            Ok(state) => f
                .debug_struct("Gate")
                .field("holders", &state.holders)
                .field("closed", &state.closed)
                .finish(),
            Err(_) => f.write_str("Gate { <borrowed> }"),
        }
    }
}

/// Proof of being inside a [`Gate`]; leaves it when dropped.
///
/// `S` is how the guard reaches its gate: `&Gate` ([`GateGuard`]) or `Rc<Gate>`
/// ([`OwnedGateGuard`]).
#[must_use = "the guard leaves the gate as soon as it is dropped"]
pub struct Guard<S: Deref<Target = Gate>> {
    gate: S,
}

/// A guard that borrows its gate.
pub type GateGuard<'a> = Guard<&'a Gate>;

/// A guard that keeps its gate alive, for work that moves into a `'static` task.
pub type OwnedGateGuard = Guard<Rc<Gate>>;

impl<S: Deref<Target = Gate>> Guard<S> {
    /// The gate this guard holds.
    pub fn gate(&self) -> &S {
        &self.gate
    }
}

/// Cloning a guard enters the gate again, *even if it is closing*: work already inside may hand
/// part of itself to another task, and `close` then waits for that too.
impl<S: Deref<Target = Gate> + Clone> Clone for Guard<S> {
    fn clone(&self) -> Self {
        let mut state = self.gate.state.borrow_mut();
        state.holders = state.holders.saturating_add(1);
        drop(state);
        Self {
            gate: self.gate.clone(),
        }
    }
}

impl<S: Deref<Target = Gate>> Drop for Guard<S> {
    fn drop(&mut self) {
        self.gate.leave();
    }
}

impl<S: Deref<Target = Gate>> fmt::Debug for Guard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

/// The future of [`Gate::close`]: completes when the gate has no holder left.
#[must_use = "the gate is closed already; await the future to wait for the holders to leave"]
pub struct Close<'a> {
    gate: &'a Gate,
    key: Option<WaiterKey>,
}

impl Future for Close<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = this.gate.state.borrow_mut();
        if state.holders == 0 {
            if let Some(key) = this.key.take() {
                state.closers.remove(key);
            }
            return Poll::Ready(());
        }
        match this.key {
            Some(key) => match state.closers.get_mut(key) {
                Some(waker) => store_waker(waker, cx.waker()),
                // Unreachable: only this future frees its slot. Re-queue rather than hang.
                None => this.key = Some(state.closers.push_back(Some(cx.waker().clone()))),
            },
            None => this.key = Some(state.closers.push_back(Some(cx.waker().clone()))),
        }
        Poll::Pending
    }
}

impl Drop for Close<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.gate.state.borrow_mut().closers.remove(key);
        }
    }
}

impl fmt::Debug for Close<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Close").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_util::{poll_noop, poll_with, CountingWaker};

    #[test]
    fn close_with_no_holders_completes_at_once() {
        let gate = Gate::new();
        assert!(poll_noop(&mut gate.close()).is_ready());
        assert!(gate.is_closed());
    }

    #[test]
    fn close_waits_for_every_holder_and_wakes_once_at_the_last() {
        let gate = Gate::new();
        let first = gate.enter();
        let second = gate.enter();
        assert_eq!(gate.count(), 2);
        let (counter, waker) = CountingWaker::new();
        let mut close = gate.close();
        assert!(poll_with(&mut close, &waker).is_pending());
        drop(first);
        assert_eq!(counter.wakes(), 0);
        assert!(poll_with(&mut close, &waker).is_pending());
        drop(second);
        assert_eq!(counter.wakes(), 1);
        assert_eq!(gate.count(), 0);
        assert!(poll_noop(&mut close).is_ready());
    }

    #[test]
    fn enter_fails_as_soon_as_close_is_called_even_unpolled() {
        let gate = Gate::new();
        let close = gate.close();
        assert_eq!(gate.enter().map(|_| ()), Err(GateClosed));
        assert_eq!(gate.check(), Err(GateClosed));
        drop(close);
        // Dropping the close future does not reopen the gate.
        assert!(gate.is_closed());
        assert_eq!(gate.enter().map(|_| ()), Err(GateClosed));
    }

    #[test]
    fn owned_guard_keeps_the_gate_alive() {
        let gate = Rc::new(Gate::new());
        let guard = gate.enter_owned();
        assert_eq!(Rc::strong_count(&gate), 2);
        let mut close = gate.close();
        assert!(poll_noop(&mut close).is_pending());
        drop(guard);
        assert!(poll_noop(&mut close).is_ready());
        drop(close);
        assert_eq!(Rc::strong_count(&gate), 1);
    }

    #[test]
    fn cloned_guard_counts_even_while_closing() {
        let gate = Gate::new();
        let Ok(guard) = gate.enter() else {
            panic!("open gate refused entry");
        };
        let mut close = gate.close();
        let clone = guard.clone();
        assert_eq!(gate.count(), 2);
        drop(guard);
        assert!(poll_noop(&mut close).is_pending());
        drop(clone);
        assert!(poll_noop(&mut close).is_ready());
    }

    #[test]
    fn every_close_future_is_woken_and_dropped_ones_are_forgotten() {
        let gate = Gate::new();
        let guard = gate.enter();
        let (first_counter, first_waker) = CountingWaker::new();
        let (second_counter, second_waker) = CountingWaker::new();
        let mut first = gate.close();
        let mut dropped = gate.close();
        let mut second = gate.close();
        assert!(poll_with(&mut first, &first_waker).is_pending());
        assert!(poll_noop(&mut dropped).is_pending());
        assert!(poll_with(&mut second, &second_waker).is_pending());
        drop(dropped);
        assert_eq!(gate.state.borrow().closers.len(), 2);
        drop(guard);
        assert_eq!((first_counter.wakes(), second_counter.wakes()), (1, 1));
        assert!(poll_noop(&mut first).is_ready());
        assert!(poll_noop(&mut second).is_ready());
    }
}
