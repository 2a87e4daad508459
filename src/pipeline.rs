//! The request path. `handle` answers one request: the one place its result becomes a
//! status, a body, metrics and its log line. `handle_inner` runs the stages in the
//! contract's order (§7) with `?`: header limits, path, method, the signed headers and the
//! timestamp window (all from the head, before a byte of the body is held), the body,
//! signature, then the rule's decision with dedup: forward (a place under the route's
//! `max_in_flight`, the claim, `forward/`), append to a stream, or acknowledge.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use tracing::field::Empty;
use tracing::Instrument as _;

use crate::budget::Room;
use crate::dedup::{Seen, Taken};
use crate::deliveries::{Answer, Facts};
use crate::forward::{self, Holds, Peer};
use crate::logging;
use crate::outcome::{rescue, Done, Outcome, Reject};
use crate::request::{unix_now, Arrived, Context};
use crate::route::{Decision, Upstream};
use crate::state::{Live, RouteState, Shared};
use crate::store::Id;
use crate::stream::Entry;
use crate::telemetry;

/// Answers one request on worker `worker` (whose upstream pool forwards it). Never
/// fails: every path ends in a response. Its span (`request`) carries the route, id and
/// event type as they become known; its one log line is written at the end, inside it.
pub async fn handle(
    shared: &Arc<Shared>,
    worker: usize,
    request: Request<Incoming>,
    peer: &Peer,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let http1 = request.version() < Version::HTTP_2;
    let _in_progress = InProgress::start(&shared.metrics.in_flight_requests);
    let live = shared.live_at(worker);
    let span = tracing::info_span!(
        "request",
        route = Empty,
        id = Empty,
        // Dedup's key, when it is not the id (a digest of what was signed).
        key = Empty,
        event_type = Empty,
        stream = Empty,
        entry = Empty
    );
    telemetry::received(&span, &request);
    let cx = Context {
        shared,
        worker,
        live: &live,
        peer,
        span: &span,
    };
    let mut route = None;
    // What the recent deliveries keep of it, collected only while the ring is on.
    let mut facts = Facts::new(shared.deliveries.on());
    let result = handle_inner(&cx, request, &mut route, &mut facts)
        .instrument(span.clone())
        .await;
    // A body left unread: nothing more of it is wanted (HTTP/2 ends just the stream).
    let close = http1 && matches!(result, Err(Reject::Body(_)));
    // The one place an error's chain is written: upstream and store failures have causes
    // worth reading; a sender's refusal is told by its outcome.
    let error = match &result {
        Err(Reject::Upstream(err)) if err.source().is_some() => Some(logging::chain(err)),
        Err(Reject::StoreUnavailable(err)) => Some(logging::chain(err)),
        _ => None,
    };
    let upstream_status = match &result {
        Ok(Done::Upstream(reply)) => Some(reply.status.as_u16()),
        _ => None,
    };
    let (outcome, mut response) = rescue(result);
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }

    let metrics = route.map_or(&shared.unmatched, |route: &RouteState| &*route.metrics);
    metrics.request(outcome);
    let elapsed = started.elapsed();
    metrics.request_duration.observe(elapsed.as_secs_f64());
    let status = response.status().as_u16();
    let provider = route.map(|route| route.route.scheme.provider());
    telemetry::answered(&span, provider, outcome.label(), status);
    if facts.on() {
        facts.trace_id(telemetry::trace_id(&span));
        remember(
            shared,
            facts,
            route,
            (outcome, status, upstream_status),
            elapsed,
        );
    }
    let outcome = outcome.label();
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    match error {
        None => tracing::info!(parent: &span, outcome, status, latency_ms, "request"),
        // The line names its route itself: logging warnings only, the log shows no info
        // span around it (with traces on, the span is made all the same, for the exporter).
        Some(error) => {
            let route = route.map_or(crate::labels::UNMATCHED, |r| &*r.route.name);
            tracing::warn!(parent: &span, route, outcome, status, latency_ms, error, "request")
        }
    }
    response
}

/// Records an answered request in the recent deliveries: its facts, its route, its outcome
/// and statuses (the sender's, the upstream's), and how long it took.
fn remember(
    shared: &Shared,
    facts: Facts,
    route: Option<&RouteState>,
    (outcome, status, upstream_status): (Outcome, u16, Option<u16>),
    elapsed: Duration,
) {
    let answer = Answer {
        arrived: SystemTime::now()
            .checked_sub(elapsed)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        route: route.map(|route| route.route.name.clone()),
        provider: route.map(|route| route.route.scheme.provider()),
        outcome,
        status,
        upstream_status,
        duration: elapsed,
    };
    shared.deliveries.record(facts.answered(answer));
}

/// Counts a request in `hookwall_in_flight_requests` until dropped, also when hyper drops
/// the request's future because the sender went away.
struct InProgress<'a>(&'a prometheus::IntGauge);

