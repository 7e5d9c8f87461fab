//! The task cell: one allocation holding a header, the future and later its output, and the
//! hand-written `RawWakerVTable` that wakes it.
//!
//! ```text
//!            spawn                 poll -> Ready            JoinHandle takes output
//!   [Scheduled] ---> (Running) ---------------> [Complete] ---------------------> [Consumed]
//!        ^   |           |  poll -> Pending          ^  (or output dropped at once if detached)
//!        |   v           v                           |
//!      wake  [Idle] <----'       cancel(): future dropped, stage = Finished(Err(Cancelled))
//! ```
//!
//! Ownership and threads. The reference count is atomic because a `Waker` may be cloned,
//! woken and dropped on any thread. Everything else in the header (`state`, the join waker,
//! the registry slot; `id`, `name` and `group` are immutable) and the stage (future/output) is touched only by the owning core's
//! thread. A foreign thread's wake never touches them: it pushes a new reference onto the
//! owner's [`RemoteQueue`] and unparks the owner, which schedules the task itself.
//! The future and output are always dropped on the owner thread (completion, cancellation or
//! executor shutdown), so when the last reference dies on a foreign thread only plain memory
//! and `Send` fields remain to be freed.
#![allow(unsafe_code)] // raw task pointers, the waker vtable and the type-erased stage

