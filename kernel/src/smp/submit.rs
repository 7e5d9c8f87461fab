//! [`submit_to`] and the helpers built on it.

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::local::{self, CoreSmp, ReplyId};
use super::ring::parcel::Parcel;
use super::SmpError;
use crate::executor::context;
use crate::executor::Core;

/// Run `f` on core `core` and get its output back on this core.
///
/// `f` is `Send` (it travels to the target); the future it returns is created and polled on
/// the target as a task of its own (first polled as soon as the target takes the request from
/// its ring, unless other tasks wait to run there) and may hold `!Send` state; its output
/// travels back.
/// `core` may be the current core (the work then runs as a local task, same semantics).
/// Work that does not wait is cheaper as a plain function with [`submit_sync`] (no task).
///
/// The work is queued at once (not on the first poll) and published to the target at the end
/// of the current loop iteration. Dropping the returned [`Submit`] does not cancel the work:
/// it still runs and its output is dropped on arrival.
///
/// Errors: [`SmpError::NotAttached`] outside an executor with an smp endpoint,
/// [`SmpError::NoSuchCore`], [`SmpError::CoreShutDown`] if the target is or goes down before
/// it answers, [`SmpError::Panicked`] if `f` or its future panics there (with `std`),
/// [`SmpError::Cancelled`] if the target dropped the task unfinished.
///
/// Back-pressure: if the ring to `core` is full the work waits in this core's overflow queue
/// and the returned future completes later; nothing is dropped and nothing blocks.
pub fn submit_to<F, Fut>(core: usize, f: F) -> Submit<Fut::Output>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    submit_mapped(core, f, Ok)
}

/// [`submit_to`] whose work itself may fail with an [`SmpError`] (flattened into the result).
pub(crate) fn submit_with<F, Fut, T>(core: usize, f: F) -> Submit<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, SmpError>> + 'static,
    T: Send + 'static,
{
    submit_mapped(core, f, |r| r)
}

/// [`submit_to`] with the work's output turned into the reply by `map` (on the target), so
/// that neither caller wraps its work in another future.
fn submit_mapped<F, Fut, M, T>(core: usize, f: F, map: M) -> Submit<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    // A function item or a closure without captures: no room in the message or the task.
    M: Fn(Fut::Output) -> Result<T, SmpError> + Send + 'static,
    T: Send + 'static,
{
    // Work from another core runs inside the target's loop, where the task may be polled at
    // once (work that is ready at once then answers in the same loop iteration); work for
    // this core is called inside the caller's poll, where it is queued like any spawn.
    dispatch(core, move |c, guard, poll_now| {
        let task = async move {
            let mut guard = guard;
            let core = guard.core();
            // `f` is called on the first poll, inside `catch`, so its own panics are caught.
            // (One async block: a nested `async fn` would keep its own copy of `f` and
            // `core`, and a bigger task costs more to move into its cell.)
            let mut fut = core::pin::pin!(async move { f().await });
            let result = core::future::poll_fn(move |cx| {
                // Unwind safety: after a panic the future is never polled again, only dropped.
                match catch(core, || fut.as_mut().poll(cx)) {
                    Ok(p) => p.map(&map),
                    Err(e) => Poll::Ready(Err(e)),
                }
            })
            .await;
            guard.send(result);
        };
        if poll_now {
            c.spawn_and_poll(task);
        } else {
            c.spawn(None, None, task).detach();
        }
    })
}

/// Run the plain function `f` on core `core` and get its result back on this core: for work
/// that does not wait (reading or updating core-local state, a [`Sharded`](super::Sharded)
/// instance through [`Sharded::local`](super::Sharded::local)), where [`submit_to`] would need `async move { .. }`.
///
/// The same guarantees as [`submit_to`] (ordering per pair of cores, back-pressure, the same
/// errors, a panic in `f` reported as [`SmpError::Panicked`] with the target surviving), and
/// cheaper on the target: when no task waits to run there, `f` is called right where the
/// request is taken from the ring, as a poll of its own (charged to the running scheduling
/// group, watched by the stall watchdog), with no task created for it. With tasks waiting it
/// runs as a queued task, behind them.
pub fn submit_sync<F, R>(core: usize, f: F) -> Submit<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    dispatch(core, move |c, guard, poll_now| {
        let call = move || {
            let mut guard = guard;
            let result = catch(guard.core(), f);
            guard.send(result);
        };
        if poll_now {
            c.call_or_spawn(call);
        } else {
            c.spawn(None, None, async move { call() }).detach();
        }
    })
}

