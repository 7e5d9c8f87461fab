//! The readiness-based [`IoDriver`]: completion semantics built on epoll (through mio).
//!
//! # How an operation moves
//!
//! ```text
//!  submit ──┬─ Nop, ReadAt, WriteAt, Fsync, Shutdown, Close ──> deferred queue ──┐
//!           │                                                  (run at next park)│
//!           ├─ Timeout ──> timer set (park sleeps no longer than the earliest) ──┤
//!           │                                                                    │
//!           └─ Recv, Accept (read side) / Send, Writev, Connect (write side):    │
//!                fd's queue for that side empty? try the syscall now            │
//!                  done ──────────────────────────────────────────────────────> completion
//!                  EAGAIN / EINPROGRESS ──> fd's read or write queue (FIFO)      │    stored
//!                                           register fd with epoll (once)        │      │
//!                                           on an edge: retry front to back ─────┘      │
//!                                           until EAGAIN                                │
//!  poll_op: hands out the stored completion (never inline from submit), or stores    <──┘
//!           the waker; park wakes wakers of new completions after processing events.
//! ```
//!
//! Every system call happens inside a driver method (`submit`, `park`, `cancel`); none is in
//! progress between calls. So a cancelled operation is simply removed: if its system call has
//! not run, the kernel never saw its pointers; if it has, it is over. The keep-alive is
//! dropped inside `cancel` (and nothing waits for a later completion, unlike io_uring).
//!
//! # File descriptors
//!
//! Fds belong to the caller. The first socket operation on an fd makes it non-blocking
//! (`O_NONBLOCK` is set if missing: the driver must never block the core in `recv`/`send`/
//! `accept`/`connect`), which the caller will observe on the fd afterwards. An fd is registered
//! with epoll (edge-triggered, readable and writable, token = fd) the first time an operation
//! on it would block, and stays registered until a `Close` operation or
//! [`MioDriver::release_fd`]. **An fd the driver has seen must be closed through `Close` (or
//! released with `release_fd` before closing it elsewhere)**: otherwise the driver's table
//! outlives the fd and a new fd with the same number would be believed registered.
//! Fds epoll refuses (regular files) are treated as always ready: their operations run at the
//! next park, blocking the core for as long as the file system takes, like positioned file I/O.
//!
//! # Semantics worth knowing
//!
//! * Operations on one fd in one direction complete in submission order (per-fd FIFO queues);
//!   a later `recv` never gets bytes ahead of an earlier one. A multishot accept at the head
//!   of a listener's queue keeps it: single accepts queued behind it wait until it ends.
//! * Deferred operations (`Shutdown`, `Close`, file I/O) are not ordered against readiness
//!   operations still waiting on the same fd: await a send before shutting the socket down.
//! * `Close` deregisters the fd, fails the operations still waiting on it with
//!   [`ErrorKind::Canceled`] (`ECANCELED`), then closes it.
//! * Cancelling drops the keep-alive before `cancel` returns. A `Close` not yet run still
//!   closes; fds accepted for a cancelled accept and not yet handed out are closed.
//! * A multishot accept keeps accepting while its completions are not consumed (no
//!   backpressure beyond memory), as io_uring's does with a large completion queue.
//! * Stream operations on a non-socket fd (a pipe) fall back from `recv`/`send`/`sendmsg` to
//!   `read`/`write`/`writev` after the first ENOTSOCK.
//! * Buffer pools are emulated: `create_pool` allocates the buffers and a free list;
//!   `RecvPool` is a read-side queue entry that, on each readiness edge, `recv`s into free
//!   buffers (one completion with `more` each) until EAGAIN. It stops early when its owner
//!   holds 32 buffers or the pool is empty; then, since no new edge will come for data already
//!   there, the fd is driven again at a park once buffers come back (`retry_fds`). A paused
//!   receive has a hold mark queued behind its completions, where the owner's poll applies
//!   the hold-limit rule of `seastar_hal::io::POOL_HOLD_LIMIT` (the error, or a wait).

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use seastar_hal::io::{
    register_waker, Completion, Fd, IoDriver, IoSlice, OpId, PoolId, RawOp, SendBufRest, SendBufs,
    SendStatus, Shutdown, COMPLETION_BUFFER,
};
use seastar_hal::{ErrorKind, Instant, IoError};

use crate::error::io_error;
use crate::sys::{self, BufOp, Errno, PoolMem, Via};
use crate::unpark::Shared;

/// The token of the cross-thread waker; fds use their own number (always `< i32::MAX`).
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);

/// How many readiness events one `epoll_wait` returns at most. More stay queued in the kernel
/// for the next park.
const EVENTS_CAPACITY: usize = 256;

/// Most buffers one pooled receive may hold (completions not polled plus buffers polled and
/// not released) before the driver stops receiving for it; it resumes at half. Same bound as
/// the io_uring driver.
const POOL_HOLD_LIMIT: u32 = seastar_hal::io::POOL_HOLD_LIMIT;

/// Counters of what a driver did, for tests and metrics. A snapshot; see
/// [`MioDriver::stats`] and [`crate::MioPlatform::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MioStats {
    /// Calls to `Platform::park`.
    pub parks: u64,
    /// Calls to `epoll_wait` (one per park).
    pub polls: u64,
    /// Every other system call the driver made: the I/O calls themselves (`recv`, `send`,
    /// `sendmsg`/`writev`, `accept4`, `connect`, `getsockopt`, `pread`/`pwrite`, `fsync`,
    /// `shutdown`, `close`) and their bookkeeping (`fcntl`, `epoll_ctl`).
    pub io_syscalls: u64,
    /// Times an attempt found the fd not ready (EAGAIN/EINPROGRESS) and the operation had to
    /// wait for readiness.
    pub would_block: u64,
    /// Operations submitted.
    pub submitted: u64,
    /// Completions produced (each shot of a multishot operation counts).
    pub completed: u64,
    /// Operations cancelled before their final completion was handed out.
    pub cancelled: u64,
    /// Eventfd writes made by unparkers because the core was parked (filled in by
    /// [`crate::MioPlatform::stats`]; zero from [`MioDriver::stats`]).
    pub unpark_wakes: u64,
    /// Buffers in all emulated pools of this core.
    pub pool_buffers: u64,
    /// Of those, buffers free (not held by a receive's owner or queued for one).
    pub pool_buffers_free: u64,
    /// Times a pooled receive found its pool empty (resumed once a buffer came back).
    pub pool_empty: u64,
    /// Times a pooled receive stopped because its owner held too many buffers.
    pub pool_pauses: u64,
}

