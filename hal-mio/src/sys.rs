//! The fence around every `unsafe` block of the crate: thin wrappers over the libc calls the
//! driver makes.
//!
//! Everything here returns `Result<_, Errno>` and never retries: policy (EINTR, EAGAIN, which
//! errno means what) lives in the safe driver code. The one type with an invariant is
//! [`BufOp`]: it holds the raw pointers of a submitted operation and may dereference them, so
//! it can only be built through an `unsafe` constructor that takes over the caller's promise.
#![allow(unsafe_code)]

use std::mem;
use std::net::SocketAddr;

use seastar_hal::io::{Fd, IoSlice, RawOp, Shutdown};

/// A raw `errno` value.
pub(crate) type Errno = i32;
/// The outcome of one system call.
pub(crate) type SysResult<T> = Result<T, Errno>;

/// Linux refuses more slices than this in one `writev`/`sendmsg` (`UIO_MAXIOV`); longer gather
/// lists are written short, which the contract allows (the count says how much went out).
const MAX_IOV: usize = libc::UIO_MAXIOV as usize;

/// Most bytes one operation transfers, so the count always fits the completion's `u32`
/// (Linux transfers at most 0x7ffff000 bytes per call anyway).
const MAX_LEN: usize = u32::MAX as usize;

// `RawOp::Writev` hands us `hal::io::IoSlice`s; the kernel reads them as `struct iovec`. The
// HAL documents the layout as identical; check it at compile time so a change cannot slip by.
const _: () = {
    assert!(mem::size_of::<IoSlice>() == mem::size_of::<libc::iovec>());
    assert!(mem::align_of::<IoSlice>() == mem::align_of::<libc::iovec>());
    assert!(mem::offset_of!(IoSlice, base) == mem::offset_of!(libc::iovec, iov_base));
    assert!(mem::offset_of!(IoSlice, len) == mem::offset_of!(libc::iovec, iov_len));
};

fn errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn cvt(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> SysResult<usize> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret as usize)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock the io_uring HAL (and its timeouts) use,
/// so `Instant`s from both platforms agree.
pub(crate) fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call, and
    // CLOCK_MONOTONIC is always available on Linux, so the call cannot fail.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(ret, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Make `fd` non-blocking. Returns the number of system calls made (1 if it already was, 2 if
/// the flag had to be set).
pub(crate) fn set_nonblocking(fd: Fd) -> SysResult<u64> {
    // SAFETY: F_GETFL takes no pointer argument; an invalid fd yields EBADF.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(1);
    }
    // SAFETY: F_SETFL takes an integer argument; no memory is touched.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(2)
}

/// A new TCP socket for `addr`'s family: non-blocking and close-on-exec.
pub(crate) fn tcp_socket(addr: &SocketAddr) -> SysResult<Fd> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain integer arguments; the returned fd (if any) is owned by the caller.
    cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })
}

/// Accept one connection; the new socket is non-blocking and close-on-exec from birth
/// (`accept4`), so no window exists in which a fork could inherit it.
pub(crate) fn accept(fd: Fd) -> SysResult<Fd> {
    // SAFETY: null address pointers are allowed (we do not want the peer address); no other
    // memory is passed.
    cvt(unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })
}

/// Start (or, on a blocking socket, perform) a connection to `addr`.
pub(crate) fn connect(fd: Fd, addr: &SocketAddr) -> SysResult<()> {
    let (storage, len) = sockaddr_of(addr);
    // SAFETY: `storage` holds a valid socket address of `len` bytes and outlives the call;
    // the kernel copies it before returning.
    cvt(unsafe { libc::connect(fd, (&raw const storage).cast::<libc::sockaddr>(), len) }).map(drop)
}

/// A `sockaddr` for `addr`, in storage large enough for any family, and its length. The one
/// conversion of the std side (the runtime's `bind` uses it too, through the crate root).
pub fn sockaddr_of(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: `sockaddr_storage` is plain old data for which all-zero bytes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                // The octets are already in network order; keep their memory order.
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and at least as aligned as
            // `sockaddr_in` (that is its purpose), and we own `storage` exclusively.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for `sockaddr_in6`.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Read and clear the socket's pending error (`SO_ERROR`): how a non-blocking connect reports
/// its outcome.
pub(crate) fn take_socket_error(fd: Fd) -> SysResult<Errno> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid, writable and correctly sized for SO_ERROR, and live
    // for the duration of the call.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast::<libc::c_void>(),
            &mut len,
        )
    })?;
    Ok(err)
}

