//! [`TcpStream`] and its owned halves.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use seastar_hal::buf::{IoBuf, IoBufMut};

use crate::buf::RecvBuf;

use super::socket::Socket;
use crate::io_handle;
use crate::sys;

/// A TCP connection on this core, with an owned-buffer API: each operation takes its buffer
/// by value and hands it back with the result (`(io::Result<T>, B)`), so io_uring can use the
/// memory while the operation is in flight, and dropping the future cancels it safely.
///
/// Methods take `&self`: a read and a write may be in flight at once from different tasks
/// (share the stream through an `Rc`, or [`into_split`](Self::into_split) it). Two reads (or
/// two writes) in flight at once on one stream may complete in any order on io_uring.
///
/// The stream is `!Send`: it belongs to the core that created it. Dropping it closes the
/// socket without blocking; operations still in flight are cancelled first (their futures
/// borrow the stream, so they are gone by then).
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use seastar::net::TcpStream;
/// let stream = TcpStream::connect("127.0.0.1:7000".parse().unwrap()).await?;
/// let (res, buf) = stream.write_all(b"hello".to_vec()).await;
/// res?;
/// let (res, buf) = stream.read(buf).await; // reuses the allocation; data is buf[..n]
/// let n = res?;
/// # let _ = (n, buf); Ok(()) }
/// ```
#[derive(Debug)]
pub struct TcpStream {
    sock: Rc<Socket>,
}

impl TcpStream {
    pub(crate) fn from_socket(sock: Socket) -> Self {
        TcpStream {
            sock: Rc::new(sock),
        }
    }

