//! Core-local synchronisation: [`oneshot`] and bounded [`mpsc`] channels, a [`Semaphore`] with
//! units, a [`Gate`] for graceful shutdown and [`Notify`].
//!
//! # Core-local
//!
//! Every primitive here lives on one core and is shared between the tasks of that core only:
//! there are no atomics and no locks, only `Cell`/`RefCell`/`Rc`. The types are therefore
//! `!Sync`, and the channel halves (which hold an `Rc`) are also `!Send`; to talk to another
//! core, send a message through the smp queues. The primitives that are not built on an `Rc`
//! ([`Semaphore`], [`Gate`], [`Notify`]) are `Send`, so one can be built on one thread and moved
//! to the core that will use it before any task borrows it.
//!
//! They wake tasks through [`core::task::Waker`] and nothing else, so they work with any
//! executor, not only the kernel's.
//!
//! # Fairness and cancellation
//!
//! Waiters are served in strict FIFO order: a [`Semaphore`] waiter that needs more units than
//! are available blocks every later waiter, however small, so no waiter starves.
//!
//! Every future here is cancellation-safe: dropping it removes it from its wait list, and
//! whatever it had been granted but not yet observed is handed on rather than lost (units go
//! back to the semaphore, a `notify_one` goes to the next waiter, a reserved channel slot goes
//! to the next waiting sender).
//!
//! Futures that have completed return [`Poll::Pending`](core::task::Poll::Pending) if polled
//! again (like a fused future) instead of panicking; the futures of this module never need to be
//! polled after they completed.

pub mod gate;
pub mod mpsc;
pub mod notify;
pub mod oneshot;
pub mod semaphore;
mod wait_list;

#[cfg(test)]
pub(crate) mod test_util;

pub use gate::{Gate, GateClosed, GateGuard, OwnedGateGuard};
pub use notify::Notify;
pub use semaphore::{
    OwnedSemaphoreUnits, Semaphore, SemaphoreError, SemaphoreUnits, TryAcquireError,
};

#[cfg(test)]
mod tests {
    //! Compile-time checks that the primitives stay core-local.
    use super::*;

    /// `check` resolves only if `T` is not `Sync`: for a `Sync` type both impls apply and the
    /// call is ambiguous, which fails to compile.
    trait AmbiguousIfSync<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}

    /// The same for `Send`.
    trait AmbiguousIfSend<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}

    #[test]
    fn primitives_are_not_sync_and_channels_are_not_send() {
        <Semaphore as AmbiguousIfSync<_>>::check();
        <Gate as AmbiguousIfSync<_>>::check();
        <Notify as AmbiguousIfSync<_>>::check();
        <SemaphoreUnits<'_> as AmbiguousIfSend<_>>::check();
        <OwnedSemaphoreUnits as AmbiguousIfSend<_>>::check();
        <GateGuard<'_> as AmbiguousIfSend<_>>::check();
        <OwnedGateGuard as AmbiguousIfSend<_>>::check();
        <oneshot::Sender<u8> as AmbiguousIfSend<_>>::check();
        <oneshot::Receiver<u8> as AmbiguousIfSend<_>>::check();
        <mpsc::Sender<u8> as AmbiguousIfSend<_>>::check();
        <mpsc::Receiver<u8> as AmbiguousIfSend<_>>::check();
    }
}
