//! The per-core I/O driver: operation slots, CQE processing, park/flush and cancellation.
//!
//! Lifecycle of a slot (keyed by the op's `user_data` = `OpId`):
//!
//! ```text
//!  submit ──> Waiting(waker) ──CQE F_MORE──> queue completion, wake ──> (poll_op pops it)
//!                 │        └───CQE final──> queue completion, done, wake ──> poll_op pops
//!                 │                                                        it: slot freed
//!                 └─cancel(keepalive)──> Cancelled: ASYNC_CANCEL queued, completions dropped
//!                                          └──CQE final──> slot freed, keepalive dropped
//! ```
//!
//! All user-visible side effects that can re-enter the driver (waking or dropping a waker,
//! dropping a keep-alive) happen after the `RefCell` borrow is released.
//!
//! A pooled receive (`RawOp::RecvPool`, a multishot `RECV` with buffer select) never ends for
//! its owner except at end of stream or on an error:
//!
//! ```text
//!  armed ──CQE data (F_BUFFER)──> queue completion (more), held += 1 ──> held >= 32?
//!    │                                             paused: queue the hold mark, cancel <─┘
//!    ├──CQE -ENOBUFS (final)──> unarmed, in `rearm`: pushed again at a park once the pool
//!    │                          has a buffer in its ring
//!    ├──CQE -ECANCELED while paused──> unarmed; `release_buffer` brings held to 16: `rearm`
//!    └──CQE 0 / error (final)──> final completion for the owner
//! ```
//!
//! Buffers of completions nobody will poll (a cancelled receive) go straight back to the
//! ring; a buffer handed out returns with `release_buffer` (a `PooledBuf` drop). The hold
//! mark (`Completion::HOLD_MARK`) sits behind the completions of a paused receive: the
//! owner's poll that reaches it applies the hold-limit rule of
//! `seastar_hal::io::POOL_HOLD_LIMIT` (the error, or a wait), out of line.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{self, MaybeUninit};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use io_uring::cqueue;
use seastar_hal::io::{
    register_waker, Completion, OpId, PoolId, SendBuf, SendBufRest, SendBufs, SendStatus,
    COMPLETION_BUFFER,
};
use seastar_hal::{ErrorKind, Instant, IoError};

use crate::config::{Features, UringConfig};
use crate::errno;
use crate::raw::WritevExtras;
use crate::slab::Slab;
use crate::stats::{add, Counters, UringStats};
use crate::sys::{self, BufRing, ReadBuf, Ring, Sqe, Wait};
use crate::unpark::Shared;

/// `user_data` of the pending eventfd read (never a slab key: slab indices are < 2^31).
const EVENTFD_UD: u64 = u64::MAX;
/// `user_data` of cancel requests, whose own CQEs are ignored.
const CANCEL_UD: u64 = u64::MAX - 1;
/// No op holds the buffer (it is in the ring).
const NO_OWNER: u64 = u64::MAX;
/// Set in the `user_data` of a detached send: its key is in `Inner::sends`, not `Inner::ops`.
/// Slab indices stay below this bit, and reserved `user_data` values have bit 31 set.
const SEND_TAG: u64 = 1 << 30;

/// Most buffers one pooled receive may hold (completions not yet polled plus buffers polled
/// and not released) before the driver stops its kernel receive; it is re-armed once the
/// owner is down to half of this. Keeps one connection that does not consume from draining
/// the pool for all the others.
pub(crate) const POOL_HOLD_LIMIT: u32 = seastar_hal::io::POOL_HOLD_LIMIT;

/// What the driver must know about an op's CQEs beyond passing them on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// `-ETIME` is the normal expiry: reported as `Ok(0)`.
    Timeout,
    /// Results are descriptors (closed if nobody will see them); multishot re-arms.
    Accept { multishot: bool },
    /// Submitted as `SENDMSG` (for `MSG_NOSIGNAL`); on `ENOTSOCK` re-submitted as `WRITEV`.
    WritevMsg,
    /// Multishot receive selecting buffers from pool (buffer group) `pool`.
    RecvPool { pool: u16 },
    /// Passed through.
    Other,
}

/// An operation translated to an SQE, with the memory it points into that the driver owns.
pub(crate) struct Prepared {
    pub(crate) kind: OpKind,
    pub(crate) sqe: Sqe,
    /// What to push again under the same `user_data`: the SQE itself for a multishot accept
    /// (re-armed when the kernel ends it) or a pooled receive. (A `WritevMsg`'s WRITEV
    /// fallback lives in its `extras`.)
    pub(crate) resubmit: Option<Sqe>,
    /// Kernel-visible memory (sockaddr, timespec, msghdr): freed with the slot.
    pub(crate) extras: Option<Box<dyn Any>>,
}

/// An op's slot. Kept small and never moved once inserted (a slot is freed in place): the
/// hot path of a single-shot op is insert, one completion, free, with no allocation.
struct OpState {
    kind: OpKind,
    /// Pushed again under the same `user_data` while the op is unfinished (see
    /// [`Prepared::resubmit`]). Boxed: only multishot accepts and pooled receives have one.
    resubmit: Option<Box<Sqe>>,
    /// Owned so the kernel's pointers into it stay valid until the slot is freed (read only
    /// for a `Writev`'s fallback SQE).
    extras: Option<Box<dyn Any>>,
    waker: Option<Waker>,
    /// Completions not yet handed out, oldest first; `first` before `rest`. A single-shot op
    /// only ever uses `first`, so it never allocates a queue.
    first: Option<Completion>,
    rest: VecDeque<Completion>,
    /// The final CQE has been reaped.
    done: bool,
    /// Given up by its owner: completions are discarded, the slot is freed at the final CQE.
    cancelled: bool,
    keepalive: Option<Box<dyn Any>>,
    /// An SQE of this op is in the kernel (only a pooled receive is ever unarmed while
    /// unfinished: paused by back-pressure, or out of buffers).
    armed: bool,
    /// Pooled receive: buffers held (queued completions plus handed out, not released).
    held: u32,
    /// Pooled receive: stopped by back-pressure (`held` reached [`POOL_HOLD_LIMIT`]); while
    /// set, a [`Completion::HOLD_MARK`] is queued behind its completions.
    paused: bool,
}

