//! Process limits the many-connections tests need.

use std::io;

/// Raises the soft `RLIMIT_NOFILE` to at least `want` (capped at the hard limit). Returns the
/// `(old_soft, new_soft, hard)` limits. Errors if even the hard limit is below `want`.
pub fn raise_nofile(want: u64) -> io::Result<(u64, u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let old: u64 = lim.rlim_cur;
    let hard: u64 = lim.rlim_max;
    if old >= want {
        return Ok((old, old, hard));
    }
    if hard < want {
        return Err(io::Error::other(format!(
            "RLIMIT_NOFILE hard limit {hard} is below the {want} descriptors this test needs"
        )));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid `rlimit` with cur <= max.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((old, hard, hard))
}
