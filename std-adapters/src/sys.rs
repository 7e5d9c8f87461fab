//! Every `unsafe` of the crate, fenced here (the crate root denies `unsafe_code`):
//!
//! * libc calls for the control plane: socket creation, options, bind/listen, addresses,
//!   CPU affinity;
//! * taking ownership of a descriptor the I/O driver handed over (an accepted connection);
//! * the [`IoDriver`] impl of [`CoreIo`] (its `submit` is an unsafe trait method, forwarded);
//! * the [`IoBuf`] impl of [`Slice`] (an unsafe trait: it promises stable memory).
//!
//! Every block carries a `// SAFETY:` argument.
#![allow(unsafe_code)]

use std::any::Any;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use seastar_hal::buf::IoBuf;
use seastar_hal::io::{Completion, Fd, IoDriver, OpId, PoolId, RawOp, SendBufs, SendStatus};
use seastar_hal::{IoError, Platform};

use crate::buf::{RecvBuf, Slice};
use crate::io_handle::CoreIo;

/// `-1` → the thread's `errno` as an `io::Error`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

// ---- CPU affinity ------------------------------------------------------------------------

/// The CPUs this thread may run on (inherited by the threads it starts), in ascending order.
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is a plain bit array for which all-zero is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed; pid 0 = this thread.
    cvt(unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) })?;
    let max = 8 * mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `cpu < max`, the number of bits in `set`, so CPU_ISSET reads inside it.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pin the calling thread to `cpu`.
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let max = 8 * mem::size_of::<libc::cpu_set_t>();
    if cpu >= max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond the {max} a cpu_set_t can name"),
        ));
    }
    // SAFETY: all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `cpu < max` was checked above, so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 = the calling thread.
    cvt(unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) })?;
    Ok(())
}

// ---- sockets -----------------------------------------------------------------------------

/// A new TCP socket of `addr`'s family: non-blocking and close-on-exec from birth.
pub(crate) fn tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: integer arguments only.
    let fd = cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `socket` just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Take ownership of a descriptor the I/O driver produced (an accepted connection).
