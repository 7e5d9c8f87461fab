//! **Unsafe**, fenced: SIGINT/SIGTERM delivered to a thread as plain function calls, with the
//! classic self-pipe.
//!
//! A signal handler may only do async-signal-safe things, so ours does one: it `write(2)`s the
//! signal number (one byte) into a non-blocking pipe. A dedicated thread (`seastar-signals`)
//! blocks on the pipe's other end and calls the callback given to [`install`] with each
//! number, in ordinary thread context where locks, logging and wakers are fine.
//!
//! Why not `sigwait`/`signalfd`: they need the signals blocked in *every* thread of the process,
//! which a library cannot arrange once other threads exist (a test harness, the user's own).
//! The self-pipe works whatever threads exist. It is installed once per process and stays:
//! signal dispositions are process-wide, and the callback decides what a signal means when no
//! runtime is listening ([`default_action`] gives the signal its default effect back).
//!
//! If the pipe is full (more than 64 KiB of unread signal numbers) a byte is dropped; the
//! thread is then already awake with bytes to read, and signals do not queue anyway.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::thread;

/// The signals [`install`] handles.
pub(crate) const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// Write end of the self-pipe, `-1` until installed. An atomic because the handler reads it:
/// a lock-free atomic load is async-signal-safe, a lock is not.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

/// The outcome of the one installation, shared by every caller.
static INSTALLED: OnceLock<Result<(), (io::ErrorKind, String)>> = OnceLock::new();

/// The signal handler: forward the number to the pipe. Only async-signal-safe calls.
extern "C" fn on_signal(sig: libc::c_int) {
    // `write` may set errno, and the interrupted code may be about to read it: put it back.
    // SAFETY: `__errno_location` returns this thread's errno slot, always valid to read/write.
    let saved = unsafe { *libc::__errno_location() };
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SIGINT and SIGTERM are 2 and 15: they fit a byte.
        let byte = sig as u8;
        // SAFETY: `fd` is the pipe's write end, open for the life of the process (it is never
        // closed once stored); the buffer is one valid byte on this stack. A full pipe fails
        // with EAGAIN (the end is non-blocking), which is fine to ignore (module docs).
        let _ = unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// Route SIGINT and SIGTERM to `callback`, called on the `seastar-signals` thread with the
/// signal number. Idempotent: the first call installs (with its callback), later calls
/// return the first one's outcome.
pub(crate) fn install(callback: fn(libc::c_int)) -> io::Result<()> {
    INSTALLED
        .get_or_init(|| install_once(callback).map_err(|e| (e.kind(), e.to_string())))
        .clone()
        .map_err(|(kind, msg)| io::Error::new(kind, msg))
}

fn install_once(callback: fn(libc::c_int)) -> io::Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints, as `pipe2` requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `pipe2` succeeded, so both are fresh descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The reading thread blocks; only the handler's end must never block.
    // SAFETY: `read` is an open descriptor; F_SETFL with plain flags takes no pointer.
    if unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    thread::Builder::new()
        .name("seastar-signals".into())
        .spawn(move || read_loop(read, callback))?;
    // From here the write end lives for the rest of the process: the handler may use it at
    // any time, so it must never be closed (and its number never reused).
    WRITE_FD.store(std::os::fd::IntoRawFd::into_raw_fd(write), Ordering::SeqCst);
    for sig in SIGNALS {
        let handler: extern "C" fn(libc::c_int) = on_signal;
        set_disposition(sig, handler as libc::sighandler_t)?;
    }
    Ok(())
}

/// The `seastar-signals` thread: one callback per byte read.
fn read_loop(read: OwnedFd, callback: fn(libc::c_int)) {
    loop {
        let mut byte = 0u8;
        // SAFETY: `read` is open for this thread's lifetime (owned here); the buffer is one
        // writable byte.
        let n = unsafe { libc::read(read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
        match n {
            1 => callback(libc::c_int::from(byte)),
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            // EOF cannot happen (the write end is never closed); an error is unexpected: stop
            // rather than spin. The signals then go unanswered, which the log says.
            _ => {
                log::error!(
                    "seastar: the signal thread stopped: {}",
                    io::Error::last_os_error()
                );
                return;
            }
        }
    }
}

/// Set `sig`'s handler to `handler` (a function or `SIG_DFL`), restarting interrupted calls.
fn set_disposition(sig: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: `sigaction` is a plain C struct; all-zero is a valid value (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid, writable `sigset_t`.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is initialised; `handler` is either `SIG_DFL` or `on_signal`, an
    // `extern "C" fn(c_int)` that does only async-signal-safe work; no old action is asked for.
    if unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Give `sig` its default effect now (for SIGINT/SIGTERM: end the process, as if no handler
/// had been installed): restore the default disposition and raise it again.
pub(crate) fn default_action(sig: libc::c_int) {
    if let Err(e) = set_disposition(sig, libc::SIG_DFL) {
        log::error!("seastar: cannot restore the default action of signal {sig}: {e}");
        std::process::exit(128 + sig);
    }
    // SAFETY: plain integer argument; the default action of SIGINT/SIGTERM ends the process.
    unsafe { libc::raise(sig) };
}
