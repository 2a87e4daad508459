//! Stripe: `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 of
//! `{t}.{body}` with the endpoint secret's bytes; only `v1` entries count. The id and the
//! event type are the verified body's top-level `id` (`evt_…`) and `type`.

use http::{HeaderMap, HeaderName};
use serde::Deserialize;

use super::mac::{self, Digest, Encoding, MacKey, Signatures};
use super::{
    body_id, decimal, header, within, HeaderKind, Verified, VerifiedId, VerifyError,
    MAX_SIGNATURE_HEADER_BYTES,
};
use crate::route::{EventType, Text};

const STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");

/// Most comma-separated items read from the header (Stripe sends two or three).
const MAX_ITEMS: usize = 32;

#[derive(Debug, Clone)]
pub struct Stripe {
    keys: Vec<MacKey>,
    tolerance_secs: u64,
}

/// The timestamp and the `v1` signatures of a `Stripe-Signature` header.
pub struct Head {
    timestamp: u64,
    signatures: Signatures,
}

impl Stripe {
    /// `secrets`: each secret's bytes, as Stripe's libraries use them (`whsec_` included).
    pub fn new(secrets: &[Vec<u8>], tolerance_secs: u64) -> Stripe {
        Stripe {
            keys: mac::sha256_keys(secrets),
            tolerance_secs,
        }
    }

    pub fn head(&self, headers: &HeaderMap, now: u64) -> Result<Head, VerifyError> {
        let value = header(headers, &STRIPE_SIGNATURE, HeaderKind::Signature)?;
        let malformed = VerifyError::MalformedHeader(HeaderKind::Signature);
        if value.len() > MAX_SIGNATURE_HEADER_BYTES || value.split(',').count() > MAX_ITEMS {
            return Err(malformed);
        }
        let mut timestamp = None;
        let mut signatures = Signatures::default();
        for item in value.split(',').map(str::trim) {
            match item.split_once('=') {
                Some(("t", t)) if timestamp.is_none() => timestamp = Some(t),
                Some(("v1", hex)) => {
                    // Malformed entries are skipped, as other versions are.
                    if let Some(signature) = Digest::decode(hex, Encoding::Hex, 32) {
                        signatures.push(signature);
                    }
                }
                _ => {}
            }
        }
        let text = timestamp.ok_or(VerifyError::MissingHeader(HeaderKind::Timestamp))?;
        let timestamp = super::parse_timestamp(text)
            .ok_or(VerifyError::MalformedHeader(HeaderKind::Timestamp))?;
        within(timestamp, now, self.tolerance_secs)?;
        Ok(Head {
            timestamp,
            signatures,
        })
    }

    pub fn body<'h, 'b>(
        &self,
        head: &Head,
        body: &'b [u8],
    ) -> Result<Verified<'h, 'b>, VerifyError> {
        let mut digits = [0u8; 20];
        let timestamp = decimal(head.timestamp, &mut digits);
        let matched = mac::check(&self.keys, &[timestamp, b".", body], &head.signatures)?;
        #[derive(Deserialize)]
        struct Event<'a> {
            #[serde(borrow)]
            id: Option<&'a serde_json::value::RawValue>,
            #[serde(rename = "type", borrow)]
            kind: Option<Text<'a>>,
        }
        let event: Option<Event<'b>> = serde_json::from_slice(body).ok();
        let (id, kind) = match event {
            Some(Event { id, kind }) => (id, kind.map(|Text(kind)| kind)),
            None => (None, None),
        };
        Ok(Verified {
            id: VerifiedId::Body(body_id(id)?),
            digest: None,
            timestamp: Some(head.timestamp),
            event_type: kind.map_or(EventType::None, EventType::named),
            matched,
        })
    }
}
