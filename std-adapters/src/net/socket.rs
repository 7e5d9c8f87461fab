//! A socket owned by one core: its descriptor and the core's I/O handle, with the operations
//! every TCP type shares. The stream, its halves and the listener wrap it.

use std::any::Any;
use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use seastar_hal::buf::{IoBuf, IoBufMut};
use seastar_hal::io::{
    complete_read, IoDriver, Op, RecvStream, SendBuf, SendBufs, SendStatus, Shutdown,
};
use seastar_hal::IoError;

use crate::buf::{RecvBuf, Slice};
use crate::error::to_io;
use crate::io_handle::CoreIo;
use crate::sys;

/// `writev` hands at most this many buffers to the kernel at once (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;

/// An open socket on this core. Dropping it closes the descriptor without blocking, after
/// making the driver forget it (see [`CoreIo::before_close`]).
#[derive(Debug)]
pub(crate) struct Socket {
    fd: OwnedFd,
    io: CoreIo,
    recv: RefCell<RecvState>,
    /// The write-behind sends: detached sends of the driver, which owns their buffers and
    /// tells this status when one finishes. At most one is in flight per socket, so bytes go
    /// out in the order they were handed over and the bytes in flight are bounded by one
    /// call's buffers; a failure waits here for the socket's next operation.
    behind: Rc<SendStatus>,
}

/// The pooled receive of [`Socket::poll_recv`]: armed by the first `recv()`, kept across
/// calls, so the platform keeps receiving into the core's pool between them.
#[derive(Debug, Default)]
struct RecvState {
    stream: Option<RecvStream<CoreIo>>,
    /// End of stream was returned: later calls return it again without a new receive.
    eof: bool,
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Cancel the pooled receive first, so its cancel reaches the platform (the flush in
        // `before_close`) while the descriptor still names this socket. A write-behind send
        // still in flight is the driver's (the stream lingers for it while a task can wait:
        // see `TcpStream`'s drop): io_uring finishes it on its own reference to the socket,
        // mio fails it when the descriptor is released.
        drop(self.recv.get_mut().stream.take());
        self.io.before_close(self.fd.as_raw_fd());
        // `fd` (an `OwnedFd`) closes itself when the fields drop, right after this.
    }
}

impl Socket {
    pub(crate) fn new(fd: OwnedFd, io: CoreIo) -> Self {
        Socket {
            fd,
            io,
            recv: RefCell::new(RecvState::default()),
            behind: Rc::new(SendStatus::default()),
        }
    }

    /// Wait until no write-behind send is in flight; the error of one that failed (once).
    /// The common case, nothing in flight and no failure, costs two loads.
    #[inline]
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.behind.in_flight() > 0 {
            std::task::ready!(self.behind.poll_idle(cx));
        } else if !self.behind.has_error() {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(self.behind_error())
    }

    /// The failure of a finished write-behind send, reported once, without waiting.
    fn behind_error(&self) -> io::Result<()> {
        match self.behind.take_error() {
            Some(e) => Err(to_io(e)),
            None => Ok(()),
        }
    }

