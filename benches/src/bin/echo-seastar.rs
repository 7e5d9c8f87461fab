//! Echo on Seastar-RS, one core pinned to `--core` (default 0), on io_uring or mio:
//! one task per connection, one owned buffer passed to the kernel and back.
//! `echo-seastar [--port N] [--host IP] [--core N | --no-pin] [--backend uring|mio]`

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use seastar::net::{TcpListener, TcpStream};
use seastar_benches::cli::{ServerArgs, ServerFlags};

fn main() {
    let args = ServerArgs::from_env(
        "echo-seastar",
        ServerFlags {
            backend: true,
            ..ServerFlags::default()
        },
    );
    let rt = seastar_benches::cli::seastar_runtime("echo-seastar", &args);
    let name = format!("seastar on {}", rt.backend());
    let addr = args.addr;
    match rt.run_on_one(move || serve(addr, name)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail(&e),
        Err(e) => fail(&e),
    }
}

async fn serve(addr: SocketAddr, name: String) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    seastar_benches::announce(&name, listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                seastar::spawn(async move {
                    // A connection's error ends that connection only.
                    let _ = echo(stream).await;
                })
                .detach();
            }
            // Out of descriptors, say: do not spin.
            Err(_) => seastar::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn echo(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(seastar_benches::ECHO_BUF);
    loop {
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        if res? == 0 {
            return Ok(());
        }
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        res?;
    }
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("echo-seastar: {e}");
    std::process::exit(1);
}
