//! Timers: a hierarchical timer wheel and the `sleep`, `timeout` and `Interval` futures.
pub mod wheel;
