//! The completion-based I/O contract.
//!
//! A platform implements [`IoDriver`]: it accepts [`RawOp`]s (plain values: an operation code,
//! a handle and raw pointers into buffers), reports each one's [`Completion`] to
//! [`IoDriver::poll_op`], and can be told to [`cancel`](IoDriver::cancel) one. io_uring does
//! this natively; a readiness platform (epoll, mio) emulates it by trying the system call when
//! the handle is ready.
//!
//! Users of the contract do not touch raw pointers: [`Op`] owns the buffers an operation uses,
//! submits it, and returns the buffers with the result. If an `Op` is dropped while its
//! operation is in flight, it asks the driver to cancel the operation and hands the buffers to
//! the driver, which keeps them until the platform reports the operation finished, so the
//! platform never writes into freed memory.
//!
//! ```text
//!  Op::recv(driver, fd, buf)      driver.submit(RawOp::Recv{ptr into buf})  -> Op owns buf
//!        |                                  |
//!  poll(cx) -> Pending             platform completes, park() wakes the waker
//!        |                                  |
//!  poll(cx) -> Ready((Ok(n), buf))   <------'        Op is finished, buf is the caller's again
//!
//!  drop(op) while in flight -> driver.cancel(id, Box::new(buf)): the driver owns buf and frees
//!                              it when the (cancelled or completed) operation's completion arrives
//! ```
#![allow(unsafe_code)] // `IoDriver::submit` is unsafe: it trusts the pointers in a `RawOp`

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll};

use crate::buf::{IoBuf, IoBufMut};
use crate::{Instant, IoError};

/// A platform handle for an open socket or file: a file descriptor on Unix, whatever number a
/// board's driver assigns elsewhere.
///
/// A handle used with a driver belongs to the caller, but the driver may keep per-handle
/// state (a readiness driver's registration) and may switch a socket to non-blocking mode:
/// close such a handle with [`RawOp::Close`] so the driver forgets it, or through the
/// driver's own release method if it has one.
pub type Fd = i32;

/// Identifies an operation submitted to an [`IoDriver`] until its final completion is polled
/// or it is cancelled. Ids may be reused afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// One element of a gather list, laid out like a POSIX `struct iovec`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct IoSlice {
    /// Start of the bytes.
    pub base: *const u8,
    /// Number of bytes.
    pub len: usize,
}

/// Which direction(s) a [`RawOp::Shutdown`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// No more reads.
    Read,
    /// No more writes: the peer sees end of stream.
    Write,
    /// Both.
    Both,
}

/// An operation as the platform sees it: plain values and raw pointers.
///
/// Produced by [`Op`]'s constructors from owned buffers; platform implementers read it in
/// [`IoDriver::submit`]. Every pointer stays valid until the operation is finished (see
/// [`IoDriver::submit`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum RawOp {
    /// Completes at once with `Ok(0)`: measures the round trip through the platform.
    Nop,
    /// Completes with `Ok(0)` when the platform clock reaches `deadline`.
    Timeout {
        /// When to complete.
        deadline: Instant,
    },
    /// Accept a connection on a listening socket; completes with the new handle.
    /// With `multishot`, keeps completing (with [`Completion::more`] set) for every new
    /// connection until cancelled or an error ends it.
    Accept {
        /// The listening socket.
        fd: Fd,
        /// Keep accepting after the first connection.
        multishot: bool,
    },
    /// Connect a socket to `addr`; completes with `Ok(0)`.
    Connect {
        /// The socket.
        fd: Fd,
        /// The peer. The driver copies it before `submit` returns.
        addr: SocketAddr,
    },
    /// Receive up to `len` bytes into `ptr`; completes with the count (0 at end of stream).
    Recv {
        /// The socket.
        fd: Fd,
        /// Where to write.
        ptr: *mut u8,
        /// Capacity at `ptr`.
        len: usize,
    },
    /// Send `len` bytes from `ptr`; completes with the count sent (which may be short).
    Send {
        /// The socket.
        fd: Fd,
        /// The bytes.
        ptr: *const u8,
        /// How many.
        len: usize,
    },
    /// Gather-write `count` slices starting at `iov`; completes with the total count written,
    /// which may be short. On a file it writes at the current file position, like `writev(2)`.
    Writev {
        /// The socket or file.
        fd: Fd,
        /// The slices; the array itself also stays valid until the op is finished.
        iov: *const IoSlice,
        /// Number of slices.
        count: usize,
    },
    /// Read up to `len` bytes at `offset` of a file into `ptr`; completes with the count.
    ReadAt {
        /// The file.
        fd: Fd,
        /// Where to write.
        ptr: *mut u8,
        /// Capacity at `ptr`.
        len: usize,
        /// File offset.
        offset: u64,
    },
    /// Write `len` bytes from `ptr` at `offset` of a file; completes with the count.
    WriteAt {
        /// The file.
        fd: Fd,
        /// The bytes.
        ptr: *const u8,
        /// How many.
        len: usize,
        /// File offset.
        offset: u64,
    },
    /// Flush a file to stable storage (`datasync`: data only, like `fdatasync`).
    Fsync {
        /// The file.
        fd: Fd,
        /// Skip metadata that is not needed to read the data back.
        datasync: bool,
    },
    /// Shut down one or both directions of a connected socket.
    Shutdown {
        /// The socket.
        fd: Fd,
        /// Which direction(s).
        how: Shutdown,
    },
    /// Close a handle.
    Close {
        /// The handle.
        fd: Fd,
    },
}

