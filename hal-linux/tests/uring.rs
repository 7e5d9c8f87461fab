//! What only io_uring has: the setup ladder and its probe, native and emulated multishot
//! accept, SQPOLL, ring registration, and a cancelled op staying in flight until its CQE.
//! The HAL contract itself is checked by `conformance.rs`.

mod common;

use std::future::poll_fn;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::{block_on, own, park_until, platform, tcp_pair};
use seastar_hal::io::{complete_read, IoDriver, MultiOp, Op};
use seastar_hal::Platform;
use seastar_hal_linux::{probe, UringConfig, UringPlatform};

#[test]
fn probe_reports_the_setup_used() {
    let f = probe(&UringConfig::new()).expect("probe");
    println!("{f:#?}");
    assert!(f.ext_arg);
    assert!(!f.setup.sqpoll);
    // DEFER_TASKRUN is never used without SINGLE_ISSUER.
    assert!(!f.setup.defer_taskrun || f.setup.single_issuer);
    // NO_SQARRAY is tried only on the top rung (with DEFER_TASKRUN).
    assert!(!f.setup.no_sqarray || f.setup.defer_taskrun);
    // Whatever was refused was tried before the combination in use.
    assert!(!f.refused.contains(&f.setup));
    assert!(f.sq_entries >= 256 && f.cq_entries >= f.sq_entries);
}

fn multishot_accept(cfg: UringConfig, native: bool) {
    let p = UringPlatform::new(cfg).expect("platform");
    assert_eq!(p.features().native_multishot_accept, native);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut accepts = MultiOp::accept_multishot(p.io(), listener.as_raw_fd()).expect("submit");
    let mut clients = Vec::new();
    for i in 0..4u8 {
        let mut client = TcpStream::connect(addr).expect("connect");
        client.write_all(&[i]).expect("write");
        clients.push(client);
        let c = block_on(&p, poll_fn(|cx| accepts.poll_next(cx))).expect("a completion");
        assert!(c.more, "multishot keeps going");
        let fd = own(c.result.expect("accepted") as i32);
        let (c, mut buf) = block_on(
            &p,
            Op::recv(p.io(), fd.as_raw_fd(), vec![0u8; 4]).expect("recv"),
        );
        let n = complete_read(&c, &mut buf).expect("recv ok");
        buf.truncate(n);
        assert_eq!(buf, [i], "connection {i} in order");
    }
    drop(accepts);
    park_until(&p, || p.io().in_flight() == 0);
}

#[test]
fn accept_multishot_native() {
    multishot_accept(UringConfig::new(), true);
}

#[test]
fn accept_multishot_emulated() {
    multishot_accept(UringConfig::new().native_multishot_accept(false), false);
}

#[test]
fn works_without_defer_taskrun() {
    let p = UringPlatform::new(UringConfig::new().defer_taskrun(false)).expect("platform");
    assert!(!p.features().setup.defer_taskrun);
    assert!(!p.features().setup.no_sqarray);
    assert_eq!(block_on(&p, Op::nop(p.io()).expect("nop")).0.result, Ok(0));
    let deadline = p.now() + Duration::from_millis(10);
    assert_eq!(
        block_on(&p, Op::timeout(p.io(), deadline).expect("t"))
            .0
            .result,
        Ok(0)
    );
    assert!(p.now() >= deadline);
}

#[test]
fn works_with_sqpoll_when_permitted() {
    let p = match UringPlatform::new(UringConfig::new().entries(32).sqpoll(Some(10))) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SQPOLL not permitted here ({e}); skipping");
            return;
        }
    };
    assert!(p.features().setup.sqpoll);
    assert!(!p.features().setup.defer_taskrun);
    assert_eq!(block_on(&p, Op::nop(p.io()).expect("nop")).0.result, Ok(0));
    // More ops than SQ entries: the kernel thread must make room.
    let nops: Vec<_> = (0..100).map(|_| Op::nop(p.io()).expect("nop")).collect();
    for op in nops {
        assert_eq!(block_on(&p, op).0.result, Ok(0));
    }
    let (ours, mut peer) = tcp_pair();
    peer.write_all(b"sq").expect("write");
    let (c, mut buf) = block_on(
        &p,
        Op::recv(p.io(), ours.as_raw_fd(), vec![0u8; 8]).expect("r"),
    );
    let n = complete_read(&c, &mut buf).expect("ok");
    buf.truncate(n);
    assert_eq!(buf, b"sq");
}

/// A ring registers itself with its thread (enters then skip the descriptor lookup) and
/// unregisters on drop: a thread has only 16 registration slots, so creating and dropping
/// more platforms than that on one thread keeps getting registered rings that work.
#[test]
fn rings_register_with_their_thread_and_give_the_slot_back() {
    let first = platform();
    if !first.features().registered_ring {
        return; // a kernel older than 5.18: plain enters
    }
    drop(first);
    for _ in 0..40 {
        let p = platform();
        assert!(p.features().registered_ring, "slot not given back");
        let deadline = p.now() + Duration::from_millis(1);
        assert_eq!(
            block_on(&p, Op::timeout(p.io(), deadline).expect("t"))
                .0
                .result,
            Ok(0)
        );
    }
}

/// A dropped timeout stays in flight until the kernel's CQE for it (the driver must not
/// reuse its slot earlier), and counts as one cancel. (The suite checks it is released.)
#[test]
fn a_dropped_timeout_stays_in_flight_until_its_cqe() {
    let p = platform();
    let op = Op::timeout(p.io(), p.now() + Duration::from_secs(30)).expect("submit");
    p.flush();
    drop(op);
    assert_eq!(p.io().in_flight(), 1, "cancelled op stays until its CQE");
    park_until(&p, || p.io().in_flight() == 0);
    assert_eq!(p.stats().cancels, 1);
}

/// One park reaps every completion that is there, however many batches the driver takes
/// them out of the completion queue in: 100 nops in one park all complete, each woken once.
#[test]
fn one_park_reaps_more_completions_than_one_batch() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let p = platform();
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    let mut cx = Context::from_waker(&waker);
    let mut ops: Vec<_> = (0..100).map(|_| Op::nop(p.io()).expect("submit")).collect();
    for op in &mut ops {
        assert!(op.poll_complete(&mut cx).is_pending());
    }
    p.park(None);
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        100,
        "every nop woken by the one park"
    );
    for op in &mut ops {
        assert!(op.poll_complete(&mut cx).is_ready());
    }
    assert_eq!(p.io().in_flight(), 0);
}
