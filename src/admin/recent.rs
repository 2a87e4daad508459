//! `GET /deliveries` (contract §12): the recent deliveries as JSON, newest first, filtered
//! by the query (`query`); 404 while the ring is off.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::query::{filter, QueryError};
use crate::deliveries::{Deliveries, Delivery};

/// One entry as JSON: the fields of §12, in its order.
#[derive(Serialize)]
struct Entry<'a> {
    time: String,
    route: Option<&'a str>,
    provider: Option<&'static str>,
    id: Option<&'a str>,
    key: Option<&'a str>,
    event_type: Option<&'a str>,
    outcome: &'static str,
    status: u16,
    upstream_status: Option<u16>,
    duration_ms: f64,
    secret_index: Option<u8>,
    trace_id: Option<&'a str>,
}

impl<'a> From<&'a Delivery> for Entry<'a> {
    fn from(delivery: &'a Delivery) -> Self {
        Entry {
            time: time(delivery),
            route: delivery.route.as_deref(),
            provider: delivery.provider,
            id: delivery.id.as_deref(),
            key: delivery.key.as_deref(),
            event_type: delivery.event_type.as_deref(),
            outcome: delivery.outcome.label(),
            status: delivery.status,
            upstream_status: delivery.upstream_status,
            duration_ms: delivery.duration_ms(),
            secret_index: delivery.secret_index,
            trace_id: delivery.trace_id.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    deliveries: Vec<Entry<'a>>,
}

/// When the request arrived: RFC 3339, UTC, milliseconds (`2025-01-31T09:15:02.481Z`).
pub(super) fn time(delivery: &Delivery) -> String {
    humantime::format_rfc3339_millis(delivery.time).to_string()
}

/// The answer to `GET /deliveries?{query}`.
pub(super) fn deliveries(ring: &Deliveries, query: Option<&str>) -> Response<Full<Bytes>> {
    if !ring.on() {
        return json(
            StatusCode::NOT_FOUND,
            Bytes::from_static(br#"{"error":"recent_deliveries_off"}"#),
        );
    }
    let filter = match filter(query, ring.capacity()) {
        Ok(filter) => filter,
        Err(QueryError::Limit) => {
            return json(
                StatusCode::BAD_REQUEST,
                Bytes::from_static(br#"{"error":"invalid_limit"}"#),
            )
        }
    };
    let snapshot = ring.snapshot(&filter);
    let body = Body {
        deliveries: snapshot.entries.iter().map(Entry::from).collect(),
    };
    match serde_json::to_vec(&body) {
        Ok(bytes) => json(StatusCode::OK, Bytes::from(bytes)),
        // Strings and numbers only: it cannot fail, but a 500 says so if it did.
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(br#"{"error":"internal"}"#),
        ),
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliveries::{Answer, Facts};
    use crate::labels::Outcome;
    use http_body_util::BodyExt as _;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    async fn body(response: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn every_field_in_json() {
        let ring = Deliveries::new(10);
        let mut facts = Facts::new(true);
        facts.verified("msg_1", "msg_1", Some("user.created"), Some(1));
        ring.record(facts.answered(Answer {
            arrived: SystemTime::UNIX_EPOCH + Duration::from_millis(1_738_314_902_481),
            route: Some(Arc::from("clerk")),
            provider: Some("svix"),
            outcome: Outcome::Forwarded,
            status: 204,
            upstream_status: Some(204),
            duration: Duration::from_micros(2_500),
        }));
        let json = body(deliveries(&ring, None)).await;
        assert_eq!(
            json,
            serde_json::json!({"deliveries": [{
                "time": "2025-01-31T09:15:02.481Z",
                "route": "clerk",
                "provider": "svix",
                "id": "msg_1",
                "key": "msg_1",
                "event_type": "user.created",
                "outcome": "forwarded",
                "status": 204,
                "upstream_status": 204,
                "duration_ms": 2.5,
                "secret_index": 1,
                "trace_id": null,
            }]})
        );
    }

    #[tokio::test]
    async fn off_is_404_and_a_bad_limit_400() {
        let response = deliveries(&Deliveries::new(0), None);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = deliveries(&Deliveries::new(5), Some("limit=x"));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body(response).await["error"], "invalid_limit");
    }
}
