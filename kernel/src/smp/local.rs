//! The core-local side of cross-core messaging: an attached endpoint, its overflow queues,
//! the slab of pending replies, the registry of [`Sharded`](super::Sharded) instances and the
//! statistics. Owned by one core's executor and touched only on that core's thread.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::cell::{Cell, RefCell};
use core::sync::atomic::{fence, Ordering};
use core::task::{Context, Poll, Waker};

use super::ring::parcel::Parcel;
use super::ring::{Consumer, Producer};
use super::{Doorbell, Msg, SmpEndpoint, SmpError, SmpStats};
use crate::executor::context;

/// Run `f` with the current core's smp state, if there is one.
pub(crate) fn with_smp<R>(f: impl FnOnce(&CoreSmp) -> R) -> Option<R> {
    let smp = context::with_current(|c| c.smp()).flatten()?;
    Some(f(&smp))
}

/// The current core's smp state.
pub(crate) fn current() -> Result<Rc<CoreSmp>, SmpError> {
    context::with_current(|c| c.smp())
        .flatten()
        .ok_or(SmpError::NotAttached)
}

/// Close one core's links in the order the others rely on: producers first (their drop
/// publishes the last replies), then consumers (their `closed` flag is what peers check; a
/// peer that sees it and then drains will find every reply). Then wake everyone, so a peer
/// sleeping on a reply notices.
pub(crate) fn close_links(
    index: usize,
    tx: &mut Vec<Option<Producer<Msg>>>,
    rx: &mut Vec<Option<Consumer<Msg>>>,
    doorbells: &[Doorbell],
) {
    if tx.is_empty() && rx.is_empty() {
        return;
    }
    tx.clear();
    rx.clear();
    // Order the closes before the peers' sleeping checks (same pairing as a publish).
    fence(Ordering::SeqCst);
    for (j, bell) in doorbells.iter().enumerate() {
        if j != index {
            bell.ring();
        }
    }
    // Nobody may wake a dead core; also drops the platform's handle on this thread.
    *doorbells[index].unparker.lock() = None;
}

/// Identifies a pending reply on the caller's core: slab index plus a generation, so a reply
/// for a slot that was freed and reused can never complete the wrong request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplyId {
    index: u32,
    gen: u32,
}

enum SlotState {
    Free,
    /// The caller awaits (the waker of its last poll is the slot's `waker`).
    Waiting,
    /// The reply arrived: a `Result<T, SmpError>`.
    Done(Parcel),
    /// No reply will come.
    Failed(SmpError),
    /// The caller's future was dropped; the reply is dropped on arrival.
    Abandoned,
}

struct Slot {
    gen: u32,
    /// The core that will answer.
    from: usize,
    state: SlotState,
    /// The waker of the last poll of a request in this slot. Kept when the slot is freed: the
    /// free list is LIFO, so a task making one request after another finds its own waker
    /// here (`will_wake`) and neither clones nor drops one per request, and the reply wakes
    /// it by reference. It holds that task's cell until the slot's next request replaces
    /// it or this core's smp state drops, no longer.
    waker: Option<Waker>,
}

#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Slab {
    fn insert(&mut self, from: usize) -> ReplyId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    from,
                    state: SlotState::Free,
                    waker: None,
                });
                // More than 4 billion outstanding requests on one core is not a real program.
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.gen = slot.gen.wrapping_add(1);
        slot.from = from;
        slot.state = SlotState::Waiting;
        ReplyId {
            index,
            gen: slot.gen,
        }
    }

    fn get(&mut self, id: ReplyId) -> Option<&mut Slot> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|s| s.gen == id.gen && !matches!(s.state, SlotState::Free))
    }

    fn free(&mut self, id: ReplyId) {
        if let Some(slot) = self.get(id) {
            slot.state = SlotState::Free;
            self.free.push(id.index);
        }
    }
}

/// One link to another core.
struct Peer {
    tx: RefCell<Option<Producer<Msg>>>,
    rx: RefCell<Option<Consumer<Msg>>>,
    /// Messages that found `tx` full, oldest first; everything for this peer queues behind
    /// them so the order of messages between two cores is kept.
    overflow: RefCell<VecDeque<Msg>>,
    /// Replies still expected from this peer (slots Waiting or Abandoned).
    awaiting: Cell<usize>,
    /// The peer shut down and its pending replies were failed.
    dead: Cell<bool>,
    /// `flush_all` published to this peer and still has to check its doorbell.
    bell_pending: Cell<bool>,
    /// `drain_from` released slots of `rx`; `flush_all` still has to see whether the peer
    /// asked for space.
    released: Cell<bool>,
}

