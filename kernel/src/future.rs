//! Small future combinators the kernel's users need and `core` lacks.
//!
//! [`select`] races two futures and returns the first output, dropping the loser (which
//! cancels it: every kernel future is cancellation-safe, see [`crate::sync`]). It is *biased*:
//! on each poll the first future is polled first, so when both are ready the first wins. Put
//! the future that must win ties first, e.g. a shutdown signal before `accept()`, so a steady
//! stream of connections cannot keep a server from stopping.
//!
//! ```
//! use core::time::Duration;
//! use seastar_hal::sim::SimPlatform;
//! use seastar_kernel::executor::block_on;
//! use seastar_kernel::future::{select, Either};
//! use seastar_kernel::time::sleep;
//!
//! block_on(SimPlatform::new(), async {
//!     let first = select(sleep(Duration::from_secs(1)), sleep(Duration::from_secs(2))).await;
//!     assert!(matches!(first, Either::Left(())));
//! })
//! .unwrap();
//! ```

use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::Poll;

/// The output of [`select`]: which future finished first, with its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first future finished first.
    Left(A),
    /// The second future finished first.
    Right(B),
}

/// Waits for whichever of `a` and `b` completes first and drops the other; `a` wins ties.
///
/// See the [module documentation](self).
pub async fn select<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    // Pinned on this future's own state, so neither input needs to be `Unpin`.
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(out) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(out));
        }
        if let Poll::Ready(out) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(out));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::future::{pending, ready};

    fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
        let mut f = pin!(f);
        f.as_mut().poll(&mut core::task::Context::from_waker(
            core::task::Waker::noop(),
        ))
    }

    #[test]
    fn first_ready_wins_and_ties_go_left() {
        assert_eq!(
            poll_once(select(ready(1), ready('b'))),
            Poll::Ready(Either::Left(1))
        );
        assert_eq!(
            poll_once(select(pending::<u8>(), ready('b'))),
            Poll::Ready(Either::Right('b'))
        );
        assert_eq!(
            poll_once(select(pending::<u8>(), pending::<u8>())),
            Poll::Pending
        );
    }
}