use alloc::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use alloc::borrow::Cow;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell, UnsafeCell};
use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::ptr::NonNull;
use core::sync::atomic::{self, AtomicUsize, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::JoinError;
use crate::executor::{context, RemoteQueue};

/// Owner-thread-only state bits.
pub(crate) mod state {
    /// In the run queue (or about to be): a further wake does nothing.
    pub const SCHEDULED: u8 = 1 << 0;
    /// Being polled right now.
    pub const RUNNING: u8 = 1 << 1;
    /// The future is gone (finished or cancelled); the output (if any) is in the stage.
    pub const COMPLETE: u8 = 1 << 2;
    /// Cancellation was requested; honoured as soon as the task is not running.
    pub const CANCEL_REQUESTED: u8 = 1 << 3;
    /// The JoinHandle was dropped: nobody will read the output.
    pub const DETACHED: u8 = 1 << 4;
}

pub(crate) struct Header {
    refs: AtomicUsize,
    /// Owner-thread only.
    pub(crate) state: Cell<u8>,
    vtable: &'static TaskVTable,
    /// The core that owns this task, for telling local wakes from foreign ones.
    pub(crate) owner: u64,
    /// Where foreign threads send wakes.
    remote: Arc<RemoteQueue>,
    pub(crate) id: u64,
    pub(crate) name: Option<Cow<'static, str>>,
    /// Index of the task's scheduling group on its owner core. Plain data, fixed at
    /// creation (a `Copy` index rather than a handle, so a last reference dropped on a
    /// foreign thread frees nothing core-local).
    pub(crate) group: u32,
    /// Slot in the owner's task registry (owner-thread only).
    pub(crate) slot: Cell<usize>,
    /// Waker of the task awaiting the JoinHandle (owner-thread only).
    join_waker: Cell<Option<Waker>>,
}

struct TaskVTable {
    /// Poll the future; returns true when the task completed.
    poll: unsafe fn(NonNull<Header>, &mut Context<'_>) -> bool,
    /// Drop the future (cancellation), leaving `Finished(Err(Cancelled))`.
    cancel: unsafe fn(NonNull<Header>),
    /// Move the output into `*mut Option<Result<T, JoinError>>`, or drop it if `dst` is null.
    take_output: unsafe fn(NonNull<Header>, *mut ()),
    /// Free the cell (the stage must be empty or the caller must be the owner thread).
    dealloc: unsafe fn(NonNull<Header>),
}

enum Stage<F: Future> {
    Running(F),
    Finished(Result<F::Output, JoinError>),
    Consumed,
}

#[repr(C)]
struct TaskCell<F: Future> {
    /// First field, so a `NonNull<Header>` is also a pointer to the cell.
    header: Header,
    stage: UnsafeCell<Stage<F>>,
}

/// A counted reference to a task. `Send` so that foreign wakes can hand it to the owner's
/// remote queue; only reference counting and queueing happen off the owner thread.
pub(crate) struct TaskRef {
    ptr: NonNull<Header>,
}

// SAFETY: off the owner thread a TaskRef is only moved, cloned and dropped: those touch the
// atomic count and, for the last reference, free a cell whose stage the owner has already
// emptied (see the module docs). Header fields read off-thread (`owner`, `remote`, `vtable`)
// are immutable after creation.
unsafe impl Send for TaskRef {}

pub(crate) struct NewTask<'a> {
    pub owner: u64,
    pub remote: &'a Arc<RemoteQueue>,
    /// The owner core's recycled cells.
    pub cells: &'a CellCache,
    pub id: u64,
    pub name: Option<Cow<'static, str>>,
    pub group: u32,
}

impl TaskRef {
    /// Allocate a task cell holding `future`, with `N` references: the returned ones.
    /// (Counting them in at creation spares the atomic increments of cloning.)
    pub(crate) fn new<F: Future + 'static, const N: usize>(
        future: F,
        new: NewTask<'_>,
    ) -> [TaskRef; N] {
        const { assert!(N >= 1) };
        let cell = TaskCell {
            header: Header {
                refs: AtomicUsize::new(N),
                state: Cell::new(0),
                vtable: vtable_for::<F>(),
                owner: new.owner,
                remote: new.remote.clone(),
                id: new.id,
                name: new.name,
                group: new.group,
                slot: Cell::new(usize::MAX),
                join_waker: Cell::new(None),
            },
            stage: UnsafeCell::new(Stage::Running(future)),
        };
        let mem = new.cells.take::<F>();
        // SAFETY: `mem` is fresh or recycled memory of `cell_layout::<F>()`, which has the
        // size and alignment of a `TaskCell<F>` (or more), and nothing else refers to it.
        unsafe { mem.cast::<TaskCell<F>>().as_ptr().write(cell) };
        let ptr = mem.cast::<Header>();
        core::array::from_fn(|_| TaskRef { ptr })
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: a live TaskRef keeps the cell allocated.
        unsafe { self.ptr.as_ref() }
    }

    /// Poll the task's future. Owner thread only, and never re-entrantly for the same task
    /// (the executor guarantees both by setting RUNNING).
    pub(crate) fn poll(&self) -> bool {
        // The poll's waker borrows this reference rather than taking one of its own, so a
        // poll costs no reference-count traffic; only clones of it (a future keeping the
        // waker) count. It is never dropped, so it never gives back a reference it does not
        // hold.
        let raw = RawWaker::new(self.ptr.as_ptr().cast_const().cast::<()>(), &WAKER_VTABLE);
        // SAFETY: WAKER_VTABLE's functions uphold the RawWaker contract for a task pointer
        // with a counted reference behind it: `self` is one and outlives `waker` (a local
        // whose borrows end with the poll). `clone` and `wake_by_ref` take new references;
        // `wake` and `drop` would give one back, but a `ManuallyDrop<Waker>` is never
        // dropped and `wake` needs an owned `Waker`, which only a clone provides.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
        let mut cx = Context::from_waker(&waker);
        // SAFETY: owner thread; RUNNING is set by the caller so nothing else touches the
        // stage during the poll.
        unsafe { (self.header().vtable.poll)(self.ptr, &mut cx) }
    }

    /// Drop the future now. Owner thread only, not while RUNNING.
    pub(crate) fn cancel_now(&self) {
        // SAFETY: owner thread, not running (caller's contract).
        unsafe { (self.header().vtable.cancel)(self.ptr) }
    }

    /// Move the output out into `dst`. Owner thread only; `T` must be the future's output.
    ///
    /// # Safety
    /// `T` must be the `Output` type of the future this task was created with.
    pub(crate) unsafe fn take_output<T>(&self, dst: &mut Option<Result<T, JoinError>>) {
        // SAFETY: the caller guarantees the type; `dst` is a valid exclusive pointer.
        unsafe {
            (self.header().vtable.take_output)(self.ptr, (dst as *mut Option<_>).cast::<()>())
        }
    }

    /// Drop the output without reading it. Owner thread only.
    pub(crate) fn drop_output(&self) {
        // SAFETY: a null destination means "drop"; owner thread.
        unsafe { (self.header().vtable.take_output)(self.ptr, core::ptr::null_mut()) }
    }

    pub(crate) fn set_join_waker(&self, waker: Option<Waker>) {
        self.header().join_waker.set(waker);
    }

    pub(crate) fn wake_join_waker(&self) {
        if let Some(w) = self.header().join_waker.take() {
            w.wake();
        }
    }

    pub(crate) fn join_waker_will_wake(&self, waker: &Waker) -> bool {
        let current = self.header().join_waker.take();
        let same = current.as_ref().is_some_and(|w| w.will_wake(waker));
        self.header().join_waker.set(current);
        same
    }

    /// Schedule through the owner's remote queue: works from any thread or context.
    pub(crate) fn schedule_remote(&self) {
        self.header().remote.push(self.clone());
    }

    fn into_raw(self) -> *const () {
        let ptr = self.ptr.as_ptr().cast_const().cast::<()>();
        core::mem::forget(self);
        ptr
    }

    /// # Safety
    /// `ptr` came from `into_raw` and its reference is transferred to the result.
    unsafe fn from_raw(ptr: *const ()) -> TaskRef {
        // SAFETY: non-null, from `into_raw`.
        let ptr = unsafe { NonNull::new_unchecked(ptr.cast_mut().cast::<Header>()) };
        TaskRef { ptr }
    }

    /// The waker's job: schedule the task on its owner core.
    fn schedule(self) {
        let owner = self.header().owner;
        match context::local_schedule(owner, self) {
            Ok(()) => {}
            Err(task) => {
                let remote = task.header().remote.clone();
                remote.push(task);
            }
        }
    }
}