    /// Connect to `addr`. Must run on a runtime core.
    ///
    /// Errors: `ConnectionRefused` when nothing listens there, `TimedOut` when the kernel
    /// gives up, and the other `std::io::ErrorKind`s `connect(2)` maps to.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let io = io_handle::current()?;
        let sock = Socket::new(sys::tcp_socket(&addr)?, io);
        sock.connect(addr).await?;
        Ok(TcpStream::from_socket(sock))
    }

    /// [`connect`](Self::connect), giving up with `io::ErrorKind::TimedOut` after `limit`.
    pub async fn connect_timeout(addr: SocketAddr, limit: Duration) -> io::Result<TcpStream> {
        match crate::time::timeout(limit, Self::connect(addr)).await {
            Ok(res) => res,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {addr} took longer than {limit:?}"),
            )),
        }
    }

    /// Receive into `buf`, from its start up to its capacity. `Ok(n)`: the data is `buf[..n]`;
    /// `Ok(0)` is the end of the stream, or a zero-capacity buffer (which returns at once). A `Vec`'s length grows
    /// to cover the received bytes (it never shrinks: `clear()` a reused buffer first if its
    /// length should be the count).
    pub async fn read<B: IoBufMut>(&self, buf: B) -> (io::Result<usize>, B) {
        self.sock.read(buf).await
    }

    /// Receive the next bytes into a buffer the platform picks from the core's receive pool
    /// (io_uring: a provided-buffer ring and one multishot receive kept across calls; mio: a
    /// free list, read into on readiness). `Ok(None)` is the end of the stream. The
    /// [`RecvBuf`] holds at most 16 KiB; send it back as it is (no copy) or drop it to return
    /// the buffer. One task at a time may call it. After the first `recv()` the platform
    /// keeps receiving for this stream (up to a bounded number of buffers, then it waits for
    /// them to be released), so do not mix it with [`read`](Self::read) on the same stream:
    /// such a `read` fails with `InvalidInput`.
    ///
    /// The hold limit: one stream's receive holds at most 32 buffers (received and not yet
    /// returned, queued ones and [`RecvBuf`]s in unfinished [`write_behind`](Self::write_behind)
    /// sends included); at 32 the platform pauses it until at most 16 are held. If nothing is
    /// queued, the receive is paused, and the `RecvBuf`s still alive outside unfinished
    /// write-behind sends are more than 16 (say a task assembles a large message from them),
    /// only their holder can resume it, so `recv()` fails at once with
    /// `io::ErrorKind::QuotaExceeded` instead of waiting forever. That error ends nothing and
    /// loses nothing: drop or send some `RecvBuf`s and call `recv()` again; it returns the
    /// following bytes, in order. (Buffers in write-behind sends still in flight come back by
    /// themselves: with at most 16 held elsewhere, `recv()` waits for them instead.) A task
    /// that hands `RecvBuf`s to other tasks bounds how many are out, or retries once some
    /// came back.
    ///
    /// ```no_run
    /// # async fn f(stream: seastar::net::TcpStream) -> std::io::Result<()> {
    /// while let Some(buf) = stream.recv().await? {
    ///     let (res, _buf) = stream.write_all(buf).await; // echo, zero-copy
    ///     res?;
    /// }
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn recv(&self) -> impl Future<Output = io::Result<Option<RecvBuf>>> + '_ {
        self.sock.recv()
    }

    /// A buffer [`recv`](Self::recv) would return at once, without waiting: `Ok(None)` when
    /// none has arrived yet, before the first `recv`, or at end of stream (the next `recv`
    /// says which). Lets a server gather what is already there into one
    /// [`writev_all`](Self::writev_all). Call `recv` before waiting for this stream's data
    /// again: only `recv` registers the task to be woken. At the hold limit (see
    /// [`recv`](Self::recv)) it returns `Ok(None)`: nothing can be handed out until buffers
    /// are released, and a peek is not a wait, so a gathering caller simply sends what it
    /// holds; a `recv` after it reports the limit (`QuotaExceeded`) if the caller still holds
    /// too many, so `Ok(None)` never leads to a silent wait.
    #[inline]
    pub fn try_recv(&self) -> io::Result<Option<RecvBuf>> {
        self.sock.try_recv()
    }

    /// Send `buf`'s initialised bytes (a `Vec`'s `len()`) once; the count may be short.
    pub async fn write<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        self.sock.write(buf).await
    }

    /// Send all of `buf`'s initialised bytes. Fails with `BrokenPipe` or `ConnectionReset`
    /// when the peer has gone (no `SIGPIPE` is raised).
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> (io::Result<()>, B) {
        self.sock.write_all(buf).await
    }

    /// Send the buffers' initialised bytes in order with one gather write; the count may be
    /// short. Only the first 1024 buffers (`UIO_MAXIOV`) go out in one call; all of them
    /// come back.
    pub async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        self.sock.writev(bufs).await
    }

    /// Send all the buffers' bytes in order, with as few gather writes as the socket allows
    /// (any number of buffers).
    pub async fn writev_all<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<()>, Vec<B>) {
        self.sock.writev_all(bufs).await
    }

    /// Start sending all of `buf`'s initialised bytes and return without waiting for the
    /// send to finish (write-behind): the platform's driver owns the buffer until it has gone
    /// out and then drops it (a [`RecvBuf`] returns to the pool), and the finished send wakes
    /// nobody, which saves a task poll per message. A [`RecvBuf`], a `Vec<u8>` or `'static`
    /// bytes cost no allocation; other buffer types are boxed.
    ///
    /// At most one write-behind send is in flight per stream: a call waits for the previous
    /// one (that is the back-pressure). Bytes go out in call order, and every other write and
    /// [`shutdown`](Self::shutdown) waits for them first. A failed send is reported by the
    /// stream's next operation ([`recv`](Self::recv), a write, [`flush`](Self::flush),
    /// `shutdown`); [`flush`](Self::flush) waits for the bytes to be out. Dropping the
    /// stream with a send in flight closes it only after that send finished.
    ///
    /// [`RecvBuf`]s in a send count towards the stream's receive hold limit (32 buffers,
    /// resumed at 16) until the send finished; the driver then gives them back (and resumes a
    /// receive paused for them) by itself, so [`recv`](Self::recv) waits for them rather than
    /// fail.
    ///
    /// ```no_run
    /// # async fn f(stream: seastar::net::TcpStream) -> std::io::Result<()> {
    /// while let Some(buf) = stream.recv().await? {
    ///     stream.write_behind(buf).await?; // echo: one task poll per message
    /// }
    /// stream.flush().await
    /// # }
    /// ```
    pub fn write_behind<B: IoBuf>(&self, buf: B) -> impl Future<Output = io::Result<()>> + '_ {
        self.sock.write_behind(buf)
    }

    /// [`write_behind`](Self::write_behind) of several buffers in order, as one gather send
    /// (per 1,024 buffers). Takes every buffer out of `bufs` (also when it fails), so the
    /// caller can fill the same `Vec` again: a gather then allocates nothing. If the future
    /// is dropped while it waits for an earlier send, the buffers not yet handed to the
    /// platform stay in `bufs`.
    pub fn writev_behind<'a, B: IoBuf>(
        &'a self,
        bufs: &'a mut Vec<B>,
    ) -> impl Future<Output = io::Result<()>> + 'a {
        self.sock.writev_behind(bufs)
    }

    /// Wait until every [`write_behind`](Self::write_behind) byte has gone out; the error of
    /// a send that failed.
    pub async fn flush(&self) -> io::Result<()> {
        self.sock.flush().await
    }

    /// Shut down the reading side, the writing side (the peer reads end of stream), or both,
    /// after the [`write_behind`](Self::write_behind) bytes went out. Await other writes
    /// before shutting down writing.
    pub async fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.sock.shutdown(how).await
    }

    /// Set `TCP_NODELAY` (disable Nagle's algorithm).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.sock.set_nodelay(on)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.sock.nodelay()
    }

    /// Set `SO_LINGER`. `Some(Duration::ZERO)` makes dropping the stream reset the connection
    /// (the peer sees `ConnectionReset`) instead of closing it gracefully.
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        self.sock.set_linger(linger)
    }

    /// The `SO_LINGER` setting.
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        self.sock.linger()
    }

    /// Set the IP time-to-live of outgoing packets.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.sock.set_ttl(ttl)
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Split into a read half and a write half that can be used from different tasks. The
    /// socket closes when both are dropped (dropping the write half does not shut down
    /// writing: call [`OwnedWriteHalf::shutdown`] for that).
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let sock = self.sock.clone();
        drop(self); // not the last reference: no linger
        (
            OwnedReadHalf { sock: sock.clone() },
            OwnedWriteHalf { sock },
        )
    }
}

