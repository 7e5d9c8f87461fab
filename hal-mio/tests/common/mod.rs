//! Test harness shared by the integration tests: a tiny bounded executor (hal-mio must not
//! depend on the kernel), loopback socket helpers and a byte pattern.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::{poll_fn, Future};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use seastar_hal::io::{complete_read, Fd, Op};
use seastar_hal::{IoError, Platform};
use seastar_hal_mio::{tcp_socket, MioDriver, MioPlatform};

/// No test future may run longer than this.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A waker that records that it was woken.
#[derive(Default)]
pub struct Flag {
    pub woken: AtomicBool,
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

pub fn flag_waker() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    (flag, waker)
}

/// Drive `fut` to completion on `p`: poll it only when its waker was woken (so a lost wake-up
/// shows up as a timeout, not as a pass), park in between. Bounded by [`LIMIT`].
pub fn run<F: Future>(p: &MioPlatform, fut: F) -> F::Output {
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
            "test future did not finish within {LIMIT:?}"
        );
        p.park(Some(p.now() + Duration::from_millis(100)));
    }
}

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

/// A non-blocking loopback listener whose fd is handed to the caller.
pub fn listener() -> (Fd, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    (l.into_raw_fd(), addr)
}

pub async fn close(io: &MioDriver, fd: Fd) {
    let (c, ()) = Op::close(io, fd).expect("submit close").await;
    c.result.expect("close");
}

pub async fn connect(io: &MioDriver, addr: SocketAddr) -> Result<Fd, IoError> {
    let fd = tcp_socket(addr).expect("socket");
    let (c, ()) = Op::connect(io, fd, addr).expect("submit connect").await;
    match c.result {
        Ok(_) => Ok(fd),
        Err(e) => {
            close(io, fd).await;
            Err(e)
        }
    }
}

pub async fn accept(io: &MioDriver, lfd: Fd) -> Fd {
    let (c, ()) = Op::accept(io, lfd).expect("submit accept").await;
    c.result.expect("accept") as Fd
}

/// A connected pair (client, server), both driven by `p`. The listener is closed.
pub fn pair(p: &MioPlatform) -> (Fd, Fd) {
    let io = p.io();
    let (lfd, addr) = listener();
    let client = std::cell::Cell::new(-1);
    let server = std::cell::Cell::new(-1);
    run(
        p,
        join_all(vec![
            Box::pin(async { client.set(connect(io, addr).await.expect("connect")) }),
            Box::pin(async { server.set(accept(io, lfd).await) }),
        ]),
    );
    run(p, close(io, lfd));
    (client.get(), server.get())
}

/// The byte at position `i` of a test stream: not periodic over any short distance, so a
/// lost, duplicated or reordered chunk shows.
pub fn pattern(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (i >> 12) as u8
}

pub fn pattern_vec(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|k| pattern(start + k)).collect()
}

/// Send all of `data`, in chunks of at most `chunk` bytes, re-sending what a short send left.
pub async fn send_all(io: &MioDriver, fd: Fd, data: &[u8], chunk: usize) {
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
pub async fn recv_exact(io: &MioDriver, fd: Fd, len: usize, chunk: usize) -> Vec<u8> {
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

/// One receive; `Ok(0)` is end of stream.
pub async fn recv_once(io: &MioDriver, fd: Fd, cap: usize) -> Result<Vec<u8>, IoError> {
    let (c, mut buf) = Op::recv(io, fd, Vec::with_capacity(cap))
        .map_err(|(e, _)| e)
        .expect("submit recv")
        .await;
    complete_read(&c, &mut buf)?;
    Ok(buf)
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
