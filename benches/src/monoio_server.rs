//! The part the monoio bench servers share: parse the server flags, start monoio's io_uring
//! runtime, accept connections and run one task per connection. Each binary supplies only its
//! per-connection protocol (the monoio counterpart of [`crate::seastar_server`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use monoio::net::{TcpListener, TcpStream};

use crate::cli::{ServerArgs, ServerFlags};

/// Run `program` (its name in messages) as a monoio server announced as `name`, handing each
/// connection to `conn`. Exits the process with status 1 if the runtime or the listener fails.
pub fn run<C, Fut>(program: &str, name: &str, conn: C)
where
    C: Fn(TcpStream) -> Fut + Copy + 'static,
    Fut: Future<Output = io::Result<()>> + 'static,
{
    let args = ServerArgs::from_env(program, ServerFlags::default());
    let outcome = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .and_then(|mut rt| rt.block_on(serve(args.addr, name, conn)));
    if let Err(e) = outcome {
        eprintln!("{program}: {e}");
        std::process::exit(1);
    }
}

async fn serve<C, Fut>(addr: SocketAddr, name: &str, conn: C) -> io::Result<()>
where
    C: Fn(TcpStream) -> Fut + Copy + 'static,
    Fut: Future<Output = io::Result<()>> + 'static,
{
    let listener = TcpListener::bind(addr)?;
    crate::announce(name, listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        monoio::spawn(async move {
            // A connection's error ends that connection only.
            let _ = conn(stream).await;
        });
    }
}
