//! `TcpStream::write_behind` / `writev_behind` / `flush`: sends that the task does not wait
//! for, on both backends:
//!
//! - an echo that answers every `recv` buffer write-behind (single and gathered) delivers
//!   every byte in order, and every pool buffer comes back once the sends are done;
//! - a send far larger than the socket buffers, to a peer that starts reading late, completes
//!   whole (the platform resumes partial sends itself), a second one queued behind it waits
//!   for it, and `flush` reports success only when both are out;
//! - a plain `write_all` and `shutdown(Write)` after write-behind bytes go out after them;
//! - dropping a stream with a large send in flight closes it only after the send: the peer
//!   reads every byte, then end of stream;
//! - a send to a peer that reset the connection fails, and the stream's next operation says
//!   so;
//! - an echo whose gathered sends hold more pool buffers than a receive may keep does not
//!   stall: the receive, paused until they come back, resumes when the send finishes;
//! - every buffer type goes out write-behind, alone or gathered, in call order: `Vec`s,
//!   static bytes and strings (handed to the driver as they are), boxed slices and windows
//!   (boxed), empty ones (skipped).

use std::io;
use std::time::Duration;

use seastar::net::TcpStream;
use seastar::time::sleep;
use seastar::Backend;
use seastar_tests::client::{self, must_runtime};
use seastar_tests::payload::PatternStream;
use seastar_tests::rng::Rng;

/// Echo answering each buffer write-behind; what arrived meanwhile goes out gathered.
async fn echo_behind(stream: TcpStream) -> io::Result<u64> {
    let mut total = 0;
    // One gather list for the connection: `writev_behind` empties it and keeps its memory.
    let mut batch = Vec::new();
    while let Some(first) = stream.recv().await? {
        total += first.len() as u64;
        let Some(second) = stream.try_recv()? else {
            stream.write_behind(first).await?;
            continue;
        };
        total += second.len() as u64;
        batch.extend([first, second]);
        while let Some(more) = stream.try_recv()? {
            total += more.len() as u64;
            batch.push(more);
        }
        let capacity = batch.capacity();
        stream.writev_behind(&mut batch).await?;
        assert!(batch.is_empty(), "writev_behind takes every buffer");
        assert_eq!(batch.capacity(), capacity, "and leaves the allocation");
    }
    stream.flush().await?;
    Ok(total)
}

fn echo_behind_keeps_every_byte_in_order(backend: Backend) {
    const CONNS: u64 = 16;
    const MESSAGES: usize = 40;
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (l, addr) = client::bind_loopback();
            let server = seastar::spawn(async move {
                let mut handlers = Vec::new();
                for _ in 0..CONNS {
                    let (s, _) = l.accept().await.expect("accept");
                    handlers.push(seastar::spawn(echo_behind(s)));
                }
                let mut total = 0;
                for h in handlers {
                    total += h.await.expect("handler").expect("echo");
                }
                total
            });
            let mut clients = Vec::new();
            for c in 0..CONNS {
                clients.push(seastar::spawn(async move {
                    let s = TcpStream::connect(addr).await.expect("connect");
                    let mut rng = Rng::new(0xBE41_0000 + c);
                    let (mut tx, mut rx) = (PatternStream::new(c), PatternStream::new(c));
                    for _ in 0..MESSAGES {
                        // Mostly small; sometimes several pool buffers' worth, sent in two
                        // writes so the server sees more than one buffer at once.
                        let len = if rng.next_u64().is_multiple_of(4) {
                            1 + (rng.next_u64() % (100 * 1024)) as usize
                        } else {
                            1 + (rng.next_u64() % 500) as usize
                        };
                        let msg = tx.next_chunk(len);
                        let (a, b) = msg.split_at(len / 2);
                        client::writev_all(&s, vec![a.to_vec(), b.to_vec()])
                            .await
                            .expect("send");
                        let got = client::read_exact(&s, len).await.expect("echo back");
                        rx.check(&got)
                            .unwrap_or_else(|e| panic!("connection {c}: {e}"));
                    }
                    s.shutdown(std::net::Shutdown::Write)
                        .await
                        .expect("shutdown");
                    let rest = client::read_to_end(&s, 1).await.expect("eof");
                    assert!(rest.is_empty(), "nothing after the echoes");
                    rx.position()
                }));
            }
            let mut sent = 0;
            for c in clients {
                sent += c.await.expect("client");
            }
            assert_eq!(server.await.expect("server"), sent, "echoed every byte");
            // The buffers of finished sends are back.
            client::assert_all_pool_buffers_back("after the echoes").await;
        })
        .expect("runtime");
}

