//! Tasks: spawning futures on the current core and awaiting their output.
//!
//! A task is one heap allocation (header + future, later its output) created by [`spawn`].
//! Tasks are core-local: they may hold `!Send` data (`Rc`, `RefCell`), are always polled on
//! the core that spawned them, and their [`JoinHandle`] is `!Send` too.
//!
//! Cancellation semantics (the choice and why):
//! * Dropping a `JoinHandle` **detaches** the task: it runs to completion and its output is
//!   dropped. Fire-and-forget is the common case in a server (one task per connection), and
//!   an accidental drop silently killing work is the worse failure.
//! * [`JoinHandle::cancel`] cancels: the future is dropped at once (or right after its
//!   current poll if it is running), and awaiting the handle yields
//!   [`JoinError::Cancelled`]. Dropping the future runs its destructors, so an in-flight
//!   I/O operation is cancelled and its buffers handed to the driver.
//! * A task whose future panics (with `std`) completes with [`JoinError::Panicked`]; the
//!   core keeps running. Without `std` a panic aborts.
//! * When the executor is dropped, every remaining task's future is dropped on its core.

use alloc::borrow::Cow;
use alloc::rc::Rc;
use alloc::string::String;
use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::task::{Context, Poll};

pub(crate) mod raw;

use crate::executor::context;
use crate::sched::SchedulingGroup;
use raw::{state, TaskRef};

/// Why a task produced no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The task was cancelled through [`JoinHandle::cancel`] or by executor shutdown.
    #[error("task was cancelled")]
    Cancelled,
    /// The task's future panicked with this message.
    #[error("task panicked: {0}")]
    Panicked(String),
}

/// No executor is running on this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no Seastar-RS executor is running on this thread")]
pub struct NoExecutor;

/// Awaits a task's output. Dropping it detaches the task (see the module docs).
#[must_use = "dropping a JoinHandle detaches the task; call .detach() to say so"]
pub struct JoinHandle<T> {
    task: Option<TaskRef>,
    /// `!Send`: the task's state may only be touched on its core.
    _marker: PhantomData<(T, Rc<()>)>,
}

impl<T> core::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("task", &self.task)
            .finish()
    }
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: TaskRef) -> Self {
        JoinHandle {
            task: Some(task),
            _marker: PhantomData,
        }
    }

    /// Cancel the task: its future is dropped now, or as soon as its current poll returns if
    /// it is running (a task cancelling itself). Awaiting the handle then yields
    /// [`JoinError::Cancelled`], unless the task had already completed.
    pub fn cancel(&self) {
        let Some(task) = &self.task else { return };
        let h = task.header();
        if h.state.get() & state::COMPLETE != 0 {
            return;
        }
        let owner = h.owner;
        let handled = context::with_current(|core| {
            if core.id() == owner {
                core.cancel(task);
                true
            } else {
                false
            }
        });
        if handled != Some(true) {
            // Not inside the owning executor (e.g. between `block_on` calls): leave a request
            // the executor honours before the next poll.
            h.state.set(h.state.get() | state::CANCEL_REQUESTED);
            task.schedule_remote();
        }
    }

    /// Let the task run on without anyone awaiting it.
    pub fn detach(self) {}

    /// The task has finished (completed, cancelled or panicked).
    pub fn is_finished(&self) -> bool {
        self.task
            .as_ref()
            .is_none_or(|t| t.header().state.get() & state::COMPLETE != 0)
    }

    /// The task's id, unique on its core.
    pub fn id(&self) -> Option<u64> {
        self.task.as_ref().map(|t| t.header().id)
    }

    /// The task's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.task.as_ref().and_then(|t| t.header().name.as_deref())
    }
}

// The handle holds no pinned data: `T` lives in the task cell, not here.
impl<T> Unpin for JoinHandle<T> {}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = &self.task else {
            // Polled again after it returned Ready: nothing left to give.
            return Poll::Pending;
        };
        if task.header().state.get() & state::COMPLETE == 0 {
            if !task.join_waker_will_wake(cx.waker()) {
                task.set_join_waker(Some(cx.waker().clone()));
            }
            return Poll::Pending;
        }
        let mut out = None;
        // SAFETY: this handle was created by `spawn::<F>` with `T = F::Output`.
        #[allow(unsafe_code)]
        unsafe {
            task.take_output::<T>(&mut out)
        };
        self.task = None;
        match out {
            Some(result) => Poll::Ready(result),
            None => Poll::Ready(Err(JoinError::Cancelled)),
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        task.set_join_waker(None);
        let h = task.header();
        let s = h.state.get();
        if s & state::COMPLETE != 0 {
            // Finished but never read: drop the output here, on the owner thread.
            task.drop_output();
        } else {
            h.state.set(s | state::DETACHED);
        }
    }
}

/// Spawns tasks with options: a name for diagnostics, a scheduling group.
#[derive(Debug, Default, Clone)]
pub struct Builder {
    name: Option<Cow<'static, str>>,
    group: Option<SchedulingGroup>,
}

impl Builder {
    /// A builder with no options set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Name the task; stall reports and statistics show it.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Run the task in scheduling group `group` (see [`crate::sched`]). Without this, a task
    /// spawned from a task inherits that task's group; from elsewhere (the root future,
    /// cross-core work) it goes to the default group. A group belongs to one core: given a
    /// group of another core, the task goes to the default group and a warning is logged.
    pub fn group(mut self, group: SchedulingGroup) -> Self {
        self.group = Some(group);
        self
    }

    /// Spawn on the current core.
    pub fn try_spawn<F: Future + 'static>(
        self,
        future: F,
    ) -> Result<JoinHandle<F::Output>, NoExecutor> {
        context::with_current(|core| core.spawn(self.name, self.group.as_ref(), future))
            .ok_or(NoExecutor)
    }

    /// Spawn on the current core.
    ///
    /// # Panics
    /// Outside an executor: that is a bug in the calling program, like calling `tokio::spawn`
    /// outside a runtime. Use [`Builder::try_spawn`] to handle it.
    pub fn spawn<F: Future + 'static>(self, future: F) -> JoinHandle<F::Output> {
        match self.try_spawn(future) {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Spawn `future` as a task on the current core. It may be `!Send`.
///
/// # Panics
/// Outside an executor; see [`try_spawn`].
pub fn spawn<F: Future + 'static>(future: F) -> JoinHandle<F::Output> {
    Builder::new().spawn(future)
}

/// Spawn on the current core, or report that there is none.
pub fn try_spawn<F: Future + 'static>(future: F) -> Result<JoinHandle<F::Output>, NoExecutor> {
    Builder::new().try_spawn(future)
}

/// Let the other ready tasks run before this one continues.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// Future of [`yield_now`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        // Goes to the back of the run queue: everything already ready runs first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