///
/// The driver hands each accepted descriptor out exactly once, in one completion, so the
/// caller is its only owner. `fd` must be non-negative.
pub(crate) fn own_accepted(fd: RawFd) -> OwnedFd {
    debug_assert!(fd >= 0);
    // SAFETY: per the contract above, `fd` is an open descriptor owned by nobody else (the
    // driver forgets accepted descriptors once their completion is polled).
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` and the length passed is its size; the kernel only reads.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn getsockopt<T: Copy>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) -> io::Result<T> {
    // SAFETY: the option types used here (c_int, linger) are plain old data; all-zero is valid.
    let mut value: T = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes and `len` is a valid, writable socklen_t.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// `SO_REUSEADDR`, and `SO_REUSEPORT` when `reuse_port`.
pub(crate) fn set_reuse(fd: &OwnedFd, reuse_port: bool) -> io::Result<()> {
    setsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuse_port {
        setsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    Ok(())
}

/// `TCP_NODELAY`.
pub(crate) fn set_nodelay(fd: &OwnedFd, on: bool) -> io::Result<()> {
    setsockopt::<libc::c_int>(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        libc::c_int::from(on),
    )
}

/// Whether `TCP_NODELAY` is set.
pub(crate) fn nodelay(fd: &OwnedFd) -> io::Result<bool> {
    Ok(getsockopt::<libc::c_int>(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY)? != 0)
}

/// `SO_LINGER`: `Some(0)` makes `close` reset the connection.
pub(crate) fn set_linger(fd: &OwnedFd, linger: Option<Duration>) -> io::Result<()> {
    let value = libc::linger {
        l_onoff: libc::c_int::from(linger.is_some()),
        l_linger: linger.map_or(0, |d| {
            d.as_secs().min(libc::c_int::MAX as u64) as libc::c_int
        }),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, value)
}

/// The `SO_LINGER` setting.
pub(crate) fn linger(fd: &OwnedFd) -> io::Result<Option<Duration>> {
    let l: libc::linger = getsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER)?;
    Ok((l.l_onoff != 0).then(|| Duration::from_secs(l.l_linger.max(0) as u64)))
}

/// `IP_TTL`.
pub(crate) fn set_ttl(fd: &OwnedFd, ttl: u32) -> io::Result<()> {
    let ttl = libc::c_int::try_from(ttl)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "TTL out of range"))?;
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, ttl)
}

/// The `SocketAddr` in a `sockaddr_storage` the kernel filled.
fn from_sockaddr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> io::Result<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, the kernel wrote at
            // least that many bytes, and `sockaddr_storage` is aligned for it.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "socket address of an unexpected family",
        )),
    }
}

/// `bind(2)`.
pub(crate) fn bind(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = seastar_hal_mio::sockaddr_of(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes; the kernel only reads it.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) })?;
    Ok(())
}

/// `listen(2)`.
pub(crate) fn listen(fd: &OwnedFd, backlog: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(())
}

type GetName =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn socket_name(fd: RawFd, call: GetName) -> io::Result<SocketAddr> {
    // SAFETY: all-zero is a valid `sockaddr_storage`.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `call` is getsockname or getpeername; `storage` is writable for `len` bytes and
    // `len` is a valid, writable socklen_t.
    cvt(unsafe { call(fd, (&raw mut storage).cast(), &mut len) })?;
    from_sockaddr(&storage, len)
}

/// `getsockname(2)`.
pub(crate) fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    socket_name(fd, libc::getsockname)
}

/// `getpeername(2)`.
pub(crate) fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    socket_name(fd, libc::getpeername)
}

// ---- the core's I/O driver handle ----------------------------------------------------------

impl IoDriver for CoreIo {
    unsafe fn submit(&self, op: RawOp) -> Result<OpId, IoError> {
        match self {
            // SAFETY: forwarded with the caller's guarantee on the pointers in `op`.
            CoreIo::Uring(p) => unsafe { p.io().submit(op) },
            // SAFETY: as above.
            CoreIo::Mio(p) => unsafe { p.io().submit(op) },
        }
    }

    #[inline]
    fn poll_op(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
        match self {
            CoreIo::Uring(p) => p.io().poll_op(id, cx),
            CoreIo::Mio(p) => p.io().poll_op(id, cx),
        }
    }

    #[inline]
    fn has_completion(&self, id: OpId) -> bool {
        match self {
            CoreIo::Uring(p) => p.io().has_completion(id),
            CoreIo::Mio(p) => p.io().has_completion(id),
        }
    }

    fn cancel(&self, id: OpId, keepalive: Box<dyn Any>) {
        match self {
            CoreIo::Uring(p) => p.io().cancel(id, keepalive),
            CoreIo::Mio(p) => p.io().cancel(id, keepalive),
        }
    }

    fn in_flight(&self) -> usize {
        match self {
            CoreIo::Uring(p) => p.io().in_flight(),
            CoreIo::Mio(p) => p.io().in_flight(),
        }
    }

    fn create_pool(&self, count: u16, size: u32) -> Result<PoolId, IoError> {
        match self {
            CoreIo::Uring(p) => p.io().create_pool(count, size),
            CoreIo::Mio(p) => p.io().create_pool(count, size),
        }
    }

    #[inline]
    fn pool_buffer(&self, pool: PoolId, bid: u16) -> Option<(*const u8, usize)> {
        match self {
            CoreIo::Uring(p) => p.io().pool_buffer(pool, bid),
            CoreIo::Mio(p) => p.io().pool_buffer(pool, bid),
        }
    }

    #[inline]
    fn release_buffer(&self, pool: PoolId, bid: u16) {
        match self {
            CoreIo::Uring(p) => p.io().release_buffer(pool, bid),
            CoreIo::Mio(p) => p.io().release_buffer(pool, bid),
        }
    }

    #[inline]
    fn send_detached(
        &self,
        fd: Fd,
        bufs: SendBufs,
        status: &Rc<SendStatus>,
    ) -> Result<(), IoError> {
        match self {
            CoreIo::Uring(p) => p.io().send_detached(fd, bufs, status),
            CoreIo::Mio(p) => p.io().send_detached(fd, bufs, status),
        }
    }
}

// ---- buffers -----------------------------------------------------------------------------

// SAFETY: forwards to the inner `PooledBuf`'s impl (pool memory that stays put while the
// driver, which the buffer owns a handle to, lives; read-only).
unsafe impl IoBuf for RecvBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.inner().stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.inner().bytes_init()
    }
    fn bytes_total(&self) -> usize {
        self.inner().bytes_total()
    }
}

// SAFETY: the memory is the inner buffer's, which is stable by `B: IoBuf`'s own promise;
// `Slice` only offsets into it. `Slice::new` clamps `begin <= end <= bytes_total()` of the
// inner buffer (which `&self` access cannot change), so the pointer stays inside (or one past
// the end of) the allocation, `bytes_total() - begin` bytes follow it, and of those the first
// `min(end, inner init) - begin` are initialised.
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn stable_ptr(&self) -> *const u8 {
        self.get_ref().stable_ptr().wrapping_add(self.begin())
    }
    fn bytes_init(&self) -> usize {
        self.get_ref()
            .bytes_init()
            .min(self.end())
            .saturating_sub(self.begin())
    }
    fn bytes_total(&self) -> usize {
        self.get_ref()
            .bytes_total()
            .min(self.end())
            .saturating_sub(self.begin())
    }
}
