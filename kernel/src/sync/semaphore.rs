//! A counting semaphore with units, after Seastar's `semaphore`.
//!
//! A [`Semaphore`] holds a number of units. [`Semaphore::acquire`]`(n)` waits until `n` units
//! are available *and* every earlier waiter has been served, then takes them and returns a
//! guard ([`Units`]) that gives them back when dropped. [`Semaphore::signal`] adds units,
//! [`Semaphore::broken`] fails every current and future waiter.
//!
//! ```
//! # use seastar_kernel::sync::Semaphore;
//! # async fn example() -> Result<(), seastar_kernel::sync::SemaphoreError> {
//! // At most 64 KiB of requests in flight.
//! let memory = Semaphore::new(64 * 1024);
//! let request_len = 1500;
//! let units = memory.acquire(request_len).await?;
//! // ... handle the request; the units go back when `units` is dropped.
//! drop(units);
//! # Ok(()) }
//! ```
//!
//! # Strict FIFO
//!
//! Waiters are served in the order they first polled. A waiter asking for more units than are
//! available blocks every waiter behind it, even those that would fit: a large request is never
//! starved by a stream of small ones. A request for more units than the semaphore will ever
//! hold waits forever (the semaphore has no maximum: [`Semaphore::signal`] may always add more),
//! so size requests against the initial count.
//!
//! # Cancellation
//!
//! Dropping an [`Acquire`] future removes it from the queue; if it had already been granted its
//! units but not polled since, the units return to the semaphore. Either way the waiters behind
//! it are re-examined, since the dropped one may have been the head that blocked them.

use alloc::rc::Rc;
use core::cell::RefCell;
use core::fmt;
use core::future::Future;
use core::mem;
use core::ops::Deref;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::wait_list::{store_waker, WaitList, WaiterKey, Wakers};

/// Why an [`acquire`](Semaphore::acquire) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SemaphoreError {
    /// [`Semaphore::broken`] was called before the units could be granted.
    #[error("semaphore is broken")]
    Broken,
}

/// Why a [`try_acquire`](Semaphore::try_acquire) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// Not enough units are available, or other tasks are already waiting (taking units ahead
    /// of them would break FIFO order).
    #[error("not enough semaphore units available without waiting")]
    WouldBlock,
    /// [`Semaphore::broken`] was called.
    #[error("semaphore is broken")]
    Broken,
}

/// A units guard was asked to give up more units than it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot take {requested} units out of a guard holding {held}")]
pub struct NotEnoughUnits {
    /// The units the guard holds.
    pub held: usize,
    /// The units asked for.
    pub requested: usize,
}

/// A core-local counting semaphore with units, FIFO waiters and a broken state.
///
/// See the [module documentation](self) for the semantics. `Send` but `!Sync`: it can be moved
/// to the core that uses it but never shared between cores.
pub struct Semaphore {
    state: RefCell<State>,
}

#[derive(Debug)]
struct State {
    available: usize,
    broken: bool,
    waiters: WaitList<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    units: usize,
    waker: Option<core::task::Waker>,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Waiting,
    Granted,
    Broken,
}

impl State {
    /// Hands units to the waiters at the head of the queue for as long as the head fits.
    fn grant_waiters(&mut self, wakers: &mut Wakers) {
        while let Some(head) = self.waiters.front() {
            if head.units > self.available {
                break;
            }
            let Some(waiter) = self.waiters.pop_front() else {
                break;
            };
            self.available -= waiter.units;
            waiter.outcome = Outcome::Granted;
            wakers.push(waiter.waker.take());
        }
    }
}

impl Semaphore {
    /// A semaphore holding `units` units.
    pub const fn new(units: usize) -> Self {
        Self {
            state: RefCell::new(State {
                available: units,
                broken: false,
                waiters: WaitList::new(),
            }),
        }
    }

    /// The units available right now. Waiters may still be queued when this is non-zero: the
    /// head waiter needs more than this.
    pub fn available_units(&self) -> usize {
        self.state.borrow().available
    }

