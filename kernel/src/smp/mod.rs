//! Cross-core messaging: run work on another core and get its result back, and services with
//! one instance per core ([`Sharded`]), in the manner of Seastar's `smp::submit_to` and
//! `sharded<>`.
//!
//! # Pieces
//!
//! * [`SmpSystem::build`] builds the fabric for `n` cores: one bounded single-producer
//!   single-consumer ring per *ordered* pair of cores (`ring.rs`), and returns one
//!   [`SmpEndpoint`] per core. An endpoint is `Send`: the runtime moves each to its core's
//!   thread and hands it to that core's executor with
//!   [`Executor::attach_smp`](crate::executor::Executor::attach_smp), which also registers the
//!   core's unparker so the others can wake it.
//! * [`submit_to`] runs a `Send` closure on a core; the closure returns a future that is
//!   created and polled there (it need not be `Send`); its `Send` output comes back through
//!   the reverse ring and completes the caller's [`Submit`] future on the caller's core.
//!   [`invoke_on_all`], [`invoke_on_others`] and [`map_reduce`] build on it.
//! * [`Sharded<T>`]: one `T` per core (`T` need not be `Send`), started and stopped together.
//!
//! # What a message is
//!
//! Either work (a `Send` closure, which spawns one task on the receiving core and, unless
//! other tasks wait to run, polls it right there, as the message is taken from the ring: work
//! that is ready at once is answered within the same loop iteration), or a reply (a
//! reply id plus the `Result<T, SmpError>`). Both are type-erased "parcels" stored inline in
//! the 64-byte ring slot when they fit (`ring::parcel`; 40 bytes), boxed otherwise, and the
//! target's task takes a recycled cell of its core (`task::raw::CellCache`), so a warm round
//! trip allocates nothing. The caller's core keeps a slab of pending
//! replies (id → waker + result; a freed slot keeps its waker for its next request, so a
//! task making request after request clones none). Nothing `!Send` ever crosses a core: the
//! reply is matched to its slot by the receiving core itself, which then wakes its own task.
//! Messages from one core to another arrive in the order they were sent (overflow included);
//! there is no order between different pairs.
//!
//! # The loop and the doorbell
//!
//! Each executor iteration drains every incoming ring (bounded per ring by its capacity),
//! retries the overflow queues, and reports what its tasks pushed (a message's slot is
//! stamped when it is pushed, so a spinning peer can start on it while the sender finishes
//! its poll; the fence and the doorbell check are batched, once per iteration), with one
//! `SeqCst` fence for the drained rings' releases and the publishes together (a drain that
//! sent nothing leaves its releases to the iteration's next flush, before any park: a
//! caller taking in a reply fences once, when it publishes its next request). A core
//! that goes idle after cross-core traffic first polls its rings for a while with its
//! `sleeping` flag down (the executor's idle polling, `ExecutorConfig::smp_idle_poll`), so
//! a reply or the next request usually finds it awake and costs no system call on either
//! side; what it finds there it serves right away, inside the spin, without a loop pass
//! (the executor's `idle.rs`). A core is woken through the HAL's [`Unpark`] only when it may be asleep. Race-free
//! protocol (all three steps on each side are program-ordered):
//!
//! ```text
//!   receiver, before a blocking park          sender, after publishing
//!   sleeping[me] = true                       stamp.store(p + 1, Release)
//!   fence(SeqCst)                             fence(SeqCst)
//!   any ring non-empty? -> sleeping = false,  if sleeping[target]: unpark(target)
//!                          do not block
//!   park(); sleeping[me] = false
//! ```
//!
//! The two fences are totally ordered: if the receiver's comes first, the sender sees
//! `sleeping == true` and unparks (an unpark that lands before `park` makes `park` return at
//! once, per the HAL contract); otherwise the receiver's re-check sees the new stamp. So a core
//! never sleeps on a published message, and a busy core never gets a syscall.
//!
//! # Back-pressure
//!
//! A full ring never drops a message and never blocks the loop: the message waits in a
//! per-destination overflow queue on the sender's core (kept in FIFO order behind it) and is
//! retried on every iteration. The sender's [`Submit`] future simply completes later. When the
//! sender has nothing else to do, it marks the ring "space wanted" and sleeps; the consumer,
//! after releasing slots, sees the mark and wakes it (the same store/fence/load pairing as
//! above). [`SmpStats::overflowed`] counts messages that had to wait; a steadily growing
//! [`SmpStats::overflow_queued`] means a core sends faster than its peer drains.
//!
//! # Failure
//!
//! A panicking closure or future on the target (with `std`, where panics unwind) answers
//! [`SmpError::Panicked`]; a task dropped before it finished (its core shut down) answers
//! [`SmpError::Cancelled`]. If the target core's endpoint is gone (its executor dropped),
//! every outstanding and later `submit_to` to it fails with [`SmpError::CoreShutDown`]: the
//! dying core publishes its last replies, closes its rings and unparks everyone, and each
//! caller drains what arrived before failing the rest. Never a hung future.
//!
//! # Statistics
//!
//! [`stats`] returns this core's counters, kept in plain cells by the owning core.
//!
//! # Wiring it into a runtime
//!
//! ```ignore
//! let endpoints = SmpSystem::build(n, SmpConfig::default())?;
//! for ep in endpoints {
//!     std::thread::spawn(move || {
//!         let mut ex = Executor::new(make_platform());   // on the core's own thread
//!         ex.attach_smp(ep)?;                            // registers the unparker
//!         ex.block_on(core_main())                       // rings drained by the loop
//!     });
//! }
//! ```
//!
//! `submit_to` sends when it is *called* (like Seastar's), so call it from inside the
//! executor (a task or the root future's body), not to build the root future. A core that
//! leaves `block_on` stops draining its rings; its peers' requests then wait (or fail once
//! its executor is dropped).
//!
//! [`Unpark`]: seastar_hal::Unpark

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crossbeam_utils::CachePadded;
use seastar_hal::Unpark;