fn large_sends_complete_whole_to_a_late_reader(backend: Backend) {
    const FIRST: usize = 8 << 20;
    const SECOND: usize = 1 << 20;
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (l, addr) = client::bind_loopback();
            let server = seastar::spawn(async move {
                let (s, _) = l.accept().await.expect("accept");
                let mut tx = PatternStream::new(1);
                s.write_behind(tx.next_chunk(FIRST)).await?;
                // Waits for the first send (far beyond the socket buffers: it is sent in
                // parts as the peer reads), then queues the second.
                s.writev_behind(&mut vec![tx.next_chunk(SECOND)]).await?;
                s.flush().await?;
                s.shutdown(std::net::Shutdown::Write).await
            });
            let c = TcpStream::connect(addr).await.expect("connect");
            // Let the server's send fill the socket buffers and wait.
            sleep(Duration::from_millis(50)).await;
            let got = client::read_exact(&c, FIRST + SECOND).await.expect("read");
            PatternStream::new(1).check(&got).expect("the bytes sent");
            let rest = client::read_to_end(&c, 1).await.expect("eof");
            assert!(rest.is_empty());
            server
                .await
                .expect("server")
                .expect("sends, flush and shutdown");
        })
        .expect("runtime");
}

fn later_writes_and_shutdown_go_after_write_behind_bytes(backend: Backend) {
    const BEHIND: usize = 3 << 20;
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (l, addr) = client::bind_loopback();
            let server = seastar::spawn(async move {
                let (s, _) = l.accept().await.expect("accept");
                let mut tx = PatternStream::new(2);
                s.write_behind(tx.next_chunk(BEHIND)).await?;
                let (res, _) = s.write_all(tx.next_chunk(1000)).await;
                res?;
                s.write_behind(tx.next_chunk(BEHIND)).await?;
                // No flush: the shutdown itself waits for the bytes.
                s.shutdown(std::net::Shutdown::Write).await
            });
            let c = TcpStream::connect(addr).await.expect("connect");
            let got = client::read_to_end(&c, 2 * BEHIND + 2000)
                .await
                .expect("read");
            assert_eq!(
                got.len(),
                2 * BEHIND + 1000,
                "every byte, then end of stream"
            );
            PatternStream::new(2).check(&got).expect("in order");
            server.await.expect("server").expect("server side");
        })
        .expect("runtime");
}

fn write_behind_takes_any_buffer_type_in_order(backend: Backend) {
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (l, addr) = client::bind_loopback();
            let server = seastar::spawn(async move {
                let (s, _) = l.accept().await.expect("accept");
                s.write_behind(b"vec|".to_vec()).await?;
                s.write_behind(&b"static|"[..]).await?;
                s.write_behind("str|").await?;
                s.write_behind(Vec::new()).await?;
                s.write_behind(b"boxed|".to_vec().into_boxed_slice())
                    .await?;
                s.write_behind(seastar::buf::Slice::new(b"xxwindow|".to_vec(), 2..))
                    .await?;
                s.writev_behind(&mut vec![b"g1|".to_vec(), Vec::new(), b"g2|".to_vec()])
                    .await?;
                s.writev_behind(&mut vec!["s1|", "s2"]).await?;
                s.shutdown(std::net::Shutdown::Write).await
            });
            let c = TcpStream::connect(addr).await.expect("connect");
            let got = client::read_to_end(&c, 1 << 10).await.expect("read");
            assert_eq!(
                String::from_utf8_lossy(&got),
                "vec|static|str|boxed|window|g1|g2|s1|s2"
            );
            server.await.expect("server").expect("server side");
        })
        .expect("runtime");
}

