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

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::mem;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use io_uring::cqueue;
use seastar_hal::io::{Completion, OpId};
use seastar_hal::{ErrorKind, Instant, IoError};

use crate::config::{Features, UringConfig};
use crate::errno;
use crate::slab::Slab;
use crate::stats::{add, Counters, UringStats};
use crate::sys::{self, ReadBuf, Ring, Sqe, Wait};
use crate::unpark::Shared;

/// `user_data` of the pending eventfd read (never a slab key: slab indices are < 2^31).
const EVENTFD_UD: u64 = u64::MAX;
/// `user_data` of cancel requests, whose own CQEs are ignored.
const CANCEL_UD: u64 = u64::MAX - 1;

/// What the driver must know about an op's CQEs beyond passing them on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// `-ETIME` is the normal expiry: reported as `Ok(0)`.
    Timeout,
    /// Results are descriptors (closed if nobody will see them); multishot re-arms.
    Accept { multishot: bool },
    /// Submitted as `SENDMSG` (for `MSG_NOSIGNAL`); on `ENOTSOCK` re-submitted as `WRITEV`.
    WritevMsg,
    /// Passed through.
    Other,
}

/// An operation translated to an SQE, with the memory it points into that the driver owns.
pub(crate) struct Prepared {
    pub(crate) kind: OpKind,
    pub(crate) sqe: Sqe,
    pub(crate) fallback: Option<Sqe>,
    /// Kernel-visible memory (sockaddr, timespec, msghdr): freed with the slot.
    pub(crate) extras: Option<Box<dyn Any>>,
}

struct OpState {
    kind: OpKind,
    /// Kept to re-arm (multishot accept) while the op is unfinished.
    sqe: Sqe,
    fallback: Option<Sqe>,
    /// Never read: owned so the kernel's pointers into it stay valid until the slot is freed.
    _extras: Option<Box<dyn Any>>,
    waker: Option<Waker>,
    queue: VecDeque<Completion>,
    /// The final CQE has been reaped.
    done: bool,
    /// Given up by its owner: completions are discarded, the slot is freed at the final CQE.
    cancelled: bool,
    keepalive: Option<Box<dyn Any>>,
}

struct Inner {
    ring: Ring,
    ops: Slab<OpState>,
    cqes: Vec<cqueue::Entry>,
    eventfd_read: ReadBuf,
    shutting_down: bool,
}

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

/// Close descriptors in completions nobody will poll.
fn close_queued_fds(op: &mut OpState) {
    if let OpKind::Accept { .. } = op.kind {
        for c in op.queue.drain(..) {
            if let Ok(fd) = c.result {
                sys::close_orphan(fd as i32);
            }
        }
    } else {
        op.queue.clear();
    }
}

impl UringDriver {
    pub(crate) fn new(config: &UringConfig, shared: Arc<Shared>) -> std::io::Result<Self> {
        let ring = Ring::setup(config)?;
        let features = ring.features().clone();
        let driver = UringDriver {
            inner: RefCell::new(Inner {
                ring,
                ops: Slab::new(),
                cqes: Vec::with_capacity(64),
                eventfd_read: ReadBuf::new(),
                shutting_down: false,
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
        self.counters.snapshot(self.shared.writes())
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
        let sqe = p.sqe.clone();
        let state = OpState {
            kind: p.kind,
            sqe: p.sqe,
            fallback: p.fallback,
            _extras: p.extras,
            waker: None,
            queue: VecDeque::new(),
            done: false,
            cancelled: false,
            keepalive: None,
        };
        let Some(key) = inner.ops.insert(state) else {
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

    pub(crate) fn poll_op_impl(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
        // Declared before the borrow so they drop after it: dropping a waker or a slot may run
        // arbitrary code (an executor's task drop) that re-enters the driver.
        let mut old_waker = None;
        let mut released = None;
        let mut inner = self.inner.borrow_mut();
        let invalid = Poll::Ready(Completion::done(Err(IoError::new(ErrorKind::InvalidInput))));
        let Some(op) = inner.ops.get_mut(id.0) else {
            return invalid;
        };
        if op.cancelled {
            // Released by `cancel`; the slot only waits for its final CQE.
            return invalid;
        }
        if let Some(c) = op.queue.pop_front() {
            if !c.more {
                released = inner.ops.remove(id.0);
            }
            drop(inner);
            drop(released);
            return Poll::Ready(c);
        }
        match &op.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => old_waker = op.waker.replace(cx.waker().clone()),
        }
        drop(inner);
        drop(old_waker);
        Poll::Pending
    }

    pub(crate) fn cancel_impl(&self, id: OpId, keepalive: Box<dyn Any>) {
        let mut trash: (Option<Box<dyn Any>>, Option<Waker>, Option<OpState>) = (None, None, None);
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
        close_queued_fds(op);
        trash.1 = op.waker.take();
        if op.done {
            // The final CQE is already reaped: the kernel is done with the buffers.
            trash.2 = inner.ops.remove(id.0);
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

    pub(crate) fn in_flight_impl(&self) -> usize {
        self.inner.borrow().ops.len()
    }

    /// One loop iteration: submit everything queued and wait for a completion, the deadline or
    /// an unpark, in one `io_uring_enter`; then reap every CQE and wake the wakers.
    pub(crate) fn park(&self, deadline: Option<Instant>) {
        add(&self.counters.parks, 1);
        {
            let mut inner = self.inner.borrow_mut();
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
    pub(crate) fn flush(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            if inner.ring.sq_len() > 0 {
                let _ = self.submit_queued(&mut inner);
            }
        }
        self.reap();
    }

    /// Process every visible CQE; wake wakers and drop released slots after the borrow.
    fn reap(&self) {
        let mut wakers = self.wake_scratch.take();
        let mut released: Vec<OpState> = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            let mut cqes = mem::take(&mut inner.cqes);
            inner.ring.drain(&mut cqes);
            for cqe in cqes.drain(..) {
                self.on_cqe(&mut inner, &cqe, &mut wakers, &mut released);
            }
            inner.cqes = cqes;
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
        released: &mut Vec<OpState>,
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
            if !more {
                released.extend(inner.ops.remove(ud));
            }
            return;
        }

        // Re-submissions under the same user_data: the op is not finished, so the memory its
        // SQEs point into is still owned (by the slot or the caller's buffers).
        let resubmit = if op.kind == OpKind::WritevMsg && res == -libc::ENOTSOCK && !more {
            op.kind = OpKind::Other;
            op.fallback.take()
        } else if op.kind == (OpKind::Accept { multishot: true })
            && !more
            && res >= 0
            && !shutting_down
        {
            // Single-shot emulation, or the kernel ended a native multishot (CQ overflow).
            Some(op.sqe.clone())
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
        op.queue.push_back(completion);
        wakers.extend(op.waker.take());
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
                if op.done {
                    close_queued_fds(op);
                    finished.extend(inner.ops.remove(key));
                } else if !op.cancelled {
                    op.cancelled = true;
                    wakers.extend(op.waker.take());
                    let _ = self.push(&mut inner, &Sqe::cancel(key), CANCEL_UD);
                }
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
                if inner.ops.len() == 0 && !inner.eventfd_read.armed() {
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
        // `ReadBuf` leaks itself if its read is still armed.
        let inner = self.inner.get_mut();
        for op in inner.ops.drain() {
            mem::forget(op);
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
    fn slab_keys_stay_clear_of_reserved_user_data() {
        assert!(CANCEL_UD >> 32 == u64::from(u32::MAX) && (CANCEL_UD & 0xffff_ffff) >= 1 << 31);
    }
}
