//! The bounded single-producer single-consumer ring that carries messages from one core to
//! another. The only `unsafe` of the smp module lives here (with the inline message payloads
//! of [`parcel`]).
//!
//! # Protocol
//!
//! Free-running positions: the consumer's `head` (next slot it reads) is shared, on its own
//! cache line ([`CachePadded`]); the producer's position is private. Slot `i` is
//! `buf[i & mask]` (the capacity is a power of two at most `usize::MAX / 2 + 1`, so wrapping
//! differences never alias). Each slot is one cache line (`align(64)`) holding the item and a
//! **stamp**: the slot at position `p` is full exactly when its stamp is `p + 1`. So the
//! consumer learns that an item is there and reads it from the *same* line: one cache-line
//! transfer per message, where a shared `tail` index would cost two (the index, then the
//! slot). That is the point of the layout: a cross-core round trip then moves two lines, like
//! a raw ping-pong.
//!
//! * The producer writes items into free slots and publishes them, one by one
//!   ([`Producer::publish_now`]) or in batches: [`Producer::flush`] (or the `batch`-th
//!   unpublished push) stores each written slot's stamp
//!   with `Release`, so the slot write happens-before the consumer's `Acquire` load of the
//!   stamp that observes it. The stamp stores go to lines the producer has just written, so a
//!   batch costs no extra transfer.
//! * The consumer moves items out of stamped slots and advances a private `local_head`;
//!   [`Consumer::release_slots`] (or every `batch`-th pop) stores it into `head` with `Release`, so
//!   its moves out happen-before the producer's `Acquire` load of `head` that observes it and
//!   the producer never overwrites a slot still being read.
//! * The producer re-reads `head` only when its cached copy says "full", so a steady stream
//!   costs one shared load per lap at most. A stale stamp (the previous lap's, `p + 1 -
//!   capacity`) never equals `p + 1`.
//!
//! # Sleeping and space
//!
//! The doorbell protocol that decides whether to unpark the consumer's core lives in the smp
//! endpoint, not here; the ring only offers a `SeqCst` fence after each publish
//! ([`Producer::flush`] returns whether anything new became visible, and the endpoint fences
//! once for all rings). For the reverse direction (a full ring), the producer sets
//! `space_wanted`; [`Consumer::release_slots`] stores `head`, the endpoint fences (`SeqCst`;
//! the same fence as for its publishes) and reads the flag ([`Consumer::space_wanted`]).
//! With the producer doing `space_wanted = true; sleeping = true; fence(SeqCst); load head`
//! before it sleeps, one of the two always sees the other (the classic store/fence/load
//! pairing). The consumer clears the flag ([`Consumer::clear_space_wanted`]) only when it
//! wakes the producer, just before the wake: a consumer that read the flag but not yet the
//! producer's `sleeping` must leave it for the next release, or that release (the one the
//! sleeping producer waits for) would find it gone and wake nobody; and a clear after the
//! wake could wipe the request the woken producer makes again before its next sleep.
//!
//! # Shutdown
//!
//! Dropping a [`Producer`] publishes what it wrote; dropping a [`Consumer`] releases what it
//! read. Each sets a `closed` flag the other side can query. The last half to go drops the
//! items still stamped from `head` on, exactly once.
#![allow(unsafe_code)] // slots are written and read through `UnsafeCell<MaybeUninit<T>>`

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::fmt;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// One slot: the item and its stamp on one cache line (two or more for items over 56 bytes).
#[repr(C, align(64))]
struct Slot<T> {
    /// `p + 1` once the item of position `p` is published; anything else: not (yet) full.
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

struct Shared<T> {
    /// Next slot the consumer reads (published by the consumer).
    head: CachePadded<AtomicUsize>,
    /// The producer found the ring full and wants to be woken when space appears.
    space_wanted: AtomicBool,
    /// The producer was dropped.
    producer_closed: AtomicBool,
    /// The consumer was dropped.
    consumer_closed: AtomicBool,
    mask: usize,
    buf: Box<[Slot<T>]>,
}

// SAFETY: the ring moves `T`s from the producer's thread to the consumer's, so `T: Send` is
// required and sufficient. Each slot's value is accessed by exactly one side at a time: the
// producer only writes slots the consumer released (`head`, Release/Acquire) and the consumer
// only reads slots the producer stamped (Release/Acquire), as the module docs describe.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; the `Shared` itself owns `T`s that may be dropped on either thread.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Shared<T> {
    fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// The slot of position `pos`.
    fn slot(&self, pos: usize) -> &Slot<T> {
        &self.buf[pos & self.mask]
    }

