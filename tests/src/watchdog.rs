//! A per-test deadline: the body runs in its own thread; if it has not finished in time the
//! test panics with a clear message instead of hanging the whole `cargo test` run. (The stuck
//! thread is leaked; the test binary exits when the harness finishes.)

use std::panic;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Runs `body` in a new thread and returns its result; panics if it panics (re-raising the
/// original payload) or if it runs longer than `deadline`.
pub fn with_deadline<T, F>(name: &str, deadline: Duration, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let start = Instant::now();
    let handle = thread::Builder::new()
        .name(format!("body:{name}"))
        .spawn(move || {
            // Dropped on return and on unwind: both wake the watchdog.
            let _done = DropSignal(done_tx);
            body()
        })
        .expect("spawn test body thread");
    match done_rx.recv_timeout(deadline) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "test {name} exceeded its deadline of {deadline:?} (a hang: blocked accept/read/write or a lost wake-up)"
        ),
    }
    let result = handle.join();
    eprintln!("[{name}] took {:.2?}", start.elapsed());
    match result {
        Ok(v) => v,
        Err(payload) => panic::resume_unwind(payload),
    }
}

struct DropSignal(mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Polls `cond` every millisecond until it holds; panics with `what` after `limit`.
#[track_caller]
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_value() {
        assert_eq!(with_deadline("v", Duration::from_secs(5), || 42), 42);
    }

    #[test]
    #[should_panic(expected = "exceeded its deadline")]
    fn fires_on_hang() {
        with_deadline("hang", Duration::from_millis(50), || {
            thread::sleep(Duration::from_secs(2))
        });
    }

    #[test]
    #[should_panic(expected = "inner failure")]
    fn propagates_panic() {
        with_deadline("p", Duration::from_secs(5), || panic!("inner failure"));
    }
}
