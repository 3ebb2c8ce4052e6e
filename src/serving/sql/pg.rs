//! The PostgreSQL wire protocol (`serving.pg-listen`): pgwire's server, with
//! datafusion-postgres's query handlers (simple and extended protocol: prepared statements,
//! parameters, binary results; `SET`/`SHOW`, transactions and cursors as clients send them)
//! over [`super::SqlEngine`]'s session, and lambdaflow's own parts around them:
//!
//! - startup: without `serving.token` any user name is accepted; with it, the token is the
//!   password, proved by SCRAM-SHA-256 as PostgreSQL does by default (the password never
//!   crosses the wire; with a certificate, SCRAM-SHA-256-PLUS binds the proof to the TLS
//!   connection); TLS with `serving.pg-tls-cert` and `pg-tls-key` for the clients that ask
//!   for it;
//! - a hook that refuses every statement but reads with SQLSTATE `25006`, naming it;
//! - errors rewritten to PostgreSQL's classes ([`super::SqlError`]) with the position of a
//!   syntax error, instead of `XX000` for all;
//! - a thread per connection, as PostgreSQL has a process per connection (`connection`);
//! - a prepared key lookup (`WHERE <key> = $1`) understood once and answered from the
//!   serving index with each execution's parameters, without binding them into the plan or
//!   planning it ([`tables::KeyLookup`]);
//! - `serving.sql-timeout` as each connection's default `statement_timeout`, and cancel
//!   requests (psql's Ctrl-C), bounding a query while it is planned and while its rows are
//!   computed and sent (`Bounded`).
//!
//! A malformed message or a dropped connection ends that connection only (pgwire 0.41's
//! decoder panics on some malformed messages, a truncated Parse for one: the panic is caught
//! on the connection's thread and logged, and the other connections go on).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::{Debug, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, DataFusionError, ParamValues, ScalarValue};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser as SqlParser, ParserError};
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser as DfParser};
use futures::{FutureExt, Sink, StreamExt};
use pgwire::api::Type;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password, random_nonce};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::QueryParser;
use pgwire::api::stmt::StoredStatement;
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager,
    DEFAULT_NAME, ErrorHandler, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::extendedquery::Parse;
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls;
use pgwire::types::format::FormatOptions;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::keys::Keys;
use super::subquery::{self, Subqueries};
use super::{SqlEngine, SqlError, is_read, names, tables, texts};
use crate::error::{Error, Result};

/// Binds `serving.pg-listen`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::config(format!(
            "serving.pg-listen {addr}: cannot listen: {e} (another server on the port? 5432 is \
             PostgreSQL's own)"
        ))
    })
}