impl MioStats {
    /// System calls made by the core itself: `polls + io_syscalls`.
    pub fn syscalls(&self) -> u64 {
        self.polls + self.io_syscalls
    }
}

/// The per-core readiness driver. Owned by [`crate::MioPlatform`]; reach it with
/// `Platform::io`. Not `Send`: it belongs to the thread of its core.
pub struct MioDriver {
    st: RefCell<State>,
    /// One core, one thread: the wakers and raw pointers it holds are that thread's business.
    _not_send: PhantomData<*const ()>,
}

impl Drop for MioDriver {
    /// Finish the detached sends still waiting for the socket: their buffers are released and
    /// their status learns that they were cut short (`Canceled`), as on io_uring, so an owner
    /// that outlives the driver sees no send in flight forever.
    fn drop(&mut self) {
        let st = self.st.get_mut();
        let cut: Vec<Detached> = st
            .slots
            .iter_mut()
            .filter_map(|slot| slot.op.as_mut()?.detached.take())
            .collect();
        for d in cut {
            st.finish_detached(d, Err(IoError::new(ErrorKind::Canceled)));
        }
        // Wakers and owner-less statuses drop here, with no borrow of the state held.
        drop((
            std::mem::take(&mut st.wake),
            std::mem::take(&mut st.drop_later),
        ));
    }
}

impl fmt::Debug for MioDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("MioDriver");
        match self.st.try_borrow() {
            Ok(st) => d
                .field("in_flight", &st.live)
                .field("fds", &st.fds.len())
                .field("timers", &st.timers.len())
                .field("stats", &st.stats),
            Err(_) => d.field("state", &"<borrowed>"),
        };
        d.finish()
    }
}

/// Which readiness an operation waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Read,
    Write,
}

/// What an operation does.
#[derive(Debug)]
enum Kind {
    Nop,
    Timeout(Instant),
    Accept {
        fd: Fd,
        multishot: bool,
    },
    Connect {
        fd: Fd,
        addr: SocketAddr,
    },
    Buf(BufOp),
    /// Emulated multishot receive into buffers of a pool.
    RecvPool {
        fd: Fd,
        pool: u16,
    },
    Fsync {
        fd: Fd,
        datasync: bool,
    },
    Shutdown {
        fd: Fd,
        how: Shutdown,
    },
    Close {
        fd: Fd,
    },
}

/// Where an operation currently is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// In the deferred queue: runs at the next park.
    Deferred,
    /// In the timer set.
    Timer(Instant),
    /// In `fd`'s queue for `Side`.
    Fd(Fd, Side),
    /// Its final completion is stored (or being stored): nothing more will happen.
    Done,
}

#[derive(Debug)]
struct OpState {
    kind: Kind,
    wait: Wait,
    /// A `Connect` whose `connect()` returned EINPROGRESS: the next writable edge ends it.
    connecting: bool,
    /// Completions not yet handed out, oldest first. At most one for single-shot ops.
    completions: VecDeque<Completion>,
    waker: Option<Waker>,
    /// Pooled receive: buffers held (queued completions plus handed out, not released).
    held: u32,
    /// Pooled receive: stopped at the hold limit, until `held` is down to half of it; while
    /// set, a [`Completion::HOLD_MARK`] is queued behind its completions.
    paused: bool,
    /// A detached send: its buffers and whom to tell. Nobody polls it: the driver finishes it
    /// with its final completion.
    detached: Option<Detached>,
}

/// What a detached send ([`IoDriver::send_detached`]) keeps in its slot, next to the
/// `BufOp` that points into it.
#[derive(Debug)]
struct Detached {
    bufs: SendBufs,
    /// A gather's slices (empty for one buffer), pointed into by the `BufOp`.
    #[allow(dead_code)] // read through the `BufOp`'s raw pointer
    iov: Vec<IoSlice>,
    status: Rc<SendStatus>,
    len: usize,
}

#[derive(Debug)]
struct Slot {
    /// Bumped each time the slot is freed, so a stale `OpId` never matches a new op.
    generation: u32,
    op: Option<OpState>,
}

/// What the driver knows about one fd.
#[derive(Debug, Default)]
struct FdState {
    /// `O_NONBLOCK` is known to be set.
    nonblocking: bool,
    /// Registered with epoll.
    registered: bool,
    /// epoll refused the fd (EPERM: a regular file): it is always ready.
    always_ready: bool,
    /// The socket calls said ENOTSOCK (a pipe): use `read`/`write`/`writev`.
    not_socket: bool,
    /// Operations waiting for readability / writability, in submission order.
    read_q: VecDeque<OpId>,
    write_q: VecDeque<OpId>,
}

impl FdState {
    fn queue(&mut self, side: Side) -> &mut VecDeque<OpId> {
        match side {
            Side::Read => &mut self.read_q,
            Side::Write => &mut self.write_q,
        }
    }
}

/// The outcome of one attempt at an operation's system call.
enum Step {
    /// The final completion is stored.
    Finished,
    /// A multishot shot is stored; try again.
    Again,
    /// Not ready (EAGAIN / connection in progress): keep waiting.
    Blocked,
}

