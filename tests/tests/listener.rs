//! The listener's contract, on both backends:
//!
//! - Several tasks may wait in `accept` on one listener at once: each connection goes to
//!   exactly one of them, none is lost or duplicated.
//! - Dropping a listener with connections that arrived but were never taken: those clients
//!   are closed promptly (EOF or reset), not left hanging; the port can be bound again.
//! - A second `TcpListener::bind` on the same port from another runtime works
//!   (`SO_REUSEPORT`), while a plain `std` listener on that port is refused (`AddrInUse`).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use seastar::net::TcpListener;
use seastar::Backend;
use seastar_tests::client::{self, must_runtime};
use seastar_tests::stdnet;
use seastar_tests::{IO_TIMEOUT, LOOPBACK_ANY_PORT};

fn concurrent_accepts_share_connections(backend: Backend) {
    const WAITERS: usize = 4;
    const CONNS: usize = 60;
    let (addr_tx, addr_rx) = mpsc::channel();
    let clients = std::thread::spawn(move || {
        let addr = addr_rx.recv_timeout(IO_TIMEOUT).expect("address");
        let mut out = Vec::new();
        for i in 0..CONNS {
            let mut s = stdnet::connect(addr).expect("connect");
            s.write_all(format!("client {i:03}").as_bytes())
                .expect("write");
            s.shutdown(std::net::Shutdown::Write).expect("half-close");
            let mut reply = String::new();
            s.read_to_string(&mut reply).expect("reply");
            out.push(reply);
        }
        out
    });
    let per_waiter = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let l = Rc::new(TcpListener::bind(LOOPBACK_ANY_PORT).expect("bind"));
            addr_tx
                .send(l.local_addr().expect("addr"))
                .expect("send addr");
            let served = Rc::new(std::cell::Cell::new(0usize));
            let mut waiters = Vec::new();
            for w in 0..WAITERS {
                let l = l.clone();
                let served = served.clone();
                waiters.push(seastar::spawn(async move {
                    let mut mine = Vec::new();
                    while served.get() < CONNS {
                        let r =
                            seastar::time::timeout(Duration::from_millis(200), l.accept()).await;
                        let Ok(r) = r else { continue };
                        let (s, _) = r.expect("accept");
                        served.set(served.get() + 1);
                        let msg = client::read_to_end(&s, 64).await.expect("read");
                        let msg = String::from_utf8(msg).expect("utf8");
                        client::write_all(&s, format!("waiter {w} got {msg}").into_bytes())
                            .await
                            .expect("reply");
                        mine.push(msg);
                    }
                    mine
                }));
            }
            let mut all = Vec::new();
            for w in waiters {
                all.push(w.await.expect("waiter"));
            }
            all
        })
        .expect("runtime");
    let replies = clients.join().expect("clients");
    assert_eq!(replies.len(), CONNS);
    let accepted: Vec<&String> = per_waiter.iter().flatten().collect();
    assert_eq!(accepted.len(), CONNS, "accepted {accepted:?}");
    let unique: HashSet<&&String> = accepted.iter().collect();
    assert_eq!(unique.len(), CONNS, "a connection was accepted twice");
    for (i, r) in replies.iter().enumerate() {
        assert!(
            r.starts_with("waiter ") && r.ends_with(&format!("got client {i:03}")),
            "{r}"
        );
    }
}

fn dropped_listener_closes_pending_connections(backend: Backend) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (conn_tx, conn_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let client = std::thread::spawn(move || -> Vec<io::Result<usize>> {
        let addr = addr_rx.recv_timeout(IO_TIMEOUT).expect("address");
        go_rx.recv_timeout(IO_TIMEOUT).expect("go");
        // Handshakes complete in the kernel even though nobody accepts.
        let mut socks: Vec<_> = (0..5)
            .map(|_| stdnet::connect(addr).expect("connect"))
            .collect();
        conn_tx.send(()).expect("connected");
        socks
            .iter_mut()
            .map(|s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let mut b = [0u8; 8];
                s.read(&mut b)
            })
            .collect()
    });
    let addr = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let l = TcpListener::bind(LOOPBACK_ANY_PORT).expect("bind");
            let addr = l.local_addr().expect("addr");
            addr_tx.send(addr).expect("send");
            // Arm the accept machinery once (a multishot accept may take connections early).
            let r = seastar::time::timeout(Duration::from_millis(10), l.accept()).await;
            assert!(r.is_err(), "no client yet");
            go_tx.send(()).expect("go");
            while conn_rx.try_recv().is_err() {
                seastar::time::sleep(Duration::from_millis(1)).await;
            }
            seastar::time::sleep(Duration::from_millis(50)).await;
            drop(l);
            seastar::time::sleep(Duration::from_millis(50)).await;
            // The port is free again for a new listener.
            let again = TcpListener::bind(addr).expect("rebind after drop");
            drop(again);
            addr
        })
        .expect("runtime");
    for (i, r) in client.join().expect("client").into_iter().enumerate() {
        match r {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("pending connection {i} to dropped listener {addr}: {other:?} (want EOF or reset, promptly)"),
        }
    }
}

fn reuseport_across_runtimes_but_not_with_plain_listener(backend: Backend) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let first = std::thread::spawn(move || {
        must_runtime(backend, 1)
            .run_on_one(move || async move {
                let l = TcpListener::bind(LOOPBACK_ANY_PORT).expect("bind");
                addr_tx.send(l.local_addr().expect("addr")).expect("send");
                while done_rx.try_recv().is_err() {
                    seastar::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .expect("runtime")
    });
    let addr = addr_rx.recv_timeout(IO_TIMEOUT).expect("address");
    let err = std::net::TcpListener::bind(addr).expect_err("plain bind of a SO_REUSEPORT port");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    must_runtime(backend, 1)
        .run_on_one(move || async move {
            let l = TcpListener::bind(addr).expect("second SO_REUSEPORT bind");
            assert_eq!(l.local_addr().expect("addr"), addr);
        })
        .expect("runtime");
    done_tx.send(()).expect("done");
    first.join().expect("first runtime");
}

seastar_tests::on_both_backends! {
    concurrent_accepts_share_connections,
    dropped_listener_closes_pending_connections,
    reuseport_across_runtimes_but_not_with_plain_listener,
}
