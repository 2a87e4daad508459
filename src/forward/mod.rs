//! The life of a forward, in one place: a task of its own, tracked for shutdown, that owns
//! what it holds (the id's claim, the route's `max_in_flight` permit, the body and its room)
//! and answers the request through a oneshot. The sender waits up to `upstream_timeout`;
//! whether it waits or not, the forward goes on until the upstream answers (a 2xx status
//! line delivers the id, anything else releases it) or `upstream_deadline` abandons it.

pub mod client;
mod exchange;
mod headers;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Uri};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::budget::Room;
use crate::logging;
use crate::metrics::{RouteMetrics, UpstreamClass};
use crate::route::Upstream;
use crate::store::{Claim, Id};
use client::Client;
pub use exchange::{ForwardError, UpstreamReply, MAX_REPLY_BODY_BYTES};
pub use headers::{upstream_headers, Additions, Peer, HOOKWALL_EVENT_TYPE, HOOKWALL_ROUTE};

/// One forward and everything it holds until it ends, owned, so that it can outlive its
/// request.
pub struct Forward {
    /// The id (and its route), for what the forward logs once nobody waits for it.
    pub id: Id,
    pub client: Arc<Client>,
    pub upstream: Arc<Upstream>,
    /// The upstream's path with the listener's query string.
    pub target: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub claim: Claim,
    pub permit: OwnedSemaphorePermit,
    /// The body's room in the budget.
    pub room: Room,
    pub metrics: Arc<RouteMetrics>,
    /// How long the sender waits (`upstream_timeout`).
    pub wait: Duration,
    /// How long the forward may run in all (`upstream_deadline`).
    pub deadline: Duration,
}

type Answer = Result<UpstreamReply, ForwardError>;

/// Starts `job` in a task on `tracker` and waits for its answer up to `job.wait`.
pub async fn run(job: Forward, tracker: &TaskTracker) -> Answer {
    let (wait, started) = (job.wait, Instant::now());
    let (answer, answered) = oneshot::channel();
    // Boxed here, once: spawning moves the future through several calls, and it is large.
    tracker.spawn(Box::pin(life(job, started, answer)));
    match tokio::time::timeout_at(started + wait, answered).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(ForwardError::Cut),
        Err(_) => Err(ForwardError::Timeout(wait)),
    }
}

/// The forward's task. Its timer starts only once nobody waits for the answer: the common
/// forward, answered in time, costs no timer here.
async fn life(job: Forward, started: Instant, mut answer: oneshot::Sender<Answer>) {
    let Forward {
        id,
        client,
        upstream,
        target,
        headers,
        body,
        mut claim,
        permit: _permit,
        room: _room,
        metrics,
        wait,
        deadline,
    } = job;
    let (ended, detached) = {
        let exchange =
            exchange::exchange(&client, &upstream.origin, target, headers, body, |status| {
                if status.is_success() {
                    claim.delivered();
                }
            });
        let waited = (started + wait, started + deadline);
        until_deadline(std::pin::pin!(exchange), &mut answer, waited).await
    };
    let Some(result) = ended else {
        // Dropping the exchange closed the upstream connection; dropping the claim (now)
        // releases the id.
        metrics.upstream_duration.observe(deadline.as_secs_f64());
        metrics.upstream_response(UpstreamClass::Timeout);
        let _span = outlived(&id).entered();
        tracing::warn!(
            detached,
            "forward abandoned at upstream_deadline; its id is released"
        );
        return;
    };
    metrics
        .upstream_duration
        .observe(started.elapsed().as_secs_f64());
    metrics.upstream_response(match &result {
        Ok(reply) => UpstreamClass::Status(reply.status.as_u16()),
        Err(ForwardError::Timeout(_)) => UpstreamClass::Timeout,
        Err(ForwardError::Connect(_) | ForwardError::Body(_) | ForwardError::Cut) => {
            UpstreamClass::Error
        }
    });
    // Nobody waits any more (the sender's wait ran out, or it hung up): the log tells the
    // end instead. The claim (released unless delivered), the permit and the room end here.
    let delivered = claim.is_delivered();
    if let Err(unsent) = answer.send(result) {
        // Nobody waited: the request stopped waiting just as the exchange ended.
        let detached = match detached {
            "" => why_detached(started + wait),
            why => why,
        };
        let _span = outlived(&id).entered();
        match unsent {
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
}

/// The exchange's answer, or `None` if it was abandoned at the deadline, which applies
/// only once nobody waits for the answer; and why nobody waited, if so: the sender's
/// wait ran out (`upstream_timeout`), or it hung up (`sender_gone`).
async fn until_deadline(
    mut exchange: Pin<&mut impl Future<Output = Answer>>,
    answer: &mut oneshot::Sender<Answer>,
    (wait_ends, deadline): (Instant, Instant),
) -> (Option<Answer>, &'static str) {
    tokio::select! {
        biased;
        ended = exchange.as_mut() => return (Some(ended), ""),
        () = answer.closed() => {}
    }
    let detached = why_detached(wait_ends);
    let ended = tokio::time::timeout_at(deadline, exchange).await;
    (ended.ok(), detached)
}

/// Why nobody waits for the answer now: the sender's wait ran out, or it hung up.
fn why_detached(wait_ends: Instant) -> &'static str {
    if Instant::now() >= wait_ends {
        "upstream_timeout"
    } else {
        "sender_gone"
    }
}

/// The span of a forward that outlived its request: the same route and id as the
/// request's. Made only then (the common forward logs nothing of its own).
fn outlived(id: &Id) -> tracing::Span {
    tracing::warn_span!("forward", route = id.route(), id = id.id())
}
