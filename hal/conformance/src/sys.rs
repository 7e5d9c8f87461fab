//! The test harness's system calls, fenced here: creating and owning raw sockets and pipes,
//! and a reset instead of a FIN.
#![allow(unsafe_code)]

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A fresh, unconnected, non-blocking TCP socket for `addr`'s family.
pub fn tcp_socket(addr: &SocketAddr) -> OwnedFd {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call with valid constants; no memory is passed.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    own(fd)
}

/// Take ownership of a descriptor an operation returned.
pub fn own(fd: RawFd) -> OwnedFd {
    assert!(fd >= 0);
    // SAFETY: `fd` was just created for this test (socket(2) or an accept completion) and is
    // owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Closes `s` abortively: `SO_LINGER` with a zero timeout, then close, so the kernel sends an
/// RST instead of a FIN and discards unsent data. The peer's next operation fails with
/// `ECONNRESET`.
pub fn abort(s: TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is open (owned by `s`), and the option value is a valid `linger`
    // whose size is passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(s);
    Ok(())
}

/// A pipe: (read end, write end), both close-on-exec. (`std::io::pipe` is newer than the
/// workspace's minimum Rust version.)
pub fn pipe() -> (std::fs::File, OwnedFd) {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` is a valid, writable array of two descriptors, as pipe2(2) requires.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (std::fs::File::from(own(fds[0])), own(fds[1]))
}
