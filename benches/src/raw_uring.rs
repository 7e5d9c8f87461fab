//! The floor: an echo server on io_uring with no runtime at all, the pattern the issue names.
//!
//! * One ring, `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`, used by one thread.
//! * One multishot accept on the listener.
//! * One multishot receive per connection, selecting from a *provided-buffer ring*: the kernel
//!   picks a buffer per completion, the completion names it (`IORING_CQE_F_BUFFER`).
//! * The bytes are sent back from that same buffer (no copy); the buffer goes back to the
//!   buffer ring when its send completes. At most one send per connection is in flight, so
//!   echoes keep their order; chunks received meanwhile queue behind it, and the next send
//!   gathers every queued chunk (up to [`MAX_IOV`]) into one `sendmsg`.
//! * Exactly one `io_uring_enter` per loop iteration (`submit_and_wait(1)`: submit what the
//!   last iteration queued, run deferred task work, wait for one completion), then every
//!   completion is handled and the buffer ring's tail is published once.
//!
//! Memory rules (what makes the unsafe blocks sound):
//! * The buffer ring and the buffers are allocated once and leaked (`'static`): the kernel may
//!   touch them until the ring is torn down, which happens asynchronously after the ring's
//!   descriptor is closed, so they are never freed. Every SQE points only into them.
//! * A buffer is either in the buffer ring (the kernel's to fill), or held by exactly one
//!   connection's send queue (ours to read and the kernel's to send from), never both: it
//!   returns to the ring only after the send that reads it has completed, or unsent when the
//!   connection fails.
//! * A send's `msghdr` and `iovec`s live in boxes owned by the connection, which outlives
//!   the send (next rule); the boxes do not move when the connection table grows.
//! * A connection's descriptor is closed (its slot freed) only when its multishot receive has
//!   ended (a CQE without `IORING_CQE_F_MORE`) and no send is in flight: no SQE in the kernel
//!   names it any more, and no completion for the slot can arrive later.

use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};

/// Sizes of the floor server's ring and buffers.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries (multishot operations complete many times per submission).
    pub cq_entries: u32,
    /// Provided buffers (a power of two, at most 32768).
    pub buffers: u16,
    /// Bytes per provided buffer.
    pub buffer_size: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sq_entries: 1024,
            cq_entries: 16 * 1024,
            buffers: 4096,
            // The size every runtime's echo server reads with.
            buffer_size: crate::ECHO_BUF as u32,
        }
    }
}

/// Most chunks one `sendmsg` gathers.
pub const MAX_IOV: usize = 64;

const BGID: u16 = 0;
const KIND_ACCEPT: u64 = 1 << 32;
const KIND_RECV: u64 = 2 << 32;
const KIND_SEND: u64 = 3 << 32;
const KIND_MASK: u64 = 0xffff_ffff << 32;

/// The provided-buffer ring and its buffers (both leaked; see the module docs).
///
/// The ring memory is shared with the kernel, and the tail aliases the `resv` field of entry 0,
/// so it is kept as raw pointers: a reference to an entry lives only while that entry is
/// written, and a reference to the tail only while it is stored.
struct BufRing {
    entries: *mut BufRingEntry,
    count: u16,
    /// The ring's tail (the `resv` field of entry 0): the kernel reads it.
    tail: *const AtomicU16,
    /// The buffers, `count * buffer_size` bytes, leaked. Kept as a raw pointer: the kernel
    /// writes into buffers while we read others, so no Rust reference may span them all.
    data: *mut u8,
    buffer_size: usize,
    /// Tail including buffers returned but not yet published.
    local_tail: u16,
}

impl BufRing {
    fn new(count: u16, buffer_size: u32) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the buffer count must be a power of two <= 32768",
            ));
        }
        let layout = std::alloc::Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size (count >= 1).
        let base = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if base.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer ring"));
        }
        // SAFETY: `base` is the first entry of a zeroed (so initialised) ring allocation;
        // `tail` only computes the address of its `resv` field, a u16 at offset 14, 2-aligned,
        // inside the allocation. AtomicU16 has the layout of u16.
        let tail = unsafe { BufRingEntry::tail(base) }.cast::<AtomicU16>();
        let data = vec![0u8; usize::from(count) * buffer_size as usize]
            .leak()
            .as_mut_ptr();
        let mut ring = BufRing {
            entries: base,
            count,
            tail,
            data,
            buffer_size: buffer_size as usize,
            local_tail: 0,
        };
        for bid in 0..count {
            ring.give_back(bid);
        }
        ring.publish();
        Ok(ring)
    }

    fn base_addr(&self) -> u64 {
        self.entries as u64
    }

    /// Queue buffer `bid` for the kernel (seen after [`publish`](Self::publish)).
    fn give_back(&mut self, bid: u16) {
        let mask = usize::from(self.count) - 1;
        let addr = self.ptr(bid, 0) as u64;
        // SAFETY: the index is masked below `count`, so the entry is inside the leaked ring
        // allocation. The kernel does not read entries at or past the published tail, which is
        // where `local_tail` points, and no other reference into the ring is live now (the
        // tail's is made only inside `publish`). `set_*` do not touch `resv` (the tail).
        let entry = unsafe { &mut *self.entries.add(usize::from(self.local_tail) & mask) };
        entry.set_addr(addr);
        entry.set_len(self.buffer_size as u32);
        entry.set_bid(bid);
        self.local_tail = self.local_tail.wrapping_add(1);
    }

    /// Make every buffer given back visible to the kernel (a release store of the tail).
    fn publish(&mut self) {
        // SAFETY: `tail` points at a 2-aligned u16 inside the leaked ring allocation (see
        // `new`); no reference to entry 0 is live here. The kernel only reads it.
        let tail = unsafe { &*self.tail };
        tail.store(self.local_tail, Ordering::Release);
    }

    /// The address of byte `off` of buffer `bid`.
    fn ptr(&self, bid: u16, off: u32) -> *const u8 {
        let offset = usize::from(bid) * self.buffer_size + off as usize;
        assert!(
            bid < self.count && (off as usize) < self.buffer_size,
            "buffer {bid} offset {off} out of range"
        );
        // SAFETY: bid < count and off < buffer_size (asserted), so `offset` lies inside the
        // `count * buffer_size` bytes allocation `data` points to.
        unsafe { self.data.add(offset) }
    }
}

