//! The public listener: one worker thread per CPU, each with its own single-threaded
//! runtime; one acceptor hands new connections to the workers in turn (connection cap
//! shared), optional TLS, hyper-util's HTTP/1.1 + h2c server with header-read timeout and
//! HTTP/2 bounds, and graceful shutdown (stop accepting, ask connections to close, drain
//! within `shutdown_grace`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::forward::Peer;
use crate::metrics::Outcome;
use crate::state::Shared;

/// The answer to a connection past `max_connections`, written before reading anything.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n\
content-length: 22\r\n\r\n{\"error\":\"overloaded\"}";

/// How long writing the overload answer may take before the connection is just closed.
const OVERLOAD_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Waits this long after an accept error (e.g. out of file descriptors) before the next
/// accept, instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

thread_local! {
    /// Which worker this thread is (0 outside the workers): picks its upstream clients.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The worker the current thread is, for per-worker state.
pub fn worker_index() -> usize {
    WORKER.with(|w| w.get())
}

/// How many workers: one per CPU the process may use (this honours cgroup CPU quotas,
/// so a sidecar limited to one CPU runs one worker).
pub fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How many accepted connections may wait for a busy worker before the acceptor waits too
/// (and new connections wait in the kernel's backlog).
const HANDOFF_QUEUE: usize = 256;

/// An accepted connection on its way to a worker.
type Handoff = (std::net::TcpStream, SocketAddr);

/// Serves `listener` with `shared.workers()` threads until `shutdown` completes, then
/// drains. Thread per core: each worker runs its own single-threaded runtime and forwards
/// through its own connection pool, so a request never wakes another thread. This task
/// accepts and hands each connection to the next worker in turn: left to the kernel, a
/// burst of connections all went to whichever worker woke first, and one thread carried
/// the load of two. Only the connection count, dedup, metrics and the config are shared.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    let mut inboxes = Vec::new();
    for index in 0..shared.workers() {
        let (inbox, arrivals) = mpsc::channel::<Handoff>(HANDOFF_QUEUE);
        let (shared, open) = (shared.clone(), open.clone());
        let worker = std::thread::Builder::new()
            .name(format!("hookwall-worker-{index}"))
            .spawn(move || {
                WORKER.with(|w| w.set(index));
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(worker(arrivals, shared, open)),
                    Err(err) => tracing::error!(error = %err, "cannot start a worker runtime"),
                }
            });
        match worker {
            Ok(worker) => {
                workers.push(worker);
                inboxes.push(inbox);
            }
            Err(err) => tracing::error!(error = %err, "cannot start a worker thread"),
        }
    }

    let mut shutdown = std::pin::pin!(shutdown);
    let mut turn = 0;
    while !inboxes.is_empty() {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(peer = %addr, error = %err, "cannot hand a connection to a worker");
                continue;
            }
        };
        let mut handoff = (stream, addr);
        while !inboxes.is_empty() {
            turn = (turn + 1) % inboxes.len();
            match inboxes[turn].send(handoff).await {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) => {
                    tracing::error!("a worker stopped; the others take its share");
                    inboxes.remove(turn);
                    handoff = back;
                }
            }
        }
    }
    // Closing the listener and the inboxes: each worker serves what it was handed, then
    // drains.
    drop(listener);
    drop(inboxes);
    let _ = tokio::task::spawn_blocking(move || {
        for worker in workers {
            let _ = worker.join();
        }
    })
    .await;
}

/// One worker: serves the connections handed to it until its inbox closes, then drains
/// them within the grace.
async fn worker(
    mut arrivals: mpsc::Receiver<Handoff>,
    shared: Arc<Shared>,
    open: Arc<AtomicUsize>,
) {
    let graceful = GracefulShutdown::new();
    while let Some((stream, addr)) = arrivals.recv().await {
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(peer = %addr, error = %err, "worker cannot take the connection");
                continue;
            }
        };
        connection(stream, addr, &shared, &open, &graceful);
    }

    let grace = shared.live().limits().shutdown_grace;
    let connections = graceful.count();
    tracing::info!(connections, grace = ?grace, "draining");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            requests = shared.metrics.in_flight_requests.get(),
            "shutdown_grace ran out: in-flight requests were cut off"
        );
    }
}

/// Serves one accepted connection in a task of its own, or refuses it past
/// `max_connections`.
fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    shared: &Arc<Shared>,
    open: &Arc<AtomicUsize>,
    graceful: &GracefulShutdown,
) {
    let live = shared.live();
    let limits = live.limits().clone();
    let tls = live.tls.clone();
    drop(live);
    let _ = stream.set_nodelay(true);

    if open.load(Ordering::Acquire) >= limits.max_connections {
        shared.unmatched.request(Outcome::Overloaded);
        tracing::warn!(peer = %addr, outcome = Outcome::Overloaded.label(), "connection refused: max_connections reached");
        tokio::spawn(async move {
            match tls {
                None => refuse(stream).await,
                Some(acceptor) => {
                    let handshake = tls_handshake(&acceptor, stream, &limits, addr);
                    if let Some(stream) = handshake.await {
                        refuse(stream).await;
                    }
                }
            }
        });
        return;
    }
    let guard = ConnectionGuard::new(open.clone());
    let builder = builder(&limits);
    let watcher = graceful.watcher();
    let shared = shared.clone();
    let peer = Arc::new(Peer::new(addr, tls.is_some()));
    tokio::spawn(async move {
        let _guard = guard;
        let service = service_fn(move |request| {
            let (shared, peer) = (shared.clone(), peer.clone());
            async move { Ok::<_, Infallible>(crate::pipeline::handle(&shared, request, &peer).await) }
        });
        let result = match tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                watcher.watch(conn.into_owned()).await
            }
            Some(acceptor) => {
                let Some(stream) = tls_handshake(&acceptor, stream, &limits, addr).await else {
                    return;
                };
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                watcher.watch(conn.into_owned()).await
            }
        };
        if let Err(err) = result {
            tracing::debug!(peer = %addr, error = %err, "connection ended with an error");
        }
    });
}

/// HTTP/1.1 and h2c (by preface) with the configured bounds. hyper's own header caps are
/// set above the configured ones, so requests just past a limit reach the pipeline and are
/// answered (and counted) there; only far larger ones are refused by hyper directly.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers.saturating_mul(2).max(100))
        .max_buf_size((limits.max_header_bytes.saturating_mul(2) + 4096).max(16 * 1024));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(
            u32::try_from(limits.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        )
        // Bounds what a client resetting streams in a loop can cost (CVE-2023-44487).
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    builder
}

/// The TLS handshake within `header_read_timeout`; `None` (logged at debug) if it failed
/// or took too long.
async fn tls_handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    limits: &Limits,
    addr: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            tracing::debug!(peer = %addr, error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(peer = %addr, "TLS handshake timed out");
            None
        }
    }
}

async fn refuse(mut stream: impl AsyncWrite + Unpin) {
    let write = async {
        stream.write_all(OVERLOADED).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(OVERLOAD_WRITE_TIMEOUT, write).await;
}

/// Counts an open connection until dropped.
struct ConnectionGuard(Arc<AtomicUsize>);

impl ConnectionGuard {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard(open)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
