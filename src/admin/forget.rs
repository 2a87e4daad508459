//! `POST /dedup/forget` (contract §12): an operator makes a sender's next resend of a
//! delivered id go through (the backend acknowledged it and lost the work). Only with
//! `admin.token` configured and sent as a bearer token, compared in constant time and never
//! logged; the body is read after that, bounded in size and time. With `store = "redis"`
//! the id is forgotten for every replica, otherwise for this process.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::chain::chain;
use crate::config::AdminToken;
use crate::dedup::Seen;
use crate::outcome::json;
use crate::state::Shared;
use crate::store::Id;

pub(super) const PATH: &str = "/dedup/forget";

/// The largest body read: `{"route": …, "key": …}` with a route name and a digest key (71
/// bytes) or a sender's id fits many times over.
const MAX_BODY: usize = 4096;

/// How long the body may take once the head is in: an operator's client sends it at once.
const BODY_TIMEOUT: Duration = Duration::from_secs(2);

/// What to forget: the route's name and the dedup key (the id, or for GitHub and Shopify
/// the `sha256:…` digest of contract §10).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Asked {
    route: String,
    key: String,
}

/// Answers a request for `PATH`, whatever its method.
pub(super) async fn answer(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        let mut response = json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method_not_allowed"}"#,
        );
        let allow = HeaderValue::from_static("POST");
        response.headers_mut().insert(header::ALLOW, allow);
        return response;
    }
    // Read per request: a reload may set, change or remove the token.
    let live = shared.live();
    let Some(token) = &live.config.admin_token else {
        return json(StatusCode::FORBIDDEN, r#"{"error":"forget_disabled"}"#);
    };
    if !authorized(request.headers(), token) {
        let mut response = json(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
        let challenge = HeaderValue::from_static("Bearer");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
        return response;
    }
    let asked = match read(request).await {
        Ok(asked) => asked,
        Err(refused) => return refused,
    };
    let Some(route) = live.config.routes.iter().find(|r| *r.name == *asked.route) else {
        return json(StatusCode::NOT_FOUND, r#"{"error":"unknown_route"}"#);
    };
    let (route, key) = (&*route.name, asked.key.as_str());
    let scope = if shared.store.shared() {
        "every replica (store = redis)"
    } else {
        "this process (store = memory)"
    };
    match shared.store.forget(&Id::new(route, key)).await {
        Ok(Seen::Delivered) => {
            shared.metrics.forgotten(route);
            tracing::warn!(
                route,
                key,
                scope,
                "forgotten by an operator: the next request with this key is forwarded"
            );
            json(StatusCode::OK, r#"{"forgotten":true}"#)
        }
        Ok(Seen::New) => {
            tracing::info!(route, key, "forget: the key is not remembered");
            json(StatusCode::NOT_FOUND, r#"{"forgotten":false}"#)
        }
        Ok(Seen::Delivering) => {
            tracing::info!(
                route,
                key,
                "forget: the key is being delivered; nothing changed"
            );
            json(StatusCode::CONFLICT, r#"{"error":"in_flight"}"#)
        }
        Err(err) => {
            tracing::warn!(
                route,
                key,
                error = chain(&err),
                "forget failed: Redis did not answer"
            );
            let mut response = json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"store_unavailable"}"#,
            );
            let wait = HeaderValue::from_static("5");
            response.headers_mut().insert(header::RETRY_AFTER, wait);
            response
        }
    }
}

/// Whether `Authorization: Bearer <token>` carries the admin token. SHA-256 digests of
/// both are compared, in constant time: neither the time taken nor a length check tells
/// how much of a guess was right, or how long the token is.
fn authorized(headers: &HeaderMap, token: &AdminToken) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| bearer(value.as_bytes()));
    let Some(given) = given else {
        return false;
    };
    let wanted = Sha256::digest(token.0.as_bytes());
    bool::from(Sha256::digest(given).ct_eq(&wanted))
}

/// The credentials of a `Bearer` authorization (the scheme's name in any case).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// The body, within `MAX_BODY` bytes and `BODY_TIMEOUT`, as JSON; or the refusal.
async fn read(request: Request<Incoming>) -> Result<Asked, Response<Full<Bytes>>> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let too_large = || {
        json(
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"error":"body_too_large"}"#,
        )
    };
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), MAX_BODY).collect();
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.is::<LengthLimitError>() => return Err(too_large()),
        Ok(Err(_)) => return Err(bad_request()),
        Err(_) => {
            return Err(json(
                StatusCode::REQUEST_TIMEOUT,
                r#"{"error":"body_timeout"}"#,
            ))
        }
    };
    match serde_json::from_slice::<Asked>(&bytes) {
        Ok(asked) if !asked.route.is_empty() && !asked.key.is_empty() => Ok(asked),
        _ => Err(bad_request()),
    }
}

fn bad_request() -> Response<Full<Bytes>> {
    json(StatusCode::BAD_REQUEST, r#"{"error":"bad_request"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn only_the_bearer_token_itself_is_authorized() {
        let token = AdminToken("an-admin-token-of-some-length".into());
        assert!(authorized(
            &headers("Bearer an-admin-token-of-some-length"),
            &token
        ));
        assert!(authorized(
            &headers("bearer  an-admin-token-of-some-length "),
            &token
        ));
        for wrong in [
            "Bearer an-admin-token-of-some-lengt",
            "Bearer an-admin-token-of-some-length!",
            "Bearer ",
            "Bearer",
            "Basic an-admin-token-of-some-length",
            "an-admin-token-of-some-length",
        ] {
            assert!(!authorized(&headers(wrong), &token), "{wrong:?}");
        }
        assert!(!authorized(&HeaderMap::new(), &token));
    }
}
