//! The owned-buffer API's contract over real sockets, on both backends:
//!
//! - `read` fills from the start of the buffer up to its capacity, never more; a `Vec`'s
//!   length grows to cover the data and never shrinks; `Box<[u8]>` works too.
//! - `write` of a `Slice` sends exactly its window; `&'static [u8]` can be sent.
//! - `writev_all` with thousands of buffers (more than `UIO_MAXIOV`, empty ones included)
//!   sends their exact concatenation; a single `writev` of more than 1,024 buffers behaves the
//!   same on both backends (rejected with `InvalidInput`, or capped at 1,024), and the stream
//!   stays usable.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;

use seastar::buf::Slice;
use seastar::net::TcpStream;
use seastar::Backend;
use seastar_tests::client::{self, must_runtime};
use seastar_tests::payload::Pool;
use seastar_tests::rng::Rng;
use seastar_tests::stdnet::{self, StdServer};
use seastar_tests::IO_TIMEOUT;

const SEED: u64 = 0x5EA5_7A12_0000_0006;

/// A std server that collects everything until EOF.
fn sink() -> StdServer<io::Result<Vec<u8>>> {
    StdServer::spawn(1, |mut s, _| stdnet::read_to_end(&mut s)).expect("sink")
}

fn sink_result(server: StdServer<io::Result<Vec<u8>>>) -> Vec<u8> {
    let mut v = server.join_ok();
    assert_eq!(v.len(), 1);
    v.pop().expect("one").expect("sink read")
}

fn read_fills_from_start_within_capacity(backend: Backend) {
    let l = stdnet::StdListener::bind().expect("bind");
    let addr = l.addr();
    let (step_tx, step_rx) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(b"hello").expect("write");
        step_rx.recv_timeout(IO_TIMEOUT).expect("step");
        s.write_all(b"0123456789").expect("write");
        step_rx.recv_timeout(IO_TIMEOUT).expect("step");
        s.write_all(b"boxed").expect("write");
    });
    must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            // A Vec with 10 initialised bytes and room for 100: data lands at the start.
            let mut v = Vec::with_capacity(100);
            v.extend_from_slice(&[0xFF; 10]);
            let (res, v) = s.read(v).await;
            assert_eq!(res.expect("read"), 5);
            assert_eq!(&v[..5], b"hello");
            assert_eq!(&v[5..], &[0xFF; 5], "bytes past the data must be untouched");
            assert_eq!(v.len(), 10, "the length never shrinks");
            step_tx.send(()).expect("step");
            // Capacity 4: at most 4 bytes, the rest stays queued for the next reads.
            let got = client::read_exact(&s, 0).await.expect("empty read_exact");
            assert!(got.is_empty());
            let (res, v) = s.read(Vec::with_capacity(4)).await;
            let n = res.expect("read");
            assert!(
                (1..=v.capacity()).contains(&n) && v.len() == n,
                "n {n}, len {}",
                v.len()
            );
            let mut all = v[..n].to_vec();
            all.extend(client::read_exact(&s, 10 - n).await.expect("rest"));
            assert_eq!(all, b"0123456789");
            step_tx.send(()).expect("step");
            let (res, b) = s.read(vec![0u8; 64].into_boxed_slice()).await;
            let n = res.expect("read boxed");
            let mut got = b[..n].to_vec();
            got.extend(client::read_exact(&s, 5 - n).await.expect("rest"));
            assert_eq!(got, b"boxed");
        })
        .expect("runtime");
    peer.join().expect("peer");
}

fn write_slice_and_static(backend: Backend) {
    let server = sink();
    let addr = server.addr();
    must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            let (res, back) = s.write_all(Slice::new(b"0123456789".to_vec(), 3..7)).await;
            res.expect("write slice");
            assert_eq!(
                back.into_inner(),
                b"0123456789",
                "the whole buffer comes back"
            );
            let (res, _) = s.write_all(&b"|static"[..]).await;
            res.expect("write static");
            s.shutdown(Shutdown::Write).await.expect("half-close");
        })
        .expect("runtime");
    assert_eq!(sink_result(server), b"3456|static");
}