#[derive(Default)]
struct Counters {
    sent: Cell<u64>,
    received: Cell<u64>,
    overflowed: Cell<u64>,
    overflow_queued: Cell<u64>,
    doorbells: Cell<u64>,
    dropped: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// An attached endpoint: everything smp keeps on one core.
pub(crate) struct CoreSmp {
    index: usize,
    peers: Vec<Peer>,
    doorbells: Arc<[Doorbell]>,
    /// Most messages taken from one ring per loop iteration, so a flood from one peer
    /// cannot hold up the loop.
    drain_budget: usize,
    pending: RefCell<Slab>,
    /// `Sharded` instances on this core, by service id (`Rc<ShardEntry<T>>` erased).
    services: RefCell<BTreeMap<usize, Rc<dyn Any>>>,
    counters: Counters,
    shut: Cell<bool>,
    /// Messages were pushed into a ring since the last `flush_all`.
    unpublished: Cell<bool>,
    /// Slots of an incoming ring were released since the last `flush_all` (its producer may
    /// wait for the space). Without either flag `flush_all` has nothing to do.
    unreported: Cell<bool>,
    /// [`serve`](Self::serve) drained every ring since the last [`poll`](Self::poll).
    served: Cell<bool>,
}

impl CoreSmp {
    pub(crate) fn new(mut endpoint: SmpEndpoint) -> Self {
        let tx = core::mem::take(&mut endpoint.tx);
        let rx = core::mem::take(&mut endpoint.rx);
        let peers = tx
            .into_iter()
            .zip(rx)
            .map(|(tx, rx)| Peer {
                tx: RefCell::new(tx),
                rx: RefCell::new(rx),
                overflow: RefCell::new(VecDeque::new()),
                awaiting: Cell::new(0),
                dead: Cell::new(false),
                bell_pending: Cell::new(false),
                released: Cell::new(false),
            })
            .collect();
        CoreSmp {
            index: endpoint.index,
            peers,
            doorbells: endpoint.doorbells.clone(),
            drain_budget: endpoint.capacity,
            pending: RefCell::new(Slab::default()),
            services: RefCell::new(BTreeMap::new()),
            counters: Counters::default(),
            shut: Cell::new(false),
            unpublished: Cell::new(false),
            unreported: Cell::new(false),
            served: Cell::new(false),
        }
        // `endpoint` drops here with empty link vectors: nothing to close.
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn count(&self) -> usize {
        self.peers.len()
    }

    pub(crate) fn stats(&self) -> SmpStats {
        let c = &self.counters;
        SmpStats {
            sent: c.sent.get(),
            received: c.received.get(),
            overflowed: c.overflowed.get(),
            overflow_queued: c.overflow_queued.get(),
            doorbells: c.doorbells.get(),
            dropped: c.dropped.get(),
        }
    }

    pub(crate) fn services(&self) -> &RefCell<BTreeMap<usize, Rc<dyn Any>>> {
        &self.services
    }

    /// Reserve a reply slot for an answer from this core itself (work for the current core,
    /// which runs as a local task). Fails as [`request`](Self::request) does.
    pub(crate) fn expect_own_reply(&self) -> Result<ReplyId, SmpError> {
        if self.shut.get() {
            return Err(SmpError::NotAttached);
        }
        Ok(self.pending.borrow_mut().insert(self.index))
    }

    /// Send work to another core and reserve the slot its answer will fill: `work` builds
    /// the message's parcel from the slot's id. One pass over the peer (the checks, the slot,
    /// the push), since this is the caller's side of every round trip.
    ///
    /// Errors: [`SmpError::NotAttached`] after this core shut down, [`SmpError::NoSuchCore`],
    /// [`SmpError::CoreShutDown`] if `core` closed its end (nothing is reserved or sent then).
    pub(crate) fn request(
        &self,
        core: usize,
        work: impl FnOnce(ReplyId) -> Parcel,
    ) -> Result<ReplyId, SmpError> {
        if self.shut.get() {
            return Err(SmpError::NotAttached);
        }
        let Some(peer) = self.peers.get(core) else {
            return Err(SmpError::NoSuchCore {
                core,
                count: self.peers.len(),
            });
        };
        let mut tx = peer.tx.borrow_mut();
        // A dead peer's ring is closed too (that is how it was found dead); this core's own
        // entry has no ring.
        let Some(ring) = tx.as_mut().filter(|tx| !tx.is_closed()) else {
            return Err(SmpError::CoreShutDown(core));
        };
        peer.awaiting.set(peer.awaiting.get() + 1);
        let id = self.pending.borrow_mut().insert(core);
        self.push(peer, ring, Msg::Run(work(id)));
        Ok(id)
    }

    fn resolved(&self, from: usize) {
        if let Some(p) = self.peers.get(from) {
            p.awaiting.set(p.awaiting.get().saturating_sub(1));
        }
    }

    /// Poll a pending reply, a `Result<T, SmpError>`.
    pub(crate) fn poll_reply<T: 'static>(
        &self,
        id: ReplyId,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, SmpError>> {
        let mut slab = self.pending.borrow_mut();
        let Some(slot) = slab.get(id) else {
            return Poll::Ready(Err(SmpError::Internal("reply slot vanished")));
        };
        match &slot.state {
            SlotState::Waiting => {
                match &slot.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => slot.waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            SlotState::Free | SlotState::Abandoned => {
                return Poll::Ready(Err(SmpError::Internal("reply polled after abandon")));
            }
            SlotState::Done(_) | SlotState::Failed(_) => {}
        }
        let state = core::mem::replace(&mut slot.state, SlotState::Free);
        slab.free.push(id.index);
        drop(slab);
        Poll::Ready(match state {
            SlotState::Done(v) => v
                .take::<Result<T, SmpError>>()
                .unwrap_or(Err(SmpError::Internal("reply of the wrong type"))),
            SlotState::Failed(e) => Err(e),
            _ => Err(SmpError::Internal("unreachable slot state")),
        })
    }

    /// The caller's future was dropped before its reply was read.
    pub(crate) fn abandon(&self, id: ReplyId) {
        let mut slab = self.pending.borrow_mut();
        let Some(slot) = slab.get(id) else { return };
        // Nobody will poll this request again: no task to keep.
        let waker = slot.waker.take();
        let old = core::mem::replace(&mut slot.state, SlotState::Abandoned);
        if !matches!(old, SlotState::Waiting) {
            // Finished but unread: free it now.
            slab.free(id);
        }
        drop(slab);
        drop(old);
        drop(waker);
    }

    /// A reply arrived (or a local task finished): fill the slot and wake its awaiter.
    pub(crate) fn complete(&self, id: ReplyId, value: Parcel) {
        let mut slab = self.pending.borrow_mut();
        let Some(slot) = slab.get(id) else {
            // Already failed (its core was declared dead): nobody wants it.
            drop(slab);
            drop(value);
            return;
        };
        let from = slot.from;
        match core::mem::replace(&mut slot.state, SlotState::Done(value)) {
            SlotState::Waiting => {
                // Woken outside the borrow (a waker may run code that reaches this slab),
                // then put back for the slot's next request.
                let waker = slot.waker.take();
                drop(slab);
                self.resolved(from);
                if let Some(w) = waker {
                    w.wake_by_ref();
                    let mut slab = self.pending.borrow_mut();
                    if let Some(slot) = slab.slots.get_mut(id.index as usize) {
                        if slot.waker.is_none() {
                            slot.waker = Some(w);
                        }
                    }
                }
            }
            SlotState::Abandoned => {
                let done = core::mem::replace(&mut slot.state, SlotState::Free);
                slab.free.push(id.index);
                drop(slab);
                self.resolved(from);
                drop(done);
            }
            // A second answer for one request cannot happen; keep the first.
            other => {
                let second = core::mem::replace(&mut slot.state, other);
                drop(slab);
                drop(second);
            }
        }
    }

    /// Fail every reply still expected from `from`.
    fn fail_from(&self, from: usize, err: &SmpError) {
        let mut wakers = Vec::new();
        {
            let mut slab = self.pending.borrow_mut();
            let Slab { slots, free } = &mut *slab;
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.from != from {
                    continue;
                }
                match &mut slot.state {
                    SlotState::Waiting => {
                        if let Some(w) = slot.waker.take() {
                            wakers.push(w);
                        }
                        slot.state = SlotState::Failed(err.clone());
                    }
                    SlotState::Abandoned => {
                        slot.state = SlotState::Free;
                        free.push(i as u32);
                    }
                    _ => {}
                }
            }
        }
        if let Some(p) = self.peers.get(from) {
            p.awaiting.set(0);
        }
        for w in wakers {
            w.wake();
        }
    }

    /// Send `msg` to core `to` (not this one). Never blocks and never drops a message for a
    /// live core: a full ring parks it in the overflow queue. Gives it back if `to` is gone.
    pub(crate) fn send(&self, to: usize, msg: Msg) -> Result<(), Msg> {
        let Some(peer) = self.peers.get(to) else {
            return Err(msg);
        };
        let mut tx = peer.tx.borrow_mut();
        // `shutdown` took the ring; a dead peer's ring is closed.
        let Some(ring) = tx.as_mut().filter(|tx| !tx.is_closed()) else {
            return Err(msg);
        };
        self.push(peer, ring, msg);
        Ok(())
    }

    /// Push `msg` into `peer`'s open ring `ring`, or behind its overflow.
    fn push(&self, peer: &Peer, ring: &mut Producer<Msg>, msg: Msg) {
        bump(&self.counters.sent, 1);
        // Behind older overflow, to keep the pair's order. No overflow on this core at all
        // (the common case) needs no look at this peer's queue.
        let msg = if self.counters.overflow_queued.get() == 0 || peer.overflow.borrow().is_empty() {
            match ring.push(msg) {
                Ok(()) => {
                    // Visible at once: a peer spinning for it starts while this core
                    // finishes its poll. The fence and the doorbell wait for `flush_all`.
                    ring.publish_now();
                    self.unpublished.set(true);
                    return;
                }
                Err(m) => m,
            }
        } else {
            msg
        };
        peer.overflow.borrow_mut().push_back(msg);
        ring.want_space();
        bump(&self.counters.overflowed, 1);
        bump(&self.counters.overflow_queued, 1);
    }

    /// Deliver a reply to `to` (this core or another). A reply for a dead core is dropped.
    pub(crate) fn reply(&self, to: usize, id: ReplyId, value: Parcel) {
        if to == self.index {
            self.complete(id, value);
        } else if let Err(m) = self.send(to, Msg::Reply { id, value }) {
            bump(&self.counters.dropped, 1);
            drop(m);
        }
    }

    /// One loop iteration's worth of messaging: take in what peers sent, retry overflow,
    /// notice dead peers, publish what this core's tasks sent. Owner thread, executor loop.
    pub(crate) fn poll(&self) {
        if self.shut.get() {
            return;
        }
        // Right after the idle spin served the rings (the loop's pass that follows it), a
        // second drain would mostly find them empty: a look for messages (one load per peer)
        // is enough.
        if !self.served.replace(false) || self.has_messages() {
            self.drain_all();
        }
        self.retry_overflow();
        self.check_dead_peers();
        // Publish what the work that just ran sent (its replies). Released slots alone wait
        // for the next flush of this loop iteration (the idle poll's or the park's, before
        // this core can sleep), so a caller that took in a reply fences once, when it
        // publishes its next request, not twice.
        if self.unpublished.get() {
            self.flush_all();
        }
    }

    /// The idle spin's fast path: take in what peers sent (running work, completing
    /// replies) and publish what that sent, without the rest of [`poll`](Self::poll)'s
    /// duties (overflow, dead peers: [`has_work`](Self::has_work) sends the spin back to the
    /// loop for those). Returns how many messages it took.
    #[inline(never)] // a profile tells the spin's waiting (its caller) from this work
    pub(crate) fn serve(&self) -> u64 {
        if self.shut.get() {
            return 0;
        }
        let before = self.counters.received.get();
        self.drain_all();
        self.served.set(true);
        // Replies sent (already visible, see `send`): the fence and the doorbell check now,
        // with the released slots, before this core goes on spinning.
        if self.unpublished.get() {
            self.flush_all();
        }
        self.counters.received.get().wrapping_sub(before)
    }

    /// Take up to one ring's capacity of messages from every peer, in core order.
    fn drain_all(&self) {
        for j in 0..self.peers.len() {
            if j != self.index {
                self.drain_from(j, self.drain_budget);
            }
        }
    }

    /// Take up to `budget` messages from core `j`'s ring and act on them.
    fn drain_from(&self, j: usize, budget: usize) {
        let peer = &self.peers[j];
        let mut n = 0;
        while n < budget {
            // Borrow only to pop: acting on a message may send (which borrows other cells).
            let msg = match peer.rx.borrow_mut().as_mut() {
                Some(rx) => rx.pop(),
                None => None,
            };
            let Some(msg) = msg else { break };
            n += 1;
            match msg {
                Msg::Run(work) => work.run(),
                Msg::Reply { id, value } => self.complete(id, value),
            }
        }
        bump(&self.counters.received, n as u64);
        if n > 0 {
            if let Some(rx) = peer.rx.borrow_mut().as_mut() {
                rx.release_slots();
                // `flush_all` fences and then sees whether the peer waits for this space.
                peer.released.set(true);
                self.unreported.set(true);
            }
        }
    }

    /// Move overflow into rings that have room again; drop overflow for dead peers.
    fn retry_overflow(&self) {
        if self.counters.overflow_queued.get() == 0 {
            return;
        }
        for peer in &self.peers {
            let mut overflow = peer.overflow.borrow_mut();
            if overflow.is_empty() {
                continue;
            }
            let mut tx = peer.tx.borrow_mut();
            let moved_or_dropped = match tx.as_mut() {
                Some(ring) if !ring.is_closed() => {
                    let before = overflow.len();
                    while let Some(m) = overflow.pop_front() {
                        if let Err(m) = ring.push(m) {
                            overflow.push_front(m);
                            ring.want_space();
                            break;
                        }
                    }
                    let moved = before - overflow.len();
                    if moved > 0 {
                        self.unpublished.set(true);
                    }
                    moved
                }
                _ => {
                    let n = overflow.len();
                    bump(&self.counters.dropped, n as u64);
                    overflow.clear();
                    n
                }
            };
            let queued = self.counters.overflow_queued.get();
            self.counters
                .overflow_queued
                .set(queued.saturating_sub(moved_or_dropped as u64));
        }
    }

    /// A peer we await replies from closed its end: take in everything it published before,
    /// then fail what is still missing.
    fn check_dead_peers(&self) {
        for (j, peer) in self.peers.iter().enumerate() {
            if j == self.index || peer.dead.get() || peer.awaiting.get() == 0 {
                continue;
            }
            let closed = peer.tx.borrow().as_ref().is_none_or(|tx| tx.is_closed());
            if closed {
                peer.dead.set(true);
                // The closed flag was stored after the peer's final publish (Release), and
                // we loaded it with Acquire: a full drain now sees every last reply.
                self.drain_from(j, usize::MAX);
                self.fail_from(j, &SmpError::CoreShutDown(j));
            }
        }
    }

    /// Publish every ring with new messages and wake the peers that may sleep: those this
    /// core published to, and those waiting for space this core released (`drain_from`).
    pub(crate) fn flush_all(&self) {
        if !self.unpublished.replace(false) & !self.unreported.replace(false) {
            return;
        }
        let mut pending = false;
        for peer in &self.peers {
            if let Some(tx) = peer.tx.borrow_mut().as_mut() {
                if tx.flush() {
                    peer.bell_pending.set(true);
                    pending = true;
                }
            }
            pending |= peer.released.get();
        }
        if !pending {
            return;
        }
        // One fence for all rings and both directions: orders our stamp and head stores
        // before reading the peers' sleeping and space-wanted flags (module docs).
        fence(Ordering::SeqCst);
        for (peer, bell) in self.peers.iter().zip(self.doorbells.iter()) {
            let published = peer.bell_pending.replace(false);
            let rx = peer.rx.borrow();
            let space =
                peer.released.replace(false) && rx.as_ref().is_some_and(|rx| rx.space_wanted());
            if (published || space) && bell.is_sleeping() {
                // Cleared only with a wake, and before it: a request read while the peer was
                // still awake stays for the next release, and a request the woken peer makes
                // again is never wiped (the ring module's "Sleeping and space").
                if space {
                    if let Some(rx) = rx.as_ref() {
                        rx.clear_space_wanted();
                    }
                }
                bell.ring();
                bump(&self.counters.doorbells, 1);
            }
        }
    }

    /// Called by the executor right before `park`. Publishes pending messages; if the park
    /// may block, announces that this core sleeps and re-checks for work. Returns false if
    /// the park must not block.
    pub(crate) fn before_park(&self, blocking: bool) -> bool {
        if self.shut.get() {
            return true;
        }
        self.flush_all();
        if !blocking {
            return true;
        }
        let bell = &self.doorbells[self.index];
        // Ask consumers of our overflowing rings to tell us about space before we look.
        for peer in &self.peers {
            if !peer.overflow.borrow().is_empty() {
                if let Some(tx) = peer.tx.borrow().as_ref() {
                    tx.want_space();
                }
            }
        }
        bell.set_sleeping(true);
        fence(Ordering::SeqCst);
        if self.has_work() {
            bell.set_sleeping(false);
            return false;
        }
        true
    }

    /// Whether core `core` announced that it sleeps (tests wait for it).
    #[cfg(test)]
    pub(crate) fn is_sleeping(&self, core: usize) -> bool {
        self.doorbells[core].is_sleeping()
    }

    /// Called by the executor right after `park` returns.
    pub(crate) fn after_park(&self) {
        let bell = &self.doorbells[self.index];
        // Only a blocking park raised the flag. Storing `false` over `false` would still take
        // the line from the peers that read it on every publish.
        if bell.sleeping.load(Ordering::Relaxed) {
            bell.set_sleeping(false);
        }
    }

    /// Messages sent plus received so far: the idle poll spins longer after a busy period
    /// that changed it.
    pub(crate) fn activity(&self) -> u64 {
        self.counters
            .sent
            .get()
            .wrapping_add(self.counters.received.get())
    }

    /// Whether a peer published a message this core has not read: one load per peer. The
    /// idle spin's check of every round.
    pub(crate) fn has_messages(&self) -> bool {
        // This core's own entry has no rings.
        self.peers.iter().any(|peer| {
            peer.rx
                .borrow_mut()
                .as_mut()
                .is_some_and(|rx| rx.has_items())
        })
    }

    /// Messages wait in overflow queues for room in their rings (the loop retries them).
    pub(crate) fn overflowing(&self) -> bool {
        self.counters.overflow_queued.get() > 0
    }

    /// Anything that needs the loop: a message to read, room for overflow, a dead peer owing
    /// replies.
    pub(crate) fn has_work(&self) -> bool {
        if self.has_messages() {
            return true;
        }
        let overflowing = self.counters.overflow_queued.get() > 0;
        self.peers.iter().any(|peer| {
            let owed = peer.awaiting.get() > 0 && !peer.dead.get();
            let waiting = overflowing && !peer.overflow.borrow().is_empty();
            if !owed && !waiting {
                return false;
            }
            let mut tx = peer.tx.borrow_mut();
            let Some(tx) = tx.as_mut() else { return false };
            if tx.is_closed() {
                return true;
            }
            waiting && tx.has_space()
        })
    }

    /// The core shuts down: close the links (see [`close_links`]), drop the service instances
    /// on this core, and fail whatever this core still awaits. Idempotent.
    pub(crate) fn shutdown(&self) {
        if self.shut.replace(true) {
            return;
        }
        let mut tx: Vec<_> = self
            .peers
            .iter()
            .map(|p| p.tx.borrow_mut().take())
            .collect();
        let mut rx: Vec<_> = self
            .peers
            .iter()
            .map(|p| p.rx.borrow_mut().take())
            .collect();
        let mut dropped = 0;
        for p in &self.peers {
            let mut o = p.overflow.borrow_mut();
            dropped += o.len();
            o.clear();
        }
        bump(&self.counters.dropped, dropped as u64);
        self.counters.overflow_queued.set(0);
        close_links(self.index, &mut tx, &mut rx, &self.doorbells);
        // Instances drop here, on their core (the executor has this core current).
        let services = core::mem::take(&mut *self.services.borrow_mut());
        drop(services);
        for j in 0..self.peers.len() {
            self.fail_from(j, &SmpError::CoreShutDown(j));
        }
    }
}
