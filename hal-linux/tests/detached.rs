//! Detached sends on io_uring, beyond the contract checks of `conformance.rs`: a pool buffer
//! stays held while its send is in the kernel.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;

use common::{block_on, park_until, platform, tcp_pair};
use seastar_hal::io::{IoDriver, RecvStream, SendBufs, SendStatus};
use seastar_hal::Platform;

#[test]
fn a_detached_pool_buffer_is_held_while_its_send_is_in_flight() {
    let p = platform();
    let (ours, mut peer) = tcp_pair();
    let pool = p.io().create_pool(8, 4096).expect("pool");
    let mut recv = RecvStream::new(p.io(), ours.as_raw_fd(), pool).expect("recv");
    peer.write_all(b"ping").expect("peer write");
    let buf = block_on(&p, std::future::poll_fn(|cx| recv.poll_next(cx)))
        .expect("data")
        .expect("no error");
    assert_eq!(&buf[..], b"ping");
    assert_eq!(p.stats().pool_buffers_free, 7);

    let status = Rc::new(SendStatus::default());
    p.io()
        .send_detached(
            ours.as_raw_fd(),
            SendBufs::One(buf.into_send_buf()),
            &status,
        )
        .expect("send");
    assert_eq!(
        p.stats().pool_buffers_free,
        7,
        "held while the send is in flight"
    );
    park_until(&p, || status.in_flight() == 0);
    assert_eq!(p.stats().pool_buffers_free, 8, "released by the driver");
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).expect("peer read");
    assert_eq!(&got, b"ping");
    drop(recv);
}