/// What the platform reports when an operation (or one shot of a multishot operation) ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The operation's result: a count or a handle on success.
    pub result: Result<u32, IoError>,
    /// Platform-specific flags (for io_uring, the CQE flags: a provided buffer id...).
    pub flags: u32,
    /// More completions will follow for this operation (multishot); the id stays valid.
    pub more: bool,
}

impl Completion {
    /// A final completion with no flags.
    pub const fn done(result: Result<u32, IoError>) -> Self {
        Completion {
            result,
            flags: 0,
            more: false,
        }
    }
}

/// A platform's I/O engine, per core. All methods take `&self`: many tasks on the core share
/// it, so implementations use interior mutability (a `RefCell` is enough; it is never shared
/// across threads).
///
/// Lifecycle of an operation: `submit` → zero or more `poll_op` returning `Pending` (each
/// stores the waker, replacing the previous one) → `poll_op` returns the final completion
/// (`more == false`) and the id is released. Or, at any point before that, `cancel`.
pub trait IoDriver {
    /// Queue `op` and return its id. Platforms may batch submissions until the next
    /// [`crate::Platform::park`] or [`crate::Platform::flush`].
    ///
    /// # Safety
    /// Every pointer in `op` must stay valid for the access the operation makes (reads for
    /// sends and writes, writes for receives and reads, unaliased by anything else) until the
    /// operation is *finished*: its final completion has been returned by `poll_op`, or it was
    /// passed to `cancel` together with a keep-alive value that owns the memory.
    unsafe fn submit(&self, op: RawOp) -> Result<OpId, IoError>;

