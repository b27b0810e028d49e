//! The socket under each HTTP connection, as hyper sees it: a write timeout, and our JSON error
//! body in place of the empty one hyper answers a request it cannot parse with.
//!
//! hyper answers an unparsable request itself, before our service sees it: `400 Bad Request`,
//! `414 URI Too Long` (a URL over 65534 bytes) or `431 Request Header Fields Too Large` (over 100
//! headers, or a head over its read buffer), each a bare head with `content-length: 0`, then it
//! closes the connection. That head is the last thing hyper writes, so it always ends the first
//! buffer of a write (hyper's header buffer). Each write compares that buffer's last bytes with the
//! shape of those heads (a few dozen bytes, no allocation); a match is written up to the head, and
//! the head itself is swapped for the same status with a JSON body. (The heads
//! [`super::streams`] writes never end that way: their `date` comes before the framing.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A connection's socket with a write timeout and hyper's parse errors in our JSON shape.
pub struct ConnIo {
    stream: TcpStream,
    stall: StallTimer,
    /// Our answer being written in place of hyper's bare error head.
    rewrite: Option<Rewrite>,
}

/// Fires when the socket has taken no byte for `timeout`: armed at the first blocked write,
/// disarmed by any progress. Its timer is allocated on the connection's first stall only.
struct StallTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
    /// The length of hyper's head: what the write reports once `bytes` are all out.
    replaces: usize,
}

impl ConnIo {
    pub fn new(stream: TcpStream, write_timeout: Duration) -> Self {
        Self { stream, stall: StallTimer { timeout: write_timeout, sleep: None, armed: false }, rewrite: None }
    }
}

impl StallTimer {
    /// Passes a write's outcome on; a blocked write arms the timer, which turns it into a
    /// `TimedOut` error once it fires.
    fn watch(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if written.is_ready() {
            self.armed = false;
            return written;
        }
        let timeout = self.timeout;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !self.armed {
            sleep.as_mut().reset(Instant::now() + timeout);
            self.armed = true;
        }
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client took none of the answer in time")))
    }
}

/// Writes the rest of `rewrite`; ready once all of it is out.
fn poll_rewrite(
    stream: &mut TcpStream,
    stall: &mut StallTimer,
    cx: &mut Context<'_>,
    rewrite: &mut Rewrite,
) -> Poll<io::Result<()>> {
    while rewrite.written < rewrite.bytes.len() {
        let written = Pin::new(&mut *stream).poll_write(cx, &rewrite.bytes[rewrite.written..]);
        match ready!(stall.watch(cx, written))? {
            0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            n => rewrite.written += n,
        }
    }
    Poll::Ready(Ok(()))
}

impl AsyncRead for ConnIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let rewrite = match &mut this.rewrite {
            Some(rewrite) => rewrite,
            None => {
                let first = bufs.first().map_or(&[][..], |b| &b[..]);
                let Some(head) = parse_error_head(first) else {
                    let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
                    return this.stall.watch(cx, written);
                };
                if head.at > 0 {
                    let written = Pin::new(&mut this.stream).poll_write(cx, &first[..head.at]);
                    return this.stall.watch(cx, written);
                }
                this.rewrite.insert(Rewrite { bytes: json_error(&head), written: 0, replaces: first.len() })
            }
        };
        ready!(poll_rewrite(&mut this.stream, &mut this.stall, cx, rewrite))?;
        let replaces = rewrite.replaces;
        this.rewrite = None;
        Poll::Ready(Ok(replaces))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The statuses hyper answers by itself, with the error code and message we send instead.
const PARSE_ERRORS: [(&[u8], &str, &str); 3] = [
    (b" 400 Bad Request", "malformed_request", "the request is not valid HTTP/1.1"),
    (b" 414 URI Too Long", "uri_too_long", "the URL is longer than 65534 bytes"),
    (
        b" 431 Request Header Fields Too Large",
        "headers_too_large",
        "the request has more than 100 headers or its head is too large",
    ),
];

/// The error code and message of a request head refused with `status` (400, 414 or 431; any
/// other status is taken for a 400), for the heads [`super::streams`] parses itself.
pub fn parse_error(status: axum::http::StatusCode) -> (&'static str, &'static str) {
    let status_line = format!(" {} {}", status.as_str(), status.canonical_reason().unwrap_or(""));
    let (_, code, message) =
        PARSE_ERRORS.iter().find(|(line, ..)| *line == status_line.as_bytes()).unwrap_or(&PARSE_ERRORS[0]);
    (code, message)
}

/// hyper's `date` value: an IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`.
const DATE_LEN: usize = 29;

/// The parts of hyper's bare error head: `HTTP/1.x <status>`, then `connection: close` (not in
/// HTTP/1.0 answers), `content-length: 0` and `date`, in this order.
struct ErrorHead<'a> {
    at: usize,
    status_line: &'a [u8],
    date: &'a [u8],
    code: &'static str,
    message: &'static str,
}

/// hyper's bare error head, when `buf` ends with one.
fn parse_error_head(buf: &[u8]) -> Option<ErrorHead<'_>> {
    let rest = buf.strip_suffix(b"\r\n\r\n")?;
    let (rest, date) = rest.split_at_checked(rest.len().checked_sub(DATE_LEN)?)?;
    let rest = rest.strip_suffix(b"\r\ncontent-length: 0\r\ndate: ")?;
    let rest = rest.strip_suffix(b"\r\nconnection: close").unwrap_or(rest);
    PARSE_ERRORS.iter().find_map(|&(status, code, message)| {
        let before = rest.strip_suffix(status)?;
        let before = before.strip_suffix(b"HTTP/1.1").or_else(|| before.strip_suffix(b"HTTP/1.0"))?;
        let at = before.len();
        Some(ErrorHead { at, status_line: &rest[at..], date, code, message })
    })
}

/// The answer written instead of hyper's head: same status and date, a JSON error body, and the
/// connection closed after it.
fn json_error(head: &ErrorHead<'_>) -> Vec<u8> {
    let body = serde_json::json!({"error": head.code, "message": head.message}).to_string();
    let mut answer = Vec::with_capacity(160 + body.len());
    answer.extend_from_slice(head.status_line);
    answer.extend_from_slice(b"\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: ");
    answer.extend_from_slice(body.len().to_string().as_bytes());
    answer.extend_from_slice(b"\r\ndate: ");
    answer.extend_from_slice(head.date);
    answer.extend_from_slice(b"\r\n\r\n");
    answer.extend_from_slice(body.as_bytes());
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Sun, 29 Nov 2026 10:09:46 GMT";

    #[test]
    fn hyper_error_heads_are_found_at_the_end_of_a_write_and_nothing_else_is() {
        let head =
            format!("HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n");
        let parsed = parse_error_head(head.as_bytes()).expect("hyper's head");
        assert_eq!(parsed.at, 0);
        let answer = String::from_utf8(json_error(&parsed)).expect("UTF-8");
        let (answer_head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(answer_head.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\n"));
        assert!(answer_head.contains(&format!("content-length: {}\r\n", body.len())), "{answer_head}");
        let body: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(body["error"], "uri_too_long");

        let after = format!(
            "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"
        );
        assert_eq!(parse_error_head(after.as_bytes()).map(|h| h.at), after.find("HTTP/1.0 400"));

        for ours in [
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\ndate: {DATE}\r\n\r\n"),
            format!("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"),
            format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"
            ),
            "HTTP/1.1 100 Continue\r\n\r\n".to_owned(),
            String::new(),
        ] {
            assert!(parse_error_head(ours.as_bytes()).is_none(), "{ours}");
        }
    }
}
