//! Echo on Seastar-RS, one core pinned to `--core` (default 0), on io_uring or mio:
//! one task per connection, one owned buffer passed to the kernel and back.
//! `echo-seastar [--port N] [--host IP] [--core N | --no-pin] [--backend uring|mio]`

use std::io;

use seastar::net::TcpStream;

fn main() {
    seastar_benches::seastar_server::run("echo-seastar", "", echo);
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
