//! Echo on Seastar-RS, one core pinned to `--core` (default 0), on io_uring or mio:
//! one task per connection; `TcpStream::recv` hands over each received buffer of the core's
//! receive pool (io_uring: provided-buffer ring + multishot receive), which is sent back as
//! it is (no copy, write-behind: the task does not wait for the send) and returns to the
//! pool when the send is done. Buffers that arrived meanwhile (`try_recv`) go out together
//! in one gather write.
//! `echo-seastar [--port N] [--host IP] [--core N | --no-pin] [--backend uring|mio]`

use std::io;

use seastar::net::TcpStream;

fn main() {
    seastar_benches::seastar_server::run("echo-seastar", "", echo);
}

async fn echo(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    // The connection's gather list: `writev_behind` empties it and leaves its allocation.
    let mut batch = Vec::new();
    while let Some(first) = stream.recv().await? {
        // Write-behind: the send's completion wakes nobody; the buffer returns to the pool
        // when it is done (seen by the next `recv`).
        let Some(second) = stream.try_recv()? else {
            stream.write_behind(first).await?;
            continue;
        };
        batch.extend([first, second]);
        while let Some(more) = stream.try_recv()? {
            batch.push(more);
        }
        stream.writev_behind(&mut batch).await?;
    }
    stream.flush().await
}
