//! Our accept loop over hyper's HTTP/1.1 connections, for the limits `axum::serve` does not have:
//! a header-read timeout (a client trickling its request head — slowloris — or idling on a
//! keep-alive connection is cut off), a write timeout (a client that stops reading its answers
//! is cut off, see [`super::io`]), and a cap on open connections (over it a new connection gets a
//! canned 503 `too_many_connections` and is closed at once, so a load balancer tries another
//! replica instead of queueing behind a full one).
//!
//! While the replica drains before a shutdown every answer carries `connection: close`, so busy
//! keep-alive connections end cleanly after an answer; when the loop stops it closes the listener
//! and lets open connections finish the request they are in (idle ones are closed between
//! requests, never in the middle of one).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, header};
use futures::FutureExt;
use futures::future::Map;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::io::ConnIo;
use crate::http::ops::Drain;

/// What one replica's HTTP server allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
}

/// The body of the answer to a connection over the limit.
const TOO_MANY_CONNECTIONS: &str =
    r#"{"error":"too_many_connections","message":"this replica has all the connections it takes; try again"}"#;

/// Serves `app` until `stop` flips, then drains the open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    drain: Arc<Drain>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let service = CloseWhenDraining { inner: TowerToHyperService::new(app), drain };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refuse(&stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(ConnIo::new(stream, limits.write_timeout));
        let connection = graceful.watch(http.serve_connection(io, service.clone()));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Header-read and write timeouts, resets and clients going away: theirs, not ours.
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection over the limit with a 503, written once without waiting; dropping the
/// stream then closes it.
fn refuse(stream: &TcpStream) {
    tracing::debug!("connection limit reached; refusing a connection");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{TOO_MANY_CONNECTIONS}",
        TOO_MANY_CONNECTIONS.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// The app as hyper calls it; a request that comes while the replica drains is answered with
/// `connection: close` (one atomic load per request).
#[derive(Clone)]
struct CloseWhenDraining {
    inner: TowerToHyperService<Router>,
    drain: Arc<Drain>,
}

type Answer = Result<Response<Body>, Infallible>;

impl hyper::service::Service<Request<Incoming>> for CloseWhenDraining {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Map<TowerToHyperServiceFuture<Router, Request<Incoming>>, fn(Answer) -> Answer>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let then: fn(Answer) -> Answer = if self.drain.is_draining() { close_after } else { std::convert::identity };
        self.inner.call(req).map(then)
    }
}

fn close_after(answer: Answer) -> Answer {
    answer.map(|mut response| {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    })
}
