//! The public listener: `limits.workers` threads, each with its own single-threaded
//! runtime, fed by one acceptor that counts connections against `max_connections`; TLS;
//! HTTP/1.1 and h2c with their bounds; a watchdog per connection; graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::forward::Peer;
use crate::outcome::Outcome;
use crate::state::Shared;

/// The answer to a connection past `max_connections`, written before reading anything.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n\
content-length: 22\r\n\r\n{\"error\":\"overloaded\"}";

/// How long refusing a connection may take (TLS handshake and the answer) before it is
/// just closed.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a refusal waits for the sender's first bytes before it answers anyway.
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(250);

/// Most connections being refused at once. Past it a connection over the cap is closed
/// without an answer: a flood cannot pile up tasks or TLS handshakes.
const MAX_REFUSING: usize = 64;

/// How long a connection asked to close for idleness (HTTP/2 GOAWAY) may take to do so.
const IDLE_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Waits this long after an accept error (e.g. out of file descriptors) before the next
/// accept, instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How many accepted connections may wait for a busy worker before the acceptor waits too
/// (and new connections wait in the kernel's backlog). They count as open.
const HANDOFF_QUEUE: usize = 256;

/// An accepted connection on its way to a worker, with its place under the cap.
struct Handoff {
    stream: std::net::TcpStream,
    addr: SocketAddr,
    slot: Slot,
}

/// Serves `listener` with `shared.workers()` threads until `shutdown` completes, then
/// drains. Thread per core: each worker runs its own single-threaded runtime and forwards
/// through its own connection pool, so a request never wakes another thread. This task
/// accepts and hands each connection to the next worker in turn: left to the kernel, a
/// burst of connections all went to whichever worker woke first, and one thread carried
/// the load of two. Only the connection count, dedup, metrics and the config are shared.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let open = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut workers = Vec::new();
    let mut inboxes = Vec::new();
    for index in 0..shared.workers() {
        let (inbox, arrivals) = mpsc::channel::<Handoff>(HANDOFF_QUEUE);
        let shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name(format!("hookwall-worker-{index}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(worker(index, arrivals, shared)),
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
        let max = shared.live().limits().max_connections;
        let Some(slot) = Slot::take(&open, max) else {
            refuse(stream, addr, &shared, &refusing);
            continue;
        };
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(peer = %addr, error = %err, "cannot hand a connection to a worker");
                continue;
            }
        };
        let mut handoff = Handoff { stream, addr, slot };
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

/// Answers a connection past `max_connections` with 503 in a task of its own, at most
/// `MAX_REFUSING` at once; past that it is closed at once.
fn refuse(stream: TcpStream, addr: SocketAddr, shared: &Shared, refusing: &Arc<Semaphore>) {
    shared.unmatched.request(Outcome::Overloaded);
    tracing::warn!(peer = %addr, outcome = Outcome::Overloaded.label(), "connection refused: max_connections reached");
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    let tls = shared.live().tls.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let refusal = async {
            let _ = stream.set_nodelay(true);
            match tls {
                None => write_overloaded(stream).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        write_overloaded(stream).await;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, refusal).await;
    });
}

/// Writes the 503 and closes, parsing nothing. HTTP clients write their request before
/// they read, and hyper's client takes an answer that comes before it as a broken
/// connection: so the answer waits for the sender's first bytes (dropped unread), for
/// `FIRST_BYTES_WAIT` at most. Then it lingers: what the sender still sends is read and
/// dropped until it closes its side, since closing on unread data would reset the
/// connection, and the reset discards the 503 before the sender reads it. Bounded by
/// `REFUSAL_TIMEOUT` around it.
async fn write_overloaded(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(FIRST_BYTES_WAIT, stream.read(&mut sink)).await;
    if stream.write_all(OVERLOADED).await.is_ok() && stream.shutdown().await.is_ok() {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    }
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

/// Why the watchdog asks a connection to close.
enum Close {
    /// No complete request head within `header_read_timeout` of the accept.
    Silent,
    /// No request in progress for `idle_timeout`.
    Idle,
    /// The worker is shutting down.
    Shutdown,
}

/// Watches one connection until it ends (`close` is dropped), telling it why to close.
async fn watchdog(
    activity: Arc<Activity>,
    (first, idle): (Duration, Duration),
    stop: CancellationToken,
    mut close: tokio::sync::oneshot::Sender<Close>,
) {
    let reason = tokio::select! {
        () = close.closed() => return,
        () = stop.cancelled() => Close::Shutdown,
        () = activity.idle(first, idle) => {
            if activity.started_any() { Close::Idle } else { Close::Silent }
        }
    };
    let _ = close.send(reason);
}

/// Completes at `when`, never if `None`.
async fn sleep_until_some(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// What the watchdog knows of a connection: requests in progress, and since when there
/// have been none. Updated by the service on each request's start and end (a few atomic
/// operations; no wake-up), read by the watchdog when its timer fires.
struct Activity {
    start: Instant,
    busy: AtomicUsize,
    /// Milliseconds from `start` to when the last request ended.
    idle_since_ms: AtomicU64,
    started_any: AtomicBool,
}

impl Activity {
    fn new(start: Instant) -> Self {
        Activity {
            start,
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            started_any: AtomicBool::new(false),
        }
    }

    fn start(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::AcqRel);
        if !self.started_any.load(Ordering::Relaxed) {
            self.started_any.store(true, Ordering::Release);
        }
        Busy(self)
    }

    fn started_any(&self) -> bool {
        self.started_any.load(Ordering::Acquire)
    }

    /// Completes once the connection should close: no request head yet `first` after the
    /// accept, or no request in progress for `idle`. It looks again at least every
    /// `min(first, idle)`, so a request that came and went while it slept is seen in time;
    /// otherwise it sleeps until exactly the due time.
    async fn idle(&self, first: Duration, idle: Duration) {
        let step = first.min(idle);
        loop {
            let now = Instant::now();
            let next = if self.busy.load(Ordering::Acquire) > 0 {
                now + step
            } else {
                let limit = if self.started_any() { idle } else { first };
                let since =
                    self.start + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
                let due = since + limit;
                if due <= now {
                    return;
                }
                due.min(now + step)
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// A request in progress on its connection.
struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let activity = self.0;
        let ms = activity.start.elapsed().as_millis() as u64;
        activity.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        activity.busy.fetch_sub(1, Ordering::AcqRel);
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

/// A place under `max_connections`, held from the accept until the connection ends.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// Only the acceptor takes slots, so checking and counting cannot race: the cap is
    /// exact.
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        if open.load(Ordering::Acquire) >= max {
            return None;
        }
        open.fetch_add(1, Ordering::AcqRel);
        Some(Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exact_and_come_back_when_dropped() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&open, 2).unwrap();
        let b = Slot::take(&open, 2).unwrap();
        assert!(Slot::take(&open, 2).is_none());
        drop(a);
        let c = Slot::take(&open, 2).unwrap();
        assert_eq!(open.load(Ordering::Acquire), 2);
        drop((b, c));
        assert_eq!(open.load(Ordering::Acquire), 0);
    }

    /// The watchdog's clock, on paused time: a silent connection is due `first` after its
    /// accept; one with a request in progress is never due; one whose request ended is due
    /// `idle` after that end.
    #[tokio::test(start_paused = true)]
    async fn the_watchdog_is_due_when_a_connection_proves_nothing() {
        let (first, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        let accepted = Instant::now();
        Activity::new(accepted).idle(first, idle).await;
        let waited = accepted.elapsed();
        assert!(waited >= first && waited < first + Duration::from_millis(10));

        let activity = Arc::new(Activity::new(Instant::now()));
        let watching = activity.clone();
        let watcher = tokio::spawn(async move { watching.idle(first, idle).await });
        tokio::time::advance(Duration::from_secs(5)).await;
        let busy = activity.start();
        tokio::time::advance(Duration::from_secs(100)).await;
        tokio::task::yield_now().await;
        assert!(!watcher.is_finished(), "due while a request is in progress");
        drop(busy);
        tokio::time::advance(idle - Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert!(!watcher.is_finished(), "due before idle_timeout passed");
        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::time::timeout(Duration::from_secs(1), watcher)
            .await
            .expect("due once idle_timeout passed")
            .unwrap();
    }
}
