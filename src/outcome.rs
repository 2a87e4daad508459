//! How a request ends: `Done` or `Reject`, and `rescue`, the one mapping from a result to
//! outcome, status and body. The outcomes and their labels (contract §3) are declared in
//! `labels`, which `metrics` counts by without importing this file's errors.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::body::BodyError;
use crate::forward::{ForwardError, UpstreamReply};
pub use crate::labels::Outcome;
use crate::store::StoreError;
use crate::verify::VerifyError;

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
/// or hookwall's own bounds (`Overloaded`, `Body(BudgetFull)`).
#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error("more headers, or header bytes, than the limits allow")]
    HeadersTooLarge,
    #[error("no route has this path")]
    NotFound,
    #[error("method is not POST")]
    MethodNotAllowed,
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("max_in_flight forwards already running on the route")]
    Overloaded,
    #[error("this id is being delivered right now")]
    BeingDelivered,
    #[error("the dedup store is unreachable")]
    StoreUnavailable(#[source] StoreError),
    #[error(transparent)]
    Upstream(#[from] ForwardError),
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
pub fn rescue(result: Result<Done, Reject>) -> (Outcome, Response<Full<Bytes>>) {
    match result {
        Ok(Done::Duplicate) => (
            Outcome::Duplicate,
            json(StatusCode::OK, r#"{"outcome":"duplicate"}"#),
        ),
        Ok(Done::Filtered) => (
            Outcome::Filtered,
            json(StatusCode::OK, r#"{"outcome":"filtered"}"#),
        ),
        Ok(Done::Queued) => (
            Outcome::Queued,
            json(StatusCode::OK, r#"{"outcome":"queued"}"#),
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
        Err(reject) => {
            let (outcome, status, retry_after) = refusal(&reject);
            let mut response = json(status, outcome.refusal_body());
            let headers = response.headers_mut();
            if let Some(seconds) = retry_after {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
            }
            if outcome == Outcome::MethodNotAllowed {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            (outcome, response)
        }
    }
}

/// A refusal's outcome, status and `Retry-After` (in seconds), if the sender should wait.
fn refusal(reject: &Reject) -> (Outcome, StatusCode, Option<&'static str>) {
    use StatusCode as S;
    match reject {
        Reject::HeadersTooLarge => (
            Outcome::HeadersTooLarge,
            S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            None,
        ),
        Reject::NotFound => (Outcome::NotFound, S::NOT_FOUND, None),
        Reject::MethodNotAllowed => (Outcome::MethodNotAllowed, S::METHOD_NOT_ALLOWED, None),
        Reject::Body(BodyError::TooLarge) => (Outcome::BodyTooLarge, S::PAYLOAD_TOO_LARGE, None),
        Reject::Body(BodyError::Timeout | BodyError::TooSlow | BodyError::GaveWay) => {
            (Outcome::BodyTimeout, S::REQUEST_TIMEOUT, None)
        }
        Reject::Body(BodyError::BudgetFull) | Reject::Overloaded => {
            (Outcome::Overloaded, S::SERVICE_UNAVAILABLE, Some("1"))
        }
        Reject::Verify(err) => {
            let (outcome, status) = verify_outcome(*err);
            (outcome, status, None)
        }
        Reject::BeingDelivered => (Outcome::InFlight, S::CONFLICT, None),
        // Redis is down for a while more likely than a moment: the sender waits a bit.
        Reject::StoreUnavailable(_) => {
            (Outcome::StoreUnavailable, S::SERVICE_UNAVAILABLE, Some("5"))
        }
        // §3: refused, reset or unreachable, whether the request was written or not.
        Reject::Upstream(
            ForwardError::Connect(_)
            | ForwardError::Reset(_)
            | ForwardError::Body(_)
            | ForwardError::Cut,
        ) => (Outcome::UpstreamUnavailable, S::BAD_GATEWAY, None),
        Reject::Upstream(ForwardError::Timeout(_)) => {
            (Outcome::UpstreamTimeout, S::GATEWAY_TIMEOUT, None)
        }
    }
}

/// An answer hookwall gives itself: `body`, small JSON of its own.
pub(crate) fn json(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::HeaderKind;
    use http::HeaderMap;
    use std::time::Duration;

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
            (
                Err(Reject::Body(BodyError::TooLarge)),
                "body_too_large",
                413,
            ),
            (Err(Reject::Body(BodyError::Timeout)), "body_timeout", 408),
            (Err(Reject::Body(BodyError::TooSlow)), "body_timeout", 408),
            (Err(Reject::Body(BodyError::GaveWay)), "body_timeout", 408),
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
            (Err(Reject::Body(BodyError::BudgetFull)), "overloaded", 503),
            (Ok(Done::Duplicate), "duplicate", 200),
            (Err(Reject::BeingDelivered), "in_flight", 409),
            (Ok(Done::Filtered), "filtered", 200),
            (Ok(Done::Queued), "queued", 200),
            (
                Err(Reject::StoreUnavailable(StoreError::Down)),
                "store_unavailable",
                503,
            ),
            (
                Err(ForwardError::Timeout(Duration::from_secs(1)).into()),
                "upstream_timeout",
                504,
            ),
            (Err(ForwardError::Cut.into()), "upstream_unavailable", 502),
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
        assert_eq!(response.headers().len(), 1);
        let (_, response) = rescue(Err(Reject::MethodNotAllowed));
        assert_eq!(response.headers()["allow"], "POST");
        for overloaded in [Reject::Overloaded, Reject::Body(BodyError::BudgetFull)] {
            let (_, response) = rescue(Err(overloaded));
            assert_eq!(response.headers()["retry-after"], "1");
        }
        let (_, response) = rescue(Err(Reject::StoreUnavailable(StoreError::Down)));
        assert_eq!(response.headers()["retry-after"], "5");
    }
}
