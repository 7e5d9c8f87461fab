//! Graceful shutdown of one core: a [`Shutdown`] coordinator with ordered [`Phase`]s.
//!
//! Resources [`register`](Shutdown::register) for the phase in which they must act and hold
//! the returned [`Registration`] until they are done; [`Shutdown::run`] then starts the phases
//! one after the other and, within each, waits until every registration of that phase has
//! been dropped, or until the phase's deadline, before starting the next:
//!
//! ```text
//!   trigger() ──> run(deadline):  StopAccepting ──> Drain ──> Cleanup ──> ShutdownReport
//!                                 │ phase_started() of its registrations completes
//!                                 │ wait for them to drop (Gate::close), at most `deadline`
//!                                 └ late ones are named in the report; the next phase starts
//! ```
//!
//! * [`Phase::STOP_ACCEPTING`]: listeners stop accepting (and close their sockets).
//! * [`Phase::DRAIN`]: connections finish the request in flight, answer it and close.
//! * [`Phase::CLEANUP`]: final work once no request is in flight (flush, sync, say goodbye).
//!
//! Phases are ordered by rank; [`Phase::custom`] adds more (between or after the standard
//! ones), and a custom phase runs only if something registered for it.
//!
//! ```
//! use core::time::Duration;
//! use seastar_hal::sim::SimPlatform;
//! use seastar_kernel::executor::block_on;
//! use seastar_kernel::shutdown::{Phase, Shutdown};
//! use seastar_kernel::task::spawn;
//!
//! block_on(SimPlatform::new(), async {
//!     let shutdown = Shutdown::new();
//!     let conn = shutdown.register(Phase::DRAIN, "connection 1").unwrap();
//!     spawn(async move {
//!         conn.phase_started().await; // drain: finish the current request, then
//!         drop(conn);                 // say "done" by dropping the registration
//!     })
//!     .detach();
//!     shutdown.trigger();
//!     let report = shutdown.run(Duration::from_secs(5)).await;
//!     assert!(report.is_clean());
//! })
//! .unwrap();
//! ```
//!
//! # Rules
//!
//! * [`trigger`](Shutdown::trigger) only announces (it wakes [`triggered`](Shutdown::triggered)
//!   and is idempotent); [`run`](Shutdown::run) drives the phases. Calling `run` again, or
//!   from several tasks, does not run the phases twice: every caller gets the same report.
//! * A registration for a phase that has not started yet succeeds, even after the trigger (a
//!   connection accepted during `StopAccepting` still registers for `Drain`); one for a phase
//!   that has started fails with [`RegisterError::PhaseStarted`], like entering a closed
//!   [`Gate`]: the caller must not start the work (close the connection instead).
//! * On a phase's deadline the registrations still open are *reported*, not cancelled: the
//!   coordinator moves on, and the owners may still finish later. Deciding to kill them is
//!   the caller's business (e.g. by ending the core).
//! * Dropping the [`run`](Shutdown::run) future midway leaves the phases it started started;
//!   a later `run` (or one that was waiting for it) goes on from the next phase.
//!
//! Core-local like [`crate::sync`]: `Rc`/`RefCell` only, `!Send`, `!Sync`. To shut several
//! cores down, trigger each core's coordinator (the std runtime does this on SIGINT/SIGTERM).
//! [`run`](Shutdown::run) needs the kernel's executor (it uses [`crate::time::timeout`]).

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;
use core::future::Future;
use core::time::Duration;

use crate::executor;
use crate::sync::{Gate, Notify, OwnedGateGuard};
use crate::time::timeout;

#[cfg(test)]
mod tests;

/// A step of the shutdown. Phases run in ascending [`rank`](Phase::rank) order.
///
/// Two phases are the same phase when their ranks are equal (the name is for reports).
#[derive(Clone, Copy)]
pub struct Phase {
    rank: u16,
    name: &'static str,
}

impl Phase {
    /// Stop taking new work: listeners stop accepting and close.
    pub const STOP_ACCEPTING: Phase = Phase::custom(100, "stop-accepting");
    /// Finish the work in flight: each connection answers its current request and closes.
    pub const DRAIN: Phase = Phase::custom(200, "drain");
    /// Final cleanup, once nothing is in flight.
    pub const CLEANUP: Phase = Phase::custom(300, "cleanup");
    /// The three standard phases, in order; [`Shutdown::run`] always runs these.
    pub const STANDARD: [Phase; 3] = [Phase::STOP_ACCEPTING, Phase::DRAIN, Phase::CLEANUP];

