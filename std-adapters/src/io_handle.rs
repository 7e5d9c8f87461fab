//! The core's I/O handle: which platform this thread's core runs on, reachable from any code
//! running on the core (sockets are created deep inside tasks, far from the runtime).
//!
//! Each core thread creates its platform *on that thread* (io_uring's `SINGLE_ISSUER` binds the
//! ring to its creator), gives one `Rc` to the kernel's executor and installs another here, in
//! a thread local, as a [`CoreIo`]. I/O futures clone it (an `Rc` increment) into the HAL's
//! `Op`, which needs a driver handle it owns. `CoreIo` implements the HAL's `IoDriver` by
//! forwarding to the platform's driver with static dispatch (the impl is in `sys`, because
//! `submit` is an unsafe method).

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use seastar_hal::io::{IoDriver, PoolId};
use seastar_hal::Platform;
use seastar_hal_linux::{UringPlatform, UringStats};
use seastar_hal_mio::{MioPlatform, MioStats};

use crate::runtime::Backend;

/// A core's platform, shared with its executor.
#[derive(Clone, Debug)]
pub(crate) enum CoreIo {
    /// io_uring.
    Uring(Rc<UringPlatform>),
    /// epoll through mio.
    Mio(Rc<MioPlatform>),
}

impl CoreIo {
    /// Which backend this is.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            CoreIo::Uring(_) => Backend::IoUring,
            CoreIo::Mio(_) => Backend::Mio,
        }
    }

    /// Make the driver consistent before `fd` is closed with `close(2)`. The operations on
    /// `fd` have all been finished or cancelled by now (their futures borrow the socket).
    ///
    /// * mio keeps a registration per fd: [`MioDriver::release_fd`] deregisters it, so a new
    ///   fd with the same number is not believed registered.
    /// * io_uring batches submissions: SQEs on `fd` (an op and the cancel queued when its
    ///   future was dropped) may still sit in the submission queue, and the kernel looks the
    ///   fd number up only when it consumes them. Closing first would let a new socket that
    ///   reuses the number receive them. `flush` hands queued SQEs to the kernel (one
    ///   `io_uring_enter`, only if any are queued); from then on in-flight ops hold their own
    ///   reference to the socket, and the cancels finish them.
    ///
    /// [`MioDriver::release_fd`]: seastar_hal_mio::MioDriver::release_fd
    pub(crate) fn before_close(&self, fd: RawFd) {
        match self {
            CoreIo::Uring(p) => p.flush(),
            CoreIo::Mio(p) => p.io().release_fd(fd),
        }
    }
}

/// Counters of a core's I/O backend, from [`io_stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoStats {
    /// The io_uring platform's counters.
    Uring(UringStats),
    /// The mio platform's counters.
    Mio(MioStats),
}

struct Installed {
    core: usize,
    io: CoreIo,
    /// The size of the receive pool to create.
    pool_size: RecvPoolSize,
    /// The core's receive pool, created by the first `recv()` on the core.
    pool: Option<PoolId>,
}

/// Default buffers in each core's receive pool (a power of two, as io_uring's buffer ring
/// needs). 1,024 ran dry at 256 connections × 64 KiB in flight (every receive then ended with
/// ENOBUFS and was re-armed: measurable kernel and driver work); 4,096 is what the raw
/// io_uring floor server uses.
pub const DEFAULT_RECV_POOL_BUFFERS: u16 = 4096;
/// Default bytes per receive-pool buffer: the most one `recv()` returns. With
/// [`DEFAULT_RECV_POOL_BUFFERS`], 64 MiB of address space per core, created by the core's
/// first `recv()` and touched (made resident) only as buffers get used.
pub const DEFAULT_RECV_BUF_SIZE: u32 = 16 * 1024;

/// Most buffers a pool may have: io_uring's buffer ring holds at most 32,768 entries.
pub(crate) const MAX_RECV_POOL_BUFFERS: u16 = 32 * 1024;

/// How big each core's receive pool is (see `Builder::recv_pool`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecvPoolSize {
    pub(crate) buffers: u16,
    pub(crate) buffer_size: u32,
}

impl Default for RecvPoolSize {
    fn default() -> Self {
        RecvPoolSize {
            buffers: DEFAULT_RECV_POOL_BUFFERS,
            buffer_size: DEFAULT_RECV_BUF_SIZE,
        }
    }
}

/// The core's receive pool, created on first use.
pub(crate) fn recv_pool(io: &CoreIo) -> io::Result<PoolId> {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(inst) = c.as_mut() else {
            return Err(io::Error::other("not on a Seastar-RS core"));
        };
        if let Some(p) = inst.pool {
            return Ok(p);
        }
        let p = io
            .create_pool(inst.pool_size.buffers, inst.pool_size.buffer_size)
            .map_err(crate::error::to_io)?;
        inst.pool = Some(p);
        Ok(p)
    })
}

std::thread_local! {
    static CURRENT: RefCell<Option<Installed>> = const { RefCell::new(None) };
}

/// Removes the core's handle when the core's thread is done with it.
pub(crate) struct InstallGuard {
    _private: (),
}

impl Drop for InstallGuard {
    fn drop(&mut self) {
        // Take it out first, drop it after the borrow: the platform's destructor may run
        // arbitrary code (keep-alives of cancelled ops).
        let old = CURRENT.with(|c| c.borrow_mut().take());
        drop(old);
    }
}

/// Make `io` this thread's core handle until the guard drops.
pub(crate) fn install(core: usize, io: CoreIo, pool_size: RecvPoolSize) -> InstallGuard {
    let old = CURRENT.with(|c| {
        c.borrow_mut().replace(Installed {
            core,
            io,
            pool_size,
            pool: None,
        })
    });
    drop(old);
    InstallGuard { _private: () }
}

/// This thread's core handle, or an error saying the caller is not on a runtime core.
pub(crate) fn current() -> io::Result<CoreIo> {
    CURRENT
        .with(|c| c.borrow().as_ref().map(|i| i.io.clone()))
        .ok_or_else(|| {
            io::Error::other(
                "not on a Seastar-RS core: create sockets inside Runtime::run_on_all/run_on_one",
            )
        })
}

/// The index of the core running on this thread, if it is a runtime core.
pub fn current_core() -> Option<usize> {
    CURRENT.with(|c| c.borrow().as_ref().map(|i| i.core))
}

/// The backend of the core running on this thread, if it is a runtime core.
pub fn current_backend() -> Option<Backend> {
    CURRENT.with(|c| c.borrow().as_ref().map(|i| i.io.backend()))
}

/// A snapshot of this core's I/O counters (system calls, submissions, completions), if this
/// thread is a runtime core.
pub fn io_stats() -> Option<IoStats> {
    CURRENT.with(|c| {
        c.borrow().as_ref().map(|i| match &i.io {
            CoreIo::Uring(p) => IoStats::Uring(p.stats()),
            CoreIo::Mio(p) => IoStats::Mio(p.stats()),
        })
    })
}
