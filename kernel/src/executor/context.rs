//! Which core is running on this thread: the one pointer the free functions (`spawn`, `now`,
//! `sleep`...) and the task waker use to find their executor.
//!
//! With `std` (and in tests) it is a thread local, so each OS thread runs its own core. Without
//! `std` there are no thread locals: one global slot, so one executor runs at a time, which
//! is what a single-core microcontroller has. Interrupt handlers must not wake tasks
//! directly in that setting (they would see the executor's core as "current" and touch its
//! run queue mid-update); they should signal through the HAL's `Unpark` and a flag instead.
#![allow(unsafe_code)] // dereferences the registered core pointer

use core::ptr;

use super::percore::Core;
use crate::task::raw::TaskRef;

#[cfg(any(feature = "std", test))]
mod slot {
    use core::cell::Cell;
    use core::ptr;

    use super::Core;

    std::thread_local! {
        static CURRENT: Cell<*const Core> = const { Cell::new(ptr::null()) };
    }

    pub(super) fn get() -> *const Core {
        CURRENT.with(|c| c.get())
    }

    /// Set if empty; returns false if a core is already registered on this thread.
    pub(super) fn try_set(core: *const Core) -> bool {
        CURRENT.with(|c| {
            if c.get().is_null() {
                c.set(core);
                true
            } else {
                false
            }
        })
    }

    pub(super) fn clear() {
        CURRENT.with(|c| c.set(ptr::null()));
    }
}

#[cfg(not(any(feature = "std", test)))]
mod slot {
    use core::ptr;
    use core::sync::atomic::{AtomicPtr, Ordering};

    use super::Core;

    static CURRENT: AtomicPtr<Core> = AtomicPtr::new(ptr::null_mut());

    pub(super) fn get() -> *const Core {
        CURRENT.load(Ordering::Acquire)
    }

    pub(super) fn try_set(core: *const Core) -> bool {
        CURRENT
            .compare_exchange(
                ptr::null_mut(),
                core.cast_mut(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    pub(super) fn clear() {
        CURRENT.store(ptr::null_mut(), Ordering::Release);
    }
}

/// Registers a core as current for its lifetime.
pub(crate) struct EnterGuard<'a> {
    _core: &'a Core,
}

/// Make `core` the current core until the guard drops. `None` if another core is current
/// (nested `block_on`, or a second executor without `std`).
pub(crate) fn enter(core: &Core) -> Option<EnterGuard<'_>> {
    if slot::try_set(ptr::from_ref(core)) {
        Some(EnterGuard { _core: core })
    } else {
        None
    }
}

impl Drop for EnterGuard<'_> {
    fn drop(&mut self) {
        slot::clear();
    }
}

/// Run `f` with the current core, if there is one.
pub(crate) fn with_current<R>(f: impl FnOnce(&Core) -> R) -> Option<R> {
    let p = slot::get();
    if p.is_null() {
        return None;
    }
    // SAFETY: the slot is non-null only while an `EnterGuard` lives, and the guard borrows the
    // core, so the core is alive for this call. The core is used only through `&` and its
    // fields' own interior mutability.
    Some(f(unsafe { &*p }))
}

/// Schedule `task` on the current core if that core is its owner; otherwise give it back
/// for the remote path.
#[inline]
pub(crate) fn local_schedule(owner: u64, task: TaskRef) -> Result<(), TaskRef> {
    let p = slot::get();
    if p.is_null() {
        return Err(task);
    }
    // SAFETY: as in `with_current`.
    let core = unsafe { &*p };
    if core.id() != owner {
        return Err(task);
    }
    core.schedule(task);
    Ok(())
}
