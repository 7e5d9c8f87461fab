//! Failures end runs in bounded time, on both backends (every other test relies on this to
//! fail instead of hanging):
//!
//! - A core whose root future panics stops the other cores (even one waiting in `accept`
//!   forever) and `run_on_all` returns the panic as an error.

use std::time::{Duration, Instant};

use seastar::net::TcpListener;
use seastar::Backend;
use seastar_tests::client::must_runtime;
use seastar_tests::LOOPBACK_ANY_PORT;

fn core_panic_ends_run_on_all(backend: Backend) {
    let rt = must_runtime(backend, 2);
    let start = Instant::now();
    let res = rt.run_on_all(|core| async move {
        if core == 0 {
            seastar::time::sleep(Duration::from_millis(20)).await;
            panic!("core 0 gives up");
        }
        // Core 1 would wait forever.
        let l = TcpListener::bind(LOOPBACK_ANY_PORT).expect("bind");
        let _ = l.accept().await;
        unreachable!("nobody connects");
    });
    let elapsed = start.elapsed();
    let err = res.expect_err("a panicking core must fail run_on_all");
    let msg = format!("{err:?}");
    assert!(msg.contains("core 0 gives up"), "{msg}");
    assert!(
        elapsed < Duration::from_secs(10),
        "run_on_all took {elapsed:?} to fail"
    );
    // The runtime can run again afterwards.
    let out = rt
        .run_on_all(|core| async move { core * 2 })
        .expect("second run");
    assert_eq!(out, [0, 2]);
}

seastar_tests::on_both_backends! {
    core_panic_ends_run_on_all,
}
