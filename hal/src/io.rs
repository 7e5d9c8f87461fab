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
//!
//! # Buffer pools and pooled (multishot) receives
//!
//! A receive that names its buffer up front pins that memory for as long as the peer is quiet.
//! A *pool* instead lets the platform pick a buffer when data arrives (io_uring's provided
//! buffer ring; a readiness platform emulates it with a free list):
//!
//! * [`IoDriver::create_pool`] allocates `count` buffers of `size` bytes once, owned by the
//!   driver. Their memory stays valid, at the same address, for as long as the driver lives
//!   (a driver that cannot prove the platform is done with it at drop time leaks it).
//! * [`RawOp::RecvPool`] receives repeatedly (multishot) on a socket: each completion with data
//!   carries [`COMPLETION_BUFFER`] in its flags and the buffer id in `flags >> 16`
//!   ([`Completion::buffer`]), and has `more` set. `Ok(0)` (end of stream) or an error is the
//!   final completion, except [`ErrorKind::HoldLimit`](crate::ErrorKind::HoldLimit) (below),
//!   which has `more` set. Running out of buffers is *not* reported: the driver waits until
//!   buffers come back and resumes by itself.
//! * A buffer id handed out in a completion belongs to whoever polled it: the driver neither
//!   writes into it nor hands it out again until it is given back with
//!   [`IoDriver::release_buffer`], exactly once. Completions the driver discards (of a
//!   cancelled receive) have their buffers released by the driver.
//! * Back-pressure: a driver bounds the buffers one pooled receive holds (completions queued
//!   but not polled, plus buffers polled and not yet released), at [`POOL_HOLD_LIMIT`]. At the
//!   bound it stops receiving on that socket (io_uring: cancels the kernel operation without
//!   ending the receive for its owner) and resumes once the owner has released some, so one
//!   connection that does not consume cannot exhaust the pool for the others. A poll that
//!   only the owner's releases could ever answer fails with
//!   [`ErrorKind::HoldLimit`](crate::ErrorKind::HoldLimit) instead of waiting (the rule is
//!   at [`POOL_HOLD_LIMIT`]).
//! * Cancellation keeps the ownership rule above: after `cancel`, buffers the kernel may still
//!   fill are the driver's; it recycles them when the final completion arrives.
//!
//! The safe wrappers are [`RecvStream`] (polls a pooled receive, yields [`PooledBuf`]s) and
//! [`PooledBuf`] (an owned, read-only [`IoBuf`] that goes back to the pool on drop, so a
//! received buffer can be sent back without a copy).
//!
//! # Detached sends
//!
//! [`IoDriver::send_detached`] hands the driver a send together with the bytes it sends
//! ([`SendBuf`]s: a `Vec`, `'static` bytes, pool buffers, any other [`IoBuf`] boxed). Nobody
//! polls it: the driver drops the bytes itself when the send is finished (a pool buffer goes
//! straight back to its pool, counted towards its receive's hold limit until then) and
//! reports only to a [`SendStatus`] the owner shares with it: one send fewer in flight, the
//! first failure, and a wake-up if the owner asked for one. The send is *whole* (see
//! [`RawOp::Send`]), so an owner that never looks still gets every byte out or an error.
#![allow(unsafe_code)] // `IoDriver::submit` is unsafe: it trusts the pointers in a `RawOp`

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::any::Any;
use core::cell::Cell;
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

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

/// A buffer pool of one driver, from [`IoDriver::create_pool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub u16);

/// Set in [`Completion::flags`] when the completion carries a pool buffer, whose id is then
/// `flags >> 16` (the layout of io_uring's `IORING_CQE_F_BUFFER`).
pub const COMPLETION_BUFFER: u32 = 1;