/// A detached send ([`seastar_hal::io::IoDriver::send_detached`]) in flight: its own slot in
/// [`Inner::sends`], apart from the polled ops, because nobody polls it (no waker, no
/// completion queue, no keep-alive): the driver finishes it at its final CQE. Small, so
/// starting and finishing one moves little.
pub(crate) struct SendSlot {
    /// The bytes the SQE points into.
    pub(crate) bufs: SendBufs,
    pub(crate) status: Rc<SendStatus>,
    pub(crate) len: usize,
    /// A gather's `msghdr` and `iovec`s, which the SQE points into (`None` for one buffer).
    pub(crate) gather: Option<Box<WritevExtras>>,
    /// The gather was re-submitted as a `WRITEV` (the descriptor is not a socket).
    pub(crate) fallback: bool,
}

/// Most buffers a pool keeps in its kernel ring; the other free ones wait in
/// [`Pool::spare`]. The kernel takes ring buffers in FIFO order, so a ring holding the whole
/// pool (4,096 × 16 KiB by default) would cycle every receive through 64 MiB of cache-cold
/// memory; a short ring refilled with the most recently freed buffer keeps the working set
/// at about this many buffers plus those held. Large enough that one park's receives across
/// many connections rarely empty it (which costs an `ENOBUFS` and a re-arm: with 64, 256
/// connections × 16 in flight ran ~15% more user-space instructions per message).
pub(crate) const POOL_RING_DEPTH: u32 = 256;

/// A registered buffer pool (io_uring buffer group = index in `Inner::pools`).
struct Pool {
    ring: BufRing,
    /// Per buffer: the op (key) whose receive took it, or [`NO_OWNER`] while free.
    owner: Vec<u64>,
    /// Free buffers (in the ring or in `spare`).
    free: u32,
    /// Free buffers in the kernel ring (at most [`POOL_RING_DEPTH`]).
    staged: u32,
    /// Free buffers not in the ring, most recently freed last (taken first: cache-hot).
    /// Non-empty only while the ring is full to its depth.
    spare: Vec<u16>,
}

impl Pool {
    fn new(ring: BufRing, count: u16) -> Pool {
        let mut pool = Pool {
            ring,
            owner: vec![NO_OWNER; usize::from(count)],
            free: u32::from(count),
            staged: 0,
            // Lowest ids on top: the first receives use the start of the allocation.
            spare: (0..count).rev().collect(),
        };
        while pool.staged < POOL_RING_DEPTH {
            let Some(bid) = pool.spare.pop() else { break };
            pool.ring.give_back(bid);
            pool.staged += 1;
        }
        pool
    }

    /// The kernel took `bid` from the ring for op `ud`: record it and top the ring up with
    /// the most recently freed spare buffer.
    fn taken(&mut self, bid: u16, ud: u64) {
        let Some(o) = self.owner.get_mut(usize::from(bid)) else {
            return;
        };
        *o = ud;
        self.free = self.free.saturating_sub(1);
        self.staged = self.staged.saturating_sub(1);
        if let Some(next) = self.spare.pop() {
            self.ring.give_back(next);
            self.staged += 1;
        }
    }

    /// `bid` is free again: into the ring if it is short of its depth, else on the spare
    /// stack. A buffer already free is left alone (a double release must not duplicate it).
    /// Returns the op that held it (`None` if it was free or is unknown).
    fn give_back(&mut self, bid: u16) -> Option<u64> {
        let owner = self.owner.get_mut(usize::from(bid))?;
        if *owner == NO_OWNER {
            return None;
        }
        let held_by = mem::replace(owner, NO_OWNER);
        self.free += 1;
        if self.staged < POOL_RING_DEPTH {
            self.ring.give_back(bid);
            self.staged += 1;
        } else {
            self.spare.push(bid);
        }
        Some(held_by)
    }
}

struct Inner {
    ring: Ring,
    ops: Slab<OpState>,
    /// Detached sends in flight (keys tagged with [`SEND_TAG`] in `user_data`).
    sends: Slab<SendSlot>,
    eventfd_read: ReadBuf,
    shutting_down: bool,
    pools: Vec<Pool>,
    /// Pooled receives to re-arm at the next park (out of buffers, resumed after a pause, or
    /// ended by the kernel). Stale keys are skipped.
    rearm: Vec<u64>,
    /// Headers and `iovec` lists of finished detached gathers, for the next ones (at most
    /// [`SPARE_GATHERS`]).
    #[allow(clippy::vec_box)] // the boxes are what is reused: each moves into a send's slot
    spare_writev: Vec<Box<WritevExtras>>,
}

/// CQEs taken from the completion queue at a time by [`UringDriver::reap`].
const CQE_BATCH: usize = 32;

/// Most finished gather headers kept for reuse.
const SPARE_GATHERS: usize = 64;

/// The io_uring I/O driver of one core, obtained from `Platform::io` on a
/// [`crate::UringPlatform`]; implements [`seastar_hal::io::IoDriver`].
pub struct UringDriver {
    inner: RefCell<Inner>,
    counters: Counters,
    features: Features,
    shared: Arc<Shared>,
    /// Reused between parks to collect wakers outside the borrow.
    wake_scratch: Cell<Vec<Waker>>,
    /// Per core: the ring is bound to its creating thread (SINGLE_ISSUER).
    _not_send: PhantomData<Rc<()>>,
}

impl fmt::Debug for UringDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringDriver")
            .field("features", &self.features)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn result_of(kind: OpKind, res: i32) -> Result<u32, IoError> {
    if res >= 0 {
        Ok(res as u32)
    } else if kind == OpKind::Timeout && res == -libc::ETIME {
        Ok(0)
    } else {
        Err(errno::from_errno(-res))
    }
}

impl OpState {
    #[inline]
    fn push_completion(&mut self, c: Completion) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(c);
        } else {
            self.rest.push_back(c);
        }
    }

    #[inline]
    fn pop_completion(&mut self) -> Option<Completion> {
        match self.first.take() {
            Some(c) => Some(c),
            None => self.rest.pop_front(),
        }
    }
}

/// Release what completions nobody will poll carry: close accepted descriptors, give pool
/// buffers back.
fn discard_queued(op: &mut OpState, pools: &mut [Pool]) {
    let accept = matches!(op.kind, OpKind::Accept { .. });
    while let Some(c) = op.pop_completion() {
        if let (true, Ok(fd)) = (accept, c.result) {
            sys::close_orphan(fd as i32);
        }
        if let (OpKind::RecvPool { pool }, Some(bid)) = (op.kind, c.buffer()) {
            op.held = op.held.saturating_sub(1);
            give_back(pools, pool, bid);
        }
    }
}

