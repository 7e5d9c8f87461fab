//! HTTP/1.1 plaintext ("Hello, World!") on Seastar-RS, one core pinned to `--core`, with the
//! minimal request counting of `seastar_benches::http` until our HTTP service exists.
//! Requests are read with `TcpStream::recv` (buffers of the core's receive pool: io_uring's
//! provided-buffer ring and one multishot receive per connection), counted in place, and the
//! buffer goes back to the pool at once; responses are sent write-behind (the task does not
//! wait for the send).
//! `http-seastar [--port N] [--host IP] [--core N | --no-pin] [--backend uring|mio]`

use std::io;

use seastar::net::TcpStream;
use seastar_benches::http::{responses, RequestCounter, RESPONSE};

fn main() {
    seastar_benches::seastar_server::run("http-seastar", " (minimal HTTP)", conn);
}

async fn conn(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut counter = RequestCounter::default();
    while let Some(buf) = stream.recv().await? {
        let Some(n) = counter.feed(&buf) else {
            return Ok(());
        };
        drop(buf);
        match n {
            0 => {}
            // The common case: one response, sent from static memory (no copy, no allocation).
            1 => stream.write_behind(RESPONSE).await?,
            n => {
                let mut out = Vec::with_capacity(n * RESPONSE.len());
                responses(&mut out, n);
                stream.write_behind(out).await?;
            }
        }
    }
    stream.flush().await
}
