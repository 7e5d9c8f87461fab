use alloc::rc::Rc;
use core::cell::Cell;
use core::time::Duration;

use crate::Instant;

/// Virtual time shared by a simulated core and its I/O driver. Only moves forward.
#[derive(Clone, Debug, Default)]
pub struct SimClock {
    inner: Rc<ClockState>,
}

#[derive(Debug, Default)]
struct ClockState {
    now: Cell<Instant>,
    parks: Cell<u64>,
}

impl SimClock {
    /// A clock at [`Instant::ZERO`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.inner.now.get()
    }

    /// Move time forward to `t` (no-op if `t` is in the past).
    pub fn advance_to(&self, t: Instant) {
        if t > self.now() {
            self.inner.now.set(t);
        }
    }

    /// Move time forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.advance_to(self.now() + d);
    }

    pub(super) fn count_park(&self) {
        self.inner.parks.set(self.inner.parks.get() + 1);
    }

    pub(super) fn parks(&self) -> u64 {
        self.inner.parks.get()
    }
}