/// Queue the [`Completion::HOLD_MARK`] of a receive just paused (waking a waiting owner, whose poll
/// the rule may now answer).
#[cold]
fn queue_hold_mark(op: &mut OpState, wakers: &mut Vec<Waker>) {
    // One mark is enough (an earlier pause's may still be queued).
    let queued = op
        .first
        .iter()
        .chain(&op.rest)
        .any(Completion::is_hold_mark);
    if !queued {
        op.push_completion(Completion::HOLD_MARK);
    }
    if let Some(w) = op.waker.take() {
        wakers.push(w);
    }
}

/// [`UringDriver::poll_op_impl`] of an op that popped a final error `c`: the
/// [`Completion::HOLD_MARK`] (see [`poll_at_hold_mark`]) or its real final completion, which frees
/// the slot.
#[cold]
#[inline(never)]
fn poll_final_error(
    driver: &UringDriver,
    id: OpId,
    cx: &mut Context<'_>,
    c: Completion,
) -> Poll<Completion> {
    if c.is_hold_mark() {
        return poll_at_hold_mark(driver, id, cx);
    }
    let mut inner = driver.inner.borrow_mut();
    // As in `poll_op_impl`: the slot is freed in place, the waker dropped after the borrow.
    let old_waker = inner.ops.get_mut(id.0).and_then(|op| op.waker.take());
    inner.ops.free(id.0);
    drop(inner);
    drop(old_waker);
    Poll::Ready(c)
}

/// [`UringDriver::poll_op_impl`] of a pooled receive that popped its [`Completion::HOLD_MARK`].
/// Completions queued behind the mark go first (the mark goes back behind them while the receive is
/// paused). With none: a receive no longer paused drops the mark and waits; a paused one keeps it
/// and fails with the hold-limit error if only its owner can resume it, else waits.
#[cold]
#[inline(never)]
fn poll_at_hold_mark(driver: &UringDriver, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
    // Declared before the borrow so it drops after it (its drop may re-enter the driver).
    let mut old_waker = None;
    let mut inner = driver.inner.borrow_mut();
    let Some(op) = inner.ops.get_mut(id.0) else {
        return Poll::Ready(Completion::done(Err(IoError::new(ErrorKind::InvalidInput))));
    };
    // Another mark right behind (none is queued twice, but stay safe): one is enough.
    let next = loop {
        match op.pop_completion() {
            Some(c) if c.is_hold_mark() => continue,
            other => break other,
        }
    };
    if let Some(c) = next {
        if c.more {
            if op.paused {
                op.push_completion(Completion::HOLD_MARK);
            }
        } else {
            // The real final completion (end of stream, an error): as in `poll_op_impl`.
            old_waker = op.waker.take();
            inner.ops.free(id.0);
        }
        drop(inner);
        drop(old_waker);
        return Poll::Ready(c);
    }
    if op.paused {
        op.push_completion(Completion::HOLD_MARK);
        if only_owner_can_resume(&inner, id.0) {
            return Poll::Ready(Completion::hold_limit());
        }
    }
    let Some(op) = inner.ops.get_mut(id.0) else {
        return Poll::Ready(Completion::done(Err(IoError::new(ErrorKind::InvalidInput))));
    };
    old_waker = register_waker(&mut op.waker, cx.waker());
    drop(inner);
    drop(old_waker);
    Poll::Pending
}

/// The hold-limit rule for pooled receive `key`, paused with nothing queued: whether the
/// buffers it holds outside unfinished detached sends (whose release the driver makes
/// itself) keep it above the resume mark, so that only its owner can resume it. Counts
/// those buffers by walking the sends in flight: the slow path only, nothing to keep up to
/// date per send.
#[cold]
#[inline(never)]
fn only_owner_can_resume(inner: &Inner, key: u64) -> bool {
    let Some(op) = inner.ops.get(key) else {
        return false;
    };
    let OpKind::RecvPool { pool } = op.kind else {
        return false;
    };
    let Some(owners) = inner.pools.get(usize::from(pool)).map(|p| &p.owner) else {
        return false;
    };
    let in_sends = inner
        .sends
        .values()
        .flat_map(|s| s.bufs.as_slice())
        .filter_map(SendBuf::pool_buffer)
        .filter(|&(p, bid)| p.0 == pool && owners.get(usize::from(bid)) == Some(&key))
        .count();
    seastar_hal::io::only_owner_can_resume(
        op.paused,
        op.held,
        u32::try_from(in_sends).unwrap_or(u32::MAX),
    )
}

/// Put a buffer the kernel handed out back in its pool's ring.
fn give_back(pools: &mut [Pool], pool: u16, bid: u16) {
    if let Some(p) = pools.get_mut(usize::from(pool)) {
        let _ = p.give_back(bid);
    }
}

/// A pool buffer comes back from its holder: into the ring, and the receive that took it
/// holds one less (resumed if back-pressure paused it and it has caught up).
fn release_buffer_in(inner: &mut Inner, pool: PoolId, bid: u16) {
    let Inner {
        ops, pools, rearm, ..
    } = inner;
    release_buffer_to(ops, pools, rearm, pool, bid);
}

/// [`release_buffer_in`] on the parts of `Inner` it needs (so a caller can hold a borrow of
/// another part, such as a send's slot).
#[inline]
fn release_buffer_to(
    ops: &mut Slab<OpState>,
    pools: &mut [Pool],
    rearm: &mut Vec<u64>,
    pool: PoolId,
    bid: u16,
) {
    let Some(owner) = pools
        .get_mut(usize::from(pool.0))
        .and_then(|p| p.give_back(bid))
    else {
        return;
    };
    // The op that received into it (if still alive) holds one buffer less; a receive paused
    // by back-pressure resumes once its owner has caught up.
    if let Some(op) = ops.get_mut(owner) {
        op.held = op.held.saturating_sub(1);
        if op.paused && !op.armed && !op.cancelled && op.held <= POOL_HOLD_LIMIT / 2 {
            op.paused = false;
            rearm.push(owner);
        }
    }
}

