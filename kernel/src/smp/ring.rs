//! The bounded single-producer single-consumer ring that carries messages from one core to
//! another. The only `unsafe` of the smp module lives here.
//!
//! # Protocol
//!
//! Two free-running counters, `head` (next slot the consumer reads) and `tail` (next slot the
//! producer writes), each on its own cache line ([`CachePadded`]) so the two cores do not
//! fight over one line. Slot `i` is `buf[i & mask]`; the ring holds `tail - head` items
//! (wrapping arithmetic; the capacity is a power of two at most `usize::MAX / 2 + 1`, so the
//! difference never wraps ambiguously).
//!
//! Both sides work on private copies and publish in batches, because a store to a shared
//! line is what costs across cores:
//!
//! * The producer writes slots past the published `tail` and keeps the new position in
//!   `local_tail`. [`Producer::flush`] (or the `batch`-th unpublished push) stores it into
//!   `tail` with `Release`: every slot write before it happens-before the consumer's
//!   `Acquire` load of `tail` that observes it.
//! * The consumer reads slots below its `cached_tail` and moves a private `local_head`.
//!   [`Consumer::release`] (or every `batch`-th pop) stores it into `head` with `Release`:
//!   the consumer's reads of those slots (moves out of them) happen-before the producer's
//!   `Acquire` load of `head` that observes it, so the producer never overwrites a slot that
//!   is still being read.
//! * Each side re-reads the other's counter only when its cached copy says "empty" (consumer)
//!   or "full" (producer), so a steady stream costs one shared load per batch, not per item.
//!
//! # Sleeping and space
//!
//! The doorbell protocol that decides whether to unpark the consumer's core lives in the smp
//! endpoint, not here; the ring only offers a `SeqCst` fence after each publish
//! ([`Producer::flush`] returns whether anything new became visible, and the endpoint fences
//! once for all rings). For the reverse direction (a full ring), the producer sets
//! `space_wanted`; [`Consumer::release`] stores `head`, fences (`SeqCst`) and then takes the
//! flag, telling its caller to wake the producer's core. With the producer doing
//! `space_wanted = true; fence(SeqCst); load head` before it sleeps, one of the two always
//! sees the other (the classic store/fence/load pairing).
//!
//! # Shutdown
//!
//! Dropping a [`Producer`] publishes what it wrote; dropping a [`Consumer`] releases what it
//! read. Each sets a `closed` flag the other side can query. The last half to go drops the
//! items still in `[head, tail)`, exactly once.
#![allow(unsafe_code)] // slots are written and read through `UnsafeCell<MaybeUninit<T>>`

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::fmt;
use core::mem::MaybeUninit;
use core::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

struct Shared<T> {
    /// Next slot the consumer reads (published by the consumer).
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes (published by the producer).
    tail: CachePadded<AtomicUsize>,
    /// The producer found the ring full and wants to be woken when space appears.
    space_wanted: AtomicBool,
    /// The producer was dropped.
    producer_closed: AtomicBool,
    /// The consumer was dropped.
    consumer_closed: AtomicBool,
    mask: usize,
    buf: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: the ring moves `T`s from the producer's thread to the consumer's, so `T: Send` is
// required and sufficient. Each slot is accessed by exactly one side at a time: the producer
// only writes slots in `[tail, head + cap)` and the consumer only reads `[head, tail)`, with
// the Release/Acquire pairs on `head` and `tail` ordering the hand-over (module docs).
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; the `Shared` itself owns `T`s that may be dropped on either thread.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Shared<T> {
    fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Pointer to the slot of position `pos`.
    fn slot(&self, pos: usize) -> *mut MaybeUninit<T> {
        self.buf[pos & self.mask].get()
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both halves are gone (we hold the last `Arc`): their final publishes are visible
        // through the `Arc`'s own release/acquire on the count.
        let head = *self.head.get_mut();
        let tail = *self.tail.get_mut();
        let mut pos = head;
        while pos != tail {
            // SAFETY: positions in `[head, tail)` hold initialised items that nobody read
            // (the consumer released everything it moved out before it dropped); we drop
            // each exactly once and nobody else can access the ring any more.
            unsafe { (*self.slot(pos)).assume_init_drop() };
            pos = pos.wrapping_add(1);
        }
    }
}

/// The ring's capacity was not a power of two between 1 and `usize::MAX / 2 + 1`, or the batch
/// was zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring capacity must be a non-zero power of two and the batch at least 1 (capacity {capacity}, batch {batch})")]
pub struct BadRingConfig {
    /// The capacity asked for.
    pub capacity: usize,
    /// The batch asked for.
    pub batch: usize,
}

/// A new ring of `capacity` slots (a power of two). Each side publishes at the latest after
/// `batch` operations, earlier on `flush`/`release`.
pub(crate) fn channel<T: Send>(
    capacity: usize,
    batch: usize,
) -> Result<(Producer<T>, Consumer<T>), BadRingConfig> {
    if !capacity.is_power_of_two() || capacity > usize::MAX / 2 + 1 || batch == 0 {
        return Err(BadRingConfig { capacity, batch });
    }
    let buf: Box<[UnsafeCell<MaybeUninit<T>>]> = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        space_wanted: AtomicBool::new(false),
        producer_closed: AtomicBool::new(false),
        consumer_closed: AtomicBool::new(false),
        mask: capacity - 1,
        buf,
    });
    let batch = batch.min(capacity);
    Ok((
        Producer {
            shared: shared.clone(),
            local_tail: 0,
            published_tail: 0,
            cached_head: 0,
            batch,
            unsignalled: false,
        },
        Consumer {
            shared,
            local_head: 0,
            released_head: 0,
            cached_tail: 0,
            batch,
        },
    ))
}