    /// Poll an operation. `Ready` hands over the next completion; after the final one
    /// (`more == false`) the id is no longer valid. `Pending` registers `cx`'s waker, which
    /// the platform wakes when a completion for this id arrives.
    ///
    /// Polling an unknown or finished id returns `Ready` with an `InvalidInput` error.
    fn poll_op(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion>;

    /// Give up on an operation that is still in flight. The driver asks the platform to cancel
    /// it and takes ownership of `keepalive` (the buffers the operation points into), dropping
    /// it only once the platform has finished with the operation, whether it was cancelled or
    /// completed anyway. The id is released; its waker is never woken again.
    ///
    /// Completions not yet returned by `poll_op` are discarded, and the driver releases what
    /// they carry: a handle accepted for a cancelled accept is closed by the driver.
    fn cancel(&self, id: OpId, keepalive: Box<dyn Any>);

    /// Number of operations submitted and not yet finished (including cancelled ones whose
    /// completion has not arrived). Lets an idle loop tell "waiting for I/O" from "deadlock".
    fn in_flight(&self) -> usize;
}

impl<D: IoDriver + ?Sized> IoDriver for &D {
    unsafe fn submit(&self, op: RawOp) -> Result<OpId, IoError> {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { (**self).submit(op) }
    }
    fn poll_op(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
        (**self).poll_op(id, cx)
    }
    fn cancel(&self, id: OpId, keepalive: Box<dyn Any>) {
        (**self).cancel(id, keepalive)
    }
    fn in_flight(&self) -> usize {
        (**self).in_flight()
    }
}

impl<D: IoDriver + ?Sized> IoDriver for Rc<D> {
    unsafe fn submit(&self, op: RawOp) -> Result<OpId, IoError> {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { (**self).submit(op) }
    }
    fn poll_op(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
        (**self).poll_op(id, cx)
    }
    fn cancel(&self, id: OpId, keepalive: Box<dyn Any>) {
        (**self).cancel(id, keepalive)
    }
    fn in_flight(&self) -> usize {
        (**self).in_flight()
    }
}

/// An in-flight operation that owns its buffers (`T`) and the driver handle (`D`, usually a
/// reference or an `Rc`). Awaiting it yields the completion and the buffers back.
///
/// Dropping it before it completes cancels the operation and hands `T` to the driver, which
/// frees it only when the platform is done with it.
#[derive(Debug)]
#[must_use = "an operation does nothing useful unless awaited; dropping it cancels it"]
pub struct Op<T: 'static, D: IoDriver> {
    driver: D,
    id: OpId,
    /// `Some` until the final completion hands it back or `Drop` hands it to the driver.
    data: Option<T>,
}

impl<T: 'static, D: IoDriver> Op<T, D> {
    /// Submit a raw operation that points into `data`.
    ///
    /// # Safety
    /// Every pointer in the `RawOp` returned by `describe` must point into memory owned by
    /// `data` that does not move when `data` moves (heap memory, as the [`IoBuf`] traits
    /// promise), or into `'static` memory, with the access rights the operation needs.
    pub unsafe fn submit_with(
        driver: D,
        mut data: T,
        describe: impl FnOnce(&mut T) -> RawOp,
    ) -> Result<Self, (IoError, T)> {
        let raw = describe(&mut data);
        // SAFETY: by the caller's guarantee the pointers live in `data`'s stable memory, and
        // `data` stays owned by this `Op` or, after a cancel, by the driver until the
        // operation is finished.
        match unsafe { driver.submit(raw) } {
            Ok(id) => Ok(Op {
                driver,
                id,
                data: Some(data),
            }),
            Err(e) => Err((e, data)),
        }
    }

    /// The id the driver gave this operation.
    pub fn id(&self) -> OpId {
        self.id
    }

    /// Poll for the final completion; on `Ready`, the buffers come back.
    ///
    /// Intermediate completions of a multishot operation are skipped, so a multishot op must
    /// be driven by [`MultiOp`], which sees each one (an accepted handle must not be lost).
    pub fn poll_complete(&mut self, cx: &mut Context<'_>) -> Poll<(Completion, T)> {
        loop {
            if self.data.is_none() {
                // Polled after its completion was taken: a logic error in the caller. There is
                // nothing left to return, and panicking on a caller's bug is worse.
                return Poll::Pending;
            }
            match self.driver.poll_op(self.id, cx) {
                Poll::Pending => return Poll::Pending,
                // Intermediate shots of a multishot op are skipped: the final result is
                // what a single-shot `Op` reports. Use `MultiOp` to see each one.
                Poll::Ready(c) if c.more => continue,
                Poll::Ready(c) => {
                    let data = self.data.take();
                    return match data {
                        Some(d) => Poll::Ready((c, d)),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}

impl<T: 'static + Unpin, D: IoDriver + Unpin> Future for Op<T, D> {
    type Output = (Completion, T);
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_complete(cx)
    }
}

impl<T: 'static, D: IoDriver> Drop for Op<T, D> {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            self.driver.cancel(self.id, Box::new(data));
        }
    }
}

