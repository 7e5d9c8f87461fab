//! The idle path of the loop: what a core does when it has nothing to run. It may poll for a
//! while (Seastar's idle poll) before it parks on the platform, because a park that blocks
//! costs a system call to sleep and, for whoever wakes it, one to wake it (an eventfd write
//! or a futex; tens of microseconds under a hypervisor), while a message from another core
//! that is already on its way arrives in well under a microsecond.
//!
//! # The rule
//!
//! When the run queues are empty and the root future is not woken, the core polls for
//! `window = max(idle_poll, smp_idle_poll if the busy period that just ended sent or
//! received a cross-core message)`:
//!
//! * `idle_poll` (default zero) spins after every busy period, like Seastar's
//!   `--idle-poll-time-us`: lowest latency for everything, a busy CPU when idle.
//! * `smp_idle_poll` (default [`DEFAULT_SMP_IDLE_POLL`]) spins only after cross-core
//!   traffic: the caller of `submit_to` waits a little for its reply instead of sleeping, and
//!   the target lingers for the next request. A server that talks to no other core (an echo
//!   server whose connections stay on their core) never spins, so its CPU per message is
//!   unchanged; a core that used `submit_to` spins at most one window per busy period.
//!
//! The spin is bounded by the window on the platform's clock and by a round count (one round
//! per [`ROUND_NS`] of window), so it ends under a virtual clock too. Each round looks at
//! the incoming rings for messages and at the root future; every [`FLUSH_EVERY`] rounds at
//! the rings' other news (space for overflow, a dead peer), wakes from other threads and,
//! through [`Platform::flush`], completions the platform can collect without a system call;
//! every [`CLOCK_EVERY`] rounds at the clock and the timers.
//! While I/O is in flight, a non-blocking `park` every [`IO_POLL_EVERY`] collects the
//! completions that need a system call, so spinning delays I/O by at most that much.
//!
//! # Serving messages in the spin (the fast path)
//!
//! A message found while spinning is served right there ([`CoreSmp::serve`]): arriving
//! work is spawned and polled on the spot (charged, watched and stall-checked like any
//! poll; its reply visible to the caller as it is sent, the fence and doorbell check
//! following at the end of the drain), and an arriving reply
//! completes its slot and wakes its awaiter. Only when that leaves something to run (the
//! root future woken, a task queued), a timer due, or [`SERVE_BUDGET`] messages served does
//! the spin hand the core back to the loop, with its latest clock reading, which the loop
//! uses instead of reading the clock again. So a core serving a stream of requests answers
//! each without a loop pass (no timer sweep, remote-queue check or clock read of the loop's
//! own), and a caller whose reply lands while it spins goes straight to polling its task:
//! when that reply woke the root future and nothing else, the loop polls the root and spins
//! again without a pass of its own (`Executor::root_alone`; every 64th time it takes the
//! pass anyway).
//! A plain function sent with `submit_sync` is called there without a task (still a poll:
//! charged, watched and stall-checked).
//! The window restarts with each message served. Everything the loop guarantees still
//! holds: the rounds that look at timers, wakes and I/O (above) go on between messages;
//! overflow and dead peers send the spin back to the loop (`has_work`); serving needs an
//! empty run queue, so queued tasks of any group go first; each serving starts a task
//! quota for `need_preempt`.
//!
//! # The doorbell
//!
//! The core publishes its outgoing messages (and rings sleeping peers) before it spins, and
//! keeps its `sleeping` flag down while spinning: peers do not ring a spinning core. Only
//! when the window ends with nothing found does the usual protocol run (flag up, fence,
//! re-check, park), so no wake is lost.
//!
//! # Skipping the park
//!
//! When the spin finds work it could not finish itself, the loop goes straight back to it
//! without parking, so a round trip costs no system call at all. A non-blocking park still
//! happens at least once per task quota, so completions that need one (mio's `epoll_wait`,
//! io_uring task work) are never starved by a stream of messages.

use core::sync::atomic::{AtomicBool, Ordering};
use core::time::Duration;

use seastar_hal::io::IoDriver;
use seastar_hal::{Instant, Platform};

use super::stats::Stats;
use super::Executor;
use crate::smp::CoreSmp;

/// Default of [`ExecutorConfig::smp_idle_poll`](super::ExecutorConfig::smp_idle_poll).
///
/// Spin-then-park is 2-competitive when the spin lasts about as long as a park and its
/// wake-up cost (Karlin et al., "Competitive randomized algorithms for non-uniform
/// problems"): never more than twice the CPU of the better choice in hindsight. A blocking
/// park plus the peer's unpark measured 15–30 µs per side on the KVM guests we bench on
/// (the idle-target round trip was 60 µs against 28 µs busy); 50 µs covers that with room.
pub const DEFAULT_SMP_IDLE_POLL: Duration = Duration::from_micros(50);

/// One spin round per this many nanoseconds of window bounds the spin where the clock stands
/// still (virtual time). A real round takes longer, so on a real clock the window ends first.
pub(super) const ROUND_NS: u64 = 16;
/// While I/O is in flight, the spin parks without blocking this often, to collect the
/// completions that need a system call (a few per cent of the spin's time).
const IO_POLL_EVERY: Duration = Duration::from_micros(20);
/// Most messages one spin serves itself (see the module docs) before it hands the core back
/// to the loop for a full pass (its statistics, a fresh quota, the park due once per quota).
const SERVE_BUDGET: u64 = 64;
/// Rounds between two clock (and timer) reads.
const CLOCK_EVERY: u32 = 16;
/// Rounds between two looks at the rings' news other than messages, the remote queue and
/// [`Platform::flush`] calls (completions visible without a system call).
const FLUSH_EVERY: u32 = 4;

