//! The hold-limit trap of `TcpStream::recv`, on both backends: a task that keeps every
//! [`RecvBuf`] it receives brings its receive to the per-stream hold limit (32 buffers), where
//! the platform pauses it until at most 16 are held. With nothing queued and only the task
//! able to release enough, `recv()` fails at once with `io::ErrorKind::QuotaExceeded` instead
//! of waiting forever (`try_recv()`, a peek, returns `Ok(None)`); the error is not terminal
//! and loses nothing:
//!
//! - the task holds everything: `recv` fails (again and again while it holds more than 16),
//!   then, once it drops down to 16, reads the rest; the bytes in arrival order are exactly
//!   what the peer sent;
//! - the task moves part of its buffers into a write-behind send that cannot finish yet (the
//!   peer of that connection reads nothing): while it still holds more than 16 itself, `recv`
//!   fails at once (the send's buffers cannot bring it down far enough); at 16 it waits
//!   instead (no error), and completes once the send is done and gave its buffers back.
//!
//! Small pool buffers (1 KiB, `Builder::recv_pool`) keep the amounts small; every test runs
//! under the watchdog, so a regression to the silent wait fails instead of hanging.

use std::io;
use std::time::Duration;

use seastar::buf::RecvBuf;
use seastar::net::TcpStream;
use seastar::time::timeout;
use seastar::Backend;
use seastar_tests::client;
use seastar_tests::payload::PatternStream;

/// Buffers one pooled receive may hold before it is paused (`seastar_hal::io::POOL_HOLD_LIMIT`).
const HOLD_LIMIT: usize = 32;
/// Size of each pool buffer: at most this many bytes per `RecvBuf`.
const BUF_SIZE: u32 = 1024;
/// What the peer sends: more than the hold limit's worth of buffers, so the receive pauses
/// whatever the split into buffers.
const TOTAL: usize = 64 * BUF_SIZE as usize;

fn runtime(backend: Backend) -> seastar::Runtime {
    let rt = seastar::Runtime::builder()
        .cores(1)
        .pin(false)
        .backend(backend)
        .recv_pool(256, BUF_SIZE)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rt.backend(), backend, "no silent fallback");
    rt
}

/// `recv()` until it fails, keeping every buffer (in `held`) and copying its bytes to `got`;
/// returns the error. End of stream first is a failure: the peer sends more than the hold
/// limit's worth.
async fn recv_until_error(s: &TcpStream, held: &mut Vec<RecvBuf>, got: &mut Vec<u8>) -> io::Error {
    loop {
        match s.recv().await {
            Ok(Some(buf)) => {
                got.extend_from_slice(&buf);
                held.push(buf);
            }
            Ok(None) => panic!(
                "end of stream after {} bytes in {} held buffers: the receive never stopped",
                got.len(),
                held.len()
            ),
            Err(e) => return e,
        }
    }
}

/// The error of a receive stuck at its hold limit: the documented kind and a message that
/// says what to do.
#[track_caller]
fn assert_hold_limit(e: &io::Error) {
    assert_eq!(e.kind(), io::ErrorKind::QuotaExceeded, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("hold limit") && msg.contains("drop or send"),
        "the message says what happened and what to do: {msg}"
    );
}

/// `recv()` until end of stream, copying the bytes to `got` and dropping each buffer.
async fn recv_to_end(s: &TcpStream, got: &mut Vec<u8>) {
    while let Some(buf) = s.recv().await.expect("recv after releasing") {
        got.extend_from_slice(&buf);
    }
}

/// The peer's side: send `bytes`, shut down writing, hand the stream back.
fn send_then_close(theirs: TcpStream, bytes: Vec<u8>) -> seastar::JoinHandle<TcpStream> {
    seastar::spawn(async move {
        client::write_all(&theirs, bytes).await.expect("peer send");
        theirs
            .shutdown(std::net::Shutdown::Write)
            .await
            .expect("peer shutdown");
        theirs
    })
}

