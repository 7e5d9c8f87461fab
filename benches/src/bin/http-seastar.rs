//! HTTP/1.1 plaintext ("Hello, World!") on Seastar-RS, one core pinned to `--core`, with the
//! minimal request counting of `seastar_benches::http` until our HTTP service exists.
//! `http-seastar [--port N] [--host IP] [--core N | --no-pin] [--backend uring|mio]`

use std::io;

use seastar::net::TcpStream;
use seastar_benches::http::{responses, RequestCounter};

fn main() {
    seastar_benches::seastar_server::run("http-seastar", " (minimal HTTP)", conn);
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