/// The TLS side of `serving.pg-tls-cert` and `pg-tls-key` (PEM files) and the certificate's
/// PEM (for SCRAM's channel binding), or an error naming the file and what is wrong with it.
pub fn tls(cert: &Path, key: &Path) -> Result<(TlsAcceptor, Vec<u8>)> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
    let pem = read(cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::config(format!("serving.pg-tls-cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "serving.pg-tls-cert {}: no PEM certificate in it",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| Error::config(format!("serving.pg-tls-key {}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key_der))
    .map_err(|e| {
        Error::config(format!(
            "serving.pg-tls-cert {} and pg-tls-key {}: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok((TlsAcceptor::from(Arc::new(config)), pem))
}

/// Serves `engine` over the PostgreSQL protocol on `listener` until `stop` (with TLS for the
/// clients that ask, when `tls` is given).
pub async fn serve(
    listener: TcpListener,
    engine: &SqlEngine,
    token: Option<String>,
    tls: Option<(TlsAcceptor, Vec<u8>)>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let (tls, cert_pem) = tls.unzip();
    let handlers = Arc::new(Handlers::new(engine, token, cert_pem));
    let threads = Arc::new(AtomicUsize::new(0));
    let addr = listener.local_addr().ok();
    info!(
        ?addr,
        "serving layer: PostgreSQL protocol (database `lambdaflow`)"
    );
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    connection(socket, peer, tls.clone(), Arc::clone(&handlers), &threads);
                }
                // Out of file descriptors and the like: the next accept may work.
                Err(e) => {
                    warn!("PostgreSQL protocol: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Connections served on a thread of their own at once; more share the runtime's workers.
const CONNECTION_THREADS: usize = 128;

/// Serves one connection, as PostgreSQL does, on a thread of its own (up to
/// [`CONNECTION_THREADS`]): the thread waits on that socket alone, and the kernel shares the
/// cores between connections, so a request is answered as soon as its thread runs — not after
/// the other connections' requests a shared worker holds (with 8 clients on 2 cores, a
/// runtime's workers put a few per cent of point lookups past 1 ms). A query's plan still runs
/// on the runtime's workers ([`OnWorkers`]); the thread parses, plans and sends.
fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    handlers: Arc<Handlers>,
    threads: &Arc<AtomicUsize>,
) {
    let serve = move |socket: TcpStream, own_thread: bool| async move {
        // pgwire's decoders can panic on a malformed message (a truncated Parse, for one):
        // that ends this connection, and only it.
        let conn = super::wire::process(socket, tls, handlers, own_thread);
        let conn = std::panic::AssertUnwindSafe(conn);
        match conn.catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(%peer, "PostgreSQL connection ended: {e}"),
            Err(_) => warn!(
                %peer,
                "PostgreSQL connection closed: a message from it could not be decoded (pgwire \
                 panicked on it; see the panic above)"
            ),
        }
    };
    if threads.fetch_add(1, Ordering::SeqCst) >= CONNECTION_THREADS {
        threads.fetch_sub(1, Ordering::SeqCst);
        tokio::spawn(serve(socket, false));
        return;
    }
    let count = Arc::clone(threads);
    let thread = socket.into_std().and_then(|socket| {
        std::thread::Builder::new()
            .name("lambdaflow-pg".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let served = runtime.and_then(|rt| {
                    rt.block_on(async {
                        serve(TcpStream::from_std(socket)?, true).await;
                        Ok(())
                    })
                });
                if let Err(e) = served {
                    warn!(%peer, "PostgreSQL connection closed: its thread cannot run: {e}");
                }
                count.fetch_sub(1, Ordering::SeqCst);
            })
    });
    if let Err(e) = thread {
        threads.fetch_sub(1, Ordering::SeqCst);
        warn!(%peer, "PostgreSQL connection closed: no thread for it: {e}");
    }
}

/// `inner` polled with the main runtime entered: the tasks DataFusion spawns to run a plan
/// (a partition's, a repartition's) go to the runtime's workers, which share all the cores,
/// instead of to the connection's own thread.
struct OnWorkers<F> {
    workers: Handle,
    inner: F,
}

impl<F: std::future::Future + Unpin> std::future::Future for OnWorkers<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = self.workers.enter();
        Pin::new(&mut self.inner).poll(cx)
    }
}

impl<S: futures::Stream + Unpin> futures::Stream for OnWorkers<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let _entered = self.workers.enter();
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// What pgwire calls for each connection.
struct Handlers {
    session: Arc<Bounded>,
    startup: Arc<Startup>,
    cancel: Arc<Cancel>,
}

impl Handlers {
    /// `cert_pem`: the server's certificate when TLS is on (for SCRAM's channel binding).
    fn new(engine: &SqlEngine, token: Option<String>, cert_pem: Option<Vec<u8>>) -> Self {
        let ctx = engine.context();
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ReadOnly),
            Arc::new(Answered),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let connections = Arc::new(ConnectionManager::new());
        // One sequence of backend PIDs for all connections: a cancel request names its
        // connection by its PID (and secret key).
        let pids = Arc::new(RandomPidSecretKeyGenerator::default());
        let auth = match token {
            None => Auth::Open(Arc::new(Open {
                connections: Arc::clone(&connections),
                pids: Arc::clone(&pids),
            })),
            Some(t) => Auth::Scram(Scram::new(&t, cert_pem, Arc::clone(&connections), pids)),
        };
        let startup = Startup {
            auth,
            timeout_ms: engine.timeout().as_millis().to_string(),
        };
        let running = Arc::new(Running::default());
        let inner = Arc::new(DfSessionService::new_with_hooks(Arc::clone(&ctx), hooks));
        Self {
            session: Arc::new(Bounded {
                keys: super::catalog::keys_of(&ctx),
                parser: Arc::new(PgNamed(inner.query_parser())),
                inner,
                workers: Handle::current(),
                ctx,
                running: Arc::clone(&running),
            }),
            startup: Arc::new(startup),
            cancel: Arc::new(Cancel {
                pgwire: DefaultCancelHandler::new(connections),
                running,
            }),
        }
    }
}

/// What the server tells a client at startup: a PostgreSQL version clients accept, UTC, and
/// that every transaction is read-only.
fn parameters() -> DefaultServerParameterProvider {
    let mut p = DefaultServerParameterProvider::default();
    p.server_version = super::server::SERVER_VERSION.into();
    p.time_zone = "UTC".into();
    p.default_transaction_read_only = true;
    p
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.session)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.session)
    }

    /// One per connection: a SCRAM exchange keeps its state in its handler.
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(ConnectionStartup {
            auth: match &self.startup.auth {
                Auth::Open(open) => ConnectionAuth::Open(Arc::clone(open)),
                Auth::Scram(scram) => ConnectionAuth::Scram(Box::new(scram.handler())),
            },
            timeout_ms: self.startup.timeout_ms.clone(),
        })
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(Classify)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

/// The key of a connection's `statement_timeout` in pgwire's client metadata, as
/// datafusion-postgres's `SET`/`SHOW` hook reads and writes it.
const TIMEOUT_KEY: &str = "statement_timeout_ms";

/// How connections start: authentication, and `serving.sql-timeout` as the connection's
/// `statement_timeout` (a client's `SET statement_timeout` overrides it).
struct Startup {
    auth: Auth,
    timeout_ms: String,
}

/// With or without the token.
enum Auth {
    Open(Arc<Open>),
    Scram(Scram),
}

/// SCRAM-SHA-256 with the token as every user's password.
struct Scram {
    token: Arc<Token>,
    /// The server's certificate (PEM), when TLS is on: SCRAM-SHA-256-PLUS is offered too.
    cert_pem: Option<Vec<u8>>,
    connections: Arc<ConnectionManager>,
    pids: Arc<RandomPidSecretKeyGenerator>,
}

impl Scram {
    fn new(
        token: &str,
        cert_pem: Option<Vec<u8>>,
        connections: Arc<ConnectionManager>,
        pids: Arc<RandomPidSecretKeyGenerator>,
    ) -> Self {
        let token = Arc::new(Token::new(token));
        // Channel binding hashes the certificate with its signature's hash: a certificate
        // pgwire cannot do that for is still served, with SCRAM-SHA-256 alone.
        let cert_pem = cert_pem.filter(|pem| {
            let mut probe = ScramAuth::new(Arc::clone(&token) as Arc<dyn AuthSource>);
            probe
                .configure_certificate(pem)
                .inspect_err(|e| {
                    warn!("serving.pg-tls-cert: SCRAM-SHA-256-PLUS (channel binding) is off: {e}")
                })
                .is_ok()
        });
        Self {
            token,
            cert_pem,
            connections,
            pids,
        }
    }