    /// How many acquires are queued, waiting for units.
    pub fn waiters(&self) -> usize {
        self.state.borrow().waiters.len()
    }

    /// Whether [`broken`](Self::broken) was called.
    pub fn is_broken(&self) -> bool {
        self.state.borrow().broken
    }

    /// Waits for `units` units and takes them, in FIFO order with the other waiters.
    ///
    /// The future joins the queue when it is first polled. Its output is a guard that returns
    /// the units when dropped, or [`SemaphoreError::Broken`] if the semaphore is broken before
    /// the units are granted. Asking for 0 units still waits for the earlier waiters.
    pub fn acquire(&self, units: usize) -> Acquire<&Self> {
        Acquire::new(self, units)
    }

    /// Like [`acquire`](Self::acquire), for a semaphore behind an `Rc`: the guard keeps the
    /// semaphore alive, so it can move into a `'static` task.
    pub fn acquire_owned(self: &Rc<Self>, units: usize) -> Acquire<Rc<Self>> {
        Acquire::new(Rc::clone(self), units)
    }

    /// Takes `units` units if they are available now and nobody is waiting.
    pub fn try_acquire(&self, units: usize) -> Result<SemaphoreUnits<'_>, TryAcquireError> {
        self.take_now(units)?;
        Ok(Units::new(self, units))
    }

    /// Like [`try_acquire`](Self::try_acquire), returning a guard that keeps the semaphore
    /// alive.
    pub fn try_acquire_owned(
        self: &Rc<Self>,
        units: usize,
    ) -> Result<OwnedSemaphoreUnits, TryAcquireError> {
        self.take_now(units)?;
        Ok(Units::new(Rc::clone(self), units))
    }

    /// Adds `units` units and serves the waiters they unblock.
    ///
    /// The count saturates at `usize::MAX` rather than overflowing.
    pub fn signal(&self, units: usize) {
        let mut wakers = Wakers::new();
        {
            let mut state = self.state.borrow_mut();
            state.available = state.available.saturating_add(units);
            state.grant_waiters(&mut wakers);
        }
        wakers.wake_all();
    }

    /// Breaks the semaphore: every queued acquire fails with [`SemaphoreError::Broken`] and so
    /// does every later one. Units already granted stay valid and still return on drop.
    ///
    /// This is how a service shutting down releases the tasks blocked on its semaphores.
    pub fn broken(&self) {
        let mut wakers = Wakers::new();
        {
            let mut state = self.state.borrow_mut();
            state.broken = true;
            while let Some(waiter) = state.waiters.pop_front() {
                waiter.outcome = Outcome::Broken;
                wakers.push(waiter.waker.take());
            }
        }
        wakers.wake_all();
    }

    fn take_now(&self, units: usize) -> Result<(), TryAcquireError> {
        let mut state = self.state.borrow_mut();
        if state.broken {
            return Err(TryAcquireError::Broken);
        }
        if !state.waiters.is_empty() || state.available < units {
            return Err(TryAcquireError::WouldBlock);
        }
        state.available -= units;
        Ok(())
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state.try_borrow() {
            Ok(state) => f
                .debug_struct("Semaphore")
                .field("available", &state.available)
                .field("waiters", &state.waiters.len())
                .field("broken", &state.broken)
                .finish(),
            Err(_) => f.write_str("Semaphore { <borrowed> }"),
        }
    }
}

/// Units taken from a [`Semaphore`], returned to it when dropped.
///
/// `S` is how the guard reaches its semaphore: `&Semaphore` ([`SemaphoreUnits`]) or
/// `Rc<Semaphore>` ([`OwnedSemaphoreUnits`]).
#[must_use = "the units return to the semaphore as soon as the guard is dropped"]
pub struct Units<S: Deref<Target = Semaphore>> {
    semaphore: S,
    units: usize,
}