/// Dropping the last handle of a stream whose write-behind send is still in flight: a task
/// keeps the socket until the send finished, then closes it, so the bytes are not cancelled
/// and the descriptor is not closed under a send. Without a runtime core to run that task,
/// the send is cancelled.
fn close_after_sends(sock: &Rc<Socket>) {
    if Rc::strong_count(sock) == 1 && sock.sending_behind() {
        let sock = sock.clone();
        if let Ok(task) = crate::task::try_spawn(async move {
            // Nobody is left to hear of a failure.
            let _ = sock.flush().await;
        }) {
            task.detach();
        }
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        close_after_sends(&self.sock);
    }
}

impl Drop for OwnedReadHalf {
    fn drop(&mut self) {
        close_after_sends(&self.sock);
    }
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        close_after_sends(&self.sock);
    }
}

/// The reading half of a [`TcpStream`], from [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    sock: Rc<Socket>,
}

/// The writing half of a [`TcpStream`], from [`TcpStream::into_split`].
#[derive(Debug)]
pub struct OwnedWriteHalf {
    sock: Rc<Socket>,
}

/// [`OwnedReadHalf::reunite`] was given halves of two different streams; here they are back.
#[derive(Debug)]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl std::fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tried to reunite halves of different streams")
    }
}

impl std::error::Error for ReuniteError {}

impl OwnedReadHalf {
    /// As [`TcpStream::recv`], hold limit included (`io::ErrorKind::QuotaExceeded` while
    /// only the holder of this half's `RecvBuf`s can resume the receive).
    #[inline]
    pub fn recv(&self) -> impl Future<Output = io::Result<Option<RecvBuf>>> + '_ {
        self.sock.recv()
    }

    /// As [`TcpStream::try_recv`] (`Ok(None)` at the hold limit).
    #[inline]
    pub fn try_recv(&self) -> io::Result<Option<RecvBuf>> {
        self.sock.try_recv()
    }

    /// As [`TcpStream::read`].
    pub async fn read<B: IoBufMut>(&self, buf: B) -> (io::Result<usize>, B) {
        self.sock.read(buf).await
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Put the stream back together with its write half.
    pub fn reunite(self, other: OwnedWriteHalf) -> Result<TcpStream, ReuniteError> {
        if Rc::ptr_eq(&self.sock, &other.sock) {
            let sock = self.sock.clone();
            drop((self, other)); // not the last references: no linger
            Ok(TcpStream { sock })
        } else {
            Err(ReuniteError(self, other))
        }
    }
}

impl OwnedWriteHalf {
    /// As [`TcpStream::write`].
    pub async fn write<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        self.sock.write(buf).await
    }

    /// As [`TcpStream::write_all`].
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> (io::Result<()>, B) {
        self.sock.write_all(buf).await
    }

    /// As [`TcpStream::writev`].
    pub async fn writev<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        self.sock.writev(bufs).await
    }

    /// As [`TcpStream::writev_all`].
    pub async fn writev_all<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<()>, Vec<B>) {
        self.sock.writev_all(bufs).await
    }

    /// As [`TcpStream::write_behind`].
    pub fn write_behind<B: IoBuf>(&self, buf: B) -> impl Future<Output = io::Result<()>> + '_ {
        self.sock.write_behind(buf)
    }

    /// As [`TcpStream::writev_behind`].
    pub fn writev_behind<'a, B: IoBuf>(
        &'a self,
        bufs: &'a mut Vec<B>,
    ) -> impl Future<Output = io::Result<()>> + 'a {
        self.sock.writev_behind(bufs)
    }

    /// As [`TcpStream::flush`].
    pub async fn flush(&self) -> io::Result<()> {
        self.sock.flush().await
    }

    /// As [`TcpStream::shutdown`]; `Shutdown::Write` half-closes the connection.
    pub async fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        self.sock.shutdown(how).await
    }

    /// As [`TcpStream::set_nodelay`].
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.sock.set_nodelay(on)
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }
}