    /// A connection's handler (pgwire's SASL handler holds the state of one exchange).
    fn handler(&self) -> SASLAuthStartupHandler<DefaultServerParameterProvider> {
        let mut scram = ScramAuth::new(Arc::clone(&self.token) as Arc<dyn AuthSource>);
        scram.set_iterations(SCRAM_ITERATIONS);
        if let Some(pem) = &self.cert_pem {
            // Accepted by `new` already.
            let _ = scram.configure_certificate(pem);
        }
        SASLAuthStartupHandler::new(Arc::new(parameters()))
            .with_scram(scram)
            .with_connection_manager(Arc::clone(&self.connections))
            .with_pid_secret_key_generator(Arc::clone(&self.pids) as Arc<dyn PidSecretKeyGenerator>)
    }
}

/// One connection's startup.
struct ConnectionStartup {
    auth: ConnectionAuth,
    timeout_ms: String,
}

enum ConnectionAuth {
    Open(Arc<Open>),
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

#[async_trait]
impl StartupHandler for ConnectionStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client
            .metadata_mut()
            .entry(TIMEOUT_KEY.into())
            .or_insert_with(|| self.timeout_ms.clone());
        let open = match &self.auth {
            ConnectionAuth::Open(open) => open,
            ConnectionAuth::Scram(h) => return h.on_startup(client, message).await,
        };
        // pgwire's no-op startup, with the server's parameters.
        let PgWireFrontendMessage::Startup(startup) = &message else {
            return Ok(());
        };
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        let (pid, key) = open.pids.generate(&*client);
        client.set_pid_and_secret_key(pid, key.clone());
        // As pgwire registers a connection, so that its cancel handler finds it.
        let (handle, guard) = open.connections.register(pid, key);
        client
            .session_extensions()
            .insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert::<ConnectionGuard>(guard);
        finish_authentication(client, &parameters()).await
    }
}

/// No authentication (no `serving.token`): pgwire's no-op startup, but with the server's
/// parameters ([`parameters`]; pgwire's no-op handler sends its defaults, which name pgwire's
/// version and no read-only transactions). [`ConnectionStartup`] runs it.
struct Open {
    connections: Arc<ConnectionManager>,
    pids: Arc<RandomPidSecretKeyGenerator>,
}

/// SCRAM's iteration count (PostgreSQL's `scram_iterations` default).
const SCRAM_ITERATIONS: usize = 4096;

/// `serving.token` as every user's password, kept only salted and hashed as SCRAM needs it
/// (computed once: 4,096 rounds of PBKDF2 per login would cost every connection).
struct Token {
    salt: Vec<u8>,
    salted: Vec<u8>,
}

impl Token {
    fn new(token: &str) -> Self {
        // 18 random bytes, base64: a salt is any bytes.
        let salt = random_nonce().into_bytes();
        let salted = gen_salted_password(token, &salt, SCRAM_ITERATIONS);
        Self { salt, salted }
    }
}

impl Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[async_trait]
impl AuthSource for Token {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(Some(self.salt.clone()), self.salted.clone()))
    }
}

/// The query running on each connection (by backend pid), to stop it on a cancel request.
#[derive(Default)]
struct Running(Mutex<HashMap<i32, (SecretKey, CancellationToken)>>);

/// Kept in a connection's session extensions: forgets the connection's query when the
/// connection ends.
struct Connected {
    pid: i32,
    running: Weak<Running>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Some(running) = self.running.upgrade() {
            running.queries().remove(&self.pid);
        }
    }
}

impl Running {
    fn queries(&self) -> std::sync::MutexGuard<'_, HashMap<i32, (SecretKey, CancellationToken)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new query on `client`'s connection: its deadline (the connection's
    /// `statement_timeout`) and the token a cancel request fires.
    fn start<C: ClientInfo>(self: &Arc<Self>, client: &C) -> Stop {
        let (pid, key) = client.pid_and_secret_key();
        let token = CancellationToken::new();
        client
            .session_extensions()
            .get_or_insert_with(|| Connected {
                pid,
                running: Arc::downgrade(self),
            });
        self.queries().insert(pid, (key, token.clone()));
        let timeout = client
            .metadata()
            .get(TIMEOUT_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        Stop {
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
            token,
        }
    }
}

/// When a query must stop: its deadline, or a cancel request.
#[derive(Clone)]
struct Stop {
    deadline: Option<tokio::time::Instant>,
    token: CancellationToken,
}

impl Stop {
    /// Waits for the first of the two, and says which as PostgreSQL does (`57014`).
    async fn wait(&self) -> PgWireError {
        let timeout = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            () = timeout => "canceling statement due to statement timeout (serving.sql-timeout, or SET statement_timeout)",
            () = self.token.cancelled() => "canceling statement due to user request",
        };
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "57014".into(),
            message.into(),
        )))
    }

    /// `r`'s rows, ending with the error when the query must stop while they are computed (the
    /// plan's stream is dropped: DataFusion's work stops with it), computed on `workers`.
    fn bound(&self, r: Response, workers: &Handle) -> Response {
        let Response::Query(mut q) = r else {
            return r;
        };
        let rows = std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
        let rows = futures::stream::unfold(Some((rows, self.clone())), |state| async move {
            let (mut rows, stop) = state?;
            tokio::select! {
                r = rows.next() => r.map(|r| (r, Some((rows, stop)))),
                e = stop.wait() => Some((Err(e), None)),
            }
        });
        q.data_rows = Box::pin(OnWorkers {
            workers: workers.clone(),
            inner: Box::pin(rows),
        });
        Response::Query(q)
    }
}