impl Clone for TaskRef {
    fn clone(&self) -> Self {
        // Relaxed is enough for an increment: the new reference is derived from an existing
        // one, which keeps the cell alive (the same argument as `Arc::clone`).
        let old = self.header().refs.fetch_add(1, Ordering::Relaxed);
        if old > isize::MAX as usize {
            // Billions of leaked wakers: continuing would risk an overflow and a
            // use-after-free, so stop (what `Arc` does too).
            panic!("task reference count overflow");
        }
        TaskRef { ptr: self.ptr }
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        if self.header().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Synchronise with every other release of a reference before freeing.
        atomic::fence(Ordering::Acquire);
        // SAFETY: this was the last reference; the owner has emptied the stage (module docs).
        unsafe { (self.header().vtable.dealloc)(self.ptr) }
    }
}

impl core::fmt::Debug for TaskRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let h = self.header();
        f.debug_struct("Task")
            .field("id", &h.id)
            .field("name", &h.name)
            .finish()
    }
}

static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

unsafe fn waker_clone(ptr: *const ()) -> RawWaker {
    // SAFETY: `ptr` is a live waker's task pointer; ManuallyDrop keeps its reference.
    let task = core::mem::ManuallyDrop::new(unsafe { TaskRef::from_raw(ptr) });
    RawWaker::new((*task).clone().into_raw(), &WAKER_VTABLE)
}

unsafe fn waker_wake(ptr: *const ()) {
    // SAFETY: `wake` consumes the waker's reference.
    let task = unsafe { TaskRef::from_raw(ptr) };
    task.schedule();
}

unsafe fn waker_wake_by_ref(ptr: *const ()) {
    // SAFETY: borrowed: take a new reference for the schedule, keep the waker's.
    let task = core::mem::ManuallyDrop::new(unsafe { TaskRef::from_raw(ptr) });
    (*task).clone().schedule();
}

unsafe fn waker_drop(ptr: *const ()) {
    // SAFETY: `drop` consumes the waker's reference.
    drop(unsafe { TaskRef::from_raw(ptr) });
}

fn vtable_for<F: Future + 'static>() -> &'static TaskVTable {
    trait HasVTable {
        const VTABLE: TaskVTable;
    }
    impl<F: Future + 'static> HasVTable for F {
        const VTABLE: TaskVTable = TaskVTable {
            poll: poll_fn::<F>,
            cancel: cancel_fn::<F>,
            take_output: take_output_fn::<F>,
            dealloc: dealloc_fn::<F>,
        };
    }
    &<F as HasVTable>::VTABLE
}

