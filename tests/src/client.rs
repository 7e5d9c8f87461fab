//! Running code on a Seastar-RS runtime, and owned-buffer I/O loops over its `TcpStream`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use seastar::net::{TcpListener, TcpStream};
use seastar::{Backend, Runtime};

use crate::{pool_counts, LOOPBACK_ANY_PORT};

/// Builds an unpinned runtime with `cores` cores on `backend`, and checks that it really runs
/// on that backend (no silent fallback).
pub fn runtime(backend: Backend, cores: usize) -> io::Result<Runtime> {
    runtime_with(backend, cores, None)
}

/// [`runtime`] with a ring configuration for the io_uring backend (ignored by mio).
pub fn runtime_with(
    backend: Backend,
    cores: usize,
    uring: Option<seastar::runtime::UringConfig>,
) -> io::Result<Runtime> {
    let mut b = Runtime::builder().cores(cores).pin(false).backend(backend);
    if let Some(cfg) = uring {
        b = b.uring_config(cfg);
    }
    let rt = b.build().map_err(|e| {
        io::Error::other(format!("Runtime::build({backend:?}, {cores} cores): {e}"))
    })?;
    if rt.backend() != backend {
        return Err(io::Error::other(format!(
            "asked for backend {backend:?}, the runtime uses {:?}",
            rt.backend()
        )));
    }
    Ok(rt)
}

/// Like [`runtime`] but panics on failure.
pub fn must_runtime(backend: Backend, cores: usize) -> Runtime {
    runtime(backend, cores).unwrap_or_else(|e| panic!("{e}"))
}

/// A listener on a free loopback port, and its address (panics if it cannot bind).
pub fn bind_loopback() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind(LOOPBACK_ANY_PORT).expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

/// A connected loopback pair of our streams: (the connecting side, the accepted side).
pub async fn connected_pair() -> (TcpStream, TcpStream) {
    let (l, addr) = bind_loopback();
    let c = TcpStream::connect(addr).await.expect("connect");
    let (s, _) = l.accept().await.expect("accept");
    (c, s)
}

/// Waits (bounded, about a second) until every buffer of this core's receive pool is back
/// in the pool, and panics naming `what` otherwise: buffers held by cancelled receives or
/// finished sends come back when the platform reports them done, a loop iteration or two
/// later.
pub async fn assert_all_pool_buffers_back(what: &str) {
    for _ in 0..200 {
        let (total, free) = pool_counts();
        if total > 0 && free == total {
            return;
        }
        seastar::time::sleep(Duration::from_millis(5)).await;
    }
    let (total, free) = pool_counts();
    panic!("{what}: {free} of {total} pool buffers back: the rest leaked");
}

/// Reads exactly `n` bytes. An EOF first is an `UnexpectedEof` error that says how many bytes
/// did arrive.
pub async fn read_exact(s: &TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let want = (n - out.len()).min(256 * 1024);
        let (res, buf) = s.read(Vec::with_capacity(want)).await;
        let k = res?;
        if k == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF after {} of {n} bytes", out.len()),
            ));
        }
        assert!(
            k <= want,
            "read reported {k} bytes into a {want}-byte buffer"
        );
        out.extend_from_slice(&buf[..k]);
    }
    Ok(out)
}

/// One read of at most `cap` bytes: the data (empty at EOF).
pub async fn read_some(s: &TcpStream, cap: usize) -> io::Result<Vec<u8>> {
    let (res, mut buf) = s.read(Vec::with_capacity(cap)).await;
    let k = res?;
    assert!(k <= cap, "read reported {k} bytes into a {cap}-byte buffer");
    assert!(
        buf.len() >= k,
        "read reported {k} bytes but initialised {}",
        buf.len()
    );
    buf.truncate(k);
    Ok(buf)
}

/// Reads until EOF (at most `limit` bytes; more is an error).
pub async fn read_to_end(s: &TcpStream, limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let chunk = read_some(s, 64 * 1024).await?;
        if chunk.is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        if out.len() > limit {
            return Err(io::Error::other(format!(
                "more than {limit} bytes before EOF"
            )));
        }
    }
}

/// Writes all of `data`.
pub async fn write_all(s: &TcpStream, data: Vec<u8>) -> io::Result<()> {
    let (res, _) = s.write_all(data).await;
    res
}

/// Writes `parts` with `writev`, continuing after a short write with `write_all` on what is
/// left.
pub async fn writev_all(s: &TcpStream, parts: Vec<Vec<u8>>) -> io::Result<()> {
    let total: usize = parts.iter().map(Vec::len).sum();
    let (res, parts) = s.writev(parts).await;
    let n = res?;
    assert!(n <= total, "writev reported {n} of {total} bytes");
    if n == total {
        return Ok(());
    }
    // Short write: send the rest.
    let rest: Vec<u8> = parts.concat()[n..].to_vec();
    write_all(s, rest).await
}

