//! A tiny bounded executor for the tests: poll a future, park the platform, repeat.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use seastar_hal::Platform;
use seastar_hal_linux::{UringConfig, UringPlatform};

/// How long any single test future may take before the test fails instead of hanging.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Counts wake-ups.
#[derive(Default)]
pub struct CountingWaker(pub AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn platform() -> UringPlatform {
    UringPlatform::new(UringConfig::new()).expect("io_uring platform")
}

/// Run `fut` to completion on `p`, parking between polls; panics after [`LIMIT`].
pub fn block_on<F: Future>(p: &UringPlatform, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(counter);
    let mut cx = Context::from_waker(&waker);
    let start = std::time::Instant::now();
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(start.elapsed() < LIMIT, "future did not complete in time");
        p.park(Some(p.now() + Duration::from_millis(200)));
    }
}

/// Park until `done()` holds; panics after [`LIMIT`].
pub fn park_until(p: &UringPlatform, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "condition not reached in time");
        p.park(Some(p.now() + Duration::from_millis(50)));
    }
}

/// A connected loopback pair: (our end as a raw-fd owner, the peer as a std stream).
pub fn tcp_pair() -> (OwnedFd, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (ours, _) = listener.accept().expect("accept");
    (OwnedFd::from(ours), peer)
}

/// A fresh, unconnected TCP socket for `addr`'s family.
pub fn tcp_socket(addr: &SocketAddr) -> OwnedFd {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call with valid constants.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
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

/// A unique scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "seastar-hal-linux-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The byte at `offset` of the test stream: values 0..251, so 0xFF never occurs.
pub fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// Close `peer` with a reset (SO_LINGER {on, 0}) instead of a FIN.
pub fn reset(peer: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket, option pointer and length of a `linger`.
    let rc = unsafe {
        libc::setsockopt(
            peer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(peer);
}
