//! Waking a parked core from another thread.
//!
//! Mechanism: an eventfd with an `IORING_OP_READ` always pending in the core's ring. A write
//! to the eventfd completes the read, which ends the core's `io_uring_enter` wait. Chosen over
//! `IORING_OP_MSG_RING` because an unparker may be any thread, not only another core with a
//! ring of its own (MSG_RING needs a source ring, or 6.13+'s ring-less variant), and an eventfd
//! works on every kernel that has io_uring. The read is re-armed inside the next park's enter,
//! so a wake-up costs the target no extra system call.
//!
//! Cost control: a state word. The unparker writes the eventfd only when it moves the state
//! from `PARKED` to `NOTIFIED`; when the core is running it just leaves `NOTIFIED` behind
//! (no system call), and the next `park` sees it and does not block.
//!
//! ```text
//!            unpark()                      park()
//!  RUNNING ───────────> NOTIFIED    RUNNING ──CAS──> PARKED ── enter(wait) ──> RUNNING
//!  PARKED  ───────────> NOTIFIED    NOTIFIED ─CAS fails─> RUNNING, enter(no wait)
//!           + eventfd write
//! ```
//! The race "unpark just before park" is closed by the CAS: the parker publishes `PARKED`
//! and checks for `NOTIFIED` in one atomic step, then enters. An unpark after the CAS sees
//! `PARKED` and writes the eventfd; the pending read completes and the enter returns (or does
//! not sleep at all), whichever side of the kernel's wait check the write lands on.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use seastar_hal::Unpark;

const RUNNING: u8 = 0;
const PARKED: u8 = 1;
const NOTIFIED: u8 = 2;

/// State shared between a core and its unparkers.
#[derive(Debug)]
pub(crate) struct Shared {
    state: AtomicU8,
    eventfd: File,
    writes: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Shared {
            state: AtomicU8::new(RUNNING),
            eventfd: crate::sys::eventfd()?,
            writes: AtomicU64::new(0),
        })
    }

    pub(crate) fn eventfd(&self) -> &File {
        &self.eventfd
    }

    /// Number of eventfd writes so far.
    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// About to block: `true` if the core may sleep, `false` if an unpark is pending (it is
    /// consumed; the caller must not block).
    pub(crate) fn begin_park(&self) -> bool {
        match self
            .state
            .compare_exchange(RUNNING, PARKED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(_) => {
                self.state.store(RUNNING, Ordering::SeqCst);
                false
            }
        }
    }

    /// Back from the wait. An unpark that raced with the wake-up is consumed by this return;
    /// its eventfd write (if any) makes a later park return once, spuriously, which the
    /// contract allows.
    pub(crate) fn end_park(&self) {
        self.state.store(RUNNING, Ordering::SeqCst);
    }

    fn unpark(&self) {
        // Already notified: nothing to do, not even a write to the shared cache line.
        if self.state.load(Ordering::SeqCst) == NOTIFIED {
            return;
        }
        if self.state.swap(NOTIFIED, Ordering::SeqCst) == PARKED {
            self.writes.fetch_add(1, Ordering::Relaxed);
            // Errors: EAGAIN only if the counter would overflow, which means a wake-up is
            // already pending. Nothing useful to do with any other error here.
            let _ = (&self.eventfd).write(&1u64.to_ne_bytes());
        }
    }
}

/// Wakes a [`crate::UringPlatform`] from any thread. Cheap to clone; costs no system call unless
/// the core is parked.
#[derive(Clone, Debug)]
pub struct UringUnparker {
    pub(crate) shared: Arc<Shared>,
}

impl Unpark for UringUnparker {
    fn unpark(&self) {
        self.shared.unpark();
    }
}