/// Units that borrow their semaphore.
pub type SemaphoreUnits<'a> = Units<&'a Semaphore>;

/// Units that keep their semaphore alive, for guards that move into `'static` tasks.
pub type OwnedSemaphoreUnits = Units<Rc<Semaphore>>;

impl<S: Deref<Target = Semaphore>> Units<S> {
    fn new(semaphore: S, units: usize) -> Self {
        Self { semaphore, units }
    }

    /// How many units the guard holds.
    pub fn units(&self) -> usize {
        self.units
    }

    /// The semaphore the units belong to.
    pub fn semaphore(&self) -> &S {
        &self.semaphore
    }

    /// Returns `units` of the held units to the semaphore now, keeping the rest.
    pub fn return_units(&mut self, units: usize) -> Result<(), NotEnoughUnits> {
        self.take(units)?;
        self.semaphore.signal(units);
        Ok(())
    }

    /// Returns every held unit to the semaphore now; the guard then holds 0.
    pub fn return_all(&mut self) {
        let units = mem::take(&mut self.units);
        self.semaphore.signal(units);
    }

    /// Gives up the units *without* returning them: the semaphore's count stays lower until
    /// someone [`signal`](Semaphore::signal)s. Returns how many units that was.
    pub fn release(mut self) -> usize {
        mem::take(&mut self.units)
    }

    fn take(&mut self, units: usize) -> Result<(), NotEnoughUnits> {
        self.units = self.units.checked_sub(units).ok_or(NotEnoughUnits {
            held: self.units,
            requested: units,
        })?;
        Ok(())
    }
}

impl<S: Deref<Target = Semaphore> + Clone> Units<S> {
    /// Moves `units` of the held units into a new guard on the same semaphore.
    pub fn split(&mut self, units: usize) -> Result<Self, NotEnoughUnits> {
        self.take(units)?;
        Ok(Self::new(self.semaphore.clone(), units))
    }
}

impl<S: Deref<Target = Semaphore>> Drop for Units<S> {
    fn drop(&mut self) {
        if self.units > 0 {
            self.semaphore.signal(self.units);
        }
    }
}

impl<S: Deref<Target = Semaphore>> fmt::Debug for Units<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Units")
            .field("units", &self.units)
            .finish_non_exhaustive()
    }
}

/// The future of [`Semaphore::acquire`] and [`Semaphore::acquire_owned`].
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<S: Deref<Target = Semaphore>> {
    semaphore: S,
    units: usize,
    progress: Progress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    NotPolled,
    Queued(WaiterKey),
    Done,
}

impl<S: Deref<Target = Semaphore>> Acquire<S> {
    fn new(semaphore: S, units: usize) -> Self {
        Self {
            semaphore,
            units,
            progress: Progress::NotPolled,
        }
    }