struct State {
    poll: mio::Poll,
    events: Events,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Live operations (`in_flight`).
    live: usize,
    fds: HashMap<Fd, FdState>,
    /// (deadline, raw op id), earliest first.
    timers: BTreeSet<(Instant, u64)>,
    /// Operations to run at the next park. Cancelled entries are skipped lazily (ids carry a
    /// generation, so a reused slot does not match).
    deferred: VecDeque<OpId>,
    /// Wakers of new completions, woken after the state borrow is released.
    wake: Vec<Waker>,
    /// Scratch for (fd, readable, writable) of the current event batch.
    ready: Vec<(Fd, bool, bool)>,
    stats: MioStats,
    /// Emulated buffer pools, by `PoolId`.
    pools: Vec<PoolMem>,
    /// Per pool, per buffer: the pooled receive that holds it (for back-pressure accounting).
    owners: Vec<Vec<OpId>>,
    /// Read queues to drive at the next park without waiting for an edge: a pooled receive at
    /// their front stopped (back-pressure or no free buffer) before seeing EAGAIN, so epoll
    /// will not report the data already there.
    retry_fds: Vec<Fd>,
    /// Read queues whose pooled receive found no free buffer: retried when one comes back.
    starved_fds: Vec<Fd>,
    /// What finished detached sends leave to drop after the state borrow (their drop may
    /// call back into the driver).
    drop_later: Vec<Box<dyn Any>>,
}

impl MioDriver {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(MioDriver {
            st: RefCell::new(State {
                poll: mio::Poll::new()?,
                events: Events::with_capacity(EVENTS_CAPACITY),
                slots: Vec::new(),
                free: Vec::new(),
                live: 0,
                fds: HashMap::new(),
                timers: BTreeSet::new(),
                deferred: VecDeque::new(),
                wake: Vec::new(),
                ready: Vec::new(),
                stats: MioStats::default(),
                pools: Vec::new(),
                owners: Vec::new(),
                retry_fds: Vec::new(),
                starved_fds: Vec::new(),
                drop_later: Vec::new(),
            }),
            _not_send: PhantomData,
        })
    }

    /// A waker that interrupts this driver's `epoll_wait` from another thread.
    pub(crate) fn new_waker(&self) -> std::io::Result<mio::Waker> {
        mio::Waker::new(self.st.borrow().poll.registry(), WAKER_TOKEN)
    }

    /// What the driver has done so far.
    pub fn stats(&self) -> MioStats {
        let st = self.st.borrow();
        let mut s = st.stats;
        for p in &st.pools {
            s.pool_buffers += p.count() as u64;
            s.pool_buffers_free += p.free_count() as u64;
        }
        s
    }

    /// Forget `fd`: deregister it from epoll and fail the operations still waiting on it with
    /// [`ErrorKind::Canceled`]. Call this before closing an fd the driver has seen by any
    /// other means than a `Close` operation (see the module docs). Does not close `fd`.
    pub fn release_fd(&self, fd: Fd) {
        self.with_state(|st| st.forget_fd(fd));
    }

    /// Run `f` on the state, then wake the wakers it collected, outside the borrow (a waker
    /// may call back into the driver).
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (r, mut wakers, later) = {
            let mut st = self.st.borrow_mut();
            let r = f(&mut st);
            let later = if st.drop_later.is_empty() {
                Vec::new()
            } else {
                std::mem::take(&mut st.drop_later)
            };
            (r, std::mem::take(&mut st.wake), later)
        };
        for w in wakers.drain(..) {
            w.wake();
        }
        drop(later);
        // Give the (now empty) allocation back for the next round.
        let mut st = self.st.borrow_mut();
        if st.wake.is_empty() {
            st.wake = wakers;
        }
        r
    }

    /// The body of `Platform::park`: run deferred work, wait for readiness no longer than
    /// `deadline` and the earliest timer, perform what became possible, fire due timers,
    /// wake wakers.
    pub(crate) fn park(&self, deadline: Option<Instant>, unpark: &Shared) {
        self.with_state(|st| {
            st.stats.parks += 1;
            let completed_before = st.stats.completed;
            st.run_deferred();
            st.run_retries();
            let now = Instant::from_nanos(sys::monotonic_nanos());
            let mut timeout = if st.stats.completed != completed_before || unpark.is_notified() {
                // Work was done (or an unpark is pending): collect readiness, do not sleep.
                Some(Duration::ZERO)
            } else {
                let timer = st.timers.first().map(|&(t, _)| t);
                let wake_at = match (deadline, timer) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                wake_at.map(|t| t.saturating_duration_since(now))
            };
            let blocking = timeout != Some(Duration::ZERO);
            if blocking && !unpark.begin_park() {
                timeout = Some(Duration::ZERO);
            }
            let State { poll, events, .. } = st;
            let res = poll.poll(events, timeout);
            if blocking {
                unpark.end_park();
            } else {
                unpark.consume();
            }
            st.stats.polls += 1;
            match res {
                Ok(()) => {}
                // A signal: a spurious return, which the contract allows.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // epoll_wait fails otherwise only on a broken epoll fd or bad arguments, both
                // bugs of this crate; `park` has no way to report an error.
                Err(e) => panic!("epoll_wait failed: {e}"),
            }
            st.dispatch_events();
            st.fire_timers(Instant::from_nanos(sys::monotonic_nanos()));
        });
    }
}

impl State {
    // ---- slots ----------------------------------------------------------------------------

    fn alloc(&mut self, kind: Kind, wait: Wait) -> OpId {
        let op = OpState {
            kind,
            wait,
            connecting: false,
            completions: VecDeque::new(),
            waker: None,
            held: 0,
            paused: false,
            detached: None,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize].op = Some(op);
                i
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    op: Some(op),
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.live += 1;
        OpId((u64::from(self.slots[index as usize].generation) << 32) | u64::from(index))
    }

    fn op_mut(&mut self, id: OpId) -> Option<&mut OpState> {
        slot_op(&mut self.slots, id)
    }

