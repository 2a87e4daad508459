//! One request as its stages see it: `Context`, what every stage reads (the process, the
//! worker, its config, the peer, the request's span), and `Arrived`, a verified event on
//! its way to the stage its rule chose. Shared by the enforcing path (`pipeline`) and
//! shadow mode (`shadow`), which `pipeline` hands shadow routes to: here, neither has to
//! import the other for them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;
use hyper::body::Incoming;

use crate::body::BodyError;
use crate::budget::Room;
use crate::deliveries::Facts;
use crate::forward::{self, Peer};
use crate::route::EventType;
use crate::state::{Live, RouteState, Shared};
use crate::store::Id;
use crate::verify::{Verified, VerifiedId};

/// What every stage of one request reads.
pub(crate) struct Context<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) worker: usize,
    pub(crate) live: &'a Arc<Live>,
    pub(crate) peer: &'a Peer,
    pub(crate) span: &'a tracing::Span,
}

impl<'a> Context<'a> {
    /// Reads a request's body against its limits and this worker's body budget.
    pub(crate) async fn read_body(
        &self,
        body: Incoming,
        headers: &HeaderMap,
    ) -> Result<(Bytes, Room), BodyError> {
        let budget = self.shared.budget(self.worker);
        crate::body::read(body, headers, self.live.limits(), budget).await
    }

    /// Counts a verified request (the secrets that signed it, its clock skew, its event
    /// type), names it in the span and in the request's `facts` (the recent deliveries):
    /// its event type, for the rules.
    pub(crate) fn verified<'b>(
        &self,
        route: &RouteState,
        verified: &Verified<'_, 'b>,
        now: u64,
        facts: &mut Facts,
    ) -> EventType<'b> {
        let metrics = &route.metrics;
        metrics.secrets_matched(verified.matched);
        if let Some(timestamp) = verified.timestamp {
            metrics.clock_skew.observe(timestamp as f64 - now as f64);
        }
        metrics.last_verified.set(now as f64);
        if let VerifiedId::Body(id) = &verified.id {
            self.span.record("id", &**id);
        }
        if let Some(digest) = &verified.digest {
            self.span.record("key", digest.as_str());
        }
        let event = verified.event_type.clone();
        self.shared.metrics.event(metrics, &event);
        if let EventType::Valid(name) = &event {
            self.span.record("event_type", &**name);
        }
        let valid = match &event {
            EventType::Valid(name) => Some(&**name),
            EventType::None | EventType::Invalid => None,
        };
        let secret = verified.matched.first();
        crate::telemetry::secret_index(self.span, secret);
        facts.verified(verified.id.as_str(), verified.key(), valid, secret);
        event
    }
}

/// A verified event on its way to the stage its rule chose.
pub(crate) struct Arrived<'a> {
    pub(crate) route: &'a RouteState,
    /// What dedup keys it by: the signed id, or a digest of what was signed.
    pub(crate) id: Id,
    /// The id the sender gave, when it is not the key's (`sender_id()`).
    pub(crate) sender_id: Option<String>,
    pub(crate) event_type: &'a str,
    /// The signed timestamp, Unix seconds (`None`: the provider signs none).
    pub(crate) timestamp: Option<u64>,
    pub(crate) parts: Parts,
}

impl Arrived<'_> {
    /// The id the sender gave: the key's, unless dedup keys a digest.
    pub(crate) fn sender_id(&self) -> &str {
        self.sender_id.as_deref().unwrap_or(self.id.id())
    }

    /// The sender's headers as the upstream (or a stream entry) gets them: one rewrite
    /// for both. `host` is the upstream's `Host`; a stream entry has none.
    pub(crate) fn outgoing_headers(
        &mut self,
        cx: &Context<'_>,
        host: Option<&HeaderValue>,
        body_len: usize,
    ) -> HeaderMap {
        let mut headers = std::mem::take(&mut self.parts.headers);
        forward::upstream_headers(
            &mut headers,
            &forward::Additions {
                peer: cx.peer,
                trust_forwarded: cx.live.config.listen.trust_forwarded_headers,
                host,
                authority: self.parts.uri.authority().map(|a| a.as_str()),
                route: &self.route.name_header,
                event_type: self.event_type,
                body_len,
            },
        );
        headers
    }
}

/// Now, in Unix seconds: what a signed timestamp is checked against.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