    fn poll_acquire(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SemaphoreError>> {
        let mut state = self.semaphore.state.borrow_mut();
        match self.progress {
            Progress::NotPolled => {
                if state.broken {
                    self.progress = Progress::Done;
                    return Poll::Ready(Err(SemaphoreError::Broken));
                }
                if state.waiters.is_empty() && state.available >= self.units {
                    state.available -= self.units;
                    self.progress = Progress::Done;
                    return Poll::Ready(Ok(()));
                }
                let key = state.waiters.push_back(Waiter {
                    units: self.units,
                    waker: Some(cx.waker().clone()),
                    outcome: Outcome::Waiting,
                });
                self.progress = Progress::Queued(key);
                Poll::Pending
            }
            Progress::Queued(key) => {
                let outcome = match state.waiters.get_mut(key) {
                    Some(waiter) if waiter.outcome == Outcome::Waiting => {
                        store_waker(&mut waiter.waker, cx.waker());
                        return Poll::Pending;
                    }
                    Some(waiter) => waiter.outcome,
                    // Unreachable: only this future frees its slot. Failing beats hanging.
                    None => Outcome::Broken,
                };
                state.waiters.remove(key);
                self.progress = Progress::Done;
                match outcome {
                    Outcome::Granted => Poll::Ready(Ok(())),
                    Outcome::Waiting | Outcome::Broken => Poll::Ready(Err(SemaphoreError::Broken)),
                }
            }
            Progress::Done => Poll::Pending,
        }
    }
}

impl<S: Deref<Target = Semaphore> + Clone + Unpin> Future for Acquire<S> {
    type Output = Result<Units<S>, SemaphoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.poll_acquire(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Units::new(this.semaphore.clone(), this.units))),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: Deref<Target = Semaphore>> Drop for Acquire<S> {
    fn drop(&mut self) {
        let Progress::Queued(key) = self.progress else {
            return;
        };
        let mut wakers = Wakers::new();
        {
            let mut state = self.semaphore.state.borrow_mut();
            if let Some(waiter) = state.waiters.remove(key) {
                if waiter.outcome == Outcome::Granted {
                    state.available = state.available.saturating_add(waiter.units);
                }
                // Even without units to give back, this waiter may have been the head that
                // blocked the ones behind it.
                state.grant_waiters(&mut wakers);
            }
        }
        wakers.wake_all();
    }
}

impl<S: Deref<Target = Semaphore>> fmt::Debug for Acquire<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("units", &self.units)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_util::{callback_waker, poll_noop, poll_with, CountingWaker};
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn ready_units<S: Deref<Target = Semaphore> + Clone + Unpin>(
        acquire: &mut Acquire<S>,
    ) -> Units<S> {
        match poll_noop(acquire) {
            Poll::Ready(Ok(units)) => units,
            other => panic!(
                "expected units, got {:?}",
                other.map(|r| r.map(|u| u.units()))
            ),
        }
    }

    #[test]
    fn acquires_immediately_when_units_are_available() {
        let sem = Semaphore::new(3);
        let units = ready_units(&mut sem.acquire(2));
        assert_eq!(units.units(), 2);
        assert_eq!(sem.available_units(), 1);
        drop(units);
        assert_eq!(sem.available_units(), 3);
    }

    #[test]
    fn waiter_is_woken_exactly_when_enough_units_return() {
        let sem = Semaphore::new(0);
        let (counter, waker) = CountingWaker::new();
        let mut acquire = sem.acquire(3);
        assert!(poll_with(&mut acquire, &waker).is_pending());
        assert_eq!(sem.waiters(), 1);

        sem.signal(2);
        assert_eq!(counter.wakes(), 0, "2 units of 3 must not wake the waiter");
        assert_eq!(sem.available_units(), 2);

        sem.signal(1);
        assert_eq!(counter.wakes(), 1);
        // Granted on signal, before the waiter runs: nobody can take them in between.
        assert_eq!(sem.available_units(), 0);
        assert_eq!(sem.waiters(), 0);
        let units = ready_units(&mut acquire);
        assert_eq!(units.units(), 3);
        assert_eq!(counter.wakes(), 1);
    }

    #[test]
    fn repolling_with_a_new_waker_wakes_the_new_one() {
        let sem = Semaphore::new(0);
        let (old_counter, old_waker) = CountingWaker::new();
        let (new_counter, new_waker) = CountingWaker::new();
        let mut acquire = sem.acquire(1);
        assert!(poll_with(&mut acquire, &old_waker).is_pending());
        assert!(poll_with(&mut acquire, &new_waker).is_pending());
        sem.signal(1);
        assert_eq!(old_counter.wakes(), 0);
        assert_eq!(new_counter.wakes(), 1);
    }

