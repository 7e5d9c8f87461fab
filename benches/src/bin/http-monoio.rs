//! HTTP/1.1 plaintext ("Hello, World!") on monoio, with the minimal request counting of
//! `seastar_benches::http` (the same logic as `http-seastar`).
//! `http-monoio [--port N] [--host IP] [--core N | --no-pin]`

use std::io;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use seastar_benches::cli::{ServerArgs, ServerFlags};
use seastar_benches::http::{responses, RequestCounter};

fn main() {
    let args = ServerArgs::from_env("http-monoio", ServerFlags::default());
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .unwrap_or_else(|e| fail(&e));
    rt.block_on(serve(args.addr)).unwrap_or_else(|e| fail(&e));
}

async fn serve(addr: std::net::SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    seastar_benches::announce("monoio (minimal HTTP)", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        monoio::spawn(async move {
            // A connection's error ends that connection only.
            let _ = conn(stream).await;
        });
    }
}

async fn conn(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut counter = RequestCounter::default();
    let mut buf: Vec<u8> = Vec::with_capacity(seastar_benches::ECHO_BUF);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
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
    eprintln!("http-monoio: {e}");
    std::process::exit(1);
}
