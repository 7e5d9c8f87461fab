//! The per-core executor. (Being written: the functions below are the interface the rest of
//! the kernel codes against.)

use core::task::Waker;
use seastar_hal::Instant;

use crate::time::wheel::TimerWheel;

/// The current core's clock. Panics outside an executor.
pub fn now() -> Instant {
    panic!("called outside a Seastar-RS executor")
}

/// Run `f` on the current core's timer wheel. Panics outside an executor.
#[allow(dead_code)]
pub(crate) fn with_timers<R>(f: impl FnOnce(&mut TimerWheel<Waker>) -> R) -> R {
    let _ = f;
    panic!("called outside a Seastar-RS executor")
}