/// # Safety
/// `ptr` points to a live `TaskCell<F>`; owner thread; no other access to the stage now.
unsafe fn stage<'a, F: Future>(ptr: NonNull<Header>) -> &'a mut Stage<F> {
    // SAFETY: the header is the first field of a repr(C) TaskCell<F> (caller: it is one).
    let cell = unsafe { ptr.cast::<TaskCell<F>>().as_ref() };
    // SAFETY: exclusive per the caller's contract.
    unsafe { &mut *cell.stage.get() }
}

unsafe fn poll_fn<F: Future>(ptr: NonNull<Header>, cx: &mut Context<'_>) -> bool {
    // SAFETY: forwarded contract of `TaskVTable::poll`.
    let stage = unsafe { stage::<F>(ptr) };
    let Stage::Running(future) = stage else {
        return true;
    };
    // SAFETY: the future lives inside the heap cell and is never moved until it is dropped
    // in place by the assignment below.
    let future = unsafe { Pin::new_unchecked(future) };
    match poll_catching_panics(future, cx) {
        Poll::Pending => false,
        Poll::Ready(output) => {
            *stage = Stage::Finished(output);
            true
        }
    }
}

#[cfg(any(feature = "std", test))]
fn poll_catching_panics<F: Future>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, JoinError>> {
    // A panicking task must not take the core down with it; its JoinHandle reports it.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.poll(cx))) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
        Err(payload) => {
            let message = panic_message(&payload);
            klog!(warn, "task panicked: {}", message.as_str());
            Poll::Ready(Err(JoinError::Panicked(message)))
        }
    }
}

#[cfg(any(feature = "std", test))]
fn panic_message(payload: &alloc::boxed::Box<dyn core::any::Any + Send>) -> alloc::string::String {
    use alloc::string::ToString;
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<alloc::string::String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(not(any(feature = "std", test)))]
fn poll_catching_panics<F: Future>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, JoinError>> {
    // Without std there is no unwinding to catch: a panic aborts.
    future.poll(cx).map(Ok)
}

unsafe fn cancel_fn<F: Future>(ptr: NonNull<Header>) {
    // SAFETY: forwarded contract.
    let stage = unsafe { stage::<F>(ptr) };
    if matches!(stage, Stage::Running(_)) {
        *stage = Stage::Finished(Err(JoinError::Cancelled));
    }
}

unsafe fn take_output_fn<F: Future>(ptr: NonNull<Header>, dst: *mut ()) {
    // SAFETY: forwarded contract.
    let stage = unsafe { stage::<F>(ptr) };
    match core::mem::replace(stage, Stage::Consumed) {
        Stage::Finished(output) if !dst.is_null() => {
            // SAFETY: `dst` is `*mut Option<Result<F::Output, JoinError>>` (caller's contract
            // through `TaskRef::take_output`).
            unsafe { *dst.cast::<Option<Result<F::Output, JoinError>>>() = Some(output) };
        }
        Stage::Running(f) => *stage = Stage::Running(f),
        _ => {}
    }
}

unsafe fn dealloc_fn<F: Future>(ptr: NonNull<Header>) {
    // SAFETY: the last reference is gone, so the header is ours to read.
    let owner = unsafe { ptr.as_ref() }.owner;
    // SAFETY: the cell was written by `TaskRef::new` and nobody refers to it any more; it
    // is dropped exactly once, here.
    unsafe { core::ptr::drop_in_place(ptr.cast::<TaskCell<F>>().as_ptr()) };
    let mem = ptr.cast::<u8>();
    // On its owner core the memory goes back to the core's cache (`CellCache`); a cell
    // whose last reference dies elsewhere, or after its core is gone, is freed.
    let kept = context::with_current(|core| core.id() == owner && core.cells().give::<F>(mem));
    if kept != Some(true) {
        // SAFETY: `mem` was allocated with `cell_layout::<F>()` (`CellCache::take`) and is
        // no longer used.
        unsafe { dealloc(mem.as_ptr(), cell_layout::<F>()) };
    }
}

