//! The public listener: `limits.workers` threads, each with its own single-threaded
//! runtime, fed by an acceptor thread (`accept`) that counts connections against
//! `max_connections`; TLS; HTTP/1.1 and h2c with their bounds; a watchdog per connection
//! (`watchdog`); graceful shutdown.

mod accept;
mod watchdog;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::forward::Peer;
use crate::state::Shared;
use watchdog::{sleep_until_some, watchdog, Activity, Close};

/// How long a connection asked to close for idleness (HTTP/2 GOAWAY) may take to do so.
const IDLE_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Why the public listener stopped serving before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the acceptor")]
    Thread(#[source] std::io::Error),
    #[error("the listener cannot be handed to the acceptor")]
    Listener(#[source] std::io::Error),
    #[error("the listener cannot accept connections any more")]
    Accept(#[source] std::io::Error),
    #[error("every worker stopped")]
    NoWorkers,
}

/// An accepted connection on its way to a worker, with its place under the cap.
struct Handoff {
    stream: std::net::TcpStream,
    addr: SocketAddr,
    slot: accept::Slot,
}

/// Serves `listener` until `shutdown` completes, then drains. The acceptor and the workers
/// run on threads of their own; this future only waits for them. An error if they stopped
/// on their own.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener = listener.into_std().map_err(ServeError::Listener)?;
    let stop = CancellationToken::new();
    let (done, ended) = tokio::sync::oneshot::channel();
    let stopping = stop.clone();
    let acceptor = std::thread::Builder::new()
        .name("hookwall-acceptor".into())
        .spawn(move || {
            let result = match runtime() {
                Ok(runtime) => runtime.block_on(accept::run(listener, shared, stopping)),
                Err(err) => Err(ServeError::Thread(err)),
            };
            let _ = done.send(result);
        })
        .map_err(ServeError::Thread)?;
    let mut ended = std::pin::pin!(ended);
    let result = tokio::select! {
        () = shutdown => {
            stop.cancel();
            ended.await
        }
        result = &mut ended => result,
    };
    let _ = tokio::task::spawn_blocking(move || acceptor.join()).await;
    // No result: the acceptor's thread panicked.
    result.unwrap_or(Err(ServeError::NoWorkers))
}

/// A single-threaded runtime, as the acceptor and each worker run on.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// One worker: serves the connections handed to it until its inbox closes, then drains
/// them, and the forwards that outlived their request, within the grace.
async fn worker(index: usize, mut arrivals: mpsc::Receiver<Handoff>, shared: Arc<Shared>) {
    // Made here, on this thread: what this worker's forwards write stays apart from what
    // the other workers' write.
    let tasks = shared.tasks.of(index).clone();
    // This worker's Redis connection is made here, so its driver runs on this thread.
    if let Some(redis) = &shared.store.redis {
        redis.start(index);
    }
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    while let Some(Handoff { stream, addr, slot }) = arrivals.recv().await {
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(peer = %addr, error = %err, "worker cannot take the connection");
                continue;
            }
        };
        let (shared, stop) = (shared.clone(), stop.clone());
        connections.spawn(async move {
            let _slot = slot;
            connection(stream, addr, index, shared, stop).await;
        });
    }

    let grace = shared.live().limits().shutdown_grace;
    let deadline = Instant::now() + grace;
    stop.cancel();
    connections.close();
    tracing::info!(connections = connections.len(), grace = ?grace, "draining");
    if tokio::time::timeout_at(deadline, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            requests = shared.metrics.in_flight_requests.get(),
            "shutdown_grace ran out: in-flight requests were cut off"
        );
    }
    tasks.close();
    if tokio::time::timeout_at(deadline, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            tasks = tasks.len(),
            "shutdown_grace ran out: forwards that outlived their request were cut off \
             (their ids are released, so the senders' retries go through), or Redis writes \
             of ids' ends (a claim then expires with its lease)"
        );
    }
}

/// Serves one accepted connection: TLS (if configured) within `header_read_timeout`,
/// then HTTP with the connection watchdog.
async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    worker: usize,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let accepted = Instant::now();
    let live = shared.live();
    let limits = live.limits().clone();
    let tls = live.tls.clone();
    drop(live);
    let _ = stream.set_nodelay(true);
    let peer = Arc::new(Peer::new(addr, tls.is_some()));
    let activity = Arc::new(Activity::new(accepted));
    let busy = activity.clone();
    let service = service_fn(move |request| {
        let (shared, peer, busy) = (shared.clone(), peer.clone(), busy.clone());
        async move {
            let _busy = busy.start();
            Ok::<_, Infallible>(crate::pipeline::handle(&shared, worker, request, &peer).await)
        }
    });
    match tls {
        None => serve_http(stream, service, &activity, &limits, &stop, addr).await,
        Some(acceptor) => {
            let handshake = acceptor.accept(stream);
            match tokio::time::timeout_at(accepted + limits.header_read_timeout, handshake).await {
                Ok(Ok(stream)) => {
                    serve_http(stream, service, &activity, &limits, &stop, addr).await;
                }
                Ok(Err(err)) => tracing::debug!(peer = %addr, error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
            }
        }
    }
}

/// HTTP on `io` until the connection ends, the watchdog closes it, or shutdown asks it to
/// close (it then finishes what is in flight; the worker's grace bounds that).
async fn serve_http<I, S>(
    io: I,
    service: S,
    activity: &Arc<Activity>,
    limits: &Limits,
    stop: &CancellationToken,
    addr: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<http_body_util::Full<bytes::Bytes>>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = builder(limits);
    let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(io), service));
    // The watchdog runs beside the connection and wakes only when a limit is due, so the
    // connection's own wake-ups poll one more thing at most (a oneshot).
    let (close, mut closing_reason) = tokio::sync::oneshot::channel::<Close>();
    tokio::spawn(watchdog(
        activity.clone(),
        (limits.header_read_timeout, limits.idle_timeout),
        stop.clone(),
        close,
    ));
    // Set once the connection was asked to close for idleness: it is dropped if it has
    // not closed by then.
    let mut give_up: Option<Instant> = None;
    let mut asked = false;
    loop {
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(peer = %addr, error = %err, "connection ended with an error");
                }
                return;
            }
            reason = &mut closing_reason, if !asked => {
                asked = true;
                match reason {
                    Ok(Close::Silent) => {
                        // Never sent a complete request head: nothing to finish, just close.
                        tracing::debug!(peer = %addr, "no request head within header_read_timeout");
                        return;
                    }
                    Ok(Close::Idle) => {
                        tracing::debug!(peer = %addr, "idle_timeout: closing the connection");
                        conn.as_mut().graceful_shutdown();
                        give_up = Some(Instant::now() + IDLE_CLOSE_WAIT);
                    }
                    // Shutdown: in-flight requests finish; the worker's grace bounds that.
                    Ok(Close::Shutdown) => conn.as_mut().graceful_shutdown(),
                    Err(_) => {}
                }
            }
            () = sleep_until_some(give_up) => return,
        }
    }
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
        .max_buf_size(limits.read_buffer_bytes());
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
