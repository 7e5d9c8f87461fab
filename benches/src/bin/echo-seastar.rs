//! Echo on Seastar-RS, one core pinned to `--core` (default 0), on io_uring or mio:
//! one task per connection; `TcpStream::recv` hands over each received buffer of the core's
//! receive pool (io_uring: provided-buffer ring + multishot receive), which is sent back as
//! it is (no copy) and returns to the pool when the send is done. Buffers that arrived
//! meanwhile (`try_recv`) go out together in one gather write.
//! `echo-seastar [--port N] [--host IP] [--core N | --no-pin] [--backend uring|mio]`

use std::io;

use seastar::net::TcpStream;

fn main() {
    seastar_benches::seastar_server::run("echo-seastar", "", echo);
}

async fn echo(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut batch = Vec::new();
    while let Some(first) = stream.recv().await? {
        let Some(second) = stream.try_recv()? else {
            let (res, _first) = stream.write_all(first).await;
            res?;
            continue;
        };
        batch.push(first);
        batch.push(second);
        while let Some(more) = stream.try_recv()? {
            batch.push(more);
        }
        let (res, mut sent) = stream.writev_all(batch).await;
        res?;
        // Give the buffers back to the pool now; keep the vector's allocation.
        sent.clear();
        batch = sent;
    }
    Ok(())
}
