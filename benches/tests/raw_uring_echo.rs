//! The floor server must echo correctly, or its figures mean nothing: every byte back, in
//! order, per connection, for messages larger than one provided buffer, with many connections
//! at once and peers that vanish mid-stream.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use seastar_benches::raw_uring;

fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = raw_uring::Config {
        // Few, small buffers: exercise running out of them (ENOBUFS) and chunking.
        buffers: 64,
        buffer_size: 512,
        ..raw_uring::Config::default()
    };
    std::thread::spawn(move || {
        if let Err(e) = raw_uring::serve(listener, config) {
            panic!("raw io_uring server failed: {e}");
        }
    });
    addr
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn echoes_every_byte_in_order_on_many_connections() {
    let addr = start();
    let clients: Vec<_> = (0..8u64)
        .map(|seed| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(20))).ok();
                let data = pattern(seed, 256 * 1024 + seed as usize * 77);
                let writer = {
                    let mut w = s.try_clone().expect("clone");
                    let data = data.clone();
                    std::thread::spawn(move || {
                        for chunk in data.chunks(3000) {
                            w.write_all(chunk).expect("write");
                        }
                    })
                };
                let mut back = vec![0u8; data.len()];
                s.read_exact(&mut back).expect("read the echo");
                writer.join().expect("writer");
                assert!(back == data, "connection {seed}: echo differs");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
}

#[test]
fn survives_peers_that_vanish() {
    let addr = start();
    for i in 0..32u64 {
        let mut s = TcpStream::connect(addr).expect("connect");
        // Send a lot and close without reading: the server's sends fail, the slot is freed.
        let _ = s.write_all(&pattern(i, 64 * 1024));
        drop(s);
    }
    // Still serving.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    s.write_all(b"still there").expect("write");
    let mut back = [0u8; 11];
    s.read_exact(&mut back).expect("read");
    assert_eq!(&back, b"still there");
}
