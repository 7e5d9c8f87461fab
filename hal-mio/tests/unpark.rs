//! Cross-thread unpark: prompt when parked, free (no system call) when not, never lost.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use seastar_hal::{Platform, Unpark};
use seastar_hal_mio::MioPlatform;

#[test]
fn unpark_of_a_running_core_makes_no_syscall_and_ends_the_next_park() {
    let p = MioPlatform::new().expect("platform");
    let u = p.unparker();
    for _ in 0..1000 {
        u.unpark();
        u.clone().unpark();
    }
    assert_eq!(p.stats().unpark_wakes, 0, "no eventfd write while running");
    assert_eq!(p.stats().syscalls(), 0);
    let t0 = StdInstant::now();
    p.park(None); // would block forever without the pending unpark
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(p.stats().unpark_wakes, 0);
    // Consumed: the next park with a deadline sleeps until it.
    let start = p.now();
    p.park(Some(start + Duration::from_millis(20)));
    assert!(p.now() - start >= Duration::from_millis(20));
}

#[test]
fn unpark_from_another_thread_wakes_a_parked_core_promptly() {
    let p = MioPlatform::new().expect("platform");
    let u = p.unparker();
    let woke_at = Arc::new(std::sync::Mutex::new(None));
    let t = {
        let u = u.clone();
        let woke_at = woke_at.clone();
        std::thread::spawn(move || {
            let t0 = StdInstant::now();
            while !u.is_parked() {
                assert!(t0.elapsed() < Duration::from_secs(10), "core never parked");
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(20));
            *woke_at.lock().expect("lock") = Some(StdInstant::now());
            u.unpark();
        })
    };
    let t0 = StdInstant::now();
    p.park(Some(p.now() + Duration::from_secs(20)));
    let returned = StdInstant::now();
    t.join().expect("unparker thread");
    let sent = woke_at.lock().expect("lock").expect("unpark sent");
    assert!(
        returned.duration_since(sent) < Duration::from_secs(2),
        "park returned {:?} after the unpark",
        returned.duration_since(sent)
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(p.stats().unpark_wakes, 1, "exactly one eventfd write");
    assert!(!u.is_parked());
}

#[test]
fn no_unpark_is_lost_when_it_races_with_park() {
    const ROUNDS: usize = 300;
    let p = MioPlatform::new().expect("platform");
    let u = p.unparker();
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let t = {
        let (started, done) = (started.clone(), done.clone());
        std::thread::spawn(move || {
            let mut x: u32 = 0x1234_5678;
            for i in 0..ROUNDS {
                while started.load(Ordering::SeqCst) <= i {
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    std::hint::spin_loop();
                }
                // Land anywhere around the park: before it, while it arms, or in it.
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                for _ in 0..(x % 2000) {
                    std::hint::spin_loop();
                }
                u.unpark();
            }
            // The core may have returned spuriously somewhere and be one park ahead.
            while !done.load(Ordering::SeqCst) {
                u.unpark();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    for _ in 0..ROUNDS {
        started.fetch_add(1, Ordering::SeqCst);
        let t0 = StdInstant::now();
        p.park(Some(p.now() + Duration::from_secs(5)));
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "an unpark was lost: park slept {:?}",
            t0.elapsed()
        );
    }
    done.store(true, Ordering::SeqCst);
    t.join().expect("unparker thread");
    let s = p.stats();
    assert!(
        s.unpark_wakes <= s.parks + 2 * ROUNDS as u64,
        "wake syscalls bounded: {s:?}"
    );
}
