//! `into_split` halves and shutdown of the read side, on both backends:
//!
//! - Dropping the write half does not shut down writing (the peer sees no EOF) and the read
//!   half keeps receiving; the socket closes (peer sees EOF) only when both halves are gone.
//! - `reunite` gives the stream back for its own halves, and refuses (handing both back,
//!   still usable) halves of different streams.
//! - `shutdown(Read)` wakes a read that is waiting on an idle connection: it ends with `Ok(0)`.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::time::Duration;

use seastar::net::TcpStream;
use seastar::Backend;
use seastar_tests::client::{self, must_runtime};
use seastar_tests::stdnet::{self, StdListener};
use seastar_tests::IO_TIMEOUT;

fn dropping_write_half_keeps_socket_open(backend: Backend) {
    let l = StdListener::bind().expect("bind");
    let addr = l.addr();
    let (step_tx, step_rx) = mpsc::channel::<&'static str>();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        assert_eq!(
            step_rx.recv_timeout(IO_TIMEOUT).expect("step"),
            "write half dropped"
        );
        // No EOF from our side yet: a short read times out instead.
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut b = [0u8; 8];
        let r = s.read(&mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "peer saw {r:?} after only the write half was dropped"
        );
        s.write_all(b"to the read half").expect("write");
        assert_eq!(
            step_rx.recv_timeout(IO_TIMEOUT).expect("step"),
            "all dropped"
        );
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)
            .expect("EOF once both halves are gone");
        assert!(rest.is_empty());
    });
    must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            let (rd, wr) = s.into_split();
            drop(wr);
            step_tx.send("write half dropped").expect("step");
            let mut got = Vec::new();
            while got.len() < 16 {
                let (res, buf) = rd.read(Vec::with_capacity(64)).await;
                let n = res.expect("read half");
                assert!(n > 0, "EOF on the read half");
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, b"to the read half");
            drop(rd);
            step_tx.send("all dropped").expect("step");
        })
        .expect("runtime");
    peer.join().expect("peer");
}

fn reunite_own_halves_only(backend: Backend) {
    let server = stdnet::StdServer::spawn(2, |s, _| stdnet::echo(s)).expect("echo server");
    let addr = server.addr();
    must_runtime(backend, 1)
        .run_on_one(move || async move {
            let a = TcpStream::connect(addr).await.expect("connect a");
            let b = TcpStream::connect(addr).await.expect("connect b");
            let (ar, aw) = a.into_split();
            let (br, bw) = b.into_split();
            let err = ar.reunite(bw).expect_err("halves of different streams");
            let (ar, bw) = (err.0, err.1);
            // Both halves still work after the refusal.
            let (res, _) = bw.write_all(b"bee".to_vec()).await;
            res.expect("b write half");
            let a = ar.reunite(aw).expect("own halves");
            let b = br.reunite(bw).expect("own halves");
            for (s, want) in [(&a, &b"ay"[..]), (&b, &b"bee"[..])] {
                if want == b"ay" {
                    client::write_all(s, want.to_vec()).await.expect("write");
                }
                assert_eq!(client::read_exact(s, want.len()).await.expect("echo"), want);
                s.shutdown(Shutdown::Write).await.expect("half-close");
                assert!(client::read_to_end(s, 0).await.expect("EOF").is_empty());
            }
        })
        .expect("runtime");
    let mut echoed: Vec<u64> = server
        .join_ok()
        .into_iter()
        .map(|r| r.expect("echo"))
        .collect();
    echoed.sort_unstable();
    assert_eq!(echoed, [2, 3]);
}

fn shutdown_read_wakes_pending_read(backend: Backend) {
    let l = StdListener::bind().expect("bind");
    let addr = l.addr();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (_s, _) = l.accept().expect("accept");
        // Keep the connection open and idle until our side is done.
        let _ = done_rx.recv_timeout(IO_TIMEOUT);
    });
    let res = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = std::rc::Rc::new(TcpStream::connect(addr).await.expect("connect"));
            let s2 = s.clone();
            let reader = seastar::spawn(async move {
                let (res, _) = s2.read(Vec::with_capacity(64)).await;
                res
            });
            seastar::time::sleep(Duration::from_millis(50)).await;
            s.shutdown(Shutdown::Read).await.expect("shutdown(Read)");
            let r = seastar::time::timeout(Duration::from_secs(2), reader).await;
            done_tx.send(()).expect("done");
            r
        })
        .expect("runtime");
    peer.join().expect("peer");
    let res = res.expect("a pending read must wake on shutdown(Read)");
    assert_eq!(res.expect("join").expect("read after shutdown(Read)"), 0);
}

seastar_tests::on_both_backends! {
    dropping_write_half_keeps_socket_open,
    reunite_own_halves_only,
    shutdown_read_wakes_pending_read,
}
