//! The system-call boundary. Every libc call and every io_uring call whose safety the type
//! system cannot check lives here, behind small safe functions:
//!
//! * [`monotonic_nanos`], [`eventfd`], [`close_orphan`]: libc.
//! * [`Sqe`]: a submission entry together with the promise that the memory it points into
//!   outlives its operation. Building one from raw pointers is `unsafe` (done in `raw`);
//!   pointer-free ones are built safely here. Pushing an `Sqe` is then safe.
//! * [`Ring`]: setup with the flag fallback ladder, SQ push, the three kinds of enter, CQ drain.
//! * [`ReadBuf`]: the 8-byte buffer the eventfd read writes into, which is leaked rather than
//!   freed if the platform goes away while the read is still in the kernel.

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, EnterFlags, IoUring, Probe};

use crate::config::{Features, SetupFlags, UringConfig};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// `CLOCK_MONOTONIC` in nanoseconds: the platform clock, and the clock io_uring's absolute
/// timeouts (`IORING_TIMEOUT_ABS`, `IORING_ENTER_ABS_TIMER`) use by default.
pub(crate) fn monotonic_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec`; the call writes only into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // CLOCK_MONOTONIC cannot fail on Linux with a valid pointer.
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * NANOS_PER_SEC + ts.tv_nsec as u64
}

/// A fresh non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<File> {
    // SAFETY: no pointer arguments; the flags are valid.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd(2): open, and owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Close a descriptor the kernel created for an operation nobody is waiting for any more (an
/// accept that completed after its `Op` was cancelled), so it does not leak.
pub(crate) fn close_orphan(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: the kernel just returned `fd` as the result of an accept whose completion is
        // being discarded; no other code has seen it, so we are its only owner.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// A submission entry (without its `user_data`) and the promise that every pointer in it stays
/// valid, for the kernel's reads and writes, until the operation it is pushed for is finished:
/// its CQE without `IORING_CQE_F_MORE` has been reaped. The driver keeps the memory alive by
/// owning it in the operation's slot (or through the caller's guarantee on
/// `IoDriver::submit`), and only pushes an `Sqe` for an operation that is not finished.
#[derive(Clone, Debug)]
pub(crate) struct Sqe(squeue::Entry);

impl Sqe {
    /// Wrap an entry built from raw pointers.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid for the accesses its opcode makes, and not be
    /// accessed by anyone else while the kernel may write through it, until the final CQE of
    /// each operation this `Sqe` is pushed for has been reaped.
    pub(crate) unsafe fn new(entry: squeue::Entry) -> Self {
        Sqe(entry)
    }

    /// `IORING_OP_ASYNC_CANCEL` for the operation with `target` user data (no pointers).
    pub(crate) fn cancel(target: u64) -> Self {
        Sqe(opcode::AsyncCancel::new(target).build())
    }
}

/// How long an enter may wait for completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Submit, run completion work, return at once.
    Poll,
    /// Until at least one completion.
    Forever,
    /// Until one completion or the deadline: `abs_nanos` on `CLOCK_MONOTONIC`, `rel_nanos`
    /// from now (used when the kernel lacks `IORING_ENTER_ABS_TIMER`).
    Until { abs_nanos: u64, rel_nanos: u64 },
}

/// One core's io_uring.
pub(crate) struct Ring {
    ring: IoUring,
    features: Features,
    /// The ring's index among the creating thread's registered rings
    /// (`IORING_REGISTER_RING_FDS`), if registered: enters name it with
    /// `IORING_ENTER_REGISTERED_RING` instead of the descriptor, which saves the kernel a
    /// descriptor lookup and a shared reference count per enter. Unregistered on drop.
    registered: Option<u32>,
}

/// `struct io_uring_rsrc_update` (for `IORING_(UN)REGISTER_RING_FDS`).
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// `struct io_uring_getevents_arg` (`IORING_ENTER_EXT_ARG`).
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

const IORING_REGISTER_RING_FDS: libc::c_long = 20;
const IORING_UNREGISTER_RING_FDS: libc::c_long = 21;

/// Register `fd` (a ring) with the calling thread; its index, or `None` if the kernel
/// refuses (older than 5.18, or the thread's 16 slots are taken).
fn register_ring_fd(fd: RawFd) -> Option<u32> {
    let mut up = RsrcUpdate {
        offset: u32::MAX, // any free slot
        resv: 0,
        data: fd as u64,
    };
    // SAFETY: `up` is a valid, writable `io_uring_rsrc_update` (the kernel writes the slot
    // into `offset`), and the count says one.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            fd,
            IORING_REGISTER_RING_FDS,
            std::ptr::from_mut(&mut up),
            1,
        )
    };
    (rc == 1).then_some(up.offset)
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

fn timespec(nanos: u64) -> Timespec {
    Timespec::new()
        .sec(nanos / NANOS_PER_SEC)
        .nsec((nanos % NANOS_PER_SEC) as u32)
}

/// The setup combinations to try, best first. DEFER_TASKRUN needs SINGLE_ISSUER; neither
/// DEFER_TASKRUN nor COOP_TASKRUN is accepted with SQPOLL. Kernels refuse an unknown or
/// invalid combination with EINVAL, and we step down the ladder.
fn ladder(config: &UringConfig) -> Vec<SetupFlags> {
    let f = |single_issuer, defer_taskrun, coop_taskrun, submit_all| SetupFlags {
        single_issuer,
        defer_taskrun,
        coop_taskrun,
        submit_all,
        sqpoll: config.sqpoll_idle_ms.is_some(),
        no_sqarray: false,
    };
    let mut out = Vec::new();
    if config.sqpoll_idle_ms.is_some() {
        out.extend([f(true, false, false, true), f(false, false, false, true)]);
    } else {
        if config.defer_taskrun {
            out.extend([
                // NO_SQARRAY came after DEFER_TASKRUN (6.6 vs 6.1): only on the top rung.
                SetupFlags {
                    no_sqarray: true,
                    ..f(true, true, true, true)
                },
                f(true, true, true, true),
                f(true, true, false, true),
                f(true, true, false, false),
            ]);
        }
        out.extend([
            f(true, false, true, true),
            f(false, false, true, true),
            f(false, false, true, false),
        ]);
    }
    out.push(f(false, false, false, false));
    out
}

impl Ring {
    /// Build a ring, stepping down the setup-flag ladder on EINVAL, and probe what it supports.
    pub(crate) fn setup(config: &UringConfig) -> io::Result<Ring> {
        if config.entries == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut refused = Vec::new();
        let mut built = None;
        let mut last_err = io::Error::from_raw_os_error(libc::EINVAL);
        for flags in ladder(config) {
            let mut b = IoUring::builder();
            if flags.single_issuer {
                b.setup_single_issuer();
            }
            if flags.defer_taskrun {
                b.setup_defer_taskrun();
            }
            if flags.coop_taskrun {
                b.setup_coop_taskrun();
            }
            if flags.submit_all {
                b.setup_submit_all();
            }
            if flags.no_sqarray {
                b.setup_no_sqarray();
            }
            if let Some(idle) = config.sqpoll_idle_ms {
                b.setup_sqpoll(idle);
            }
            match b.build(config.entries) {
                Ok(ring) => {
                    built = Some((ring, flags));
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    refused.push(flags);
                    last_err = e;
                }
                Err(e) => return Err(e),
            }
        }
        let Some((ring, setup)) = built else {
            return Err(last_err);
        };
        let params = ring.params();
        if !params.is_feature_ext_arg() {
            // Park needs a wait with a timeout in one enter (5.11+).
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_EXT_ARG (Linux < 5.11)",
            ));
        }
        let mut probe = Probe::new();
        let probed = ring.submitter().register_probe(&mut probe).is_ok();
        // Multishot accept arrived in 5.19 together with IORING_OP_SOCKET; there is no direct
        // probe for the ACCEPT_MULTISHOT flag, and EINVAL from a multishot accept is
        // indistinguishable from "not a listening socket".
        let multishot = probed && probe.is_supported(opcode::Socket::CODE);
        let msg_ring = probed && probe.is_supported(opcode::MsgRingData::CODE);
        // IORING_ENTER_ABS_TIMER (6.12+): an unknown enter flag is refused with EINVAL before
        // anything else happens; without GETEVENTS the timespec is not even read.
        let abs_timer = !setup.sqpoll && {
            let ts = Timespec::new();
            let args = SubmitArgs::new().timespec(&ts);
            ring.submitter()
                .submit_with_args_and_flags(0, &args, EnterFlags::ABS_TIMER)
                .is_ok()
        };
        let registered = if setup.sqpoll {
            None
        } else {
            register_ring_fd(ring.as_raw_fd())
        };
        let features = Features {
            setup,
            refused,
            registered_ring: registered.is_some(),
            ext_arg: true,
            abs_timer,
            nodrop: params.is_feature_nodrop(),
            fast_poll: params.is_feature_fast_poll(),
            native_multishot_accept: multishot && config.native_multishot_accept,
            msg_ring,
            sq_entries: params.sq_entries(),
            cq_entries: params.cq_entries(),
        };
        Ok(Ring {
            ring,
            features,
            registered,
        })
    }

    pub(crate) fn features(&self) -> &Features {
        &self.features
    }

    /// Queue `sqe` with `user_data` in the SQ (no syscall). `false` if the SQ is full.
    #[inline]
    pub(crate) fn push(&mut self, sqe: &Sqe, user_data: u64) -> bool {
        let entry = sqe.0.clone().user_data(user_data);
        // SAFETY: `Sqe`'s invariant: every pointer in the entry stays valid until the final
        // CQE of the operation it is pushed for, which the driver reaps before freeing them.
        unsafe { self.ring.submission().push(&entry) }.is_ok()
    }

    /// SQEs queued and not yet handed to the kernel.
    pub(crate) fn sq_len(&mut self) -> usize {
        self.ring.submission().len()
    }

    /// Hand queued SQEs to the kernel without waiting (one `io_uring_enter`). With SQPOLL the
    /// kernel thread consumes them asynchronously: if the SQ is still full, wait for room.
    pub(crate) fn submit(&mut self) -> io::Result<usize> {
        let n = self.ring.submitter().submit()?;
        if self.features.setup.sqpoll && self.ring.submission().is_full() {
            self.ring.submitter().squeue_wait()?;
        }
        Ok(n)
    }

    /// Submit queued SQEs and wait as `wait` says, in one `io_uring_enter` that always carries
    /// `GETEVENTS` (with `DEFER_TASKRUN`, completion work runs only in such an enter).
    pub(crate) fn enter(&mut self, wait: Wait) -> io::Result<usize> {
        let to_submit = self.sq_len() as u32;
        if let Some(index) = self.registered {
            return self.enter_registered(index, to_submit, wait);
        }
        let submitter = self.ring.submitter();
        match wait {
            Wait::Poll if self.features.setup.sqpoll => submitter.submit(),
            Wait::Poll => {
                // The crate's `submit` only adds GETEVENTS when the kernel flags pending task
                // work, which DEFER_TASKRUN rings do not (no TASKRUN_FLAG); ask explicitly.
                // SAFETY: no argument pointer (`None`, size ignored without EXT_ARG); the
                // flags and counts are valid for any ring.
                unsafe {
                    submitter.enter::<libc::sigset_t>(
                        to_submit,
                        0,
                        EnterFlags::GETEVENTS.bits(),
                        None,
                    )
                }
            }
            Wait::Forever => submitter.submit_and_wait(1),
            Wait::Until {
                abs_nanos,
                rel_nanos,
            } => {
                let (ts, flags) = if self.features.abs_timer {
                    (timespec(abs_nanos), EnterFlags::ABS_TIMER)
                } else {
                    (timespec(rel_nanos), EnterFlags::empty())
                };
                let args = SubmitArgs::new().timespec(&ts);
                submitter.submit_with_args_and_flags(1, &args, flags)
            }
        }
    }

    /// [`enter`](Self::enter) through the registered ring index (never with SQPOLL).
    fn enter_registered(&self, index: u32, to_submit: u32, wait: Wait) -> io::Result<usize> {
        let mut flags = EnterFlags::GETEVENTS | EnterFlags::REGISTERED_RING;
        let (min_complete, ts) = match wait {
            Wait::Poll => (0, None),
            Wait::Forever => (1, None),
            Wait::Until {
                abs_nanos,
                rel_nanos,
            } => {
                flags |= EnterFlags::EXT_ARG;
                if self.features.abs_timer {
                    flags |= EnterFlags::ABS_TIMER;
                    (1, Some(timespec(abs_nanos)))
                } else {
                    (1, Some(timespec(rel_nanos)))
                }
            }
        };
        // A null signal mask: the size is not read.
        let arg = ts.as_ref().map(|ts| GeteventsArg {
            sigmask: 0,
            sigmask_sz: 0,
            min_wait_usec: 0,
            ts: std::ptr::from_ref(ts) as u64,
        });
        let (arg_ptr, arg_size) = match &arg {
            Some(a) => (
                std::ptr::from_ref(a).cast::<libc::c_void>(),
                std::mem::size_of::<GeteventsArg>(),
            ),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: `index` is this thread's registration of this ring (rings stay on their
        // creating thread); `arg`, when given, is a valid `io_uring_getevents_arg` pointing at a
        // valid timespec, both alive until the call returns; the SQEs it submits carry the
        // `Sqe` promise.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                index,
                to_submit,
                min_complete,
                flags.bits(),
                arg_ptr,
                arg_size,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }

    /// Take up to `out.len()` visible CQEs, oldest first, copied into `out` (no syscall);
    /// an empty slice when none is visible. The CQ's head moves past them: the kernel may
    /// reuse their entries.
    #[inline]
    pub(crate) fn take_cqes<'a>(
        &mut self,
        out: &'a mut [MaybeUninit<cqueue::Entry>],
    ) -> &'a [cqueue::Entry] {
        // Dropping the queue view publishes the new head.
        self.ring.completion().fill(out)
    }
}

/// The 8-byte buffer an `IORING_OP_READ` of the eventfd writes into. Heap memory owned through
/// a raw pointer: freed on drop if no read is in flight, leaked otherwise.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    ptr: *mut u64,
    in_flight: bool,
}

impl ReadBuf {
    pub(crate) fn new() -> Self {
        ReadBuf {
            ptr: Box::into_raw(Box::new(0u64)),
            in_flight: false,
        }
    }

    /// A read of `fd` into this buffer; marks it in flight until [`ReadBuf::completed`].
    pub(crate) fn arm(&mut self, fd: RawFd) -> Sqe {
        self.in_flight = true;
        let entry = opcode::Read::new(Fd(fd), self.ptr.cast::<u8>(), 8).build();
        // SAFETY: `ptr` is a live 8-byte heap allocation that nothing else reads or writes;
        // `Drop` frees it only when no read is in flight and leaks it otherwise.
        unsafe { Sqe::new(entry) }
    }

    /// The read's CQE was reaped: the kernel no longer writes into the buffer.
    pub(crate) fn completed(&mut self) {
        self.in_flight = false;
    }

    pub(crate) fn armed(&self) -> bool {
        self.in_flight
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if !self.in_flight {
            // SAFETY: `ptr` came from `Box::into_raw` and no read into it is in flight.
            drop(unsafe { Box::from_raw(self.ptr) });
        }
        // Otherwise leak 8 bytes: the kernel may still write into them.
    }
}

/// A provided-buffer ring (`IORING_REGISTER_PBUF_RING`) and its buffers: `count` buffers of
/// `size` bytes in one allocation, and the ring of `count` entries the kernel picks from.
///
/// Ownership: a buffer is either in the ring (the kernel may fill it at any time while the
/// ring is registered) or out of it (handed out by a CQE, until [`BufRing::give_back`]). The
/// memory is freed on drop only if [`BufRing::mark_unregistered`] said the kernel can no
/// longer touch it; otherwise it is leaked.
pub(crate) struct BufRing {
    entries: *mut io_uring::types::BufRingEntry,
    entries_layout: std::alloc::Layout,
    data: *mut u8,
    data_layout: std::alloc::Layout,
    count: u16,
    size: u32,
    /// Tail including buffers given back (published at once).
    local_tail: u16,
    freeable: bool,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("count", &self.count)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl BufRing {
    /// Allocate the ring and the buffers, the ring empty (the owner puts buffers in with
    /// [`give_back`](Self::give_back), at most `count` at a time). `count` must be a power of
    /// two <= 32768 and `size` non-zero.
    pub(crate) fn new(count: u16, size: u32) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let entries_layout = std::alloc::Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<io_uring::types::BufRingEntry>(),
            4096,
        )
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let data_layout =
            std::alloc::Layout::from_size_align(usize::from(count) * size as usize, 4096)
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1).
        let entries = unsafe { std::alloc::alloc_zeroed(entries_layout) }
            .cast::<io_uring::types::BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        // SAFETY: as above. Not zeroed, so a large pool stays untouched (lazily mapped) until
        // data arrives: only bytes the kernel wrote (`[..n]` of a completion) are ever read.
        let data = unsafe { std::alloc::alloc(data_layout) };
        if data.is_null() {
            // SAFETY: allocated just above with this layout; never registered.
            unsafe { std::alloc::dealloc(entries.cast(), entries_layout) };
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        let ring = BufRing {
            entries,
            entries_layout,
            data,
            data_layout,
            count,
            size,
            local_tail: 0,
            // Not registered yet: nobody else can touch the memory.
            freeable: true,
        };
        Ok(ring)
    }

    /// Start and length of buffer `bid`, or `None` if out of range.
    pub(crate) fn buffer(&self, bid: u16) -> Option<(*const u8, usize)> {
        if bid >= self.count {
            return None;
        }
        // SAFETY: bid < count, so the offset is inside the `count * size` bytes allocation.
        let ptr = unsafe { self.data.add(usize::from(bid) * self.size as usize) };
        Some((ptr.cast_const(), self.size as usize))
    }

    /// Put buffer `bid` back in the ring and publish it to the kernel (a release store of the
    /// tail). The caller guarantees nobody reads or writes the buffer any more (it came out of
    /// the ring in a CQE, and its holder gave it up) and that it is not in the ring already.
    pub(crate) fn give_back(&mut self, bid: u16) {
        let Some((addr, _)) = self.buffer(bid) else {
            return;
        };
        let mask = usize::from(self.count) - 1;
        // SAFETY: the index is masked below `count`, so the entry is inside the ring
        // allocation. The kernel reads only entries before the published tail; this one is at
        // the tail, and no other reference into the ring is live. `set_*` do not touch the
        // `resv` field of entry 0, which is the tail.
        let entry = unsafe { &mut *self.entries.add(usize::from(self.local_tail) & mask) };
        entry.set_addr(addr as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.local_tail = self.local_tail.wrapping_add(1);
        // SAFETY: the tail is the `resv` u16 of entry 0 (2-aligned, inside the allocation);
        // AtomicU16 has the layout of u16, and the kernel only reads it. No reference to
        // entry 0 is live here.
        let tail = unsafe {
            &*io_uring::types::BufRingEntry::tail(self.entries)
                .cast::<std::sync::atomic::AtomicU16>()
        };
        tail.store(self.local_tail, std::sync::atomic::Ordering::Release);
    }

    /// Register with `ring` as buffer group `bgid`.
    pub(crate) fn register(&mut self, ring: &Ring, bgid: u16) -> io::Result<()> {
        // SAFETY: the entries are a page-aligned allocation of `count` entries that stays
        // valid until `mark_unregistered` (which only the driver's drop calls, after
        // unregistering) or forever (leaked).
        unsafe {
            ring.ring.submitter().register_buf_ring_with_flags(
                self.entries as u64,
                self.count,
                bgid,
                0,
            )
        }?;
        self.freeable = false;
        Ok(())
    }

    /// The group was unregistered and no operation that could pick a buffer from it is in
    /// flight: the memory may be freed on drop.
    pub(crate) fn mark_unregistered(&mut self) {
        self.freeable = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.freeable {
            // SAFETY: allocated in `new` with these layouts; the kernel can no longer touch
            // them (never registered, or unregistered with no receive in flight).
            unsafe {
                std::alloc::dealloc(self.entries.cast(), self.entries_layout);
                std::alloc::dealloc(self.data, self.data_layout);
            }
        }
        // Otherwise leak: the kernel may still write into the buffers.
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if let Some(index) = self.registered.take() {
            let up = RsrcUpdate {
                offset: index,
                resv: 0,
                data: 0,
            };
            // SAFETY: `up` is a valid `io_uring_rsrc_update` naming this thread's registration
            // of this ring (the kernel only reads it). Without this, the registration would
            // keep the ring open until the thread exits.
            let _ = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    self.ring.as_raw_fd(),
                    IORING_UNREGISTER_RING_FDS,
                    std::ptr::from_ref(&up),
                    1,
                )
            };
        }
    }
}

impl Ring {
    /// Unregister buffer group `bgid`.
    pub(crate) fn unregister_buf_ring(&self, bgid: u16) -> io::Result<()> {
        self.ring.submitter().unregister_buf_ring(bgid)
    }
}