    #[test]
    fn large_head_waiter_blocks_later_small_ones() {
        let sem = Semaphore::new(2);
        let mut big = sem.acquire(5);
        let mut small = sem.acquire(1);
        assert!(poll_noop(&mut big).is_pending());
        assert!(
            poll_noop(&mut small).is_pending(),
            "small must queue behind big"
        );
        assert_eq!(
            sem.try_acquire(1).map(|u| u.units()),
            Err(TryAcquireError::WouldBlock),
            "try_acquire must not jump the queue either"
        );
        sem.signal(3);
        assert_eq!(ready_units(&mut big).units(), 5);
        // big's units came back when its guard dropped: small proceeds.
        assert_eq!(ready_units(&mut small).units(), 1);
    }

    #[test]
    fn waiters_are_served_in_fifo_order() {
        let sem = Semaphore::new(0);
        let counters: Vec<_> = (0..3).map(|_| CountingWaker::new()).collect();
        let mut acquires: Vec<_> = (0..3).map(|_| sem.acquire(1)).collect();
        for (acquire, (_, waker)) in acquires.iter_mut().zip(&counters) {
            assert!(poll_with(acquire, waker).is_pending());
        }
        for served in 0..3 {
            sem.signal(1);
            let woken: Vec<usize> = counters.iter().map(|(c, _)| c.wakes()).collect();
            let expected: Vec<usize> = (0..3).map(|i| usize::from(i <= served)).collect();
            assert_eq!(woken, expected);
        }
    }

    #[test]
    fn zero_units_still_wait_behind_earlier_waiters() {
        let sem = Semaphore::new(0);
        let mut first = sem.acquire(1);
        let mut zero = sem.acquire(0);
        assert!(poll_noop(&mut first).is_pending());
        assert!(poll_noop(&mut zero).is_pending());
        sem.signal(1);
        assert!(poll_noop(&mut zero).is_ready());
        assert!(poll_noop(&mut first).is_ready());
    }

    #[test]
    fn dropping_a_granted_but_unpolled_acquire_returns_its_units_to_the_next_waiter() {
        let sem = Semaphore::new(0);
        let (next_counter, next_waker) = CountingWaker::new();
        let mut granted = sem.acquire(2);
        let mut next = sem.acquire(2);
        assert!(poll_noop(&mut granted).is_pending());
        assert!(poll_with(&mut next, &next_waker).is_pending());
        sem.signal(2);
        assert_eq!(next_counter.wakes(), 0);
        drop(granted);
        assert_eq!(next_counter.wakes(), 1);
        assert_eq!(ready_units(&mut next).units(), 2);
    }

    #[test]
    fn dropping_a_granted_acquire_with_nobody_waiting_restores_the_count() {
        let sem = Semaphore::new(0);
        let mut acquire = sem.acquire(4);
        assert!(poll_noop(&mut acquire).is_pending());
        sem.signal(4);
        assert_eq!(sem.available_units(), 0);
        drop(acquire);
        assert_eq!(sem.available_units(), 4);
    }

    #[test]
    fn dropping_a_blocking_head_waiter_unblocks_the_ones_behind() {
        let sem = Semaphore::new(3);
        let (counter, waker) = CountingWaker::new();
        let mut big = sem.acquire(10);
        let mut small = sem.acquire(2);
        assert!(poll_noop(&mut big).is_pending());
        assert!(poll_with(&mut small, &waker).is_pending());
        drop(big);
        assert_eq!(counter.wakes(), 1);
        let units = ready_units(&mut small);
        assert_eq!(units.units(), 2);
        assert_eq!(sem.available_units(), 1);
    }

    #[test]
    fn dropping_a_waiter_in_the_middle_keeps_the_others_queued() {
        let sem = Semaphore::new(0);
        let mut a = sem.acquire(1);
        let mut b = sem.acquire(1);
        let mut c = sem.acquire(1);
        for acquire in [&mut a, &mut b, &mut c] {
            assert!(poll_noop(acquire).is_pending());
        }
        drop(b);
        assert_eq!(sem.waiters(), 2);
        sem.signal(1);
        assert!(poll_noop(&mut c).is_pending());
        assert!(poll_noop(&mut a).is_ready());
    }

