//! Connections whose first request is `GET /stream`: answered here instead of by hyper's HTTP/1
//! connection, so that an open change stream costs its socket, its task and its place in the
//! feed, and not the two 8 KiB buffers (write and read) hyper keeps for a connection's whole life
//! — with 10,000 idle streams those were most of the replica's memory (`docs/clients.md#figures`).
//!
//! Only the HTTP/1 framing is ours; the request goes through the same [`Edge`] as every other
//! (router, tokens, CORS, request timeout, drain). The head is read under the connection's
//! header-read deadline (a connection that misses it is closed without an answer, as hyper does)
//! and parsed with `httparse` under hyper's limits (100 headers, a head of at most
//! [`MAX_HEAD`] bytes, a URL of at most 65534 bytes); a head it refuses gets the same JSON error
//! hyper's get ([`super::io`]). The answer is written with `connection: close`: a length when the
//! body has one, else chunked (to an HTTP/1.0 client: up to the close), one chunk per batch of
//! frames ready together, sent straight from the shared event bytes. The connection ends with the
//! answer, when the client leaves (seen by reading while the stream idles; anything it sends is
//! discarded), or when a write takes no byte for the write timeout ([`ConnIo`]).
//!
//! Which path a connection takes changes how it is framed, never what it is answered: a request
//! of any other route that came here would be answered by the same router.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use bytes::Buf;
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::accept::Edge;
use super::io::{ConnIo, parse_error};

/// The largest request head read: hyper's default read buffer limit.
pub const MAX_HEAD: usize = 8192 + 4096 * 100;

/// The most headers a request may have (hyper's limit).
const MAX_HEADERS: usize = 100;

/// The longest URL (hyper's limit).
const MAX_URI: usize = 65534;

/// Frames of a body taken into one chunk at most.
const MAX_BATCH: usize = 64;

/// How long a closed answer waits for the client to close its side, so that bytes it sent and
/// we did not read (a request body) do not turn our close into a reset that loses the answer.
const LINGER: Duration = Duration::from_secs(1);

/// The bytes read of a connection before deciding its path: enough for `GET {base path}/stream `.
pub const PEEK: usize = 128;

/// Whether `first`, a connection's first bytes, starts a `GET /stream` request at the root or
/// under `base_path`. A line cut before the path's end (a client sending it in pieces) is not
/// one: it goes to hyper, which answers it the same way.
pub fn is_stream_request(first: &[u8], base_path: &str) -> bool {
    let Some(target) = first.strip_prefix(b"GET ") else { return false };
    ["", base_path].iter().any(|prefix| {
        target
            .strip_prefix(prefix.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"/stream"))
            .is_some_and(|rest| matches!(rest.first(), Some(b' ' | b'?')))
    })
}

/// Why a request head was not read.
#[derive(Debug, PartialEq)]
enum HeadError {
    /// The client closed, or the socket failed: nothing to answer.
    Gone,
    /// The header-read deadline passed: closed without an answer.
    Timeout,
    /// Answered with this status (400, 414 or 431) and closed.
    Refused(StatusCode),
}

/// Serves one connection whose first request is a stream's: reads the head, answers it through
/// `edge`, and closes; `held` (the connection's place in the server) is let go at the end.
pub async fn serve(mut io: ConnIo, edge: Edge, head_deadline: Instant, held: impl Send) {
    let (version, response) = match read_head(&mut io, head_deadline).await {
        Ok(request) => {
            let version = request.version();
            let Ok(response) = edge.answer(request).await;
            (version, response)
        }
        Err(HeadError::Refused(status)) => (Version::HTTP_11, refusal(status)),
        Err(HeadError::Gone | HeadError::Timeout) => return,
    };
    match write_answer(&mut io, version, response).await {
        Ok(Ended::Whole) => linger(&mut io).await,
        Ok(Ended::Cut) => {}
        Err(e) => tracing::debug!(error = %e, "stream connection closed with an error"),
    }
    drop(held);
}

/// Reads one request head, parsing it again only when a read brings a line's end (a head has at
/// most 101 lines before httparse refuses it, so a client trickling bytes costs no more parses).
async fn read_head(io: &mut ConnIo, deadline: Instant) -> Result<Request<Body>, HeadError> {
    let too_large = HeadError::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let mut buf = Vec::with_capacity(4096);
    loop {
        if buf.len() >= MAX_HEAD {
            return Err(too_large);
        }
        buf.reserve(4096);
        let before = buf.len();
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) => return Err(HeadError::Timeout),
            Ok(Ok(0) | Err(_)) => return Err(HeadError::Gone),
            Ok(Ok(_)) => {}
        }
        if buf[before..].contains(&b'\n') {
            match parse_head(&buf)? {
                Some((length, _)) if length > MAX_HEAD => return Err(too_large),
                Some((_, request)) => return Ok(request),
                None => {}
            }
        }
    }
}

