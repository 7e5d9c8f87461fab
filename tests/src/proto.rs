//! The little protocols the tests speak, for both `std::net` peers and ours.
//!
//! - Round trips: a connection sends a message, reads the echo, checks every byte, repeats.
//!   Message sizes come from a per-connection [`Rng`]: the first is 1 byte, the second
//!   [`MAX_MESSAGE`] (64 KiB), the rest log-uniform in 1 B..=64 KiB.
//! - Bulk: the sender sends `total` bytes of a [`PatternStream`] and shuts down its write side;
//!   the receiver checks every byte, and answers with a 16-byte [`Receipt`] (byte count and
//!   FNV-1a 64 of what it received), which the sender compares with its own.
//! - Framed: `[len: u32 LE][len bytes]`, echoed whole; lets a server tell "half a message"
//!   from a clean end of stream.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use crate::checksum::Fnv64;
use crate::payload::{PatternStream, Pool, MAX_MESSAGE};
use crate::rng::Rng;

/// Size of round trip `round` of a connection.
pub fn message_size(rng: &mut Rng, round: usize) -> usize {
    match round {
        0 => 1,
        1 => MAX_MESSAGE,
        _ => rng.log_uniform(1, MAX_MESSAGE),
    }
}

/// Sizes of the chunks a bulk sender writes: log-uniform in 1 B..=256 KiB.
pub fn bulk_chunk(rng: &mut Rng) -> usize {
    rng.log_uniform(1, 256 * 1024)
}

/// Byte count and checksum of a bulk transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Bytes transferred.
    pub len: u64,
    /// FNV-1a 64 of them.
    pub fnv: u64,
}

impl Receipt {
    /// Wire size.
    pub const SIZE: usize = 16;

    /// Of a finished hash.
    pub fn of(h: &Fnv64) -> Self {
        Self {
            len: h.len(),
            fnv: h.digest(),
        }
    }

    /// `len` then `fnv`, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::SIZE);
        v.extend_from_slice(&self.len.to_le_bytes());
        v.extend_from_slice(&self.fnv.to_le_bytes());
        v
    }

    /// Inverse of [`encode`](Self::encode).
    pub fn decode(b: &[u8]) -> Self {
        assert_eq!(b.len(), Self::SIZE, "receipt must be {} bytes", Self::SIZE);
        let (l, f) = b.split_at(8);
        Self {
            len: u64::from_le_bytes(l.try_into().expect("8 bytes")),
            fnv: u64::from_le_bytes(f.try_into().expect("8 bytes")),
        }
    }
}

/// The receiving side of a bulk transfer, fed chunk by chunk.
#[derive(Debug)]
pub struct BulkReceiver {
    pattern: PatternStream,
    hash: Fnv64,
}

impl BulkReceiver {
    /// For a transfer of the stream with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            pattern: PatternStream::new(seed),
            hash: Fnv64::new(),
        }
    }

    /// Checks and hashes the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.pattern
            .check(chunk)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.hash.update(chunk);
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.hash.len()
    }

    /// What to answer.
    pub fn receipt(&self) -> Receipt {
        Receipt::of(&self.hash)
    }
}

/// A std client's round trips on an echo connection: `rounds` messages from `pool`, every byte
/// of every echo checked; then a half-close and the echo server's EOF. Returns the client's
/// local address and the bytes it sent.
pub fn std_round_trips(
    addr: SocketAddr,
    pool: &Pool,
    seed: u64,
    conn: u64,
    rounds: usize,
) -> io::Result<(SocketAddr, u64)> {
    let mut s = crate::stdnet::connect(addr)?;
    let local = s.local_addr()?;
    let mut rng = Rng::for_stream(seed, conn);
    let mut total = 0u64;
    let mut got = vec![0u8; MAX_MESSAGE];
    for round in 0..rounds {
        let len = message_size(&mut rng, round);
        let m = pool.pick(&mut rng, len);
        s.write_all(pool.slice(m))?;
        s.read_exact(&mut got[..len])?;
        pool.check(m, &got[..len]).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("conn {conn} round {round}: {e}"),
            )
        })?;
        total += len as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("conn {conn}: {} unexpected bytes before EOF", rest.len()),
        ));
    }
    Ok((local, total))
}

/// A std bulk receiver: reads to EOF checking every byte, then sends the receipt.
pub fn std_bulk_receive(s: &mut TcpStream, seed: u64) -> io::Result<Receipt> {
    let mut rx = BulkReceiver::new(seed);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        rx.feed(&buf[..n])?;
    }
    let r = rx.receipt();
    s.write_all(&r.encode())?;
    s.shutdown(Shutdown::Write)?;
    Ok(r)
}

/// A std bulk sender: sends `total` bytes, half-closes, reads and checks the receipt and EOF.
pub fn std_bulk_send(s: &mut TcpStream, seed: u64, total: u64) -> io::Result<Receipt> {
    let mut tx = PatternStream::new(seed);
    let mut hash = Fnv64::new();
    let mut rng = Rng::new(seed);
    let mut chunk = Vec::new();
    while tx.position() < total {
        let n = (bulk_chunk(&mut rng) as u64).min(total - tx.position()) as usize;
        chunk.clear();
        tx.fill(&mut chunk, n);
        hash.update(&chunk);
        s.write_all(&chunk)?;
    }
    s.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
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

/// A framed message: `[len u32 LE][payload]`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}