/// What the loop remembers between idle periods.
#[derive(Debug, Default)]
pub(super) struct IdleState {
    /// Cross-core messages sent + received when the previous idle period began.
    smp_activity: u64,
    /// When the platform was last parked (blocking or not).
    pub(super) last_park: Instant,
}

impl<P: Platform + 'static> Executor<P> {
    /// The core has nothing to run. Spin for the idle-poll window (see the module docs),
    /// which starts at `start` (the end of the last poll: a recent clock reading). Returns
    /// the latest clock reading (at most [`CLOCK_EVERY`] rounds old) if work showed up and
    /// the loop may skip the park this iteration.
    pub(super) fn idle_poll(
        &self,
        state: &mut IdleState,
        root_woken: &AtomicBool,
        smp: Option<&CoreSmp>,
        start: Instant,
    ) -> Option<Instant> {
        let activity = smp.map_or(0, |s| s.activity());
        let smp_hot = activity != state.smp_activity;
        state.smp_activity = activity;
        let window = if smp_hot {
            self.config.idle_poll.max(self.config.smp_idle_poll)
        } else {
            self.config.idle_poll
        };
        if window.is_zero() {
            return None;
        }
        let core = &self.core;
        // Peers may be waiting for what this core sent: publish before spinning.
        if let Some(smp) = smp {
            smp.flush_all();
        }
        Stats::bump(&core.stats.idle_spins, 1);
        let (found, now) = self.spin(state, root_woken, smp, start, window);
        if !found {
            return None;
        }
        Stats::bump(&core.stats.idle_spin_hits, 1);
        // Skip the park unless none happened for a whole task quota (I/O that needs a
        // system call to be collected must not wait behind a stream of messages).
        (now.saturating_duration_since(state.last_park) < self.config.task_quota).then_some(now)
    }

    /// The spin itself: returns whether work showed up and the latest clock reading. Not
    /// inlined, so that a profile tells the waiting (this function) from the work around it.
    #[inline(never)]
    fn spin(
        &self,
        state: &mut IdleState,
        root_woken: &AtomicBool,
        smp: Option<&CoreSmp>,
        start: Instant,
        window: Duration,
    ) -> (bool, Instant) {
        let core = &self.core;
        let mut end = start.saturating_add(window);
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let window_rounds = (window_ns / ROUND_NS).max(1);
        let mut max_rounds = window_rounds;
        let mut next_timer = core.next_timer();
        let mut last_io_poll = start;
        let mut rounds: u64 = 0;
        let mut now = start;
        let mut served: u64 = 0;
        let found = loop {
            // Messages first: the cheapest check (one load per peer) and the likeliest, so
            // a round is short and a message is seen soon after it lands. They are served
            // right here (the fast path, see the module docs): the loop is only needed once
            // they leave something to run.
            if let Some(s) = smp.filter(|s| s.has_messages()) {
                core.begin_quota(now.saturating_add(self.config.task_quota));
                served += s.serve();
                // A task polled on arrival read the clock when its poll ended.
                now = now.max(core.clock_mark());
                // A reply for the root future (the common case on the caller's side) goes
                // straight back to the loop, which polls it next.
                if root_woken.load(Ordering::Acquire)
                    || core.run_queue_len() > 0
                    || served >= SERVE_BUDGET
                {
                    break true;
                }
                // The work may have set timers, and its poll read the clock: a timer due now
                // goes first. Traffic keeps the window open.
                next_timer = core.next_timer();
                if next_timer.is_some_and(|t| t <= now) {
                    break true;
                }
                end = end.max(now.saturating_add(window));
                max_rounds = rounds.saturating_add(window_rounds);
            }
            if root_woken.load(Ordering::Acquire) {
                break true;
            }
            rounds += 1;
            if rounds % u64::from(FLUSH_EVERY) == 0 {
                // The rest of the rings' news (room for overflow, a dead peer owing replies),
                // wakes from other threads, then queued I/O: `flush` submits it and may
                // complete ops (waking their tasks) without a system call.
                if smp.is_some_and(|s| s.has_work()) || core.remote_pending() {
                    break true;
                }
                self.platform.flush();
                if core.run_queue_len() > 0 {
                    break true;
                }
            }
            if rounds % u64::from(CLOCK_EVERY) == 0 {
                now = self.platform.now();
                // The start of a poll of work served here (see `Core::spawn_and_poll`).
                core.set_clock_mark(now);
                if next_timer.is_some_and(|t| t <= now) {
                    break true;
                }
                if now >= end || rounds >= max_rounds {
                    break false;
                }
                // Completions that need a system call to be collected (io_uring's deferred
                // task work, epoll): a non-blocking park now and then, only with I/O in
                // flight.
                if now.saturating_duration_since(last_io_poll) >= IO_POLL_EVERY
                    && self.platform.io().in_flight() > 0
                {
                    Stats::bump(&core.stats.parks, 1);
                    self.platform.park(Some(Instant::ZERO));
                    last_io_poll = self.platform.now();
                    state.last_park = last_io_poll;
                    if core.run_queue_len() > 0 {
                        break true;
                    }
                }
            }
            core::hint::spin_loop();
        };
        (found, now)
    }
}
