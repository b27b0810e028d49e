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
//!
//! A connection is handed over once its first bytes are in: one whose first request is
//! `GET /stream` is served by [`super::streams`] (a change stream's connection without hyper's
//! per-connection buffers), every other by hyper.
//!
//! Every request passes through [`Edge`], which hyper calls directly: the request body limit, the
//! request timeout (408) and the drain's `connection: close`, without a tower layer (each layer
//! on the router boxes the route's service and its future again per request). The request timeout
//! costs nothing on a request answered at its first poll — the hot path, which waits on nothing —
//! and arms a timer only for one that waits (on a body, on the store).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use super::io::ConnIo;
use super::streams;
use super::timer::ConnTimer;
use crate::http::error::ApiError;
use crate::http::extract::BODY_LIMIT;
use crate::http::ops::Drain;

/// What one replica's HTTP server allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
    /// A request not answered within it gets a 408 `request_timeout`.
    pub request_timeout: Duration,
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
    base_path: String,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(limits.header_read_timeout);
    let edge =
        Edge { app, body_limit: DefaultBodyLimit::max(BODY_LIMIT), drain, request_timeout: limits.request_timeout };
    let connection = Connection { http, edge, limits, base_path: base_path.into(), stop: stop.clone() };
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
        // The shutdown waits for every connection's task: each holds its watcher to its end.
        // (Spawned as it is: an async block awaiting it would hold the future twice, ~2.5 KB more
        // per connection.)
        tokio::spawn(connection.clone().run(stream, graceful.watcher(), slot));
    }
    drop(listener);
    graceful.shutdown().await;
}

/// What every connection is served with.
#[derive(Clone)]
struct Connection {
    http: hyper::server::conn::http1::Builder,
    edge: Edge,
    limits: Limits,
    base_path: Arc<str>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    /// Waits for the connection's first bytes (within the header-read timeout, until the server
    /// stops), then serves it: as a change stream when they open `GET /stream` ([`streams`]),
    /// else through hyper, the header-read deadline still running from the accept.
    async fn run(mut self, stream: TcpStream, watcher: Watcher, slot: OwnedSemaphorePermit) {
        let deadline = Instant::now() + self.limits.header_read_timeout;
        // Closed, failed, or silent past the deadline: closed without an answer, as hyper does.
        let Some(is_stream) = self.opens_a_stream(&stream, deadline).await else { return };
        let io = ConnIo::new(stream, self.limits.write_timeout);
        if is_stream {
            // A task of its own, holding the connection's watcher and slot: for the stream's whole
            // life it is the stream's future alone, not this one's around it.
            tokio::spawn(streams::serve(io, self.edge, deadline, (watcher, slot)));
            return;
        }
        let http = self.http.timer(ConnTimer::starting_by(deadline.into_std()));
        if let Err(e) = watcher.watch(http.serve_connection(TokioIo::new(io), self.edge)).await {
            // Header-read and write timeouts, resets and clients going away: theirs, not ours.
            tracing::debug!(error = %e, "connection closed with an error");
        }
    }

    /// Whether the connection's first bytes open `GET /stream`; `None` when it closes, fails, or
    /// sends nothing by `deadline` or before the server stops. (Its own future: its buffer and
    /// timer are gone once the connection is served.)
    async fn opens_a_stream(&mut self, stream: &TcpStream, deadline: Instant) -> Option<bool> {
        let mut first = [0u8; streams::PEEK];
        let peeked = tokio::select! {
            peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => peeked,
            _ = self.stop.wait_for(|s| *s) => return None,
        };
        let Ok(Ok(peeked @ 1..)) = peeked else { return None };
        Some(streams::is_stream_request(&first[..peeked], &self.base_path))
    }
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

/// The app as hyper calls it: the body limit, the request timeout, and `connection: close` on a
/// request that comes while the replica drains (one atomic load per request).
#[derive(Clone)]
pub struct Edge {
    app: Router,
    body_limit: DefaultBodyLimit,
    drain: Arc<Drain>,
    request_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for Edge {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        self.answer(req)
    }
}

impl Edge {
    /// Answers one request, whichever connection it came on (hyper's, or a stream's).
    pub fn answer<B>(&self, req: Request<B>) -> Answer
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        // A router is always ready (`poll_ready` is `Ready(Ok)`), so it is called straight away.
        let mut app = self.body_limit.layer(self.app.clone());
        Answer { app: app.call(req), timeout: self.request_timeout, deadline: None, close: self.drain.is_draining() }
    }
}

/// A request being answered; a 408 `request_timeout` once it has waited `timeout`.
pub struct Answer {
    app: RouteFuture<Infallible>,
    timeout: Duration,
    /// Armed when the app first waits: the timeout runs from there (the first poll, which ran
    /// before, takes microseconds), and a request answered at once never touches the timer.
    deadline: Option<Pin<Box<Sleep>>>,
    close: bool,
}

impl Future for Answer {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = match Pin::new(&mut this.app).poll(cx) {
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(deadline.as_mut().poll(cx));
                // Dropping the app's future (when this answer is dropped) cancels the request.
                ApiError::Timeout.into_response()
            }
        };
        Poll::Ready(Ok(if this.close { close_after(response) } else { response }))
    }
}

fn close_after(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
