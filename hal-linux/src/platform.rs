//! [`UringPlatform`]: one core's clock, park/unpark and I/O driver.

use std::sync::Arc;

use seastar_hal::{Instant, Platform};

use crate::config::{Features, UringConfig};
use crate::driver::UringDriver;
use crate::stats::UringStats;
use crate::sys;
use crate::unpark::{Shared, UringUnparker};

/// One core's io_uring platform. Create it on the thread that will run the core (the ring is
/// bound to its creator); it is neither `Send` nor `Sync`.
///
/// ```no_run
/// use seastar_hal::Platform;
/// use seastar_hal_linux::{UringConfig, UringPlatform};
///
/// let p = UringPlatform::new(UringConfig::new())?;
/// let soon = p.now() + std::time::Duration::from_millis(1);
/// p.park(Some(soon)); // submits queued I/O and sleeps in one io_uring_enter
/// assert_eq!(p.stats().enters, 1);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// It stays on its thread:
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<seastar_hal_linux::UringPlatform>();
/// ```
#[derive(Debug)]
pub struct UringPlatform {
    driver: UringDriver,
    unparker: UringUnparker,
}

impl UringPlatform {
    /// Build the ring (stepping down the setup-flag ladder if the kernel refuses a flag), the
    /// eventfd, and queue the eventfd read.
    pub fn new(config: UringConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::new()?);
        let driver = UringDriver::new(&config, shared.clone())?;
        Ok(UringPlatform {
            driver,
            unparker: UringUnparker { shared },
        })
    }

    /// What the kernel accepted for this ring.
    pub fn features(&self) -> &Features {
        self.driver.features()
    }

    /// A snapshot of this core's counters.
    pub fn stats(&self) -> UringStats {
        self.driver.stats()
    }
}

impl Platform for UringPlatform {
    type Unparker = UringUnparker;
    type Io = UringDriver;

    /// `CLOCK_MONOTONIC` in nanoseconds (the clock of io_uring's absolute timeouts).
    fn now(&self) -> Instant {
        Instant::from_nanos(sys::monotonic_nanos())
    }

    fn park(&self, deadline: Option<Instant>) {
        self.driver.park(deadline);
    }

    fn unparker(&self) -> UringUnparker {
        self.unparker.clone()
    }

    fn io(&self) -> &UringDriver {
        &self.driver
    }

    fn flush(&self) {
        self.driver.flush();
    }
}
