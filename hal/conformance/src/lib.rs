//! The HAL contract as tests. Each public function of [`ops`], [`cancel`] and [`detached`]
//! checks one point of the contract of `seastar-hal` (`Platform`, `IoDriver`, the ops,
//! cancellation, pools, detached sends) against any platform a caller-given constructor
//! builds, and returns the platform it used last so a backend's own test can go on to check
//! its counters. [`conformance_tests!`] expands to one `#[test]` per check, so a backend's
//! conformance test file is one line:
//!
//! ```ignore
//! seastar_hal_conformance::conformance_tests!(|| my_hal::MyPlatform::new().expect("platform"));
//! ```
//!
//! The checks need a Unix-like host: loopback TCP, a temp dir and a pipe. [`harness`] holds
//! the helpers they share (a bounded `block_on`, `park_until`, socket pairs, `TempDir`), for
//! a backend's own tests too. Unsafe code lives in `sys.rs` (raw sockets, a pipe) and
//! `tracked.rs` (a buffer-trait impl); the root denies it.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cancel;
pub mod detached;
pub mod harness;
pub mod ops;
mod sys;
mod tracked;

pub use tracked::Tracked;

/// One `#[test]` per contract check, each running it against the platforms `$make` builds
/// (an expression callable as `Fn() -> P` with `P: Platform`, e.g. a closure or a `fn`).
///
/// `conformance_tests!(make)` runs every check. `conformance_tests!(make; ops::a ops::b)`
/// runs the checks named (module and function, space-separated): for a platform that does
/// not offer every operation yet (say only nops and timeouts), so it can claim exactly the
/// part of the contract it meets.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr $(,)?) => {
        $crate::conformance_tests!($make;
            ops::nop_completes_at_the_next_park
            ops::polling_an_unknown_id_is_invalid_input
            ops::timeouts_fire_in_order_never_early
            ops::a_timeout_in_the_past_completes_at_once
            ops::park_honours_its_deadline
            ops::dropping_a_timeout_cancels_it
            ops::accept_then_recv_and_close_gives_the_peer_eof
            ops::multishot_accept_until_dropped_closes_unclaimed_connections
            ops::connect_then_send_and_recv_every_byte
            ops::large_transfer_both_ways_every_byte_checked
            ops::writev_gathers_in_order_and_shutdown_write_half_closes
            ops::send_after_shutdown_write_is_broken_pipe
            ops::connect_refused
            ops::peer_reset_is_connection_reset
            ops::file_write_at_read_at_fsync_and_writev
            ops::bad_descriptor_is_an_error_not_a_panic
            cancel::a_completed_but_unpolled_op_frees_its_buffer_on_drop
            cancel::cancel_at_random_points_keeps_remaining_ops_intact
            detached::detached_sends_go_out_whole_in_order_and_wake_only_the_status
            detached::a_detached_pool_buffer_returns_to_its_pool_when_sent
            detached::a_failed_detached_send_is_reported_to_the_status
            detached::a_pooled_receive_is_ready_only_with_a_completion_queued
            detached::a_pooled_receive_at_its_hold_limit_fails_only_while_its_owner_must_release
            detached::consecutive_detached_gathers_send_every_byte_in_order
            detached::a_detached_gather_on_a_pipe_sends_every_byte
            detached::dropping_the_platform_finishes_a_detached_send_in_flight
        );
    };
    ($make:expr; $($module:ident :: $check:ident)*) => {
        $(
            #[test]
            fn $check() {
                drop($crate::$module::$check(&$make));
            }
        )*
    };
}