/// The request of a head, with the head's length, once it is whole (its body, if any, is never
/// read: a stream takes none).
fn parse_head(head: &[u8]) -> Result<Option<(usize, Request<Body>)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let length = match parsed.parse(head) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        }
        Err(_) => return Err(bad_request()),
    };
    let (Some(method), Some(path), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(bad_request());
    };
    if path.len() > MAX_URI {
        return Err(HeadError::Refused(StatusCode::URI_TOO_LONG));
    }
    let version = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| bad_request())?;
    let mut request = Request::builder().method(method).uri(path).version(version);
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| bad_request())?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| bad_request())?;
        request = request.header(name, value);
    }
    let request = request.body(Body::empty()).map_err(|_| bad_request())?;
    Ok(Some((length, request)))
}

fn bad_request() -> HeadError {
    HeadError::Refused(StatusCode::BAD_REQUEST)
}

/// The JSON answer to a head refused with `status` (the same hyper's refusals get).
fn refusal(status: StatusCode) -> Response<Body> {
    let (code, message) = parse_error(status);
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// How an answer's writing ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// All of it was written.
    Whole,
    /// Without its end: the client closed its side (or reset it) while the stream idled, or the
    /// body failed (the client sees a cut answer, not a whole one).
    Cut,
}

/// Writes `response`'s head, then its body as it comes.
async fn write_answer(io: &mut ConnIo, version: Version, response: Response<Body>) -> io::Result<Ended> {
    let (parts, mut body) = response.into_parts();
    let length = body.size_hint().exact();
    let chunked = length.is_none() && version == Version::HTTP_11;
    let head = head(version, &parts, length);
    // Freed before the stream idles: the headers' maps and the head are a stream's largest parts.
    drop(parts);
    io.write_all(&head).await?;
    drop(head);
    loop {
        let mut frames = match next_frames(&mut body, io).await {
            Next::Frames(frames) => frames,
            Next::End => break,
            Next::Cut => return Ok(Ended::Cut),
        };
        if chunked {
            let size = format!("{:x}\r\n", frames.remaining());
            frames.parts.push_front(Bytes::from(size));
            frames.parts.push_back(Bytes::from_static(b"\r\n"));
        }
        io.write_all_buf(&mut frames).await?;
    }
    if chunked {
        io.write_all(b"0\r\n\r\n").await?;
    }
    io.flush().await?;
    Ok(Ended::Whole)
}

/// The answer's head: the app's headers, then our `date`, `connection: close` and framing.
fn head(version: Version, parts: &axum::http::response::Parts, length: Option<u64>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let status = parts.status;
    let http = if version == Version::HTTP_10 { "HTTP/1.0" } else { "HTTP/1.1" };
    head.extend_from_slice(
        format!("{http} {} {}\r\n", status.as_str(), status.canonical_reason().unwrap_or("")).as_bytes(),
    );
    for (name, value) in &parts.headers {
        if [CONNECTION, TRANSFER_ENCODING, CONTENT_LENGTH].contains(name) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(
        format!("date: {}\r\nconnection: close\r\n", httpdate::fmt_http_date(SystemTime::now())).as_bytes(),
    );
    match length {
        Some(length) => head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes()),
        None if version == Version::HTTP_11 => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
    head.extend_from_slice(b"\r\n");
    head
}

enum Next {
    Frames(Frames),
    End,
    Cut,
}

/// Waits for the body's next data frame, reading from the client meanwhile to see it leave; then
/// takes the frames ready with it, up to [`MAX_BATCH`].
async fn next_frames(body: &mut Body, io: &mut ConnIo) -> Next {
    let mut frames = Frames::default();
    let mut scratch = [0u8; 64];
    while frames.parts.is_empty() {
        let frame = tokio::select! {
            frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)) => frame,
            read = io.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return Next::Cut,
                Ok(_) => continue,
            },
        };
        match frame {
            Some(Ok(frame)) => frames.push(frame.into_data().unwrap_or_default()),
            Some(Err(_)) => return Next::Cut,
            None => return Next::End,
        }
    }
    while frames.parts.len() < MAX_BATCH {
        match poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).now_or_never() {
            Some(Some(Ok(frame))) => frames.push(frame.into_data().unwrap_or_default()),
            _ => break,
        }
    }
    Next::Frames(frames)
}