/// Cells are recycled in size classes of this many bytes (and this alignment: one class
/// never mixes alignments, and a task's header then starts a cache line).
const CELL_CLASS_BYTES: usize = 64;
/// Size classes recycled: cells up to `CELL_CLASSES * CELL_CLASS_BYTES` bytes. Larger (or
/// more aligned) ones are allocated and freed each time.
const CELL_CLASSES: usize = 8;
/// Free cells a core keeps per class: enough for a burst of short tasks (cross-core
/// requests polled on arrival, a connection's helpers), not a pool that only grows.
pub(crate) const CELLS_PER_CLASS: usize = 64;

/// The size class of `TaskCell<F>`, if its cells are recycled.
const fn cell_class<F: Future>() -> Option<usize> {
    let size = core::mem::size_of::<TaskCell<F>>();
    let class = size.div_ceil(CELL_CLASS_BYTES);
    if class == 0 || class > CELL_CLASSES || core::mem::align_of::<TaskCell<F>>() > CELL_CLASS_BYTES
    {
        None
    } else {
        Some(class - 1)
    }
}

/// The layout a `TaskCell<F>` is allocated with: its size class's, or its own.
fn cell_layout<F: Future>() -> Layout {
    match cell_class::<F>() {
        Some(class) => {
            match Layout::from_size_align((class + 1) * CELL_CLASS_BYTES, CELL_CLASS_BYTES) {
                Ok(l) => l,
                // A power of two and a small multiple of it: always a valid layout.
                Err(_) => Layout::new::<TaskCell<F>>(),
            }
        }
        None => Layout::new::<TaskCell<F>>(),
    }
}

/// A core's free task cells, by size class (see [`cell_class`]): spawning a task pops one
/// and a finished task's last reference dropped on its core pushes it back, so the common
/// short task costs no trip through the global allocator. Owner-thread only (a core's
/// executor state); cells freed on other threads go to the global allocator.
#[derive(Default)]
pub(crate) struct CellCache {
    free: [RefCell<Vec<NonNull<u8>>>; CELL_CLASSES],
}

impl CellCache {
    /// Memory for a `TaskCell<F>`, of `cell_layout::<F>()`: recycled if there is some.
    fn take<F: Future>(&self) -> NonNull<u8> {
        if let Some(class) = cell_class::<F>() {
            let recycled = self.free[class]
                .try_borrow_mut()
                .ok()
                .and_then(|mut v| v.pop());
            if let Some(mem) = recycled {
                return mem;
            }
        }
        let layout = cell_layout::<F>();
        // SAFETY: a `TaskCell` is never zero-sized (its header is not).
        let mem = unsafe { alloc(layout) };
        match NonNull::new(mem) {
            Some(mem) => mem,
            None => handle_alloc_error(layout),
        }
    }

    /// Keep the memory of a dropped `TaskCell<F>` for reuse. False if it is not kept (its
    /// class is full, or cells of its size are not recycled): the caller frees it.
    fn give<F: Future>(&self, mem: NonNull<u8>) -> bool {
        let Some(class) = cell_class::<F>() else {
            return false;
        };
        let Ok(mut free) = self.free[class].try_borrow_mut() else {
            return false;
        };
        if free.len() >= CELLS_PER_CLASS {
            return false;
        }
        free.push(mem);
        true
    }

    /// Free cells kept, over all classes.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.free.iter().map(|f| f.borrow().len()).sum()
    }
}

impl Drop for CellCache {
    fn drop(&mut self) {
        for (class, free) in self.free.iter_mut().enumerate() {
            let size = (class + 1) * CELL_CLASS_BYTES;
            let Ok(layout) = Layout::from_size_align(size, CELL_CLASS_BYTES) else {
                continue;
            };
            for mem in free.get_mut().drain(..) {
                // SAFETY: every cell in class `class` was allocated with this layout
                // (`cell_layout`) and, being in the cache, is used by nobody.
                unsafe { dealloc(mem.as_ptr(), layout) };
            }
        }
    }
}
