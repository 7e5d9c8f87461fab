//! `cargo xtask`: the project's automation, written in Rust so it runs wherever cargo does.
//!
//! The alias in `.cargo/config.toml` turns `cargo xtask ARGS` into
//! `cargo run --quiet --package xtask -- ARGS`. Each task is one module, dispatched from the
//! `match` in [`main`] (the rust-analyzer layout):
//!
//! * `test` ([`test`]): every check CI runs, with [`setup`] installing what is missing.
//! * `bench` ([`bench`]): servers side by side against their peers (never part of `test`).
//! * `help`: the list below.
//!
//! No dependencies: only `std`, so the tasks build in seconds on a fresh clone.

mod bench;
mod bench_counts;
mod bench_raft;
mod run;
mod setup;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

const HELP: &str = "\
cargo xtask: automation for the Seastar-RS workspace

USAGE:
    cargo xtask <TASK> [ARGS]

TASKS:
    test    Run every check CI runs, in order: setup, fmt, clippy, test, no_std, miri.
            Installs missing rustup components/targets/toolchains first (the setup step).
            Prints each step's name, duration and PASS/FAIL, and ends with the line
            `N passed, M failed`; exits non-zero if any step failed.
            See `cargo xtask test --help` for its options.
    bench   Benchmark servers side by side: echo (ours, tokio, monoio, a raw io_uring
            floor) under `loadgen`, HTTP plaintext (ours, hyper, monoio) under `wrk`; prints a
            markdown table and writes it with the raw figures to target/bench-report/;
            then our Raft core against raft-rs (commits/s, 3 nodes in one process).
            `--quick`: a reduced matrix (< 2 minutes). See `cargo xtask bench --help`.
            Not part of `test`.
    help    Print this message.
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("test") => test::run(&rest),
        Some("bench") => bench::run(&rest),
        None | Some("help" | "--help" | "-h") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("error: unknown task `{other}`\n");
            eprint!("{HELP}");
            ExitCode::from(2)
        }
    }
}

/// The workspace root: every command runs there, wherever `cargo xtask` was started.
fn project_root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match xtask_dir.parent() {
        Some(root) => root.to_path_buf(),
        None => xtask_dir,
    }
}
