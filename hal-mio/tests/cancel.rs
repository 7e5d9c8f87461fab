//! Cancellation on mio: operations dropped at random points free their buffers exactly once
//! and release their ids *in the drop* (a readiness driver owns no kernel-side state for
//! them). The contract's own cancellation checks, this stress among them, are in
//! `conformance.rs`.

use std::cell::RefCell;
use std::rc::Rc;
use std::task::Context;

use seastar_hal::io::{IoDriver, Op};
use seastar_hal::Platform;
use seastar_hal_conformance::harness::{block_on, close, flag_waker, pair};
use seastar_hal_conformance::{cancel, Tracked};
use seastar_hal_mio::MioPlatform;

#[test]
fn cancel_at_random_points_releases_ids_at_once() {
    let s =
        cancel::cancel_at_random_points(&|| MioPlatform::new().expect("platform"), true).stats();
    assert!(s.cancelled > 150, "{s:?}");
    assert!(s.would_block > 0, "{s:?}");
}

/// A receive queued on its descriptor, dropped: its buffer is freed in the drop and its id
/// released, with no park (the suite only asks for "once the driver lets go").
#[test]
fn a_dropped_pending_recv_frees_its_buffer_in_the_drop() {
    let p = MioPlatform::new().expect("platform");
    let io = p.io();
    let (c, s) = pair(&p);
    let drops = Rc::new(RefCell::new(Vec::new()));
    let (_flag, waker) = flag_waker();
    let mut op = Op::recv(io, s, Tracked::new(&drops, Vec::with_capacity(16)))
        .map_err(|(e, _)| e)
        .expect("submit");
    assert!(op
        .poll_complete(&mut Context::from_waker(&waker))
        .is_pending());
    p.park(Some(p.now()));
    drop(op);
    assert_eq!(*drops.borrow(), [1]);
    assert_eq!(io.in_flight(), 0);
    block_on(&p, close(io, c));
    block_on(&p, close(io, s));
}