pub(crate) fn shutdown(fd: Fd, how: Shutdown) -> SysResult<()> {
    let how = match how {
        Shutdown::Read => libc::SHUT_RD,
        Shutdown::Write => libc::SHUT_WR,
        Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: integer arguments only.
    cvt(unsafe { libc::shutdown(fd, how) }).map(drop)
}

/// Close `fd`. Never retried: on Linux the descriptor is released even when `close` reports
/// EINTR, and retrying could close a descriptor another thread just opened.
pub(crate) fn close(fd: Fd) -> SysResult<()> {
    // SAFETY: integer argument only. The caller gives up `fd`; the driver never uses it again.
    cvt(unsafe { libc::close(fd) }).map(drop)
}

pub(crate) fn fsync(fd: Fd, datasync: bool) -> SysResult<()> {
    // SAFETY: integer argument only.
    let ret = unsafe {
        if datasync {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    };
    cvt(ret).map(drop)
}

/// Which calls stream operations use on an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// `recv`, `send(MSG_NOSIGNAL)`, `sendmsg(MSG_NOSIGNAL)`: a closed peer gives EPIPE
    /// instead of killing the process with SIGPIPE.
    Socket,
    /// `read`, `write`, `writev`: for pipes, terminals and files, where the socket calls say
    /// ENOTSOCK. (A closed pipe raises SIGPIPE here unless the process ignores it.)
    File,
}

/// A submitted operation that reads or writes through raw pointers: `Recv`, `Send`, `Writev`,
/// `ReadAt`, `WriteAt`.
///
/// Invariant: the pointers inside are valid for the operation's access for as long as this
/// value lives. The driver keeps it inside the operation's slot and drops it when the operation
/// is finished (its final completion handed out, or it is cancelled), which is exactly as long
/// as [`seastar_hal::io::IoDriver::submit`] guarantees the pointers.
///
/// A `Send` or `Writev` with `whole` set, on a socket, remembers how much went out: a partial
/// send waits for the socket to be writable again and resumes after those bytes, so it
/// completes whole or, if the connection fails, with the count sent before (the HAL contract).
#[derive(Debug)]
pub(crate) struct BufOp {
    op: RawOp,
    /// Bytes already sent by a whole socket `Send`/`Writev`.
    sent: usize,
}

impl BufOp {
    /// Wrap `op` if it is a buffer operation; other operations come back as `Err`.
    ///
    /// # Safety
    /// The pointers in `op` must satisfy the contract of `IoDriver::submit`, and the returned
    /// value must be dropped no later than the moment that contract stops holding (the
    /// operation's final completion was returned by `poll_op`, or it was cancelled).
    pub(crate) unsafe fn new(op: RawOp) -> Result<Self, RawOp> {
        match op {
            RawOp::Recv { .. }
            | RawOp::Send { .. }
            | RawOp::Writev { .. }
            | RawOp::ReadAt { .. }
            | RawOp::WriteAt { .. } => Ok(BufOp { op, sent: 0 }),
            other => Err(other),
        }
    }

    /// The descriptor the operation works on.
    pub(crate) fn fd(&self) -> Fd {
        match self.op {
            RawOp::Recv { fd, .. }
            | RawOp::Send { fd, .. }
            | RawOp::Writev { fd, .. }
            | RawOp::ReadAt { fd, .. }
            | RawOp::WriteAt { fd, .. } => fd,
            _ => -1,
        }
    }

    /// Whether it waits for the readable (`true`) or writable side of a socket, or `None` for
    /// positioned file I/O, which is always "ready".
    pub(crate) fn side_is_read(&self) -> Option<bool> {
        match self.op {
            RawOp::Recv { .. } => Some(true),
            RawOp::Send { .. } | RawOp::Writev { .. } => Some(false),
            _ => None,
        }
    }

    /// Make the operation's system call: once, or for a whole socket send until every byte is
    /// out or the socket would block (`EAGAIN`, with the progress kept for the next call).
    pub(crate) fn perform(&mut self, via: Via) -> SysResult<usize> {
        let whole = matches!(
            self.op,
            RawOp::Send { whole: true, .. } | RawOp::Writev { whole: true, .. }
        );
        if via == Via::File || !whole {
            return self.perform_once(via);
        }
        let total = self.total_len();
        loop {
            match self.send_rest() {
                Ok(n) => {
                    self.sent += n;
                    if n == 0 || self.sent >= total {
                        return Ok(self.sent);
                    }
                }
                Err(libc::EINTR) => {}
                // Failed after some bytes went out: report those; the error shows on the
                // socket's next operation.
                Err(e) if e != libc::EAGAIN && self.sent > 0 => return Ok(self.sent),
                Err(e) => return Err(e),
            }
        }
    }

    /// What a socket send has to send in all (capped like one call's count).
    fn total_len(&self) -> usize {
        match self.op {
            RawOp::Send { len, .. } => len.min(MAX_LEN),
            RawOp::Writev { iov, count, .. } => {
                // SAFETY: by `BufOp`'s invariant the slice array is valid for reads of `count`
                // entries.
                let slices = unsafe { std::slice::from_raw_parts(iov, count.min(MAX_IOV)) };
                slices
                    .iter()
                    .fold(0usize, |t, s| t.saturating_add(s.len))
                    .min(MAX_LEN)
            }
            _ => 0,
        }
    }

    /// One `send`/`sendmsg` of the bytes after the first `sent`.
    fn send_rest(&self) -> SysResult<usize> {
        match self.op {
            RawOp::Send { fd, ptr, len, .. } => {
                let rest = len.min(MAX_LEN).saturating_sub(self.sent);
                // SAFETY: by `BufOp`'s invariant `ptr` is valid for reads of `len` bytes, and
                // `sent < len` here (the caller stops once everything is out).
                cvt_size(unsafe {
                    libc::send(
                        fd,
                        ptr.add(self.sent.min(len)).cast(),
                        rest,
                        libc::MSG_NOSIGNAL,
                    )
                })
            }
            RawOp::Writev { fd, iov, count, .. } => {
                let count = count.min(MAX_IOV);
                // SAFETY: as in `total_len`.
                let slices = unsafe { std::slice::from_raw_parts(iov, count) };
                // After a partial send (rare: the socket buffer filled), an adjusted copy of
                // the slice array; otherwise the caller's.
                let mut skip = self.sent;
                let rest: Vec<libc::iovec>;
                let (iov, count) = if skip == 0 {
                    (iov.cast::<libc::iovec>().cast_mut(), count)
                } else {
                    rest = slices
                        .iter()
                        .filter_map(|s| {
                            let cut = skip.min(s.len);
                            skip -= cut;
                            (s.len > cut).then(|| libc::iovec {
                                // SAFETY: `cut < s.len`, inside the slice's memory.
                                iov_base: unsafe { s.base.add(cut) }.cast_mut().cast(),
                                iov_len: s.len - cut,
                            })
                        })
                        .collect();
                    (rest.as_ptr().cast_mut(), rest.len())
                };
                // SAFETY: `msghdr` is plain old data; all-zero is a valid value.
                let mut msg: libc::msghdr = unsafe { mem::zeroed() };
                msg.msg_iov = iov;
                msg.msg_iovlen = count as _;
                // SAFETY: the slices (the caller's, valid by `BufOp`'s invariant, or `rest`,
                // which points into them and lives to the end of this block) are read only.
                cvt_size(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) })
            }
            _ => Err(libc::EINVAL),
        }
    }

    /// Make the operation's system call once. Lengths are clamped so the count always fits
    /// the completion's `u32` (Linux transfers at most 0x7ffff000 bytes per call anyway).
    fn perform_once(&self, via: Via) -> SysResult<usize> {
        match self.op {
            RawOp::Recv { fd, ptr, len } => {
                let len = len.min(MAX_LEN);
                // SAFETY: by `BufOp`'s invariant `ptr` is valid for writes of `len` bytes and
                // nothing else accesses that memory while the operation is in flight.
                cvt_size(unsafe {
                    match via {
                        Via::Socket => libc::recv(fd, ptr.cast(), len, 0),
                        Via::File => libc::read(fd, ptr.cast(), len),
                    }
                })
            }
            RawOp::Send { fd, ptr, len, .. } => {
                let len = len.min(MAX_LEN);
                // SAFETY: by `BufOp`'s invariant `ptr` is valid for reads of `len` bytes.
                cvt_size(unsafe {
                    match via {
                        Via::Socket => libc::send(fd, ptr.cast(), len, libc::MSG_NOSIGNAL),
                        Via::File => libc::write(fd, ptr.cast(), len),
                    }
                })
            }
            RawOp::Writev { fd, iov, count, .. } => {
                let iov = iov.cast::<libc::iovec>().cast_mut();
                let count = count.min(MAX_IOV);
                match via {
                    Via::Socket => {
                        // SAFETY: `msghdr` is plain old data; all-zero is a valid value.
                        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
                        msg.msg_iov = iov;
                        msg.msg_iovlen = count as _;
                        // SAFETY: by `BufOp`'s invariant the slice array is valid for reads of
                        // `count` entries (layout-checked against `iovec` above) and each slice
                        // for reads of its length; `sendmsg` only reads through `msg_iov`.
                        cvt_size(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) })
                    }
                    // SAFETY: as for `sendmsg`.
                    Via::File => cvt_size(unsafe { libc::writev(fd, iov, count as _) }),
                }
            }
            RawOp::ReadAt {
                fd,
                ptr,
                len,
                offset,
            } => {
                let Ok(offset) = libc::off_t::try_from(offset) else {
                    return Err(libc::EINVAL);
                };
                // SAFETY: by `BufOp`'s invariant `ptr` is valid for writes of `len` bytes.
                cvt_size(unsafe { libc::pread(fd, ptr.cast(), len.min(MAX_LEN), offset) })
            }
            RawOp::WriteAt {
                fd,
                ptr,
                len,
                offset,
            } => {
                let Ok(offset) = libc::off_t::try_from(offset) else {
                    return Err(libc::EINVAL);
                };
                // SAFETY: by `BufOp`'s invariant `ptr` is valid for reads of `len` bytes.
                cvt_size(unsafe { libc::pwrite(fd, ptr.cast(), len.min(MAX_LEN), offset) })
            }
            // `new` admits only the variants above.
            _ => Err(libc::EINVAL),
        }
    }
}

