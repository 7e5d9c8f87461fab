//! The floor: echo on a raw io_uring, no runtime (see `seastar_benches::raw_uring`).
//! `echo-raw-uring [--port N] [--host IP] [--core N | --no-pin]`

use seastar_benches::cli::{ServerArgs, ServerFlags};
use seastar_benches::raw_uring;

fn main() {
    let args = ServerArgs::from_env("echo-raw-uring", ServerFlags::default());
    let listener = match std::net::TcpListener::bind(args.addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo-raw-uring: cannot listen on {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(args.addr);
    seastar_benches::announce("raw io_uring", addr);
    if let Err(e) = raw_uring::serve(listener, raw_uring::Config::default()) {
        eprintln!("echo-raw-uring: {e}");
        std::process::exit(1);
    }
}