/// After a whole answer: our side is closed, and the client's close (or [`LINGER`]) awaited.
async fn linger(io: &mut ConnIo) {
    if io.shutdown().await.is_err() {
        return;
    }
    let mut scratch = [0u8; 64];
    let _ =
        tokio::time::timeout(LINGER, async { while matches!(io.read(&mut scratch).await, Ok(n) if n > 0) {} }).await;
}

/// Data frames waiting to be written, as one buffer written with vectored writes.
#[derive(Default)]
struct Frames {
    parts: VecDeque<Bytes>,
}

impl Frames {
    /// Queues a frame's data (trailers and empty frames are nothing to write).
    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.parts.push_back(data);
        }
    }
}

impl Buf for Frames {
    fn remaining(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else { return };
            let taken = cnt.min(front.len());
            front.advance(taken);
            cnt -= taken;
            if front.is_empty() {
                self.parts.pop_front();
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            filled += 1;
        }
        filled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_get_of_the_stream_at_the_root_or_under_the_base_path_is_a_stream_request() {
        for yes in ["GET /stream HTTP/1.1\r\n", "GET /stream?x=1 HTTP/1.1", "GET /rollout/stream HTTP/1.1"] {
            assert!(is_stream_request(yes.as_bytes(), "/rollout"), "{yes}");
        }
        for no in [
            "GET /streams HTTP/1.1",
            "GET /stream",
            "GET /str",
            "POST /stream HTTP/1.1",
            "HEAD /stream HTTP/1.1",
            "GET /other/stream HTTP/1.1",
            "GET /flags/config HTTP/1.1",
            "GET http://host/stream HTTP/1.1",
            "",
        ] {
            assert!(!is_stream_request(no.as_bytes(), "/rollout"), "{no}");
        }
        assert!(is_stream_request(b"GET /stream HTTP/1.1", ""));
    }

    #[test]
    fn heads_are_parsed_under_hyper_limits() {
        assert!(matches!(parse_head(b"GET /stream HTTP/1.1\r\nhost: x\r\n"), Ok(None)));
        let (length, request) =
            parse_head(b"GET /stream?a=b HTTP/1.0\nLast-Event-ID: 7\n\nbody").expect("valid").expect("whole");
        assert_eq!(length, 43);
        assert_eq!(
            (request.method(), request.uri().path(), request.version()),
            (&Method::GET, "/stream", Version::HTTP_10)
        );
        assert_eq!(request.headers()["last-event-id"], "7");

        let refused = |head: Vec<u8>| parse_head(&head).err();
        assert_eq!(refused(b"GET /stream HTTP/1.1\r\nbad header\r\n\r\n".to_vec()), Some(bad_request()));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: y\r\n")).collect();
        assert_eq!(
            refused(format!("GET /stream HTTP/1.1\r\n{many}\r\n").into_bytes()),
            Some(HeadError::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE))
        );
        let long = "a".repeat(MAX_URI);
        assert_eq!(
            refused(format!("GET /stream?{long} HTTP/1.1\r\n\r\n").into_bytes()),
            Some(HeadError::Refused(StatusCode::URI_TOO_LONG))
        );
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_by_the_write_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let mut io = ConnIo::new(server, Duration::from_millis(300));
        // 64 MiB of events the client never reads: far more than both sockets' buffers hold.
        let event = Bytes::from(vec![b'x'; 64 * 1024]);
        let frames = futures::stream::iter((0..1024).map(move |_| Ok::<_, io::Error>(event.clone())));
        let response = Response::new(Body::from_stream(frames));
        let started = std::time::Instant::now();
        let written = tokio::time::timeout(Duration::from_secs(20), write_answer(&mut io, Version::HTTP_11, response))
            .await
            .expect("the write gives up by itself");
        assert_eq!(written.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
        drop(client);
    }

    #[test]
    fn frames_are_written_in_order_across_partial_writes() {
        let mut frames = Frames::default();
        for part in ["ab", "cde", "f"] {
            frames.push(Bytes::from(part));
        }
        frames.push(Bytes::new());
        assert_eq!(frames.parts.len(), 3);
        let mut slices = [IoSlice::new(&[]); 8];
        assert_eq!(frames.chunks_vectored(&mut slices), 3);
        let mut out = Vec::new();
        while frames.has_remaining() {
            let take = 2.min(frames.chunk().len());
            out.extend_from_slice(&frames.chunk()[..take]);
            frames.advance(take);
        }
        assert_eq!(out, b"abcdef");
    }
}