    /// A phase of one's own, run in rank order among the others (the standard ones are 100,
    /// 200 and 300). It runs only if something registered for it before it would start.
    pub const fn custom(rank: u16, name: &'static str) -> Phase {
        Phase { rank, name }
    }

    /// Where the phase runs in the order.
    pub const fn rank(&self) -> u16 {
        self.rank
    }

    /// Its name, for reports and logs.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl PartialEq for Phase {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}
impl Eq for Phase {}
impl PartialOrd for Phase {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Phase {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.rank.cmp(&other.rank)
    }
}

impl fmt::Debug for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name, self.rank)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Why [`Shutdown::register`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The phase has started (or the whole shutdown is over): it no longer waits for newcomers,
    /// so the work must not start.
    #[error("shutdown phase {0} has already started")]
    PhaseStarted(Phase),
}

/// What happened in one phase of a [`Shutdown::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseReport {
    /// The phase.
    pub phase: Phase,
    /// Registrations open when the phase started.
    pub waited_for: usize,
    /// How long the phase took (at most about the deadline).
    pub elapsed: Duration,
    /// The names of the registrations still open at the deadline; empty if all finished.
    pub stragglers: Vec<Cow<'static, str>>,
}

impl PhaseReport {
    /// Every registration of the phase finished before the deadline.
    pub fn completed(&self) -> bool {
        self.stragglers.is_empty()
    }
}

/// What [`Shutdown::run`] returns: one [`PhaseReport`] per phase, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The phases, in order.
    pub phases: Vec<PhaseReport>,
}

impl ShutdownReport {
    /// Every phase finished before its deadline.
    pub fn is_clean(&self) -> bool {
        self.phases.iter().all(PhaseReport::completed)
    }

    /// The report of `phase`, if it ran.
    pub fn phase(&self, phase: Phase) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.phase == phase)
    }

    /// Every straggler, with its phase.
    pub fn stragglers(&self) -> impl Iterator<Item = (Phase, &str)> + '_ {
        self.phases
            .iter()
            .flat_map(|p| p.stragglers.iter().map(move |s| (p.phase, s.as_ref())))
    }
}

/// One line: `stop-accepting: 1 done; drain: 12 done; cleanup: 2 of 3 done (late: x)`.
impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.phases.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if p.completed() {
                write!(f, "{}: {} done", p.phase, p.waited_for)?;
            } else {
                let done = p.waited_for.saturating_sub(p.stragglers.len());
                write!(f, "{}: {done} of {} done (late:", p.phase, p.waited_for)?;
                for s in &p.stragglers {
                    write!(f, " {s}")?;
                }
                f.write_str(")")?;
            }
        }
        Ok(())
    }
}

/// The coordinator of one core's shutdown. Cheap to clone (an `Rc`); every clone is the same
/// coordinator. See the [module documentation](self).
#[derive(Clone)]
pub struct Shutdown {
    inner: Rc<Inner>,
}

struct Inner {
    state: RefCell<State>,
    /// Woken on every change a waiter may look for: the trigger, a phase start, the end.
    changed: Notify,
}

struct State {
    triggered: bool,
    /// The phase that started last; every phase up to it has started.
    current: Option<Phase>,
    /// Known phases, sorted by rank.
    slots: Vec<Slot>,
    run: RunState,
    next_id: u64,
}

enum RunState {
    Idle,
    Running,
    Done(ShutdownReport),
}

struct Slot {
    phase: Phase,
    /// Closed when the phase starts; its holders are the phase's registrations.
    gate: Rc<Gate>,
    /// Open registrations by id, with their names (for the report).
    open: BTreeMap<u64, Cow<'static, str>>,
    started: bool,
}

impl Slot {
    fn new(phase: Phase) -> Self {
        Slot {
            phase,
            gate: Rc::new(Gate::new()),
            open: BTreeMap::new(),
            started: false,
        }
    }
}

impl State {
    fn slot_mut(&mut self, phase: Phase) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.phase == phase)
    }

    fn has_started(&self, phase: Phase) -> bool {
        self.current.is_some_and(|c| c >= phase)
    }
}

