//! Detached sends on mio, beyond the contract checks of `conformance.rs`: `release_fd` (the
//! readiness driver's hook for a descriptor closed behind its back) fails a send in flight.

use std::os::fd::AsRawFd;
use std::rc::Rc;

use seastar_hal::io::{IoDriver, SendBuf, SendBufs, SendStatus};
use seastar_hal::{ErrorKind, Platform};
use seastar_hal_conformance::harness::tcp_pair;
use seastar_hal_mio::MioPlatform;

/// More than loopback socket buffers take before the peer reads: the send stays blocked.
const BIG: usize = 16 * 1024 * 1024;

#[test]
fn releasing_the_descriptor_fails_a_detached_send_and_frees_it() {
    let p = MioPlatform::new().expect("mio platform");
    let (ours, peer) = tcp_pair();
    let status = Rc::new(SendStatus::default());
    p.io()
        .send_detached(
            ours.as_raw_fd(),
            SendBufs::One(SendBuf::from_vec(vec![1u8; BIG])),
            &status,
        )
        .expect("send");
    assert_eq!(status.in_flight(), 1, "blocked: the peer does not read");
    p.io().release_fd(ours.as_raw_fd());
    assert_eq!((status.in_flight(), p.io().in_flight()), (0, 0));
    assert_eq!(
        status.take_error().map(|e| e.kind()),
        Some(ErrorKind::Canceled)
    );
    drop(peer);
}
