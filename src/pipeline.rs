//! The request path. `handle_inner` chains the stages in the contract's order (§7) with
//! `?`: header limits, path, method, the signed headers and the timestamp window (all from
//! the head, before a byte of the body is buffered), the body (size, buffer budget, read
//! timeout), signature, route overload, dedup, routing, forward (or a stream append). `handle` is the one place
//! that turns the result into a status, a body, metrics and the request's log line, which
//! carries the error chain when there is one (logged once, here).
//!
//! A forward, once started, is never abandoned because the sender stopped waiting: it
//! runs inline (the common case costs no task), and if the sender's `upstream_timeout`
//! passes or the sender hangs up, the rest of it moves to a task of its own, tracked for
//! shutdown, that still decides the id when the upstream answers (`Detachable`).

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::TaskTracker;

use crate::budget::{Budget, Reservation};
use crate::config::Limits;
use crate::dedup::{self, Seen};
use crate::forward::{self, ForwardError, Peer, UpstreamReply};
use crate::logging;
use crate::metrics::{Outcome, RouteMetrics, UpstreamClass};
use crate::redis::StoreError;
use crate::route::{event_type, Decision, EventType};
use crate::state::{Live, RouteState, Shared};
use crate::store::{Claim, Id};
use crate::stream::Entry;
use crate::verify::{SignedHeaders, VerifyError};

/// A request answered without a refusal.
#[derive(Debug)]
pub enum Done {
    /// Already delivered on this route: acknowledged, not forwarded.
    Duplicate,
    /// No rule matched, or the rule drops: acknowledged, not forwarded.
    Filtered,
    /// The upstream's answer (2xx or not).
    Upstream(UpstreamReply),
    /// Appended to the rule's Redis stream.
    Queued,
}

/// Why a request was refused. Who failed: the sender (most), the upstream (the last),
/// or hookwall's own bounds (`Overloaded`, `BufferFull`).
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error("more headers, or header bytes, than the limits allow")]
    HeadersTooLarge,
    #[error("no route has this path")]
    NotFound,
    #[error("method is not POST")]
    MethodNotAllowed,
    #[error("body larger than limits.max_body_bytes")]
    BodyTooLarge,
    #[error("body not complete within limits.body_read_timeout, or cut short")]
    BodyTimeout,
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("max_in_flight forwards already running on the route")]
    Overloaded,
    #[error("request bodies being read already hold limits.max_buffered_bytes")]
    BufferFull,
    #[error("this id is being delivered right now")]
    InFlight,
    #[error("the dedup store is unreachable")]
    StoreUnavailable(#[source] StoreError),
    #[error(transparent)]
    Upstream(#[from] ForwardError),
}

/// What the log line and metrics need to know about a request, filled in as it goes. The
/// id and event type are copied only when the request's log line will be written.
#[derive(Default)]
struct Trace<'a> {
    route: Option<&'a RouteState>,
    logged: bool,
    id: Option<String>,
    event_type: Option<String>,
    /// The stream and the entry's id, once queued.
    queued: Option<(Arc<str>, String)>,
}