/// Send `start` to core `core` (or, for this core, call it now), where it starts the work
/// that answers through its [`ReplyGuard`]; `start` gets the target's core state and whether
/// it runs inside the target's loop (from a ring, where the work may run at once) rather than
/// inside a poll on the caller's core. Returns the future of the reply.
fn dispatch<T, S>(core: usize, start: S) -> Submit<T>
where
    T: Send + 'static,
    S: FnOnce(&Core, ReplyGuard<T>, bool) + Send + 'static,
{
    let smp = match local::current() {
        Ok(s) => s,
        Err(e) => return Submit::failed(e),
    };
    let from = smp.index();
    // Runs on the target (it captures no more than `start`, `from` and `id`, so that small
    // work stays inline in the message). Inside the target's loop there is always an
    // executor with smp state. Were there none, the work would drop here with nobody to
    // answer to.
    let work = move |id: ReplyId, poll_now: bool| {
        context::with_current(move |c| {
            if let Some(smp) = c.smp() {
                start(c, ReplyGuard::new(smp, from, id), poll_now);
            }
        });
    };
    let id = if core == from {
        smp.expect_own_reply().inspect(|&id| work(id, false))
    } else {
        smp.request(core, |id| Parcel::work(move || work(id, true)))
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => return Submit::failed(e),
    };
    Submit {
        state: State::Waiting { smp, id },
        _output: PhantomData,
    }
}

/// Answers a request exactly once: with the result, or with `Cancelled` if the task is
/// dropped before it finished (its core shut down).
struct ReplyGuard<T: Send + 'static> {
    /// The answering core's smp state (held, so that answering costs no lookup).
    smp: Rc<CoreSmp>,
    to: usize,
    id: ReplyId,
    sent: bool,
    _value: PhantomData<fn() -> T>,
}

impl<T: Send + 'static> ReplyGuard<T> {
    fn new(smp: Rc<CoreSmp>, to: usize, id: ReplyId) -> Self {
        ReplyGuard {
            smp,
            to,
            id,
            sent: false,
            _value: PhantomData,
        }
    }

    /// The core the work runs on (named in its errors).
    fn core(&self) -> usize {
        self.smp.index()
    }

    fn send(&mut self, result: Result<T, SmpError>) {
        self.sent = true;
        self.smp.reply(self.to, self.id, Parcel::value(result));
    }
}

impl<T: Send + 'static> Drop for ReplyGuard<T> {
    fn drop(&mut self) {
        if !self.sent {
            let err: Result<T, SmpError> = Err(SmpError::Cancelled(self.core()));
            self.send(err);
        }
    }
}

/// Call `f`, turning a panic into [`SmpError::Panicked`] (with `std`, where panics unwind;
/// without it a panic aborts and there is nothing to catch). Whatever `f` touched is not used
/// after a panic: a panicking call's closure is gone, a panicking future is only dropped.
#[cfg(any(feature = "std", test))]
fn catch<R>(core: usize, f: impl FnOnce() -> R) -> Result<R, SmpError> {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| SmpError::Panicked {
        core,
        message: panic_message(payload.as_ref()),
    })
}

#[cfg(not(any(feature = "std", test)))]
fn catch<R>(_core: usize, f: impl FnOnce() -> R) -> Result<R, SmpError> {
    Ok(f())
}