/// The memory and free list of an emulated buffer pool: `count` buffers of `size` bytes in one
/// heap allocation owned through a raw pointer (never through a reference spanning buffers,
/// since handed-out buffers are read by their holders while others are written here).
///
/// Invariant: a buffer is either free (in `free`, only written by [`PoolMem::recv_into_free`])
/// or out (handed to a holder, never written here) until [`PoolMem::release`].
#[derive(Debug)]
pub(crate) struct PoolMem {
    ptr: *mut u8,
    layout: std::alloc::Layout,
    size: usize,
    count: u16,
    free: Vec<u16>,
    out: Vec<bool>,
}

impl PoolMem {
    pub(crate) fn new(count: u16, size: u32) -> SysResult<PoolMem> {
        if count == 0 || size == 0 {
            return Err(libc::EINVAL);
        }
        let layout = std::alloc::Layout::from_size_align(usize::from(count) * size as usize, 64)
            .map_err(|_| libc::EINVAL)?;
        // SAFETY: non-zero size (both factors are >= 1). Not zeroed, so a large pool stays
        // untouched until used: only bytes `recv` wrote (`[..n]`) are ever handed out.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(libc::ENOMEM);
        }
        Ok(PoolMem {
            ptr,
            layout,
            size: size as usize,
            count,
            // Popped from the back: hand out low ids first.
            free: (0..count).rev().collect(),
            out: vec![false; usize::from(count)],
        })
    }

    /// Buffers in the pool.
    pub(crate) fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// Buffers free.
    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Start and length of buffer `bid`.
    pub(crate) fn buffer(&self, bid: u16) -> Option<(*const u8, usize)> {
        (bid < self.count).then(|| {
            (
                self.ptr
                    .wrapping_add(usize::from(bid) * self.size)
                    .cast_const(),
                self.size,
            )
        })
    }

    /// One `recv` (or `read` with `Via::File`) into a free buffer. `Ok(Some((bid, n)))` hands
    /// buffer `bid` with `n > 0` bytes out; `Ok(None)`: no free buffer; end of stream and
    /// errors keep the buffer free (`Ok(Some((_, 0)))` is never returned: EOF is `Err(0)`).
    pub(crate) fn recv_into_free(
        &mut self,
        fd: Fd,
        via: Via,
    ) -> Result<Option<(u16, usize)>, Errno> {
        let Some(bid) = self.free.pop() else {
            return Ok(None);
        };
        let ptr = self.ptr.wrapping_add(usize::from(bid) * self.size);
        // SAFETY: `bid` was free, so no holder reads it and nothing else writes it; it lies
        // inside the allocation (bid < count) and is `size` bytes long.
        let res = cvt_size(unsafe {
            match via {
                Via::Socket => libc::recv(fd, ptr.cast(), self.size, 0),
                Via::File => libc::read(fd, ptr.cast(), self.size),
            }
        });
        match res {
            Ok(n) if n > 0 => {
                self.out[usize::from(bid)] = true;
                Ok(Some((bid, n)))
            }
            Ok(_) => {
                self.free.push(bid);
                Err(0)
            }
            Err(e) => {
                self.free.push(bid);
                Err(e)
            }
        }
    }

    /// Take buffer `bid` back from its holder. A buffer not out is ignored (no duplicates).
    pub(crate) fn release(&mut self, bid: u16) -> bool {
        match self.out.get_mut(usize::from(bid)) {
            Some(out) if *out => {
                *out = false;
                self.free.push(bid);
                true
            }
            _ => false,
        }
    }
}

impl Drop for PoolMem {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout. The driver (which owns this) is being
        // dropped, and every holder of a buffer keeps the driver alive, so none is out.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}
