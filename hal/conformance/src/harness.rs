//! What the checks (and a backend's own tests) share: a tiny bounded executor over any
//! `Platform` (a HAL must not need the kernel to be tested), loopback sockets, a scratch
//! directory and a byte pattern.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{IntoRawFd, OwnedFd};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use seastar_hal::io::{complete_read, Fd, IoDriver, Op};
use seastar_hal::{IoError, Platform};

pub use crate::sys::{abort, own, pipe, tcp_socket};

/// How long any single test future or wait may take before the test fails instead of hanging.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A waker that records that, and how often, it was woken.
#[derive(Debug, Default)]
pub struct Flag {
    /// Set by a wake, cleared by whoever consumes it.
    pub woken: AtomicBool,
    /// Wakes so far.
    pub count: AtomicUsize,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.woken.store(true, Ordering::SeqCst);
    }
}

/// A [`Flag`] and a waker that sets it.
pub fn flag_waker() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    (flag, waker)
}

/// Drive `fut` to completion on `p`: poll it only when its waker was woken (so a lost wake-up
/// shows as a timeout, not as a pass), park in between. Panics after [`LIMIT`].
pub fn block_on<P: Platform, F: Future>(p: &P, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let (flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    let start = std::time::Instant::now();
    flag.woken.store(true, Ordering::SeqCst);
    loop {
        if flag.woken.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
        assert!(
            start.elapsed() < LIMIT,
            "future did not complete within {LIMIT:?}"
        );
        p.park(Some(p.now() + Duration::from_millis(100)));
    }
}

/// Park until `done()` holds; panics after [`LIMIT`].
pub fn park_until<P: Platform>(p: &P, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "condition not reached in time");
        p.park(Some(p.now() + Duration::from_millis(50)));
    }
}

/// A boxed unit future, for [`join_all`].
pub type BoxFut<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Run all futures concurrently until every one is done.
pub async fn join_all(futs: Vec<BoxFut<'_>>) {
    let mut futs: Vec<Option<BoxFut<'_>>> = futs.into_iter().map(Some).collect();
    poll_fn(move |cx| {
        let mut pending = false;
        for slot in futs.iter_mut() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(()) => *slot = None,
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await
}

/// A connected loopback pair: (our end, the peer as a std stream). Close our end through
/// the driver ([`close`]) when the driver has seen it: a readiness driver must forget it.
pub fn tcp_pair() -> (OwnedFd, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let peer = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (ours, _) = listener.accept().expect("accept");
    (OwnedFd::from(ours), peer)
}

/// [`tcp_pair`] with our end as a bare descriptor, for checks that hand it to the driver and
/// close it through it ([`close`]).
pub fn tcp_pair_fd() -> (Fd, TcpStream) {
    let (ours, peer) = tcp_pair();
    (ours.into_raw_fd(), peer)
}

/// A non-blocking loopback listener whose descriptor is handed to the caller.
pub fn listener() -> (Fd, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    (l.into_raw_fd(), addr)
}

/// An address nobody listens on (a listener bound there was closed again).
pub fn refused_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// Close `fd` through the driver (which forgets it), checking the result.
pub async fn close<D: IoDriver + ?Sized>(io: &D, fd: Fd) {
    let (c, ()) = Op::close(io, fd).expect("submit close").await;
    c.result.expect("close");
}

/// Connect a fresh socket to `addr` through the driver; the socket is closed on failure.
pub async fn connect<D: IoDriver + ?Sized>(io: &D, addr: SocketAddr) -> Result<Fd, IoError> {
    let fd = tcp_socket(&addr).into_raw_fd();
    let (c, ()) = Op::connect(io, fd, addr).expect("submit connect").await;
    match c.result {
        Ok(_) => Ok(fd),
        Err(e) => {
            close(io, fd).await;
            Err(e)
        }
    }
}

/// Accept one connection on `lfd` through the driver.
pub async fn accept<D: IoDriver + ?Sized>(io: &D, lfd: Fd) -> Fd {
    let (c, ()) = Op::accept(io, lfd).expect("submit accept").await;
    c.result.expect("accept") as Fd
}

/// A connected pair (client, server), both driven by `p`. The listener is closed.
pub fn pair<P: Platform>(p: &P) -> (Fd, Fd) {
    let io = p.io();
    let (lfd, addr) = listener();
    let client = Cell::new(-1);
    let server = Cell::new(-1);
    block_on(
        p,
        join_all(vec![
            Box::pin(async { client.set(connect(io, addr).await.expect("connect")) }),
            Box::pin(async { server.set(accept(io, lfd).await) }),
        ]),
    );
    block_on(p, close(io, lfd));
    (client.get(), server.get())
}

/// The byte at position `i` of a test stream: not periodic over any short distance, so a
/// lost, duplicated or reordered chunk shows.
pub fn pattern(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (i >> 12) as u8
}

/// `len` bytes of the test stream from `start` on.
pub fn pattern_vec(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|k| pattern(start + k)).collect()
}

/// Send all of `data`, in chunks of at most `chunk` bytes, re-sending what a short send left.
pub async fn send_all<D: IoDriver + ?Sized>(io: &D, fd: Fd, data: &[u8], chunk: usize) {
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        let (c, _buf) = Op::send(io, fd, data[off..end].to_vec())
            .map_err(|(e, _)| e)
            .expect("submit send")
            .await;
        let n = c.result.expect("send") as usize;
        assert!(n > 0 && n <= end - off);
        off += n;
    }
}

/// Receive exactly `len` bytes (panics on early EOF), in receives of at most `chunk` bytes.
pub async fn recv_exact<D: IoDriver + ?Sized>(io: &D, fd: Fd, len: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let want = chunk.min(len - out.len());
        let (c, mut buf) = Op::recv(io, fd, Vec::with_capacity(want))
            .map_err(|(e, _)| e)
            .expect("submit recv")
            .await;
        let n = complete_read(&c, &mut buf).expect("recv");
        assert!(n > 0, "unexpected EOF after {} of {len} bytes", out.len());
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// One receive of at most `cap` bytes; an empty result is end of stream.
pub async fn recv_once<D: IoDriver + ?Sized>(
    io: &D,
    fd: Fd,
    cap: usize,
) -> Result<Vec<u8>, IoError> {
    let (c, mut buf) = Op::recv(io, fd, Vec::with_capacity(cap))
        .map_err(|(e, _)| e)
        .expect("submit recv")
        .await;
    complete_read(&c, &mut buf)?;
    Ok(buf)
}

/// A unique scratch directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A new empty directory whose name carries `tag`, the process id and a counter.
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "seastar-hal-conformance-{tag}-{}-{}",
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
