//! Echo round trips and bulk transfers over loopback, on both backends, with our code on the
//! server side, the client side, and both:
//!
//! - 64 connections x 1,000 round trips, message sizes 1 B..=64 KiB (the first of each
//!   connection 1 B, the second 64 KiB, the rest log-uniform), every echoed byte checked.
//!   Connections run concurrently; the server has two cores (`SO_REUSEPORT`) and must have
//!   served on both.
//! - 100 MiB in one direction, every byte checked against the pattern and an FNV-1a 64 receipt
//!   compared end to end.
//! - Full duplex on split halves: one task writes while another reads the echo.

use std::collections::HashMap;
use std::net::SocketAddr;

use seastar::Backend;
use seastar_tests::client::{self, must_runtime};
use seastar_tests::payload::{PatternStream, Pool};
use seastar_tests::proto;
use seastar_tests::server::{ConnInfo, Server, ServerReport};
use seastar_tests::stdnet::{self, StdServer};

const SEED: u64 = 0x5EA5_7A12_0000_0001;
const CONNS: usize = 64;
const ROUNDS: usize = 1_000;
const BULK: u64 = 100 << 20;

/// Every client connection must appear in the server's report with the same byte count.
fn assert_server_saw(report: &ServerReport, clients: &[(SocketAddr, u64)]) {
    let served: HashMap<SocketAddr, u64> = report.assert_all_ok().into_iter().collect();
    assert_eq!(
        served.len(),
        clients.len(),
        "server saw {} connections, clients made {}",
        served.len(),
        clients.len()
    );
    for (local, sent) in clients {
        assert_eq!(
            served.get(local),
            Some(sent),
            "server's byte count for client {local}"
        );
    }
}

/// Our client: `CONNS` connections spread over a two-core runtime, all concurrent.
fn our_round_trip_clients(
    backend: Backend,
    addr: SocketAddr,
    pool: &Pool,
) -> Vec<(SocketAddr, u64)> {
    let rt = must_runtime(backend, 2);
    let per_core = rt
        .run_on_all(|core| {
            let pool = pool.clone();
            async move {
                let mut tasks = Vec::new();
                for conn in (core..CONNS).step_by(2) {
                    let pool = pool.clone();
                    tasks.push(seastar::spawn(async move {
                        client::round_trips(addr, &pool, SEED, conn as u64, ROUNDS).await
                    }));
                }
                let mut out = Vec::new();
                for (i, t) in tasks.into_iter().enumerate() {
                    match t.await {
                        Ok(Ok(v)) => out.push(v),
                        Ok(Err(e)) => panic!("core {core} client task {i}: {e}"),
                        Err(e) => panic!("core {core} client task {i} join: {e:?}"),
                    }
                }
                out
            }
        })
        .expect("client runtime");
    let all: Vec<_> = per_core.into_iter().flatten().collect();
    assert_eq!(all.len(), CONNS);
    all
}

fn echo_server(backend: Backend, cores: usize) -> Server {
    Server::spawn(backend, cores, |s, _info: ConnInfo| client::echo(s))
}

fn assert_both_cores_served(report: &ServerReport) {
    assert_eq!(report.per_core.len(), 2);
    assert!(
        report.per_core.iter().all(|&n| n > 0),
        "SO_REUSEPORT should spread {} connections over both server cores, got {:?}",
        report.conns.len(),
        report.per_core
    );
}

/// Our client and our two-core server.
fn round_trips_ours_to_ours(backend: Backend) {
    let pool = Pool::standard(SEED);
    let server = echo_server(backend, 2);
    let clients = our_round_trip_clients(backend, server.addr(), &pool);
    let report = server.stop();
    assert_server_saw(&report, &clients);
    assert_both_cores_served(&report);
}

