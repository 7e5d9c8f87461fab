//! (in progress)
#[derive(Debug)]
pub struct TimerWheel<T>(core::marker::PhantomData<T>);
