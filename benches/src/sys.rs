//! The libc calls of the shared code, each behind a safe function.

use std::io;

/// Restrict the calling thread to `cpu`.
pub(crate) fn set_thread_affinity(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond CPU_SETSIZE"),
        ));
    }
    // SAFETY: `cpu_set_t` is plain data for which all-zero bytes are the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE (checked above), so CPU_SET writes inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid, initialised `cpu_set_t` and the
    // size passed is its size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`_SC_CLK_TCK`, 100 on Linux).
pub(crate) fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// `TCP_NODELAY` on `fd`, as every echo server in the matrix sets it.
pub(crate) fn set_nodelay(fd: std::os::fd::RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int that outlives the call and its size is passed; a bad
    // descriptor is reported as an error, not undefined behaviour.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            std::ptr::from_ref(&one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Shut both directions of socket `fd` down (errors ignored: the peer may be gone already).
pub(crate) fn shutdown(fd: std::os::fd::RawFd) {
    // SAFETY: no pointers; a bad descriptor only makes the call fail.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}
