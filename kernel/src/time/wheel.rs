//! A hierarchical timer wheel: O(1) insert, cancel and re-arm; expiry in deadline order.
//!
//! # Layout
//!
//! * **Tick: 1024 ns (≈1 µs).** Deadlines keep their full nanosecond precision; the tick only
//!   decides which slot a timer lives in. A power of two turns "which tick" into a shift, and
//!   `64 - 10 = 54` tick bits split evenly into nine 6-bit levels, so the wheel covers the
//!   *whole* `u64` nanosecond range (up to [`Instant::MAX`]) without an overflow list that would
//!   need rescanning. A finer tick would add a level; a coarser one (1 ms) would put every timer
//!   of a millisecond into one level-0 slot, which `expire` rescans when it is called several
//!   times within that tick (the executor calls it every loop iteration).
//! * **9 levels × 64 slots.** A slot of level `L` spans `64^L` ticks: level 0 slots are one
//!   tick (≈1 µs) each, level 1 ≈65 µs, level 2 ≈4.2 ms, level 3 ≈268 ms, level 4 ≈17 s,
//!   level 5 ≈18 min, level 6 ≈19.5 h, level 7 ≈52 days, level 8 ≈9 years. A timer is filed
//!   at the level of the highest 6-bit digit in which its tick differs from the wheel's
//!   current tick, so a timer cascades down at most eight times in its life, and a timer on a
//!   lower level is always strictly earlier than any timer on a higher one.
//! * **Slab + intrusive lists.** Timers live in a `Vec` slab; each slot is a doubly-linked
//!   list threaded through the slab by `u32` index, so insert, cancel and re-arm are O(1) and
//!   allocate nothing once the slab has grown to the peak number of live timers. The first
//!   entry of a list has no predecessor, so its `prev` names the slot instead (`HEAD`):
//!   unlinking needs no separate slot field, and an entry is 48 bytes with a `Waker`. Keys carry a
//!   64-bit generation, bumped whenever an entry is freed, so a stale key (cancelled, fired,
//!   or from before a reuse) matches nothing.
//! * **Occupancy bitmaps + per-slot minimum.** One `u64` per level says which slots hold
//!   timers, and one more bit per level says which levels do, so the earliest slot is found
//!   with two `trailing_zeros`. Each slot remembers the smallest deadline filed into it since
//!   it was last emptied; that makes [`TimerWheel::next_deadline`] O(1) and, unless the
//!   earliest timer was cancelled or re-armed, exact.

use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;
use core::num::NonZeroU32;

use seastar_hal::Instant;

/// log2 of the tick length in nanoseconds.
const TICK_SHIFT: u32 = 10;
/// log2 of the number of slots per level.
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// `(64 - TICK_SHIFT) / SLOT_BITS`: enough levels for every representable tick.
const LEVELS: usize = 9;
/// End of a list / no entry.
const NIL: u32 = u32::MAX;
/// Tag of a list's first entry's `prev`: this bit plus the slot's `level * SLOTS + slot`.
/// Slab indices stay below it.
const HEAD: u32 = 1 << 31;

// The level layout must cover every tick a `u64` deadline can produce, or a far deadline
// would be filed at a level that does not exist.
const _: () = assert!(LEVELS as u32 * SLOT_BITS >= u64::BITS - TICK_SHIFT);
const _: () = assert!(LEVELS <= u16::BITS as usize);

/// Identifies one timer in a [`TimerWheel`].
///
/// A key stays valid until its timer fires or is cancelled; after that every operation with
/// it is a no-op (`None` / `false`), even if the wheel reuses the storage for another timer.
/// A key is only meaningful for the wheel that issued it: each wheel has an id, and another
/// wheel (another core's, or a later executor's on the same thread) ignores the key.
///
/// 16 bytes, and `Option<TimerKey>` too (the wheel id is never zero), so a [`Sleep`]
/// holding one stays 24 bytes.
///
/// [`Sleep`]: super::Sleep
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: u32,
    wheel: NonZeroU32,
    generation: u64,
}

/// A process-unique id per wheel, never zero. A `u32` wraps only after four billion wheels
/// (zero is then skipped); targets without atomic read-modify-write (thumbv6m) all share
/// id 1 and rely on the generation check alone.
fn next_wheel_id() -> NonZeroU32 {
    #[cfg(target_has_atomic = "32")]
    {
        use core::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(1);
        loop {
            if let Some(id) = NonZeroU32::new(NEXT.fetch_add(1, Ordering::Relaxed)) {
                return id;
            }
        }
    }
    #[cfg(not(target_has_atomic = "32"))]
    {
        NonZeroU32::MIN
    }
}