    /// Wait for every write-behind send to finish.
    pub(crate) async fn flush(&self) -> io::Result<()> {
        if self.behind.in_flight() == 0 {
            return self.behind_error();
        }
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Whether a write-behind send is in flight.
    pub(crate) fn sending_behind(&self) -> bool {
        self.behind.in_flight() > 0
    }

    /// Start sending `buf`'s initialised bytes and return without waiting for the send to
    /// finish; waits only for the previous write-behind send (one in flight per socket).
    ///
    /// One `poll_fn`, not an `async fn`: the common case waits for nothing, and nested
    /// `async fn` state machines cost measurably more per message (ARCHITECTURE.md).
    pub(crate) fn write_behind<B: IoBuf>(
        &self,
        buf: B,
    ) -> impl Future<Output = io::Result<()>> + '_ {
        let mut buf = Some(buf);
        poll_fn(move |cx| {
            std::task::ready!(self.poll_flush(cx))?;
            let Some(buf) = buf.take().map(send_buf) else {
                // Polled again after it finished.
                return Poll::Ready(Ok(()));
            };
            if buf.is_empty() {
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(self.send_behind(SendBufs::One(buf)))
        })
    }

    /// Hand `bufs` to the driver as the write-behind send in flight.
    fn send_behind(&self, bufs: SendBufs) -> io::Result<()> {
        self.io
            .send_detached(self.raw(), bufs, &self.behind)
            .map_err(to_io)
    }

    /// [`write_behind`](Self::write_behind) of the buffers in `bufs`, in order, as one gather
    /// send per [`IOV_MAX`] buffers. Takes them all out of `bufs` (on an error too), which
    /// keeps its allocation for the caller's next batch; buffers not yet handed to the driver
    /// stay in `bufs` if the future is dropped while it waits for an earlier send.
    ///
    /// One `poll_fn`, like `write_behind`.
    pub(crate) fn writev_behind<'a, B: IoBuf>(
        &'a self,
        bufs: &'a mut Vec<B>,
    ) -> impl Future<Output = io::Result<()>> + 'a {
        poll_fn(move |cx| {
            let result = loop {
                if bufs.is_empty() {
                    break Ok(());
                }
                // Wait for the send in flight (one per socket), then report a failure.
                if let Err(e) = std::task::ready!(self.poll_flush(cx)) {
                    break Err(e);
                }
                let take = bufs.len().min(IOV_MAX);
                // The last finished gather's list, sized up front: usually no allocation.
                let mut batch = self.behind.take_spare();
                batch.reserve(take);
                batch.extend(
                    bufs.drain(..take)
                        .filter(|b| b.bytes_init() > 0)
                        .map(send_buf),
                );
                if !batch.is_empty() {
                    if let Err(e) = self.send_behind(SendBufs::Gather(batch)) {
                        break Err(e);
                    }
                }
            };
            bufs.clear();
            Poll::Ready(result)
        })
    }

    /// The next bytes received into the core's pool; `None` at end of stream.
    pub(crate) fn recv(&self) -> impl Future<Output = io::Result<Option<RecvBuf>>> + '_ {
        poll_fn(|cx| self.poll_recv(cx))
    }

    /// The common case inline (a receive armed, a buffer or nothing yet); arming the receive
    /// and its end kept out of line, which keeps this poll, made twice per message, small.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<RecvBuf>>> {
        if self.behind.has_error() {
            return Poll::Ready(self.behind_error().map(|()| None));
        }
        let mut st = self.recv.borrow_mut();
        let Some(stream) = st.stream.as_mut() else {
            drop(st);
            return self.poll_recv_first(cx);
        };
        match stream.poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(buf))) => Poll::Ready(Ok(Some(RecvBuf::new(buf)))),
            Poll::Ready(None) => Poll::Ready(recv_ended(&mut st, None)),
            Poll::Ready(Some(Err(e))) => Poll::Ready(recv_ended(&mut st, Some(e))),
        }
    }

    /// [`poll_recv`](Self::poll_recv) with no receive armed: arm one, unless the stream
    /// ended.
    #[cold]
    fn poll_recv_first(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<RecvBuf>>> {
        {
            let mut st = self.recv.borrow_mut();
            if st.eof {
                return Poll::Ready(Ok(None));
            }
            let pool = crate::io_handle::recv_pool(&self.io)?;
            st.stream = Some(RecvStream::new(self.io.clone(), self.raw(), pool).map_err(to_io)?);
        }
        self.poll_recv(cx)
    }

    /// A buffer the pooled receive has already received, without waiting: `Ok(None)` when
    /// none is ready now (or at end of stream, which the next `recv` reports).
    pub(crate) fn try_recv(&self) -> io::Result<Option<RecvBuf>> {
        {
            let st = self.recv.borrow();
            match &st.stream {
                // Nothing armed yet (or ended): nothing can be queued.
                None => return Ok(None),
                // Nothing queued (asked without a poll: the common answer of a peek after the
                // data that woke the task) and no send failure to report.
                Some(stream) if !stream.is_ready() && !self.behind.has_error() => return Ok(None),
                Some(_) => {}
            }
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_recv(&mut cx) {
            Poll::Ready(Ok(Some(buf))) => Ok(Some(buf)),
            Poll::Ready(Ok(None)) | Poll::Pending => Ok(None),
            // At the hold limit nothing can be handed out now; a peek is no wait, so it is no
            // error either: a gathering caller sends what it holds (which releases it), and
            // a caller that waits next gets the error from `recv`.
            Poll::Ready(Err(e)) if is_hold_limit(&e) => Ok(None),
            Poll::Ready(Err(e)) => Err(e),
        }
    }

    /// A pooled receive is armed: plain reads would race it for the data.
    fn recv_active(&self) -> bool {
        self.recv
            .try_borrow()
            .map_or(true, |st| st.stream.is_some())
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn io(&self) -> &CoreIo {
        &self.io
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        sys::local_addr(self.raw())
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        sys::peer_addr(self.raw())
    }

    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        sys::set_nodelay(&self.fd, on)
    }

    pub(crate) fn nodelay(&self) -> io::Result<bool> {
        sys::nodelay(&self.fd)
    }

    pub(crate) fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        sys::set_linger(&self.fd, linger)
    }

    pub(crate) fn linger(&self) -> io::Result<Option<Duration>> {
        sys::linger(&self.fd)
    }

    pub(crate) fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        sys::set_ttl(&self.fd, ttl)
    }

    /// Connect this (fresh) socket to `addr`.
    pub(crate) async fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        let mut op = Op::connect(self.io.clone(), self.raw(), addr).map_err(to_io)?;
        let (c, ()) = poll_fn(|cx| op.poll_complete(cx)).await;
        c.result.map(drop).map_err(to_io)
    }

    /// One receive into `buf` (from its start, up to its capacity).
    /// A zero-capacity buffer gives `Ok(0)` at once (the kernel would wait for data).
    pub(crate) async fn read<B: IoBufMut>(&self, buf: B) -> (io::Result<usize>, B) {
        if buf.bytes_total() == 0 {
            return (Ok(0), buf);
        }
        if self.recv_active() {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                "read() on a stream that receives with recv(): keep to one of the two",
            );
            return (Err(e), buf);
        }
        let mut op = match Op::recv(self.io.clone(), self.raw(), buf) {
            Ok(op) => op,
            Err((e, buf)) => return (Err(to_io(e)), buf),
        };
        let (c, mut buf) = poll_fn(|cx| op.poll_complete(cx)).await;
        let res = complete_read(&c, &mut buf).map_err(to_io);
        (res, buf)
    }

    /// One send of `buf`'s initialised bytes; the count may be short.
    /// An empty buffer gives `Ok(0)` at once.
    pub(crate) async fn write<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        // Behind the write-behind bytes, never ahead of them.
        if let Err(e) = self.flush().await {
            return (Err(e), buf);
        }
        if buf.bytes_init() == 0 {
            return (Ok(0), buf);
        }
        let mut op = match Op::send(self.io.clone(), self.raw(), buf) {
            Ok(op) => op,
            Err((e, buf)) => return (Err(to_io(e)), buf),
        };
        let (c, buf) = poll_fn(|cx| op.poll_complete(cx)).await;
        (c.result.map(|n| n as usize).map_err(to_io), buf)
    }

    /// Send all of `buf`'s initialised bytes, resuming after short sends.
    pub(crate) async fn write_all<B: IoBuf>(&self, buf: B) -> (io::Result<()>, B) {
        let mut slice = Slice::new(buf, ..);
        while slice.bytes_init() > 0 {
            let (res, s) = self.write(slice).await;
            slice = s;
            match res {
                Ok(0) => return (Err(write_zero()), slice.into_inner()),
                Ok(n) => slice.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), slice.into_inner()),
            }
        }
        (Ok(()), slice.into_inner())
    }

    /// One gather write of the buffers' initialised bytes, in order; the count may be short.
    /// Only the first [`IOV_MAX`] buffers go out (the kernel refuses more in one call; this
    /// way both backends behave alike: a short count).
    pub(crate) async fn writev<B: IoBuf>(&self, mut bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        let rest = if bufs.len() > IOV_MAX {
            bufs.split_off(IOV_MAX)
        } else {
            Vec::new()
        };
        let (res, mut bufs) = self.writev_batch(bufs).await;
        bufs.extend(rest);
        (res, bufs)
    }

    /// One gather write of all of `bufs` (at most [`IOV_MAX`]).
    async fn writev_batch<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<usize>, Vec<B>) {
        if let Err(e) = self.flush().await {
            return (Err(e), bufs);
        }
        let mut op = match Op::writev(self.io.clone(), self.raw(), bufs) {
            Ok(op) => op,
            Err((e, bufs)) => return (Err(to_io(e)), bufs),
        };
        let (c, gather) = poll_fn(|cx| op.poll_complete(cx)).await;
        (
            c.result.map(|n| n as usize).map_err(to_io),
            gather.into_inner(),
        )
    }

    /// Gather-write everything, resuming after short writes, at most [`IOV_MAX`] buffers per
    /// system call.
    pub(crate) async fn writev_all<B: IoBuf>(&self, bufs: Vec<B>) -> (io::Result<()>, Vec<B>) {
        let mut slices: Vec<Slice<B>> = bufs.into_iter().map(|b| Slice::new(b, ..)).collect();
        // Slices before `first` are fully written.
        let mut first = 0;
        let mut result = Ok(());
        loop {
            while slices.get(first).is_some_and(|s| s.bytes_init() == 0) {
                first += 1;
            }
            if first == slices.len() {
                break;
            }
            // Take out the batch to send, put it back after.
            let mut batch = slices.split_off(first);
            let rest = if batch.len() > IOV_MAX {
                batch.split_off(IOV_MAX)
            } else {
                Vec::new()
            };
            let (res, mut batch) = self.writev_batch(batch).await;
            let n = match res {
                Ok(0) => Err(write_zero()),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
                Err(e) => Err(e),
            };
            if let Ok(mut n) = n {
                for s in &mut batch {
                    let step = n.min(s.bytes_init());
                    s.advance(step);
                    n -= step;
                    if n == 0 {
                        break;
                    }
                }
            }
            slices.append(&mut batch);
            slices.extend(rest);
            if let Err(e) = n {
                result = Err(e);
                break;
            }
        }
        (result, slices.into_iter().map(Slice::into_inner).collect())
    }

    /// Shut down one or both directions.
    pub(crate) async fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        // The write-behind bytes go out before the end of stream.
        self.flush().await?;
        let how = match how {
            std::net::Shutdown::Read => Shutdown::Read,
            std::net::Shutdown::Write => Shutdown::Write,
            std::net::Shutdown::Both => Shutdown::Both,
        };
        let mut op = Op::shutdown(self.io.clone(), self.raw(), how).map_err(to_io)?;
        let (c, ()) = poll_fn(|cx| op.poll_complete(cx)).await;
        c.result.map(drop).map_err(to_io)
    }
}