#[cfg(any(feature = "std", test))]
fn panic_message(payload: &(dyn core::any::Any + Send)) -> alloc::string::String {
    use alloc::string::ToString;
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<alloc::string::String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// The future of [`submit_to`]: the work's output, or why there is none. `!Send`: it
/// completes on the core that submitted.
#[must_use = "the work runs anyway; await the Submit to get its output"]
pub struct Submit<T> {
    state: State,
    _output: PhantomData<fn() -> T>,
}

enum State {
    Failed(SmpError),
    Waiting { smp: Rc<CoreSmp>, id: ReplyId },
    Done,
}

impl<T> fmt::Debug for Submit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Failed(e) => return f.debug_tuple("Submit").field(e).finish(),
            State::Waiting { .. } => "waiting",
            State::Done => "done",
        };
        f.debug_tuple("Submit").field(&state).finish()
    }
}

impl<T> Submit<T> {
    fn failed(e: SmpError) -> Self {
        Submit {
            state: State::Failed(e),
            _output: PhantomData,
        }
    }
}

impl<T: Send + 'static> Future for Submit<T> {
    type Output = Result<T, SmpError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = match &self.state {
            // Completed futures stay pending, like the rest of the kernel's futures.
            State::Done => return Poll::Pending,
            State::Waiting { smp, id } => match smp.poll_reply::<T>(*id, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            },
            State::Failed(_) => match core::mem::replace(&mut self.state, State::Done) {
                State::Failed(e) => return Poll::Ready(Err(e)),
                _ => return Poll::Ready(Err(SmpError::Internal("unreachable submit state"))),
            },
        };
        self.state = State::Done;
        Poll::Ready(out)
    }
}

impl<T> Drop for Submit<T> {
    fn drop(&mut self) {
        if let State::Waiting { smp, id } = &self.state {
            smp.abandon(*id);
        }
    }
}

/// Wait for every submission, in order; all are awaited even after one failed, so no work
/// is left behind. The first error wins.
pub(crate) async fn join_all<T: Send + 'static>(subs: Vec<Submit<T>>) -> Result<Vec<T>, SmpError> {
    let mut out = Vec::with_capacity(subs.len());
    let mut first_err = None;
    for s in subs {
        match s.await {
            Ok(v) => out.push(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn count() -> Result<(usize, usize), SmpError> {
    local::with_smp(|s| (s.index(), s.count())).ok_or(SmpError::NotAttached)
}

/// Run a clone of `f` on every core (this one included), concurrently; the outputs in core
/// order. Waits for all of them even if one fails, then returns the first error.
pub async fn invoke_on_all<F, Fut>(f: F) -> Result<Vec<Fut::Output>, SmpError>
where
    F: FnOnce() -> Fut + Send + Clone + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let (_, n) = count()?;
    let subs = (0..n).map(|c| submit_to(c, f.clone())).collect();
    join_all(subs).await
}

/// Run a clone of `f` on every core except this one; the outputs in core order.
pub async fn invoke_on_others<F, Fut>(f: F) -> Result<Vec<Fut::Output>, SmpError>
where
    F: FnOnce() -> Fut + Send + Clone + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    let (me, n) = count()?;
    let subs = (0..n)
        .filter(|&c| c != me)
        .map(|c| submit_to(c, f.clone()))
        .collect();
    join_all(subs).await
}

/// Run a clone of `mapper` on every core concurrently and fold the outputs into `initial`
/// with `reduce` on this core, in core order (Seastar's `map_reduce0`).
pub async fn map_reduce<F, Fut, A, R>(mapper: F, initial: A, mut reduce: R) -> Result<A, SmpError>
where
    F: FnOnce() -> Fut + Send + Clone + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
    R: FnMut(A, Fut::Output) -> A,
{
    let (_, n) = count()?;
    let subs: Vec<_> = (0..n).map(|c| submit_to(c, mapper.clone())).collect();
    let mut acc = initial;
    let mut first_err = None;
    for s in subs {
        match s.await {
            Ok(v) if first_err.is_none() => acc = reduce(acc, v),
            Ok(_) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(acc),
    }
}