mod local;
mod ring;
mod sharded;
mod submit;

#[cfg(test)]
pub(crate) mod tests;

pub(crate) use self::local::CoreSmp;
use self::local::ReplyId;
use self::ring::parcel::Parcel;
use self::ring::{Consumer, Producer};
pub use self::sharded::Sharded;
pub use self::submit::{
    invoke_on_all, invoke_on_others, map_reduce, submit_sync, submit_to, Submit,
};

/// Why cross-core work produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SmpError {
    /// No executor with an attached [`SmpEndpoint`] is running on this thread.
    #[error("no executor with cross-core messaging attached is running on this thread")]
    NotAttached,
    /// The executor already has an endpoint.
    #[error("an smp endpoint is already attached to this executor")]
    AlreadyAttached,
    /// The core index is out of range.
    #[error("core {core} does not exist (the system has {count} cores)")]
    NoSuchCore {
        /// The index asked for.
        core: usize,
        /// How many cores the system has.
        count: usize,
    },
    /// The target core has shut down (its endpoint was dropped) before it answered.
    #[error("core {0} has shut down")]
    CoreShutDown(usize),
    /// The work panicked on the target core.
    #[error("work on core {core} panicked: {message}")]
    Panicked {
        /// The core the work ran on.
        core: usize,
        /// The panic message.
        message: String,
    },
    /// The work's task was dropped before it finished (its core shut down mid-flight).
    #[error("work on core {0} was cancelled")]
    Cancelled(usize),
    /// The [`Sharded`] service has no instance on that core (not started there, or stopped).
    #[error("sharded service {id} has no instance on core {core}")]
    NotRunning {
        /// The service's id.
        id: usize,
        /// The core asked.
        core: usize,
    },
    /// The [`Sharded`] service on that core is stopping: its gate is closed.
    #[error("sharded service {id} is stopping on core {core}")]
    Stopping {
        /// The service's id.
        id: usize,
        /// The core asked.
        core: usize,
    },
    /// A system needs at least one core, and the ring settings must be valid.
    #[error("invalid smp configuration: {0}")]
    Config(#[from] ring::BadRingConfig),
    /// Zero cores asked for.
    #[error("an smp system needs at least one core")]
    NoCores,
    /// A reply of the wrong type reached a pending request. Indicates a kernel bug.
    #[error("internal smp error: {0}")]
    Internal(&'static str),
}

/// Settings of the rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SmpConfig {
    /// Slots per ring (per ordered pair of cores); a power of two. Default 256.
    pub ring_capacity: usize,
    /// Release read slots to the sender at the latest every this many messages, even within
    /// one loop iteration (messages themselves are published as they are sent). Default 16.
    pub batch: usize,
}

impl Default for SmpConfig {
    fn default() -> Self {
        SmpConfig {
            ring_capacity: 256,
            batch: 16,
        }
    }
}

impl SmpConfig {
    /// Settings with `ring_capacity` slots per ring and the default batch.
    pub fn with_capacity(ring_capacity: usize) -> Self {
        SmpConfig {
            ring_capacity,
            ..SmpConfig::default()
        }
    }

    /// The same settings with another batch.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }
}

/// What travels through a ring: 64 bytes, a small payload inline (see `ring::parcel`).
pub(crate) enum Msg {
    /// Work for the receiving core (a closure); running it spawns a task there.
    Run(Parcel),
    /// The answer to work the receiver sent earlier: a `Result<T, SmpError>`.
    Reply { id: ReplyId, value: Parcel },
}

/// Per-core wake-up state every core can reach.
pub(crate) struct Doorbell {
    /// The core is about to park or parked (see the module docs' protocol). Own cache line:
    /// the owner writes it on every blocking park and every sender reads it.
    sleeping: CachePadded<AtomicBool>,
    /// Registered when the core's executor attaches. Locked only by a sender that saw
    /// `sleeping` (and by registration), so the busy path takes no lock.
    unparker: spin::Mutex<Option<Box<dyn Unpark>>>,
}

impl Doorbell {
    fn new() -> Self {
        Doorbell {
            sleeping: CachePadded::new(AtomicBool::new(false)),
            unparker: spin::Mutex::new(None),
        }
    }

