//! The acceptor: a thread of its own (so that refusing a flood never delays the admin
//! listener), which counts every connection against `max_connections` (exactly: it is the
//! only one that adds), hands each to the next worker in turn, and answers those past the
//! cap with 503.

use std::future::Future as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use std::thread::JoinHandle;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{runtime, Handoff, ServeError};
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

/// Waits this long after an accept error (e.g. out of file descriptors) before the next
/// accept, instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How many accepted connections may wait for a busy worker before the acceptor waits too
/// (and new connections wait in the kernel's backlog). They count as open.
const HANDOFF_QUEUE: usize = 256;

/// Accepts on `listener` until `stop`, feeding `shared.workers()` worker threads, then
/// drains them. Thread per core: each worker runs its own single-threaded runtime and
/// forwards through its own connection pool, so a request never wakes another thread.
/// Connections are handed to the next worker in turn: left to the kernel, a burst of
/// connections all went to whichever worker woke first, and one thread carried the load
/// of two. Ends with an error if the listener fails for good or every worker stopped.
pub(super) async fn run(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let listener = listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
        .map_err(ServeError::Listener)?;
    let open = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let (workers, mut inboxes) = start_workers(&shared);
    let mut turn = 0;
    let mut ended = Ok(());
    while !inboxes.is_empty() {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) if lasting(&err) => {
                    tracing::error!(error = %err, "the public listener cannot accept any more");
                    ended = Err(ServeError::Accept(err));
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
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
        // No worker left to take it: the connection is closed, and the loop ends.
        let _ = hand_off(&mut inboxes, &mut turn, Handoff { stream, addr, slot }).await;
    }
    if inboxes.is_empty() && ended.is_ok() {
        ended = Err(ServeError::NoWorkers);
    }
    if ended.is_err() {
        // Unready now, not once the drain below is over (up to `shutdown_grace`): nothing
        // new will be served, and Kubernetes should stop sending here at once.
        shared.ready.store(false, Ordering::Release);
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
    ended
}

/// Hands `item` to the next worker in turn whose queue has room: a worker busy with a full
/// queue is passed over, not waited for, while another could take it. Only when every
/// queue is full does it wait, for whichever has room first. A worker that stopped is
/// removed (the others take its share); `item` comes back if none is left.
async fn hand_off<T>(
    inboxes: &mut Vec<mpsc::Sender<T>>,
    turn: &mut usize,
    item: T,
) -> Result<(), T> {
    let mut item = item;
    loop {
        let mut full = 0;
        while full < inboxes.len() {
            *turn = (*turn + 1) % inboxes.len();
            match inboxes[*turn].try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    item = back;
                    full += 1;
                }
                Err(TrySendError::Closed(back)) => {
                    item = back;
                    stopped(inboxes, turn);
                }
            }
        }
        if inboxes.is_empty() {
            return Err(item);
        }
        // Every queue is full: the first to make room takes it.
        *turn = {
            let (index, room) = first_room(inboxes).await;
            match room {
                Some(room) => {
                    room.send(item);
                    *turn = index;
                    return Ok(());
                }
                None => index,
            }
        };
        stopped(inboxes, turn);
    }
}

/// The first of `inboxes` to have room, and its room (none if its worker stopped).
async fn first_room<T>(inboxes: &[mpsc::Sender<T>]) -> (usize, Option<mpsc::Permit<'_, T>>) {
    let mut waits: Vec<_> = inboxes
        .iter()
        .map(|inbox| Box::pin(inbox.reserve()))
        .collect();
    std::future::poll_fn(|cx| {
        for (index, wait) in waits.iter_mut().enumerate() {
            if let Poll::Ready(room) = wait.as_mut().poll(cx) {
                return Poll::Ready((index, room.ok()));
            }
        }
        Poll::Pending
    })
    .await
}

/// Removes the worker at `turn`, which stopped; `turn` then points at the one before it, so
/// that the next in turn is the one after it.
fn stopped<T>(inboxes: &mut Vec<mpsc::Sender<T>>, turn: &mut usize) {
    tracing::error!("a worker stopped; the others take its share");
    inboxes.remove(*turn);
    *turn = turn
        .checked_sub(1)
        .unwrap_or(inboxes.len().saturating_sub(1));
}

/// The worker threads, and the inboxes that hand them connections.
fn start_workers(shared: &Arc<Shared>) -> (Vec<JoinHandle<()>>, Vec<mpsc::Sender<Handoff>>) {
    let mut workers = Vec::new();
    let mut inboxes = Vec::new();
    for index in 0..shared.workers() {
        let (inbox, arrivals) = mpsc::channel::<Handoff>(HANDOFF_QUEUE);
        let shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name(format!("hookwall-worker-{index}"))
            .spawn(move || match runtime() {
                Ok(runtime) => runtime.block_on(super::worker(index, arrivals, shared)),
                Err(err) => tracing::error!(error = %err, "cannot start a worker runtime"),
            });
        match worker {
            Ok(worker) => {
                workers.push(worker);
                inboxes.push(inbox);
            }
            Err(err) => tracing::error!(error = %err, "cannot start a worker thread"),
        }
    }
    (workers, inboxes)
}

/// Whether an accept error will not pass: the listening socket itself is gone or unusable
/// (EBADF, EFAULT, EINVAL, ENOTSOCK, Linux's numbers). Running out of file descriptors or
/// memory, a connection aborted before it was accepted, a network error passed on by the
/// kernel: those pass, and the acceptor tries again.
fn lasting(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(9 | 14 | 22 | 88))
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

/// A place under `max_connections`, held from the accept until the connection ends.
pub(super) struct Slot(Arc<AtomicUsize>);

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

    /// A worker whose queue is full is passed over while another has room; with every
    /// queue full, the first to make room takes the next; a worker that stopped is removed.
    #[tokio::test]
    async fn a_busy_worker_is_passed_over_not_waited_for() {
        let (a, mut to_a) = mpsc::channel::<u32>(1);
        let (b, mut to_b) = mpsc::channel::<u32>(1);
        let mut inboxes = vec![a, b];
        let mut turn = 1;
        hand_off(&mut inboxes, &mut turn, 1).await.unwrap();
        hand_off(&mut inboxes, &mut turn, 2).await.unwrap();
        assert_eq!(to_b.try_recv(), Ok(2));
        // Worker 0 is busy (its queue full) and it is its turn: worker 1 takes the next.
        hand_off(&mut inboxes, &mut turn, 3).await.unwrap();
        assert_eq!(to_b.try_recv(), Ok(3));
        hand_off(&mut inboxes, &mut turn, 4).await.unwrap();
        // Both full: the hand-off waits, and worker 1 makes room first.
        let waiting = tokio::spawn(async move {
            hand_off(&mut inboxes, &mut turn, 5).await.unwrap();
            inboxes
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(to_b.recv().await, Some(4));
        let mut inboxes = waiting.await.unwrap();
        assert_eq!((to_a.try_recv(), to_b.try_recv()), (Ok(1), Ok(5)));
        // Worker 0 stopped: it is removed and worker 1 takes its share.
        drop(to_a);
        let mut turn = 1;
        hand_off(&mut inboxes, &mut turn, 6).await.unwrap();
        assert_eq!((inboxes.len(), to_b.try_recv()), (1, Ok(6)));
        drop(to_b);
        assert_eq!(hand_off(&mut inboxes, &mut turn, 7).await, Err(7));
        assert!(inboxes.is_empty());
    }
}
