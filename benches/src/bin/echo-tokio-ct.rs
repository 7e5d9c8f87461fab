//! Echo on tokio's current-thread runtime: one task per connection, one reused buffer.
//! `echo-tokio-ct [--port N] [--host IP] [--core N | --no-pin]`

use seastar_benches::cli::{ServerArgs, ServerFlags};

fn main() {
    let args = ServerArgs::from_env("echo-tokio-ct", ServerFlags::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| fail(&e));
    rt.block_on(seastar_benches::tokio_echo::serve(
        args.addr,
        "tokio current-thread",
    ))
    .unwrap_or_else(|e| fail(&e));
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("echo-tokio-ct: {e}");
    std::process::exit(1);
}
