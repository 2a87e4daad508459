//! Verifying who sent a request, the way its route's provider signs (contract §10): a
//! `Scheme` chosen at load, whose two steps the pipeline calls: `head` (what the head
//! alone can refuse, before a byte of the body is held) and `body` (the signature, then
//! the id and event type a verified body gives). Pure: no I/O, the clock passed in, every
//! bound checked before any cryptography. One file per provider; `mac` has the HMAC they
//! share.

pub mod github;
pub mod hmac;
pub mod mac;
pub mod shopify;
pub mod stripe;
pub mod svix;

use std::borrow::Cow;
use std::fmt;

use http::{HeaderMap, HeaderName};

use crate::route::EventType;
pub use svix::{SignedHeaders, Verifier, VerifyKey};

/// Longest message id accepted, from a header or a body: Svix ids are ~30 bytes, GitHub's
/// 36; the bound keeps dedup keys small.
pub const MAX_ID_BYTES: usize = 256;
/// Largest signature header accepted. Svix sends at most 11 entries of ~48 bytes.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 8 * 1024;

/// Which signed part of a request a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    Id,
    Timestamp,
    Signature,
}

impl fmt::Display for HeaderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderKind::Id => "id",
            HeaderKind::Timestamp => "timestamp",
            HeaderKind::Signature => "signature",
        })
    }
}

/// Why a request is not authentic and fresh. Each variant is one outcome label of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("{0} header missing or empty")]
    MissingHeader(HeaderKind),
    #[error("{0} header malformed")]
    MalformedHeader(HeaderKind),
    #[error("timestamp older than the tolerance")]
    TimestampTooOld,
    #[error("timestamp newer than the tolerance")]
    TimestampTooNew,
    #[error("no signature matches any secret")]
    InvalidSignature,
}

/// Which of a route's secrets a request carried a valid signature for: bit i is secret i
/// (the first 64 secrets; more still verify, they are only not told apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Matched(u64);

impl Matched {
    pub fn has(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }

    /// The lowest index that matched.
    pub fn first(self) -> Option<usize> {
        (self.0 != 0).then(|| self.0.trailing_zeros() as usize)
    }

    fn add(&mut self, index: usize) {
        if index < 64 {
            self.0 |= 1 << index;
        }
    }
}

/// How a route's senders sign, chosen at load (`provider`).
#[derive(Debug, Clone)]
pub enum Scheme {
    Svix(Verifier),
    Stripe(stripe::Stripe),
    GitHub(github::GitHub),
    Shopify(shopify::Shopify),
    /// Boxed: a declaration is large, and routes are many copies of few schemes.
    Hmac(Box<hmac::Declared>),
}