/// The sending half. `Send` (it moves to the producer's core), not `Clone`.
pub(crate) struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Position after the last written slot (may be ahead of the published `tail`).
    local_tail: usize,
    /// What we last stored into `tail`.
    published_tail: usize,
    /// The consumer's `head` as we last saw it (only ever behind the real one).
    cached_head: usize,
    batch: usize,
    /// A batch-triggered publish happened that `flush` has not reported yet.
    unsignalled: bool,
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.shared.capacity())
            .field("unpublished", &self.unpublished())
            .finish()
    }
}

impl<T> Producer<T> {
    /// Append `value`, or give it back when the ring is full. Publishes by itself once
    /// `batch` items are pending; otherwise the item becomes visible at the next
    /// [`flush`](Self::flush).
    pub(crate) fn push(&mut self, value: T) -> Result<(), T> {
        let cap = self.shared.capacity();
        if self.local_tail.wrapping_sub(self.cached_head) == cap {
            // Looks full: see how far the consumer really got. Acquire pairs with the
            // consumer's Release store, so its reads of the freed slots are complete.
            self.cached_head = self.shared.head.load(Ordering::Acquire);
            if self.local_tail.wrapping_sub(self.cached_head) == cap {
                return Err(value);
            }
        }
        // SAFETY: `local_tail - head < cap`, so the slot is outside `[head, tail)`: the
        // consumer will not touch it until we publish a tail past it, and the previous item
        // there (if any) was moved out before the consumer released it (Acquire above or in
        // an earlier call).
        unsafe { (*self.shared.slot(self.local_tail)).write(value) };
        self.local_tail = self.local_tail.wrapping_add(1);
        if self.unpublished() >= self.batch {
            self.publish();
            self.unsignalled = true;
        }
        Ok(())
    }

    /// Items written but not yet visible to the consumer.
    pub(crate) fn unpublished(&self) -> usize {
        self.local_tail.wrapping_sub(self.published_tail)
    }

    fn publish(&mut self) {
        // Release: the slot writes above happen-before the consumer's Acquire load.
        self.shared.tail.store(self.local_tail, Ordering::Release);
        self.published_tail = self.local_tail;
    }

    /// Make every pushed item visible. Returns true if items became visible since the last
    /// call (here or by a batch publish in `push`), i.e. the consumer may need waking.
    pub(crate) fn flush(&mut self) -> bool {
        let mut new = core::mem::take(&mut self.unsignalled);
        if self.unpublished() > 0 {
            self.publish();
            new = true;
        }
        new
    }

    /// Ask the consumer to report its next release (see the module docs). Called after a
    /// push failed, before the producer's core decides whether to sleep.
    pub(crate) fn want_space(&self) {
        self.shared.space_wanted.store(true, Ordering::Relaxed);
    }

    /// Whether a push would find room right now (re-reads the consumer's `head`).
    pub(crate) fn has_space(&mut self) -> bool {
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        self.local_tail.wrapping_sub(self.cached_head) < self.shared.capacity()
    }

    /// The consumer was dropped: nothing pushed from now on will ever be read.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.consumer_closed.load(Ordering::Acquire)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Whatever we wrote becomes visible (to the consumer or, if it is gone too, to the
        // final cleanup in `Shared::drop`, which must know which slots are initialised).
        if self.unpublished() > 0 {
            self.publish();
        }
        // Release: the publish above happens-before a consumer that sees the flag.
        self.shared.producer_closed.store(true, Ordering::Release);
    }
}

