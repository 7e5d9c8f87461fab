//! Ring configuration and the kernel features a ring was built with.

use std::io;

/// How to build a core's ring.
///
/// ```
/// let cfg = seastar_hal_linux::UringConfig::new().entries(128);
/// assert_eq!(cfg.entries, 128);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UringConfig {
    /// Submission queue entries (rounded up to a power of two by the kernel; the completion
    /// queue gets twice as many). Default 256: small enough for an 8 MiB memlock budget.
    pub entries: u32,
    /// Use a kernel thread that polls the submission queue (`IORING_SETUP_SQPOLL`) with this
    /// idle time in milliseconds. Off by default: it burns a CPU per ring, and it is
    /// incompatible with `DEFER_TASKRUN`.
    pub sqpoll_idle_ms: Option<u32>,
    /// Try `SINGLE_ISSUER | DEFER_TASKRUN` (completions are processed only when the core
    /// enters the kernel to wait, never by interrupting it). Default on.
    pub defer_taskrun: bool,
    /// Use the kernel's multishot accept when it has one (5.19+). When off, or on older
    /// kernels, multishot accept is emulated by re-arming a single-shot accept after each
    /// connection. Default on.
    pub native_multishot_accept: bool,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            entries: 256,
            sqpoll_idle_ms: None,
            defer_taskrun: true,
            native_multishot_accept: true,
        }
    }
}

impl UringConfig {
    /// The defaults: 256 entries, no SQPOLL, DEFER_TASKRUN and native multishot when available.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the number of submission queue entries.
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries;
        self
    }

    /// Enable SQPOLL with the given idle time (milliseconds), or disable it with `None`.
    pub fn sqpoll(mut self, idle_ms: Option<u32>) -> Self {
        self.sqpoll_idle_ms = idle_ms;
        self
    }

    /// Allow or forbid `DEFER_TASKRUN`.
    pub fn defer_taskrun(mut self, on: bool) -> Self {
        self.defer_taskrun = on;
        self
    }

    /// Allow or forbid the kernel's multishot accept (forbidding it exercises the emulation).
    pub fn native_multishot_accept(mut self, on: bool) -> Self {
        self.native_multishot_accept = on;
        self
    }
}

/// A combination of `io_uring_setup` flags, as reported in [`Features`]. Non-exhaustive, so
/// a flag the driver learns to use later is not a breaking change for code that reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SetupFlags {
    /// `IORING_SETUP_SINGLE_ISSUER`: only the creating thread submits.
    pub single_issuer: bool,
    /// `IORING_SETUP_DEFER_TASKRUN`: completion work runs only inside `io_uring_enter` with
    /// `GETEVENTS` (needs `SINGLE_ISSUER`).
    pub defer_taskrun: bool,
    /// `IORING_SETUP_COOP_TASKRUN`: no IPI to interrupt the core for completion work.
    pub coop_taskrun: bool,
    /// `IORING_SETUP_SUBMIT_ALL`: keep submitting the batch after one SQE fails to prep.
    pub submit_all: bool,
    /// `IORING_SETUP_SQPOLL`.
    pub sqpoll: bool,
    /// `IORING_SETUP_NO_SQARRAY` (6.6+): the kernel takes SQEs in ring order, without the
    /// indirection array (one memory read less per SQE).
    pub no_sqarray: bool,
}

/// What the kernel accepted when the ring was built, and what it supports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// The setup flags the ring runs with.
    pub setup: SetupFlags,
    /// Setup combinations tried first and refused with `EINVAL`, in order.
    pub refused: Vec<SetupFlags>,
    /// `IORING_FEAT_EXT_ARG`: a wait can carry a timeout (required).
    pub ext_arg: bool,
    /// `IORING_ENTER_ABS_TIMER` (6.12+): park waits until an absolute `CLOCK_MONOTONIC` time.
    /// Otherwise the wait carries a relative timeout computed just before entering.
    pub abs_timer: bool,
    /// The ring is registered with its thread (`IORING_REGISTER_RING_FDS`, 5.18+): enters
    /// name it by index, without a descriptor lookup. Never with SQPOLL.
    pub registered_ring: bool,
    /// `IORING_FEAT_NODROP`: completions are never dropped when the CQ overflows.
    pub nodrop: bool,
    /// `IORING_FEAT_FAST_POLL`: socket ops wait on internal poll instead of a worker thread.
    pub fast_poll: bool,
    /// Multishot accept is native (otherwise it is emulated by re-arming).
    pub native_multishot_accept: bool,
    /// `IORING_OP_MSG_RING` is supported (not used by this crate; reported for callers).
    pub msg_ring: bool,
    /// Submission queue size.
    pub sq_entries: u32,
    /// Completion queue size.
    pub cq_entries: u32,
}

/// Build a throw-away ring with `config` and report what this kernel supports.
pub fn probe(config: &UringConfig) -> io::Result<Features> {
    crate::sys::Ring::setup(config).map(|ring| ring.features().clone())
}
