//! [`Sharded<T>`]: one instance of a service per core, like Seastar's `sharded<>`.

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::local;
use super::submit::{join_all, submit_with, Submit};
use super::SmpError;
use crate::sync::Gate;

/// Service ids are never reused, so a late message for a stopped service can never reach a
/// newer one. (`usize`: no 64-bit atomics on small targets.)
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// What each core's registry holds for one service.
struct ShardEntry<T> {
    value: Rc<T>,
    /// Every call through the `Sharded` handle holds it; `stop` closes it and waits.
    gate: Rc<Gate>,
}

/// The entry of service `id` on the current core.
fn lookup<T: 'static>(id: usize) -> Result<Rc<ShardEntry<T>>, SmpError> {
    let smp = local::current()?;
    let core = smp.index();
    let entry = smp
        .services()
        .borrow()
        .get(&id)
        .cloned()
        .ok_or(SmpError::NotRunning { id, core })?;
    entry
        .downcast::<ShardEntry<T>>()
        .map_err(|_| SmpError::Internal("sharded service of another type"))
}

/// One `T` per core, started and stopped together.
///
/// Each core keeps its instance in a core-local registry keyed by the service id; the
/// handle itself holds only the id, so it is `Send + Sync` whatever `T` is, and calls made
/// through it from any core reach the right instance on the right core. `T` need not be
/// `Send`: it is built, used and dropped on its own core.
///
/// Every call ([`invoke_on`](Self::invoke_on) and friends) holds the instance's [`Gate`]
/// while it runs; [`stop`](Self::stop) closes every gate, waits for the calls inside, then
/// drops each instance on its core. Dropping the handle without `stop` leaves the instances
/// in place until their cores shut down.
///
/// ```ignore
/// let counters = Sharded::start(|_core| Cell::new(0u64)).await?;
/// counters.invoke_on(1, |c| async move { c.set(c.get() + 1) }).await?;
/// let total = counters.map_reduce(|c| async move { c.get() }, 0, |a, b| a + b).await?;
/// counters.stop().await?;
/// ```
pub struct Sharded<T: 'static> {
    id: usize,
    _service: PhantomData<fn() -> T>,
}

impl<T: 'static> fmt::Debug for Sharded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sharded")
            .field("id", &self.id)
            .field("type", &core::any::type_name::<T>())
            .finish()
    }
}

impl<T: 'static> Sharded<T> {
    /// Build one instance on every core with `factory(core_index)`, run on that core. If any
    /// core fails (the factory panics, the core is down), the instances already built are
    /// stopped and the first error is returned.
    pub async fn start<F>(factory: F) -> Result<Self, SmpError>
    where
        F: FnOnce(usize) -> T + Send + Clone + 'static,
    {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let n = super::core_count().ok_or(SmpError::NotAttached)?;
        let subs: Vec<Submit<()>> = (0..n)
            .map(|core| {
                let factory = factory.clone();
                submit_with(core, move || async move {
                    let smp = local::current()?;
                    let entry = ShardEntry {
                        value: Rc::new(factory(core)),
                        gate: Rc::new(Gate::new()),
                    };
                    smp.services().borrow_mut().insert(id, Rc::new(entry));
                    Ok(())
                })
            })
            .collect();
        let this = Sharded {
            id,
            _service: PhantomData,
        };
        match join_all(subs).await {
            Ok(_) => Ok(this),
            Err(e) => {
                // Best effort: the cores that did build an instance drop it again.
                let _ = this.stop().await;
                Err(e)
            }
        }
    }

    /// The service's id (unique in the process).
    pub fn id(&self) -> usize {
        self.id
    }

    /// The instance on the current core.
    pub fn local(&self) -> Result<Rc<T>, SmpError> {
        lookup::<T>(self.id).map(|e| e.value.clone())
    }

    /// Run `f` with the instance on `core` and bring its output back (see
    /// [`submit_to`](super::submit_to) for the semantics). Fails with
    /// [`SmpError::Stopping`] once `stop` has begun on that core.
    pub fn invoke_on<F, Fut>(&self, core: usize, f: F) -> Submit<Fut::Output>
    where
        F: FnOnce(Rc<T>) -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let id = self.id;
        submit_with(core, move || async move {
            let entry = lookup::<T>(id)?;
            let guard = entry
                .gate
                .enter_owned()
                .map_err(|_| SmpError::Stopping { id, core })?;
            let out = f(entry.value.clone()).await;
            drop(guard);
            Ok(out)
        })
    }

    /// Run a clone of `f` with every core's instance, concurrently; outputs in core order.
    pub async fn invoke_on_all<F, Fut>(&self, f: F) -> Result<Vec<Fut::Output>, SmpError>
    where
        F: FnOnce(Rc<T>) -> Fut + Send + Clone + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        let n = super::core_count().ok_or(SmpError::NotAttached)?;
        let subs = (0..n).map(|c| self.invoke_on(c, f.clone())).collect();
        join_all(subs).await
    }

    /// Map every core's instance with a clone of `map`, concurrently, and fold the outputs
    /// into `initial` with `reduce` on this core, in core order.
    pub async fn map_reduce<F, Fut, A, R>(
        &self,
        map: F,
        initial: A,
        mut reduce: R,
    ) -> Result<A, SmpError>
    where
        F: FnOnce(Rc<T>) -> Fut + Send + Clone + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
        R: FnMut(A, Fut::Output) -> A,
    {
        let outputs = self.invoke_on_all(map).await?;
        Ok(outputs.into_iter().fold(initial, &mut reduce))
    }

    /// Stop the service: on every core, close the instance's gate (new calls fail with
    /// [`SmpError::Stopping`]), wait until the calls inside have finished, then remove the
    /// instance and drop it there (the last `Rc` to it, unless a call kept a clone). Waits for
    /// all cores; returns the first error (a core that is already down reports
    /// [`SmpError::CoreShutDown`]; its instance went with it).
    ///
    /// Takes `&self` so a handle shared between cores (`Arc<Sharded<T>>`) can be stopped by
    /// any of them; later calls fail with [`SmpError::NotRunning`], and stopping again is a
    /// no-op.
    pub async fn stop(&self) -> Result<(), SmpError> {
        let id = self.id;
        let n = super::core_count().ok_or(SmpError::NotAttached)?;
        let subs: Vec<Submit<()>> = (0..n)
            .map(|core| {
                submit_with(core, move || async move {
                    let smp = local::current()?;
                    let entry = smp.services().borrow().get(&id).cloned();
                    // Not there: `start` failed on this core, nothing to stop.
                    let Some(entry) = entry else { return Ok(()) };
                    let entry = entry
                        .downcast::<ShardEntry<T>>()
                        .map_err(|_| SmpError::Internal("sharded service of another type"))?;
                    entry.gate.close().await;
                    let removed = smp.services().borrow_mut().remove(&id);
                    drop(removed);
                    drop(entry);
                    Ok(())
                })
            })
            .collect();
        join_all(subs).await.map(|_| ())
    }
}
