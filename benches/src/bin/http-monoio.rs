//! HTTP/1.1 plaintext ("Hello, World!") on monoio, with the minimal request counting of
//! `seastar_benches::http` (the same logic as `http-seastar`).
//! `http-monoio [--port N] [--host IP] [--core N | --no-pin]`

use std::io;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use seastar_benches::http::{responses, RequestCounter};

fn main() {
    seastar_benches::monoio_server::run("http-monoio", "monoio (minimal HTTP)", conn);
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
