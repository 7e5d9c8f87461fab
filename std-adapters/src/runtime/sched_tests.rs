//! Scheduling settings, per-core statistics and the stall watchdog on the real backends.

use std::time::Duration;

use seastar_kernel::sched::create_scheduling_group;

use super::*;
use crate::net::{TcpListener, TcpStream};

fn builders() -> Vec<Builder> {
    let mut v = vec![Runtime::builder().pin(false).backend(Backend::Mio)];
    if seastar_hal_linux::probe(&UringConfig::default()).is_ok() {
        v.push(Runtime::builder().pin(false).backend(Backend::IoUring));
    }
    v
}

#[test]
fn a_blocking_task_is_reported_while_it_stalls_and_after() {
    for b in builders() {
        let rt = b
            .cores(1)
            .stall_threshold(Duration::from_millis(50))
            .build()
            .expect("runtime");
        let stats = rt
            .run_on_one(|| async {
                let g = create_scheduling_group("slow", 100).expect("group");
                crate::task::Builder::new()
                    .name("sleeper")
                    .group(g)
                    .spawn(async {
                        // Holds the core (a blocking call inside a task) for 200 ms and
                        // until the watchdog has caught it: when the watchdog's thread gets
                        // a CPU is up to the OS (on a loaded machine, not within 150 ms).
                        let start = std::time::Instant::now();
                        while start.elapsed() < Duration::from_millis(200)
                            || super::watchdog::current_reports() == Some(0)
                        {
                            assert!(
                                start.elapsed() < Duration::from_secs(60),
                                "the watchdog never reported the running stall"
                            );
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    })
                    .await
                    .expect("task");
                core_stats().expect("on a core")
            })
            .expect("run");
        let e = &stats.executor;
        // (At least: on a loaded machine the OS may hold up another poll as long.)
        assert!(e.stalls >= 1, "{stats}");
        let s = e.last_stall.as_ref().expect("report");
        assert_eq!(s.task_name.as_deref(), Some("sleeper"));
        assert_eq!(s.group, "slow");
        assert!(s.duration >= Duration::from_millis(200), "{s:?}");
        assert!(stats.watchdog_stalls >= 1, "caught while running: {stats}");
        let slow = e.groups.iter().find(|g| g.name == "slow").expect("group");
        assert!(slow.runtime >= Duration::from_millis(200));
    }
}

#[test]
fn without_the_watchdog_only_the_kernel_reports() {
    let rt = Runtime::builder()
        .pin(false)
        .backend(Backend::Mio)
        .cores(1)
        .stall_threshold(Duration::from_millis(50))
        .stall_watchdog(false)
        .task_quota(Duration::from_micros(100))
        .build()
        .expect("runtime");
    let stats = rt
        .run_on_one(|| async {
            crate::spawn(async { std::thread::sleep(Duration::from_millis(100)) })
                .await
                .expect("task");
            core_stats().expect("on a core")
        })
        .expect("run");
    assert!(stats.executor.stalls >= 1);
    assert_eq!(stats.watchdog_stalls, 0);
}

#[test]
fn core_stats_combine_executor_io_and_smp_counters() {
    assert!(core_stats().is_none(), "not on a core");
    for b in builders() {
        let rt = b.cores(2).build().expect("runtime");
        let out = rt
            .run_on_all(|core| async move {
                if core == 0 {
                    let v = crate::smp::submit_to(1, || async { 7 }).await.expect("smp");
                    assert_eq!(v, 7);
                    let listener =
                        TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
                    let addr = listener.local_addr().expect("addr");
                    let accept = crate::spawn(async move { listener.accept().await });
                    let client = TcpStream::connect(addr).await.expect("connect");
                    let (server, _) = accept.await.expect("task").expect("accept");
                    let (res, _) = client.write_all(b"ping".to_vec()).await;
                    res.expect("write");
                    let (res, buf) = server.read(Vec::with_capacity(8)).await;
                    assert_eq!(res.expect("read"), 4);
                    assert_eq!(buf, b"ping");
                } else {
                    // Wait for core 0's request and our reply to go through.
                    for _ in 0..5000 {
                        if core_stats().is_some_and(|s| s.messages_sent() >= 1) {
                            break;
                        }
                        crate::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                core_stats().expect("on a core")
            })
            .expect("run");
        let (c0, c1) = (&out[0], &out[1]);
        assert_eq!((c0.core, c1.core), (0, 1));
        assert!(
            c0.messages_sent() >= 1 && c0.messages_received() >= 1,
            "{c0}"
        );
        assert!(
            c1.messages_sent() >= 1 && c1.messages_received() >= 1,
            "{c1}"
        );
        assert!(c0.io_submitted() >= 3, "accept, connect, write, read: {c0}");
        assert!(c0.io_completed() >= 3, "{c0}");
        assert!(c0.syscalls() >= 1, "{c0}");
        assert!(
            c0.executor.tasks_spawned >= 1 && c0.executor.polls >= 1,
            "{c0}"
        );
        assert!(
            c1.executor.polls >= 1,
            "the submitted work ran as a task: {c1}"
        );
        assert_eq!(c0.executor.groups[0].name, "main");
        // The one-line form names everything.
        let line = c0.to_string();
        for word in ["core 0", "polls", "io", "syscalls", "smp", "group main"] {
            assert!(line.contains(word), "{word:?} missing from {line}");
        }
    }
}

#[test]
fn a_zero_task_quota_is_refused() {
    let err = Runtime::builder()
        .pin(false)
        .backend(Backend::Mio)
        .task_quota(Duration::ZERO)
        .build()
        .expect_err("zero quota");
    assert!(matches!(err, Error::Config(_)), "{err}");
}