/// Part of a provided buffer waiting to be sent back.
#[derive(Debug)]
struct Chunk {
    bid: u16,
    off: u32,
    len: u32,
}

/// The `msghdr` and `iovec`s of a connection's send in flight.
struct SendMsg {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_IOV],
}

struct Conn {
    fd: OwnedFd,
    /// Boxed so its address is stable while the kernel reads it.
    msg: Box<SendMsg>,
    /// A multishot receive is in the kernel (its last CQE had `F_MORE`, or none came yet).
    recv_armed: bool,
    /// A send is in the kernel.
    sending: bool,
    /// The peer closed, or the connection failed: do not receive again.
    done: bool,
    queue: VecDeque<Chunk>,
}

struct Server {
    ring: IoUring,
    bufs: BufRing,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections whose receive ended for lack of buffers: re-armed after this iteration's
    /// buffers are published.
    rearm: Vec<usize>,
    listener_fd: RawFd,
}

/// Serve echo on `listener` forever (returns only on a ring error).
pub fn serve(listener: TcpListener, config: Config) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(config.cq_entries)
        .build(config.sq_entries)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("io_uring setup (SINGLE_ISSUER|DEFER_TASKRUN, Linux >= 6.1): {e}"),
            )
        })?;
    let bufs = BufRing::new(config.buffers, config.buffer_size)?;
    // SAFETY: the ring memory is page-aligned, holds `config.buffers` entries and is leaked,
    // so it stays valid until the ring is gone (and after).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.base_addr(), config.buffers, BGID, 0)?;
    }
    let mut server = Server {
        ring,
        bufs,
        conns: Vec::new(),
        free: Vec::new(),
        rearm: Vec::new(),
        listener_fd: listener.as_raw_fd(),
    };
    server.arm_accept()?;
    let result = server.run();
    // The listener must outlive the multishot accept that names it; it lives until here.
    drop(listener);
    result
}