/// datafusion-postgres's handlers, with each query bounded by its deadline and a cancel
/// request — while it is planned and while its rows are computed and sent (pgwire's own
/// cancel and datafusion-postgres's timeout stop at the planning).
struct Bounded {
    inner: Arc<DfSessionService>,
    parser: Arc<PgNamed>,
    /// The main runtime, where plans run ([`OnWorkers`]).
    workers: Handle,
    /// The engine's session (the prepared key lookups' expressions are made in it).
    ctx: Arc<SessionContext>,
    /// Its catalog's functions, which the wire writes `regproc` values by ([`texts`]).
    keys: Option<Arc<Keys>>,
    running: Arc<Running>,
}

#[async_trait]
impl SimpleQueryHandler for Bounded {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(answer) = self.simple_lookup(client, query).await {
            return answer.map(|r| vec![r]);
        }
        let stop = self.running.start(client);
        let mut answered = super::planned(query, &self.ctx);
        // At most twice rewritten into a query DataFusion plans ([`again`]).
        let mut rewritten = 0;
        let responses = loop {
            let run = OnWorkers {
                workers: self.workers.clone(),
                inner: SimpleQueryHandler::do_query(&*self.inner, client, &answered),
            };
            let responses = tokio::select! {
                r = run => r,
                e = stop.wait() => return Err(e),
            };
            match responses {
                Err(e) if rewritten < 2 => match again(&answered, &e, &self.ctx) {
                    Some(q) => {
                        answered = Cow::Owned(q);
                        rewritten += 1;
                    }
                    None => return Err(e),
                },
                r => break r?,
            }
        };
        Ok(pg_names(query, responses)
            .into_iter()
            .map(|r| stop.bound(texts::pg_text(r, self.keys.as_ref()), &self.workers))
            .collect())
    }
}

/// `sql` rewritten into a query DataFusion plans, for an `error` of a query PostgreSQL
/// runs: two columns of one name ([`names::aliased`]), a correlated scalar subquery without
/// an aggregate ([`subquery::aggregated`]); `None` for any other error.
fn again(sql: &str, error: &PgWireError, ctx: &SessionContext) -> Option<String> {
    if names::duplicate_names(error) {
        names::aliased(sql)
    } else if subquery::refused(error) {
        match subquery::aggregated(sql, Subqueries::All, ctx) {
            Cow::Owned(sql) => Some(sql),
            Cow::Borrowed(_) => None,
        }
    } else {
        None
    }
}

/// `responses` (one per statement of `query`) with the columns named as PostgreSQL names
/// them ([`names`]), from the statements as the client wrote them. The query is parsed again
/// only when a column's name may differ: one with more than an identifier's characters.
fn pg_names(query: &str, mut responses: Vec<Response>) -> Vec<Response> {
    let differ = responses.iter().any(|r| match r {
        Response::Query(q) => q.row_schema.iter().any(|f| names::may_differ(f.name())),
        _ => false,
    });
    if !differ {
        return responses;
    }
    let Ok(statements) = SqlParser::parse_sql(&PostgreSqlDialect {}, query) else {
        return responses;
    };
    if statements.len() == responses.len() {
        for (statement, r) in statements.iter().zip(&mut responses) {
            if let Response::Query(q) = r {
                let fields = names::pg_names(statement, q.row_schema.to_vec());
                q.row_schema = Arc::new(fields);
            }
        }
    }
    responses
}

/// datafusion-postgres's parser, describing a statement's columns by PostgreSQL's names
/// ([`names`]): the extended protocol's Describe.
struct PgNamed(Arc<DfParser>);