    /// Whether the slot of position `pos` holds that position's published item.
    fn is_stamped(&self, pos: usize) -> bool {
        // Acquire pairs with the producer's Release stamp: its write of the item is visible.
        self.slot(pos).stamp.load(Ordering::Acquire) == pos.wrapping_add(1)
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both halves are gone (we hold the last `Arc`): their final stores are visible
        // through the `Arc`'s own release/acquire on the count. The producer stamped
        // everything it wrote when it dropped; the consumer released what it moved out.
        let mut pos = *self.head.get_mut();
        let mask = self.mask;
        for _ in 0..self.capacity() {
            let slot = &mut self.buf[pos & mask];
            if *slot.stamp.get_mut() != pos.wrapping_add(1) {
                break;
            }
            // SAFETY: a stamped slot at or after the released head holds an initialised item
            // nobody moved out; we drop each exactly once and nobody else can access the ring.
            unsafe { slot.value.get_mut().assume_init_drop() };
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
    let buf: Box<[Slot<T>]> = (0..capacity)
        .map(|_| Slot {
            stamp: AtomicUsize::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        })
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
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
            batch,
        },
    ))
}

/// The sending half. `Send` (it moves to the producer's core), not `Clone`.
pub(crate) struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Position after the last written slot.
    local_tail: usize,
    /// Position after the last stamped (published) slot.
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
        // SAFETY: `local_tail - head < cap`, so the slot's previous item (if any) was moved
        // out and released by the consumer (Acquire above or in an earlier call), and the
        // consumer will not read it before we stamp it.
        unsafe { (*self.shared.slot(self.local_tail).value.get()).write(value) };
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
        let mut pos = self.published_tail;
        while pos != self.local_tail {
            // Release: the item's write above happens-before the consumer's Acquire load.
            let next = pos.wrapping_add(1);
            self.shared.slot(pos).stamp.store(next, Ordering::Release);
            pos = next;
        }
        self.published_tail = self.local_tail;
    }

    /// Make every pushed item visible now, for a consumer that may be spinning on it; the
    /// next [`flush`](Self::flush) still reports them (the caller fences and checks the
    /// doorbell there, once for a batch).
    pub(crate) fn publish_now(&mut self) {
        if self.unpublished() > 0 {
            self.publish();
            self.unsignalled = true;
        }
    }

    /// Make every pushed item visible. Returns true if items became visible since the last
    /// call (here, by [`publish_now`](Self::publish_now) or by a batch publish in `push`),
    /// i.e. the consumer may need waking.
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
        if !self.shared.is_stamped(self.local_head) {
            return None;
        }
        // SAFETY: the slot carries this position's stamp, which the producer stored (Release,
        // we Acquired) after writing the item; it will not touch the slot again until we
        // release a head past it. We move the value out exactly once (`local_head` moves on).
        let value = unsafe { (*self.shared.slot(self.local_head).value.get()).assume_init_read() };
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
    /// ring full and asked to be told (and clears that request, as a wake would).
    #[cfg(test)]
    pub(crate) fn release(&mut self) -> bool {
        self.release_slots();
        // Pairs with the producer's `want_space(); fence(SeqCst); has_space()`: either it
        // sees our head, or we see its flag (module docs).
        core::sync::atomic::fence(Ordering::SeqCst);
        let wanted = self.space_wanted();
        if wanted {
            self.clear_space_wanted();
        }
        wanted
    }

    /// The first half of [`release`](Self::release): hand every read slot back. The endpoint
    /// releases all its rings, fences once for them and its publishes, then calls
    /// [`take_space_wanted`](Self::take_space_wanted) on each.
    pub(crate) fn release_slots(&mut self) {
        if self.local_head != self.released_head {
            self.store_head();
        }
    }

    /// The second half of [`release`](Self::release): whether the producer asked to be told
    /// of space. The caller fenced (`SeqCst`) after `release_slots`. Reading does not clear
    /// the request: see [`clear_space_wanted`](Self::clear_space_wanted).
    pub(crate) fn space_wanted(&self) -> bool {
        self.shared.space_wanted.load(Ordering::Relaxed)
    }

    /// The producer's core was woken for the space it asked for: forget the request. Only
    /// after a wake (module docs); a producer that still finds the ring full asks again
    /// before it sleeps.
    pub(crate) fn clear_space_wanted(&self) {
        self.shared.space_wanted.store(false, Ordering::Relaxed);
    }

    /// Whether an item is published and not yet read (reads the next slot's stamp).
    pub(crate) fn has_items(&mut self) -> bool {
        self.shared.is_stamped(self.local_head)
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

/// Type-erased payloads that travel in ring slots without an allocation when they are small:
/// the work closure of a request and the result of a reply. A value of at most
/// [`PARCEL_BYTES`] bytes and pointer alignment is stored inline; a larger one is boxed and
/// the box's pointer stored inline. The rest of the unsafe of the smp module.
pub(crate) mod parcel {
    use alloc::boxed::Box;
    use core::any::TypeId;
    use core::fmt;
    use core::mem::{align_of, size_of, ManuallyDrop, MaybeUninit};
    use core::ptr;

    /// Inline payload words. With the vtable pointer and the message header this keeps a
    /// message at 64 bytes.
    const WORDS: usize = 5;
    /// The largest payload stored inline.
    pub(crate) const PARCEL_BYTES: usize = WORDS * size_of::<usize>();

    type Storage = MaybeUninit<[usize; WORDS]>;

    struct VTable {
        type_id: fn() -> TypeId,
        /// Moves the payload out and consumes it: calls it (work) or drops it (values).
        run: unsafe fn(*mut Storage),
        /// Drops the payload in place.
        drop: unsafe fn(*mut Storage),
    }

    /// Whether `T` is stored inline.
    const fn fits<T>() -> bool {
        size_of::<T>() <= PARCEL_BYTES && align_of::<T>() <= align_of::<usize>()
    }

    /// A `T` written by [`put`].
    ///
    /// # Safety
    /// `p` holds a `T` written by `put::<T>` and not yet read or dropped; afterwards it does
    /// not.
    unsafe fn take_out<T>(p: *mut Storage) -> T {
        if fits::<T>() {
            // SAFETY: (caller) an initialised `T` lives at the start of the storage, which is
            // aligned enough (`fits`); reading it moves it out.
            unsafe { ptr::read(p.cast::<T>()) }
        } else {
            // SAFETY: (caller) the storage holds the pointer of a live `Box<T>` we leaked in
            // `put`; rebuilding the box takes ownership back exactly once.
            unsafe { *Box::from_raw(ptr::read(p.cast::<*mut T>())) }
        }
    }

    fn put<T>(value: T) -> Storage {
        let mut storage = Storage::uninit();
        let p = storage.as_mut_ptr();
        if fits::<T>() {
            // SAFETY: `T` fits in the storage in size and alignment (`fits`), and the storage
            // is ours and uninitialised.
            unsafe { ptr::write(p.cast::<T>(), value) };
        } else {
            // SAFETY: a pointer fits in the storage (WORDS >= 1, usize-aligned).
            unsafe { ptr::write(p.cast::<*mut T>(), Box::into_raw(Box::new(value))) };
        }
        storage
    }

    /// # Safety
    /// As [`take_out`].
    unsafe fn drop_payload<T>(p: *mut Storage) {
        // SAFETY: forwarded from the caller.
        drop(unsafe { take_out::<T>(p) });
    }

    /// # Safety
    /// As [`take_out`].
    unsafe fn call_payload<F: FnOnce()>(p: *mut Storage) {
        // SAFETY: forwarded from the caller.
        let f = unsafe { take_out::<F>(p) };
        f();
    }

    struct Table<T>(core::marker::PhantomData<T>);

    impl<T: 'static> Table<T> {
        const VALUE: VTable = VTable {
            type_id: TypeId::of::<T>,
            run: drop_payload::<T>,
            drop: drop_payload::<T>,
        };
    }

    impl<F: FnOnce() + 'static> Table<F> {
        const WORK: VTable = VTable {
            type_id: TypeId::of::<F>,
            run: call_payload::<F>,
            drop: drop_payload::<F>,
        };
    }

    /// A `Send` value or closure of any type, inline when small. Dropping it drops the
    /// payload.
    pub(crate) struct Parcel {
        vtable: &'static VTable,
        storage: Storage,
    }

    // SAFETY: every constructor requires the payload to be `Send`, and the storage holds
    // nothing else (an inline `T` or the pointer of a `Box<T>` owned by the parcel).
    unsafe impl Send for Parcel {}

    impl fmt::Debug for Parcel {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Parcel").finish_non_exhaustive()
        }
    }

    impl Parcel {
        /// Wrap a value; get it back with [`take`](Self::take).
        pub(crate) fn value<T: Send + 'static>(value: T) -> Self {
            Parcel {
                vtable: &Table::<T>::VALUE,
                storage: put(value),
            }
        }

        /// Wrap a closure; run it with [`run`](Self::run).
        pub(crate) fn work<F: FnOnce() + Send + 'static>(f: F) -> Self {
            Parcel {
                vtable: &Table::<F>::WORK,
                storage: put(f),
            }
        }

        /// Whether a payload of type `T` would be stored without an allocation.
        #[cfg(test)]
        pub(crate) const fn is_inline<T>() -> bool {
            fits::<T>()
        }

        /// Call the closure of a [`work`](Self::work) parcel (a value parcel is just
        /// dropped).
        pub(crate) fn run(self) {
            let mut this = ManuallyDrop::new(self);
            // SAFETY: the storage holds the payload `vtable` was made for (constructors), not
            // yet consumed; `ManuallyDrop` keeps our `Drop` from consuming it again.
            unsafe { (this.vtable.run)(&mut this.storage) };
        }

        /// The value, if it is a `T`; the parcel back otherwise.
        pub(crate) fn take<T: 'static>(self) -> Result<T, Self> {
            if (self.vtable.type_id)() != TypeId::of::<T>() {
                return Err(self);
            }
            let mut this = ManuallyDrop::new(self);
            // SAFETY: the type ids match, so the storage holds a `T` written by `put::<T>`
            // (constructors), not yet consumed; `ManuallyDrop` prevents a second consumption.
            Ok(unsafe { take_out::<T>(&mut this.storage) })
        }
    }

    impl Drop for Parcel {
        fn drop(&mut self) {
            // SAFETY: a parcel that is dropped still owns its payload (`run` and `take`
            // bypass this drop).
            unsafe { (self.vtable.drop)(&mut self.storage) };
        }
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
        PublishNow,
        Flush,
        Pop,
        Release,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u32>().prop_map(Op::Push),
            1 => Just(Op::PublishNow),
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
                    Op::PublishNow => {
                        let had = m.unpublished > 0;
                        tx.publish_now();
                        m.unpublished = 0;
                        if had {
                            prop_assert!(tx.flush(), "a flush reports what publish_now showed");
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

    #[test]
    fn parcels_keep_small_values_inline_and_drop_or_return_each_payload_once() {
        use super::parcel::{Parcel, PARCEL_BYTES};
        let drops = Arc::new(AtomicUsize::new(0));
        // Small: inline. Large: boxed. Both come back, and the wrong type is refused.
        assert!(Parcel::is_inline::<(u64, Counted)>());
        assert!(!Parcel::is_inline::<[u8; PARCEL_BYTES + 1]>());
        let p = Parcel::value((7u64, Counted(drops.clone())));
        let p = p.take::<u32>().expect_err("not a u32");
        let (v, c) = p.take::<(u64, Counted)>().expect("the right type");
        assert_eq!(v, 7);
        drop(c);
        let big = Parcel::value([3u8; PARCEL_BYTES + 9]);
        assert_eq!(
            big.take::<[u8; PARCEL_BYTES + 9]>().map(|a| a[0]).ok(),
            Some(3)
        );
        // Dropped unread, inline and boxed.
        drop(Parcel::value(Counted(drops.clone())));
        drop(Parcel::value(([0u64; 8], Counted(drops.clone()))));
        assert_eq!(drops.load(Ordering::Relaxed), 3);
        // Work runs once (inline and boxed captures), or drops its captures unrun.
        let ran = Arc::new(AtomicUsize::new(0));
        let (r, pad) = (ran.clone(), [1u8; 64]);
        Parcel::work(move || {
            r.fetch_add(usize::from(pad[0]), Ordering::Relaxed);
        })
        .run();
        let r = ran.clone();
        Parcel::work(move || {
            r.fetch_add(1, Ordering::Relaxed);
        })
        .run();
        let c = Counted(drops.clone());
        drop(Parcel::work(move || drop(c)));
        assert_eq!(ran.load(Ordering::Relaxed), 2);
        assert_eq!(drops.load(Ordering::Relaxed), 4);
        // Sent to another thread and opened there.
        let p = Parcel::value(Counted(drops.clone()));
        std::thread::spawn(move || drop(p.take::<Counted>().ok()))
            .join()
            .expect("thread");
        assert_eq!(drops.load(Ordering::Relaxed), 5);
    }
}
