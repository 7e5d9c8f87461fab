//! A deterministic, single-threaded HAL with a virtual clock.
//!
//! Time stands still while tasks run and jumps straight to the next deadline when the core
//! parks, so a test that sleeps for an hour finishes in microseconds and every run is the
//! same. It is the first custom HAL and the model for writing one.
//!
//! Layout: `clock` (virtual time), `io` (the simulated I/O driver: nops and timeouts for now;
//! a simulated network will live beside it).

mod clock;
mod io;

pub use clock::SimClock;
pub use io::SimIo;

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::{Instant, Platform, Unpark};

/// One simulated core.
#[derive(Debug)]
pub struct SimPlatform {
    clock: SimClock,
    io: SimIo,
    unpark: SimUnparker,
}

/// Wakes a [`SimPlatform`]: sets a flag that its next `park` consumes.
#[derive(Clone, Debug, Default)]
pub struct SimUnparker {
    flag: Arc<AtomicBool>,
}

impl Unpark for SimUnparker {
    fn unpark(&self) {
        self.flag.store(true, Ordering::Release);
    }
}

impl SimUnparker {
    fn take(&self) -> bool {
        // Cheap check first so the common "not unparked" case does no write.
        self.flag.load(Ordering::Acquire) && self.flag.swap(false, Ordering::AcqRel)
    }
}

impl Default for SimPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl SimPlatform {
    /// A core whose clock starts at [`Instant::ZERO`].
    pub fn new() -> Self {
        let clock = SimClock::new();
        SimPlatform {
            io: SimIo::new(clock.clone()),
            clock,
            unpark: SimUnparker::default(),
        }
    }

    /// The virtual clock (shared: clones see the same time).
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// Number of times `park` was called: lets tests check that an idle core sleeps.
    pub fn parks(&self) -> u64 {
        self.clock.parks()
    }
}

impl Platform for SimPlatform {
    type Unparker = SimUnparker;
    type Io = SimIo;

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn park(&self, deadline: Option<Instant>) {
        self.clock.count_park();
        if self.io.complete_due() > 0 || self.unpark.take() {
            return;
        }
        if let Some(d) = deadline {
            if d <= self.clock.now() {
                return;
            }
        }
        // Nothing is ready: jump to whichever comes first, the caller's deadline or the
        // earliest simulated I/O.
        let next = match (deadline, self.io.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            Some(t) => {
                self.clock.advance_to(t);
                self.io.complete_due();
            }
            None => self.wait_for_unpark(),
        }
    }

    fn unparker(&self) -> SimUnparker {
        self.unpark.clone()
    }

    fn io(&self) -> &SimIo {
        &self.io
    }
}

impl SimPlatform {
    /// Parked with no deadline and no I/O: only another thread's unpark can wake the core.
    /// With `std`, wait for it (bounded, in real time); without, there is nobody to wait for.
    fn wait_for_unpark(&self) {
        #[cfg(feature = "std")]
        {
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_secs(30) {
                if self.unpark.take() {
                    return;
                }
                std::thread::yield_now();
            }
        }
        panic!("simulated core parked with no deadline, no I/O in flight and no unpark: deadlock");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Completion, Op};
    use core::task::{Context, Poll, Waker};
    use core::time::Duration;

    #[test]
    fn park_jumps_to_deadline() {
        let p = SimPlatform::new();
        p.park(Some(Instant::ZERO + Duration::from_secs(3600)));
        assert_eq!(p.now(), Instant::ZERO + Duration::from_secs(3600));
        // A deadline in the past does not move time.
        p.park(Some(Instant::ZERO));
        assert_eq!(p.now(), Instant::ZERO + Duration::from_secs(3600));
    }

    #[test]
    fn unpark_makes_next_park_return_without_moving_time() {
        let p = SimPlatform::new();
        p.unparker().unpark();
        p.park(Some(Instant::from_nanos(1_000)));
        assert_eq!(p.now(), Instant::ZERO);
        p.park(Some(Instant::from_nanos(1_000)));
        assert_eq!(p.now(), Instant::from_nanos(1_000));
    }

    #[test]
    fn timeout_op_completes_at_its_deadline_and_parks_jump_to_it() {
        let p = SimPlatform::new();
        let mut cx = Context::from_waker(Waker::noop());
        let mut op = Op::timeout(p.io(), Instant::from_nanos(500)).expect("submit");
        assert!(op.poll_complete(&mut cx).is_pending());
        assert_eq!(p.io().in_flight(), 1);
        p.park(None);
        assert_eq!(p.now(), Instant::from_nanos(500));
        match op.poll_complete(&mut cx) {
            Poll::Ready((c, ())) => assert_eq!(c, Completion::done(Ok(0))),
            Poll::Pending => panic!("timeout did not complete"),
        }
        assert_eq!(p.io().in_flight(), 0);
    }

    #[test]
    #[allow(unsafe_code)] // submits a raw op with a stand-in buffer
    fn cancelled_op_keeps_its_buffer_until_completion() {
        use alloc::rc::Rc;
        let p = SimPlatform::new();
        let marker = Rc::new(());
        let keep = marker.clone();
        // SAFETY: a timeout reads no memory; `keep` stands in for a buffer.
        let op = unsafe {
            Op::submit_with(p.io(), keep, |_| crate::io::RawOp::Timeout {
                deadline: Instant::from_nanos(10),
            })
        }
        .expect("submit");
        drop(op);
        assert_eq!(Rc::strong_count(&marker), 2, "driver holds the buffer");
        p.park(None);
        assert_eq!(Rc::strong_count(&marker), 1, "freed once the op finished");
        assert_eq!(p.io().in_flight(), 0);
    }

    use crate::io::IoDriver;
}
