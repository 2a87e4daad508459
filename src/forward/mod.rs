//! The life of a forward, in one place: a task of its own, tracked for shutdown, that owns
//! what it holds (the id's claim, the route's `max_in_flight` permit, the body and its room)
//! and answers the request through a oneshot.
//!
//! 1. Connecting, within `connect_timeout`: nothing is sent yet, so a failure is answered
//!    502 and releases the id, and a sender that gives up abandons the forward.
//! 2. Once the request is handed to a connection, the sender waits up to
//!    `upstream_timeout` (then it is answered 504); whether it waits or not, the forward
//!    goes on until the upstream answers (a 2xx status line delivers the id, anything else
//!    releases it) or `upstream_deadline` abandons it.

pub mod client;
mod exchange;
mod headers;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Span;

use crate::budget::Room;
use crate::logging;
use crate::metrics::{RouteMetrics, UpstreamClass};
use crate::route::Upstream;
use crate::store::{Claim, Id};
use crate::telemetry;
use client::Client;
use exchange::Unanswered;
pub use exchange::{
    request as upstream_request, ForwardError, UpstreamReply, MAX_REPLY_BODY_BYTES,
};
pub use headers::{upstream_headers, Additions, Peer, HOOKWALL_EVENT_TYPE, HOOKWALL_ROUTE};

/// One forward and everything it holds until it ends, owned, so that it can outlive its
/// request.
pub struct Forward {
    /// The id (and its route), for what the forward logs once nobody waits for it.
    pub id: Id,
    pub client: Arc<Client>,
    pub upstream: Arc<Upstream>,
    /// What is sent (`upstream_request`).
    pub request: Request<Full<Bytes>>,
    pub holds: Holds,
    pub metrics: Arc<RouteMetrics>,
    /// How long connecting may take (`connect_timeout`).
    pub connect: Duration,
    /// How long the sender waits (`upstream_timeout`).
    pub wait: Duration,
    /// How long the forward may run in all (`upstream_deadline`).
    pub deadline: Duration,
}

/// What a forward holds until it ends.
pub struct Holds {
    /// The id's claim: none for a shadow route's request that enforcing would not forward.
    pub claim: Option<Claim>,
    /// A place under the route's `max_in_flight`.
    pub permit: OwnedSemaphorePermit,
    /// The body's room in the budget.
    pub room: Room,
}

type Answer = Result<UpstreamReply, ForwardError>;

/// Starts `job` in a task on `tracker` and waits for its answer. Called in the request's
/// span: the exchange's CLIENT span (none while traces are off) is its child, and the
/// upstream request's `traceparent` names it.
pub async fn run(mut job: Forward, tracker: &TaskTracker) -> Answer {
    let (answer, answered) = oneshot::channel();
    let origin = &job.upstream.origin;
    let span = telemetry::upstream(job.request.method(), &origin.host, origin.port);
    telemetry::inject(&span, job.request.headers_mut());
    // Boxed here, once: spawning moves the future through several calls, and it is large.
    tracker.spawn(Box::pin(life(job, span, Instant::now(), answer)));
    answered.await.unwrap_or(Err(ForwardError::Cut))
}

/// The forward's task. `span` (the exchange's, for traces) ends with it.
async fn life(job: Forward, span: Span, started: Instant, answer: oneshot::Sender<Answer>) {
    let Forward {
        id,
        client,
        upstream,
        mut request,
        holds:
            Holds {
                mut claim,
                permit: _permit,
                room: _room,
            },
        metrics,
        connect,
        wait,
        deadline,
    } = job;
    let mut answer = Some(answer);
    let mut detached = "";
    let waits = (started + wait, started + deadline, wait);
    let result = loop {
        let ready = client.ready(&upstream.origin, connect);
        let lease = match answer.as_mut() {
            Some(waiting) => tokio::select! {
                biased;
                lease = ready => lease,
                // Nothing was sent: the upstream cannot have acted, and nobody waits.
                () = waiting.closed() => return,
            },
            None => ready.await,
        };
        let lease = match lease {
            Ok(lease) => lease,
            Err(err) => break Err(ForwardError::Connect(err)),
        };
        let exchange = exchange::exchange(lease, request, |status| {
            if let (true, Some(claim)) = (status.is_success(), claim.as_mut()) {
                claim.delivered();
            }
        });
        // The exchange (and its hold on the claim) ends with this statement.
        let ended = waited(std::pin::pin!(exchange), &mut answer, &mut detached, waits).await;
        match ended {
            Some(Ok(reply)) => break Ok(reply),
            Some(Err(Unanswered::Failed(err))) => break Err(err),
            Some(Err(Unanswered::Unsent(unsent))) => {
                // Nothing was written (a pooled connection closed first): a sender that
                // hung up meanwhile abandons the forward, as while connecting (§6), and
                // the claim's drop releases the id.
                if detached == "sender_gone" {
                    return;
                }
                request = *unsent;
            }
            None => {
                // Dropping the exchange closed the upstream connection; the claim is
                // dropped as the task ends.
                metrics.upstream_duration.observe(deadline.as_secs_f64());
                metrics.upstream_response(UpstreamClass::Timeout);
                telemetry::upstream_ended(&span, None);
                abandoned_in_the_log(&id, detached, claim.as_ref());
                return;
            }
        }
    };
    metrics
        .upstream_duration
        .observe(started.elapsed().as_secs_f64());
    metrics.upstream_response(match &result {
        Ok(reply) => UpstreamClass::Status(reply.status.as_u16()),
        Err(ForwardError::Timeout(_)) => UpstreamClass::Timeout,
        Err(
            ForwardError::Connect(_)
            | ForwardError::Reset(_)
            | ForwardError::Body(_)
            | ForwardError::Cut,
        ) => UpstreamClass::Error,
    });
    telemetry::upstream_ended(
        &span,
        result.as_ref().ok().map(|reply| reply.status.as_u16()),
    );
    // The claim (released unless delivered), the permit and the room end with the task.
    let unanswered = match answer {
        Some(waiting) => match waiting.send(result) {
            Ok(()) => return,
            Err(unsent) => unsent,
        },
        None => result,
    };
    let delivered = claim.as_ref().is_some_and(Claim::is_delivered);
    told_in_the_log(&id, unanswered, detached, delivered);
}