/// The pooled receive ended (`error`: `None` at end of stream), or reported an error that
/// does not end it (the hold limit): what `recv` answers. A later call after an error that
/// ended it starts a new receive.
#[cold]
fn recv_ended(st: &mut RecvState, error: Option<IoError>) -> io::Result<Option<RecvBuf>> {
    if let (Some(e), Some(stream)) = (error, &st.stream) {
        if !stream.is_finished() {
            return Err(recv_error(e));
        }
    }
    st.stream = None;
    match error {
        None => {
            st.eof = true;
            Ok(None)
        }
        Some(e) => Err(to_io(e)),
    }
}

/// `recv()` at the hold limit (`seastar_hal::io::POOL_HOLD_LIMIT`): what happened and what
/// to do, inside an `io::Error` of kind `QuotaExceeded`.
#[derive(Debug, thiserror::Error)]
#[error(
    "recv(): this stream holds too many received buffers: its receive is paused at the \
     per-stream hold limit of {limit} buffers and resumes only once at most {resume} are held \
     (write-behind sends still in flight give theirs back by themselves); drop or send some \
     RecvBufs before receiving more. Nothing received was lost",
    limit = seastar_hal::io::POOL_HOLD_LIMIT,
    resume = seastar_hal::io::POOL_HOLD_LIMIT / 2
)]
struct HoldLimit;