fn dropped_stream_closes_after_its_send(backend: Backend) {
    const LEN: usize = 6 << 20;
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (l, addr) = client::bind_loopback();
            let server = seastar::spawn(async move {
                let (s, _) = l.accept().await.expect("accept");
                let chunk = PatternStream::new(3).next_chunk(LEN);
                s.write_behind(chunk).await.expect("queue");
                drop(s); // with the send in flight: the peer still gets every byte
            });
            let c = TcpStream::connect(addr).await.expect("connect");
            server.await.expect("server");
            sleep(Duration::from_millis(20)).await;
            let got = client::read_to_end(&c, LEN + 1).await.expect("read");
            assert_eq!(got.len(), LEN, "every byte, then end of stream");
            PatternStream::new(3).check(&got).expect("the bytes sent");
        })
        .expect("runtime");
}

fn failed_send_is_reported_by_the_next_operation(backend: Backend) {
    must_runtime(backend, 1)
        .run_on_one(|| async {
            let (c, s) = client::connected_pair().await;
            // The peer resets the connection.
            c.set_linger(Some(Duration::ZERO)).expect("linger");
            drop(c);
            sleep(Duration::from_millis(20)).await;
            let mut failure = None;
            for _ in 0..100 {
                if let Err(e) = s.write_behind(b"after the reset".to_vec()).await {
                    failure = Some(e);
                    break;
                }
                sleep(Duration::from_millis(2)).await;
            }
            let e = failure.expect("a send to a reset connection fails");
            assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ),
                "{e}"
            );
            // Reported once: the stream is idle now.
            s.flush().await.expect("nothing left in flight");
        })
        .expect("runtime");
}

/// Gathered echoes of many small pool buffers: a send in flight holds more buffers than the
/// receive may keep (the hold limit), so the receive pauses until the send gives them back.
/// The send finishing must then wake the task waiting in `recv` (else both wait forever).
fn echo_behind_resumes_a_receive_paused_by_its_own_sends(backend: Backend) {
    const TOTAL: usize = 8 << 20;
    let rt = seastar::Runtime::builder()
        .cores(1)
        .pin(false)
        .backend(backend)
        .recv_pool(256, 1024)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.run_on_one(|| async {
        let (l, addr) = client::bind_loopback();
        let server = seastar::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            echo_behind(s).await
        });
        let c = std::rc::Rc::new(TcpStream::connect(addr).await.expect("connect"));
        let reader = {
            let c = c.clone();
            seastar::spawn(async move { client::read_exact(&c, TOTAL).await })
        };
        let mut tx = PatternStream::new(4);
        for _ in 0..TOTAL / (256 * 1024) {
            client::write_all(&c, tx.next_chunk(256 * 1024))
                .await
                .expect("send");
        }
        let got = reader.await.expect("reader").expect("every echo");
        PatternStream::new(4).check(&got).expect("in order");
        c.shutdown(std::net::Shutdown::Write)
            .await
            .expect("shutdown");
        assert_eq!(server.await.expect("server").expect("echo"), TOTAL as u64);
    })
    .expect("runtime");
}

seastar_tests::on_both_backends! {
    echo_behind_resumes_a_receive_paused_by_its_own_sends => 30,
    echo_behind_keeps_every_byte_in_order => 120,
    large_sends_complete_whole_to_a_late_reader,
    later_writes_and_shutdown_go_after_write_behind_bytes,
    dropped_stream_closes_after_its_send,
    failed_send_is_reported_by_the_next_operation,
    write_behind_takes_any_buffer_type_in_order,
}