    /// Release the id and return the operation (dropping its `BufOp` is up to the caller).
    fn take(&mut self, id: OpId) -> Option<OpState> {
        let (index, generation) = split(id);
        let slot = self.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let op = slot.op.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index as u32);
        self.live -= 1;
        Some(op)
    }

    /// Store a completion for `id` and schedule its waker; a detached send is finished here
    /// instead (its slot freed, its buffers released, its owner told).
    fn complete(&mut self, id: OpId, completion: Completion) {
        let Some(op) = self.op_mut(id) else { return };
        if !completion.more && op.detached.is_some() {
            self.stats.completed += 1;
            let Some(mut op) = self.take(id) else { return };
            let detached = op.detached.take();
            // The `BufOp` (raw pointers) goes before the buffers it points into.
            drop(op);
            if let Some(d) = detached {
                self.finish_detached(d, completion.result);
            }
            return;
        }
        if !completion.more {
            op.wait = Wait::Done;
        }
        op.completions.push_back(completion);
        let waker = op.waker.take();
        self.stats.completed += 1;
        if let Some(w) = waker {
            self.wake.push(w);
        }
    }

    fn finish_detached(&mut self, d: Detached, result: Result<u32, IoError>) {
        let release = |st: &mut State, b: seastar_hal::io::SendBuf| match b.finish() {
            SendBufRest::Done => {}
            SendBufRest::Pool(pool, bid) => st.release_buffer(pool, bid),
            SendBufRest::Drop(b) => st.drop_later.push(b),
        };
        match d.bufs {
            SendBufs::One(b) => release(self, b),
            SendBufs::Gather(mut v) => {
                v.drain(..).for_each(|b| release(self, b));
                // The owner's next gather reuses the list instead of allocating one.
                d.status.recycle(v);
            }
        }
        self.wake.extend(d.status.finished(result, d.len));
        if Rc::strong_count(&d.status) == 1 {
            // The owner is gone: a waker it may still hold drops after the borrow.
            self.drop_later.push(Box::new(d.status));
        }
    }

    /// Start a detached send: `b` points into `d`, which the slot keeps until it is finished.
    fn submit_detached(&mut self, b: BufOp, d: Detached) {
        self.stats.submitted += 1;
        let fd = b.fd();
        let id = self.alloc(Kind::Buf(b), Wait::Done);
        if let Some(op) = self.op_mut(id) {
            op.detached = Some(d);
        }
        self.enqueue(id, fd, Side::Write);
    }

    fn finish(&mut self, id: OpId, result: Result<u32, IoError>) {
        self.complete(id, Completion::done(result));
    }

    fn fail(&mut self, id: OpId, errno: Errno) {
        self.finish(id, Err(io_error(errno)));
    }

    // ---- submission -----------------------------------------------------------------------

    fn submit(&mut self, kind: Kind) -> OpId {
        self.stats.submitted += 1;
        match kind {
            Kind::Timeout(deadline) => {
                let id = self.alloc(kind, Wait::Timer(deadline));
                self.timers.insert((deadline, id.0));
                id
            }
            Kind::Connect { fd, addr } => {
                let id = self.alloc(kind, Wait::Done);
                self.start_connect(id, fd, &addr);
                id
            }
            Kind::Accept { fd, .. } | Kind::RecvPool { fd, .. } => {
                let id = self.alloc(kind, Wait::Done);
                self.enqueue(id, fd, Side::Read);
                id
            }
            Kind::Buf(ref b) if b.side_is_read().is_some() => {
                let fd = b.fd();
                let side = if b.side_is_read() == Some(true) {
                    Side::Read
                } else {
                    Side::Write
                };
                let id = self.alloc(kind, Wait::Done);
                self.enqueue(id, fd, side);
                id
            }
            // Nop, positioned file I/O, fsync, shutdown, close: at the next park.
            _ => {
                let id = self.alloc(kind, Wait::Deferred);
                self.deferred.push_back(id);
                id
            }
        }
    }

    /// Make sure `fd` is non-blocking (once per fd).
    fn prepare_fd(&mut self, fd: Fd) -> Result<(), Errno> {
        if fd < 0 {
            return Err(libc::EBADF);
        }
        if self.fds.get(&fd).is_some_and(|f| f.nonblocking) {
            return Ok(());
        }
        match sys::set_nonblocking(fd) {
            Ok(calls) => {
                self.stats.io_syscalls += calls;
                self.fds.entry(fd).or_default().nonblocking = true;
                Ok(())
            }
            Err(e) => {
                self.stats.io_syscalls += 1;
                Err(e)
            }
        }
    }

    /// Register `fd` with epoll if it is not yet. EPERM (a regular file) marks it always
    /// ready instead.
    fn ensure_registered(&mut self, fd: Fd) -> Result<(), Errno> {
        let Some(fs) = self.fds.get_mut(&fd) else {
            return Err(libc::EBADF);
        };
        if fs.registered || fs.always_ready {
            return Ok(());
        }
        self.stats.io_syscalls += 1;
        let res = self.poll.registry().register(
            &mut SourceFd(&fd),
            Token(fd as usize),
            Interest::READABLE | Interest::WRITABLE,
        );
        match res {
            Ok(()) => {
                fs.registered = true;
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                fs.always_ready = true;
                Ok(())
            }
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    /// Queue a readiness operation on `fd`, trying it at once if nothing is ahead of it.
    fn enqueue(&mut self, id: OpId, fd: Fd, side: Side) {
        if let Err(e) = self.prepare_fd(fd) {
            return self.fail(id, e);
        }
        let queue_empty = self
            .fds
            .get_mut(&fd)
            .is_none_or(|fs| fs.queue(side).is_empty());
        if queue_empty {
            loop {
                match self.attempt(id, fd) {
                    Step::Finished => return,
                    Step::Again => continue,
                    Step::Blocked => break,
                }
            }
            self.stats.would_block += 1;
        }
        self.park_on_fd(id, fd, side);
    }

    /// Put `id` at the back of `fd`'s queue for `side` and make sure epoll will report it.
    fn park_on_fd(&mut self, id: OpId, fd: Fd, side: Side) {
        if let Err(e) = self.ensure_registered(fd) {
            return self.fail(id, e);
        }
        let Some(fs) = self.fds.get_mut(&fd) else {
            return self.fail(id, libc::EBADF);
        };
        if fs.always_ready {
            // Not pollable: retry at the next park.
            self.deferred.push_back(id);
            if let Some(op) = self.op_mut(id) {
                op.wait = Wait::Deferred;
            }
            return;
        }
        fs.queue(side).push_back(id);
        if let Some(op) = self.op_mut(id) {
            op.wait = Wait::Fd(fd, side);
        }
    }

    fn start_connect(&mut self, id: OpId, fd: Fd, addr: &SocketAddr) {
        if let Err(e) = self.prepare_fd(fd) {
            return self.fail(id, e);
        }
        self.stats.io_syscalls += 1;
        match sys::connect(fd, addr) {
            Ok(()) => self.finish(id, Ok(0)),
            // EINTR on a non-blocking connect: the attempt continues asynchronously.
            Err(libc::EINPROGRESS) | Err(libc::EINTR) => {
                self.stats.would_block += 1;
                if let Some(op) = self.op_mut(id) {
                    op.connecting = true;
                }
                self.park_on_fd(id, fd, Side::Write);
            }
            Err(e) => self.fail(id, e),
        }
    }

    /// Make `id`'s system call once (retrying EINTR), storing a completion unless it would
    /// block.
    fn attempt(&mut self, id: OpId, fd: Fd) -> Step {
        let not_socket = self.fds.get(&fd).is_some_and(|f| f.not_socket);
        // Borrow only `slots` while the op's kind is in use, so the counters can be updated
        // afterwards.
        let Some(op) = slot_op(&mut self.slots, id) else {
            return Step::Finished;
        };
        let mut calls = 0u64;
        let mut switched_to_file_calls = false;
        let mut shot = false;
        let mut close = None;
        let mut result: Result<u32, Errno> = match &mut op.kind {
            Kind::Buf(b) => perform_buf(b, not_socket, &mut calls, &mut switched_to_file_calls),
            Kind::Accept { fd, multishot } => {
                let res = loop {
                    calls += 1;
                    match sys::accept(*fd) {
                        // The peer gave up before we accepted: not our error, try the next.
                        Err(libc::EINTR) | Err(libc::ECONNABORTED) => continue,
                        other => break other,
                    }
                };
                shot = *multishot && res.is_ok();
                res.map(|new_fd| new_fd as u32)
            }
            Kind::Connect { fd, .. } if op.connecting => {
                calls += 1;
                match sys::take_socket_error(*fd) {
                    Ok(0) => Ok(0),
                    Ok(err) | Err(err) => Err(err),
                }
            }
            // `start_connect` sets `connecting` before queueing; never reached otherwise.
            Kind::Connect { .. } => Err(libc::EINVAL),
            Kind::Nop => Ok(0),
            Kind::Fsync { fd, datasync } => {
                calls += 1;
                sys::fsync(*fd, *datasync).map(|()| 0)
            }
            Kind::Shutdown { fd, how } => {
                calls += 1;
                sys::shutdown(*fd, *how).map(|()| 0)
            }
            Kind::Close { fd } => {
                close = Some(*fd);
                Ok(0)
            }
            Kind::Timeout(_) => return Step::Blocked,
            Kind::RecvPool { fd, pool } => {
                let (fd, pool) = (*fd, *pool);
                return self.attempt_pooled(id, fd, pool, not_socket);
            }
        };
        self.stats.io_syscalls += calls;
        if switched_to_file_calls {
            if let Some(f) = self.fds.get_mut(&fd) {
                f.not_socket = true;
            }
        }
        if let Some(cfd) = close {
            // Deregister first, and fail the ops still queued on the fd: they would never be
            // woken again.
            self.forget_fd(cfd);
            self.stats.io_syscalls += 1;
            result = sys::close(cfd).map(|()| 0);
        }
        match result {
            Ok(n) if shot => {
                let more = Completion {
                    result: Ok(n),
                    flags: 0,
                    more: true,
                };
                self.complete(id, more);
                Step::Again
            }
            Err(libc::EAGAIN) => Step::Blocked,
            Ok(n) => {
                self.finish(id, Ok(n));
                Step::Finished
            }
            Err(e) => {
                self.fail(id, e);
                Step::Finished
            }
        }
    }

    /// One receive of an emulated pooled receive, into a free buffer of its pool. Stops
    /// (Blocked, fd remembered for a retry without an edge) at the hold limit or when the pool
    /// is empty.
    fn attempt_pooled(&mut self, id: OpId, fd: Fd, pool: u16, not_socket: bool) -> Step {
        let Some(op) = slot_op(&mut self.slots, id) else {
            return Step::Finished;
        };
        if op.paused || op.held >= POOL_HOLD_LIMIT {
            // Resumed (retry_fds) when the owner releases enough.
            if !op.paused {
                op.paused = true;
                self.stats.pool_pauses += 1;
                self.queue_hold_mark(id);
            }
            return Step::Blocked;
        }
        let Some(mem) = self.pools.get_mut(usize::from(pool)) else {
            self.fail(id, libc::EINVAL);
            return Step::Finished;
        };
        let via = if not_socket { Via::File } else { Via::Socket };
        let mut res;
        loop {
            self.stats.io_syscalls += 1;
            res = mem.recv_into_free(fd, via);
            match res {
                Err(libc::EINTR) => continue,
                Err(libc::ENOTSOCK) if via == Via::Socket => {
                    if let Some(f) = self.fds.get_mut(&fd) {
                        f.not_socket = true;
                    }
                    return self.attempt_pooled(id, fd, pool, true);
                }
                _ => break,
            }
        }
        match res {
            Ok(Some((bid, n))) => {
                if let Some(o) = self
                    .owners
                    .get_mut(usize::from(pool))
                    .and_then(|o| o.get_mut(usize::from(bid)))
                {
                    *o = id;
                }
                let mut paused_now = false;
                if let Some(op) = self.op_mut(id) {
                    op.held += 1;
                    // Paused as it reaches the limit (the next attempt stops).
                    paused_now = op.held >= POOL_HOLD_LIMIT && !op.paused;
                    op.paused |= paused_now;
                }
                self.complete(
                    id,
                    Completion {
                        result: Ok(n.min(u32::MAX as usize) as u32),
                        flags: COMPLETION_BUFFER | (u32::from(bid) << 16),
                        more: true,
                    },
                );
                if paused_now {
                    self.stats.pool_pauses += 1;
                    self.queue_hold_mark(id);
                }
                Step::Again
            }
            Ok(None) => {
                self.stats.pool_empty += 1;
                if !self.starved_fds.contains(&fd) {
                    self.starved_fds.push(fd);
                }
                Step::Blocked
            }
            Err(libc::EAGAIN) => Step::Blocked,
            Err(0) => {
                self.finish(id, Ok(0));
                Step::Finished
            }
            Err(e) => {
                self.fail(id, e);
                Step::Finished
            }
        }
    }

    /// Drive the read queues that stopped without EAGAIN (see `retry_fds`).
    fn run_retries(&mut self) {
        for fd in std::mem::take(&mut self.retry_fds) {
            self.drive_queue(fd, Side::Read);
        }
    }

    fn create_pool(&mut self, count: u16, size: u32) -> Result<PoolId, IoError> {
        let id = u16::try_from(self.pools.len()).map_err(|_| io_error(libc::ENOMEM))?;
        let mem = PoolMem::new(count, size).map_err(io_error)?;
        self.pools.push(mem);
        self.owners.push(vec![OpId(u64::MAX); usize::from(count)]);
        Ok(PoolId(id))
    }

    fn release_buffer(&mut self, pool: PoolId, bid: u16) {
        let Some(mem) = self.pools.get_mut(usize::from(pool.0)) else {
            return;
        };
        if !mem.release(bid) {
            return;
        }
        // Receives that found the pool empty may go on now.
        for fd in self.starved_fds.drain(..) {
            if !self.retry_fds.contains(&fd) {
                self.retry_fds.push(fd);
            }
        }
        let owner = self
            .owners
            .get(usize::from(pool.0))
            .and_then(|o| o.get(usize::from(bid)))
            .copied();
        let Some(owner) = owner else { return };
        let Some(op) = self.op_mut(owner) else { return };
        op.held = op.held.saturating_sub(1);
        if op.paused && op.held <= POOL_HOLD_LIMIT / 2 {
            op.paused = false;
            if let (Kind::RecvPool { fd, .. }, Wait::Fd(..)) = (&op.kind, op.wait) {
                let fd = *fd;
                if !self.retry_fds.contains(&fd) {
                    self.retry_fds.push(fd);
                }
            }
        }
    }

    // ---- readiness and deferred work ------------------------------------------------------

    /// Retry `fd`'s queue for `side` from the front until one would block (edge-triggered:
    /// the next edge only comes after we saw EAGAIN) or the queue is empty.
    fn drive_queue(&mut self, fd: Fd, side: Side) {
        loop {
            let Some(&id) = self.fds.get_mut(&fd).and_then(|f| f.queue(side).front()) else {
                return;
            };
            match self.attempt(id, fd) {
                Step::Again => continue,
                Step::Blocked => return,
                Step::Finished => {
                    // `attempt` may have closed and forgotten fd (never for these kinds, but
                    // stay robust) — pop only if it is still the front.
                    if let Some(f) = self.fds.get_mut(&fd) {
                        let q = f.queue(side);
                        if q.front() == Some(&id) {
                            q.pop_front();
                        }
                    }
                }
            }
        }
    }

    fn dispatch_events(&mut self) {
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        for ev in self.events.iter() {
            if ev.token() == WAKER_TOKEN {
                continue;
            }
            let error = ev.is_error();
            ready.push((
                ev.token().0 as Fd,
                error || ev.is_readable() || ev.is_read_closed(),
                error || ev.is_writable() || ev.is_write_closed(),
            ));
        }
        for &(fd, readable, writable) in &ready {
            if readable {
                self.drive_queue(fd, Side::Read);
            }
            if writable {
                self.drive_queue(fd, Side::Write);
            }
        }
        self.ready = ready;
    }

    /// Run what was deferred to this park (ops queued during it wait for the next one).
    fn run_deferred(&mut self) {
        for _ in 0..self.deferred.len() {
            let Some(id) = self.deferred.pop_front() else {
                break;
            };
            let Some(op) = self.op_mut(id) else {
                continue; // cancelled
            };
            if op.wait != Wait::Deferred {
                continue;
            }
            let fd = match &op.kind {
                Kind::Buf(b) => b.fd(),
                Kind::Accept { fd, .. } => *fd,
                _ => -1,
            };
            op.wait = Wait::Done;
            loop {
                match self.attempt(id, fd) {
                    Step::Again => continue,
                    Step::Finished => break,
                    Step::Blocked => {
                        // An always-ready fd said EAGAIN after all: try again next park.
                        if let Some(op) = self.op_mut(id) {
                            op.wait = Wait::Deferred;
                        }
                        self.deferred.push_back(id);
                        break;
                    }
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(deadline, raw)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            self.finish(OpId(raw), Ok(0));
        }
    }

    /// Deregister `fd` and fail its waiting operations with `Canceled`.
    fn forget_fd(&mut self, fd: Fd) {
        let Some(fs) = self.fds.remove(&fd) else {
            return;
        };
        if fs.registered {
            self.stats.io_syscalls += 1;
            // Fails only if the fd is already closed (then epoll dropped it by itself).
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        for id in fs.read_q.into_iter().chain(fs.write_q) {
            self.fail(id, libc::ECANCELED);
        }
    }

    // ---- polling and cancellation ---------------------------------------------------------

    fn poll_op(&mut self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
        let Some(op) = self.op_mut(id) else {
            return Poll::Ready(Completion::done(Err(IoError::new(ErrorKind::InvalidInput))));
        };
        match op.completions.pop_front() {
            Some(c) if c.more => Poll::Ready(c),
            // A paused pooled receive's turn for the hold-limit rule (out of line).
            Some(c) if c.is_hold_mark() => self.poll_at_hold_mark(id, cx),
            Some(c) => {
                // Final: release the id. Dropping the op drops its `BufOp` (raw pointers) now,
                // before the caller gets its buffers back.
                drop(self.take(id));
                Poll::Ready(c)
            }
            None => {
                drop(register_waker(&mut op.waker, cx.waker()));
                Poll::Pending
            }
        }
    }

    /// Queue the [`Completion::HOLD_MARK`] of pooled receive `id`, just paused, behind its
    /// completions (waking a waiting owner, whose poll the rule may now answer).
    #[cold]
    fn queue_hold_mark(&mut self, id: OpId) {
        let Some(op) = self.op_mut(id) else { return };
        // One mark is enough (an earlier pause's may still be queued).
        if !op.completions.iter().any(Completion::is_hold_mark) {
            op.completions.push_back(Completion::HOLD_MARK);
        }
        if let Some(w) = op.waker.take() {
            self.wake.push(w);
        }
    }

    /// `poll_op` of a pooled receive that popped its [`Completion::HOLD_MARK`]. Completions queued
    /// behind the mark go first (the mark goes back behind them while the receive is paused). With
    /// none: a receive no longer paused drops the mark and waits; a paused one keeps it and fails
    /// with the hold-limit error if only its owner can resume it, else waits.
    #[cold]
    #[inline(never)]
    fn poll_at_hold_mark(&mut self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
        let Some(op) = self.op_mut(id) else {
            return Poll::Ready(Completion::done(Err(IoError::new(ErrorKind::InvalidInput))));
        };
        // Another mark right behind (none is queued twice, but stay safe): one is enough.
        while op.completions.front().is_some_and(Completion::is_hold_mark) {
            op.completions.pop_front();
        }
        if let Some(c) = op.completions.pop_front() {
            if !c.more {
                // The real final completion (end of stream, an error): release the id.
                drop(self.take(id));
            } else if op.paused {
                op.completions.push_back(Completion::HOLD_MARK);
            }
            return Poll::Ready(c);
        }
        if op.paused {
            op.completions.push_back(Completion::HOLD_MARK);
            if self.only_owner_can_resume(id) {
                return Poll::Ready(Completion::hold_limit());
            }
        }
        let Some(op) = self.op_mut(id) else {
            return Poll::Ready(Completion::done(Err(IoError::new(ErrorKind::InvalidInput))));
        };
        drop(register_waker(&mut op.waker, cx.waker()));
        Poll::Pending
    }

    /// The hold-limit rule for pooled receive `id`, paused with nothing queued: whether the
    /// buffers it holds outside unfinished detached sends (which the driver releases itself)
    /// keep it above the resume mark, so that only its owner can resume it. Counts those
    /// buffers by walking the sends in flight: the slow path only, nothing kept per send.
    fn only_owner_can_resume(&mut self, id: OpId) -> bool {
        let Some(op) = slot_op(&mut self.slots, id) else {
            return false;
        };
        let Kind::RecvPool { pool, .. } = op.kind else {
            return false;
        };
        let (paused, held) = (op.paused, op.held);
        let Some(owners) = self.owners.get(usize::from(pool)) else {
            return false;
        };
        let in_sends = self
            .slots
            .iter()
            .filter_map(|slot| slot.op.as_ref()?.detached.as_ref())
            .flat_map(|d| d.bufs.as_slice())
            .filter_map(seastar_hal::io::SendBuf::pool_buffer)
            .filter(|&(p, bid)| p.0 == pool && owners.get(usize::from(bid)) == Some(&id))
            .count();
        seastar_hal::io::only_owner_can_resume(
            paused,
            held,
            u32::try_from(in_sends).unwrap_or(u32::MAX),
        )
    }

    /// Remove `id` everywhere; returns the operation so the caller can drop it (and the
    /// keep-alive) after releasing the state.
    fn cancel(&mut self, id: OpId) -> Option<OpState> {
        let op = self.take(id)?;
        self.stats.cancelled += 1;
        match op.wait {
            Wait::Fd(fd, side) => {
                if let Some(fs) = self.fds.get_mut(&fd) {
                    fs.queue(side).retain(|&q| q != id);
                }
            }
            Wait::Timer(deadline) => {
                self.timers.remove(&(deadline, id.0));
            }
            // Skipped lazily by `run_deferred` (the id no longer resolves).
            Wait::Deferred | Wait::Done => {}
        }
        // A close that has not run yet still runs: it holds no buffer, and leaving the fd
        // open because its closer lost interest would leak it.
        if let (Kind::Close { fd }, Wait::Deferred) = (&op.kind, op.wait) {
            let fd = *fd;
            self.forget_fd(fd);
            self.stats.io_syscalls += 1;
            let _ = sys::close(fd);
        }
        // Buffers of completions nobody will poll go back to the pool, and receives that found
        // it empty may go on.
        if let Kind::RecvPool { pool, .. } = op.kind {
            let mut released = false;
            for c in &op.completions {
                if let (Some(mem), Some(bid)) = (self.pools.get_mut(usize::from(pool)), c.buffer())
                {
                    released |= mem.release(bid);
                }
            }
            if released {
                for fd in self.starved_fds.drain(..) {
                    if !self.retry_fds.contains(&fd) {
                        self.retry_fds.push(fd);
                    }
                }
            }
        }
        // Connections accepted for a consumer that is gone: nobody else can close them.
        if let Kind::Accept { .. } = op.kind {
            for c in &op.completions {
                if let Ok(new_fd) = c.result {
                    self.stats.io_syscalls += 1;
                    let _ = sys::close(new_fd as Fd);
                }
            }
        }
        Some(op)
    }
}

// `submit` is an unsafe trait method: implementing it needs the lint allowed. Its pointers are
// handed to `sys::BufOp`, the only place that dereferences them.
#[allow(unsafe_code)]
impl IoDriver for MioDriver {
    /// Never fails for the operations of this version of the HAL: errors (a bad fd, a refused
    /// connection) are reported through the completion. Unknown future operations are refused
    /// with `Unsupported`.
    unsafe fn submit(&self, op: RawOp) -> Result<OpId, IoError> {
        // SAFETY: the caller guarantees the pointers in `op` per `IoDriver::submit`; the
        // `BufOp` lives in the op's slot and is dropped when the op is finished (final
        // completion handed out by `poll_op`, or `cancel`), before its buffers are released.
        let kind = match unsafe { BufOp::new(op) } {
            Ok(b) => Kind::Buf(b),
            Err(RawOp::Nop) => Kind::Nop,
            Err(RawOp::Timeout { deadline }) => Kind::Timeout(deadline),
            Err(RawOp::Accept { fd, multishot }) => Kind::Accept { fd, multishot },
            Err(RawOp::Connect { fd, addr }) => Kind::Connect { fd, addr },
            Err(RawOp::Fsync { fd, datasync }) => Kind::Fsync { fd, datasync },
            Err(RawOp::Shutdown { fd, how }) => Kind::Shutdown { fd, how },
            Err(RawOp::Close { fd }) => Kind::Close { fd },
            Err(RawOp::RecvPool { fd, pool }) => {
                if usize::from(pool.0) >= self.st.borrow().pools.len() {
                    return Err(IoError::new(ErrorKind::InvalidInput));
                }
                Kind::RecvPool { fd, pool: pool.0 }
            }
            Err(_) => return Err(IoError::new(ErrorKind::Unsupported)),
        };
        Ok(self.with_state(|st| st.submit(kind)))
    }

    fn poll_op(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
        self.with_state(|st| st.poll_op(id, cx))
    }

    fn has_completion(&self, id: OpId) -> bool {
        self.st
            .borrow_mut()
            .op_mut(id)
            .is_none_or(|op| !op.completions.is_empty())
    }

    /// Readiness operations are never in progress between driver calls, so the operation is
    /// removed at once and `keepalive` is dropped before this returns. Exceptions to "nothing
    /// more happens": a `Close` not yet run still closes its fd, and fds accepted for a
    /// cancelled accept but not yet handed out are closed.
    fn cancel(&self, id: OpId, keepalive: Box<dyn Any>) {
        let op = self.with_state(|st| st.cancel(id));
        // The op (and its raw pointers) go first, then the memory they pointed into.
        drop(op);
        drop(keepalive);
    }

    fn in_flight(&self) -> usize {
        self.st.borrow().live
    }

    fn create_pool(&self, count: u16, size: u32) -> Result<PoolId, IoError> {
        self.st.borrow_mut().create_pool(count, size)
    }

    fn pool_buffer(&self, pool: PoolId, bid: u16) -> Option<(*const u8, usize)> {
        self.st.borrow().pools.get(usize::from(pool.0))?.buffer(bid)
    }

    fn release_buffer(&self, pool: PoolId, bid: u16) {
        self.st.borrow_mut().release_buffer(pool, bid);
    }

    /// A whole `Send` (one buffer) or `Writev` (a gather), tried at once like any send; the
    /// slot owns the buffers and slices until the send is finished (all out, failed, or its
    /// fd released with `release_fd`: `Canceled`).
    fn send_detached(
        &self,
        fd: Fd,
        bufs: SendBufs,
        status: &Rc<SendStatus>,
    ) -> Result<(), IoError> {
        let len = bufs.len();
        let mut iov = Vec::new();
        let op = bufs.whole_op(fd, &mut iov);
        // SAFETY: the pointers are into the `SendBuf`s' bytes (memory that stays put while
        // they move, by `SendBuf`'s constructors) and `iov`'s heap array (never resized);
        // both move into the op's slot with the `BufOp`, which is dropped first when the send
        // is finished.
        let Ok(b) = (unsafe { BufOp::new(op) }) else {
            // Unreachable (sends are buffer ops); keep the pool whole anyway.
            for b in bufs.into_vec() {
                if let SendBufRest::Pool(pool, bid) = b.finish() {
                    self.release_buffer(pool, bid);
                }
            }
            return Err(IoError::new(ErrorKind::Unsupported));
        };
        let d = Detached {
            bufs,
            iov,
            status: status.clone(),
            len,
        };
        // Before submitting: the send is tried at once and may finish inside.
        status.started();
        self.with_state(|st| st.submit_detached(b, d));
        Ok(())
    }
}

/// An `OpId` is `generation << 32 | slot index`.
fn split(id: OpId) -> (usize, u32) {
    ((id.0 & 0xffff_ffff) as usize, (id.0 >> 32) as u32)
}

fn slot_op(slots: &mut [Slot], id: OpId) -> Option<&mut OpState> {
    let (index, generation) = split(id);
    let slot = slots.get_mut(index)?;
    if slot.generation != generation {
        return None;
    }
    slot.op.as_mut()
}

/// One buffer operation, retrying EINTR. A stream operation on something that is not a socket
/// (ENOTSOCK: a pipe) is redone with `read`/`write`/`writev`, and the fd remembered as such.
fn perform_buf(
    b: &mut BufOp,
    not_socket: bool,
    calls: &mut u64,
    switched_to_file_calls: &mut bool,
) -> Result<u32, Errno> {
    let mut via = if not_socket { Via::File } else { Via::Socket };
    loop {
        *calls += 1;
        match b.perform(via) {
            Err(libc::EINTR) => continue,
            Err(libc::ENOTSOCK) if via == Via::Socket && b.side_is_read().is_some() => {
                via = Via::File;
                *switched_to_file_calls = true;
            }
            res => return res.map(|n| n.min(u32::MAX as usize) as u32),
        }
    }
}
