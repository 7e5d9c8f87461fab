//! The FIFO of parked futures that every primitive of [`crate::sync`] is built on.
//!
//! A slab of nodes threaded into a doubly linked list by index: pushing, popping the head and
//! cancelling any waiter are all O(1), and there is no `unsafe` and no intrusive pointer.
//!
//! Dequeuing a waiter and freeing its slot are two separate steps. A primitive that grants
//! something to a waiter (units, a notification, a channel slot) pops it off the queue and
//! records the outcome in the slot; the slot stays allocated until the waiter's future reads it
//! ([`WaitList::remove`]), either when it is polled or when it is dropped. That is what makes
//! cancellation lossless: a future dropped between "granted" and "polled" still finds out what
//! it was given and hands it on.

use alloc::vec::Vec;
use core::task::Waker;

/// Names one waiter's slot in a [`WaitList`].
///
/// Only the future that pushed the waiter holds its key, and it stays valid until that future
/// calls [`WaitList::remove`]. Slots are never reused before that, so no generation count is
/// needed to tell an old key from a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaiterKey(usize);

#[derive(Debug)]
enum Slot<W> {
    Vacant { next_free: Option<usize> },
    Occupied(Node<W>),
}

#[derive(Debug)]
struct Node<W> {
    waiter: W,
    prev: Option<usize>,
    next: Option<usize>,
    queued: bool,
}

/// A FIFO of waiters of type `W`, with O(1) removal of any waiter by its [`WaiterKey`].
#[derive(Debug)]
pub(crate) struct WaitList<W> {
    slots: Vec<Slot<W>>,
    free_head: Option<usize>,
    head: Option<usize>,
    tail: Option<usize>,
    queued: usize,
}

impl<W> WaitList<W> {
    /// An empty list; allocates nothing until the first push.
    pub(crate) const fn new() -> Self {
        Self {
            slots: Vec::new(),
            free_head: None,
            head: None,
            tail: None,
            queued: 0,
        }
    }

    /// How many waiters are still queued (popped waiters whose slot is not yet removed do not
    /// count).
    pub(crate) fn len(&self) -> usize {
        self.queued
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Queues `waiter` at the back.
    pub(crate) fn push_back(&mut self, waiter: W) -> WaiterKey {
        let node = Node {
            waiter,
            prev: self.tail,
            next: None,
            queued: true,
        };
        let index = match self.free_head {
            Some(index) => {
                if let Some(Slot::Vacant { next_free }) = self.slots.get(index) {
                    self.free_head = *next_free;
                }
                if let Some(slot) = self.slots.get_mut(index) {
                    *slot = Slot::Occupied(node);
                }
                index
            }
            None => {
                self.slots.push(Slot::Occupied(node));
                self.slots.len() - 1
            }
        };
        match self.tail.and_then(|tail| self.node_mut(tail)) {
            Some(tail) => tail.next = Some(index),
            None => self.head = Some(index),
        }
        self.tail = Some(index);
        self.queued += 1;
        WaiterKey(index)
    }

    /// The waiter at the head of the queue.
    pub(crate) fn front(&self) -> Option<&W> {
        self.head
            .and_then(|head| self.node(head))
            .map(|node| &node.waiter)
    }

    /// Takes the head waiter off the queue but keeps its slot, and returns it so that the
    /// caller can record what the waiter was given.
    pub(crate) fn pop_front(&mut self) -> Option<&mut W> {
        let head = self.head?;
        self.unlink(head);
        self.node_mut(head).map(|node| &mut node.waiter)
    }

    /// The waiter in slot `key`, queued or already popped.
    pub(crate) fn get_mut(&mut self, key: WaiterKey) -> Option<&mut W> {
        self.node_mut(key.0).map(|node| &mut node.waiter)
    }

    /// Takes the waiter out of the queue if it is still there and frees its slot.
    pub(crate) fn remove(&mut self, key: WaiterKey) -> Option<W> {
        self.unlink(key.0);
        let slot = self.slots.get_mut(key.0)?;
        if !matches!(slot, Slot::Occupied(_)) {
            return None;
        }
        let vacant = Slot::Vacant {
            next_free: self.free_head,
        };
        let Slot::Occupied(node) = core::mem::replace(slot, vacant) else {
            return None;
        };
        self.free_head = Some(key.0);
        Some(node.waiter)
    }

    fn node(&self, index: usize) -> Option<&Node<W>> {
        match self.slots.get(index) {
            Some(Slot::Occupied(node)) => Some(node),
            _ => None,
        }
    }

    fn node_mut(&mut self, index: usize) -> Option<&mut Node<W>> {
        match self.slots.get_mut(index) {
            Some(Slot::Occupied(node)) => Some(node),
            _ => None,
        }
    }

    fn unlink(&mut self, index: usize) {
        let (prev, next) = match self.node_mut(index) {
            Some(node) if node.queued => {
                node.queued = false;
                (node.prev.take(), node.next.take())
            }
            _ => return,
        };
        match prev.and_then(|prev| self.node_mut(prev)) {
            Some(prev_node) => prev_node.next = next,
            None => self.head = next,
        }
        match next.and_then(|next| self.node_mut(next)) {
            Some(next_node) => next_node.prev = prev,
            None => self.tail = prev,
        }
        self.queued -= 1;
    }
}

/// Wakers collected while a primitive's state is borrowed, woken once the borrow is released.
///
/// Waking with the `RefCell` still borrowed would panic if the waker re-entered the primitive
/// (a waker that polls in place, or an executor that runs the task on the spot), so every
/// primitive gathers its wakers here first.
#[derive(Debug, Default)]
pub(crate) struct Wakers(Vec<Waker>);

impl Wakers {
    pub(crate) const fn new() -> Self {
        Self(Vec::new())
    }

