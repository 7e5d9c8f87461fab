use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use core::any::Any;
use core::cell::RefCell;
use core::task::{Context, Poll, Waker};

use super::SimClock;
use crate::io::{Completion, IoDriver, OpId, RawOp};
use crate::{ErrorKind, Instant, IoError};

/// The simulated I/O driver: `Nop` completes at the next park, `Timeout` when virtual time
/// reaches its deadline; other operations are refused with `Unsupported` until the simulated
/// network lands.
#[derive(Debug)]
pub struct SimIo {
    clock: SimClock,
    state: RefCell<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    ops: BTreeMap<u64, SimOp>,
}

#[derive(Debug)]
struct SimOp {
    /// When it completes: `None` for "at the next park".
    due: Option<Instant>,
    completion: Option<Completion>,
    waker: Option<Waker>,
    /// Set once cancelled: holds the buffers until the op finishes, then both are dropped.
    cancelled: Option<Box<dyn Any>>,
}

impl SimIo {
    pub(super) fn new(clock: SimClock) -> Self {
        SimIo {
            clock,
            state: RefCell::new(State::default()),
        }
    }

    /// Complete every op that is due now; returns how many completed.
    pub(super) fn complete_due(&self) -> usize {
        let now = self.clock.now();
        let mut wakers = alloc::vec::Vec::new();
        let mut completed = 0;
        {
            let mut st = self.state.borrow_mut();
            let mut finished_cancelled = alloc::vec::Vec::new();
            for (id, op) in st.ops.iter_mut() {
                if op.completion.is_some() || op.due.is_some_and(|d| d > now) {
                    continue;
                }
                completed += 1;
                if op.cancelled.is_some() {
                    finished_cancelled.push(*id);
                    continue;
                }
                op.completion = Some(Completion::done(Ok(0)));
                if let Some(w) = op.waker.take() {
                    wakers.push(w);
                }
            }
            for id in finished_cancelled {
                st.ops.remove(&id);
            }
        }
        // Wake outside the borrow: a waker may poll re-entrantly in some executors.
        for w in wakers {
            w.wake();
        }
        completed
    }

    /// The earliest deadline among pending timeouts.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.state
            .borrow()
            .ops
            .values()
            .filter(|op| op.completion.is_none())
            .filter_map(|op| op.due)
            .min()
    }
}

// `submit` is an unsafe trait method; this driver dereferences none of the op's pointers.
#[allow(unsafe_code)]
impl IoDriver for SimIo {
    unsafe fn submit(&self, op: RawOp) -> Result<OpId, IoError> {
        let due = match op {
            RawOp::Nop => None,
            RawOp::Timeout { deadline } => Some(deadline),
            _ => return Err(IoError::new(ErrorKind::Unsupported)),
        };
        let mut st = self.state.borrow_mut();
        let id = st.next_id;
        st.next_id += 1;
        st.ops.insert(
            id,
            SimOp {
                due,
                completion: None,
                waker: None,
                cancelled: None,
            },
        );
        Ok(OpId(id))
    }

    fn poll_op(&self, id: OpId, cx: &mut Context<'_>) -> Poll<Completion> {
        let mut st = self.state.borrow_mut();
        let Some(op) = st.ops.get_mut(&id.0) else {
            return Poll::Ready(Completion::done(Err(IoError::new(ErrorKind::InvalidInput))));
        };
        match op.completion {
            Some(c) => {
                st.ops.remove(&id.0);
                Poll::Ready(c)
            }
            None => {
                op.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn cancel(&self, id: OpId, keepalive: Box<dyn Any>) {
        let mut st = self.state.borrow_mut();
        let Some(op) = st.ops.get_mut(&id.0) else {
            return;
        };
        if op.completion.is_some() {
            // Already finished: the platform no longer touches the buffers.
            st.ops.remove(&id.0);
            drop(st);
            drop(keepalive);
            return;
        }
        // A simulated timeout is not cut short: like a real platform that cannot cancel an
        // op already under way, it runs to completion and only then releases the buffers.
        op.waker = None;
        op.cancelled = Some(keepalive);
    }

    fn in_flight(&self) -> usize {
        self.state.borrow().ops.len()
    }
}
