//! The reference server of `scripts/bench-http.sh`: bare axum 0.8 on one address, built with the
//! service's release profile and allocator, so that the benchmark measures what the service adds
//! to the framework. `cargo run --release -p reference-server -- 127.0.0.1:8090`
//! (`TOKIO_WORKER_THREADS` sets its workers, as for the service).

mod app;

use std::net::SocketAddr;

use axum::serve::{Listener, ListenerExt};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        None => SocketAddr::from(([127, 0, 0, 1], 8090)),
    };
    // No Nagle delay, as the service's accept loop sets.
    let listener = tokio::net::TcpListener::bind(addr).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    eprintln!("reference server listening on {}", listener.local_addr()?);
    axum::serve(listener, app::router()).await
}