/// A forward abandoned at `upstream_deadline`, and what that did to its id: a 2xx status
/// line had already delivered it (its body is what stalled), and it stays delivered;
/// otherwise dropping the claim releases it.
fn abandoned_in_the_log(id: &Id, detached: &'static str, claim: Option<&Claim>) {
    let _span = outlived(id).entered();
    match claim {
        Some(claim) if claim.is_delivered() => tracing::warn!(
            detached,
            delivered = true,
            "forward abandoned at upstream_deadline while reading the body after a 2xx \
             status line; its id stays delivered"
        ),
        Some(_) => tracing::warn!(
            detached,
            delivered = false,
            "forward abandoned at upstream_deadline; its id is released"
        ),
        // A shadow route's request that enforcing would not forward.
        None => tracing::warn!(
            detached,
            "forward abandoned at upstream_deadline; it held no claim on its id"
        ),
    }
}

/// How a forward that nobody waited for any more ended.
fn told_in_the_log(id: &Id, ended: Answer, detached: &'static str, delivered: bool) {
    let detached = match detached {
        "" => "sender_gone",
        why => why,
    };
    let _span = outlived(id).entered();
    match ended {
        Ok(reply) => tracing::info!(
            detached,
            status = reply.status.as_u16(),
            delivered,
            "forward ended after its request"
        ),
        Err(err) => tracing::warn!(
            detached,
            delivered,
            error = logging::chain(&err),
            "forward ended after its request"
        ),
    }
}

/// The exchange's end, or `None` if it was abandoned at the deadline. The sender waits
/// until `wait_ends`: then it is answered 504 and the forward goes on; it may also hang
/// up. Either way (`detached` says which), `deadline` applies from then on.
async fn waited<T>(
    mut exchange: Pin<&mut impl Future<Output = T>>,
    answer: &mut Option<oneshot::Sender<Answer>>,
    detached: &mut &'static str,
    (wait_ends, deadline, wait): (Instant, Instant, Duration),
) -> Option<T> {
    let sender_waits = tokio::time::sleep_until(wait_ends);
    tokio::pin!(sender_waits);
    loop {
        let waiting = answer.is_some();
        tokio::select! {
            biased;
            ended = exchange.as_mut() => return Some(ended),
            () = &mut sender_waits, if waiting => {
                if let Some(waiting) = answer.take() {
                    let _ = waiting.send(Err(ForwardError::Timeout(wait)));
                }
                *detached = "upstream_timeout";
            }
            () = hung_up(answer), if waiting => {
                answer.take();
                *detached = "sender_gone";
            }
            () = until(deadline), if !waiting => return None,
        }
    }
}

/// Sleeps until `deadline`: its timer is made only when first polled (a branch of
/// `select!` that is off is still made, never polled).
async fn until(deadline: Instant) {
    tokio::time::sleep_until(deadline).await;
}

/// Completes when the request stops waiting for the answer (never once it was answered).
async fn hung_up(answer: &mut Option<oneshot::Sender<Answer>>) {
    match answer {
        Some(waiting) => waiting.closed().await,
        None => std::future::pending().await,
    }
}

/// The span of a forward that outlived its request: the same route and id as the
/// request's. Made only then (the common forward logs nothing of its own).
fn outlived(id: &Id) -> tracing::Span {
    tracing::warn_span!("forward", route = id.route(), id = id.id())
}
