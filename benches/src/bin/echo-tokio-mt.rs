//! Echo on tokio's multi-thread runtime (`--threads N` workers, default 1, all pinned to
//! `--core`): one task per connection, one reused buffer.
//! `echo-tokio-mt [--port N] [--host IP] [--core N | --no-pin] [--threads N]`

use seastar_benches::cli::{ServerArgs, ServerFlags};

fn main() {
    let args = ServerArgs::from_env(
        "echo-tokio-mt",
        ServerFlags {
            threads: true,
            ..ServerFlags::default()
        },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_io()
        .build()
        .unwrap_or_else(|e| fail(&e));
    rt.block_on(seastar_benches::tokio_echo::serve(
        args.addr,
        "tokio multi-thread",
    ))
    .unwrap_or_else(|e| fail(&e));
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("echo-tokio-mt: {e}");
    std::process::exit(1);
}