/// What a head gave, checked: borrowed from the headers.
pub enum Head<'h> {
    Svix(svix::Head<'h>),
    Stripe(stripe::Head),
    GitHub(github::Head<'h>),
    Shopify(shopify::Head<'h>),
    Hmac(hmac::Head<'h>),
}

/// What a verified request gives the rest of the pipeline.
#[derive(Debug)]
pub struct Verified<'h, 'b> {
    /// The id the sender gave: forwarded, logged, in a stream entry.
    pub id: VerifiedId<'h, 'b>,
    /// What dedup keys the request by, when the id is not covered by the signature (a
    /// sender could change it without breaking the signature): a digest of the signed
    /// content (`digest`). `None`: the id is signed, and is the key.
    pub digest: Option<ContentDigest>,
    /// The signed timestamp, Unix seconds; `None` for a provider that signs none.
    pub timestamp: Option<u64>,
    pub event_type: EventType<'b>,
    pub matched: Matched,
}

/// A verified id: from a header, or read from the body once it verified.
#[derive(Debug)]
pub enum VerifiedId<'h, 'b> {
    Head(&'h str),
    Body(Cow<'b, str>),
}

impl VerifiedId<'_, '_> {
    pub fn as_str(&self) -> &str {
        match self {
            VerifiedId::Head(id) => id,
            VerifiedId::Body(id) => id,
        }
    }
}

impl Verified<'_, '_> {
    /// The dedup key: the signed id, or the digest of the signed content.
    pub fn key(&self) -> &str {
        match &self.digest {
            Some(digest) => digest.as_str(),
            None => self.id.as_str(),
        }
    }
}

/// `sha256:` and the hex SHA-256 of a signed content, as dedup's key for a provider whose
/// id is not signed (contract §10, "What decides is signed"): the same signed request sent
/// again under a fresh delivery id, or relabelled with another event type header, has the
/// same key. 71 bytes, within `MAX_ID_BYTES`; never a secret or a signature (it is shown in
/// logs), only what the sender sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDigest([u8; 71]);

impl ContentDigest {
    /// The digest of the signed content, given as the pieces that were signed in order.
    pub fn of(pieces: &[&[u8]]) -> ContentDigest {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        for piece in pieces {
            hasher.update(piece);
        }
        let hash = hasher.finalize();
        let mut text = [0u8; 71];
        text[..7].copy_from_slice(b"sha256:");
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, byte) in hash.iter().enumerate() {
            text[7 + 2 * i] = HEX[usize::from(byte >> 4)];
            text[8 + 2 * i] = HEX[usize::from(byte & 0xf)];
        }
        ContentDigest(text)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Scheme {
    /// The provider's name, as the config writes it.
    pub fn provider(&self) -> &'static str {
        match self {
            Scheme::Svix(_) => "svix",
            Scheme::Stripe(_) => "stripe",
            Scheme::GitHub(_) => "github",
            Scheme::Shopify(_) => "shopify",
            Scheme::Hmac(_) => "hmac",
        }
    }

    /// What can be refused before the body is read: the headers the provider signs with,
    /// their bounds and forms, and the timestamp's window. `now` is Unix seconds.
    pub fn head<'h>(&self, headers: &'h HeaderMap, now: u64) -> Result<Head<'h>, VerifyError> {
        Ok(match self {
            Scheme::Svix(svix) => Head::Svix(svix.head(headers, now)?),
            Scheme::Stripe(stripe) => Head::Stripe(stripe.head(headers, now)?),
            Scheme::GitHub(_) => Head::GitHub(github::head(headers)?),
            Scheme::Shopify(_) => Head::Shopify(shopify::head(headers)?),
            Scheme::Hmac(declared) => Head::Hmac(declared.head(headers, now)?),
        })
    }

    /// The signature over the body, for a head `head` gave; then what the verified body
    /// says (an id it carries, the event type).
    pub fn body<'h, 'b>(
        &self,
        head: &Head<'h>,
        body: &'b [u8],
    ) -> Result<Verified<'h, 'b>, VerifyError> {
        match (self, head) {
            (Scheme::Svix(svix), Head::Svix(head)) => svix.body(head, body),
            (Scheme::Stripe(stripe), Head::Stripe(head)) => stripe.body(head, body),
            (Scheme::GitHub(github), Head::GitHub(head)) => github.body(head, body),
            (Scheme::Shopify(shopify), Head::Shopify(head)) => shopify.body(head, body),
            (Scheme::Hmac(declared), Head::Hmac(head)) => declared.body(head, body),
            // A head is only ever checked by the scheme that made it.
            _ => Err(VerifyError::InvalidSignature),
        }
    }
}

impl Scheme {
    /// The id the head names, as sent, for the request's log line and the recent
    /// deliveries: read before the head's checks, so that a request they refuse (stale,
    /// malformed) is found by its id too. `None` when the body carries the id, or when it is
    /// missing, empty, not visible ASCII or longer than `MAX_ID_BYTES`. Not verified: what
    /// decides is `Verified::key`.
    pub fn sent_id<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        match self {
            Scheme::Svix(_) => svix::sent_id(headers),
            Scheme::Stripe(_) => None,
            Scheme::GitHub(_) => id_header(headers, &github::DELIVERY).ok(),
            Scheme::Shopify(_) => id_header(headers, &shopify::WEBHOOK_ID).ok(),
            Scheme::Hmac(declared) => match &declared.id {
                hmac::Source::Header(name) => id_header(headers, name).ok(),
                hmac::Source::Json(_) => None,
            },
        }
    }
}

/// The value of header `name`, trimmed: missing or empty is `MissingHeader(kind)`, a value
/// that is not visible ASCII (it cannot be what a sender signed) `MalformedHeader(kind)`.
pub(crate) fn header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    kind: HeaderKind,
) -> Result<&'h str, VerifyError> {
    optional_header(headers, name, kind)?.ok_or(VerifyError::MissingHeader(kind))
}

/// `header`, where missing or empty is `None`.
pub(crate) fn optional_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    kind: HeaderKind,
) -> Result<Option<&'h str>, VerifyError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let bytes = value.as_bytes().trim_ascii();
    if bytes.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| s.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .map(Some)
        .ok_or(VerifyError::MalformedHeader(kind))
}

