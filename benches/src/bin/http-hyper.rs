//! HTTP/1.1 plaintext ("Hello, World!") on hyper over tokio's current-thread runtime.
//! `http-hyper [--port N] [--host IP] [--core N | --no-pin]`

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE, SERVER};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use seastar_benches::cli::{ServerArgs, ServerFlags};
use seastar_benches::http::BODY;

fn main() {
    let args = ServerArgs::from_env("http-hyper", ServerFlags::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&e));
    rt.block_on(serve(args.addr)).unwrap_or_else(|e| fail(&e));
}

async fn hello(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    let headers = resp.headers_mut();
    headers.insert(SERVER, HeaderValue::from_static("bench"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

async fn serve(addr: SocketAddr) -> io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    seastar_benches::announce("hyper on tokio current-thread", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            // A connection's error ends that connection only.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}

fn fail(e: &dyn std::fmt::Display) -> ! {
    eprintln!("http-hyper: {e}");
    std::process::exit(1);
}