    pub(crate) fn push(&mut self, waker: Option<Waker>) {
        if let Some(waker) = waker {
            self.0.push(waker);
        }
    }

    pub(crate) fn wake_all(self) {
        for waker in self.0 {
            waker.wake();
        }
    }
}

/// Keeps `slot` holding a waker that wakes the task behind `cx`, cloning only when the task
/// changed.
pub(crate) fn store_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(stored) if stored.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use proptest::prelude::*;

    #[test]
    fn pops_in_push_order_and_skips_removed() {
        let mut list = WaitList::new();
        let a = list.push_back('a');
        let b = list.push_back('b');
        let c = list.push_back('c');
        assert_eq!(list.len(), 3);
        assert_eq!(list.remove(b), Some('b'));
        assert_eq!(list.len(), 2);
        assert_eq!(list.pop_front().copied(), Some('a'));
        // A popped waiter keeps its slot until removed, but no longer counts as queued.
        assert_eq!(list.len(), 1);
        assert_eq!(list.get_mut(a).copied(), Some('a'));
        assert_eq!(list.remove(a), Some('a'));
        assert_eq!(list.get_mut(a), None);
        assert_eq!(list.front(), Some(&'c'));
        assert_eq!(list.remove(c), Some('c'));
        assert!(list.is_empty());
        assert_eq!(list.pop_front(), None);
    }

    #[test]
    fn removing_twice_is_harmless() {
        let mut list = WaitList::new();
        let a = list.push_back(1);
        assert_eq!(list.remove(a), Some(1));
        assert_eq!(list.remove(a), None);
        let b = list.push_back(2);
        // The freed slot is reused.
        assert_eq!(a, b);
        assert_eq!(list.len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Pop,
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Push),
            2 => Just(Op::Pop),
            2 => any::<usize>().prop_map(Op::Remove),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 10 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Against a `VecDeque` model: same order, same length, keys stay valid after a pop.
        #[test]
        fn behaves_like_a_fifo(ops in proptest::collection::vec(op(), 0..64)) {
            let mut list = WaitList::new();
            let mut queue: VecDeque<(WaiterKey, u32)> = VecDeque::new();
            let mut popped: Vec<(WaiterKey, u32)> = Vec::new();
            let mut next_value = 0_u32;
            for op in ops {
                match op {
                    Op::Push => {
                        let key = list.push_back(next_value);
                        queue.push_back((key, next_value));
                        next_value += 1;
                    }
                    Op::Pop => {
                        let got = list.pop_front().copied();
                        let want = queue.pop_front();
                        prop_assert_eq!(got, want.map(|(_, value)| value));
                        popped.extend(want);
                    }
                    Op::Remove(pick) => {
                        let total = queue.len() + popped.len();
                        if total == 0 {
                            continue;
                        }
                        let pick = pick % total;
                        let (key, value) = if pick < queue.len() {
                            queue.remove(pick).ok_or(TestCaseError::fail("model"))?
                        } else {
                            popped.remove(pick - queue.len())
                        };
                        prop_assert_eq!(list.remove(key), Some(value));
                    }
                }
                prop_assert_eq!(list.len(), queue.len());
                prop_assert_eq!(list.front().copied(), queue.front().map(|&(_, value)| value));
                for &(key, value) in &popped {
                    prop_assert_eq!(list.get_mut(key).copied(), Some(value));
                }
            }
        }
    }
}