/// The echo service: reads and writes back everything until EOF, then shuts down the write
/// side. Returns the number of bytes echoed.
pub async fn echo(s: TcpStream) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let (res, buf) = s.read(Vec::with_capacity(64 * 1024)).await;
        let n = res?;
        if n == 0 {
            s.shutdown(std::net::Shutdown::Write).await?;
            return Ok(total);
        }
        let mut buf = buf;
        buf.truncate(n);
        let (res, _) = s.write_all(buf).await;
        res?;
        total += n as u64;
    }
}

/// Our client's round trips on an echo connection (see [`crate::proto`]): every echo checked
/// byte for byte; about half the messages go out with `writev` in up to three parts. Ends with
/// a half-close and the server's EOF. Returns the local address and the bytes sent.
pub async fn round_trips(
    addr: std::net::SocketAddr,
    pool: &crate::payload::Pool,
    seed: u64,
    conn: u64,
    rounds: usize,
) -> io::Result<(std::net::SocketAddr, u64)> {
    use crate::rng::Rng;
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    if !s.nodelay()? {
        return Err(io::Error::other("TCP_NODELAY did not stick"));
    }
    if s.peer_addr()? != addr {
        return Err(io::Error::other(format!(
            "peer_addr {} != {addr}",
            s.peer_addr()?
        )));
    }
    let local = s.local_addr()?;
    let mut rng = Rng::for_stream(seed, conn);
    let mut total = 0u64;
    for round in 0..rounds {
        let len = crate::proto::message_size(&mut rng, round);
        let m = pool.pick(&mut rng, len);
        let data = pool.slice(m).to_vec();
        if len >= 3 && rng.next_u64().is_multiple_of(2) {
            let a = rng.range_inclusive(0, len);
            let b = rng.range_inclusive(a, len);
            let parts = vec![data[..a].to_vec(), data[a..b].to_vec(), data[b..].to_vec()];
            writev_all(&s, parts).await?;
        } else {
            write_all(&s, data).await?;
        }
        let got = read_exact(&s, len).await?;
        pool.check(m, &got).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("conn {conn} round {round}: {e}"),
            )
        })?;
        total += len as u64;
    }
    s.shutdown(std::net::Shutdown::Write).await?;
    let rest = read_to_end(&s, 1 << 20).await?;
    if !rest.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("conn {conn}: {} unexpected bytes before EOF", rest.len()),
        ));
    }
    Ok((local, total))
}

/// Our bulk sender (see [`crate::proto`]): `total` bytes, half-close, receipt checked, EOF.
pub async fn bulk_send(s: &TcpStream, seed: u64, total: u64) -> io::Result<crate::proto::Receipt> {
    use crate::proto::{bulk_chunk, Receipt};
    let mut tx = crate::payload::PatternStream::new(seed);
    let mut hash = crate::checksum::Fnv64::new();
    let mut rng = crate::rng::Rng::new(seed);
    while tx.position() < total {
        let n = (bulk_chunk(&mut rng) as u64).min(total - tx.position()) as usize;
        let chunk = tx.next_chunk(n);
        hash.update(&chunk);
        write_all(s, chunk).await?;
    }
    s.shutdown(std::net::Shutdown::Write).await?;
    let reply = read_to_end(s, Receipt::SIZE).await?;
    if reply.len() != Receipt::SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("receipt of {} bytes, want {}", reply.len(), Receipt::SIZE),
        ));
    }
    let mine = Receipt::of(&hash);
    let theirs = Receipt::decode(&reply);
    if mine != theirs {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("receipt mismatch: sent {mine:?}, receiver saw {theirs:?}"),
        ));
    }
    Ok(mine)
}

/// Our bulk receiver: reads to EOF checking every byte, sends the receipt, half-closes.
pub async fn bulk_receive(s: &TcpStream, seed: u64) -> io::Result<crate::proto::Receipt> {
    bulk_receive_with(s, seed, 256 * 1024).await
}

/// [`bulk_receive`] with reads of up to `cap` bytes.
pub async fn bulk_receive_with(
    s: &TcpStream,
    seed: u64,
    cap: usize,
) -> io::Result<crate::proto::Receipt> {
    let mut rx = crate::proto::BulkReceiver::new(seed);
    loop {
        let chunk = read_some(s, cap).await?;
        if chunk.is_empty() {
            break;
        }
        rx.feed(&chunk)?;
    }
    let r = rx.receipt();
    write_all(s, r.encode()).await?;
    s.shutdown(std::net::Shutdown::Write).await?;
    Ok(r)
}

/// The framed echo service (see [`crate::proto`]): echoes whole frames; a clean EOF between
/// frames ends it with the number of payload bytes; an EOF inside a frame is
/// `UnexpectedEof`; any I/O error is returned as is.
pub async fn framed_echo(s: TcpStream) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let first = read_some(&s, 4).await?;
        if first.is_empty() {
            return Ok(total);
        }
        let mut header = first;
        if header.len() < 4 {
            let rest = read_exact(&s, 4 - header.len()).await?;
            header.extend_from_slice(&rest);
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let payload = read_exact(&s, len).await?;
        total += len as u64;
        let mut out = header;
        out.extend_from_slice(&payload);
        write_all(&s, out).await?;
    }
}