/// An id from a header, within `MAX_ID_BYTES`.
pub(crate) fn id_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<&'h str, VerifyError> {
    let id = header(headers, name, HeaderKind::Id)?;
    if id.len() > MAX_ID_BYTES {
        return Err(VerifyError::MalformedHeader(HeaderKind::Id));
    }
    Ok(id)
}

/// Decimal digits only: no sign, no fraction, no spaces; `None` on overflow.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A timestamp header's value, parsed and within `tolerance_secs` of `now` both ways
/// (inclusive, like every official library).
pub(crate) fn fresh(text: &str, now: u64, tolerance_secs: u64) -> Result<u64, VerifyError> {
    let timestamp =
        parse_timestamp(text).ok_or(VerifyError::MalformedHeader(HeaderKind::Timestamp))?;
    within(timestamp, now, tolerance_secs)?;
    Ok(timestamp)
}

pub(crate) fn within(timestamp: u64, now: u64, tolerance_secs: u64) -> Result<(), VerifyError> {
    if timestamp.saturating_add(tolerance_secs) < now {
        return Err(VerifyError::TimestampTooOld);
    }
    if timestamp > now.saturating_add(tolerance_secs) {
        return Err(VerifyError::TimestampTooNew);
    }
    Ok(())
}

/// `n` in plain decimal (leading zeros dropped), as every official library signs it.
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

/// An id read from a verified body: a string or a number, not empty, within
/// `MAX_ID_BYTES`; anything else is `MissingHeader(Id)` (contract §10).
pub(crate) fn body_id(
    raw: Option<&serde_json::value::RawValue>,
) -> Result<Cow<'_, str>, VerifyError> {
    let missing = VerifyError::MissingHeader(HeaderKind::Id);
    let raw = raw.ok_or(missing)?.get();
    let id = if raw.starts_with('"') {
        serde_json::from_str::<Cow<'_, str>>(raw).map_err(|_| missing)?
    } else if serde_json::from_str::<serde_json::Number>(raw).is_ok() {
        Cow::Borrowed(raw)
    } else {
        return Err(missing);
    };
    if id.is_empty() || id.len() > MAX_ID_BYTES || !id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(missing);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<serde_json::value::RawValue> {
        serde_json::value::RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn ids_from_bodies_are_strings_or_numbers_within_bounds() {
        assert_eq!(body_id(Some(&raw(r#""evt_1""#))).unwrap(), "evt_1");
        assert_eq!(body_id(Some(&raw(r#""e\u0031""#))).unwrap(), "e1");
        assert_eq!(body_id(Some(&raw("12345"))).unwrap(), "12345");
        let missing = Err(VerifyError::MissingHeader(HeaderKind::Id));
        for bad in [r#""""#, "null", "true", "[1]", r#"{"a":1}"#] {
            assert_eq!(body_id(Some(&raw(bad))), missing, "{bad}");
        }
        assert_eq!(body_id(None), missing);
        let long = format!("\"{}\"", "a".repeat(257));
        assert_eq!(body_id(Some(&raw(&long))), missing);
    }

    #[test]
    fn timestamps_are_digits_within_the_window_both_ways() {
        assert_eq!(fresh("1000", 1000, 300), Ok(1000));
        assert_eq!(fresh("0700", 1000, 300), Ok(700));
        assert_eq!(fresh("699", 1000, 300), Err(VerifyError::TimestampTooOld));
        assert_eq!(fresh("1301", 1000, 300), Err(VerifyError::TimestampTooNew));
        let malformed = Err(VerifyError::MalformedHeader(HeaderKind::Timestamp));
        for bad in [
            "",
            "+1",
            "-1",
            "1.5",
            " 1",
            "1e9",
            "99999999999999999999999",
        ] {
            assert_eq!(fresh(bad, 1000, 300), malformed, "{bad:?}");
        }
    }

    #[test]
    fn content_digests_are_sha256_in_hex_over_the_pieces_in_order() {
        // sha256("abc"), the FIPS 180-2 example.
        let abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(ContentDigest::of(&[b"abc"]).as_str(), abc);
        assert_eq!(ContentDigest::of(&[b"a", b"", b"bc"]).as_str(), abc);
        assert_ne!(ContentDigest::of(&[b"abd"]).as_str(), abc);
        assert!(abc.len() <= MAX_ID_BYTES);
    }

    #[test]
    fn decimal_drops_leading_zeros() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(1614265330, &mut buf), b"1614265330");
        assert_eq!(decimal(u64::MAX, &mut buf), u64::MAX.to_string().as_bytes());
    }
}
