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
//!
//! A connection on a thread of its own (pg.rs) also waits for the client's next message as
//! PostgreSQL's backend waits, in the read itself: once started, its socket is read blocking
//! (`Direct`), so a round trip costs a `send` and a `recv` — the client's message wakes the
//! thread straight from the socket, without an `epoll_wait` and the runtime's turn of its
//! reactor before the `recv`. Nothing else runs on that thread between two messages (a query's
//! deadline and cancel live only while it runs), and the answers still go out without
//! blocking: a client that does not read them makes the write wait on the runtime as before,
//! where a query's deadline and a cancel request reach it.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::messages::PgWireFrontendMessage;
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::server::{MaybeTls, negotiate_tls, process_error, process_message};
use socket2::{SockRef, Socket};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use datafusion_postgres::pgwire;

/// How long a client has to finish its startup (pgwire's own bound).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes held before they are written out whether or not the connection reads.
const HELD: usize = 64 * 1024;

/// Serves one connection until the client leaves (or fails its startup in time); `own_thread`
/// when nothing else runs on this thread, so that it may wait in the socket's read.
pub async fn process<H: PgWireServerHandlers>(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: H,
    own_thread: bool,
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
            if own_thread {
                socket.get_mut().read_in_kernel();
            }
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
    /// The TCP socket under `io`, once the connection reads it blocking.
    direct: Option<Direct>,
}

/// A connection's TCP socket (a second descriptor of it), read blocking and written without
/// blocking: the runtime's registration of the socket is used only when a write must wait.
struct Direct {
    socket: Socket,
    /// Whether the socket is in blocking mode now (its descriptors share the mode).
    blocking: bool,
    /// What a read receives, before it is copied into the framing's buffer (whose spare room
    /// is uninitialised, which safe code may not hand to `recv`).
    scratch: Box<[u8; SCRATCH]>,
}

/// Bytes read from the socket at most at once by [`Direct`].
const SCRATCH: usize = 8 * 1024;

impl Direct {
    fn set_blocking(&mut self, blocking: bool) -> io::Result<()> {
        if self.blocking != blocking {
            self.socket.set_nonblocking(!blocking)?;
            self.blocking = blocking;
        }
        Ok(())
    }

    /// Sends what it can of `buf` without waiting; when the socket cannot take more, it is made
    /// non-blocking again, for the runtime to wait on it.
    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.socket.send_with_flags(buf, libc::MSG_DONTWAIT) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.set_blocking(false)?;
                    return Err(e);
                }
                sent => return sent,
            }
        }
    }

    /// Waits in the socket's read until the client sends something (or leaves).
    fn read(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        self.set_blocking(true)?;
        let room = buf.remaining().min(SCRATCH);
        if room == 0 {
            return Ok(());
        }
        loop {
            match (&self.socket).read(&mut self.scratch[..room]) {
                Ok(n) => {
                    buf.put_slice(&self.scratch[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Coalesced<MaybeTls> {
    /// From now on, reads wait in the socket's read (a plain TCP connection's; TLS and Unix
    /// sockets go on through the runtime). Called only on a connection's own thread.
    fn read_in_kernel(&mut self) {
        if self.direct.is_some() {
            return;
        }
        if let MaybeTls::Plain(tcp) = &self.io {
            match SockRef::from(tcp).try_clone() {
                Ok(socket) => {
                    self.direct = Some(Direct {
                        socket,
                        blocking: false,
                        scratch: Box::new([0; SCRATCH]),
                    })
                }
                Err(e) => {
                    tracing::debug!("PostgreSQL connection: reads go on through the runtime: {e}")
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    fn new(io: S) -> Self {
        Coalesced {
            io,
            held: Vec::new(),
            written: 0,
            direct: None,
        }
    }

    /// Writes out all that is held, then flushes the socket.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.held.len() {
            let rest = &self.held[self.written..];
            let sent = match self.direct.as_mut().map(|d| d.send(rest)) {
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => None,
                Some(sent) => Some(sent?),
                None => None,
            };
            let n = match sent {
                Some(n) => n,
                None => ready!(Pin::new(&mut self.io).poll_write(cx, rest))?,
            };
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
        match this.direct.as_mut() {
            Some(direct) => Poll::Ready(direct.read(buf)),
            None => Pin::new(&mut this.io).poll_read(cx, buf),
        }
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

    /// On a TCP socket read blocking: the answers held go out before the read waits, and an
    /// answer larger than the socket takes waits on the runtime (which goes on running other
    /// work meanwhile) until the client reads it, instead of blocking the thread.
    #[test]
    fn a_socket_read_blocking_still_writes_without_blocking() {
        use std::io::Write;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let answer = 16 * 1024 * 1024;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = std::thread::spawn(move || {
                let mut tcp = std::net::TcpStream::connect(addr).unwrap();
                tcp.write_all(b"Sync").unwrap();
                // The answer is not read for a while: the server's write must wait.
                std::thread::sleep(Duration::from_millis(300));
                let mut got = vec![0u8; answer];
                tcp.read_exact(&mut got).unwrap();
                assert!(got.iter().all(|b| *b == 7));
                tcp.write_all(b"Terminate").unwrap();
            });
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ours = Coalesced::new(MaybeTls::Plain(tcp));
            ours.read_in_kernel();
            let mut asked = [0u8; 4];
            ours.read_exact(&mut asked).await.unwrap();
            assert_eq!(&asked, b"Sync");
            assert!(ours.direct.as_ref().unwrap().blocking);

            let ticks = Arc::new(AtomicUsize::new(0));
            let ticker = tokio::spawn({
                let ticks = Arc::clone(&ticks);
                async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        ticks.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
            ours.write_all(&vec![7u8; answer]).await.unwrap();
            ours.flush().await.unwrap();
            assert!(
                !ours.direct.as_ref().unwrap().blocking,
                "the answer never had to wait"
            );
            let mut bye = [0u8; 9];
            ours.read_exact(&mut bye).await.unwrap();
            assert_eq!(&bye, b"Terminate");
            assert!(
                ticks.load(Ordering::SeqCst) > 0,
                "the write blocked the thread instead of waiting on the runtime"
            );
            ticker.abort();
            client.join().unwrap();
        });
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