/// `std::net` clients (one thread each) against our two-core server.
fn round_trips_std_clients_our_server(backend: Backend) {
    let pool = Pool::standard(SEED);
    let server = echo_server(backend, 2);
    let addr = server.addr();
    let threads: Vec<_> = (0..CONNS)
        .map(|conn| {
            let pool = pool.clone();
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || proto::std_round_trips(addr, &pool, SEED, conn as u64, ROUNDS))
                .expect("spawn client thread")
        })
        .collect();
    let clients: Vec<_> = threads
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.join()
                .expect("client thread")
                .unwrap_or_else(|e| panic!("std client {i}: {e}"))
        })
        .collect();
    let report = server.stop();
    assert_server_saw(&report, &clients);
    assert_both_cores_served(&report);
}

/// Our client against a `std::net` echo server (thread per connection).
fn round_trips_our_client_std_server(backend: Backend) {
    let pool = Pool::standard(SEED);
    let server = StdServer::spawn(CONNS, |s, _| stdnet::echo(s)).expect("std server");
    let clients = our_round_trip_clients(backend, server.addr(), &pool);
    let echoed = server.join_ok();
    let mut echoed: Vec<u64> = echoed
        .into_iter()
        .map(|r| r.expect("std echo connection"))
        .collect();
    let mut sent: Vec<u64> = clients.iter().map(|c| c.1).collect();
    echoed.sort_unstable();
    sent.sort_unstable();
    assert_eq!(
        echoed, sent,
        "bytes the std server echoed vs bytes our clients sent"
    );
}

/// 100 MiB from our client to our server; the server checks every byte and answers with its
/// receipt, which the client compares with its own.
fn bulk_100mib_ours_to_ours(backend: Backend) {
    let server = Server::spawn(backend, 1, |s, _| async move {
        client::bulk_receive(&s, SEED).await.map(|r| r.len)
    });
    let addr = server.addr();
    let rt = must_runtime(backend, 1);
    let receipt = rt
        .run_on_one(move || async move {
            let s = seastar::net::TcpStream::connect(addr).await?;
            client::bulk_send(&s, SEED, BULK).await
        })
        .expect("client runtime")
        .expect("bulk send");
    assert_eq!(receipt.len, BULK);
    let report = server.stop();
    let served = report.assert_all_ok();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].1, BULK, "bytes our server received");
}

/// 100 MiB from our server to a `std::net` client, which checks every byte and answers with
/// its receipt; the server compares it with its own.
fn bulk_100mib_our_server_to_std_client(backend: Backend) {
    let server = Server::spawn(backend, 1, |s, _| async move {
        client::bulk_send(&s, SEED, BULK).await.map(|r| r.len)
    });
    let mut c = stdnet::connect(server.addr()).expect("connect");
    let receipt = proto::std_bulk_receive(&mut c, SEED).expect("std bulk receive");
    assert_eq!(receipt.len, BULK);
    let report = server.stop();
    let served = report.assert_all_ok();
    assert_eq!(served, vec![(c.local_addr().expect("local"), BULK)]);
}

/// Full duplex on one connection, ours to ours: a writer task on the write half sends 16 MiB
/// while a reader task on the read half checks the echo as it arrives (the echo server cannot
/// buffer it all, so the writer blocks unless reads progress concurrently).
fn split_full_duplex_ours_to_ours(backend: Backend) {
    const TOTAL: u64 = 16 << 20;
    let server = echo_server(backend, 1);
    let addr = server.addr();
    let rt = must_runtime(backend, 1);
    let (sent, received) = rt
        .run_on_one(move || async move {
            let s = seastar::net::TcpStream::connect(addr)
                .await
                .expect("connect");
            let (rd, wr) = s.into_split();
            let writer = seastar::spawn(async move {
                let mut tx = PatternStream::new(SEED);
                let mut rng = seastar_tests::rng::Rng::new(SEED);
                while tx.position() < TOTAL {
                    let n = (proto::bulk_chunk(&mut rng) as u64).min(TOTAL - tx.position());
                    let (res, _) = wr.write_all(tx.next_chunk(n as usize)).await;
                    res.expect("write half");
                }
                wr.shutdown(std::net::Shutdown::Write)
                    .await
                    .expect("shutdown write half");
                tx.position()
            });
            let reader = seastar::spawn(async move {
                let mut rx = proto::BulkReceiver::new(SEED);
                loop {
                    let (res, mut buf) = rd.read(Vec::with_capacity(100_000)).await;
                    let n = res.expect("read half");
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    rx.feed(&buf).expect("echoed bytes");
                }
                rx.received()
            });
            (
                writer.await.expect("writer task"),
                reader.await.expect("reader task"),
            )
        })
        .expect("client runtime");
    assert_eq!((sent, received), (TOTAL, TOTAL));
    let report = server.stop();
    assert_eq!(report.assert_all_ok().len(), 1);
    assert_eq!(report.conns[0].result.as_ref().ok(), Some(&TOTAL));
}