    #[test]
    fn broken_fails_current_and_future_waiters_but_not_held_units() {
        let sem = Semaphore::new(1);
        let held = ready_units(&mut sem.acquire(1));
        let (counter, waker) = CountingWaker::new();
        let mut waiting = sem.acquire(1);
        assert!(poll_with(&mut waiting, &waker).is_pending());

        sem.broken();
        assert!(sem.is_broken());
        assert_eq!(counter.wakes(), 1);
        assert!(matches!(
            poll_noop(&mut waiting),
            Poll::Ready(Err(SemaphoreError::Broken))
        ));
        assert!(matches!(
            poll_noop(&mut sem.acquire(0)),
            Poll::Ready(Err(SemaphoreError::Broken))
        ));
        assert_eq!(
            sem.try_acquire(0).map(|u| u.units()),
            Err(TryAcquireError::Broken)
        );
        drop(held);
        assert_eq!(sem.available_units(), 1);
    }

    #[test]
    fn dropping_a_broken_waiter_gives_back_nothing() {
        let sem = Semaphore::new(0);
        let mut waiting = sem.acquire(1);
        assert!(poll_noop(&mut waiting).is_pending());
        sem.broken();
        drop(waiting);
        assert_eq!(sem.available_units(), 0);
    }

    #[test]
    fn completed_acquire_stays_pending_when_polled_again() {
        let sem = Semaphore::new(1);
        let mut acquire = sem.acquire(1);
        let units = ready_units(&mut acquire);
        assert!(poll_noop(&mut acquire).is_pending());
        assert_eq!(sem.available_units(), 0);
        drop(units);
        drop(acquire);
        assert_eq!(sem.available_units(), 1);
    }

    #[test]
    fn split_and_return_units_move_exact_amounts() {
        let sem = Semaphore::new(10);
        let mut units = ready_units(&mut sem.acquire(10));
        let part = units.split(4).map_err(|e| e.held);
        let Ok(part) = part else {
            panic!("split failed: {part:?}");
        };
        assert_eq!((units.units(), part.units()), (6, 4));
        assert_eq!(
            units.split(7).map(|u| u.units()),
            Err(NotEnoughUnits {
                held: 6,
                requested: 7
            })
        );
        assert_eq!(units.return_units(2), Ok(()));
        assert_eq!(sem.available_units(), 2);
        assert_eq!(
            units.return_units(5),
            Err(NotEnoughUnits {
                held: 4,
                requested: 5
            })
        );
        drop(part);
        assert_eq!(sem.available_units(), 6);
        units.return_all();
        assert_eq!(units.units(), 0);
        assert_eq!(sem.available_units(), 10);
    }

    #[test]
    fn return_units_wakes_a_waiter() {
        let sem = Semaphore::new(2);
        let mut units = ready_units(&mut sem.acquire(2));
        let (counter, waker) = CountingWaker::new();
        let mut waiting = sem.acquire(1);
        assert!(poll_with(&mut waiting, &waker).is_pending());
        assert_eq!(units.return_units(1), Ok(()));
        assert_eq!(counter.wakes(), 1);
    }

    #[test]
    fn release_keeps_units_out_of_the_semaphore() {
        let sem = Semaphore::new(5);
        let units = ready_units(&mut sem.acquire(3));
        assert_eq!(units.release(), 3);
        assert_eq!(sem.available_units(), 2);
    }

    #[test]
    fn signal_saturates_instead_of_overflowing() {
        let sem = Semaphore::new(usize::MAX - 1);
        sem.signal(5);
        assert_eq!(sem.available_units(), usize::MAX);
    }

