use std::io;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use super::*;
use crate::runtime::{Backend, Runtime};

fn runtimes() -> Vec<Runtime> {
    let mut v = Vec::new();
    for b in [Backend::Mio, Backend::IoUring] {
        match Runtime::builder().cores(1).pin(false).backend(b).build() {
            Ok(rt) => v.push(rt),
            Err(e) => eprintln!("{b} unavailable here, skipping: {e}"),
        }
    }
    v
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Echo one connection with a reused buffer until the peer half-closes, then half-close.
async fn echo(stream: TcpStream) -> io::Result<u64> {
    let mut buf = Vec::with_capacity(4096);
    let mut total = 0;
    loop {
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            stream.shutdown(Shutdown::Write).await?;
            return Ok(total);
        }
        total += n as u64;
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        res?;
    }
}

#[test]
fn echo_round_trips_on_each_backend() {
    for rt in runtimes() {
        let backend = rt.backend();
        let out = rt
            .run_on_one(|| async {
                let listener = TcpListener::bind(any_port())?;
                let addr = listener.local_addr()?;
                let server = crate::spawn(async move {
                    let (stream, peer) = listener.accept().await?;
                    assert_eq!(peer, stream.peer_addr()?);
                    echo(stream).await
                });
                let client = TcpStream::connect(addr).await?;
                client.set_nodelay(true)?;
                assert!(client.nodelay()?);
                assert_eq!(client.peer_addr()?, addr);
                let mut got = Vec::new();
                for i in 0..100u32 {
                    let msg = format!("message {i}").into_bytes();
                    let (res, _) = client.write_all(msg.clone()).await;
                    res?;
                    let mut buf = Vec::with_capacity(64);
                    while buf.len() < msg.len() {
                        let (res, b) = client.read(Vec::with_capacity(64)).await;
                        let n = res?;
                        buf.extend_from_slice(&b[..n]);
                        if n == 0 {
                            break;
                        }
                    }
                    assert_eq!(buf, msg);
                    got.push(buf);
                }
                client.shutdown(Shutdown::Write).await?;
                let (res, _) = client.read(Vec::with_capacity(8)).await;
                assert_eq!(res?, 0, "the server half-closed after our half-close");
                let echoed = server.await.map_err(io::Error::other)??;
                Ok::<_, io::Error>((got.len(), echoed))
            })
            .expect("runtime");
        let (n, echoed) = out.unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(n, 100);
        assert!(echoed > 0);
    }
}

#[test]
fn big_writes_and_vectored_writes_arrive_whole() {
    for rt in runtimes() {
        let backend = rt.backend();
        let res = rt
            .run_on_one(|| async {
                let listener = TcpListener::bind(any_port())?;
                let addr = listener.local_addr()?;
                let reader = crate::spawn(async move {
                    let (stream, _) = listener.accept().await?;
                    let (rd, _wr) = stream.into_split();
                    let mut all = Vec::new();
                    loop {
                        let (res, b) = rd.read(Vec::with_capacity(64 * 1024)).await;
                        let n = res?;
                        if n == 0 {
                            return Ok::<_, io::Error>(all);
                        }
                        all.extend_from_slice(&b[..n]);
                    }
                });
                let client = TcpStream::connect(addr).await?;
                let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
                let (res, big) = client.write_all(big).await;
                res?;
                // 1500 small buffers: more than one writev's worth.
                let parts: Vec<Vec<u8>> = (0..1500u32).map(|i| i.to_le_bytes().to_vec()).collect();
                let (res, parts) = client.writev_all(parts).await;
                res?;
                let (res, _) = client.writev(vec![&b"ab"[..], &b"cd"[..]]).await;
                assert_eq!(res?, 4);
                // More than UIO_MAXIOV buffers: the first 1024 go out, all come back.
                let many: Vec<&'static [u8]> = vec![&b"z"[..]; 1025];
                let (res, many) = client.writev(many).await;
                assert_eq!((res?, many.len()), (1024, 1025));
                // Zero-capacity reads and empty writes return at once.
                let (res, _) = client.read(Vec::new()).await;
                assert_eq!(res?, 0);
                let (res, _) = client.write(Vec::new()).await;
                assert_eq!(res?, 0);
                client.shutdown(Shutdown::Write).await?;
                let all = reader.await.map_err(io::Error::other)??;
                let mut expected = big;
                for p in &parts {
                    expected.extend_from_slice(p);
                }
                expected.extend_from_slice(b"abcd");
                expected.extend_from_slice(&[b'z'; 1024]);
                Ok::<_, io::Error>(all == expected)
            })
            .expect("runtime");
        assert!(
            res.unwrap_or_else(|e| panic!("{backend}: {e}")),
            "{backend}"
        );
    }
}