/// Most buffers one pooled receive ([`RawOp::RecvPool`]) may hold, completions not yet
/// polled plus buffers handed out and not released (those inside detached sends included,
/// until the send is finished), before the platform pauses it. A paused receive resumes once
/// it holds at most half of this (16). Part of the contract every platform with pools keeps.
///
/// The hold-limit rule: a paused receive with no completion queued comes back only through
/// releases. The driver makes some itself (the buffers inside detached sends not yet
/// finished); all others are its owner's to make. So when `poll_op` finds a pooled receive
/// with no completion queued that is paused (it reached this limit and has not since been
/// down to half), and the buffers it holds, minus those inside unfinished detached sends,
/// are still more than half of this limit, the poll does not wait: it returns `Ready` at
/// once with a completion `{ result: Err(HoldLimit), flags: 0, more: true }`
/// ([`Completion::hold_limit`]: an [`ErrorKind::HoldLimit`], no buffer) and registers no
/// waker, and `has_completion` is `true`. Otherwise (the driver's own releases
/// will resume it, or it is not paused) the poll waits as usual. The error ends nothing: the
/// id stays valid, nothing received is dropped, and once the owner has released enough the
/// receive resumes and later polls return the data in order. Buffers inside a cancelled
/// operation's keep-alive count as the owner's (a driver cannot see inside it) until the
/// driver drops the keep-alive.
///
/// [`ErrorKind::HoldLimit`]: crate::ErrorKind::HoldLimit
pub const POOL_HOLD_LIMIT: u32 = 32;

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
    /// Receive repeatedly into buffers of `pool` (see the module docs): every completion with
    /// data names its buffer ([`Completion::buffer`]) and has `more` set; `Ok(0)` (end of
    /// stream) or an error is the final one, except `HoldLimit`, which has `more` set (the
    /// rule is at [`POOL_HOLD_LIMIT`]). No pointers: the pool's memory is the driver's.
    RecvPool {
        /// The socket.
        fd: Fd,
        /// Where the buffers come from.
        pool: PoolId,
    },
    /// Send `len` bytes from `ptr`; completes with the count sent (which may be short).
    Send {
        /// The socket.
        fd: Fd,
        /// The bytes.
        ptr: *const u8,
        /// How many.
        len: usize,
        /// On a stream socket, keep sending until every byte is out: the completion is then
        /// short only if the connection failed after that many bytes (the failure itself may
        /// be lost: a later operation sees the broken connection). Lets an owner that does
        /// not watch the completion rely on the whole buffer going out.
        whole: bool,
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
        /// As for [`RawOp::Send`]: on a stream socket, complete only when every byte is out
        /// or the connection failed.
        whole: bool,
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
    /// The pool buffer this completion carries, if any (see [`COMPLETION_BUFFER`]).
    #[inline]
    pub const fn buffer(&self) -> Option<u16> {
        if self.flags & COMPLETION_BUFFER != 0 {
            Some((self.flags >> 16) as u16)
        } else {
            None
        }
    }

    /// A final completion with no flags.
    #[inline]
    pub const fn done(result: Result<u32, IoError>) -> Self {
        Completion {
            result,
            flags: 0,
            more: false,
        }
    }

    /// For drivers: queued behind the completions of a pooled receive when it is paused, so
    /// that its owner's poll reaches the hold-limit rule ([`POOL_HOLD_LIMIT`]) only after
    /// taking everything queued, and the per-message path needs no test of its own: it looks
    /// like a final completion (which the poll path tests anyway), and no real final
    /// completion is a `HoldLimit` error. Never handed out as it is: the poll that reaches it
    /// applies the rule and returns [`Completion::hold_limit`] or waits.
    pub const HOLD_MARK: Completion = Completion {
        result: Err(IoError::new(crate::ErrorKind::HoldLimit)),
        // Every flag but `COMPLETION_BUFFER` (so it names no buffer): no real completion
        // looks like that (buffer id bits are set only together with that flag).
        flags: !COMPLETION_BUFFER,
        more: false,
    };

    /// Whether this is the [`HOLD_MARK`](Self::HOLD_MARK).
    #[inline]
    pub const fn is_hold_mark(&self) -> bool {
        self.flags == Self::HOLD_MARK.flags && !self.more
    }

    /// What a pooled receive's poll returns when only its owner's releases can resume it:
    /// a [`HoldLimit`](crate::ErrorKind::HoldLimit) error that is not final (the rule is at
    /// [`POOL_HOLD_LIMIT`]).
    #[inline]
    pub const fn hold_limit() -> Self {
        Completion {
            result: Err(IoError::new(crate::ErrorKind::HoldLimit)),
            flags: 0,
            more: true,
        }
    }
}

/// For drivers: register `waker` as the one a pending op wakes, in `slot`; returns the waker
/// it replaces, to be dropped after the driver's borrow ends (dropping a waker can run its
/// owner's code). A no-op waker (a peek such as `try_recv`) wakes nobody, so it keeps the
/// task's registered waker instead of trading it for one (a clone now and another at the
/// next poll).
#[inline]
pub fn register_waker(slot: &mut Option<Waker>, waker: &Waker) -> Option<Waker> {
    match slot {
        Some(w) if w.will_wake(waker) => None,
        Some(_) if waker.will_wake(Waker::noop()) => None,
        _ => slot.replace(waker.clone()),
    }
}