    #[test]
    fn owned_units_outlive_the_borrow_and_return_on_drop() {
        let sem = Rc::new(Semaphore::new(2));
        let mut acquire = sem.acquire_owned(2);
        let units: OwnedSemaphoreUnits = match poll_noop(&mut acquire) {
            Poll::Ready(Ok(units)) => units,
            _ => panic!("expected units"),
        };
        drop(acquire);
        assert_eq!(Rc::strong_count(&sem), 2);
        assert_eq!(sem.available_units(), 0);
        assert!(Rc::ptr_eq(units.semaphore(), &sem));
        assert!(matches!(
            sem.try_acquire_owned(1),
            Err(TryAcquireError::WouldBlock)
        ));
        drop(units);
        assert_eq!(Rc::strong_count(&sem), 1);
        assert_eq!(sem.available_units(), 2);
    }

    #[test]
    fn a_waker_that_reenters_the_semaphore_does_not_panic() {
        let sem = Rc::new(Semaphore::new(0));
        let reentering = Rc::clone(&sem);
        // Takes a unit from inside the wake-up, as a task polled in place would.
        let waker = callback_waker(move || {
            if let Ok(units) = reentering.try_acquire(1) {
                units.release();
            }
        });
        let mut acquire = sem.acquire(1);
        assert!(poll_with(&mut acquire, &waker).is_pending());
        sem.signal(2);
        assert_eq!(sem.available_units(), 0);
        drop(acquire);
        assert_eq!(sem.available_units(), 1);
    }