/// Release the buffers of a finished (or never started) detached send in place (no move of
/// the slot): pool buffers go back at once, boxed buffers to `later`, dropped after the
/// driver's borrow (their drop may call back into the driver); what stays in the slot is
/// plain memory. A gather's list is kept for the owner's next gather, its header and
/// `iovec`s for the driver's.
#[allow(clippy::vec_box)] // `Inner::spare_writev`: the boxes are what is reused
fn release_send_bufs(
    ops: &mut Slab<OpState>,
    pools: &mut [Pool],
    rearm: &mut Vec<u64>,
    spare_writev: &mut Vec<Box<WritevExtras>>,
    slot: &mut SendSlot,
    later: &mut Vec<Box<dyn Any>>,
) {
    let mut release = |b: &mut SendBuf| match b.take_rest() {
        SendBufRest::Done => {}
        SendBufRest::Pool(pool, bid) => release_buffer_to(ops, pools, rearm, pool, bid),
        SendBufRest::Drop(b) => later.push(b),
    };
    match &mut slot.bufs {
        // Left in the slot: what remains of it is plain memory, freed with the slot.
        SendBufs::One(b) => release(b),
        SendBufs::Gather(v) => {
            v.iter_mut().for_each(release);
            v.clear();
            slot.status.recycle(mem::take(v));
        }
    }
    if let Some(mut g) = slot.gather.take() {
        if spare_writev.len() < SPARE_GATHERS {
            g.iov.clear();
            spare_writev.push(g);
        }
    }
}

/// A detached send is finished with `result`: release its buffers, tell its owner (whose
/// waker, if any, joins `wakers`) and free its slot.
fn finish_send(
    inner: &mut Inner,
    key: u64,
    result: Result<u32, IoError>,
    wakers: &mut Vec<Waker>,
    later: &mut Vec<Box<dyn Any>>,
) {
    let Inner {
        ops,
        pools,
        rearm,
        sends,
        spare_writev,
        ..
    } = inner;
    let Some(slot) = sends.get_mut(key) else {
        return;
    };
    release_send_bufs(ops, pools, rearm, spare_writev, slot, later);
    if let Some(w) = slot.status.finished(result, slot.len) {
        wakers.push(w);
    }
    if Rc::strong_count(&slot.status) == 1 {
        // The owner is gone: the status (and a waker it may still hold) drops outside the
        // borrow too. Rare: only a stream dropped with its send in flight.
        if let Some(slot) = sends.remove(key) {
            later.push(Box::new(slot.status));
        }
    } else {
        // Dropped in place: what is left (an emptied buffer list, a status reference) cannot
        // re-enter the driver.
        sends.free(key);
    }
}

/// Release the buffers of a detached send that never reached the kernel.
#[cold]
#[inline(never)]
fn release_unstarted(inner: &mut Inner, mut slot: SendSlot, later: &mut Vec<Box<dyn Any>>) {
    let Inner {
        ops,
        pools,
        rearm,
        spare_writev,
        ..
    } = inner;
    release_send_bufs(ops, pools, rearm, spare_writev, &mut slot, later);
    later.push(Box::new(slot));
}

impl UringDriver {
    pub(crate) fn new(config: &UringConfig, shared: Arc<Shared>) -> std::io::Result<Self> {
        let ring = Ring::setup(config)?;
        let features = ring.features().clone();
        let driver = UringDriver {
            inner: RefCell::new(Inner {
                ring,
                ops: Slab::new(),
                sends: Slab::new(),
                eventfd_read: ReadBuf::new(),
                shutting_down: false,
                pools: Vec::new(),
                rearm: Vec::new(),
                spare_writev: Vec::new(),
            }),
            counters: Counters::default(),
            features,
            shared,
            wake_scratch: Cell::new(Vec::new()),
            _not_send: PhantomData,
        };
        // The eventfd read goes to the kernel with the first park's enter.
        driver.arm_eventfd(&mut driver.inner.borrow_mut());
        Ok(driver)
    }

    /// What the kernel accepted when this ring was built.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// A snapshot of this core's counters.
    pub fn stats(&self) -> UringStats {
        let mut s = self.counters.snapshot(self.shared.writes());
        if let Ok(inner) = self.inner.try_borrow() {
            for p in &inner.pools {
                s.pool_buffers += p.owner.len() as u64;
                s.pool_buffers_free += u64::from(p.free);
            }
        }
        s
    }

    fn arm_eventfd(&self, inner: &mut Inner) -> bool {
        if inner.eventfd_read.armed() {
            return true;
        }
        let sqe = inner.eventfd_read.arm(self.shared.eventfd().as_raw_fd());
        if self.push(inner, &sqe, EVENTFD_UD).is_ok() {
            true
        } else {
            inner.eventfd_read.completed(); // never reached the SQ
            false
        }
    }

    /// Queue an SQE; when the SQ is full, hand the batch to the kernel first.
    #[inline]
    fn push(&self, inner: &mut Inner, sqe: &Sqe, user_data: u64) -> Result<(), IoError> {
        if inner.ring.push(sqe, user_data) {
            return Ok(());
        }
        add(&self.counters.sq_full_flushes, 1);
        self.submit_queued(inner)?;
        if inner.ring.push(sqe, user_data) {
            Ok(())
        } else {
            Err(IoError::new(ErrorKind::OutOfMemory))
        }
    }

    fn submit_queued(&self, inner: &mut Inner) -> Result<usize, IoError> {
        add(&self.counters.enters, 1);
        match inner.ring.submit() {
            Ok(n) => {
                add(&self.counters.submitted, n as u64);
                Ok(n)
            }
            Err(e) => {
                add(&self.counters.enter_errors, 1);
                Err(errno::from_std(&e))
            }
        }
    }

    /// Start a prepared operation: take a slot, queue its SQE (no syscall unless the SQ is full).
    pub(crate) fn start(&self, p: Prepared) -> Result<OpId, IoError> {
        let mut inner = self.inner.borrow_mut();
        let sqe = p.sqe;
        let state = OpState {
            kind: p.kind,
            resubmit: p.resubmit.map(Box::new),
            extras: p.extras,
            waker: None,
            first: None,
            rest: VecDeque::new(),
            done: false,
            cancelled: false,
            keepalive: None,
            armed: true,
            held: 0,
            paused: false,
        };
        if let OpKind::RecvPool { pool } = state.kind {
            if usize::from(pool) >= inner.pools.len() {
                return Err(IoError::new(ErrorKind::InvalidInput));
            }
        }
        let Ok(key) = inner.ops.insert(state) else {
            return Err(IoError::new(ErrorKind::OutOfMemory));
        };
        match self.push(&mut inner, &sqe, key) {
            Ok(()) => {
                add(&self.counters.ops, 1);
                Ok(OpId(key))
            }
            Err(e) => {
                // Never reached the kernel: its memory can go at once.
                let released = inner.ops.remove(key);
                drop(inner);
                drop(released);
                Err(e)
            }
        }
    }