#[test]
fn errors_have_std_kinds() {
    for rt in runtimes() {
        let backend = rt.backend();
        let res = rt
            .run_on_one(|| async {
                // Refused: a port nobody listens on (bound without listening, so it stays ours).
                let holder = std::net::TcpListener::bind(any_port())?;
                let addr = holder.local_addr()?;
                drop(holder);
                let refused = TcpStream::connect(addr).await.map(drop);
                // Address in use: an exclusive listener on a port already taken.
                let taken = TcpListener::bind(any_port())?;
                let in_use = ListenOptions::new()
                    .reuse_port(false)
                    .bind(taken.local_addr()?)
                    .map(drop);
                // Reset: the peer closes with SO_LINGER 0.
                let addr = taken.local_addr()?;
                let client = TcpStream::connect(addr).await?;
                let (server_side, _) = taken.accept().await?;
                server_side.set_linger(Some(Duration::ZERO))?;
                assert_eq!(server_side.linger()?, Some(Duration::ZERO));
                drop(server_side);
                let (reset, _) = client.read(Vec::with_capacity(16)).await;
                Ok::<_, io::Error>((refused, in_use, reset))
            })
            .expect("runtime");
        let (refused, in_use, reset) = res.unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(
            refused.err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionRefused),
            "{backend}"
        );
        assert_eq!(
            in_use.err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse),
            "{backend}"
        );
        assert_eq!(
            reset.err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionReset),
            "{backend}"
        );
    }
}

#[test]
fn sockets_need_a_core() {
    let e = TcpListener::bind(any_port()).err().map(|e| e.to_string());
    assert!(e.is_some_and(|m| m.contains("not on a Seastar-RS core")));
}

#[test]
fn concurrent_accepts_each_get_a_connection() {
    for rt in runtimes() {
        let backend = rt.backend();
        let res = rt
            .run_on_one(|| async {
                let listener = Rc::new(TcpListener::bind(any_port())?);
                let addr = listener.local_addr()?;
                let mut acceptors = Vec::new();
                for _ in 0..8 {
                    let l = listener.clone();
                    acceptors.push(crate::spawn(async move {
                        let (s, _) = l.accept().await?;
                        let (res, b) = s.read(Vec::with_capacity(8)).await;
                        let n = res?;
                        Ok::<_, io::Error>(b[..n].to_vec())
                    }));
                }
                // One acceptor gives up while waiting: the others must still be served.
                let quitter = {
                    let l = listener.clone();
                    crate::time::timeout(Duration::from_millis(1), async move {
                        l.accept().await.map(drop)
                    })
                };
                assert!(quitter.await.is_err());
                let mut clients = Vec::new();
                for i in 0..8u8 {
                    let c = TcpStream::connect(addr).await?;
                    let (res, _) = c.write_all(vec![i]).await;
                    res?;
                    clients.push(c);
                }
                let mut got = Vec::new();
                for a in acceptors {
                    got.extend(a.await.map_err(io::Error::other)??);
                }
                got.sort_unstable();
                Ok::<_, io::Error>(got)
            })
            .expect("runtime");
        assert_eq!(
            res.unwrap_or_else(|e| panic!("{backend}: {e}")),
            (0..8).collect::<Vec<u8>>(),
            "{backend}"
        );
    }
}

