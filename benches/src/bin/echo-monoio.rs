//! Echo on monoio (io_uring driver, thread-per-core): one task per connection, one owned
//! buffer passed to the kernel and back.
//! `echo-monoio [--port N] [--host IP] [--core N | --no-pin]`

use std::io;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use seastar_benches::cli::{ServerArgs, ServerFlags};

fn main() {
    let args = ServerArgs::from_env("echo-monoio", ServerFlags::default());
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .unwrap_or_else(|e| fail(&e));
    rt.block_on(serve(args.addr)).unwrap_or_else(|e| fail(&e));
}

async fn serve(addr: std::net::SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    seastar_benches::announce("monoio", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        monoio::spawn(async move {
            // A connection's error ends that connection only.
            let _ = echo(stream).await;
        });
    }
}

async fn echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(seastar_benches::ECHO_BUF);
    loop {
        let (res, b) = stream.read(buf).await;
        buf = b;
        if res? == 0 {
            return Ok(());
        }
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        res?;
        buf.clear();
    }
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("echo-monoio: {e}");
    std::process::exit(1);
}
