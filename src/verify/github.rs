//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body with the secret's
//! bytes (the SHA-1 `X-Hub-Signature` is not accepted). Only the body is signed: neither a
//! timestamp nor `X-GitHub-Delivery` nor `X-GitHub-Event`. So dedup keys a digest of the
//! body (`ContentDigest`), the only replay defence, and the one that stops a captured body
//! from being replayed under a fresh delivery id or relabelled with another event. The event type is `X-GitHub-Event`,
//! then `.` and the body's top-level `action` when it has one (`pull_request.opened`), as
//! octokit names them.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use serde::Deserialize;

use super::mac::{self, Digest, Encoding, MacKey, Signatures};
use super::{
    header, id_header, optional_header, ContentDigest, HeaderKind, Verified, VerifiedId,
    VerifyError,
};
use crate::route::{EventType, Text};

const SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");
pub(super) const DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");
const EVENT: HeaderName = HeaderName::from_static("x-github-event");

#[derive(Debug, Clone)]
pub struct GitHub {
    keys: Vec<MacKey>,
}

pub struct Head<'h> {
    pub id: &'h str,
    signature: Digest,
    event: Option<&'h str>,
}

pub fn head(headers: &HeaderMap) -> Result<Head<'_>, VerifyError> {
    let id = id_header(headers, &DELIVERY)?;
    let value = header(headers, &SIGNATURE, HeaderKind::Signature)?;
    let signature = value
        .strip_prefix("sha256=")
        .and_then(|hex| Digest::decode(hex, Encoding::Hex, 32))
        .ok_or(VerifyError::MalformedHeader(HeaderKind::Signature))?;
    // An event name that is not visible ASCII routes as no type; it does not refuse.
    let event = optional_header(headers, &EVENT, HeaderKind::Id).unwrap_or(None);
    Ok(Head {
        id,
        signature,
        event,
    })
}

impl GitHub {
    pub fn new(secrets: &[Vec<u8>]) -> GitHub {
        GitHub {
            keys: mac::sha256_keys(secrets),
        }
    }

    pub fn body<'h, 'b>(
        &self,
        head: &Head<'h>,
        body: &'b [u8],
    ) -> Result<Verified<'h, 'b>, VerifyError> {
        let matched = mac::check(&self.keys, &[body], &Signatures::one(head.signature))?;
        Ok(Verified {
            id: VerifiedId::Head(head.id),
            // The delivery id is not signed: dedup keys what is.
            digest: Some(ContentDigest::of(&[body])),
            timestamp: None,
            event_type: head
                .event
                .map_or(EventType::None, |event| event_type(event, body)),
            matched,
        })
    }
}

/// `event`, or `event.action` when the body has a top-level string `action`.
fn event_type<'b>(event: &str, body: &[u8]) -> EventType<'b> {
    #[derive(Deserialize)]
    struct Action<'a> {
        #[serde(borrow)]
        action: Option<Text<'a>>,
    }
    let name = match serde_json::from_slice::<Action<'_>>(body) {
        Ok(Action {
            action: Some(Text(action)),
        }) => format!("{event}.{action}"),
        _ => event.to_owned(),
    };
    EventType::named(Cow::Owned(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_type_is_octokits_name() {
        let body = br#"{"action":"opened","pull_request":{"action":"inner"}}"#;
        assert_eq!(
            event_type("pull_request", body).as_str(),
            "pull_request.opened"
        );
        assert_eq!(
            event_type("push", br#"{"ref":"refs/heads/main"}"#).as_str(),
            "push"
        );
        assert_eq!(event_type("push", b"not json").as_str(), "push");
        assert_eq!(event_type("push", br#"{"action":5}"#).as_str(), "push");
    }

    #[test]
    fn a_head_needs_the_delivery_id_and_the_sha256_signature() {
        let signature = format!("sha256={}", "ab".repeat(32));
        let headers = |pairs: &[(&'static str, &str)]| {
            HeaderMap::from_iter(
                pairs
                    .iter()
                    .map(|(k, v)| (HeaderName::from_static(k), v.parse().unwrap())),
            )
        };
        let ok = headers(&[
            ("x-github-delivery", "d1"),
            ("x-hub-signature-256", &signature),
        ]);
        assert_eq!(head(&ok).unwrap().id, "d1");
        let sha1_only = headers(&[("x-github-delivery", "d1"), ("x-hub-signature", "sha1=ab")]);
        let missing = VerifyError::MissingHeader(HeaderKind::Signature);
        assert_eq!(head(&sha1_only).err(), Some(missing));
        let no_id = headers(&[("x-hub-signature-256", &signature)]);
        assert_eq!(
            head(&no_id).err(),
            Some(VerifyError::MissingHeader(HeaderKind::Id))
        );
        let unprefixed = headers(&[("x-github-delivery", "d1"), ("x-hub-signature-256", "ab")]);
        let malformed = VerifyError::MalformedHeader(HeaderKind::Signature);
        assert_eq!(head(&unprefixed).err(), Some(malformed));
    }
}