/// The hold-limit rule ([`POOL_HOLD_LIMIT`]) for a pooled receive with no completion queued:
/// `true` when it is `paused` and the buffers it `held`, less those inside unfinished
/// detached sends (`in_sends`, which the driver will release itself), are still more than
/// half the limit, so that only its owner can resume it. Drivers call it on the slow path
/// only (nothing queued, receive paused).
#[inline]
pub const fn only_owner_can_resume(paused: bool, held: u32, in_sends: u32) -> bool {
    paused && held.saturating_sub(in_sends) > POOL_HOLD_LIMIT / 2
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
    /// the platform wakes when a completion for this id arrives. A [`Waker::noop`] (a peek)
    /// may leave an earlier registered waker in place instead (a spurious wake at worst).
    ///
    /// Polling an unknown or finished id returns `Ready` with an `InvalidInput` error.
    fn poll_op(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion>;

    /// Whether [`poll_op`](Self::poll_op) would return `Ready` now: a completion is queued,
    /// or the id is unknown or finished. `false` only when it would surely be `Pending`, so
    /// a peek can skip the poll (and its waker handling). The default, `true`, always polls.
    fn has_completion(&self, id: OpId) -> bool {
        let _ = id;
        true
    }

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

    /// Allocate a pool of `count` buffers of `size` bytes for [`RawOp::RecvPool`] (see the
    /// module docs). Drivers without pools refuse with `Unsupported` (the default).
    fn create_pool(&self, count: u16, size: u32) -> Result<PoolId, IoError> {
        let _ = (count, size);
        Err(IoError::new(crate::ErrorKind::Unsupported))
    }

    /// Start and length of buffer `bid` of `pool`, or `None` if there is no such buffer. The
    /// memory stays valid and in place while the driver lives; it may be read only by the
    /// holder of `bid` (the receiver of the completion that named it, until it releases it).
    fn pool_buffer(&self, pool: PoolId, bid: u16) -> Option<(*const u8, usize)> {
        let _ = (pool, bid);
        None
    }

    /// Give buffer `bid` back to `pool`; the holder must not touch it afterwards. Unknown ids
    /// are ignored.
    fn release_buffer(&self, pool: PoolId, bid: u16) {
        let _ = (pool, bid);
    }

    /// Send `bufs` in order, whole (see [`RawOp::Send`]), as one operation that nobody polls
    /// (see the module docs): on success `status` counts one more send in flight until the
    /// driver finished it, dropped the buffers (pool buffers: released) and told `status`.
    /// On `Err` nothing was started and the buffers are already dropped or released.
    /// Drivers without detached sends refuse with `Unsupported` (the default).
    fn send_detached(
        &self,
        fd: Fd,
        bufs: SendBufs,
        status: &Rc<SendStatus>,
    ) -> Result<(), IoError> {
        let _ = (fd, status);
        for b in bufs.into_vec() {
            if let SendBufRest::Pool(pool, bid) = b.finish() {
                self.release_buffer(pool, bid);
            }
        }
        Err(IoError::new(crate::ErrorKind::Unsupported))
    }
}

/// Owned bytes of a detached send ([`IoDriver::send_detached`]). Built only from memory that
/// stays put while the value moves, so a driver may hand [`as_ptr`](Self::as_ptr) to the
/// platform for as long as it keeps the value.
pub struct SendBuf {
    ptr: *const u8,
    len: usize,
    owner: SendOwner,
}

enum SendOwner {
    Static,
    Vec(#[allow(dead_code)] Vec<u8>),
    Pool(PoolId, u16),
    Boxed(Box<dyn Any>),
}

/// What is left of a [`SendBuf`] once its send is finished ([`SendBuf::finish`]).
#[derive(Debug)]
pub enum SendBufRest {
    /// Nothing to do (static bytes, or a `Vec` now freed).
    Done,
    /// A pool buffer for the driver to release (as [`IoDriver::release_buffer`]).
    Pool(PoolId, u16),
    /// Another buffer type: drop it outside the driver's own borrows (its drop may call back
    /// into the driver).
    Drop(Box<dyn Any>),
}

impl SendBuf {
    /// `'static` bytes (no allocation, nothing to free).
    #[inline]
    pub fn from_static(bytes: &'static [u8]) -> Self {
        SendBuf {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
            owner: SendOwner::Static,
        }
    }

    /// A `Vec`'s initialised bytes; the `Vec` is freed when the send is finished.
    #[inline]
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        SendBuf {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
            owner: SendOwner::Vec(bytes),
        }
    }

    /// Any other owned buffer's initialised bytes (boxed: one allocation).
    pub fn boxed<B: IoBuf>(buf: B) -> Self {
        let buf = Box::new(buf);
        SendBuf {
            ptr: buf.stable_ptr(),
            len: buf.bytes_init(),
            owner: SendOwner::Boxed(buf),
        }
    }

    /// Start of the bytes: valid for reads of [`len`](Self::len) bytes while this value lives
    /// (it may move).
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Number of bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// No bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pool buffer these bytes are (pool and buffer id), if they are one: lets a driver
    /// tell which receive's buffers sit in its unfinished sends (the hold-limit rule at
    /// [`POOL_HOLD_LIMIT`]) without taking them out.
    #[inline]
    pub fn pool_buffer(&self) -> Option<(PoolId, u16)> {
        match self.owner {
            SendOwner::Pool(pool, bid) => Some((pool, bid)),
            _ => None,
        }
    }

    /// The send is finished: free what can be freed now, and say what is left to do.
    #[inline]
    pub fn finish(self) -> SendBufRest {
        match self.owner {
            SendOwner::Static | SendOwner::Vec(_) => SendBufRest::Done,
            SendOwner::Pool(pool, bid) => SendBufRest::Pool(pool, bid),
            SendOwner::Boxed(b) => SendBufRest::Drop(b),
        }
    }

    /// [`finish`](Self::finish) without moving the value, for a driver that finishes a send
    /// where it stores it: says what is left to do (a pool buffer to release, a boxed buffer
    /// to drop outside the driver's borrows) and takes it out, so dropping the value later
    /// frees only plain memory (a `Vec`) and never releases a pool buffer twice. The value
    /// must not be sent again.
    #[inline]
    pub fn take_rest(&mut self) -> SendBufRest {
        match self.owner {
            SendOwner::Static | SendOwner::Vec(_) => SendBufRest::Done,
            SendOwner::Pool(pool, bid) => {
                // A pool owner is plain data: nothing to drop.
                core::mem::forget(core::mem::replace(&mut self.owner, SendOwner::Static));
                SendBufRest::Pool(pool, bid)
            }
            SendOwner::Boxed(_) => match core::mem::replace(&mut self.owner, SendOwner::Static) {
                SendOwner::Boxed(b) => SendBufRest::Drop(b),
                _ => SendBufRest::Done,
            },
        }
    }
}

impl core::fmt::Debug for SendBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendBuf").field("len", &self.len).finish()
    }
}

