//! Timers: a hierarchical timer wheel and the `sleep`, `timeout` and `Interval` futures.
//!
//! Each core owns one [`wheel::TimerWheel`] of task wakers. The executor fires due timers
//! every loop iteration and, when idle, parks the core until the wheel's
//! [`next_deadline`](wheel::TimerWheel::next_deadline), so on the simulated HAL virtual time
//! jumps straight to the next timer.
//!
//! The futures here read the current core's clock and wheel, so they are created and polled
//! inside an executor (creating one elsewhere panics). They are `Unpin` (except [`Timeout`],
//! which is `Unpin` when its inner future is) and `!Send`: a registered timer lives in one
//! core's wheel, so the future that owns it must stay on that core.
//!
//! [`Instant::MAX`] means "never": a sleep until then registers no timer and never completes,
//! so `timeout(Duration::MAX, f)` costs nothing but is `f`.
//!
//! ```
//! use core::time::Duration;
//! use seastar_hal::sim::SimPlatform;
//! use seastar_kernel::executor::{block_on, now};
//! use seastar_kernel::time::{interval, sleep, timeout};
//!
//! block_on(SimPlatform::new(), async {
//!     sleep(Duration::from_secs(60)).await; // virtual time: returns at once
//!     assert_eq!(now().as_nanos(), 60_000_000_000);
//!
//!     let slow = sleep(Duration::from_secs(5));
//!     assert!(timeout(Duration::from_secs(1), slow).await.is_err()); // `Err(Elapsed)`
//!
//!     let mut every_100ms = interval(Duration::from_millis(100));
//!     every_100ms.tick().await; // the first tick is immediate
//!     every_100ms.tick().await;
//!     assert_eq!(now().as_nanos(), 61_100_000_000);
//! })
//! .unwrap();
//! ```
//!
//! A timer future cannot leave its core:
//!
//! ```compile_fail
//! fn assert_send<T: Send>(_: T) {}
//! assert_send(seastar_kernel::time::sleep_until(seastar_hal::Instant::ZERO));
//! ```
//!
//! [`Instant::MAX`]: seastar_hal::Instant::MAX

mod interval;
mod sleep;
mod timeout;
pub mod wheel;

pub use self::interval::{interval, interval_at, Interval, MissedTickBehavior, Tick};
pub use self::sleep::{sleep, sleep_until, Sleep};
pub use self::timeout::{timeout, timeout_at, Elapsed, Timeout};

#[cfg(test)]
mod tests;