#[async_trait]
impl QueryParser for PgNamed {
    type Statement = <DfParser as QueryParser>::Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.0.parse_sql(client, sql, types).await
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.0.get_parameter_types(statement)
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let fields = self.0.get_result_schema(statement, format)?;
        Ok(match statement {
            (_, Some((statement, _))) => names::pg_names(statement, fields),
            _ => fields,
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for Bounded {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = PgNamed;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    /// datafusion-postgres's parse of the query as it is planned ([`super::planned`]), again
    /// rewritten when DataFusion refuses what PostgreSQL runs ([`again`]), and the statement
    /// kept in the connection's [`Statements`].
    async fn on_parse<C>(&self, client: &mut C, mut message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.clone().unwrap_or_else(|| DEFAULT_NAME.into());
        if let Cow::Owned(query) = super::planned(&message.query, &self.ctx) {
            message.query = query;
        }
        let (named, types, mut query) = (
            message.name.clone(),
            message.type_oids.clone(),
            message.query.clone(),
        );
        let mut message = Some(message);
        // The query, then at most twice rewritten into one DataFusion plans ([`again`]): an
        // error at the parse sends nothing, so the client sees one answer. (A correlated
        // subquery of the catalog without an aggregate is refused at the execution only: it
        // stays an error over the extended protocol.)
        for attempt in 0..3 {
            let parse = message
                .take()
                .unwrap_or_else(|| Parse::new(named.clone(), query.clone(), types.clone()));
            match ExtendedQueryHandler::on_parse(&*self.inner, client, parse).await {
                Err(e) => match (attempt < 2)
                    .then(|| again(&query, &e, &self.ctx))
                    .flatten()
                {
                    Some(q) => query = q,
                    None => return Err(e),
                },
                Ok(()) => break,
            }
        }
        if let Some(Entry::Value(statement)) = client.portal_store().get_statement(&name) {
            Statements::of(client).parsed(&statement);
        }
        Ok(())
    }

    /// The portal's columns, described once per statement and format on the connection
    /// ([`Statements::described`]).
    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let format = &portal.result_column_format;
        let fields = Statements::of(client).described(&portal.statement, format, || {
            self.parser
                .get_result_schema(&portal.statement.statement, Some(format))
        })?;
        Ok(DescribePortalResponse::new(fields.to_vec()))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(answer) = prepared_lookup(&self.ctx, self.keys.as_ref(), client, portal) {
            return answer;
        }
        let stop = self.running.start(client);
        let query = OnWorkers {
            workers: self.workers.clone(),
            inner: ExtendedQueryHandler::do_query(&*self.inner, client, portal, max_rows),
        };
        let response = tokio::select! {
            r = query => r?,
            e = stop.wait() => return Err(e),
        };
        let response = texts::pg_text(response, self.keys.as_ref());
        Ok(stop.bound(response, &self.workers))
    }
}

/// The statements of datafusion-postgres's extended protocol: the query, and its statement
/// and logical plan once parsed.
type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

/// A connection's prepared statements by name, as its Parse messages stored them: for
/// `DEALLOCATE ALL` (pgwire's store cannot list them), and to know once per statement, at its
/// first execution, whether it is a key lookup ([`tables::KeyLookup`]). A statement parsed
/// again under the same name is another statement, told apart by its allocation (a portal
/// bound to the earlier one may still run).
#[derive(Default)]
struct Statements(Mutex<HashMap<String, Known>>);

/// A statement, and what it is once executed: `Some(None)` for any but a key lookup; and its
/// columns as the last portal's format describes them (a statement's plan, and so its
/// columns, are fixed when it is parsed: libpq's Describe before each Execute of a prepared
/// statement reads them again).
struct Known {
    statement: Weak<StoredStatement<DfStatement>>,
    lookup: Option<Option<Arc<tables::KeyLookup>>>,
    described: Option<(Format, Arc<Vec<FieldInfo>>)>,
}

/// Whether two portals ask for their columns in one format.
fn same_format(a: &Format, b: &Format) -> bool {
    match (a, b) {
        (Format::UnifiedText, Format::UnifiedText)
        | (Format::UnifiedBinary, Format::UnifiedBinary) => true,
        (Format::Individual(a), Format::Individual(b)) => a == b,
        _ => false,
    }
}

/// Statements remembered per connection before those closed are forgotten.
const STATEMENTS_KEPT: usize = 64;

impl Statements {
    /// `client`'s connection's.
    fn of(client: &(impl ClientInfo + ?Sized)) -> Arc<Statements> {
        client
            .session_extensions()
            .get_or_insert_with(Statements::default)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A statement Parse stored.
    fn parsed(&self, statement: &Arc<StoredStatement<DfStatement>>) {
        let mut known = self.known();
        if known.len() >= STATEMENTS_KEPT {
            known.retain(|_, k| k.statement.strong_count() > 0);
        }
        known.insert(
            statement.id.clone(),
            Known {
                statement: Arc::downgrade(statement),
                lookup: None,
                described: None,
            },
        );
    }

    /// The names of the statements forgotten: `name`'s, or all of them.
    fn forget(&self, name: Option<&str>) -> Vec<String> {
        let mut known = self.known();
        match name {
            Some(n) => known.remove_entry(n).map(|(n, _)| n).into_iter().collect(),
            None => known.drain().map(|(n, _)| n).collect(),
        }
    }

    /// The columns of `statement` in `format`, as `describe` gives them: described once per
    /// statement and format on this connection.
    fn described(
        &self,
        statement: &Arc<StoredStatement<DfStatement>>,
        format: &Format,
        describe: impl FnOnce() -> PgWireResult<Vec<FieldInfo>>,
    ) -> PgWireResult<Arc<Vec<FieldInfo>>> {
        let this = |k: &&mut Known| std::ptr::eq(k.statement.as_ptr(), Arc::as_ptr(statement));
        {
            let mut known = self.known();
            if let Some((f, fields)) = known
                .get_mut(&statement.id)
                .filter(this)
                .and_then(|k| k.described.as_ref())
                && same_format(f, format)
            {
                return Ok(Arc::clone(fields));
            }
        }
        let fields = Arc::new(describe()?);
        if let Some(k) = self.known().get_mut(&statement.id).filter(this) {
            k.described = Some((format.clone(), Arc::clone(&fields)));
        }
        Ok(fields)
    }

    /// The key lookup `statement` is, if it is one.
    fn lookup(
        &self,
        statement: &Arc<StoredStatement<DfStatement>>,
        ctx: &SessionContext,
    ) -> Option<Arc<tables::KeyLookup>> {
        let look = || match &statement.statement {
            (_, Some((s, plan))) if is_read(s) => tables::KeyLookup::of(plan, ctx).map(Arc::new),
            _ => None,
        };
        let mut known = self.known();
        match known
            .get_mut(&statement.id)
            .filter(|k| std::ptr::eq(k.statement.as_ptr(), Arc::as_ptr(statement)))
        {
            Some(k) => k.lookup.get_or_insert_with(look).clone(),
            // Not parsed on this connection as this statement: looked at for this execution.
            None => look(),
        }
    }
}

/// A prepared statement that is a key lookup, answered from the serving index with its
/// parameters, without binding them into its plan or planning it; `None` for any other
/// statement (or when anything about it is unexpected: the general path then answers, or
/// names the error).
fn prepared_lookup<C: ClientInfo>(
    ctx: &SessionContext,
    keys: Option<&Arc<Keys>>,
    client: &C,
    portal: &Portal<DfStatement>,
) -> Option<PgWireResult<Response>> {
    if client.transaction_status() == TransactionStatus::Error {
        return None; // The general path refuses it until the transaction ends.
    }
    let lookup = Statements::of(client).lookup(&portal.statement, ctx)?;
    let types: Vec<Option<&DataType>> = lookup.parameter_types().collect();
    let ParamValues::List(params) = deserialize_parameters(portal, &types).ok()? else {
        return None;
    };
    let params: Vec<ScalarValue> = params.into_iter().map(|p| p.value).collect();
    let batch = lookup.run(&params)?.ok()?;
    lookup_response(batch, &portal.result_column_format, client, keys)
}

/// A key lookup's row as the wire's answer, in `format`.
fn lookup_response<C: ClientInfo>(
    batch: RecordBatch,
    format: &Format,
    client: &C,
    keys: Option<&Arc<Keys>>,
) -> Option<PgWireResult<Response>> {
    let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
    let fields = Arc::new(arrow_schema_to_pg_fields(&batch.schema(), format, Some(options)).ok()?);
    let rows = encode_recordbatch(Arc::clone(&fields), batch);
    let rows = Response::Query(QueryResponse::new(fields, futures::stream::iter(rows)));
    Some(Ok(texts::pg_text(rows, keys)))
}

/// A connection's simple queries that are key lookups once their string literals are
/// parameters ([`literals_as_parameters`]), by that text: understood once, as a prepared
/// statement is; `None` for a text that is not a lookup.
#[derive(Default)]
struct SimpleLookups(Mutex<HashMap<String, Option<Arc<tables::KeyLookup>>>>);

/// Texts remembered per connection before all are forgotten.
const SIMPLE_KEPT: usize = 64;

impl Bounded {
    /// A simple query that is a key lookup (`SELECT … FROM customer_totals WHERE customer =
    /// 'k42'`), answered from the serving index, as a prepared one is ([`prepared_lookup`]):
    /// psql, psycopg (which binds its parameters into the text) and Grafana send their
    /// lookups so, and planning each of them would cost many times the lookup. The query with
    /// its literals as parameters ([`literals_as_parameters`]) is planned and looked at once
    /// per connection; each query then costs a scan of its text. `None` for any other query,
    /// or when anything about it is unexpected: the general path then answers, or names the
    /// error.
    async fn simple_lookup<C>(&self, client: &C, query: &str) -> Option<PgWireResult<Response>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if client.transaction_status() == TransactionStatus::Error {
            return None; // The general path refuses it until the transaction ends.
        }
        let (text, params) = literals_as_parameters(query)?;
        let lookups = client
            .session_extensions()
            .get_or_insert_with(SimpleLookups::default);
        let known = lookups
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&text)
            .cloned();
        let lookup = match known {
            Some(lookup) => lookup,
            None => {
                let lookup = if may_be_lookup(&text) {
                    let planned = super::planned(&text, &self.ctx);
                    match self.parser.parse_sql(client, &planned, &[]).await {
                        Ok(Some((_, Some((statement, plan))))) if is_read(&statement) => {
                            tables::KeyLookup::of(&plan, &self.ctx).map(Arc::new)
                        }
                        _ => None,
                    }
                } else {
                    None
                };
                let mut known = lookups.0.lock().unwrap_or_else(|e| e.into_inner());
                if known.len() >= SIMPLE_KEPT {
                    known.clear();
                }
                known.insert(text, lookup.clone());
                lookup
            }
        }?;
        let batch = lookup.run(&params)?.ok()?;
        let response = lookup_response(batch, &Format::UnifiedText, client, self.keys.as_ref())?;
        Some(response.map(|r| pg_names(query, vec![r]).remove(0)))
    }
}

/// Literals a simple query may have to be looked at as a key lookup.
const LITERALS_KEPT: usize = 32;

/// Whether `text` (a query's, its literals parameters) may be a key lookup: one SELECT of one
/// table with a WHERE clause, nothing that makes it another query. The others are not
/// planned a second time to find out; a quoted name that holds such a word only sends a
/// lookup down the general path.
fn may_be_lookup(text: &str) -> bool {
    const OTHER: [&str; 13] = [
        "join",
        "group",
        "order",
        "union",
        "intersect",
        "except",
        "limit",
        "offset",
        "fetch",
        "having",
        "distinct",
        "over",
        "with",
    ];
    let (mut selects, mut wheres) = (0, 0);
    for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if word.eq_ignore_ascii_case("select") {
            selects += 1;
        } else if word.eq_ignore_ascii_case("where") {
            wheres += 1;
        } else if OTHER.iter().any(|o| word.eq_ignore_ascii_case(o)) {
            return false;
        }
    }
    selects == 1 && wheres == 1
}