/// The buffers of one detached send: one, or a gather of several in order.
#[derive(Debug)]
pub enum SendBufs {
    /// One buffer (no allocation for the list).
    One(SendBuf),
    /// Several, sent in order with one gather send.
    Gather(Vec<SendBuf>),
}

impl SendBufs {
    /// Total bytes.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            SendBufs::One(b) => b.len(),
            SendBufs::Gather(v) => v.iter().map(SendBuf::len).sum(),
        }
    }

    /// No bytes at all.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole send of these bytes on `fd` (`Send` for one buffer, `Writev` for a gather,
    /// both with `whole` set). A gather's slices are appended to `iov`, whose heap array the
    /// op points into: the driver keeps `iov` (unresized) and `self` with the op until it is
    /// finished.
    pub fn whole_op(&self, fd: Fd, iov: &mut Vec<IoSlice>) -> RawOp {
        match self {
            SendBufs::One(b) => RawOp::Send {
                fd,
                ptr: b.as_ptr(),
                len: b.len(),
                whole: true,
            },
            SendBufs::Gather(v) => {
                iov.extend(v.iter().map(|b| IoSlice {
                    base: b.as_ptr(),
                    len: b.len(),
                }));
                RawOp::Writev {
                    fd,
                    iov: iov.as_ptr(),
                    count: iov.len(),
                    whole: true,
                }
            }
        }
    }

    /// The buffers, in order, without taking them.
    #[inline]
    pub fn as_slice(&self) -> &[SendBuf] {
        match self {
            SendBufs::One(b) => core::slice::from_ref(b),
            SendBufs::Gather(v) => v,
        }
    }

    /// The buffers as a list (allocates for [`SendBufs::One`]; for slow paths).
    pub fn into_vec(self) -> Vec<SendBuf> {
        match self {
            SendBufs::One(b) => alloc::vec![b],
            SendBufs::Gather(v) => v,
        }
    }
}

/// What the owner of detached sends ([`IoDriver::send_detached`]) learns from the driver:
/// how many are in flight and the first failure. Shared (`Rc`) between the owner and the
/// driver, which holds a clone per send in flight; core-local.
#[derive(Default)]
pub struct SendStatus {
    in_flight: Cell<u32>,
    error: Cell<Option<IoError>>,
    waker: Cell<Option<Waker>>,
    /// The emptied list of the last finished gather, for the owner's next one.
    spare: Cell<Vec<SendBuf>>,
}

impl core::fmt::Debug for SendStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendStatus")
            .field("in_flight", &self.in_flight.get())
            .field("error", &self.error.get())
            .finish_non_exhaustive()
    }
}

impl SendStatus {
    /// Detached sends started and not yet finished.
    #[inline]
    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }

    /// Take the first failure since the last call (a failed or short send).
    #[inline]
    pub fn take_error(&self) -> Option<IoError> {
        self.error.take()
    }

    /// Whether a failure waits to be taken.
    #[inline]
    pub fn has_error(&self) -> bool {
        // `Option<IoError>` is `Copy`: read it without taking.
        self.error.get().is_some()
    }

    /// `Ready` when no send is in flight; otherwise `cx` is woken when one finishes (the
    /// last waker registered wins).
    pub fn poll_idle(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.in_flight.get() == 0 {
            return Poll::Ready(());
        }
        let old = self.waker.replace(Some(cx.waker().clone()));
        drop(old);
        Poll::Pending
    }

    /// An empty list for the owner's next gather: the allocation of the last finished one
    /// (if the driver [`recycle`](Self::recycle)d it), so a gather send need not allocate
    /// its list every time.
    pub fn take_spare(&self) -> Vec<SendBuf> {
        self.spare.take()
    }

    /// For drivers: keep a finished gather's list (already emptied: its buffers finished)
    /// for [`take_spare`](Self::take_spare).
    pub fn recycle(&self, mut list: Vec<SendBuf>) {
        // Empty by contract; a leftover would only be dropped here (a pool buffer leaked).
        list.clear();
        let old = self.spare.replace(list);
        drop(old);
    }

    /// For drivers: a send was started.
    #[inline]
    pub fn started(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
    }

    /// For drivers: a send finished with `result` (the count sent, of `len` bytes). Returns
    /// the waker to wake (after the driver released its own borrows), if the owner waits.
    #[must_use = "wake the returned waker"]
    #[inline]
    pub fn finished(&self, result: Result<u32, IoError>, len: usize) -> Option<Waker> {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        let failure = match result {
            Ok(n) if n as usize >= len => None,
            // Whole sends are short only when the connection failed after `n` bytes.
            Ok(_) => Some(IoError::new(crate::ErrorKind::BrokenPipe)),
            Err(e) => Some(e),
        };
        if let Some(e) = failure {
            if self.error.get().is_none() {
                self.error.set(Some(e));
            }
        }
        self.waker.take()
    }
}