/// The receiving half. `Send` (it moves to the consumer's core), not `Clone`.
pub(crate) struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Next slot to read (may be ahead of the published `head`).
    local_head: usize,
    /// What we last stored into `head`.
    released_head: usize,
    /// The producer's `tail` as we last saw it (only ever behind the real one).
    cached_tail: usize,
    batch: usize,
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.shared.capacity())
            .field(
                "unreleased",
                &self.local_head.wrapping_sub(self.released_head),
            )
            .finish()
    }
}

impl<T> Consumer<T> {
    /// Take the oldest published item. Releases the slots by itself every `batch` pops
    /// (without the space-wanted check; call [`release`](Self::release) at the end of a
    /// drain for that).
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.local_head == self.cached_tail {
            // Acquire pairs with the producer's Release publish: the slot writes are visible.
            self.cached_tail = self.shared.tail.load(Ordering::Acquire);
            if self.local_head == self.cached_tail {
                return None;
            }
        }
        // SAFETY: `local_head < tail` (published), so the slot holds an initialised item that
        // the producer wrote before its Release store we Acquired; the producer will not touch
        // it again until we release a head past it. We move the value out exactly once.
        let value = unsafe { (*self.shared.slot(self.local_head)).assume_init_read() };
        self.local_head = self.local_head.wrapping_add(1);
        if self.local_head.wrapping_sub(self.released_head) >= self.batch {
            self.store_head();
        }
        Some(value)
    }

    fn store_head(&mut self) {
        // Release: our moves out of the slots happen-before the producer's reuse of them.
        self.shared.head.store(self.local_head, Ordering::Release);
        self.released_head = self.local_head;
    }

    /// Hand every read slot back to the producer. Returns true if the producer had found the
    /// ring full and asked to be told (its core should then be woken).
    pub(crate) fn release(&mut self) -> bool {
        if self.local_head != self.released_head {
            self.store_head();
        }
        // Pairs with the producer's `want_space(); fence(SeqCst); has_space()`: either it
        // sees our head, or we see its flag (module docs).
        fence(Ordering::SeqCst);
        self.shared.space_wanted.load(Ordering::Relaxed)
            && self.shared.space_wanted.swap(false, Ordering::Relaxed)
    }

    /// Whether an item is published and not yet read (re-reads the producer's `tail`).
    pub(crate) fn has_items(&mut self) -> bool {
        if self.local_head != self.cached_tail {
            return true;
        }
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        self.local_head != self.cached_tail
    }

    /// The producer was dropped. Items it published before may still be waiting: drain
    /// after seeing this. (The endpoint detects dead peers from the producer side; this is
    /// for the ring's own tests.)
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.producer_closed.load(Ordering::Acquire)
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // The slots we moved out of must not be dropped again by `Shared::drop`.
        if self.local_head != self.released_head {
            self.store_head();
        }
        self.shared.consumer_closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        Flush,
        Pop,
        Release,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u32>().prop_map(Op::Push),
            1 => Just(Op::Flush),
            3 => Just(Op::Pop),
            1 => Just(Op::Release),
        ]
    }

    /// The ring's single-threaded behaviour, exactly: what each side can see depends on
    /// what the other published.
    #[derive(Debug, Default)]
    struct Model {
        items: VecDeque<u32>,
        /// Items at the back of `items` the producer has not published.
        unpublished: usize,
        /// Items popped but not released (they still occupy slots for the producer).
        unreleased: usize,
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: if cfg!(miri) { 8 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]
        #[test]
        fn ring_matches_a_vecdeque_model(
            cap_log in 0u32..4,
            batch in 1usize..6,
            ops in proptest::collection::vec(op(), 0..if cfg!(miri) { 40 } else { 300 }),
        ) {
            let cap = 1usize << cap_log;
            let batch_eff = batch.min(cap);
            let (mut tx, mut rx) = channel::<u32>(cap, batch).expect("valid config");
            let mut m = Model::default();
            for op in ops {
                match op {
                    Op::Push(v) => {
                        let room = m.items.len() + m.unreleased < cap;
                        let got = tx.push(v);
                        prop_assert_eq!(got.is_ok(), room);
                        if room {
                            m.items.push_back(v);
                            m.unpublished += 1;
                            if m.unpublished >= batch_eff {
                                m.unpublished = 0;
                            }
                        } else {
                            prop_assert_eq!(got, Err(v));
                        }
                    }
                    Op::Flush => {
                        tx.flush();
                        m.unpublished = 0;
                    }
                    Op::Pop => {
                        let visible = m.items.len() - m.unpublished;
                        let expect = if visible > 0 {
                            m.unreleased += 1;
                            if m.unreleased >= batch_eff {
                                m.unreleased = 0;
                            }
                            m.items.pop_front()
                        } else {
                            None
                        };
                        prop_assert_eq!(rx.pop(), expect);
                    }
                    Op::Release => {
                        prop_assert!(!rx.release(), "nobody asked for space");
                        m.unreleased = 0;
                    }
                }
                prop_assert_eq!(tx.unpublished(), m.unpublished);
                prop_assert_eq!(rx.has_items(), m.items.len() > m.unpublished);
            }
        }
    }

    /// Counts drops so a test can check every item is dropped exactly once.
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn leftover_items_are_dropped_once_whichever_half_goes_last() {
        for consumer_first in [false, true] {
            let drops = Arc::new(AtomicUsize::new(0));
            let (mut tx, mut rx) = channel::<Counted>(8, 4).expect("valid");
            for _ in 0..6 {
                assert!(tx.push(Counted(drops.clone())).is_ok());
            }
            tx.flush();
            // Two read (and dropped by us), one of them unreleased; two written unpublished.
            drop(rx.pop());
            drop(rx.pop());
            for _ in 0..2 {
                assert!(tx.push(Counted(drops.clone())).is_ok());
            }
            assert_eq!(drops.load(Ordering::Relaxed), 2);
            if consumer_first {
                drop(rx);
                assert!(tx.is_closed());
                drop(tx);
            } else {
                drop(tx);
                assert!(rx.is_closed());
                // Unpublished items were published by the drop and can still be read.
                assert!(rx.has_items());
                drop(rx);
            }
            assert_eq!(drops.load(Ordering::Relaxed), 8);
        }
    }

    #[test]
    fn a_full_ring_gives_the_value_back_and_reports_the_space_request() {
        let (mut tx, mut rx) = channel::<u8>(2, 1).expect("valid");
        assert!(tx.push(1).is_ok());
        assert!(tx.push(2).is_ok());
        assert_eq!(tx.push(3), Err(3));
        tx.want_space();
        assert!(!tx.has_space());
        assert_eq!(rx.pop(), Some(1));
        assert!(rx.release(), "the producer asked for space");
        assert!(!rx.release(), "only once");
        assert!(tx.has_space());
        assert!(tx.push(3).is_ok());
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(channel::<u8>(0, 1).is_err());
        assert!(channel::<u8>(3, 1).is_err());
        assert!(channel::<u8>(4, 0).is_err());
        assert!(
            channel::<u8>(4, 100).is_ok(),
            "a batch above capacity is clamped"
        );
    }

    /// Two real threads: every item arrives once, in order. Small enough for Miri, whose
    /// weak-memory emulation checks the orderings.
    #[test]
    fn two_threads_transfer_everything_in_order() {
        let n: u32 = if cfg!(miri) { 300 } else { 200_000 };
        let (mut tx, mut rx) = channel::<u32>(8, 3).expect("valid");
        let producer = std::thread::spawn(move || {
            let mut i = 0;
            while i < n {
                match tx.push(i) {
                    Ok(()) => i += 1,
                    Err(_) => {
                        tx.flush();
                        std::thread::yield_now();
                    }
                }
            }
            tx.flush();
        });
        let mut got = Vec::with_capacity(n as usize);
        while got.len() < n as usize {
            match rx.pop() {
                Some(v) => got.push(v),
                None => {
                    rx.release();
                    std::thread::yield_now();
                }
            }
        }
        producer.join().expect("producer");
        assert!(got.iter().copied().eq(0..n));
        assert!(rx.pop().is_none());
    }

    #[test]
    fn two_threads_with_boxed_messages_and_early_drop() {
        // Heap values make Miri check that no slot is read twice or leaked.
        let n: usize = if cfg!(miri) { 100 } else { 20_000 };
        let (mut tx, mut rx) = channel::<Box<usize>>(4, 2).expect("valid");
        let producer = std::thread::spawn(move || {
            let mut i = 0;
            while i < n {
                if tx.is_closed() {
                    return i;
                }
                match tx.push(Box::new(i)) {
                    Ok(()) => i += 1,
                    Err(_) => {
                        tx.flush();
                        std::thread::yield_now();
                    }
                }
            }
            i
        });
        let mut seen = 0;
        while seen < n / 2 {
            match rx.pop() {
                Some(v) => {
                    assert_eq!(*v, seen);
                    seen += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        drop(rx);
        let pushed = producer.join().expect("producer");
        assert!(pushed >= seen);
    }
}