/// `sql` with its literals as parameters `$1`, `$2`, …, and their values, when it is one
/// SELECT with such literals and no parameter of its own: each parameter cast to the type
/// DataFusion gives the literal — a string `$1::TEXT`, an integer `$2::BIGINT` — so that the
/// statement is planned as the query is, and answers as it does (`'k' || lpad(42::text, 7,
/// '0')` is `$1::TEXT || lpad($2::BIGINT::text, $3::BIGINT, $4::TEXT)`). Other literals
/// (`1.5`, `E'…'`, `$$…$$`) stay in the text; a comment, or a second statement, leaves the
/// query alone. A scan of the text, as PostgreSQL's own lexer finds literals: a lookup's
/// query costs no parse of it (sqlparser's tokenizer would cost more than the lookup).
pub(super) fn literals_as_parameters(sql: &str) -> Option<(String, Vec<ScalarValue>)> {
    let sql = sql.trim();
    let sql = sql.strip_suffix(';').unwrap_or(sql).trim_end();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    let b = sql.as_bytes();
    if !b.get(..6)?.eq_ignore_ascii_case(b"select") || b.get(6).is_some_and(|c| word(*c)) {
        return None;
    }
    let mut text = String::with_capacity(sql.len() + 16);
    let mut values = Vec::new();
    let mut parameter = |text: &mut String, value: ScalarValue, cast: &str| {
        values.push(value);
        let _ = write!(text, "${}::{cast}", values.len());
        // A lookup has a few; a query of many is no lookup (`IN (1, 2, …)`), and is left to
        // the general path instead of being planned twice.
        values.len() <= LITERALS_KEPT
    };
    // `copied`: where the text not yet copied into `text` starts.
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        let after_word = i > 0 && (word(b[i - 1]) || b[i - 1] == b'&');
        match b[i] {
            b'\'' if after_word => return None, // E'…', B'…', X'…', U&'…'
            b'\'' => {
                // A string: its quotes doubled inside.
                let mut value = String::new();
                let mut j = i + 1;
                loop {
                    let end = j + sql[j..].find('\'')?;
                    value.push_str(&sql[j..end]);
                    if b.get(end + 1) == Some(&b'\'') {
                        value.push('\'');
                        j = end + 2;
                    } else {
                        j = end + 1;
                        break;
                    }
                }
                text.push_str(&sql[copied..i]);
                if !parameter(&mut text, ScalarValue::from(value), "TEXT") {
                    return None;
                }
                (i, copied) = (j, j);
            }
            b'"' => {
                // A quoted name, copied as it is.
                i += 1 + sql[i + 1..].find('"')? + 1;
                while b.get(i) == Some(&b'"') {
                    i += 1 + sql[i + 1..].find('"')? + 1;
                }
            }
            b'0'..=b'9' if !after_word => {
                let digits = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                let integer = b.get(digits).is_none_or(|c| !word(*c) && *c != b'.');
                match sql[i..digits].parse::<i64>() {
                    Ok(n) if integer => {
                        text.push_str(&sql[copied..i]);
                        if !parameter(&mut text, ScalarValue::Int64(Some(n)), "BIGINT") {
                            return None;
                        }
                        copied = digits;
                    }
                    // `1.5`, `1e3`, `0x1F`: copied as they are.
                    _ => {}
                }
                i = digits
                    + b[digits..]
                        .iter()
                        .take_while(|c| word(**c) || **c == b'.')
                        .count();
            }
            b'$' if !after_word => return None, // $1, $$…$$
            b';' => return None,                // a second statement
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            _ => i += 1,
        }
    }
    if values.is_empty() {
        return None;
    }
    text.push_str(&sql[copied..]);
    Some((text, values))
}

