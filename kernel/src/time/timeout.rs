//! `timeout` and `timeout_at`.
#![allow(unsafe_code)] // pin projection of `Timeout::future`

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use seastar_hal::Instant;

use super::sleep::{sleep, sleep_until, Sleep};

/// A [`timeout`] ran out before its future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline has elapsed")]
#[non_exhaustive]
pub struct Elapsed;

/// Run `future` for at most `duration` (from now): `Err(Elapsed)` if it is not done by then,
/// in which case it is dropped with the `Timeout`.
///
/// # Panics
///
/// Outside an executor.
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep(duration),
    }
}

/// Like [`timeout`], with an absolute deadline. [`Instant::MAX`] means no timeout.
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep_until(deadline),
    }
}

/// Future returned by [`timeout`] and [`timeout_at`].
///
/// Each poll polls the inner future first, so a future that is ready wins even if the
/// deadline has also passed, and one that completes on its first poll never registers a
/// timer.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Timeout<F> {
    // Structurally pinned; see `poll`.
    future: F,
    sleep: Sleep,
}

impl<F> Timeout<F> {
    /// The inner future.
    pub fn get_ref(&self) -> &F {
        &self.future
    }

    /// The inner future, mutably (only for an `Unpin` future, or before pinning).
    pub fn get_mut(&mut self) -> &mut F {
        &mut self.future
    }

    /// The inner future, dropping the timer.
    pub fn into_inner(self) -> F {
        self.future
    }

    /// When the timeout runs out.
    pub fn deadline(&self) -> Instant {
        self.sleep.deadline()
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned and `sleep` is not: `future` is never moved
        // out of a pinned `Timeout` (the by-value accessors need `Timeout` unpinned, and the
        // only `&mut F` accessor, `get_mut`, needs `&mut Timeout`, which a pinned `!Unpin`
        // `Timeout` does not hand out); `Timeout` has no `Drop` impl that could move it; and
        // `Timeout` is `Unpin` only when `F` is (auto trait, `Sleep` is `Unpin`). `sleep` is
        // only used through `&mut`, which is fine as it is `Unpin` and not structurally pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above; `this.future` stays where it is until the `Timeout` is dropped.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(out) = future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}