impl Shutdown {
    /// A coordinator with the [standard](Phase::STANDARD) phases, not triggered.
    pub fn new() -> Self {
        Shutdown {
            inner: Rc::new(Inner {
                state: RefCell::new(State {
                    triggered: false,
                    current: None,
                    slots: Phase::STANDARD.iter().map(|&p| Slot::new(p)).collect(),
                    run: RunState::Idle,
                    next_id: 0,
                }),
                changed: Notify::new(),
            }),
        }
    }

    /// Announce the shutdown: [`triggered`](Self::triggered) completes. Returns `true` the
    /// first time, `false` afterwards (triggering again does nothing). It does not start the
    /// phases: [`run`](Self::run) does.
    pub fn trigger(&self) -> bool {
        let first = {
            let mut state = self.inner.state.borrow_mut();
            !core::mem::replace(&mut state.triggered, true)
        };
        if first {
            self.inner.changed.notify_waiters();
        }
        first
    }

    /// Whether [`trigger`](Self::trigger) (or [`run`](Self::run)) has been called.
    pub fn is_triggered(&self) -> bool {
        self.inner.state.borrow().triggered
    }

    /// Completes once the shutdown is triggered (at once if it was).
    pub fn triggered(&self) -> impl Future<Output = ()> + '_ {
        self.inner
            .changed
            .wait_until(|| self.inner.state.borrow().triggered)
    }

    /// Completes once `phase` has started (at once if it has).
    pub fn phase_started(&self, phase: Phase) -> impl Future<Output = ()> + '_ {
        self.inner
            .changed
            .wait_until(move || self.inner.state.borrow().has_started(phase))
    }

    /// The phase that started last, if any.
    pub fn current_phase(&self) -> Option<Phase> {
        self.inner.state.borrow().current
    }

    /// Whether `phase` has started.
    pub fn has_started(&self, phase: Phase) -> bool {
        self.inner.state.borrow().has_started(phase)
    }

    /// The report, once [`run`](Self::run) has finished.
    pub fn report(&self) -> Option<ShutdownReport> {
        match &self.inner.state.borrow().run {
            RunState::Done(report) => Some(report.clone()),
            _ => None,
        }
    }

    /// Completes with the report once [`run`](Self::run) has finished every phase.
    pub async fn finished(&self) -> ShutdownReport {
        self.inner
            .changed
            .wait_until(|| matches!(self.inner.state.borrow().run, RunState::Done(_)))
            .await;
        self.report().unwrap_or_default()
    }

    /// Registrations open in `phase` now.
    pub fn open(&self, phase: Phase) -> usize {
        let state = self.inner.state.borrow();
        state
            .slots
            .iter()
            .find(|s| s.phase == phase)
            .map_or(0, |s| s.open.len())
    }

    /// Register work that must be done in `phase` (and that the phase waits for): `name` shows
    /// in the report if it is late. Hold the [`Registration`] until the work is done; its
    /// [`phase_started`](Registration::phase_started) says when to act.
    ///
    /// Fails once `phase` has started (see the module's rules).
    pub fn register(
        &self,
        phase: Phase,
        name: impl Into<Cow<'static, str>>,
    ) -> Result<Registration, RegisterError> {
        let mut state = self.inner.state.borrow_mut();
        if state.has_started(phase) || matches!(state.run, RunState::Done(_)) {
            return Err(RegisterError::PhaseStarted(phase));
        }
        let id = state.next_id;
        state.next_id += 1;
        let slot = match state.slots.binary_search_by(|s| s.phase.cmp(&phase)) {
            Ok(i) => &mut state.slots[i],
            Err(i) => {
                state.slots.insert(i, Slot::new(phase));
                &mut state.slots[i]
            }
        };
        // Not started, so its gate is open; the error arm is unreachable but not a panic.
        let guard = slot
            .gate
            .enter_owned()
            .map_err(|_| RegisterError::PhaseStarted(phase))?;
        slot.open.insert(id, name.into());
        Ok(Registration {
            shutdown: self.clone(),
            phase,
            id,
            _guard: guard,
        })
    }

    /// Trigger (if not yet) and run every phase in order, each waiting at most `per_phase`
    /// for its registrations; returns what happened. A second call (or a concurrent one) does
    /// not run the phases again: it waits for the first to finish and returns its report.
    ///
    /// # Panics
    ///
    /// Outside the kernel's executor (it needs timers).
    pub async fn run(&self, per_phase: Duration) -> ShutdownReport {
        self.trigger();
        loop {
            let someone_else_drives = {
                let mut state = self.inner.state.borrow_mut();
                match &state.run {
                    RunState::Done(report) => return report.clone(),
                    RunState::Running => true,
                    RunState::Idle => {
                        state.run = RunState::Running;
                        false
                    }
                }
            };
            if !someone_else_drives {
                break;
            }
            // Wait for the driver to finish, or to be dropped midway (then take over).
            self.inner
                .changed
                .wait_until(|| !matches!(self.inner.state.borrow().run, RunState::Running))
                .await;
        }
        // Puts the state back to `Idle` if this future is dropped before the end, so a later
        // `run` can carry on instead of everyone waiting for a driver that is gone.
        let mut driving = Driving {
            shutdown: self,
            done: false,
        };
        let mut phases = Vec::new();
        while let Some((phase, gate, waited_for)) = self.start_next_phase() {
            klog!(
                debug,
                "shutdown: phase {} ({} open)",
                phase.name(),
                waited_for
            );
            self.inner.changed.notify_waiters();
            let start = executor::now();
            let finished = timeout(per_phase, gate.close()).await.is_ok();
            let elapsed = executor::now().saturating_duration_since(start);
            let stragglers = if finished {
                Vec::new()
            } else {
                let mut state = self.inner.state.borrow_mut();
                state
                    .slot_mut(phase)
                    .map(|s| s.open.values().cloned().collect())
                    .unwrap_or_default()
            };
            if !stragglers.is_empty() {
                klog!(
                    warn,
                    "shutdown: phase {} deadline passed with {} still open",
                    phase.name(),
                    stragglers.len()
                );
            }
            phases.push(PhaseReport {
                phase,
                waited_for,
                elapsed,
                stragglers,
            });
        }
        let report = ShutdownReport { phases };
        self.inner.state.borrow_mut().run = RunState::Done(report.clone());
        driving.done = true;
        self.inner.changed.notify_waiters();
        report
    }

    /// Mark the first phase not yet started as started; `None` when all have.
    fn start_next_phase(&self) -> Option<(Phase, Rc<Gate>, usize)> {
        let mut state = self.inner.state.borrow_mut();
        let slot = state.slots.iter_mut().find(|s| !s.started)?;
        slot.started = true;
        let out = (slot.phase, Rc::clone(&slot.gate), slot.open.len());
        state.current = Some(out.0);
        Some(out)
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.state.try_borrow() {
            Ok(state) => f
                .debug_struct("Shutdown")
                .field("triggered", &state.triggered)
                .field("current", &state.current)
                .field(
                    "open",
                    &state
                        .slots
                        .iter()
                        .map(|s| (s.phase, s.open.len()))
                        .collect::<Vec<_>>(),
                )
                .finish(),
            Err(_) => f.write_str("Shutdown { <borrowed> }"),
        }
    }
}

