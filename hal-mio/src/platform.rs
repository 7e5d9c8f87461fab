//! [`MioPlatform`]: one core's clock, park/unpark and driver.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use seastar_hal::io::Fd;
use seastar_hal::{Instant, Platform};

use crate::driver::{MioDriver, MioStats};
use crate::sys;
use crate::unpark::{MioUnparker, Shared};

/// One core of the readiness-based platform: an epoll instance (through mio), its I/O driver,
/// the `CLOCK_MONOTONIC` clock and the eventfd that other threads use to wake it.
///
/// Create it on the thread that will run the core; it is neither `Send` nor `Sync`.
#[derive(Debug)]
pub struct MioPlatform {
    driver: MioDriver,
    unparker: MioUnparker,
    _not_send: PhantomData<*const ()>,
}

impl MioPlatform {
    /// A new core: creates the epoll instance and the wake-up eventfd.
    pub fn new() -> Result<Self, std::io::Error> {
        let driver = MioDriver::new()?;
        let waker = driver.new_waker()?;
        Ok(MioPlatform {
            driver,
            unparker: MioUnparker {
                shared: Arc::new(Shared::new(waker)),
            },
            _not_send: PhantomData,
        })
    }

    /// What this core has done so far, including the unparkers' wake-up system calls.
    pub fn stats(&self) -> MioStats {
        let mut s = self.driver.stats();
        s.unpark_wakes = self.unparker.wake_syscalls();
        s
    }
}

impl Platform for MioPlatform {
    type Unparker = MioUnparker;
    type Io = MioDriver;

    /// `CLOCK_MONOTONIC`, in nanoseconds since boot: the same clock as the io_uring HAL.
    fn now(&self) -> Instant {
        Instant::from_nanos(sys::monotonic_nanos())
    }

    /// Run deferred operations (nops, file I/O, shutdown, close), then `epoll_wait` no longer
    /// than the earlier of `deadline` and the first pending `Timeout` (not at all if work was
    /// just done, an unpark is pending or `deadline` has passed), perform the system calls the
    /// readiness events allow, fire due timeouts and wake the wakers of every new completion.
    ///
    /// Panics only if `epoll_wait` fails with something other than EINTR, which means the
    /// epoll fd itself is broken.
    fn park(&self, deadline: Option<Instant>) {
        self.driver.park(deadline, &self.unparker.shared);
    }

    fn unparker(&self) -> MioUnparker {
        self.unparker.clone()
    }

    fn io(&self) -> &MioDriver {
        &self.driver
    }
}

/// A new TCP socket (non-blocking, close-on-exec) of `addr`'s family, ready for a `Connect`
/// operation to `addr`. The HAL has no socket-creation operation; this is the portable
/// platform's way to get one without another crate. The caller owns the fd.
pub fn tcp_socket(addr: SocketAddr) -> Result<Fd, seastar_hal::IoError> {
    sys::tcp_socket(&addr).map_err(crate::error::io_error)
}