    // Model-based test: random acquires, polls, drops of futures and guards, signals and
    // try_acquires, checked against a plain FIFO model of the semaphore.
    #[derive(Debug, Clone)]
    enum Op {
        /// Create an acquire future for `n` units and poll it once.
        Acquire(usize),
        /// Poll the `i`-th live future (modulo).
        Poll(usize),
        /// Drop the `i`-th live future (modulo): cancellation.
        Cancel(usize),
        /// Drop the `i`-th held guard (modulo).
        Release(usize),
        /// Return one unit of the `i`-th held guard early.
        ReturnOne(usize),
        Signal(usize),
        TryAcquire(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..5_usize).prop_map(Op::Acquire),
            3 => any::<usize>().prop_map(Op::Poll),
            2 => any::<usize>().prop_map(Op::Cancel),
            3 => any::<usize>().prop_map(Op::Release),
            1 => any::<usize>().prop_map(Op::ReturnOne),
            1 => (0..4_usize).prop_map(Op::Signal),
            1 => (0..4_usize).prop_map(Op::TryAcquire),
        ]
    }

    /// A waiting future in the model: its id, units, whether it was granted, and its wakes.
    struct ModelWaiter {
        id: usize,
        units: usize,
        granted: bool,
    }

    struct Live<'a> {
        id: usize,
        acquire: Acquire<&'a Semaphore>,
        counter: alloc::sync::Arc<CountingWaker>,
        waker: core::task::Waker,
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 10 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn matches_a_fifo_model(initial in 0..6_usize, ops in proptest::collection::vec(op(), 0..48)) {
            let sem = Semaphore::new(initial);
            // Model state.
            let mut available = initial;
            let mut queue: Vec<ModelWaiter> = Vec::new(); // not yet granted, FIFO
            let mut granted: Vec<ModelWaiter> = Vec::new(); // granted, not yet polled
            let mut held_total = 0_usize;
            // Real state.
            let mut live: Vec<Live<'_>> = Vec::new();
            let mut guards: Vec<SemaphoreUnits<'_>> = Vec::new();
            let mut next_id = 0;

            // Serves the model queue head-first, as the semaphore must.
            fn serve(available: &mut usize, queue: &mut Vec<ModelWaiter>, granted: &mut Vec<ModelWaiter>) {
                while let Some(head) = queue.first() {
                    if head.units > *available {
                        break;
                    }
                    let mut head = queue.remove(0);
                    *available -= head.units;
                    head.granted = true;
                    granted.push(head);
                }
            }

            for op in ops {
                match op {
                    Op::Acquire(units) => {
                        let id = next_id;
                        next_id += 1;
                        let (counter, waker) = CountingWaker::new();
                        let mut acquire = sem.acquire(units);
                        let polled = poll_with(&mut acquire, &waker);
                        let immediate = queue.is_empty() && available >= units;
                        if immediate {
                            available -= units;
                            held_total += units;
                            match polled {
                                Poll::Ready(Ok(guard)) => guards.push(guard),
                                _ => prop_assert!(false, "acquire({}) should be immediate", units),
                            }
                        } else {
                            prop_assert!(polled.is_pending());
                            queue.push(ModelWaiter { id, units, granted: false });
                            live.push(Live { id, acquire, counter, waker });
                        }
                    }
                    Op::Poll(pick) => {
                        if live.is_empty() { continue; }
                        let index = pick % live.len();
                        let entry = &mut live[index];
                        let polled = poll_with(&mut entry.acquire, &entry.waker);
                        let id = entry.id;
                        if let Some(pos) = granted.iter().position(|w| w.id == id) {
                            let waiter = granted.remove(pos);
                            held_total += waiter.units;
                            match polled {
                                Poll::Ready(Ok(guard)) => {
                                    prop_assert_eq!(guard.units(), waiter.units);
                                    guards.push(guard);
                                }
                                _ => prop_assert!(false, "granted waiter not ready"),
                            }
                            live.remove(index);
                        } else {
                            prop_assert!(polled.is_pending());
                        }
                    }
                    Op::Cancel(pick) => {
                        if live.is_empty() { continue; }
                        let entry = live.remove(pick % live.len());
                        if let Some(pos) = granted.iter().position(|w| w.id == entry.id) {
                            available += granted.remove(pos).units;
                        } else if let Some(pos) = queue.iter().position(|w| w.id == entry.id) {
                            queue.remove(pos);
                        }
                        drop(entry);
                        serve(&mut available, &mut queue, &mut granted);
                    }
                    Op::Release(pick) => {
                        if guards.is_empty() { continue; }
                        let guard = guards.remove(pick % guards.len());
                        available += guard.units();
                        held_total -= guard.units();
                        drop(guard);
                        serve(&mut available, &mut queue, &mut granted);
                    }
                    Op::ReturnOne(pick) => {
                        if guards.is_empty() { continue; }
                        let index = pick % guards.len();
                        let guard = &mut guards[index];
                        let held = guard.units();
                        let result = guard.return_units(1);
                        if held == 0 {
                            prop_assert_eq!(result, Err(NotEnoughUnits { held: 0, requested: 1 }));
                        } else {
                            prop_assert_eq!(result, Ok(()));
                            available += 1;
                            held_total -= 1;
                            serve(&mut available, &mut queue, &mut granted);
                        }
                    }
                    Op::Signal(units) => {
                        sem.signal(units);
                        available += units;
                        serve(&mut available, &mut queue, &mut granted);
                    }
                    Op::TryAcquire(units) => {
                        let result = sem.try_acquire(units);
                        if queue.is_empty() && available >= units {
                            available -= units;
                            held_total += units;
                            match result {
                                Ok(guard) => guards.push(guard),
                                Err(error) => prop_assert!(false, "try_acquire failed: {}", error),
                            }
                        } else {
                            prop_assert_eq!(result.map(|g| g.units()), Err(TryAcquireError::WouldBlock));
                        }
                    }
                }

                prop_assert_eq!(sem.available_units(), available);
                prop_assert_eq!(sem.waiters(), queue.len());
                prop_assert_eq!(guards.iter().map(|g| g.units()).sum::<usize>(), held_total);
                // Exactly the granted waiters have been woken, each once.
                for entry in &live {
                    let expected = usize::from(granted.iter().any(|w| w.id == entry.id));
                    prop_assert_eq!(entry.counter.wakes(), expected);
                }
            }

            // Dropping everything gives every unit back.
            let granted_units: usize = granted.iter().map(|w| w.units).sum();
            drop(live);
            drop(guards);
            prop_assert_eq!(sem.available_units(), available + granted_units + held_total);
            prop_assert_eq!(sem.waiters(), 0);
        }
    }
}
