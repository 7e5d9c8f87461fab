//! The unsafe half of the driver: the `IoDriver` impl (its `submit` is an unsafe trait method
//! that trusts the pointers in a `RawOp`) and the translation of each `RawOp` into an SQE.
//!
//! Memory an SQE points into:
//! * the caller's buffers (`Recv`, `Send`, `ReadAt`, `WriteAt`, the `Writev` slices): valid
//!   until the op is finished, by `IoDriver::submit`'s contract;
//! * memory the driver allocates here (`sockaddr` for `Connect`, `timespec` for `Timeout`,
//!   `msghdr` for `Writev`): boxed into `Prepared::extras`, which lives in the op's slot until
//!   its final CQE is reaped.

use std::any::Any;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use io_uring::types::{Fd, FsyncFlags, TimeoutFlags, Timespec};
use io_uring::{opcode, squeue};
use std::rc::Rc;

use seastar_hal::io::{
    Completion, Fd as HalFd, IoDriver, OpId, PoolId, RawOp, SendBufs, SendStatus, Shutdown,
};
use seastar_hal::{ErrorKind, IoError};

use crate::driver::{OpKind, Prepared, SendSlot, UringDriver};
use crate::sys::Sqe;

/// A socket address laid out for the kernel.
#[allow(dead_code)] // the fields are read by the kernel, not by Rust
enum SockAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl SockAddr {
    fn new(addr: &SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => SockAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => SockAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    fn as_ptr(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            SockAddr::V4(a) => (
                (a as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            SockAddr::V6(a) => (
                (a as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

// `RawOp::Writev`'s slices are handed to the kernel as `iovec`s: same size and alignment
// (both are `#[repr(C)] { pointer, usize }`).
const _: () = assert!(
    std::mem::size_of::<seastar_hal::io::IoSlice>() == std::mem::size_of::<libc::iovec>()
        && std::mem::align_of::<seastar_hal::io::IoSlice>() == std::mem::align_of::<libc::iovec>()
);

/// Lengths beyond `u32::MAX` are clamped: the op reports a short count, as POSIX allows.
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// What a `Writev` keeps in its slot: the SENDMSG's header, and the WRITEV to resubmit if
/// the descriptor is not a socket. A detached gather keeps its `iovec`s here too.
pub(crate) struct WritevExtras {
    /// Read by the kernel through the SENDMSG's pointer.
    msg: libc::msghdr,
    pub(crate) fallback: Sqe,
    /// A detached gather's slices (empty otherwise: a `Writev`'s array is the caller's). The
    /// heap array is read by the kernel through `msg`; never resized while in flight.
    pub(crate) iov: Vec<seastar_hal::io::IoSlice>,
}

impl WritevExtras {
    /// An empty header, to be filled by [`sendmsg`](Self::sendmsg). One allocation for the
    /// msghdr and the fallback (the driver finds it on ENOTSOCK), not one each.
    pub(crate) fn boxed() -> Box<Self> {
        Box::new(WritevExtras {
            // SAFETY: `msghdr` is plain old data (integers and raw pointers); all-zero is a
            // valid value (no name, no control data).
            msg: unsafe { std::mem::zeroed() },
            // SAFETY: a NOP points at nothing.
            fallback: unsafe { Sqe::new(opcode::Nop::new().build()) },
            iov: Vec::new(),
        })
    }

    /// Point this header at the gather of `count` slices at `iov` on `fd` and return the
    /// SENDMSG that sends it (MSG_NOSIGNAL: no SIGPIPE); files answer ENOTSOCK and get the
    /// fallback WRITEV at the current file position (offset -1), like writev(2). The header
    /// is heap memory: it stays put while its box moves into the op's slot.
    ///
    /// # Safety
    /// The slices and their array must stay valid until the op is finished (as for
    /// [`prepare`]); the fallback is only pushed before that.
    unsafe fn sendmsg(
        &mut self,
        fd: HalFd,
        iov: *const seastar_hal::io::IoSlice,
        count: usize,
        whole: bool,
    ) -> squeue::Entry {
        // `IoSlice` is `#[repr(C)] { base: *const u8, len: usize }`, the layout of `iovec`.
        let iov = iov.cast::<libc::iovec>();
        let writev = opcode::Writev::new(Fd(fd), iov, len32(count))
            .offset(u64::MAX)
            .build();
        // SAFETY: the caller's guarantee for the slices and their array.
        self.fallback = unsafe { Sqe::new(writev) };
        // SAFETY: as in `boxed`.
        self.msg = unsafe { std::mem::zeroed() };
        self.msg.msg_iov = iov.cast_mut();
        self.msg.msg_iovlen = count as _;
        let msg_ptr: *const libc::msghdr = &self.msg;
        opcode::SendMsg::new(Fd(fd), msg_ptr)
            .flags(send_flags(whole) as u32)
            .build()
    }
}

/// `MSG_NOSIGNAL` (no SIGPIPE), and `MSG_WAITALL` for a send that must go out whole.
fn send_flags(whole: bool) -> i32 {
    if whole {
        libc::MSG_NOSIGNAL | libc::MSG_WAITALL
    } else {
        libc::MSG_NOSIGNAL
    }
}

/// Translate `op` into an SQE plus the memory it needs.
///
/// # Safety
/// The pointers in `op` must satisfy [`IoDriver::submit`]'s contract: valid for the op's
/// accesses until the op is finished.
unsafe fn prepare(op: RawOp, native_multishot: bool) -> Result<Prepared, IoError> {
    let mut kind = OpKind::Other;
    let mut extras: Option<Box<dyn Any>> = None;
    let mut resubmit = None;
    let entry = match op {
        RawOp::Nop => opcode::Nop::new().build(),
        RawOp::Timeout { deadline } => {
            kind = OpKind::Timeout;
            let nanos = deadline.as_nanos();
            let ts = Box::new(
                Timespec::new()
                    .sec(nanos / 1_000_000_000)
                    .nsec((nanos % 1_000_000_000) as u32),
            );
            let ptr: *const Timespec = &*ts;
            extras = Some(ts);
            // Absolute CLOCK_MONOTONIC, the platform clock: `now()` and the deadline agree.
            opcode::Timeout::new(ptr).flags(TimeoutFlags::ABS).build()
        }
        RawOp::Accept { fd, multishot } => {
            kind = OpKind::Accept { multishot };
            let entry = if multishot && native_multishot {
                opcode::AcceptMulti::new(Fd(fd))
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
            } else {
                opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
            };
            if multishot {
                // Re-armed when the kernel ends it (emulation, or a native one it stopped).
                // SAFETY: no pointers.
                resubmit = Some(unsafe { Sqe::new(entry.clone()) });
            }
            entry
        }
        RawOp::Connect { fd, addr } => {
            let sa = Box::new(SockAddr::new(&addr));
            let (ptr, len) = sa.as_ptr();
            extras = Some(sa);
            opcode::Connect::new(Fd(fd), ptr, len).build()
        }
        RawOp::Recv { fd, ptr, len } => opcode::Recv::new(Fd(fd), ptr, len32(len)).build(),
        RawOp::RecvPool { fd, pool } => {
            kind = OpKind::RecvPool { pool: pool.0 };
            // The buffer group is the pool's index (checked by `start`); the kernel picks the
            // buffers from the registered ring, so the SQE holds no pointer.
            let entry = opcode::RecvMulti::new(Fd(fd), pool.0).build();
            // SAFETY: no pointers.
            resubmit = Some(unsafe { Sqe::new(entry.clone()) });
            entry
        }
        // `whole`: MSG_WAITALL, with which the kernel resumes a partial send on a stream
        // socket itself and completes short only on failure.
        RawOp::Send {
            fd,
            ptr,
            len,
            whole,
        } => opcode::Send::new(Fd(fd), ptr, len32(len))
            .flags(send_flags(whole))
            .build(),
        RawOp::Writev {
            fd,
            iov,
            count,
            whole,
        } => {
            let mut gather = WritevExtras::boxed();
            // SAFETY: this function's contract, for the slices and their array.
            let entry = unsafe { gather.sendmsg(fd, iov, count, whole) };
            extras = Some(gather);
            kind = OpKind::WritevMsg;
            entry
        }
        RawOp::ReadAt {
            fd,
            ptr,
            len,
            offset,
        } => opcode::Read::new(Fd(fd), ptr, len32(len))
            .offset(offset)
            .build(),
        RawOp::WriteAt {
            fd,
            ptr,
            len,
            offset,
        } => opcode::Write::new(Fd(fd), ptr, len32(len))
            .offset(offset)
            .build(),
        RawOp::Fsync { fd, datasync } => {
            let flags = if datasync {
                FsyncFlags::DATASYNC
            } else {
                FsyncFlags::empty()
            };
            opcode::Fsync::new(Fd(fd)).flags(flags).build()
        }
        RawOp::Shutdown { fd, how } => {
            let how = match how {
                Shutdown::Read => libc::SHUT_RD,
                Shutdown::Write => libc::SHUT_WR,
                Shutdown::Both => libc::SHUT_RDWR,
            };
            opcode::Shutdown::new(Fd(fd), how).build()
        }
        RawOp::Close { fd } => opcode::Close::new(Fd(fd)).build(),
        _ => return Err(IoError::new(ErrorKind::Unsupported)),
    };
    Ok(Prepared {
        kind,
        // SAFETY: the caller's pointers are valid until the op is finished (this function's
        // contract); the driver's own (`extras`) live in the op's slot until its final CQE.
        sqe: unsafe { Sqe::new(entry) },
        resubmit,
        extras,
    })
}

impl IoDriver for UringDriver {
    /// Queues the SQE; it reaches the kernel at the next park or flush (or now, if the SQ is
    /// full).
    unsafe fn submit(&self, op: RawOp) -> Result<OpId, IoError> {
        // SAFETY: forwarded with the caller's guarantee on the pointers in `op`.
        let prepared = unsafe { prepare(op, self.features().native_multishot_accept) }?;
        self.start(prepared)
    }

    #[inline]
    fn poll_op(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
        self.poll_op_impl(id, cx)
    }

    #[inline]
    fn has_completion(&self, id: OpId) -> bool {
        self.has_completion_impl(id)
    }

    fn cancel(&self, id: OpId, keepalive: Box<dyn Any>) {
        self.cancel_impl(id, keepalive)
    }

    fn in_flight(&self) -> usize {
        self.in_flight_impl()
    }

    fn create_pool(&self, count: u16, size: u32) -> Result<PoolId, IoError> {
        self.create_pool_impl(count, size)
    }

    #[inline]
    fn pool_buffer(&self, pool: PoolId, bid: u16) -> Option<(*const u8, usize)> {
        self.pool_buffer_impl(pool, bid)
    }

    #[inline]
    fn release_buffer(&self, pool: PoolId, bid: u16) {
        self.release_buffer_impl(pool, bid)
    }

    /// One `SEND` (one buffer) or `SENDMSG` (a gather), with `MSG_WAITALL`, whose slot owns
    /// the buffers and the gather's header and `iovec`s until its final CQE.
    fn send_detached(
        &self,
        fd: HalFd,
        bufs: SendBufs,
        status: &Rc<SendStatus>,
    ) -> Result<(), IoError> {
        let len = bufs.len();
        let (entry, gather) = match &bufs {
            // The common case, built directly (no `RawOp` round trip).
            SendBufs::One(b) => (
                opcode::Send::new(Fd(fd), b.as_ptr(), len32(b.len()))
                    .flags(send_flags(true))
                    .build(),
                None,
            ),
            SendBufs::Gather(_) => {
                // A finished gather's header and list, reused: no allocation per gather.
                let mut gather = self.take_writev_extras();
                let RawOp::Writev {
                    iov, count, whole, ..
                } = bufs.whole_op(fd, &mut gather.iov)
                else {
                    self.release_send(SendSlot {
                        bufs,
                        status: status.clone(),
                        len,
                        gather: Some(gather),
                        fallback: false,
                    });
                    return Err(IoError::new(ErrorKind::InvalidInput));
                };
                // SAFETY: the slices point into the `SendBuf`s' bytes (memory that stays put
                // while they move, by `SendBuf`'s constructors) and their array is the heap
                // array of `gather.iov`, never resized while in flight; both move into the
                // send's slot below.
                let entry = unsafe { gather.sendmsg(fd, iov, count, whole) };
                (entry, Some(gather))
            }
        };
        let slot = SendSlot {
            bufs,
            status: status.clone(),
            len,
            gather,
            fallback: false,
        };
        // SAFETY: the SQE points into `slot`: the `SendBuf`s' bytes (memory that stays put
        // while they move) and the gather's boxed header and `iovec` array; the slot stays in
        // the driver until the final CQE (or is leaked if the driver is dropped first).
        let sqe = unsafe { Sqe::new(entry) };
        self.start_send(&sqe, slot, status)
    }
}