/// Answers one request on worker `worker` (whose upstream pool forwards it). Never
/// fails: every path ends in a response.
pub async fn handle(
    shared: &Arc<Shared>,
    worker: usize,
    request: Request<Incoming>,
    peer: &Peer,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let _in_flight = InFlight::start(&shared.metrics.in_flight_requests);
    let live = shared.live_at(worker);
    let mut trace = Trace {
        logged: tracing::enabled!(tracing::Level::INFO),
        ..Trace::default()
    };
    let result = handle_inner(shared, worker, &live, request, peer, &mut trace).await;
    // The one place an error's chain is written: upstream failures have causes worth
    // reading; a sender's refusal is told by its outcome.
    let error = match &result {
        Err(Reject::Upstream(err)) if err.source().is_some() => Some(logging::chain(err)),
        Err(Reject::StoreUnavailable(err)) => Some(logging::chain(err)),
        _ => None,
    };
    let (outcome, response) = rescue(result);

    let route_metrics: &RouteMetrics = trace
        .route
        .map_or(&shared.unmatched, |route| &route.metrics);
    route_metrics.request(outcome);
    let elapsed = started.elapsed();
    route_metrics
        .request_duration
        .observe(elapsed.as_secs_f64());
    let route = trace
        .route
        .map_or(crate::metrics::UNMATCHED, |r| &*r.route.name);
    let id = trace.id.as_deref().unwrap_or("");
    let event_type = trace.event_type.as_deref().unwrap_or("");
    let status = response.status().as_u16();
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    match (error, trace.queued) {
        (None, Some((stream, entry))) => tracing::info!(
            route,
            id,
            event_type,
            outcome = outcome.label(),
            status,
            latency_ms,
            stream = &*stream,
            entry,
            "request"
        ),
        (None, None) => tracing::info!(
            route,
            id,
            event_type,
            outcome = outcome.label(),
            status,
            latency_ms,
            "request"
        ),
        (Some(error), _) => tracing::warn!(
            route,
            id,
            event_type,
            outcome = outcome.label(),
            status,
            latency_ms,
            error,
            "request"
        ),
    }
    response
}

/// Counts a request in `hookwall_in_flight_requests` until dropped, also when hyper drops
/// the request's future because the sender went away.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn start(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The outcome and status of a verification failure.
pub fn verify_outcome(err: VerifyError) -> (Outcome, StatusCode) {
    match err {
        VerifyError::MissingHeader(_) => (Outcome::MissingHeader, StatusCode::BAD_REQUEST),
        VerifyError::MalformedHeader(_) => (Outcome::MalformedHeader, StatusCode::BAD_REQUEST),
        VerifyError::TimestampTooOld => (Outcome::TimestampTooOld, StatusCode::UNAUTHORIZED),
        VerifyError::TimestampTooNew => (Outcome::TimestampTooNew, StatusCode::UNAUTHORIZED),
        VerifyError::InvalidSignature => (Outcome::InvalidSignature, StatusCode::UNAUTHORIZED),
    }
}

