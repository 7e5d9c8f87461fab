//! Echo on monoio (io_uring driver, thread-per-core): one task per connection, one owned
//! buffer passed to the kernel and back.
//! `echo-monoio [--port N] [--host IP] [--core N | --no-pin]`

use std::io;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

fn main() {
    seastar_benches::monoio_server::run("echo-monoio", "monoio", echo);
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