fn writev_all_thousands_of_buffers(backend: Backend) {
    const BUFS: usize = 3_000;
    let pool = Pool::standard(SEED);
    let mut rng = Rng::new(SEED);
    let bufs: Vec<Vec<u8>> = (0..BUFS)
        .map(|i| {
            // Every 7th buffer is empty; the others 1 B..=2 KiB.
            let len = if i % 7 == 3 {
                0
            } else {
                rng.log_uniform(1, 2048)
            };
            pool.slice(pool.pick(&mut rng, len)).to_vec()
        })
        .collect();
    let want = bufs.concat();
    let server = sink();
    let addr = server.addr();
    let back = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            let (res, back) = s.writev_all(bufs).await;
            res.expect("writev_all");
            s.shutdown(Shutdown::Write).await.expect("half-close");
            back
        })
        .expect("runtime");
    assert_eq!(back.len(), BUFS, "every buffer is handed back");
    let got = sink_result(server);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the peer must get the exact concatenation");
}

/// `writev` documents "at most 1,024 buffers (`UIO_MAXIOV`)". Given 1,025, both backends must
/// behave the same, in one of the two ways the contract allows: reject the call with
/// `InvalidInput` and send nothing, or send the first 1,024 buffers and report the short count
/// (which every `writev` caller handles). Either way the stream stays usable.
fn writev_over_iov_max(backend: Backend) {
    let server = sink();
    let addr = server.addr();
    let first = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            let bufs: Vec<Vec<u8>> = (0..1025).map(|_| vec![b'x']).collect();
            let (res, back) = s.writev(bufs).await;
            assert_eq!(back.len(), 1025, "every buffer is handed back");
            // The stream is still usable.
            let (res2, _) = s
                .writev(vec![b"after".to_vec(), Vec::new(), b"!".to_vec()])
                .await;
            assert_eq!(res2.expect("writev after"), 6);
            s.shutdown(Shutdown::Write).await.expect("half-close");
            res
        })
        .expect("runtime");
    let got = sink_result(server);
    match first {
        Err(e) => {
            assert_eq!(
                e.kind(),
                io::ErrorKind::InvalidInput,
                "writev of 1,025 buffers failed with an unexpected kind: {e} ({:?})",
                e.kind()
            );
            assert_eq!(got, b"after!", "a rejected writev must send nothing");
        }
        Ok(n) => {
            assert_eq!(n, 1024, "a capped writev sends exactly UIO_MAXIOV buffers");
            let mut want = vec![b'x'; 1024];
            want.extend_from_slice(b"after!");
            assert!(got == want, "peer got {} bytes", got.len());
        }
    }
}

/// Our write side ends and our read side still gets the peer's data: `shutdown(Read)` is not
/// needed for half-close, and `shutdown(Both)` ends both ways (the peer sees EOF).
fn shutdown_both_gives_peer_eof(backend: Backend) {
    let server = StdServer::spawn(1, |mut s, _| -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        s.read_to_end(&mut got)?;
        Ok(got)
    })
    .expect("server");
    let addr = server.addr();
    must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = TcpStream::connect(addr).await.expect("connect");
            client::write_all(&s, b"bye".to_vec()).await.expect("write");
            s.shutdown(Shutdown::Both).await.expect("shutdown both");
            let (res, _) = s.write(b"more".to_vec()).await;
            let err = res.expect_err("write after shutdown(Both)");
            assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
        })
        .expect("runtime");
    assert_eq!(sink_result(server), b"bye");
}

seastar_tests::on_both_backends! {
    read_fills_from_start_within_capacity,
    write_slice_and_static,
    writev_all_thousands_of_buffers,
    writev_over_iov_max,
    shutdown_both_gives_peer_eof,
}