impl<'a> InProgress<'a> {
    fn start(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        InProgress(gauge)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn handle_inner<'a>(
    cx: &Context<'a>,
    request: Request<Incoming>,
    found: &mut Option<&'a RouteState>,
    facts: &mut Facts,
) -> Result<Done, Reject> {
    check_header_limits(request.headers(), cx.live)?;
    let route = cx
        .live
        .route(request.uri().path())
        .ok_or(Reject::NotFound)?;
    *found = Some(route);
    cx.span.record("route", &*route.route.name);
    if !route.route.enforce {
        return crate::shadow::watch(cx, route, request, facts).await;
    }
    if request.method() != Method::POST {
        return Err(Reject::MethodNotAllowed);
    }
    let (parts, body) = request.into_parts();

    // Everything the head alone can refuse is refused before a byte of the body is held.
    let now = unix_now();
    let scheme = &route.route.scheme;
    if let Some(id) = scheme.sent_id(&parts.headers) {
        cx.span.record("id", id);
        facts.id(id);
    }
    let head = scheme.head(&parts.headers, now)?;
    let (body, room) = cx.read_body(body, &parts.headers).await?;
    let verified = scheme.body(&head, &body)?;

    // From here on the request is authentic and fresh.
    let event = cx.verified(route, &verified, now, facts);
    let arrived = Arrived {
        route,
        id: Id::new(&route.route.name, verified.key()),
        sender_id: verified
            .digest
            .is_some()
            .then(|| verified.id.as_str().to_owned()),
        event_type: event.as_str(),
        timestamp: verified.timestamp,
        parts,
    };
    match route.route.rules.decide(event.as_str()) {
        // The event type borrows the body: the forward gets a handle of its own.
        Decision::Forward(upstream) => forward(cx, arrived, upstream, body.clone(), room).await,
        Decision::Stream(stream) => queue(cx, arrived, stream, body.clone()).await,
        // Dedup is looked up before routing, but only a forward claims an id.
        Decision::Drop | Decision::NoMatch => acknowledge(cx, arrived).await,
    }
}

/// Takes a place under the route's `max_in_flight`, claims the id and forwards the event
/// (`forward/` has the forward's life).
async fn forward(
    cx: &Context<'_>,
    mut arrived: Arrived<'_>,
    upstream: &Arc<Upstream>,
    body: Bytes,
    room: Room,
) -> Result<Done, Reject> {
    let route = arrived.route;
    // Held until the forward ends; refused before the id is claimed.
    let permit = route
        .forwards
        .clone()
        .try_acquire_owned()
        .map_err(|_| Reject::Overloaded)?;
    let on_error = cx.live.config.dedup.on_store_error;
    let fallbacks = &route.metrics.dedup_fallbacks;
    let claimed = cx
        .shared
        .store
        .claim(cx.worker, &arrived.id, on_error, fallbacks);
    let claim = match claimed.await.map_err(Reject::StoreUnavailable)? {
        Ok(claim) => claim,
        Err(taken) => return taken_answer(taken),
    };
    let headers = arrived.outgoing_headers(cx, Some(&upstream.host), body.len());
    let target = upstream.target(arrived.parts.uri.query());
    let request = forward::upstream_request(Method::POST, target, headers, body);
    let holds = Holds {
        claim: Some(claim),
        permit,
        room,
    };
    let job = route.forward(arrived.id, upstream, request, holds);
    let reply = forward::run(job, cx.shared.tasks.of(cx.worker)).await?;
    Ok(Done::Upstream(reply))
}

/// Appends the event to the rule's stream, once per id.
async fn queue(
    cx: &Context<'_>,
    mut arrived: Arrived<'_>,
    stream: &Arc<str>,
    body: Bytes,
) -> Result<Done, Reject> {
    let mut headers = arrived.outgoing_headers(cx, None, body.len());
    // The append's CLIENT span (none while traces are off): the entry's `traceparent`.
    let append = telemetry::append(stream);
    telemetry::inject(&append, &mut headers);
    let id = &arrived.id;
    let entry = Entry::new(
        arrived.sender_id(),
        arrived.event_type,
        id.route(),
        arrived.timestamp,
        body,
        &headers,
    );
    let queued = cx.shared.store.enqueue(cx.worker, id, stream, &entry).await;
    telemetry::append_ended(&append, queued.is_ok());
    match queued.map_err(Reject::StoreUnavailable)? {
        Ok(entry) => {
            cx.span.record("stream", &**stream);
            cx.span.record("entry", entry.as_str());
            Ok(Done::Queued)
        }
        Err(taken) => taken_answer(taken),
    }
}

/// A filtered or dropped event: acknowledged, unless its id is known. A signed id's state
/// does not change; a digest key is remembered (see inside).
async fn acknowledge(cx: &Context<'_>, arrived: Arrived<'_>) -> Result<Done, Reject> {
    let on_error = cx.live.config.dedup.on_store_error;
    let fallbacks = &arrived.route.metrics.dedup_fallbacks;
    if arrived.sender_id.is_some() {
        // Keyed by a digest: the id, and maybe the event type that had it dropped, are not
        // signed. Remembered as if delivered, so that the same signed body relabelled with
        // a type that another rule forwards is a duplicate, not a first delivery.
        let claimed = cx
            .shared
            .store
            .claim(cx.worker, &arrived.id, on_error, fallbacks);
        return match claimed.await.map_err(Reject::StoreUnavailable)? {
            Ok(mut claim) => {
                claim.delivered();
                Ok(Done::Filtered)
            }
            Err(taken) => taken_answer(taken),
        };
    }
    let seen = cx
        .shared
        .store
        .lookup(cx.worker, &arrived.id, on_error, fallbacks);
    match seen.await.map_err(Reject::StoreUnavailable)? {
        Seen::New => Ok(Done::Filtered),
        Seen::Delivering => taken_answer(Taken::Delivering),
        Seen::Delivered => taken_answer(Taken::Delivered),
    }
}

/// The answer for an id that was already taken.
fn taken_answer(taken: Taken) -> Result<Done, Reject> {
    match taken {
        Taken::Delivered => Ok(Done::Duplicate),
        Taken::Delivering => Err(Reject::BeingDelivered),
    }
}

fn check_header_limits(headers: &HeaderMap, live: &Live) -> Result<(), Reject> {
    let limits = live.limits();
    if headers.len() > limits.max_headers {
        return Err(Reject::HeadersTooLarge);
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(Reject::HeadersTooLarge);
    }
    Ok(())
}