/// A shared reference or an `Rc` to a driver is a driver: every method forwards.
macro_rules! forward_io_driver {
    ($($pointer:ty),+) => {$(
        impl<D: IoDriver + ?Sized> IoDriver for $pointer {
            unsafe fn submit(&self, op: RawOp) -> Result<OpId, IoError> {
                // SAFETY: forwarded with the caller's guarantee.
                unsafe { (**self).submit(op) }
            }
            fn poll_op(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
                (**self).poll_op(id, cx)
            }
            fn has_completion(&self, id: OpId) -> bool {
                (**self).has_completion(id)
            }
            fn cancel(&self, id: OpId, keepalive: Box<dyn Any>) {
                (**self).cancel(id, keepalive)
            }
            fn in_flight(&self) -> usize {
                (**self).in_flight()
            }
            fn create_pool(&self, count: u16, size: u32) -> Result<PoolId, IoError> {
                (**self).create_pool(count, size)
            }
            fn pool_buffer(&self, pool: PoolId, bid: u16) -> Option<(*const u8, usize)> {
                (**self).pool_buffer(pool, bid)
            }
            fn release_buffer(&self, pool: PoolId, bid: u16) {
                (**self).release_buffer(pool, bid)
            }
            fn send_detached(
                &self,
                fd: Fd,
                bufs: SendBufs,
                status: &Rc<SendStatus>,
            ) -> Result<(), IoError> {
                (**self).send_detached(fd, bufs, status)
            }
        }
    )+};
}

forward_io_driver!(&D, Rc<D>);

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
    #[inline]
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
    /// Send the initialised bytes of `buf`; the count may be short.
    pub fn send(driver: D, fd: Fd, buf: B) -> Result<Self, (IoError, B)> {
        Self::send_with(driver, fd, buf, false)
    }

    /// Send all the initialised bytes of `buf` (on a stream socket: short only if the
    /// connection failed; see [`RawOp::Send`]'s `whole`).
    pub fn send_whole(driver: D, fd: Fd, buf: B) -> Result<Self, (IoError, B)> {
        Self::send_with(driver, fd, buf, true)
    }

    fn send_with(driver: D, fd: Fd, buf: B, whole: bool) -> Result<Self, (IoError, B)> {
        // SAFETY: `stable_ptr` is valid for `bytes_init` bytes of reads while `buf` lives.
        unsafe {
            Self::submit_with(driver, buf, |b| RawOp::Send {
                fd,
                ptr: b.stable_ptr(),
                len: b.bytes_init(),
                whole,
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
    /// Write the initialised bytes of every buffer in order, in one operation; the count may
    /// be short.
    pub fn writev(driver: D, fd: Fd, bufs: Vec<B>) -> Result<Self, (IoError, Vec<B>)> {
        Self::writev_with(driver, fd, bufs, false)
    }

    /// [`writev`](Self::writev) of every byte (on a stream socket: short only if the
    /// connection failed; see [`RawOp::Send`]'s `whole`).
    pub fn writev_whole(driver: D, fd: Fd, bufs: Vec<B>) -> Result<Self, (IoError, Vec<B>)> {
        Self::writev_with(driver, fd, bufs, true)
    }

    fn writev_with(
        driver: D,
        fd: Fd,
        bufs: Vec<B>,
        whole: bool,
    ) -> Result<Self, (IoError, Vec<B>)> {
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
                whole,
            })
        }
        .map_err(|(e, g)| (e, g.bufs))
    }
}

/// A pooled, multishot receive on one socket ([`RawOp::RecvPool`]): yields each received
/// buffer as a [`PooledBuf`]. Dropping it cancels the receive; buffers the driver still gets
/// for it go back to the pool.
#[derive(Debug)]
#[must_use = "dropping a receive stream cancels it"]
pub struct RecvStream<D: IoDriver + Clone> {
    op: MultiOp<D>,
    pool: PoolId,
}

impl<D: IoDriver + Clone> RecvStream<D> {
    /// Start receiving on `fd` into buffers of `pool`.
    pub fn new(driver: D, fd: Fd, pool: PoolId) -> Result<Self, IoError> {
        // SAFETY: no pointers: the buffers are the driver's own pool memory.
        let id = unsafe { driver.submit(RawOp::RecvPool { fd, pool }) }?;
        Ok(RecvStream {
            op: MultiOp {
                driver,
                id: Some(id),
            },
            pool,
        })
    }