    /// A gather header for a detached send, reusing a finished one's allocation (and its
    /// `iovec` list's, emptied).
    pub(crate) fn take_writev_extras(&self) -> Box<WritevExtras> {
        self.inner
            .borrow_mut()
            .spare_writev
            .pop()
            .unwrap_or_else(WritevExtras::boxed)
    }

    /// Start a detached send: `sqe` points into `slot` (its buffers and gather header). On
    /// success `status` (the slot's) counts it in flight; on failure its buffers are released
    /// before this returns.
    #[inline]
    pub(crate) fn start_send(
        &self,
        sqe: &Sqe,
        slot: SendSlot,
        status: &SendStatus,
    ) -> Result<(), IoError> {
        let mut inner = self.inner.borrow_mut();
        match inner.sends.insert(slot) {
            Ok(key) => match self.push(&mut inner, sqe, key | SEND_TAG) {
                Ok(()) => {
                    add(&self.counters.ops, 1);
                    status.started();
                    Ok(())
                }
                Err(e) => {
                    // Never reached the kernel: its memory can go at once.
                    let slot = inner.sends.remove(key);
                    drop(inner);
                    if let Some(slot) = slot {
                        self.release_send(slot);
                    }
                    Err(e)
                }
            },
            Err(slot) => {
                drop(inner);
                self.release_send(slot);
                Err(IoError::new(ErrorKind::OutOfMemory))
            }
        }
    }

    /// Release the buffers of a detached send that was never started.
    #[cold]
    pub(crate) fn release_send(&self, slot: SendSlot) {
        let mut later = Vec::new();
        release_unstarted(&mut self.inner.borrow_mut(), slot, &mut later);
        drop(later);
    }

    #[inline]
    pub(crate) fn poll_op_impl(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
        // Declared before the borrow so it drops after it: dropping a waker may run arbitrary
        // code (an executor's task drop) that re-enters the driver.
        let mut old_waker = None;
        let mut inner = self.inner.borrow_mut();
        let invalid = || Poll::Ready(Completion::done(Err(IoError::new(ErrorKind::InvalidInput))));
        let Some(op) = inner.ops.get_mut(id.0) else {
            return invalid();
        };
        if op.cancelled {
            // Released by `cancel`; the slot only waits for its final CQE.
            return invalid();
        }
        if let Some(c) = op.pop_completion() {
            if !c.more {
                if c.result.is_err() {
                    // A final error, or a paused pooled receive's hold mark: out of line, on
                    // a test of what the pop has at hand (the flags would cost a spill on the
                    // per-message path).
                    drop(inner);
                    return poll_final_error(self, id, cx, c);
                }
                // The final completion: free the slot in place (no move of the state). What is
                // left in it cannot re-enter the driver: the waker was taken when the
                // completion was queued, a live op has no keep-alive, and `extras` and
                // `resubmit` are the driver's own plain memory. Take the waker anyway, so a
                // future change cannot make this a re-entrant drop.
                old_waker = op.waker.take();
                inner.ops.free(id.0);
            }
            drop(inner);
            drop(old_waker);
            return Poll::Ready(c);
        }
        old_waker = register_waker(&mut op.waker, cx.waker());
        drop(inner);
        drop(old_waker);
        Poll::Pending
    }

    /// See [`IoDriver::has_completion`]: a cancelled op polls `Ready` (an error) too. A paused
    /// pooled receive has its [`Completion::HOLD_MARK`] queued, so a peek polls it (and the poll
    /// decides).
    #[inline]
    pub(crate) fn has_completion_impl(&self, id: OpId) -> bool {
        let mut inner = self.inner.borrow_mut();
        inner
            .ops
            .get_mut(id.0)
            .is_none_or(|op| op.cancelled || op.first.is_some() || !op.rest.is_empty())
    }

    pub(crate) fn cancel_impl(&self, id: OpId, keepalive: Box<dyn Any>) {
        let mut trash: (Option<Box<dyn Any>>, Option<Waker>) = (None, None);
        let mut inner = self.inner.borrow_mut();
        let Some(op) = inner.ops.get_mut(id.0) else {
            // Unknown or finished: nothing in flight can point into `keepalive`.
            drop(inner);
            drop(keepalive);
            return;
        };
        if op.cancelled {
            // Cancelled twice (a caller bug): keep both until the final CQE.
            let first = op.keepalive.take();
            op.keepalive = Some(Box::new((first, keepalive)));
            return;
        }
        let Inner { ops, pools, .. } = &mut *inner;
        let Some(op) = ops.get_mut(id.0) else {
            return;
        };
        discard_queued(op, pools);
        trash.1 = op.waker.take();
        if op.done || !op.armed {
            // The final CQE is already reaped (or, for a paused pooled receive, nothing is in
            // the kernel): the kernel is done with the buffers.
            inner.ops.free(id.0);
            trash.0 = Some(keepalive);
            drop(inner);
            drop(trash);
            return;
        }
        op.cancelled = true;
        op.keepalive = Some(keepalive);
        add(&self.counters.cancels, 1);
        // If the cancel cannot be queued, the op still finishes on its own (or is cancelled
        // when the driver is dropped); the keep-alive waits for that either way.
        let _ = self.push(&mut inner, &Sqe::cancel(id.0), CANCEL_UD);
        drop(inner);
        drop(trash);
    }