    /// Whether the core said it may sleep. The caller has fenced (`SeqCst`) after its
    /// publish or release, and rings if so.
    pub(crate) fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::Relaxed)
    }

    /// Unpark the core unconditionally (shutdown notices).
    pub(crate) fn ring(&self) {
        if let Some(u) = self.unparker.lock().as_ref() {
            u.unpark();
        }
    }

    pub(crate) fn set_sleeping(&self, sleeping: bool) {
        self.sleeping.store(sleeping, Ordering::Relaxed);
    }
}

/// Builds the rings between `n` cores.
#[derive(Debug)]
pub struct SmpSystem;

impl SmpSystem {
    /// One endpoint per core, in core order (index `i` belongs to core `i`). Creates
    /// `n * (n - 1)` rings of `config.ring_capacity` slots.
    pub fn build(n_cores: usize, config: SmpConfig) -> Result<Vec<SmpEndpoint>, SmpError> {
        if n_cores == 0 {
            return Err(SmpError::NoCores);
        }
        let doorbells: Arc<[Doorbell]> = (0..n_cores).map(|_| Doorbell::new()).collect();
        let mut txs: Vec<Vec<Option<Producer<Msg>>>> = (0..n_cores)
            .map(|_| (0..n_cores).map(|_| None).collect())
            .collect();
        let mut rxs: Vec<Vec<Option<Consumer<Msg>>>> = (0..n_cores)
            .map(|_| (0..n_cores).map(|_| None).collect())
            .collect();
        for (from, tx_row) in txs.iter_mut().enumerate() {
            for (to, tx_slot) in tx_row.iter_mut().enumerate() {
                if from == to {
                    continue;
                }
                let (tx, rx) = ring::channel(config.ring_capacity, config.batch)?;
                *tx_slot = Some(tx);
                rxs[to][from] = Some(rx);
            }
        }
        Ok(txs
            .into_iter()
            .zip(rxs)
            .enumerate()
            .map(|(index, (tx, rx))| SmpEndpoint {
                index,
                tx,
                rx,
                doorbells: doorbells.clone(),
                capacity: config.ring_capacity,
            })
            .collect())
    }
}

/// One core's end of the fabric: its outgoing producers, its incoming consumers, and every
/// core's doorbell. `Send`, so it can be built anywhere and moved to its core's thread; give
/// it to that core's executor with
/// [`Executor::attach_smp`](crate::executor::Executor::attach_smp).
///
/// Dropping an endpoint (attached or not) shuts its core down for the others: their
/// outstanding and later requests to it fail with [`SmpError::CoreShutDown`].
pub struct SmpEndpoint {
    index: usize,
    /// `tx[j]`: the ring from this core to core `j` (`None` for `j == index`).
    tx: Vec<Option<Producer<Msg>>>,
    /// `rx[j]`: the ring from core `j` to this core.
    rx: Vec<Option<Consumer<Msg>>>,
    doorbells: Arc<[Doorbell]>,
    capacity: usize,
}

impl fmt::Debug for SmpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmpEndpoint")
            .field("index", &self.index)
            .field("cores", &self.tx.len())
            .finish()
    }
}

impl SmpEndpoint {
    /// This endpoint's core index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many cores the system has.
    pub fn core_count(&self) -> usize {
        self.tx.len()
    }

    /// Register the unparker other cores use to wake this one. `attach_smp` does this with
    /// the platform's unparker; a runtime may call it earlier (any thread). Replaces a
    /// previous registration.
    pub fn register_unparker(&self, unparker: Box<dyn Unpark>) {
        *self.doorbells[self.index].unparker.lock() = Some(unparker);
    }
}

impl Drop for SmpEndpoint {
    fn drop(&mut self) {
        // Never attached (or attachment failed): still tell the others this core is gone, in
        // the same order as an attached core's shutdown.
        local::close_links(self.index, &mut self.tx, &mut self.rx, &self.doorbells);
    }
}

/// One core's cross-core messaging counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SmpStats {
    /// Messages (work and replies) handed to rings or overflow queues for other cores.
    pub sent: u64,
    /// Messages taken from incoming rings.
    pub received: u64,
    /// Messages that found their ring full and waited in an overflow queue.
    pub overflowed: u64,
    /// Messages waiting in overflow queues right now.
    pub overflow_queued: u64,
    /// Unparks this core sent to sleeping peers.
    pub doorbells: u64,
    /// Messages dropped because their destination core had shut down.
    pub dropped: u64,
}

/// This core's index in the smp system, if an executor with an endpoint runs on this thread.
pub fn current_core() -> Option<usize> {
    local::with_smp(|s| s.index())
}

/// How many cores the smp system has, if an executor with an endpoint runs on this thread.
pub fn core_count() -> Option<usize> {
    local::with_smp(|s| s.count())
}

/// This core's cross-core messaging counters, if an executor with an endpoint runs on this
/// thread.
pub fn stats() -> Option<SmpStats> {
    local::with_smp(|s| s.stats())
}