    /// The next received buffer; `Ready(None)` at end of stream (and afterwards), `Some(Err)`
    /// when the receive failed (which ends it), or `Some(Err)` of kind
    /// [`HoldLimit`](crate::ErrorKind::HoldLimit) when only releases of the owner's buffers
    /// can resume it (see [`POOL_HOLD_LIMIT`]; the receive goes on, [`is_finished`] stays
    /// `false`).
    ///
    /// [`is_finished`]: Self::is_finished
    #[inline]
    pub fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<PooledBuf<D>, IoError>>> {
        let c = match self.op.poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(c)) => c,
        };
        let n = match c.result {
            Ok(n) => n as usize,
            Err(e) => return Poll::Ready(Some(Err(e))),
        };
        let Some(bid) = c.buffer() else {
            // No buffer: the end of the stream (a count without a buffer breaks the contract;
            // treat it as the end too rather than inventing data).
            return Poll::Ready(if n == 0 {
                None
            } else {
                Some(Err(IoError::new(crate::ErrorKind::InvalidData)))
            });
        };
        let driver = self.op.driver.clone();
        match driver.pool_buffer(self.pool, bid) {
            Some((ptr, size)) => Poll::Ready(Some(Ok(PooledBuf {
                driver,
                pool: self.pool,
                bid,
                ptr,
                len: n.min(size),
            }))),
            None => Poll::Ready(Some(Err(IoError::new(crate::ErrorKind::InvalidData)))),
        }
    }

    /// Whether [`poll_next`](Self::poll_next) would return `Ready` now (`false` only when it
    /// would surely be `Pending`): a peek that costs no poll.
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.op
            .id
            .is_none_or(|id| self.op.driver.has_completion(id))
    }

    /// The receive has ended (end of stream or error already returned).
    pub fn is_finished(&self) -> bool {
        self.op.id.is_none()
    }
}

/// A received buffer of a driver's pool: the bytes are `&buf[..]`. Read-only; an [`IoBuf`], so
/// it can be sent as it is. Goes back to the pool when dropped (or, if moved into an operation
/// that is cancelled, when the driver drops it after the platform is done with it).
pub struct PooledBuf<D: IoDriver> {
    driver: D,
    pool: PoolId,
    bid: u16,
    ptr: *const u8,
    len: usize,
}

impl<D: IoDriver> PooledBuf<D> {
    /// The buffer's id in its pool.
    pub fn id(&self) -> u16 {
        self.bid
    }

    /// Keep only the first `len` bytes (no effect if `len` is not smaller).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The bytes as a [`SendBuf`] for a detached send on the same driver, which releases the
    /// buffer when the send is finished (no allocation).
    pub fn into_send_buf(self) -> SendBuf {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again, so the driver handle is moved out
        // exactly once (and dropped here); the buffer is not released: its release moves to
        // the `SendBuf`.
        drop(unsafe { core::ptr::read(&me.driver) });
        SendBuf {
            ptr: me.ptr,
            len: me.len,
            owner: SendOwner::Pool(me.pool, me.bid),
        }
    }
}

impl<D: IoDriver> core::fmt::Debug for PooledBuf<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PooledBuf")
            .field("pool", &self.pool)
            .field("id", &self.bid)
            .field("len", &self.len)
            .finish()
    }
}

impl<D: IoDriver> core::ops::Deref for PooledBuf<D> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the driver handed buffer `bid` to this value alone (it neither writes into
        // it nor hands it out again until `release_buffer`, which only `Drop` calls), the
        // kernel wrote `len <= size` bytes into it, and `driver` (owned here) keeps the pool
        // memory alive and in place.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<D: IoDriver> Drop for PooledBuf<D> {
    fn drop(&mut self) {
        self.driver.release_buffer(self.pool, self.bid);
    }
}