/// One slab entry: a live timer when `value` is `Some`, otherwise a free cell whose `next`
/// links the free list.
struct Entry<T> {
    value: Option<T>,
    /// Bumped on every free, so keys to a previous occupant no longer match. 64 bits never wrap.
    generation: u64,
    deadline: u64,
    /// Insertion order, to break deadline ties.
    seq: u64,
    /// The previous entry of the list, or `HEAD | slot id` for the list's first entry.
    prev: u32,
    next: u32,
}

/// A hierarchical timer wheel holding one `T` per timer (the executor stores a `Waker`).
///
/// All operations are O(1) except [`expire`](Self::expire), which is O(timers fired +
/// timers cascaded + levels); each timer cascades at most `LEVELS - 1` times.
///
/// Time only moves forward through [`expire`](Self::expire): the wheel never reads a clock.
/// The `now` values passed to it must not decrease (the HAL clock is monotonic); a smaller
/// `now` never fires anything early, it just may not fire a timer until `now` catches up with
/// the largest `now` seen.
pub struct TimerWheel<T> {
    id: NonZeroU32,
    entries: Vec<Entry<T>>,
    free_head: u32,
    /// Head of each slot's list, indexed by `level * SLOTS + slot`.
    heads: Vec<u32>,
    /// Lower bound of the deadlines (ns) in each slot: the smallest deadline filed since the
    /// slot was last emptied. `u64::MAX` for an empty slot.
    mins: Vec<u64>,
    /// Bit `s` of `occupied[l]`: slot `s` of level `l` is non-empty.
    occupied: [u64; LEVELS],
    /// Bit `l`: `occupied[l] != 0`.
    levels: u16,
    /// The wheel's current tick. Every live timer's tick (its deadline's tick, or `elapsed`
    /// if that is earlier) is `>= elapsed`, and it is filed at the level of the highest digit
    /// in which it differs from `elapsed` (0 if none).
    elapsed: u64,
    next_seq: u64,
    len: usize,
    /// Due timers taken out of the wheel but not yet handed to `expire`'s callback, in
    /// reverse firing order. Empty except after the callback panicked: the rest are then
    /// delivered by the next `expire`, so no timer is lost or fired twice.
    /// Each with its `(deadline << 64) | seq`, the firing order.
    fired: Vec<(u128, T)>,
}

impl<T> TimerWheel<T> {
    /// An empty wheel whose clock starts at `now`.
    pub fn new(now: Instant) -> Self {
        TimerWheel {
            id: next_wheel_id(),
            entries: Vec::new(),
            free_head: NIL,
            heads: vec![NIL; LEVELS * SLOTS],
            mins: vec![u64::MAX; LEVELS * SLOTS],
            occupied: [0; LEVELS],
            levels: 0,
            elapsed: tick_of(now.as_nanos()),
            next_seq: 0,
            len: 0,
            fired: Vec::new(),
        }
    }

    /// Number of timers that have neither fired nor been cancelled.
    pub fn len(&self) -> usize {
        self.len + self.fired.len()
    }

    /// `true` if no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Schedule `value` to be handed to [`expire`](Self::expire)'s callback at `deadline`.
    ///
    /// A deadline in the past fires at the next `expire`. Ties fire in insertion order.
    ///
    /// # Panics
    ///
    /// If more than `2^31` timers are alive at once (long after memory runs out).
    pub fn insert(&mut self, deadline: Instant, value: T) -> TimerKey {
        let seq = self.bump_seq();
        let deadline = deadline.as_nanos();
        // The slot first, so the entry is written once, already linked.
        let (id, head) = self.slot_for(deadline);
        let (index, generation) = if self.free_head != NIL {
            let index = self.free_head;
            let cell = &mut self.entries[index as usize];
            self.free_head = cell.next;
            // A free cell holds no value, so nothing is dropped here.
            cell.value = Some(value);
            cell.deadline = deadline;
            cell.seq = seq;
            cell.prev = HEAD | id;
            cell.next = head;
            (index, cell.generation)
        } else {
            let index = match u32::try_from(self.entries.len()) {
                Ok(i) if i < HEAD => i,
                _ => panic!("TimerWheel: more than 2^31 live timers"),
            };
            self.entries.push(Entry {
                value: Some(value),
                generation: 0,
                deadline,
                seq,
                prev: HEAD | id,
                next: head,
            });
            (index, 0)
        };
        self.push_front(id, head, index, deadline);
        self.len += 1;
        TimerKey {
            index,
            wheel: self.id,
            generation,
        }
    }