/// A multishot operation (such as a multishot accept): yields every completion until the
/// final one. Dropping it cancels the operation.
#[derive(Debug)]
#[must_use = "dropping a multishot operation cancels it"]
pub struct MultiOp<D: IoDriver> {
    driver: D,
    id: Option<OpId>,
}

impl<D: IoDriver> MultiOp<D> {
    /// The next completion, or `None` once the final one was returned.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        let Some(id) = self.id else {
            return Poll::Ready(None);
        };
        match self.driver.poll_op(id, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(c) => {
                if !c.more {
                    self.id = None;
                }
                Poll::Ready(Some(c))
            }
        }
    }
}

impl<D: IoDriver> Drop for MultiOp<D> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.driver.cancel(id, Box::new(()));
        }
    }
}

// Safe constructors. Each derives its `RawOp` from buffer-trait guarantees, so it upholds
// `submit_with`'s contract by construction.
impl<D: IoDriver> Op<(), D> {
    /// Completes at once; measures the platform round trip.
    pub fn nop(driver: D) -> Result<Self, IoError> {
        // SAFETY: no pointers.
        unsafe { Self::submit_with(driver, (), |_| RawOp::Nop) }.map_err(|(e, _)| e)
    }

    /// Completes when the platform clock reaches `deadline`.
    pub fn timeout(driver: D, deadline: Instant) -> Result<Self, IoError> {
        // SAFETY: no pointers.
        unsafe { Self::submit_with(driver, (), |_| RawOp::Timeout { deadline }) }
            .map_err(|(e, _)| e)
    }

    /// Accept one connection; the completion's result is the new handle.
    pub fn accept(driver: D, fd: Fd) -> Result<Self, IoError> {
        // SAFETY: no pointers.
        unsafe {
            Self::submit_with(driver, (), |_| RawOp::Accept {
                fd,
                multishot: false,
            })
        }
        .map_err(|(e, _)| e)
    }

    /// Connect `fd` to `addr`.
    pub fn connect(driver: D, fd: Fd, addr: SocketAddr) -> Result<Self, IoError> {
        // SAFETY: no pointers; the address is passed by value.
        unsafe { Self::submit_with(driver, (), |_| RawOp::Connect { fd, addr }) }
            .map_err(|(e, _)| e)
    }

    /// Flush a file to stable storage.
    pub fn fsync(driver: D, fd: Fd, datasync: bool) -> Result<Self, IoError> {
        // SAFETY: no pointers.
        unsafe { Self::submit_with(driver, (), |_| RawOp::Fsync { fd, datasync }) }
            .map_err(|(e, _)| e)
    }

    /// Shut down a direction of a socket.
    pub fn shutdown(driver: D, fd: Fd, how: Shutdown) -> Result<Self, IoError> {
        // SAFETY: no pointers.
        unsafe { Self::submit_with(driver, (), |_| RawOp::Shutdown { fd, how }) }
            .map_err(|(e, _)| e)
    }

    /// Close a handle.
    pub fn close(driver: D, fd: Fd) -> Result<Self, IoError> {
        // SAFETY: no pointers.
        unsafe { Self::submit_with(driver, (), |_| RawOp::Close { fd }) }.map_err(|(e, _)| e)
    }
}

impl<D: IoDriver> MultiOp<D> {
    /// Accept connections until cancelled: each completion's result is a new handle.
    /// Platforms without native multishot emulate it.
    pub fn accept_multishot(driver: D, fd: Fd) -> Result<Self, IoError> {
        // SAFETY: no pointers.
        let id = unsafe {
            driver.submit(RawOp::Accept {
                fd,
                multishot: true,
            })
        }?;
        Ok(MultiOp {
            driver,
            id: Some(id),
        })
    }
}