/// A receive error that does not end the receive: the hold limit (the only one the HAL
/// has), explained in `std` terms.
#[cold]
fn recv_error(e: IoError) -> io::Error {
    if e.kind() == seastar_hal::ErrorKind::HoldLimit {
        io::Error::new(io::ErrorKind::QuotaExceeded, HoldLimit)
    } else {
        to_io(e)
    }
}

/// Whether `e` is [`recv_error`]'s hold-limit error.
fn is_hold_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<HoldLimit>())
}

/// `buf` as bytes the driver owns for a detached send: pool buffers, `Vec`s and static bytes
/// as they are (no allocation), any other buffer boxed.
#[inline]
fn send_buf<B: IoBuf>(buf: B) -> SendBuf {
    let mut slot = Some(buf);
    let any: &mut dyn Any = &mut slot;
    if let Some(b) = any.downcast_mut::<Option<RecvBuf>>().and_then(Option::take) {
        return b.into_pooled().into_send_buf();
    }
    if let Some(v) = any.downcast_mut::<Option<Vec<u8>>>().and_then(Option::take) {
        return SendBuf::from_vec(v);
    }
    if let Some(s) = any
        .downcast_mut::<Option<&'static [u8]>>()
        .and_then(Option::take)
    {
        return SendBuf::from_static(s);
    }
    if let Some(s) = any
        .downcast_mut::<Option<&'static str>>()
        .and_then(Option::take)
    {
        return SendBuf::from_static(s.as_bytes());
    }
    match slot {
        Some(b) => SendBuf::boxed(b),
        None => SendBuf::from_static(&[]),
    }
}

fn write_zero() -> io::Error {
    io::Error::new(
        io::ErrorKind::WriteZero,
        "the socket accepted no more bytes",
    )
}