#[test]
fn dropping_streams_with_reads_in_flight_is_clean() {
    for rt in runtimes() {
        let backend = rt.backend();
        let res = rt
            .run_on_one(|| async {
                let listener = TcpListener::bind(any_port())?;
                let addr = listener.local_addr()?;
                for round in 0..50u32 {
                    let client = TcpStream::connect(addr).await?;
                    let (server, _) = listener.accept().await?;
                    // A read that will never complete, given up on.
                    let r = crate::time::timeout(
                        Duration::from_micros(200),
                        server.read(Vec::with_capacity(1024)),
                    )
                    .await;
                    assert!(r.is_err());
                    drop(server);
                    // The client sees the close, and new connections (likely reusing the fd
                    // number) are unaffected.
                    let (res, _) = client.read(Vec::with_capacity(8)).await;
                    assert_eq!(res?, 0, "round {round}");
                }
                // Split halves: the socket stays open until both are dropped.
                let client = TcpStream::connect(addr).await?;
                let (server, _) = listener.accept().await?;
                let (rd, wr) = server.into_split();
                drop(rd);
                let (res, _) = wr.write_all(&b"still open"[..]).await;
                res?;
                let (res, b) = client.read(Vec::with_capacity(32)).await;
                assert_eq!(&b[..res?], b"still open");
                drop(wr);
                let (res, _) = client.read(Vec::with_capacity(8)).await;
                assert_eq!(res?, 0);
                Ok::<_, io::Error>(())
            })
            .expect("runtime");
        res.unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}

#[test]
fn every_core_accepts_on_a_shared_port() {
    for b in [Backend::Mio, Backend::IoUring] {
        let Ok(rt) = Runtime::builder().cores(2).pin(false).backend(b).build() else {
            continue;
        };
        // A free port, which both cores then bind with SO_REUSEPORT.
        let port = std::net::TcpListener::bind(any_port())
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        const CONNS: usize = 64;
        let bound = std::sync::Barrier::new(2);
        // Accepted by both cores together: each keeps accepting until all have arrived (a
        // core that stopped at a quiet spell would close its listener before its share of
        // the clients connected, when the client thread starts late on a loaded machine).
        let total = std::sync::atomic::AtomicUsize::new(0);
        let out = rt
            .run_on_all(|core| {
                let (bound, total) = (&bound, &total);
                async move {
                    let listener = TcpListener::bind(addr)?;
                    assert_eq!(listener.local_addr()?.port(), port);
                    // Both cores listen before any client connects (a short, deliberate block).
                    bound.wait();
                    let clients = (core == 0).then(|| {
                        std::thread::spawn(move || {
                            let conns: Vec<_> = (0..CONNS)
                                .map(|_| std::net::TcpStream::connect(addr))
                                .collect::<io::Result<_>>()?;
                            std::thread::sleep(Duration::from_millis(300));
                            drop(conns);
                            Ok::<_, io::Error>(())
                        })
                    });
                    let mut accepted = 0;
                    let started = std::time::Instant::now();
                    while total.load(std::sync::atomic::Ordering::SeqCst) < CONNS {
                        if started.elapsed() > Duration::from_secs(60) {
                            return Err(io::Error::other("not every client was accepted"));
                        }
                        // Wakes now and then to see whether the other core took the rest.
                        if let Ok(res) =
                            crate::time::timeout(Duration::from_millis(10), listener.accept()).await
                        {
                            res?;
                            accepted += 1;
                            total.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    if let Some(c) = clients {
                        c.join()
                            .map_err(|_| io::Error::other("client panicked"))??;
                    }
                    Ok::<_, io::Error>(accepted)
                }
            })
            .expect("runtime");
        let counts: Vec<usize> = out.into_iter().map(|r| r.expect("core")).collect();
        assert_eq!(counts.iter().sum::<usize>(), CONNS, "{b}: {counts:?}");
        assert!(
            counts.iter().all(|&c| c > 0),
            "{b}: one core got nothing: {counts:?}"
        );
    }
}

#[test]
fn writing_to_a_closed_peer_fails_with_a_std_kind() {
    for rt in runtimes() {
        let backend = rt.backend();
        let res = rt
            .run_on_one(|| async {
                let listener = TcpListener::bind(any_port())?;
                let client = TcpStream::connect(listener.local_addr()?).await?;
                let (server, _) = listener.accept().await?;
                drop(server);
                let chunk = vec![7u8; 64 * 1024];
                let mut last = Ok(());
                for _ in 0..64 {
                    let (res, _) = client.write_all(chunk.clone()).await;
                    last = res;
                    if last.is_err() {
                        break;
                    }
                }
                Ok::<_, io::Error>(last)
            })
            .expect("runtime");
        let kind = res
            .unwrap_or_else(|e| panic!("{backend}: {e}"))
            .err()
            .map(|e| e.kind());
        assert!(
            matches!(
                kind,
                Some(io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
            ),
            "{backend}: {kind:?}"
        );
    }
}

#[test]
fn one_multishot_accept_serves_many_connections() {
    use crate::runtime::{io_stats, IoStats};
    fn submitted() -> u64 {
        match io_stats() {
            Some(IoStats::Uring(s)) => s.ops,
            Some(IoStats::Mio(s)) => s.submitted,
            None => 0,
        }
    }
    for rt in runtimes() {
        let backend = rt.backend();
        let res = rt
            .run_on_one(|| async {
                let listener = TcpListener::bind(any_port())?;
                let addr = listener.local_addr()?;
                // Blocking clients on another thread, so this core submits nothing for them.
                let clients = std::thread::spawn(move || {
                    (0..20)
                        .map(|_| std::net::TcpStream::connect(addr))
                        .collect::<io::Result<Vec<_>>>()
                });
                let before = submitted();
                for _ in 0..20 {
                    let (s, _) = listener.accept().await?;
                    drop(s);
                }
                let after = submitted();
                clients
                    .join()
                    .map_err(|_| io::Error::other("clients panicked"))??;
                Ok::<_, io::Error>(after - before)
            })
            .expect("runtime");
        assert_eq!(
            res.unwrap_or_else(|e| panic!("{backend}: {e}")),
            1,
            "{backend}"
        );
    }
}

/// A port whose last connection was closed by the server side (so the server's end sits in
/// TIME_WAIT) can be bound again at once, even without `SO_REUSEPORT`: the listener sets
/// `SO_REUSEADDR`, as `std` does on Unix (a bench once reported `AddrInUse` on a just-freed
/// port).
#[test]
fn rebinding_a_port_in_time_wait_works() {
    for rt in runtimes() {
        let backend = rt.backend();
        let res = rt
            .run_on_one(|| async {
                let listener = ListenOptions::new().reuse_port(false).bind(any_port())?;
                let addr = listener.local_addr()?;
                let client = TcpStream::connect(addr).await?;
                let (server_side, _) = listener.accept().await?;
                // The server closes first: its end of the connection goes to TIME_WAIT.
                server_side.shutdown(Shutdown::Both).await?;
                drop(server_side);
                let (res, _) = client.read(Vec::with_capacity(8)).await;
                assert_eq!(res?, 0, "the client sees the close");
                drop(client);
                drop(listener);
                let again = ListenOptions::new().reuse_port(false).bind(addr)?;
                assert_eq!(again.local_addr()?, addr);
                Ok::<_, io::Error>(())
            })
            .expect("runtime");
        res.unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}