impl<B: IoBufMut, D: IoDriver> Op<B, D> {
    /// Receive into `buf` from its start, up to its capacity (`bytes_total`). After the
    /// completion, [`complete_read`] marks the received bytes initialised.
    ///
    /// The data is `buf[..n]` for the returned count `n`. Initialised length only grows (as in
    /// tokio-uring and monoio): a `Vec` that already had 16 bytes still has 16 after a 2-byte
    /// receive, so pass `Vec::with_capacity(n)` (or `clear()` a reused one) if the buffer's
    /// length should equal the count.
    pub fn recv(driver: D, fd: Fd, buf: B) -> Result<Self, (IoError, B)> {
        // SAFETY: `stable_mut_ptr` is valid for `bytes_total` bytes of writes while `buf`
        // lives, and stays put when `buf` moves into the Op.
        unsafe {
            Self::submit_with(driver, buf, |b| RawOp::Recv {
                fd,
                ptr: b.stable_mut_ptr(),
                len: b.bytes_total(),
            })
        }
    }

    /// Read up to the buffer's capacity at `offset` of a file. See [`complete_read`].
    pub fn read_at(driver: D, fd: Fd, buf: B, offset: u64) -> Result<Self, (IoError, B)> {
        // SAFETY: as for `recv`.
        unsafe {
            Self::submit_with(driver, buf, |b| RawOp::ReadAt {
                fd,
                ptr: b.stable_mut_ptr(),
                len: b.bytes_total(),
                offset,
            })
        }
    }
}

impl<B: IoBuf, D: IoDriver> Op<B, D> {
    /// Send the initialised bytes of `buf`.
    pub fn send(driver: D, fd: Fd, buf: B) -> Result<Self, (IoError, B)> {
        // SAFETY: `stable_ptr` is valid for `bytes_init` bytes of reads while `buf` lives.
        unsafe {
            Self::submit_with(driver, buf, |b| RawOp::Send {
                fd,
                ptr: b.stable_ptr(),
                len: b.bytes_init(),
            })
        }
    }

    /// Write the initialised bytes of `buf` at `offset` of a file.
    pub fn write_at(driver: D, fd: Fd, buf: B, offset: u64) -> Result<Self, (IoError, B)> {
        // SAFETY: as for `send`.
        unsafe {
            Self::submit_with(driver, buf, |b| RawOp::WriteAt {
                fd,
                ptr: b.stable_ptr(),
                len: b.bytes_init(),
                offset,
            })
        }
    }
}

/// The buffers of a gather write and the slice array that points into them.
#[derive(Debug)]
pub struct Gather<B> {
    bufs: Vec<B>,
    slices: Vec<IoSlice>,
}

impl<B> Gather<B> {
    /// Take the buffers back.
    pub fn into_inner(self) -> Vec<B> {
        self.bufs
    }
}

impl<B: IoBuf, D: IoDriver> Op<Gather<B>, D> {
    /// Write the initialised bytes of every buffer in order, in one operation.
    pub fn writev(driver: D, fd: Fd, bufs: Vec<B>) -> Result<Self, (IoError, Vec<B>)> {
        let slices = bufs
            .iter()
            .map(|b| IoSlice {
                base: b.stable_ptr(),
                len: b.bytes_init(),
            })
            .collect();
        let gather = Gather { bufs, slices };
        // SAFETY: each slice points into a buffer owned by `gather` (stable heap memory per
        // `IoBuf`), and the slice array is itself a heap allocation owned by `gather` that is
        // never resized after this point.
        unsafe {
            Self::submit_with(driver, gather, |g| RawOp::Writev {
                fd,
                iov: g.slices.as_ptr(),
                count: g.slices.len(),
            })
        }
        .map_err(|(e, g)| (e, g.bufs))
    }
}

/// After a successful receive or read of `n` bytes, mark them initialised in `buf`.
///
/// Returns the count, or the error, of the completion.
pub fn complete_read<B: IoBufMut>(completion: &Completion, buf: &mut B) -> Result<usize, IoError> {
    let n = completion.result? as usize;
    let n = n.min(buf.bytes_total());
    // SAFETY: the platform reported writing `n` bytes from the start of the buffer, and `n`
    // is clamped to the buffer's capacity.
    unsafe { buf.set_init(n) };
    Ok(n)
}
