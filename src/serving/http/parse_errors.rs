//! Requests that are not HTTP enough to reach a handler — a request line over hyper's 64 KiB
//! limit (414), a head over its buffer or with more than 100 headers (431), a malformed head
//! (400) — are answered by hyper
//! itself with an empty body, before any route or middleware runs, and hyper offers no hook
//! for that answer. [`JsonParseErrors`] wraps each accepted connection and gives those answers
//! the API's JSON error shape: it recognizes hyper's automatic response (one of those three
//! statuses, `content-length: 0`, no body — a response no handler here writes, since every
//! API error carries a JSON body) and writes `{"error", "detail"}` in its place. Hyper closes
//! the connection after such an answer, so nothing follows it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::ApiError;

/// A listener whose connections answer unparsable requests in JSON.
pub struct Listener(pub TcpListener);

impl axum::serve::Listener for Listener {
    type Io = JsonParseErrors<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (JsonParseErrors::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection that rewrites hyper's empty parse-error responses as JSON errors.
pub struct JsonParseErrors<S> {
    io: S,
    /// The JSON response still to write, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S> JsonParseErrors<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            replacement: None,
        }
    }
}

/// hyper's automatic heads are a status line, `content-length` and `date`: well under this.
const AUTOMATIC_HEAD_MAX: usize = 256;

/// The JSON response standing for hyper's automatic `head`, if `head` is one. Every response
/// the server writes passes here: the status and the length are checked first, so any other
/// response costs a few byte comparisons.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let error = match status {
        b"400" => ApiError::bad_request("the request is not a valid HTTP/1.1 request head"),
        b"414" => ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "the request line is longer than the server's 65,534-byte limit",
        ),
        b"431" => ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "the request's head is too large: over about 400 KB, or more than 100 headers",
        ),
        _ => return None,
    };
    if head.len() > AUTOMATIC_HEAD_MAX {
        return None;
    }
    let head = std::str::from_utf8(head).ok()?;
    let automatic = head.ends_with("\r\n\r\n")
        && head.matches("\r\n\r\n").count() == 1
        && head
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 0\r\n");
    if !automatic {
        return None;
    }
    let body = error.body();
    let reason = error.status.canonical_reason().unwrap_or("");
    Some(
        format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            error.status.as_u16(),
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Writes what is left of the replacement response.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if let Some(json) = replacement(buf) {
            this.replacement = Some((json, 0));
            // The automatic head is consumed whole; the JSON goes out now or on flush.
            let _ = this.poll_replacement(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        let head = bufs.iter().find(|b| !b.is_empty());
        let body = bufs.iter().filter(|b| !b.is_empty()).nth(1);
        if let (Some(head), None) = (head, body)
            && let Some(json) = replacement(head)
        {
            this.replacement = Some((json, 0));
            let _ = this.poll_replacement(cx)?;
            return Poll::Ready(Ok(head.len()));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::replacement;

    #[test]
    fn only_hyper_s_empty_parse_error_heads_are_replaced() {
        let auto = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let json = String::from_utf8(replacement(auto).unwrap()).unwrap();
        assert!(json.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{json}");
        let body = json.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "uri_too_long");
        assert!(json.contains(&format!("content-length: {}\r\n", body.len())));
        for status in ["400 Bad Request", "431 Request Header Fields Too Large"] {
            let head = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            assert!(replacement(head.as_bytes()).is_some(), "{status}");
        }
        // A handler's answers, with a body or another status, pass through untouched.
        for other in [
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "{\"error\":\"HTTP/1.1 414\"}",
        ] {
            assert!(replacement(other.as_bytes()).is_none(), "{other}");
        }
    }
}
