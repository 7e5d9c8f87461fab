//! The part every Seastar-RS bench server shares: parse the server flags, start one core,
//! accept connections and run one task per connection. Each binary supplies only its
//! per-connection protocol.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use seastar::net::{TcpListener, TcpStream};

use crate::cli::{ServerArgs, ServerFlags};

/// Run `program` (its name in messages) as a one-core server labelled `label` after the
/// backend ("seastar on io_uring<label>"), handing each connection to `conn`. Exits the
/// process with status 1 if the runtime or the listener fails.
pub fn run<C, Fut>(program: &str, label: &str, conn: C)
where
    C: Fn(TcpStream) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = io::Result<()>> + 'static,
{
    let args = ServerArgs::from_env(
        program,
        ServerFlags {
            backend: true,
            ..ServerFlags::default()
        },
    );
    let rt = crate::cli::seastar_runtime(program, &args);
    let name = format!("seastar on {}{label}", rt.backend());
    let addr = args.addr;
    let outcome = match rt.run_on_one(move || serve(addr, name, conn)) {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    eprintln!("{program}: {outcome}");
    std::process::exit(1);
}

async fn serve<C, Fut>(addr: SocketAddr, name: String, conn: C) -> io::Result<()>
where
    C: Fn(TcpStream) -> Fut + Copy + 'static,
    Fut: Future<Output = io::Result<()>> + 'static,
{
    let listener = TcpListener::bind(addr)?;
    crate::announce(&name, listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                seastar::spawn(async move {
                    // A connection's error ends that connection only.
                    let _ = conn(stream).await;
                })
                .detach();
            }
            // Out of descriptors, say: do not spin.
            Err(_) => seastar::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