/// Resets an interrupted [`Shutdown::run`] (see there).
struct Driving<'a> {
    shutdown: &'a Shutdown,
    done: bool,
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut state) = self.shutdown.inner.state.try_borrow_mut() {
                state.run = RunState::Idle;
            }
            self.shutdown.inner.changed.notify_waiters();
        }
    }
}

/// Work that a phase waits for; dropping it says "done". From [`Shutdown::register`].
#[must_use = "the phase stops waiting for this work as soon as the registration is dropped"]
pub struct Registration {
    shutdown: Shutdown,
    phase: Phase,
    id: u64,
    /// Dropped after `Drop::drop` took the name out of the open list.
    _guard: OwnedGateGuard,
}

impl Registration {
    /// The phase it belongs to.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The coordinator it belongs to.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Completes once this registration's phase has started: time to act.
    pub fn phase_started(&self) -> impl Future<Output = ()> + '_ {
        self.shutdown.phase_started(self.phase)
    }

    /// Whether the phase has started (a cheap check between two requests).
    pub fn is_phase_started(&self) -> bool {
        self.shutdown.has_started(self.phase)
    }

    /// Say "done" (the same as dropping it).
    pub fn done(self) {}
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.shutdown.inner.state.borrow_mut();
        if let Some(slot) = state.slot_mut(self.phase) {
            slot.open.remove(&self.id);
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("phase", &self.phase)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