// SAFETY: the memory is pool memory, which stays valid and in place while the driver lives,
// and `driver` is owned by this value. It is read-only (no `IoBufMut`), `len` initialised
// bytes (received data) that `&self` cannot change.
unsafe impl<D: IoDriver + 'static> IoBuf for PooledBuf<D> {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.len
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use core::cell::RefCell;
    use core::task::Waker;

    /// A driver with one pool of four 8-byte buffers and a scripted pooled receive: each poll
    /// hands out the next scripted completion. Records releases and cancels.
    #[derive(Default)]
    struct Fake {
        mem: RefCell<Vec<u8>>,
        script: RefCell<Vec<Completion>>,
        released: RefCell<Vec<u16>>,
        cancelled: RefCell<Vec<OpId>>,
    }

    impl IoDriver for Fake {
        unsafe fn submit(&self, op: RawOp) -> Result<OpId, IoError> {
            match op {
                RawOp::RecvPool {
                    pool: PoolId(0), ..
                } => Ok(OpId(7)),
                _ => Err(IoError::new(crate::ErrorKind::Unsupported)),
            }
        }
        fn poll_op(&self, _id: OpId, _cx: &mut Context<'_>) -> Poll<Completion> {
            let mut s = self.script.borrow_mut();
            if s.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(s.remove(0))
            }
        }
        fn cancel(&self, id: OpId, _keepalive: Box<dyn Any>) {
            self.cancelled.borrow_mut().push(id);
        }
        fn in_flight(&self) -> usize {
            0
        }
        fn pool_buffer(&self, pool: PoolId, bid: u16) -> Option<(*const u8, usize)> {
            (pool == PoolId(0) && bid < 4).then(|| {
                let mem = self.mem.borrow();
                (mem.as_ptr().wrapping_add(usize::from(bid) * 8), 8)
            })
        }
        fn release_buffer(&self, _pool: PoolId, bid: u16) {
            self.released.borrow_mut().push(bid);
        }
    }

    fn data(bid: u16, n: u32) -> Completion {
        Completion {
            result: Ok(n),
            flags: COMPLETION_BUFFER | (u32::from(bid) << 16),
            more: true,
        }
    }

    fn fake() -> Fake {
        let f = Fake::default();
        *f.mem.borrow_mut() = (0u8..32).collect();
        f
    }

    /// Buffer `bid` holding `n` bytes, taken from a pooled receive on `f`.
    fn received(f: &Fake, bid: u16, n: u32) -> PooledBuf<&Fake> {
        *f.script.borrow_mut() = vec![data(bid, n)];
        let mut s = RecvStream::new(f, 5, PoolId(0)).expect("submit");
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Some(Ok(buf))) = s.poll_next(&mut cx) else {
            panic!("a buffer")
        };
        buf
    }

    #[test]
    fn completion_names_its_buffer() {
        assert_eq!(data(3, 5).buffer(), Some(3));
        assert_eq!(data(0xFFFF, 1).buffer(), Some(0xFFFF));
        assert_eq!(Completion::done(Ok(4)).buffer(), None);
    }

    #[test]
    fn recv_stream_yields_buffers_then_end() {
        let f = fake();
        *f.script.borrow_mut() = vec![data(1, 3), data(2, 8), Completion::done(Ok(0))];
        let mut s = RecvStream::new(&f, 5, PoolId(0)).expect("submit");
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Some(Ok(a))) = s.poll_next(&mut cx) else {
            panic!("first buffer")
        };
        assert_eq!((&a[..], a.id(), a.len()), (&[8u8, 9, 10][..], 1, 3));
        let Poll::Ready(Some(Ok(mut b))) = s.poll_next(&mut cx) else {
            panic!("second buffer")
        };
        b.truncate(2);
        assert_eq!(&b[..], &[16, 17]);
        assert!(f.released.borrow().is_empty(), "held until dropped");
        drop(a);
        assert_eq!(*f.released.borrow(), [1]);
        assert!(matches!(s.poll_next(&mut cx), Poll::Ready(None)));
        assert!(s.is_finished());
        assert!(
            matches!(s.poll_next(&mut cx), Poll::Ready(None)),
            "end sticks"
        );
        drop(s);
        assert!(
            f.cancelled.borrow().is_empty(),
            "a finished receive is not cancelled"
        );
        drop(b);
        assert_eq!(*f.released.borrow(), [1, 2]);
    }

    #[test]
    fn a_pool_buffer_moves_into_a_send_buf_without_being_released() {
        let f = fake();
        let send = received(&f, 2, 5).into_send_buf();
        assert_eq!(send.len(), 5);
        // SAFETY: the pool memory lives in `f`, and `send` points at 5 bytes of buffer 2.
        let bytes = unsafe { core::slice::from_raw_parts(send.as_ptr(), send.len()) };
        assert_eq!(bytes, &[16, 17, 18, 19, 20]);
        assert!(f.released.borrow().is_empty(), "the send holds it now");
        // A driver without detached sends refuses, and gives the pool buffer back itself.
        let status = Rc::new(SendStatus::default());
        let res = f.send_detached(5, SendBufs::One(send), &status);
        assert_eq!(
            res.map_err(|e| e.kind()),
            Err(crate::ErrorKind::Unsupported)
        );
        assert_eq!(*f.released.borrow(), [2]);
        assert_eq!(status.in_flight(), 0);
    }

    #[test]
    fn send_bufs_say_what_is_left_to_release() {
        let v = SendBuf::from_vec(vec![1, 2, 3]);
        let st = SendBuf::from_static(b"ab");
        let b = SendBuf::boxed(vec![9u8; 4].into_boxed_slice());
        let all = SendBufs::Gather(vec![v, st, b]);
        assert_eq!((all.len(), all.is_empty()), (9, false));
        let rest: Vec<_> = all.into_vec().into_iter().map(SendBuf::finish).collect();
        assert!(matches!(
            rest[..],
            [SendBufRest::Done, SendBufRest::Done, SendBufRest::Drop(_)]
        ));
        assert!(SendBufs::One(SendBuf::from_static(b"")).is_empty());
        let one = SendBufs::One(SendBuf::from_static(b"xy"));
        assert_eq!(one.as_slice().len(), 1);
        assert_eq!(one.as_slice()[0].pool_buffer(), None, "not a pool buffer");
    }

    #[test]
    fn take_rest_hands_out_what_is_left_once_and_keeps_the_bytes() {
        let f = fake();
        let mut pooled = received(&f, 3, 4).into_send_buf();
        assert_eq!(pooled.pool_buffer(), Some((PoolId(0), 3)), "seen in place");
        assert!(matches!(
            pooled.take_rest(),
            SendBufRest::Pool(PoolId(0), 3)
        ));
        assert_eq!(pooled.pool_buffer(), None, "taken out");
        // Taken: a second look (or dropping it) releases nothing again.
        assert!(matches!(pooled.take_rest(), SendBufRest::Done));
        assert!(matches!(pooled.finish(), SendBufRest::Done));
        let mut boxed = SendBuf::boxed(vec![9u8; 4].into_boxed_slice());
        assert!(matches!(boxed.take_rest(), SendBufRest::Drop(_)));
        assert!(matches!(boxed.take_rest(), SendBufRest::Done));
        // A `Vec` stays with the value, freed when it drops.
        let mut v = SendBuf::from_vec(vec![1, 2, 3]);
        assert!(matches!(v.take_rest(), SendBufRest::Done));
        assert_eq!(v.len(), 3);
        assert!(
            f.released.borrow().is_empty(),
            "the driver releases, not take_rest"
        );
    }

    #[test]
    fn send_status_counts_reports_the_first_failure_once_and_wakes_its_waiter() {
        let st = SendStatus::default();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(st.poll_idle(&mut cx), Poll::Ready(()));
        st.started();
        st.started();
        assert_eq!(st.poll_idle(&mut cx), Poll::Pending);
        assert!(
            st.finished(Ok(10), 10).is_some(),
            "the waiter is handed back"
        );
        assert!(st.finished(Ok(10), 10).is_none(), "taken once");
        assert!(!st.has_error());
        st.started();
        st.started();
        // Short (the connection failed after 3 bytes), then an error: the first one stays.
        let _ = st.finished(Ok(3), 10);
        let _ = st.finished(Err(IoError::new(crate::ErrorKind::ConnectionReset)), 10);
        assert_eq!(st.in_flight(), 0);
        assert!(st.has_error());
        assert_eq!(
            st.take_error().map(|e| e.kind()),
            Some(crate::ErrorKind::BrokenPipe)
        );
        assert_eq!(st.take_error(), None);
        // A recycled list comes back empty, with its allocation.
        let mut list = Vec::with_capacity(8);
        list.push(SendBuf::from_static(b"x"));
        let _ = list.pop().map(SendBuf::finish);
        st.recycle(list);
        let spare = st.take_spare();
        assert!(spare.is_empty() && spare.capacity() >= 8);
        assert_eq!(st.take_spare().capacity(), 0, "taken once");
    }

    #[test]
    fn a_hold_limit_error_does_not_end_the_recv_stream() {
        let f = fake();
        *f.script.borrow_mut() = vec![
            Completion::hold_limit(),
            data(1, 3),
            Completion::done(Ok(0)),
        ];
        let mut s = RecvStream::new(&f, 5, PoolId(0)).expect("submit");
        let mut cx = Context::from_waker(Waker::noop());
        match s.poll_next(&mut cx) {
            Poll::Ready(Some(Err(e))) => assert_eq!(e.kind(), crate::ErrorKind::HoldLimit),
            other => panic!("expected the hold-limit error, got {other:?}"),
        }
        assert!(!s.is_finished(), "not final: the receive goes on");
        let Poll::Ready(Some(Ok(a))) = s.poll_next(&mut cx) else {
            panic!("the data after it")
        };
        assert_eq!(&a[..], &[8u8, 9, 10]);
        assert!(matches!(s.poll_next(&mut cx), Poll::Ready(None)));
        assert!(s.is_finished());
    }

    #[test]
    fn only_the_owner_can_resume_above_half_the_limit_outside_sends() {
        let half = POOL_HOLD_LIMIT / 2;
        assert!(only_owner_can_resume(true, POOL_HOLD_LIMIT, 0));
        assert!(only_owner_can_resume(true, POOL_HOLD_LIMIT, half - 1));
        assert!(!only_owner_can_resume(true, POOL_HOLD_LIMIT, half));
        assert!(!only_owner_can_resume(true, half, 0), "at the resume mark");
        assert!(
            !only_owner_can_resume(false, POOL_HOLD_LIMIT - 1, 0),
            "not paused"
        );
        assert!(
            !only_owner_can_resume(true, 3, 9),
            "more in sends than held: no underflow"
        );
    }

    #[test]
    fn recv_stream_reports_errors_and_cancels_on_drop() {
        let f = fake();
        *f.script.borrow_mut() = vec![
            // A count without a buffer breaks the contract: an error, not invented data.
            Completion {
                result: Ok(4),
                flags: 0,
                more: true,
            },
            // An unknown buffer id.
            data(9, 1),
        ];
        let mut s = RecvStream::new(&f, 5, PoolId(0)).expect("submit");
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..2 {
            match s.poll_next(&mut cx) {
                Poll::Ready(Some(Err(e))) => assert_eq!(e.kind(), crate::ErrorKind::InvalidData),
                other => panic!("expected an error, got {other:?}"),
            }
        }
        assert!(s.poll_next(&mut cx).is_pending());
        drop(s);
        assert_eq!(*f.cancelled.borrow(), [OpId(7)]);
        assert!(
            RecvStream::new(&f, 5, PoolId(1)).is_err(),
            "unknown pool refused"
        );
    }
}