/// A cancel request: pgwire's (for what it interrupts itself), and the running query's token.
struct Cancel {
    pgwire: DefaultCancelHandler,
    running: Arc<Running>,
}

#[async_trait]
impl CancelHandler for Cancel {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let token = {
            let running = self.running.queries();
            running
                .get(&request.pid)
                .filter(|(key, _)| key.to_bytes() == request.secret_key.to_bytes())
                .map(|(_, t)| t.clone())
        };
        if let Some(t) = token {
            t.cancel();
        }
        self.pgwire.on_cancel_request(request).await;
    }
}

/// Refuses every statement that is not a read, before it is planned.
struct ReadOnly;

fn refuse(statement: &Statement) -> Option<PgWireError> {
    (!is_read(statement)).then(|| user_error(&SqlError::read_only(statement)))
}

fn user_error(e: &SqlError) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".into(), e.code.into(), e.message.clone());
    info.position = e.position.map(|p| p.to_string());
    PgWireError::UserError(Box::new(info))
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        refuse(statement).map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        refuse(statement).map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        refuse(statement).map(Err)
    }
}

/// Statements answered here, before datafusion-postgres plans them:
///
/// - savepoints, which nothing read-only needs to restore: `SAVEPOINT`, `RELEASE` and
///   `ROLLBACK TO` succeed and the transaction goes on (psycopg's nested `transaction()`
///   blocks and SQLAlchemy's type probes on connect send them; datafusion-postgres would end
///   the transaction at a `ROLLBACK TO`, and plan the others as queries);
/// - `DEALLOCATE name` and `DEALLOCATE ALL` of the protocol's prepared statements, as
///   PostgreSQL has them share one namespace with SQL's `PREPARE` (psycopg sends `DEALLOCATE
///   ALL` after a rollback of a transaction in which it prepared statements; DataFusion would
///   look for a statement of its own named `all`);
/// - `SHOW` of the parameters every connection shares ([`super::server::shown`]).
struct Answered;

impl Answered {
    /// The answer's columns (a Describe's), or `None` for a statement not answered here.
    fn columns(statement: &Statement) -> Option<Vec<Field>> {
        if let Some((name, _)) = super::server::shown(statement) {
            return Some(vec![Field::new(name, DataType::Utf8, false)]);
        }
        let answered =
            matches!(statement, Statement::Deallocate { .. }) || savepoint(statement).is_some();
        answered.then(Vec::new)
    }

    fn answer(statement: &Statement, client: &dyn HookClient) -> Option<PgWireResult<Response>> {
        if let Some(tag) = savepoint(statement) {
            return Some(Ok(Response::Execution(Tag::new(tag))));
        }
        if let Some((name, value)) = super::server::shown(statement) {
            return Some(show(&name, value));
        }
        let Statement::Deallocate { name, .. } = statement else {
            return None;
        };
        let store = client.portal_store();
        if name.value.eq_ignore_ascii_case("all") && name.quote_style.is_none() {
            for n in Statements::of(client).forget(None) {
                store.rm_statement(&n);
            }
            return Some(Ok(Response::Execution(Tag::new("DEALLOCATE ALL"))));
        }
        Statements::of(client).forget(Some(&name.value));
        Some(match store.get_statement(&name.value) {
            Some(_) => {
                store.rm_statement(&name.value);
                Ok(Response::Execution(Tag::new("DEALLOCATE")))
            }
            None => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "26000".into(),
                format!("prepared statement \"{}\" does not exist", name.value),
            )))),
        })
    }
}