    /// Re-arm the pooled receives that wait for it and can go: not paused, and their pool has
    /// a buffer in the ring (otherwise they would end with ENOBUFS at once).
    fn rearm_pooled(&self, inner: &mut Inner) {
        if inner.rearm.is_empty() {
            return;
        }
        let mut waiting = mem::take(&mut inner.rearm);
        waiting.retain(|&ud| {
            let Inner { ops, pools, .. } = &mut *inner;
            let Some(op) = ops.get_mut(ud) else {
                return false;
            };
            let OpKind::RecvPool { pool } = op.kind else {
                return false;
            };
            if op.cancelled || op.done || op.armed || op.paused {
                return false;
            }
            if pools.get(usize::from(pool)).is_none_or(|p| p.staged == 0) {
                return true; // still out of buffers: keep waiting
            }
            let Some(sqe) = op.resubmit.as_deref().cloned() else {
                return false;
            };
            op.armed = true;
            if self.push(inner, &sqe, ud).is_err() {
                if let Some(op) = inner.ops.get_mut(ud) {
                    op.armed = false;
                }
                return true;
            }
            false
        });
        waiting.append(&mut inner.rearm);
        inner.rearm = waiting;
    }

    pub(crate) fn create_pool_impl(&self, count: u16, size: u32) -> Result<PoolId, IoError> {
        let mut inner = self.inner.borrow_mut();
        let bgid =
            u16::try_from(inner.pools.len()).map_err(|_| IoError::new(ErrorKind::OutOfMemory))?;
        let mut ring = BufRing::new(count, size).map_err(|e| errno::from_std(&e))?;
        ring.register(&inner.ring, bgid).map_err(|e| {
            // EINVAL from a kernel without buffer rings (< 5.19): the feature is missing.
            if e.raw_os_error() == Some(libc::EINVAL) {
                IoError::with_os_code(ErrorKind::Unsupported, libc::EINVAL)
            } else {
                errno::from_std(&e)
            }
        })?;
        inner.pools.push(Pool::new(ring, count));
        Ok(PoolId(bgid))
    }

    #[inline]
    pub(crate) fn pool_buffer_impl(&self, pool: PoolId, bid: u16) -> Option<(*const u8, usize)> {
        let inner = self.inner.borrow();
        inner.pools.get(usize::from(pool.0))?.ring.buffer(bid)
    }

    #[inline]
    pub(crate) fn release_buffer_impl(&self, pool: PoolId, bid: u16) {
        release_buffer_in(&mut self.inner.borrow_mut(), pool, bid);
    }

    pub(crate) fn in_flight_impl(&self) -> usize {
        let inner = self.inner.borrow();
        inner.ops.len() + inner.sends.len()
    }

    /// One loop iteration: submit everything queued and wait for a completion, the deadline or
    /// an unpark, in one `io_uring_enter`; then reap every CQE and wake the wakers.
    pub(crate) fn park(&self, deadline: Option<Instant>) {
        add(&self.counters.parks, 1);
        {
            let mut inner = self.inner.borrow_mut();
            self.rearm_pooled(&mut inner);
            let armed = self.arm_eventfd(&mut inner);
            let now = sys::monotonic_nanos();
            let mut wait = match deadline {
                None => Wait::Forever,
                Some(d) if d.as_nanos() <= now => Wait::Poll,
                Some(d) => Wait::Until {
                    abs_nanos: d.as_nanos(),
                    rel_nanos: d.as_nanos() - now,
                },
            };
            if !armed {
                // Without a pending eventfd read an unpark could not end the wait.
                wait = Wait::Poll;
            }
            let parked = wait != Wait::Poll && self.shared.begin_park();
            if !parked {
                wait = Wait::Poll;
            }
            add(&self.counters.enters, 1);
            let res = inner.ring.enter(wait);
            if parked {
                self.shared.end_park();
            }
            self.account_enter(res);
        }
        self.reap();
    }

    fn account_enter(&self, res: std::io::Result<usize>) {
        match res {
            Ok(n) => add(&self.counters.submitted, n as u64),
            // Timeout expiry, a signal, or a full CQ (retried by the next enter).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(_) => add(&self.counters.enter_errors, 1),
        }
    }

    /// Hand queued SQEs to the kernel now (one enter, only if any are queued), and process
    /// whatever completions are already visible.
    ///
    /// The enter carries `GETEVENTS` (without waiting): with `DEFER_TASKRUN`, a cancelled
    /// request is only completed and freed — dropping its reference to the socket's file —
    /// in task work that runs in such an enter. A plain submit would leave a cancelled
    /// accept holding a dropped listener open, so binding its port again failed with
    /// `AddrInUse` until the next park.
    pub(crate) fn flush(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            if inner.ring.sq_len() > 0 {
                add(&self.counters.enters, 1);
                let res = inner.ring.enter(Wait::Poll);
                self.account_enter(res);
            }
        }
        self.reap();
    }

    /// Process every visible CQE; wake wakers and drop released slots after the borrow.
    fn reap(&self) {
        let mut wakers = self.wake_scratch.take();
        // Keep-alives of cancelled ops whose final CQE arrived: user types, dropped after the
        // borrow (their drop may re-enter the driver).
        let mut released: Vec<Box<dyn Any>> = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            // CQEs are copied out in batches on the stack (the CQ's head moves past each
            // batch at once), so processing one may push SQEs.
            let mut batch = [const { MaybeUninit::<cqueue::Entry>::uninit() }; CQE_BATCH];
            loop {
                let cqes = inner.ring.take_cqes(&mut batch);
                if cqes.is_empty() {
                    break;
                }
                for cqe in cqes.iter() {
                    self.on_cqe(&mut inner, cqe, &mut wakers, &mut released);
                }
            }
        }
        for w in wakers.drain(..) {
            w.wake();
        }
        self.wake_scratch.set(wakers);
        drop(released);
    }

    fn on_cqe(
        &self,
        inner: &mut Inner,
        cqe: &cqueue::Entry,
        wakers: &mut Vec<Waker>,
        released: &mut Vec<Box<dyn Any>>,
    ) {
        let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
        match ud {
            EVENTFD_UD => {
                // Re-armed by the next park. An error (ECANCELED at shutdown) wakes nobody.
                inner.eventfd_read.completed();
                if res >= 0 {
                    add(&self.counters.unpark_wakeups, 1);
                }
                return;
            }
            CANCEL_UD => return,
            _ if ud & SEND_TAG != 0 => {
                self.on_send_cqe(inner, ud, res, flags, wakers, released);
                return;
            }
            _ => {}
        }
        let more = cqueue::more(flags);
        let shutting_down = inner.shutting_down;
        let Some(op) = inner.ops.get_mut(ud) else {
            add(&self.counters.stale_cqes, 1);
            return;
        };
        add(&self.counters.completed, 1);

        if op.cancelled {
            if res == -libc::ECANCELED {
                add(&self.counters.cancels_effective, 1);
            }
            if let OpKind::Accept { .. } = op.kind {
                if res >= 0 {
                    sys::close_orphan(res);
                }
            }
            if let (OpKind::RecvPool { pool }, Some(bid)) = (op.kind, cqueue::buffer_select(flags))
            {
                // Nobody will read it: straight back to the ring.
                if let Some(p) = inner.pools.get_mut(usize::from(pool)) {
                    p.taken(bid, ud);
                    let _ = p.give_back(bid);
                }
            }
            if !more {
                released.extend(op.keepalive.take());
                inner.ops.free(ud);
            }
            return;
        }

        if let OpKind::RecvPool { pool } = op.kind {
            self.on_pooled_cqe(inner, ud, pool, res, flags, wakers);
            return;
        }

        // Re-submissions under the same user_data: the op is not finished, so the memory its
        // SQEs point into is still owned (by the slot or the caller's buffers).
        let resubmit = if op.kind == OpKind::WritevMsg && res == -libc::ENOTSOCK && !more {
            op.kind = OpKind::Other;
            op.extras
                .as_deref()
                .and_then(|e| e.downcast_ref::<WritevExtras>())
                .map(|w| w.fallback.clone())
        } else if op.kind == (OpKind::Accept { multishot: true })
            && !more
            && res >= 0
            && !shutting_down
        {
            // Single-shot emulation, or the kernel ended a native multishot (CQ overflow).
            op.resubmit.as_deref().cloned()
        } else {
            None
        };
        let mut completion = Completion {
            result: result_of(op.kind, res),
            flags,
            more,
        };
        if let Some(sqe) = resubmit {
            let is_writev_retry = op.kind == OpKind::Other;
            if self.push(inner, &sqe, ud).is_ok() {
                if is_writev_retry {
                    return; // the WRITEV's CQE will be the op's completion
                }
                completion.more = true;
            }
        }
        let Some(op) = inner.ops.get_mut(ud) else {
            return;
        };
        if !completion.more {
            op.done = true;
        }
        op.push_completion(completion);
        if let Some(w) = op.waker.take() {
            wakers.push(w);
        }
    }
}

