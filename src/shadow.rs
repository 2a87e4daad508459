//! Shadow mode (`enforce = false`, contract §11): every request that reaches the route is
//! forwarded to its upstream with `hookwall-verdict: <what enforcing would have answered>`,
//! whatever verification or dedup decided. hookwall's own protections still hold (header
//! limits, the body's bounds, budget and timeouts, `max_in_flight`), and dedup state is
//! kept as if enforcing: a verified new id is claimed, and delivered by a 2xx.

use http::header::HeaderValue;
use http::{HeaderName, Method, Request};
use hyper::body::Incoming;

use crate::dedup::Taken;
use crate::deliveries::Facts;
use crate::forward::{self, Holds};
use crate::outcome::{verify_outcome, Done, Outcome, Reject};
use crate::request::{unix_now, Arrived, Context};
use crate::route::EventType;
use crate::state::RouteState;
use crate::store::{Claim, Id};

/// The header that tells the upstream what enforcing would have answered.
pub const HOOKWALL_VERDICT: HeaderName = HeaderName::from_static("hookwall-verdict");

/// Watches one request on a shadow route: reads it as enforcing would (its verdict), and
/// forwards it whatever that is. What it learns of the request goes in `facts`.
pub(crate) async fn watch(
    cx: &Context<'_>,
    route: &RouteState,
    request: Request<Incoming>,
    facts: &mut Facts,
) -> Result<Done, Reject> {
    let (parts, body) = request.into_parts();
    let now = unix_now();
    let scheme = &route.route.scheme;
    if let Some(id) = scheme.sent_id(&parts.headers) {
        cx.span.record("id", id);
        facts.id(id);
    }
    let head = scheme.head(&parts.headers, now);
    // hookwall's own bounds are not watched: they refuse.
    let (body, room) = cx.read_body(body, &parts.headers).await?;
    let permit = route
        .forwards
        .clone()
        .try_acquire_owned()
        .map_err(|_| Reject::Overloaded)?;
    // As enforcing goes: the method, the signature, then dedup.
    let verified = match parts.method {
        Method::POST => head
            .and_then(|head| scheme.body(&head, &body))
            .map_err(|err| verify_outcome(err).0),
        _ => Err(Outcome::MethodNotAllowed),
    };
    let (id, event, timestamp, verdict, claim) = match verified {
        Err(verdict) => (
            Id::new(&route.route.name, ""),
            EventType::None,
            None,
            verdict,
            None,
        ),
        Ok(verified) => {
            let event = cx.verified(route, &verified, now, facts);
            let id = Id::new(&route.route.name, verified.key());
            let (verdict, claim) = claimed(cx, route, &id).await;
            (id, event, verified.timestamp, verdict, claim)
        }
    };
    route.metrics.shadow_verdict(verdict);
    let Some(upstream) = route.route.rules.only_upstream() else {
        // Config validation gives a shadow route its `upstream` and no rules.
        return Err(Reject::NotFound);
    };
    let method = parts.method.clone();
    let mut arrived = Arrived {
        route,
        id,
        sender_id: None,
        event_type: event.as_str(),
        timestamp,
        parts,
    };
    let mut headers = arrived.outgoing_headers(cx, Some(&upstream.host), body.len());
    headers.insert(HOOKWALL_VERDICT, HeaderValue::from_static(verdict.label()));
    let target = upstream.target(arrived.parts.uri.query());
    let request = forward::upstream_request(method, target, headers, body.clone());
    let holds = Holds {
        claim,
        permit,
        room,
    };
    let job = route.forward(arrived.id, upstream, request, holds);
    let reply = forward::run(job, cx.shared.tasks.of(cx.worker)).await?;
    Ok(Done::Upstream(reply))
}

/// The verdict dedup gives a verified id, and its claim when it is new (so that the
/// upstream's 2xx delivers it, as enforcing would).
async fn claimed(cx: &Context<'_>, route: &RouteState, id: &Id) -> (Outcome, Option<Claim>) {
    let on_error = cx.live.config.dedup.on_store_error;
    let fallbacks = &route.metrics.dedup_fallbacks;
    match cx
        .shared
        .store
        .claim(cx.worker, id, on_error, fallbacks)
        .await
    {
        Ok(Ok(claim)) => (Outcome::Forwarded, Some(claim)),
        Ok(Err(Taken::Delivered)) => (Outcome::Duplicate, None),
        Ok(Err(Taken::Delivering)) => (Outcome::InFlight, None),
        Err(_) => (Outcome::StoreUnavailable, None),
    }
}
