//! [`TcpListener`]: each core binds the same address with `SO_REUSEPORT`, so the kernel
//! spreads incoming connections over the cores and each accepts its own.
//!
//! Accepting uses one multishot accept, armed on the first `accept()` and kept across calls:
//! the platform queues every connection that arrives (one io_uring submission for any
//! number of connections; mio accepts on each readiness edge), and each `accept()` takes
//! the next. If it ends (an error, or the platform stopped it) the next call arms a new one;
//! platforms without multishot accept get single accepts instead. Dropping the listener
//! cancels it, and the platform closes connections accepted but not yet taken.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use seastar_hal::io::{MultiOp, Op};
use seastar_hal::ErrorKind;

use super::socket::Socket;
use super::stream::TcpStream;
use crate::error::to_io;
use crate::io_handle::{self, CoreIo};
use crate::sys;

/// The listen backlog [`TcpListener::bind`] uses.
pub const DEFAULT_BACKLOG: i32 = 1024;

/// Options for binding a [`TcpListener`]; [`TcpListener::bind`] uses the defaults.
///
/// ```no_run
/// # fn f() -> std::io::Result<()> {
/// use seastar::net::ListenOptions;
/// // A listener that must be alone on its port (binding fails with `AddrInUse` otherwise).
/// let l = ListenOptions::new().reuse_port(false).backlog(128).bind("127.0.0.1:0".parse().unwrap())?;
/// # drop(l); Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ListenOptions {
    reuse_port: bool,
    backlog: i32,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            reuse_port: true,
            backlog: DEFAULT_BACKLOG,
        }
    }
}

impl ListenOptions {
    /// `SO_REUSEPORT` on, backlog [`DEFAULT_BACKLOG`].
    pub fn new() -> Self {
        Self::default()
    }

    /// `SO_REUSEPORT`: let every core (and other sockets of this user with the option) bind
    /// the same address. Default on. Off, binding an address in use fails with `AddrInUse`.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// The `listen(2)` backlog.
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Create the socket (non-blocking, close-on-exec, `SO_REUSEADDR`), bind and listen.
    /// Must run on a runtime core.
    pub fn bind(self, addr: SocketAddr) -> io::Result<TcpListener> {
        let io = io_handle::current()?;
        let fd = sys::tcp_socket(&addr)?;
        sys::set_reuse(&fd, self.reuse_port)?;
        sys::bind(&fd, &addr)?;
        sys::listen(&fd, self.backlog)?;
        Ok(TcpListener {
            accept: RefCell::new(AcceptState::default()),
            sock: Socket::new(fd, io),
        })
    }
}

#[derive(Debug, Default)]
struct AcceptState {
    /// The multishot accept, while one is armed.
    multi: Option<MultiOp<CoreIo>>,
    /// The platform refused multishot: use single accepts.
    single_only: bool,
    /// The pending single accept.
    single: Option<Op<(), CoreIo>>,
    /// Wakers of every pending `accept()`. The platform keeps only the waker of the last
    /// poll, so whoever takes a connection (or gives up) wakes the others, which poll again
    /// and re-register.
    waiters: Vec<Waker>,
}

impl AcceptState {
    /// Wake every waiter but `except` (the task that is about to get a result).
    fn wake_waiters(&mut self, except: Option<&Waker>) {
        for w in self.waiters.drain(..) {
            if !except.is_some_and(|e| e.will_wake(&w)) {
                w.wake();
            }
        }
    }

    fn add_waiter(&mut self, w: &Waker) {
        if !self.waiters.iter().any(|x| x.will_wake(w)) {
            self.waiters.push(w.clone());
        }
    }