    /// Remove the timer and return its value, or `None` if `key` has fired or been cancelled.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        if key.wheel != self.id {
            return None;
        }
        // One look-up of the entry for the check, the unlinking and the freeing: the hot
        // path of every sleep or timeout dropped before it fired.
        let free_head = self.free_head;
        let entry = self.entries.get_mut(key.index as usize)?;
        if entry.generation != key.generation {
            return None;
        }
        let value = entry.value.take()?;
        let (prev, next) = (entry.prev, entry.next);
        entry.generation = entry.generation.wrapping_add(1);
        entry.next = free_head;
        self.free_head = key.index;
        self.len -= 1;
        self.splice_out(prev, next);
        Some(value)
    }

    /// The timer's value, to update it in place (the sleep future swaps its waker this way).
    pub fn get_mut(&mut self, key: TimerKey) -> Option<&mut T> {
        let index = self.live(key)?;
        self.entries[index as usize].value.as_mut()
    }

    /// The timer's value.
    pub fn get(&self, key: TimerKey) -> Option<&T> {
        let index = self.live(key)?;
        self.entries[index as usize].value.as_ref()
    }

    /// The timer's deadline, or `None` if `key` has fired or been cancelled.
    pub fn deadline(&self, key: TimerKey) -> Option<Instant> {
        let index = self.live(key)?;
        Some(Instant::from_nanos(self.entries[index as usize].deadline))
    }

    /// `true` if the timer has neither fired nor been cancelled.
    pub fn contains(&self, key: TimerKey) -> bool {
        self.live(key).is_some()
    }

    /// `true` if this wheel issued `key`, whether or not its timer is still pending.
    pub fn issued(&self, key: TimerKey) -> bool {
        key.wheel == self.id
    }

    /// Move a pending timer to `new_deadline`, keeping its key and storage. For ordering among
    /// equal deadlines it counts as inserted now. Returns `false` (and does nothing) if `key`
    /// has fired or been cancelled.
    pub fn reset(&mut self, key: TimerKey, new_deadline: Instant) -> bool {
        let Some(index) = self.live(key) else {
            return false;
        };
        self.unlink(index);
        let seq = self.bump_seq();
        let entry = &mut self.entries[index as usize];
        entry.deadline = new_deadline.as_nanos();
        entry.seq = seq;
        self.link(index);
        true
    }

    /// A lower bound for the earliest pending deadline, `None` if no timer is pending. O(1).
    ///
    /// The bound is never later than the earliest deadline, and it is *exact* unless the
    /// earliest timer filed in the earliest non-empty slot was cancelled or re-armed since
    /// that slot was last processed. When it is not exact, `expire(next_deadline())` fires
    /// nothing but refines the wheel, after which `next_deadline` is strictly later. In every
    /// case, right after `expire(now)` this returns `None` or an instant after `now`, so a
    /// driver that repeatedly jumps time to `next_deadline()` and calls `expire` makes
    /// progress and fires each timer at exactly its deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.fired.is_empty() {
            // Left over from a panicking callback: already due.
            return Some(Instant::ZERO);
        }
        let (level, slot) = self.first_slot()?;
        Some(Instant::from_nanos(self.mins[level * SLOTS + slot]))
    }

    /// Fire every timer whose deadline is `<= now`, in deadline order (ties in insertion
    /// order), each exactly once, by passing its value to `f`.
    ///
    /// If `f` panics, the timers already taken out but not yet passed to `f` are passed to
    /// the `f` of the next call, before any others.
    pub fn expire(&mut self, now: Instant, mut f: impl FnMut(T)) {
        self.deliver(&mut f);
        let now_ns = now.as_nanos();
        let now_tick = tick_of(now_ns);
        loop {
            let Some((level, slot)) = self.first_slot() else {
                // Empty: the wheel may jump to any time.
                self.elapsed = self.elapsed.max(now_tick);
                return;
            };
            let id = level * SLOTS + slot;
            let start = self.slot_start(level, slot);
            if start > now_tick {
                // Every timer lies in a slot after `now_tick`, so `now_tick` shares all the
                // digits the levels depend on: the wheel may move there.
                self.elapsed = self.elapsed.max(now_tick);
                return;
            }
            if now_ns < self.mins[id] {
                // Nothing due. `elapsed` stays put: `now_tick` may be inside this slot's span,
                // and moving there would break the filing invariant for its timers.
                return;
            }
            // The slot starts at or before `now_tick` and all other timers are later, so the
            // wheel can move to its start.
            self.elapsed = start;
            if now_ns >= slot_last_ns(start, level) {
                // The whole slot is due (the usual case once time has moved past it): take
                // every timer at once, one visit each, rather than cascade them level by
                // level down to level 0 and visit them again there.
                self.take_all(id);
            } else if level > 0 {
                self.cascade(id);
                continue;
            } else {
                self.take_due(id, now_ns);
            }
            self.deliver(&mut f);
            if self.heads[id] != NIL {
                // What is left of the current tick is due after `now`; all else is later.
                return;
            }
        }
    }

    fn bump_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        seq
    }

    /// The slab index of a live key.
    fn live(&self, key: TimerKey) -> Option<u32> {
        if key.wheel != self.id {
            return None;
        }
        let entry = self.entries.get(key.index as usize)?;
        // A cell's generation moves on when it is freed (fired or cancelled), so a matching
        // generation alone means live; the value check is belt and braces.
        (entry.generation == key.generation && entry.value.is_some()).then_some(key.index)
    }

    /// Free an unlinked entry and return its value.
    fn free(&mut self, index: u32) -> Option<T> {
        let entry = &mut self.entries[index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        entry.next = self.free_head;
        self.free_head = index;
        entry.value.take()
    }

    /// The earliest non-empty slot: the lowest occupied level holds the earliest timers, and
    /// within a level, slots are in time order (no wrap-around, by the filing invariant).
    fn first_slot(&self) -> Option<(usize, usize)> {
        if self.levels == 0 {
            return None;
        }
        let level = self.levels.trailing_zeros() as usize;
        let slot = self.occupied[level].trailing_zeros() as usize;
        Some((level, slot))
    }

    /// First tick covered by `slot` of `level`, in the current rotation of the levels above.
    fn slot_start(&self, level: usize, slot: usize) -> u64 {
        let shift = SLOT_BITS * level as u32;
        let above = self.elapsed & !((1u64 << (shift + SLOT_BITS)) - 1);
        above | ((slot as u64) << shift)
    }

    /// The slot (`level * SLOTS + slot`) a timer due at `deadline` belongs in, and that
    /// slot's current head.
    #[inline(always)]
    fn slot_for(&self, deadline: u64) -> (u32, u32) {
        // A deadline already behind the wheel goes to the current tick: due at next expire.
        let tick = tick_of(deadline).max(self.elapsed);
        let level = level_for(self.elapsed, tick);
        let slot = ((tick >> (SLOT_BITS * level as u32)) & SLOT_MASK) as usize;
        let id = level * SLOTS + slot;
        // `id < LEVELS * SLOTS = 576`, which fits below `HEAD`.
        (id as u32, self.heads[id])
    }

    /// Make `index` (whose `prev` and `next` already say so) the head of slot `id`, in front
    /// of `head`.
    #[inline(always)]
    fn push_front(&mut self, id: u32, head: u32, index: u32, deadline: u64) {
        let id = id as usize;
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        self.heads[id] = index;
        self.mins[id] = self.mins[id].min(deadline);
        let (level, slot) = (id / SLOTS, id % SLOTS);
        self.occupied[level] |= 1 << slot;
        self.levels |= 1 << level;
    }

    /// File an unlinked live entry in the slot its deadline belongs to.
    #[inline(always)]
    fn link(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        let deadline = entry.deadline;
        let (id, head) = self.slot_for(deadline);
        let entry = &mut self.entries[index as usize];
        entry.prev = HEAD | id;
        entry.next = head;
        self.push_front(id, head, index, deadline);
    }

    /// Take a linked entry out of its slot.
    fn unlink(&mut self, index: u32) {
        let e = &self.entries[index as usize];
        self.splice_out(e.prev, e.next);
    }

    /// Join the neighbours `prev` and `next` of an entry taken out of its list.
    #[inline(always)]
    fn splice_out(&mut self, prev: u32, next: u32) {
        if next != NIL {
            // Becomes the head if the entry was: it inherits the slot tag.
            self.entries[next as usize].prev = prev;
        }
        if prev & HEAD == 0 {
            self.entries[prev as usize].next = next;
        } else {
            let id = (prev & !HEAD) as usize;
            if next != NIL {
                self.heads[id] = next;
            } else {
                self.clear_slot(id);
            }
        }
        // The slot's minimum may now be stale; it stays a valid lower bound until the slot
        // is next processed.
    }

    /// Mark an emptied slot as free.
    fn clear_slot(&mut self, id: usize) {
        let (level, slot) = (id / SLOTS, id % SLOTS);
        self.heads[id] = NIL;
        self.mins[id] = u64::MAX;
        self.occupied[level] &= !(1 << slot);
        if self.occupied[level] == 0 {
            self.levels &= !(1 << level);
        }
    }

    /// Re-file every timer of a higher-level slot relative to the (just advanced) `elapsed`;
    /// each lands on a lower level.
    fn cascade(&mut self, id: usize) {
        let mut index = self.heads[id];
        self.clear_slot(id);
        while index != NIL {
            let next = self.entries[index as usize].next;
            self.link(index);
            index = next;
        }
    }

    /// Move every timer of slot `id` (of any level) to `self.fired`, sorted for `deliver`.
    /// The caller knows they are all due.
    fn take_all(&mut self, id: usize) {
        let mut index = self.heads[id];
        self.clear_slot(id);
        while index != NIL {
            let (deadline, seq, next) = {
                let e = &self.entries[index as usize];
                (e.deadline, e.seq, e.next)
            };
            // The list is dropped as a whole: no entry needs unlinking from its neighbours.
            self.len -= 1;
            if let Some(value) = self.free(index) {
                self.fired.push((order_key(deadline, seq), value));
            }
            index = next;
        }
        // Slots are visited in time order and hold disjoint tick ranges, so sorting this
        // batch is enough for global order. Reversed, so `deliver` can pop.
        self.fired.sort_unstable_by_key(|&(key, _)| Reverse(key));
    }

    /// Move the timers of level-0 slot `id` with deadline `<= now_ns` to `self.fired`, sorted
    /// for `deliver`; the rest stay, and the slot's minimum becomes exact.
    fn take_due(&mut self, id: usize, now_ns: u64) {
        let mut index = self.heads[id];
        let mut min = u64::MAX;
        while index != NIL {
            let (deadline, seq, next) = {
                let e = &self.entries[index as usize];
                (e.deadline, e.seq, e.next)
            };
            if deadline <= now_ns {
                self.unlink(index);
                self.len -= 1;
                if let Some(value) = self.free(index) {
                    self.fired.push((order_key(deadline, seq), value));
                }
            } else {
                min = min.min(deadline);
            }
            index = next;
        }
        if self.heads[id] != NIL {
            self.mins[id] = min;
        }
        // One slot is one tick and later slots hold strictly later deadlines, so sorting
        // this batch is enough for global order. Reversed, so `deliver` can pop.
        self.fired.sort_unstable_by_key(|&(key, _)| Reverse(key));
    }

    /// Hand out `self.fired`, earliest first. Popping one at a time leaves the rest in place
    /// if `f` panics.
    fn deliver(&mut self, f: &mut impl FnMut(T)) {
        while let Some((_, value)) = self.fired.pop() {
            f(value);
        }
    }
}

/// Firing order: by deadline, ties by insertion order. One `u128` compares faster than a pair.
fn order_key(deadline: u64, seq: u64) -> u128 {
    (u128::from(deadline) << 64) | u128::from(seq)
}

fn tick_of(nanos: u64) -> u64 {
    nanos >> TICK_SHIFT
}

/// The last nanosecond covered by the slot of `level` that starts at tick `start`.
fn slot_last_ns(start: u64, level: usize) -> u64 {
    let last_tick = start | ((1u64 << (SLOT_BITS * level as u32)) - 1);
    // `last_tick < 2^54`, so the shift cannot overflow.
    (last_tick << TICK_SHIFT) | ((1u64 << TICK_SHIFT) - 1)
}

/// The level at which a timer due at `tick` is filed when the wheel is at `elapsed`: that of
/// the highest 6-bit digit in which they differ (0 if they are equal).
fn level_for(elapsed: u64, tick: u64) -> usize {
    let masked = (elapsed ^ tick) | SLOT_MASK;
    let significant = u64::BITS - 1 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.len())
            .field("elapsed_tick", &self.elapsed)
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
