//! Cross-thread wake-up of a parked core: a `mio::Waker` (an eventfd registered in the core's
//! epoll set) behind two flags, so an unpark costs no system call unless the core is asleep.
//!
//! The protocol (a Dekker-style handshake, hence `SeqCst` on all four accesses):
//!
//! ```text
//!   unparker                               parking core
//!   --------                               ------------
//!   notified := true   (swap)              parked := true
//!   if parked: wake() (eventfd write)      if notified: don't block (timeout 0)
//!                                          epoll_wait(timeout)
//!                                          parked := false; notified := false
//! ```
//!
//! In the single total order of the `SeqCst` operations, either the unparker's `notified`
//! store comes before the core's `notified` load (the core sees it and does not block), or the
//! core's `parked` store comes before the unparker's `parked` load (the unparker sees it and
//! writes the eventfd, which makes `epoll_wait` return). So an unpark that happens just before
//! the park is never lost. An unpark that arrives while `notified` is already set is merged
//! with the earlier one: that one either woke the core or will stop it from blocking.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use seastar_hal::Unpark;

/// The state shared by a core and every clone of its [`MioUnparker`].
pub(crate) struct Shared {
    /// The core is in (or about to enter) a blocking `epoll_wait`.
    parked: AtomicBool,
    /// An unpark arrived that the core has not consumed yet.
    notified: AtomicBool,
    waker: mio::Waker,
    /// Number of `eventfd` writes made by unparkers (the only system call they make).
    wake_syscalls: AtomicU64,
}

impl Shared {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Shared {
            parked: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            waker,
            wake_syscalls: AtomicU64::new(0),
        }
    }

    /// Announce that the core is about to block. Returns `false` if an unpark is already
    /// pending, in which case the core must not block (and is not marked parked).
    pub(crate) fn begin_park(&self) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        if self.notified.load(Ordering::SeqCst) {
            self.parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// The core is running again. Consumes any pending unpark: the park it was meant to end
    /// is the one now returning.
    pub(crate) fn end_park(&self) {
        self.parked.store(false, Ordering::SeqCst);
        self.consume();
    }

    /// Forget a pending unpark (the current, non-blocking park serves it).
    pub(crate) fn consume(&self) {
        // Load first: the common case (nothing pending) does not write the shared cache line.
        if self.notified.load(Ordering::SeqCst) {
            self.notified.store(false, Ordering::SeqCst);
        }
    }

    pub(crate) fn is_notified(&self) -> bool {
        self.notified.load(Ordering::SeqCst)
    }

    pub(crate) fn wake_syscalls(&self) -> u64 {
        self.wake_syscalls.load(Ordering::Relaxed)
    }
}

/// Wakes a [`crate::MioPlatform`] from any thread. Cheap to clone (an `Arc`); `unpark` makes no
/// system call unless the core is parked, and never allocates.
#[derive(Clone)]
pub struct MioUnparker {
    pub(crate) shared: Arc<Shared>,
}

impl MioUnparker {
    /// How many times unparkers of this core had to make a system call (an eventfd write)
    /// because the core was asleep. Unparks of a running core do not count.
    pub fn wake_syscalls(&self) -> u64 {
        self.shared.wake_syscalls()
    }
}

impl MioUnparker {
    /// Whether the core is blocked in (or entering) `epoll_wait` right now. A racy snapshot,
    /// for diagnostics and tests.
    pub fn is_parked(&self) -> bool {
        self.shared.parked.load(Ordering::SeqCst)
    }
}

impl Unpark for MioUnparker {
    fn unpark(&self) {
        let s = &*self.shared;
        // Already pending: an earlier unpark either woke the core or will keep it from
        // blocking; nothing to add. (Plain load so repeated unparks do not bounce the line.)
        if s.notified.load(Ordering::SeqCst) || s.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        if s.parked.load(Ordering::SeqCst) {
            s.wake_syscalls.fetch_add(1, Ordering::Relaxed);
            // An eventfd write fails only if the counter would overflow, which mio handles by
            // resetting it. There is nobody to report an error to; the worst case is a core
            // that sleeps until its deadline.
            let _ = s.waker.wake();
        }
    }
}

impl fmt::Debug for MioUnparker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MioUnparker")
            .field("parked", &self.shared.parked.load(Ordering::Relaxed))
            .field("notified", &self.shared.notified.load(Ordering::Relaxed))
            .field("wake_syscalls", &self.wake_syscalls())
            .finish()
    }
}