    /// The next accepted descriptor.
    fn poll_fd(&mut self, io: &CoreIo, fd: i32, cx: &mut Context<'_>) -> Poll<io::Result<i32>> {
        loop {
            if self.single_only {
                if self.single.is_none() {
                    self.single = Some(Op::accept(io.clone(), fd).map_err(to_io)?);
                }
                let Some(op) = self.single.as_mut() else {
                    continue;
                };
                return match op.poll_complete(cx) {
                    Poll::Pending => {
                        self.add_waiter(cx.waker());
                        Poll::Pending
                    }
                    Poll::Ready((c, ())) => {
                        self.single = None;
                        self.wake_waiters(Some(cx.waker()));
                        Poll::Ready(c.result.map(|fd| fd as i32).map_err(to_io))
                    }
                };
            }
            if self.multi.is_none() {
                match MultiOp::accept_multishot(io.clone(), fd) {
                    Ok(m) => self.multi = Some(m),
                    Err(e) if e.kind() == ErrorKind::Unsupported => {
                        log::debug!("seastar: multishot accept unsupported; using single accepts");
                        self.single_only = true;
                        continue;
                    }
                    Err(e) => return Poll::Ready(Err(to_io(e))),
                }
            }
            let Some(multi) = self.multi.as_mut() else {
                continue;
            };
            match multi.poll_next(cx) {
                Poll::Pending => {
                    self.add_waiter(cx.waker());
                    return Poll::Pending;
                }
                // Ended without a completion: re-arm.
                Poll::Ready(None) => self.multi = None,
                Poll::Ready(Some(c)) => {
                    if !c.more {
                        self.multi = None;
                    }
                    self.wake_waiters(Some(cx.waker()));
                    return match c.result {
                        Ok(fd) => Poll::Ready(Ok(fd as i32)),
                        Err(e) if e.kind() == ErrorKind::Unsupported && !c.more => {
                            self.single_only = true;
                            continue;
                        }
                        Err(e) => Poll::Ready(Err(to_io(e))),
                    };
                }
            }
        }
    }
}

/// A listening TCP socket on this core. `!Send`: it belongs to the core that bound it.
///
/// ```no_run
/// use seastar::net::TcpListener;
/// # async fn serve() -> std::io::Result<()> {
/// let listener = TcpListener::bind("0.0.0.0:7000".parse().unwrap())?;
/// loop {
///     let (stream, peer) = listener.accept().await?;
///     seastar::spawn(async move {
///         let _ = (stream, peer); // serve the connection
///     })
///     .detach();
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct TcpListener {
    // Declared first so it drops first: the accept is cancelled before the socket closes.
    accept: RefCell<AcceptState>,
    sock: Socket,
}

impl TcpListener {
    /// Bind `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` and listen (backlog
    /// [`DEFAULT_BACKLOG`]). Must run on a runtime core. See [`ListenOptions`] for other
    /// settings.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        ListenOptions::new().bind(addr)
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Wait for the next connection. Several tasks may wait at once; each connection goes to
    /// one of them.
    pub fn accept(&self) -> Accept<'_> {
        Accept {
            listener: self,
            waiting: false,
        }
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        loop {
            let polled = self
                .accept
                .borrow_mut()
                .poll_fd(self.sock.io(), self.sock.raw(), cx);
            let fd = match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(fd)) if fd < 0 => {
                    return Poll::Ready(Err(io::Error::other("the platform accepted a bad fd")))
                }
                Poll::Ready(Ok(fd)) => fd,
            };
            let sock = Socket::new(sys::own_accepted(fd), self.sock.io().clone());
            match sock.peer_addr() {
                Ok(peer) => return Poll::Ready(Ok((TcpStream::from_socket(sock), peer))),
                // The peer is already gone (reset before we looked): like accept(2) skipping
                // an aborted connection, close it and take the next.
                Err(e) => {
                    log::debug!("seastar: dropping an accepted connection without a peer: {e}");
                    drop(sock);
                }
            }
        }
    }
}

/// The future of [`TcpListener::accept`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Accept<'a> {
    listener: &'a TcpListener,
    waiting: bool,
}

impl Future for Accept<'_> {
    type Output = io::Result<(TcpStream, SocketAddr)>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = self.listener.poll_accept(cx);
        self.waiting = res.is_pending();
        res
    }
}

impl Drop for Accept<'_> {
    fn drop(&mut self) {
        if self.waiting {
            // The platform may hold this future's waker as the only one: let the other
            // waiters re-register.
            if let Ok(mut st) = self.listener.accept.try_borrow_mut() {
                st.wake_waiters(None);
            }
        }
    }
}
