//! HTTP/1.1 plaintext ("Hello, World!") on Seastar-RS, one core pinned to `--core`, with the
//! minimal request counting of `seastar_benches::http` until our HTTP service exists.
//! `http-seastar [--port N] [--host IP] [--core N | --no-pin] [--backend uring|mio]`

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use seastar::net::{TcpListener, TcpStream};
use seastar_benches::cli::{ServerArgs, ServerFlags};
use seastar_benches::http::{responses, RequestCounter};

fn main() {
    let args = ServerArgs::from_env(
        "http-seastar",
        ServerFlags {
            backend: true,
            ..ServerFlags::default()
        },
    );
    let rt = seastar_benches::cli::seastar_runtime("http-seastar", &args);
    let name = format!("seastar on {} (minimal HTTP)", rt.backend());
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
                    let _ = conn(stream).await;
                })
                .detach();
            }
            // Out of descriptors, say: do not spin.
            Err(_) => seastar::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn conn(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut counter = RequestCounter::default();
    let mut buf = Vec::with_capacity(seastar_benches::ECHO_BUF);
    let mut out = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        if res? == 0 {
            return Ok(());
        }
        let Some(n) = counter.feed(&buf) else {
            return Ok(());
        };
        if n > 0 {
            responses(&mut out, n);
            let (res, o) = stream.write_all(out).await;
            out = o;
            res?;
        }
    }
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("http-seastar: {e}");
    std::process::exit(1);
}