/// IPv6 loopback (`[::1]`): our server with std clients and with our client, every echo
/// checked, and the addresses the server sees are the clients' IPv6 ones.
fn ipv6_loopback_round_trips(backend: Backend) {
    const V6_CONNS: u64 = 8;
    const V6_ROUNDS: usize = 100;
    let pool = Pool::standard(SEED);
    let bind: SocketAddr = "[::1]:0".parse().expect("v6 addr");
    let server = Server::spawn_at(backend, 1, bind, |s, _| client::echo(s));
    let addr = server.addr();
    assert!(addr.is_ipv6() && addr.ip().is_loopback(), "{addr}");
    let mut clients = Vec::new();
    for conn in 0..V6_CONNS {
        clients
            .push(proto::std_round_trips(addr, &pool, SEED, conn, V6_ROUNDS).expect("std client"));
    }
    let pool2 = pool.clone();
    let ours = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let mut out = Vec::new();
            for conn in V6_CONNS..2 * V6_CONNS {
                out.push(
                    client::round_trips(addr, &pool2, SEED, conn, V6_ROUNDS)
                        .await
                        .expect("our client"),
                );
            }
            out
        })
        .expect("client runtime");
    clients.extend(ours);
    assert!(clients
        .iter()
        .all(|(a, _)| a.is_ipv6() && a.ip().is_loopback()));
    let report = server.stop();
    assert_server_saw(&report, &clients);
}

/// One `write_all` of 64 MiB (many partial sends under the hood) into reads of up to 8 MiB:
/// every byte checked, receipts compared.
fn bulk_64mib_single_write_big_reads(backend: Backend) {
    const TOTAL: usize = 64 << 20;
    let server = Server::spawn(backend, 1, |s, _| async move {
        client::bulk_receive_with(&s, SEED, 8 << 20)
            .await
            .map(|r| r.len)
    });
    let addr = server.addr();
    let mine = must_runtime(backend, 1)
        .run_on_one(move || async move {
            let s = seastar::net::TcpStream::connect(addr)
                .await
                .expect("connect");
            let data = PatternStream::new(SEED).next_chunk(TOTAL);
            let mine = proto::Receipt::of(&{
                let mut h = seastar_tests::checksum::Fnv64::new();
                h.update(&data);
                h
            });
            let (res, back) = s.write_all(data).await;
            res.expect("write_all 64 MiB");
            assert_eq!(back.len(), TOTAL);
            s.shutdown(std::net::Shutdown::Write)
                .await
                .expect("half-close");
            let reply = client::read_to_end(&s, proto::Receipt::SIZE)
                .await
                .expect("receipt");
            assert_eq!(proto::Receipt::decode(&reply), mine, "receiver's receipt");
            mine
        })
        .expect("client runtime");
    assert_eq!(mine.len, TOTAL as u64);
    let served = server.stop().assert_all_ok();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].1, TOTAL as u64);
}

seastar_tests::on_both_backends! {
    bulk_64mib_single_write_big_reads,
    ipv6_loopback_round_trips,
    round_trips_ours_to_ours,
    round_trips_std_clients_our_server,
    round_trips_our_client_std_server,
    bulk_100mib_ours_to_ours,
    bulk_100mib_our_server_to_std_client,
    split_full_duplex_ours_to_ours,
}