/// The task keeps every buffer: `recv` and `try_recv` fail instead of waiting, and keep
/// failing until the task is down to 16; then every byte arrives, in order.
fn holding_every_buffer_fails_then_resumes_after_release(backend: Backend) {
    runtime(backend)
        .run_on_one(|| async {
            let (ours, theirs) = client::connected_pair().await;
            let sent = PatternStream::new(7).next_chunk(TOTAL);
            let peer = send_then_close(theirs, sent.clone());
            let mut held = Vec::new();
            let mut got = Vec::new();
            let e = recv_until_error(&ours, &mut held, &mut got).await;
            assert_hold_limit(&e);
            assert!(
                held.len() >= HOLD_LIMIT,
                "paused only at the limit: {} held",
                held.len()
            );
            // Not terminal, and nothing changes while the task holds them all.
            assert_hold_limit(&ours.recv().await.expect_err("still at the limit"));
            // A peek hands out nothing and is no error: a gathering caller sends what it has.
            assert!(ours.try_recv().expect("a peek is no wait").is_none());
            // Down to 17: still more than the receive resumes at.
            held.drain(..held.len() - 17);
            assert_hold_limit(&ours.recv().await.expect_err("17 held: still stuck"));
            // Down to 16: the platform resumes the receive by itself.
            held.remove(0);
            recv_to_end(&ours, &mut got).await;
            assert_eq!(got.len(), TOTAL, "bytes missing or duplicated");
            assert!(got == sent, "bytes reordered or changed");
            drop(held);
            drop(peer.await.expect("peer"));
            drop(ours);
            client::assert_all_pool_buffers_back("after the hold-limit error").await;
        })
        .expect("runtime");
}

/// Buffers inside an unfinished write-behind send come back by themselves, so they keep the
/// receive waiting (no error) once the task's own share is down to 16; above that, `recv`
/// fails at once even with such a send in flight.
fn buffers_in_an_unfinished_send_keep_recv_waiting(backend: Backend) {
    runtime(backend)
        .run_on_one(|| async {
            let (ours, theirs) = client::connected_pair().await;
            // A second connection whose far end reads nothing yet: fill it, so a send there
            // stays in flight until that end reads.
            let (sink, sink_far) = client::connected_pair().await;
            const FILL: usize = 32 << 20;
            let (res, _) = sink.write(vec![0u8; FILL]).await;
            let filled = res.expect("fill the sink");
            assert!(
                filled < FILL,
                "the socket buffers took all {FILL} bytes: cannot make a send wait"
            );

            let sent = PatternStream::new(9).next_chunk(TOTAL);
            let peer = send_then_close(theirs, sent.clone());
            let mut held = Vec::new();
            let mut got = Vec::new();
            assert_hold_limit(&recv_until_error(&ours, &mut held, &mut got).await);
            // Keep 17, forward the rest behind the full sink: they stay in that send.
            let mut forwarded: Vec<RecvBuf> = held.split_off(17);
            let forwarded_bytes: Vec<u8> = forwarded.iter().flat_map(|b| b.to_vec()).collect();
            sink.writev_behind(&mut forwarded)
                .await
                .expect("forward write-behind");
            assert!(forwarded.is_empty(), "handed to the platform");
            // 17 of the task's own: the send's buffers cannot get it to 16.
            assert_hold_limit(&ours.recv().await.expect_err("17 held by the task"));
            // 16 of its own: the send's buffers will resume it, so it waits; nothing can
            // arrive while the sink's far end reads nothing.
            held.remove(0);
            assert!(
                timeout(Duration::from_millis(200), ours.recv())
                    .await
                    .is_err(),
                "recv must wait for the send, not fail or return data"
            );
            assert!(
                ours.try_recv().expect("no error while waiting").is_none(),
                "nothing can be queued yet"
            );
            // Drain the sink: the send finishes, its buffers go back, the receive resumes.
            let sink_reader =
                seastar::spawn(async move { client::read_to_end(&sink_far, FILL + TOTAL).await });
            recv_to_end(&ours, &mut got).await;
            assert!(got == sent, "bytes lost, duplicated or reordered");
            sink.flush().await.expect("the forwarded send went out");
            drop(sink);
            let drained = sink_reader.await.expect("sink reader").expect("sink read");
            assert_eq!(drained.len(), filled + forwarded_bytes.len());
            assert!(
                drained[filled..] == forwarded_bytes[..],
                "forwarded bytes went out whole, in order"
            );
            drop(held);
            drop(peer.await.expect("peer"));
            drop(ours);
            client::assert_all_pool_buffers_back("after the forwarded send").await;
        })
        .expect("runtime");
}

seastar_tests::on_both_backends! {
    holding_every_buffer_fails_then_resumes_after_release => 30,
    buffers_in_an_unfinished_send_keep_recv_waiting => 60,
}