impl UringDriver {
    /// A CQE of a detached send: nobody polls it, so the driver finishes it here (a gather
    /// on a descriptor that is not a socket is re-submitted as `WRITEV` first).
    fn on_send_cqe(
        &self,
        inner: &mut Inner,
        ud: u64,
        res: i32,
        flags: u32,
        wakers: &mut Vec<Waker>,
        released: &mut Vec<Box<dyn Any>>,
    ) {
        let key = ud & !SEND_TAG;
        let Some(slot) = inner.sends.get_mut(key) else {
            add(&self.counters.stale_cqes, 1);
            return;
        };
        add(&self.counters.completed, 1);
        if cqueue::more(flags) {
            return; // not a final CQE (plain sends have none of these)
        }
        if res == -libc::ENOTSOCK && !slot.fallback {
            if let Some(sqe) = slot.gather.as_deref().map(|g| g.fallback.clone()) {
                slot.fallback = true;
                // Still unfinished: the memory the WRITEV points into is the slot's.
                if self.push(inner, &sqe, ud).is_ok() {
                    return;
                }
            }
        }
        if res == -libc::ECANCELED {
            add(&self.counters.cancels_effective, 1);
        }
        finish_send(inner, key, result_of(OpKind::Other, res), wakers, released);
    }

    /// A CQE of a live pooled receive: data goes to the owner with its buffer (always as a
    /// non-final completion); running out of buffers, a back-pressure pause or the kernel
    /// ending the multishot re-arms it later; end of stream and errors end it.
    fn on_pooled_cqe(
        &self,
        inner: &mut Inner,
        ud: u64,
        pool: u16,
        res: i32,
        flags: u32,
        wakers: &mut Vec<Waker>,
    ) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let Inner {
            ops, pools, rearm, ..
        } = inner;
        let Some(op) = ops.get_mut(ud) else {
            return;
        };
        if !more {
            op.armed = false;
        }
        if let Some(bid) = bid {
            if let Some(p) = pools.get_mut(usize::from(pool)) {
                p.taken(bid, ud);
            }
            op.held += 1;
        }
        let completion = match (res, bid) {
            (n, Some(bid)) if n > 0 => Some(Completion {
                result: Ok(n as u32),
                flags: COMPLETION_BUFFER | (u32::from(bid) << 16),
                more: true,
            }),
            (n, None) if n > 0 => {
                // Data without a buffer cannot happen with buffer select; end the receive
                // rather than invent bytes.
                op.done = true;
                Some(Completion::done(Err(IoError::new(ErrorKind::InvalidData))))
            }
            // Out of buffers: wait until some come back (not the owner's business).
            (n, _) if n == -libc::ENOBUFS && !more => {
                add(&self.counters.pool_empty, 1);
                rearm.push(ud);
                None
            }
            // Our own back-pressure cancel.
            (n, _) if n == -libc::ECANCELED && op.paused && !more => None,
            (n, b) => {
                if let Some(b) = b {
                    // A buffer with no data (a zero-length shot): straight back.
                    op.held = op.held.saturating_sub(1);
                    give_back(pools, pool, b);
                }
                if more {
                    None
                } else {
                    op.done = true;
                    Some(Completion::done(result_of(OpKind::Other, n)))
                }
            }
        };
        if !op.done && !op.armed {
            if op.paused && op.held <= POOL_HOLD_LIMIT / 2 {
                // Caught up while the cancel was in flight.
                op.paused = false;
            }
            if !op.paused && (res > 0 || res == -libc::ECANCELED) {
                // The kernel ended the multishot with data (CQ overflow, say): go on.
                rearm.push(ud);
            }
        }
        // Back-pressure: stop the kernel receive; the owner resumes it by releasing. Paused
        // at the limit even when not armed (waiting for pool buffers), so it is not re-armed
        // before the owner caught up and the hold-limit rule sees it paused.
        let pause = !op.done && !op.paused && op.held >= POOL_HOLD_LIMIT;
        if pause {
            op.paused = true;
            add(&self.counters.pool_pauses, 1);
        }
        if let Some(c) = completion {
            op.push_completion(c);
            if let Some(w) = op.waker.take() {
                wakers.push(w);
            }
        }
        if pause {
            // Behind what is queued: the owner's poll applies the hold-limit rule there.
            queue_hold_mark(op, wakers);
            if op.armed {
                let _ = self.push(inner, &Sqe::cancel(ud), CANCEL_UD);
            }
        }
    }
}

