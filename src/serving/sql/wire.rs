//! One PostgreSQL connection, with what a round trip answers written once.
//!
//! pgwire's own connection loop (`process_socket`) writes each message that ends a step of the
//! extended protocol — `ParseComplete`, `BindComplete`, `CommandComplete`, `ReadyForQuery` — as
//! a write of its own: a prepared statement's Bind/Execute/Sync costs three `send`s, and wakes
//! the client three times, for one answer. PostgreSQL holds its answers until it goes back to
//! reading the client (its `pq_flush` before it waits for the next command), so a round trip
//! is one write.
//!
//! [`process`] is pgwire's loop with that rule. Everything that speaks the protocol is pgwire's
//! (`negotiate_tls`, `process_message`, `process_error`); only the socket under pgwire's framing
//! changes: [`Coalesced`] keeps what the framing flushes and writes it out when the connection
//! reads again, when it holds `HELD` bytes (a large result streams, it is not buffered
//! whole), or when the connection closes. A client that sends `Flush` instead of `Sync` waits
//! for answers before it writes again: the server then reads, and the answers go out first.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use datafusion_postgres::pgwire;

/// How long a client has to finish its startup (pgwire's own bound).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes held before they are written out whether or not the connection reads.
const HELD: usize = 64 * 1024;

/// Serves one connection until the client leaves (or fails its startup in time).
pub async fn process<H: PgWireServerHandlers>(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: H,
) -> io::Result<()> {
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        socket = negotiate_tls(tcp, tls) => socket?,
    };
    // A direct TLS connection without a certificate configured.
    let Some(socket) = negotiated else {
        return Ok(());
    };
    let parts = socket.into_parts();
    let mut held = FramedParts::new(Coalesced::new(parts.io), parts.codec);
    (held.read_buf, held.write_buf) = (parts.read_buf, parts.write_buf);
    let mut socket = Framed::from_parts(held);

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let msg = if starting {
            tokio::select! {
                _ = &mut startup_timeout => None,
                msg = socket.next() => msg,
            }
        } else {
            socket.next().await
        };
        // The client left (`Terminate`, end of stream) or sent what cannot be decoded.
        let Some(Ok(msg)) = msg else { break };
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        let handled = process_message(
            msg,
            &mut socket,
            Arc::clone(&startup),
            Arc::clone(&simple),
            Arc::clone(&extended),
            Arc::clone(&copy),
            Arc::clone(&cancel),
        )
        .await;
        if let Err(mut e) = handled {
            errors.on_error(&socket, &mut e);
            process_error(&mut socket, e, extended_query).await?;
        }
    }
    // What is still held (a fatal error's message, for one) goes out before the socket closes.
    socket.close().await
}

/// A socket that holds what is flushed until it is read from (see the module's docs).
pub struct Coalesced<S> {
    io: S,
    held: Vec<u8>,
    /// How much of `held` is written out.
    written: usize,
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    fn new(io: S) -> Self {
        Coalesced {
            io,
            held: Vec::new(),
            written: 0,
        }
    }

    /// Writes out all that is held, then flushes the socket.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.held.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.held[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.held.clear();
        self.written = 0;
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.held.is_empty() {
            ready!(this.poll_write_out(cx))?;
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.held.len() >= HELD {
            ready!(this.poll_write_out(cx))?;
        }
        this.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held.len() >= HELD {
            this.poll_write_out(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What is written and flushed is held until the connection reads; reading writes it out
    /// first, in one write, before it waits for the peer.
    #[tokio::test]
    async fn flushed_bytes_go_out_when_the_connection_reads() {
        let (ours, mut peer) = tokio::io::duplex(HELD * 4);
        let mut ours = Coalesced::new(ours);
        ours.write_all(b"BindComplete").await.unwrap();
        ours.flush().await.unwrap();
        ours.write_all(b"+ReadyForQuery").await.unwrap();
        ours.flush().await.unwrap();
        let mut got = [0u8; 64];
        let nothing_yet =
            tokio::time::timeout(Duration::from_millis(50), peer.read(&mut got)).await;
        assert!(nothing_yet.is_err(), "flush wrote out what it should hold");

        peer.write_all(b"Sync").await.unwrap();
        let mut asked = [0u8; 4];
        ours.read_exact(&mut asked).await.unwrap();
        assert_eq!(&asked, b"Sync");
        let n = peer.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"BindComplete+ReadyForQuery");
    }

    /// A large answer streams out as it is written instead of being held whole, and what is
    /// held at the end goes out on shutdown.
    #[tokio::test]
    async fn a_large_answer_streams_and_shutdown_writes_the_rest() {
        let (ours, mut peer) = tokio::io::duplex(HELD);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.unwrap();
            all
        });
        let mut ours = Coalesced::new(ours);
        let row = vec![7u8; 1000];
        for _ in 0..1000 {
            ours.write_all(&row).await.unwrap();
            ours.flush().await.unwrap();
            assert!(ours.held.len() <= HELD + row.len(), "{}", ours.held.len());
        }
        ours.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap().len(), 1_000_000);
    }
}
