//! Shopify: `X-Shopify-Hmac-Sha256: <base64>`, HMAC-SHA256 of the body with the app's
//! client secret's bytes. Only the body is signed (not `X-Shopify-Triggered-At`, not
//! `X-Shopify-Webhook-Id`, not `X-Shopify-Topic`): dedup keys a digest of the body, the
//! only replay defence, as for GitHub. The event type is `X-Shopify-Topic` (`orders/create`).

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};

use super::mac::{self, Digest, Encoding, MacKey, Signatures};
use super::{
    header, id_header, optional_header, ContentDigest, HeaderKind, Verified, VerifiedId,
    VerifyError,
};
use crate::route::EventType;

const SIGNATURE: HeaderName = HeaderName::from_static("x-shopify-hmac-sha256");
pub(super) const WEBHOOK_ID: HeaderName = HeaderName::from_static("x-shopify-webhook-id");
const TOPIC: HeaderName = HeaderName::from_static("x-shopify-topic");

#[derive(Debug, Clone)]
pub struct Shopify {
    keys: Vec<MacKey>,
}

pub struct Head<'h> {
    pub id: &'h str,
    signature: Digest,
    topic: Option<&'h str>,
}

pub fn head(headers: &HeaderMap) -> Result<Head<'_>, VerifyError> {
    let id = id_header(headers, &WEBHOOK_ID)?;
    let value = header(headers, &SIGNATURE, HeaderKind::Signature)?;
    let signature = Digest::decode(value, Encoding::Base64, 32)
        .ok_or(VerifyError::MalformedHeader(HeaderKind::Signature))?;
    let topic = optional_header(headers, &TOPIC, HeaderKind::Id).unwrap_or(None);
    Ok(Head {
        id,
        signature,
        topic,
    })
}

impl Shopify {
    pub fn new(secrets: &[Vec<u8>]) -> Shopify {
        Shopify {
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
            event_type: head.topic.map_or(EventType::None, |topic| {
                EventType::named(Cow::Owned(topic.to_owned()))
            }),
            matched,
        })
    }
}