impl Drop for UringDriver {
    /// Cancel whatever is still in flight and wait (bounded) for the final CQEs, so buffers of
    /// cancelled ops are freed after the kernel is done with them; anything the kernel still
    /// owns after that is leaked, never freed.
    fn drop(&mut self) {
        {
            let inner = self.inner.get_mut();
            inner.shutting_down = true;
        }
        let mut finished = Vec::new();
        let mut wakers = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            for key in inner.ops.keys() {
                let Some(op) = inner.ops.get_mut(key) else {
                    continue;
                };
                if op.done || !op.armed {
                    let Inner { ops, pools, .. } = &mut *inner;
                    if let Some(op) = ops.get_mut(key) {
                        discard_queued(op, pools);
                    }
                    finished.extend(inner.ops.remove(key));
                } else if !op.cancelled {
                    op.cancelled = true;
                    if let Some(w) = op.waker.take() {
                        wakers.push(w);
                    }
                    let _ = self.push(&mut inner, &Sqe::cancel(key), CANCEL_UD);
                }
            }
            for key in inner.sends.keys() {
                add(&self.counters.cancels, 1);
                let _ = self.push(&mut inner, &Sqe::cancel(key | SEND_TAG), CANCEL_UD);
            }
            if inner.eventfd_read.armed() {
                let _ = self.push(&mut inner, &Sqe::cancel(EVENTFD_UD), CANCEL_UD);
            }
        }
        drop((finished, wakers));
        let give_up = sys::monotonic_nanos() + 2_000_000_000;
        loop {
            {
                let inner = self.inner.get_mut();
                if inner.ops.len() == 0 && inner.sends.len() == 0 && !inner.eventfd_read.armed() {
                    break;
                }
                let now = sys::monotonic_nanos();
                if now >= give_up {
                    break;
                }
                let until = (now + 10_000_000).min(give_up);
                let res = inner.ring.enter(Wait::Until {
                    abs_nanos: until,
                    rel_nanos: until - now,
                });
                add(&self.counters.enters, 1);
                self.account_enter(res);
            }
            self.reap();
        }
        // Whatever the kernel did not finish with: leak it (keep-alives, sockaddrs...).
        // `ReadBuf` leaks itself if its read is still armed, a `BufRing` unless marked below.
        let inner = self.inner.get_mut();
        if inner.ops.len() == 0 && inner.sends.len() == 0 {
            // No receive can pick a buffer, and no send read one, any more: unregister the
            // groups and free them.
            for (bgid, pool) in inner.pools.iter_mut().enumerate() {
                if inner.ring.unregister_buf_ring(bgid as u16).is_ok() {
                    pool.ring.mark_unregistered();
                }
            }
        }
        for op in inner.ops.drain() {
            mem::forget(op);
        }
        for send in inner.sends.drain() {
            mem::forget(send);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_etime_is_success_elsewhere_an_error() {
        assert_eq!(result_of(OpKind::Timeout, -libc::ETIME), Ok(0));
        assert_eq!(
            result_of(OpKind::Other, -libc::ETIME).map_err(|e| e.kind()),
            Err(ErrorKind::TimedOut)
        );
        assert_eq!(
            result_of(OpKind::Timeout, -libc::ECANCELED).map_err(|e| e.kind()),
            Err(ErrorKind::Canceled)
        );
        assert_eq!(result_of(OpKind::Other, 7), Ok(7));
    }

    #[test]
    fn pool_ring_is_refilled_with_the_most_recently_freed_buffer() {
        let depth = POOL_RING_DEPTH as u16;
        let count = 2 * depth;
        let ring = BufRing::new(count, 64).expect("ring memory");
        let mut pool = Pool::new(ring, count);
        // The ring holds the first `depth` buffers; the rest wait, lowest id on top.
        assert_eq!(
            (pool.staged, pool.free),
            (POOL_RING_DEPTH, u32::from(count))
        );
        assert_eq!(pool.spare.last(), Some(&depth));

        // The kernel takes buffer 0 (the ring's oldest): the ring is topped up from the stack.
        pool.taken(0, 7);
        assert_eq!(pool.staged, POOL_RING_DEPTH);
        assert_eq!(pool.free, u32::from(count) - 1);
        assert_eq!(pool.owner[0], 7);
        // Buffer 0 comes back while the ring is full: it goes on top of the stack...
        pool.give_back(0);
        assert_eq!(pool.spare.last(), Some(&0));
        // ...and a double release does not put it there twice.
        pool.give_back(0);
        assert_eq!(pool.spare.iter().filter(|&&b| b == 0).count(), 1);
        assert_eq!(pool.free, u32::from(count));
        // The next buffer the kernel takes is replaced by buffer 0, the most recently freed.
        pool.taken(1, 7);
        assert!(
            !pool.spare.contains(&0),
            "buffer 0 went back into the ring first"
        );
        assert_eq!(pool.staged, POOL_RING_DEPTH);

        // A pool no larger than the depth lives in the ring: a released buffer goes straight
        // back into it.
        let mut small = Pool::new(BufRing::new(16, 64).expect("ring memory"), 16);
        assert_eq!((small.staged, small.spare.len()), (16, 0));
        small.taken(3, 9);
        assert_eq!((small.staged, small.free), (15, 15));
        small.give_back(3);
        assert_eq!((small.staged, small.free, small.spare.len()), (16, 16, 0));
    }

    #[test]
    fn slab_keys_stay_clear_of_reserved_user_data() {
        assert!(CANCEL_UD >> 32 == u64::from(u32::MAX) && (CANCEL_UD & 0xffff_ffff) >= 1 << 31);
        // Slab indices stay below the send tag, and a tagged index below bit 31.
        assert!(crate::slab::MAX_SLOTS as u64 <= SEND_TAG && SEND_TAG < 1 << 31);
        let mut sends: Slab<u8> = Slab::new();
        let key = sends.insert(1).expect("slot");
        assert_eq!(key & SEND_TAG, 0);
    }
}
