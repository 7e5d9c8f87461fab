//! `Interval`: a periodic timer.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use seastar_hal::Instant;

use super::sleep::{sleep_until, Sleep};
use crate::executor;

/// What an [`Interval`] does when a tick is noticed only after the next one was due (the
/// core was stalled, or the task did not call [`Interval::tick`] in time).
///
/// A tick counts as missed when the clock has moved *past* the following tick's time; a
/// tick that is merely late keeps the schedule in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissedTickBehavior {
    /// Deliver the missed ticks back to back, as fast as `tick` is called, until caught up;
    /// the schedule stays `start + n * period`. Use when every tick counts.
    Burst,
    /// Drop the missed ticks and resume at the first tick of the original schedule that is
    /// not in the past. Ticks stay aligned to `start + n * period`.
    ///
    /// This is the default: a core that fell behind should not be handed a burst of
    /// catch-up work on top, and periodic jobs (metrics, heartbeats, Raft ticks) want a
    /// steady cadence rather than a count (for Raft, lost ticks only delay elections, while
    /// a burst could start one spuriously).
    #[default]
    Skip,
    /// Drop the missed ticks and restart the schedule one period after now.
    Delay,
}

impl MissedTickBehavior {
    /// The tick after the one scheduled at `scheduled`, noticed at `now`.
    fn next(self, scheduled: Instant, now: Instant, period: Duration) -> Instant {
        let on_time = scheduled + period;
        if now <= on_time {
            return on_time;
        }
        match self {
            MissedTickBehavior::Burst => on_time,
            MissedTickBehavior::Delay => now + period,
            MissedTickBehavior::Skip => {
                // The first `scheduled + k * period >= now`; `k >= 2` as `now > on_time`.
                let p = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX).max(1);
                let behind = (now - scheduled).as_nanos();
                let behind = u64::try_from(behind).unwrap_or(u64::MAX);
                let k = behind.div_ceil(p);
                let offset = k.saturating_mul(p);
                scheduled + Duration::from_nanos(offset)
            }
        }
    }
}

/// A tick every `period`, the first one right away.
///
/// # Panics
///
/// Outside an executor.
pub fn interval(period: Duration) -> Interval {
    interval_at(executor::now(), period)
}

/// A tick every `period`, the first one at `start`. A zero `period` is taken as 1 ns.
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    Interval {
        sleep: sleep_until(start),
        period: period.max(Duration::from_nanos(1)),
        missed: MissedTickBehavior::default(),
    }
}

/// A periodic timer: [`tick`](Self::tick) completes at `start`, `start + period`,
/// `start + 2 * period`… (see [`MissedTickBehavior`] for when it falls behind).
///
/// One timer is re-armed per tick, so a long-lived interval does not grow the wheel.
/// `Unpin` and `!Send`, like [`Sleep`].
#[derive(Debug)]
pub struct Interval {
    /// Sleeps until the next tick; its deadline is that tick's scheduled time.
    sleep: Sleep,
    period: Duration,
    missed: MissedTickBehavior,
}

impl Interval {
    /// Wait for the next tick; returns the time it was scheduled for (not the time it was
    /// noticed).
    pub fn tick(&mut self) -> Tick<'_> {
        Tick { interval: self }
    }

    /// Poll for the next tick, for hand-written futures. Only the waker of the latest poll
    /// is woken.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let scheduled = self.sleep.deadline();
        let next = self.missed.next(scheduled, executor::now(), self.period);
        self.sleep.reset(next);
        Poll::Ready(scheduled)
    }

    /// Restart the schedule: the next tick is one period from now.
    ///
    /// # Panics
    ///
    /// Outside an executor.
    pub fn reset(&mut self) {
        self.reset_at(executor::now() + self.period);
    }

    /// Restart the schedule: the next tick is at `next`, then every period after it.
    pub fn reset_at(&mut self, next: Instant) {
        self.sleep.reset(next);
    }

    /// Make the next tick complete at once (its scheduled time is now).
    ///
    /// # Panics
    ///
    /// Outside an executor.
    pub fn reset_immediately(&mut self) {
        self.reset_at(executor::now());
    }

    /// The period between ticks.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The policy for missed ticks.
    pub fn missed_tick_behavior(&self) -> MissedTickBehavior {
        self.missed
    }

    /// Change the policy for missed ticks (takes effect from the next tick on).
    pub fn set_missed_tick_behavior(&mut self, behavior: MissedTickBehavior) {
        self.missed = behavior;
    }
}

/// Future returned by [`Interval::tick`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Tick<'a> {
    interval: &'a mut Interval,
}

impl Future for Tick<'_> {
    type Output = Instant;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        self.get_mut().interval.poll_tick(cx)
    }
}
