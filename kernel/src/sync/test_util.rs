//! A manual polling harness for the tests of [`crate::sync`]: no executor, every poll explicit.

use alloc::sync::Arc;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};
use std::task::Wake;

/// A waker that counts how many times it was woken.
#[derive(Debug, Default)]
pub(crate) struct CountingWaker {
    wakes: AtomicUsize,
}

impl CountingWaker {
    /// A fresh counter and a [`Waker`] that bumps it.
    pub(crate) fn new() -> (Arc<Self>, Waker) {
        let counter = Arc::new(Self::default());
        let waker = Waker::from(Arc::clone(&counter));
        (counter, waker)
    }

    /// How many wake-ups happened so far.
    pub(crate) fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `future` once with `waker`.
pub(crate) fn poll_with<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

/// Polls `future` once with a waker that does nothing.
pub(crate) fn poll_noop<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    poll_with(future, Waker::noop())
}

std::thread_local! {
    static CALLBACKS: core::cell::RefCell<alloc::vec::Vec<alloc::rc::Rc<dyn Fn()>>> =
        const { core::cell::RefCell::new(alloc::vec::Vec::new()) };
}

/// Runs a callback of this thread when woken. `Wake` needs `Send + Sync`, which the `Rc`s a
/// core-local callback holds are not; the callback therefore lives in a thread-local table and
/// the waker carries only its index.
#[derive(Debug)]
struct CallbackWaker {
    index: usize,
}

impl Wake for CallbackWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Cloned out first, so the callback may itself create or wake callback wakers.
        let callback = CALLBACKS.with(|callbacks| callbacks.borrow().get(self.index).cloned());
        if let Some(callback) = callback {
            callback();
        }
    }
}

/// A waker that calls `callback` in place when woken, as an executor that polls on wake-up
/// would: it lets tests check that a primitive does not wake while its state is borrowed.
pub(crate) fn callback_waker(callback: impl Fn() + 'static) -> Waker {
    let index = CALLBACKS.with(|callbacks| {
        let mut callbacks = callbacks.borrow_mut();
        callbacks.push(alloc::rc::Rc::new(callback));
        callbacks.len() - 1
    });
    Waker::from(Arc::new(CallbackWaker { index }))
}