/// The tag of a savepoint statement, or `None` for any other statement.
fn savepoint(statement: &Statement) -> Option<&'static str> {
    match statement {
        Statement::Savepoint { .. } => Some("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Some("RELEASE"),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Some("ROLLBACK"),
        _ => None,
    }
}

/// `SHOW name`'s answer: one row, one text column.
fn show(name: &str, value: &str) -> PgWireResult<Response> {
    let fields = Arc::new(vec![FieldInfo::new(
        name.to_string(),
        None,
        None,
        Type::TEXT,
        FieldFormat::Text,
    )]);
    let mut row = DataRowEncoder::new(Arc::clone(&fields));
    row.encode_field(&Some(value))?;
    let row = row.take_row();
    Ok(Response::Query(QueryResponse::new(
        fields,
        futures::stream::iter([Ok(row)]),
    )))
}

#[async_trait]
impl QueryHook for Answered {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Answered::answer(statement, client)
    }

    /// A plan of the answer's columns, for the protocol's Describe (the rows come from
    /// [`Answered::answer`] at Execute).
    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let columns = Answered::columns(statement)?;
        Some(
            DFSchema::try_from(Schema::new(columns))
                .map(|schema| {
                    LogicalPlan::EmptyRelation(EmptyRelation {
                        produce_one_row: false,
                        schema: Arc::new(schema),
                    })
                })
                .map_err(|e| PgWireError::ApiError(Box::new(e))),
        )
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Answered::answer(statement, client)
    }
}

/// DataFusion's errors as PostgreSQL classes them (pgwire would send `XX000` for all).
struct Classify;

impl ErrorHandler for Classify {
    fn on_error<C: ClientInfo>(&self, _client: &C, error: &mut PgWireError) {
        let PgWireError::ApiError(e) = error else {
            return;
        };
        let sql = if let Some(df) = e.downcast_ref::<DataFusionError>() {
            SqlError::from_datafusion(df)
        } else if let Some(p) = e.downcast_ref::<ParserError>() {
            SqlError::syntax(p)
        } else {
            SqlError {
                code: "XX000",
                message: e.to_string(),
                position: None,
            }
        };
        *error = user_error(&sql);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simple query's literals become parameters, in order, cast to their types; a query
    /// that is not one SELECT with such literals is left alone.
    #[test]
    fn a_simple_querys_literals_become_parameters() {
        let (text, values) = literals_as_parameters(
            "select \"a\"\"b\" AS \"x'1\", total_amount FROM customer_totals AS t2 \
             WHERE customer = 'k' || lpad(12345::text, 7, 'it''s') AND total_amount > 1.5;",
        )
        .unwrap();
        assert_eq!(
            text,
            "select \"a\"\"b\" AS \"x'1\", total_amount FROM customer_totals AS t2 \
             WHERE customer = $1::TEXT || lpad($2::BIGINT::text, $3::BIGINT, $4::TEXT) \
             AND total_amount > 1.5"
        );
        let int = |n| ScalarValue::Int64(Some(n));
        assert_eq!(
            values,
            [
                ScalarValue::from("k"),
                int(12345),
                int(7),
                ScalarValue::from("it's")
            ]
        );
        // Many literals: no lookup.
        let many = format!("SELECT 1 WHERE 1 IN ({})", vec!["1"; 4_000_000].join(","));
        assert_eq!(literals_as_parameters(&many), None);
        // What may be a lookup, and what may not (planned a second time, or not).
        // A quoted name that holds such a word only sends a lookup the general way.
        assert!(!may_be_lookup(
            "SELECT total_amount, \"order\" FROM t WHERE customer = $1::TEXT"
        ));
        assert!(may_be_lookup(
            "select total_amount, order_id FROM t AS t WHERE customer = $1::TEXT"
        ));
        for other in [
            "SELECT * FROM t",
            "SELECT * FROM t JOIN u ON t.a = u.a WHERE k = $1::TEXT",
            "SELECT * FROM t WHERE k = (SELECT max(k) FROM t WHERE k > $1::TEXT)",
            "SELECT k, count(*) FROM t WHERE k = $1::TEXT GROUP BY k",
            "SELECT * FROM t WHERE k = $1::TEXT ORDER BY k LIMIT $2::BIGINT",
        ] {
            assert!(!may_be_lookup(other), "{other}");
        }
        for other in [
            "SELECT * FROM t WHERE k = $1",
            "SELECT * FROM t WHERE k = 1.5",
            "SELECT * FROM t WHERE k = 99999999999999999999",
            "SELECT * FROM t",
            "SELECT 1; SELECT * FROM t WHERE k = 'a'",
            "SET search_path = 'public'",
            "WITH a AS (SELECT 1) SELECT * FROM t WHERE k = 'a'",
            "selected FROM t WHERE k = 'a'",
            "SELECT * FROM t WHERE k = E'a\\\\b'",
            "SELECT * FROM t WHERE k = $$a$$",
            "SELECT * FROM t WHERE k = 'a' -- 'b'",
            "SELECT * FROM t WHERE k = 'unterminated",
        ] {
            assert_eq!(literals_as_parameters(other), None, "{other}");
        }
    }
}