/// The one mapping from a result to outcome, status and body. No catch-all arm: a new
/// variant must be decided here.
fn rescue(result: Result<Done, Reject>) -> (Outcome, Response<Full<Bytes>>) {
    let refusal = |outcome: Outcome, status: StatusCode| {
        (
            outcome,
            json(status, format!(r#"{{"error":"{}"}}"#, outcome.label())),
        )
    };
    let retry_after_1 = |(outcome, mut response): (Outcome, Response<Full<Bytes>>)| {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        (outcome, response)
    };
    match result {
        Ok(Done::Duplicate) => (
            Outcome::Duplicate,
            json(StatusCode::OK, r#"{"outcome":"duplicate"}"#.into()),
        ),
        Ok(Done::Filtered) => (
            Outcome::Filtered,
            json(StatusCode::OK, r#"{"outcome":"filtered"}"#.into()),
        ),
        Ok(Done::Queued) => (
            Outcome::Queued,
            json(StatusCode::OK, r#"{"outcome":"queued"}"#.into()),
        ),
        Ok(Done::Upstream(reply)) => {
            let outcome = if reply.status.is_success() {
                Outcome::Forwarded
            } else {
                Outcome::UpstreamRejected
            };
            let mut response = Response::new(Full::new(reply.body));
            *response.status_mut() = reply.status;
            *response.headers_mut() = reply.headers;
            (outcome, response)
        }
        Err(Reject::HeadersTooLarge) => refusal(
            Outcome::HeadersTooLarge,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
        Err(Reject::NotFound) => refusal(Outcome::NotFound, StatusCode::NOT_FOUND),
        Err(Reject::MethodNotAllowed) => {
            let (outcome, mut response) =
                refusal(Outcome::MethodNotAllowed, StatusCode::METHOD_NOT_ALLOWED);
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            (outcome, response)
        }
        Err(Reject::BodyTooLarge) => refusal(Outcome::BodyTooLarge, StatusCode::PAYLOAD_TOO_LARGE),
        Err(Reject::BodyTimeout) => refusal(Outcome::BodyTimeout, StatusCode::REQUEST_TIMEOUT),
        Err(Reject::Verify(err)) => {
            let (outcome, status) = verify_outcome(err);
            refusal(outcome, status)
        }
        Err(Reject::Overloaded | Reject::BufferFull) => retry_after_1(refusal(
            Outcome::Overloaded,
            StatusCode::SERVICE_UNAVAILABLE,
        )),
        Err(Reject::InFlight) => refusal(Outcome::InFlight, StatusCode::CONFLICT),
        Err(Reject::StoreUnavailable(_)) => {
            // Redis is down for a while more likely than a moment: the sender waits a bit.
            let (outcome, mut response) =
                refusal(Outcome::StoreUnavailable, StatusCode::SERVICE_UNAVAILABLE);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            (outcome, response)
        }
        Err(Reject::Upstream(err)) => match err {
            ForwardError::Connect(_) | ForwardError::Body(_) => {
                refusal(Outcome::UpstreamUnavailable, StatusCode::BAD_GATEWAY)
            }
            ForwardError::Timeout(_) => {
                refusal(Outcome::UpstreamTimeout, StatusCode::GATEWAY_TIMEOUT)
            }
        },
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle_inner<'a>(
    shared: &Arc<Shared>,
    worker: usize,
    live: &'a Arc<Live>,
    request: Request<Incoming>,
    peer: &Peer,
    trace: &mut Trace<'a>,
) -> Result<Done, Reject> {
    check_header_limits(request.headers(), live.limits())?;
    let (route_index, route) = live.route(request.uri().path()).ok_or(Reject::NotFound)?;
    trace.route = Some(route);
    if request.method() != Method::POST {
        return Err(Reject::MethodNotAllowed);
    }
    let (parts, body) = request.into_parts();

    // Everything the head alone can refuse is refused before a byte of the body is held.
    let signed = SignedHeaders::from_headers(&parts.headers)?;
    if trace.logged {
        trace.id = Some(signed.id.to_owned());
    }
    let now = unix_now();
    let verifier = &route.route.verifier;
    let timestamp = verifier.check_head(&signed, now)?;
    let (body, reservation) = read_body(
        body,
        &parts.headers,
        live.limits(),
        &shared.store.budget,
        worker,
    )
    .await?;
    let verified = verifier.check_signature(&signed, timestamp, &body)?;

    // From here on the request is authentic and fresh.
    route.metrics.secrets_matched(verified.matched);
    route
        .metrics
        .clock_skew
        .observe(verified.timestamp as f64 - now as f64);
    route.metrics.last_verified.set(now as f64);
    let event = event_type(&body);
    shared.metrics.event(&route.metrics, &event);
    if let (true, EventType::Valid(name)) = (trace.logged, &event) {
        trace.event_type = Some(name.to_string());
    }

    // Held until the forward ends; refused before the id is claimed.
    let permit = route
        .forwards
        .clone()
        .try_acquire_owned()
        .map_err(|_| Reject::Overloaded)?;

    let key = dedup::key(&route.route.name, signed.id);
    let id = Id {
        route: &route.route.name,
        id: signed.id,
        key: &key,
    };
    let on_error = live.config.dedup.on_store_error;
    let fallbacks = &route.metrics.dedup_fallbacks;
    let upstream = match route.route.rules.decide(event.as_str()) {
        Decision::Forward(upstream, rule) => (upstream, rule),
        Decision::Stream(stream) => {
            let id = signed.id.to_owned();
            let mut headers = parts.headers;
            forward::upstream_headers(
                &mut headers,
                &forward::Additions {
                    peer,
                    trust_forwarded: live.config.listen.trust_forwarded_headers,
                    host: None,
                    authority: parts.uri.authority().map(|a| a.as_str()),
                    route: &route.name_header,
                    event_type: event.as_str(),
                    body_len: body.len(),
                },
            );
            let entry = Entry::new(
                &id,
                event.as_str(),
                &route.route.name,
                verified.timestamp,
                body.clone(),
                &headers,
            );
            let id = Id {
                route: &route.route.name,
                id: &id,
                key: &key,
            };
            let queued = shared
                .store
                .enqueue(worker, id, stream, &entry)
                .await
                .map_err(Reject::StoreUnavailable)?;
            return match queued {
                Ok(entry_id) => {
                    if trace.logged {
                        trace.queued = Some((stream.clone(), entry_id));
                    }
                    Ok(Done::Queued)
                }
                Err(Seen::Delivered) => Ok(Done::Duplicate),
                Err(Seen::InFlight | Seen::New) => Err(Reject::InFlight),
            };
        }
        // Dedup is looked up before routing, but only a forward claims an id.
        Decision::Drop | Decision::NoMatch => {
            let seen = shared
                .store
                .lookup(worker, id, on_error, fallbacks)
                .await
                .map_err(Reject::StoreUnavailable)?;
            return match seen {
                Seen::Delivered => Ok(Done::Duplicate),
                Seen::InFlight => Err(Reject::InFlight),
                Seen::New => Ok(Done::Filtered),
            };
        }
    };
    let claimed = shared
        .store
        .claim(worker, id, on_error, fallbacks)
        .await
        .map_err(Reject::StoreUnavailable)?;
    let mut claim = match claimed {
        Ok(claim) => claim,
        Err(Seen::Delivered) => return Ok(Done::Duplicate),
        Err(Seen::InFlight) | Err(Seen::New) => return Err(Reject::InFlight),
    };
    claim.hold_body(reservation.into_held());
    let (upstream, rule) = upstream;

    let mut headers = parts.headers;
    forward::upstream_headers(
        &mut headers,
        &forward::Additions {
            peer,
            trust_forwarded: live.config.listen.trust_forwarded_headers,
            host: Some(&upstream.host),
            authority: parts.uri.authority().map(|a| a.as_str()),
            route: &route.name_header,
            event_type: event.as_str(),
            body_len: body.len(),
        },
    );
    let target = upstream.target(parts.uri.query());
    let job = Forward {
        live: live.clone(),
        route: route_index,
        rule,
        target,
        headers,
        body,
        claim,
        _permit: permit,
    };
    let reply = forward(job, route, &key, &shared.detached).await?;
    Ok(Done::Upstream(reply))
}

/// One forward with everything it needs, owned, so that it can outlive its request: the
/// config it started under (its route and rule by index), the id's claim (which also
/// keeps the body's room in the buffer budget) and the route's `max_in_flight` permit,
/// all held until it ends.
struct Forward {
    live: Arc<Live>,
    route: usize,
    rule: usize,
    target: Uri,
    headers: HeaderMap,
    body: Bytes,
    claim: Claim,
    _permit: OwnedSemaphorePermit,
}

/// How a forward ended, and its id for the log line of one that outlived its request.
struct Ended {
    result: Result<UpstreamReply, ForwardError>,
    claim: Claim,
}

impl Forward {
    /// The exchange. A 2xx status line marks the id delivered at once; anything else
    /// releases it when the claim is dropped. Counted in `hookwall_upstream_*` when it
    /// ends. No timer of its own: the sender's wait bounds it inline, and
    /// `upstream_deadline` bounds it once detached (`Detachable`).
    async fn run(self) -> Ended {
        let Forward {
            live,
            route,
            rule,
            target,
            headers,
            body,
            mut claim,
            _permit,
        } = self;
        let state = live.route_at(route);
        let upstream = state
            .route
            .rules
            .upstream(rule)
            .expect("the rule was decided on this same config");
        let started = Instant::now();
        let exchange =
            forward::exchange(state.client(), upstream, target, headers, body, |status| {
                if status.is_success() {
                    claim.delivered();
                }
            });
        let result = exchange.await;
        state
            .metrics
            .upstream_duration
            .observe(started.elapsed().as_secs_f64());
        state.metrics.upstream_response(match &result {
            Ok(reply) => UpstreamClass::Status(reply.status.as_u16()),
            Err(ForwardError::Timeout(_)) => UpstreamClass::Timeout,
            Err(ForwardError::Connect(_) | ForwardError::Body(_)) => UpstreamClass::Error,
        });
        Ended { result, claim }
    }
}

/// The sender waits for the forward up to the route's `upstream_timeout`; past it, or if
/// the sender hangs up, the forward goes on in a task of its own, until the route's
/// `upstream_deadline` (from the start).
async fn forward(
    job: Forward,
    route: &RouteState,
    key: &str,
    tracker: &TaskTracker,
) -> Result<UpstreamReply, ForwardError> {
    let started = tokio::time::Instant::now();
    let wait = route.route.upstream_timeout;
    let mut running = Detachable {
        forward: Some(Box::pin(job.run())),
        tracker,
        route,
        key,
        deadline: started + route.route.upstream_deadline,
    };
    let Some(future) = running.forward.as_mut() else {
        unreachable!("set just above")
    };
    match tokio::time::timeout_at(started + wait, future).await {
        Ok(ended) => {
            running.forward = None;
            ended.result
        }
        Err(_) => {
            running.detach("upstream_timeout");
            Err(ForwardError::Timeout(wait))
        }
    }
}

type Running = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// A forward the request is waiting for. Dropped unfinished (the sender hung up and hyper
/// dropped the request) or told to `detach` (the sender's wait ran out), it moves to a
/// task of its own: cancelling the request does not undo the backend's work, so only the
/// backend's answer may decide the id. There, `upstream_deadline` abandons it: the
/// connection is closed and the id released.
struct Detachable<'a> {
    forward: Option<Running>,
    tracker: &'a TaskTracker,
    route: &'a RouteState,
    /// The dedup key, for the log line.
    key: &'a str,
    deadline: tokio::time::Instant,
}

impl Detachable<'_> {
    fn detach(&mut self, why: &'static str) {
        let Some(forward) = self.forward.take() else {
            return;
        };
        // Outside a runtime (it is shutting down) the forward is dropped: its claim is
        // released and the sender's retry goes through.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // What the task needs if the deadline comes first (the forward, dropped, then
        // tells nothing): made only here, off the common path.
        let route = self.route.route.name.clone();
        let id = self
            .key
            .split_once('\0')
            .map_or(self.key, |(_, id)| id)
            .to_owned();
        let metrics = self.route.metrics.clone();
        let (deadline, after) = (self.deadline, self.route.route.upstream_deadline);
        runtime.spawn(self.tracker.track_future(async move {
            let ended = tokio::time::timeout_at(deadline, forward).await;
            let Ok(Ended { result, claim }) = ended else {
                // Dropping the forward closed the upstream connection and released the id.
                metrics.upstream_duration.observe(after.as_secs_f64());
                metrics.upstream_response(UpstreamClass::Timeout);
                tracing::warn!(
                    route = &*route,
                    id,
                    detached = why,
                    "forward abandoned at upstream_deadline; its id is released"
                );
                return;
            };
            match result {
                Ok(reply) => tracing::info!(
                    route = &*route,
                    id,
                    detached = why,
                    status = reply.status.as_u16(),
                    delivered = claim.is_delivered(),
                    "forward ended after its request"
                ),
                Err(err) => tracing::warn!(
                    route = &*route,
                    id,
                    detached = why,
                    delivered = claim.is_delivered(),
                    error = logging::chain(&err),
                    "forward ended after its request"
                ),
            }
        }));
    }
}

impl Drop for Detachable<'_> {
    fn drop(&mut self) {
        self.detach("sender_gone");
    }
}

fn check_header_limits(headers: &HeaderMap, limits: &Limits) -> Result<(), Reject> {
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

/// Reads the whole body within `body_read_timeout`, refusing it as soon as it is known to
/// be too large: from Content-Length before reading, or while reading. Its room in the
/// buffer budget is taken before reading (the whole Content-Length), or frame by frame
/// when it has none; no room is a 503. A body that arrives in one piece is not copied.
async fn read_body<'a>(
    mut body: Incoming,
    headers: &HeaderMap,
    limits: &Limits,
    budget: &'a Budget,
    worker: usize,
) -> Result<(Bytes, Reservation<'a>), Reject> {
    let max = limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(Reject::BodyTooLarge);
    }
    let mut reservation = budget
        .reserve(worker, declared.unwrap_or(0))
        .ok_or(Reject::BufferFull)?;
    let deadline = tokio::time::Instant::now() + limits.body_read_timeout;
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut total: u64 = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(Reject::BodyTimeout),
            Ok(None) => break,
            // The sender went away or broke the framing: the body never arrived whole.
            Ok(Some(Err(_))) => return Err(Reject::BodyTimeout),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > max {
            return Err(Reject::BodyTooLarge);
        }
        if total > reservation.bytes() && !reservation.grow(total - reservation.bytes()) {
            return Err(Reject::BufferFull);
        }
        match (&mut first, &mut rest) {
            (None, None) => first = Some(data),
            (Some(head), None) => {
                let capacity = declared.unwrap_or(total).min(max) as usize;
                let mut buf = BytesMut::with_capacity(capacity.max(total as usize));
                buf.extend_from_slice(head);
                buf.extend_from_slice(&data);
                rest = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    let body = match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    };
    Ok((body, reservation))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::HeaderKind;

    fn status_of(result: Result<Done, Reject>) -> (&'static str, u16) {
        let (outcome, response) = rescue(result);
        (outcome.label(), response.status().as_u16())
    }

    /// The contract's table, row by row, for everything `rescue` decides.
    #[test]
    fn reject_to_status_table() {
        let table: Vec<(Result<Done, Reject>, &str, u16)> = vec![
            (Err(Reject::HeadersTooLarge), "headers_too_large", 431),
            (Err(Reject::NotFound), "not_found", 404),
            (Err(Reject::MethodNotAllowed), "method_not_allowed", 405),
            (Err(Reject::BodyTooLarge), "body_too_large", 413),
            (Err(Reject::BodyTimeout), "body_timeout", 408),
            (
                Err(VerifyError::MissingHeader(HeaderKind::Id).into()),
                "missing_header",
                400,
            ),
            (
                Err(VerifyError::MalformedHeader(HeaderKind::Timestamp).into()),
                "malformed_header",
                400,
            ),
            (
                Err(VerifyError::TimestampTooOld.into()),
                "timestamp_too_old",
                401,
            ),
            (
                Err(VerifyError::TimestampTooNew.into()),
                "timestamp_too_new",
                401,
            ),
            (
                Err(VerifyError::InvalidSignature.into()),
                "invalid_signature",
                401,
            ),
            (Err(Reject::Overloaded), "overloaded", 503),
            (Err(Reject::BufferFull), "overloaded", 503),
            (Ok(Done::Duplicate), "duplicate", 200),
            (Err(Reject::InFlight), "in_flight", 409),
            (Ok(Done::Filtered), "filtered", 200),
            (Ok(Done::Queued), "queued", 200),
            (
                Err(ForwardError::Timeout(Duration::from_secs(1)).into()),
                "upstream_timeout",
                504,
            ),
        ];
        for (result, label, status) in table {
            assert_eq!(status_of(result), (label, status));
        }
        let reply = |status: u16| UpstreamReply {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::from_iter([(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            )]),
            body: Bytes::from_static(b"ok"),
        };
        assert_eq!(
            status_of(Ok(Done::Upstream(reply(204)))),
            ("forwarded", 204)
        );
        assert_eq!(
            status_of(Ok(Done::Upstream(reply(500)))),
            ("upstream_rejected", 500)
        );
    }

    #[test]
    fn refusals_are_small_json_and_say_nothing_more() {
        let (_, response) = rescue(Err(VerifyError::InvalidSignature.into()));
        assert_eq!(response.headers()["content-type"], "application/json");
        let (_, response) = rescue(Err(Reject::MethodNotAllowed));
        assert_eq!(response.headers()["allow"], "POST");
        for overloaded in [Reject::Overloaded, Reject::BufferFull] {
            let (_, response) = rescue(Err(overloaded));
            assert_eq!(response.headers()["retry-after"], "1");
        }
    }
}
