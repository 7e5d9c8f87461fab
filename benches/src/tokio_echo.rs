//! The tokio echo server both tokio binaries run (current-thread and multi-thread differ only
//! in the runtime they build).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accept forever on `addr`, one spawned task per connection.
pub async fn serve(addr: SocketAddr, name: &str) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    crate::announce(name, listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            // A connection's error ends that connection only.
            let _ = echo(stream).await;
        });
    }
}

async fn echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; crate::ECHO_BUF];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}