impl Server {
    fn run(&mut self) -> io::Result<()> {
        let mut cqes = Vec::with_capacity(1024);
        loop {
            self.bufs.publish();
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                // Interrupted, or the CQ is full (EBUSY): take the completions and go on.
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            cqes.clear();
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, result, flags) in &cqes {
                let index = (user_data & !KIND_MASK) as usize;
                match user_data & KIND_MASK {
                    KIND_ACCEPT => self.on_accept(result, flags)?,
                    KIND_RECV => self.on_recv(index, result, flags)?,
                    KIND_SEND => self.on_send(index, result)?,
                    _ => unreachable!("unknown user_data {user_data:#x}"),
                }
            }
            for index in std::mem::take(&mut self.rearm) {
                if let Some(conn) = self.conns[index].as_mut() {
                    if !conn.done && !conn.recv_armed {
                        conn.recv_armed = true;
                        self.push_recv(index)?;
                    }
                }
            }
        }
    }

    /// Queue an SQE; if the submission queue is full, submit it first (a rare extra enter).
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid until the operation's final completion.
    unsafe fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(Fd(self.listener_fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(KIND_ACCEPT);
        // SAFETY: no pointers; the listener outlives the loop (`serve` drops it after).
        unsafe { self.push(entry) }
    }

    fn push_recv(&mut self, index: usize) -> io::Result<()> {
        let fd = self.conn(index).fd.as_raw_fd();
        let entry = opcode::RecvMulti::new(Fd(fd), BGID)
            .build()
            .user_data(KIND_RECV | index as u64);
        // SAFETY: no pointers (the kernel picks buffers from the leaked buffer ring); the
        // descriptor stays open until this receive's final CQE (module docs).
        unsafe { self.push(entry) }
    }

    fn conn(&mut self, index: usize) -> &mut Conn {
        match self.conns[index].as_mut() {
            Some(conn) => conn,
            None => unreachable!("completion for free slot {index}"),
        }
    }

    fn on_accept(&mut self, result: i32, flags: u32) -> io::Result<()> {
        if !cqueue::more(flags) {
            self.arm_accept()?;
        }
        if result < 0 {
            eprintln!(
                "raw-uring: accept: {}",
                io::Error::from_raw_os_error(-result)
            );
            return Ok(());
        }
        // SAFETY: a successful accept CQE's result is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(result) };
        crate::sys::set_nodelay(fd.as_raw_fd())?;
        // SAFETY: msghdr and iovec are plain C structs for which all-zero bytes are valid
        // (null pointers, zero lengths).
        let msg: Box<SendMsg> = Box::new(unsafe { std::mem::zeroed() });
        let conn = Conn {
            fd,
            msg,
            recv_armed: true,
            sending: false,
            done: false,
            queue: VecDeque::new(),
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.push_recv(index)
    }

    fn on_recv(&mut self, index: usize, result: i32, flags: u32) -> io::Result<()> {
        let more = cqueue::more(flags);
        let conn = self.conn(index);
        if !more {
            conn.recv_armed = false;
        }
        if result > 0 {
            let Some(bid) = cqueue::buffer_select(flags) else {
                unreachable!("a receive with data names its buffer");
            };
            conn.queue.push_back(Chunk {
                bid,
                off: 0,
                len: result as u32,
            });
            if !more && !conn.done {
                conn.recv_armed = true;
                self.push_recv(index)?;
            }
            self.send_next(index)?;
        } else if result == -libc::ENOBUFS && !conn.done {
            // Every buffer is queued for sending: try again once some came back.
            self.rearm.push(index);
        } else {
            // 0: the peer closed; < 0: the connection failed.
            conn.done = true;
        }
        self.maybe_close(index);
        Ok(())
    }

    fn on_send(&mut self, index: usize, result: i32) -> io::Result<()> {
        let conn = self.conn(index);
        conn.sending = false;
        if result < 0 {
            // The peer is gone: drop what was to be sent, and end the receive too.
            conn.done = true;
            let chunks: Vec<Chunk> = conn.queue.drain(..).collect();
            crate::sys::shutdown(conn.fd.as_raw_fd());
            for chunk in chunks {
                self.bufs.give_back(chunk.bid);
            }
        } else {
            // Consume `result` bytes from the front of the queue; whole chunks go back at
            // once (no list of them: the floor allocates nothing per message).
            let mut sent = result as u32;
            let (Some(conn), bufs) = (self.conns[index].as_mut(), &mut self.bufs) else {
                unreachable!("completion for free slot {index}");
            };
            while sent > 0 {
                let Some(front) = conn.queue.front_mut() else {
                    unreachable!("a send completed for more than was queued");
                };
                let n = sent.min(front.len);
                front.off += n;
                front.len -= n;
                sent -= n;
                if front.len == 0 {
                    bufs.give_back(front.bid);
                    conn.queue.pop_front();
                }
            }
            self.send_next(index)?;
        }
        self.maybe_close(index);
        Ok(())
    }

    /// Start one send of the connection's queued chunks (up to [`MAX_IOV`]), unless one is
    /// in flight.
    fn send_next(&mut self, index: usize) -> io::Result<()> {
        let Some(conn) = self.conns[index].as_mut() else {
            unreachable!("send on free slot {index}");
        };
        if conn.sending || conn.queue.is_empty() {
            return Ok(());
        }
        conn.sending = true;
        let msg = &mut *conn.msg;
        let mut n = 0;
        for chunk in conn.queue.iter().take(MAX_IOV) {
            msg.iov[n] = libc::iovec {
                iov_base: self.bufs.ptr(chunk.bid, chunk.off).cast_mut().cast(),
                iov_len: chunk.len as usize,
            };
            n += 1;
        }
        msg.hdr.msg_iov = msg.iov.as_mut_ptr();
        msg.hdr.msg_iovlen = n as _;
        let entry = opcode::SendMsg::new(Fd(conn.fd.as_raw_fd()), &msg.hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(KIND_SEND | index as u64);
        // SAFETY: the msghdr and iovecs are in the connection's box, which is neither freed
        // nor written again until this send completes (`sending` is set; the slot is freed
        // only when no send is in flight). Each iovec points into a buffer of the leaked
        // buffer memory held by this connection's queue (not in the buffer ring, so the
        // kernel does not fill it) until this send completes; the descriptor stays open.
        unsafe { self.push(entry) }
    }

    /// Free the slot once nothing in the kernel names it.
    fn maybe_close(&mut self, index: usize) {
        let conn = self.conn(index);
        if conn.done && !conn.recv_armed && !conn.sending && conn.queue.is_empty() {
            // Dropping the slot closes the descriptor.
            self.conns[index] = None;
            self.free.push(index);
        }
    }
}
