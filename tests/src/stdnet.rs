//! Blocking `std::net` peers for our runtime: clients and small servers whose every operation
//! has a timeout, so a bug in the code under test fails the test instead of hanging it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::{IO_TIMEOUT, LOOPBACK_ANY_PORT};

/// Sets read and write timeouts of [`IO_TIMEOUT`] and `TCP_NODELAY` on `s`.
pub fn configure(s: &TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)
}

/// Connects to `addr` (with a timeout) and [`configure`]s the stream.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    configure(&s)?;
    Ok(s)
}

/// Closes a stream abortively (RST instead of FIN): the HAL conformance suite's, one
/// implementation for both.
pub use seastar_hal_conformance::harness::abort;

/// Sets `SO_RCVBUF` / `SO_SNDBUF` of `s` (the kernel doubles the value and applies a minimum),
/// to make "the peer stopped reading" fill up sooner.
pub fn set_buffer_sizes(s: &TcpStream, bytes: i32) -> io::Result<()> {
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: open descriptor; the option value is a valid `c_int` whose size is passed.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A loopback address nobody listens on: bind a listener to an ephemeral port, note the port,
/// close the listener. A connect there is answered with RST (`ECONNREFUSED`).
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind(LOOPBACK_ANY_PORT).expect("bind ephemeral port");
    let a = l.local_addr().expect("local_addr");
    drop(l);
    a
}

/// A loopback listener whose accepts time out.
#[derive(Debug)]
pub struct StdListener {
    inner: TcpListener,
    addr: SocketAddr,
}

impl StdListener {
    /// Binds `127.0.0.1:0`.
    pub fn bind() -> io::Result<Self> {
        let inner = TcpListener::bind(LOOPBACK_ANY_PORT)?;
        inner.set_nonblocking(true)?;
        let addr = inner.local_addr()?;
        Ok(Self { inner, addr })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts one connection, waiting at most `limit`; the stream is [`configure`]d.
    pub fn accept_timeout(&self, limit: Duration) -> io::Result<(TcpStream, SocketAddr)> {
        let start = Instant::now();
        loop {
            match self.inner.accept() {
                Ok((s, a)) => {
                    configure(&s)?;
                    return Ok((s, a));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if start.elapsed() > limit {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no connection on {} within {limit:?}", self.addr),
                        ));
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Accepts with [`IO_TIMEOUT`].
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.accept_timeout(IO_TIMEOUT)
    }
}

/// A thread-per-connection `std::net` server that accepts exactly `conns` connections, runs
/// `handler(stream, index)` for each on its own thread, and reports every result.
#[derive(Debug)]
pub struct StdServer<T> {
    addr: SocketAddr,
    thread: thread::JoinHandle<Vec<Result<T, String>>>,
}

impl<T: Send + 'static> StdServer<T> {
    /// Binds and starts accepting in the background.
    pub fn spawn<H>(conns: usize, handler: H) -> io::Result<Self>
    where
        H: Fn(TcpStream, usize) -> T + Send + Sync + 'static,
    {
        let listener = StdListener::bind()?;
        let addr = listener.addr();
        let handler = Arc::new(handler);
        let thread = thread::Builder::new()
            .name("std-server".into())
            .spawn(move || {
                let mut workers = Vec::with_capacity(conns);
                let mut results: Vec<Result<T, String>> = Vec::new();
                for i in 0..conns {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let h = Arc::clone(&handler);
                            let w = thread::Builder::new()
                                .name(format!("std-conn-{i}"))
                                .stack_size(256 * 1024)
                                .spawn(move || h(s, i));
                            match w {
                                Ok(w) => workers.push(w),
                                Err(e) => results.push(Err(format!("spawn conn thread: {e}"))),
                            }
                        }
                        Err(e) => {
                            results.push(Err(format!("accept #{i}: {e}")));
                            break;
                        }
                    }
                }
                for w in workers {
                    results.push(w.join().map_err(|p| panic_message(&*p)));
                }
                results
            })?;
        Ok(Self { addr, thread })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for every connection to finish; one entry per connection (accept failures and
    /// handler panics are `Err`). Bounded: accepts and socket operations time out.
    pub fn join(self) -> Vec<Result<T, String>> {
        self.thread
            .join()
            .unwrap_or_else(|p| vec![Err(panic_message(&*p))])
    }

    /// Like [`join`](Self::join) but panics on any failed connection.
    pub fn join_ok(self) -> Vec<T> {
        self.join()
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.unwrap_or_else(|e| panic!("std server connection {i} failed: {e}")))
            .collect()
    }
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}

/// Echoes everything read back to the peer until EOF, then shuts down the write side. Returns
/// the number of bytes echoed.
pub fn echo(mut s: TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            s.shutdown(Shutdown::Write)?;
            return Ok(total);
        }
        s.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Reads until EOF and returns everything.
pub fn read_to_end(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    s.read_to_end(&mut v)?;
    Ok(v)
}

/// A loopback listener whose accept queue is full and never drained: `listen(fd, 0)` and
/// connections that filled it (kept open). A further connect's SYN is dropped by the kernel,
/// so the connect neither succeeds nor fails until the client gives up.
pub fn full_backlog_listener() -> io::Result<(TcpListener, Vec<TcpStream>)> {
    let l = TcpListener::bind(LOOPBACK_ANY_PORT)?;
    // SAFETY: `l` owns an open, bound socket descriptor; listen() on a listening socket only
    // changes its backlog.
    if unsafe { libc::listen(l.as_raw_fd(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let addr = l.local_addr()?;
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock =>
            {
                return Ok((l, fillers));
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "16 connections fit in a backlog-0 accept queue",
    ))
}
