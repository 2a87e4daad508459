//! Svix / Standard Webhooks (the default provider): `{svix,webhook}-id`, `-timestamp` and
//! `-signature`; signed content `{id}.{timestamp}.{body}` over the raw body bytes; `v1`
//! entries are HMAC-SHA256, `v1a` entries ed25519; the event type is the body's `type`.

use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{
    decimal, parse_timestamp, HeaderKind, Matched, VerifiedId, VerifyError, MAX_ID_BYTES,
    MAX_SIGNATURE_HEADER_BYTES,
};
use crate::route::event_type;
use crate::secret::{Key, BASE64};

/// Most signature entries accepted: bounds the parsing one request can cause.
pub const MAX_SIGNATURE_ENTRIES: usize = 32;
/// Most `v1a` entries checked: each ed25519 check hashes the whole body (1.86 ms over a
/// 1 MiB body, `cargo bench --bench verify`), and Svix signs with one key, two during a
/// rotation. An anonymous sender must not buy 32 checks with one request.
pub const MAX_V1A_ENTRIES: usize = 4;

const SVIX_ID: HeaderName = HeaderName::from_static("svix-id");
const SVIX_TIMESTAMP: HeaderName = HeaderName::from_static("svix-timestamp");
const SVIX_SIGNATURE: HeaderName = HeaderName::from_static("svix-signature");
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The three signed headers, trimmed, each taken from `svix-*` or else `webhook-*`.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

impl<'a> SignedHeaders<'a> {
    /// Picks each header on its own: the first of `svix-X`, `webhook-X` that is present
    /// and not empty once trimmed (what the svix Rust crate does, plus Clerk's trimming).
    pub fn from_headers(headers: &'a HeaderMap) -> Result<Self, VerifyError> {
        Ok(SignedHeaders {
            id: pick(headers, &SVIX_ID, &WEBHOOK_ID, HeaderKind::Id)?,
            timestamp: pick(
                headers,
                &SVIX_TIMESTAMP,
                &WEBHOOK_TIMESTAMP,
                HeaderKind::Timestamp,
            )?,
            signature: pick(
                headers,
                &SVIX_SIGNATURE,
                &WEBHOOK_SIGNATURE,
                HeaderKind::Signature,
            )?,
        })
    }
}

/// The id as sent (`svix-id`, else `webhook-id`), within `MAX_ID_BYTES`: `Scheme::sent_id`.
pub(super) fn sent_id(headers: &HeaderMap) -> Option<&str> {
    pick(headers, &SVIX_ID, &WEBHOOK_ID, HeaderKind::Id)
        .ok()
        .filter(|id| id.len() <= MAX_ID_BYTES)
}

fn pick<'a>(
    headers: &'a HeaderMap,
    first: &HeaderName,
    second: &HeaderName,
    kind: HeaderKind,
) -> Result<&'a str, VerifyError> {
    for name in [first, second] {
        let Some(value) = headers.get(name) else {
            continue;
        };
        let bytes = value.as_bytes().trim_ascii();
        if bytes.is_empty() {
            continue;
        }
        // Header values that are not visible ASCII cannot be what a sender signed.
        return std::str::from_utf8(bytes)
            .ok()
            .filter(|s| s.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .ok_or(VerifyError::MalformedHeader(kind));
    }
    Err(VerifyError::MissingHeader(kind))
}

/// A key that verifies, prepared at load: the HMAC state is keyed once and cloned per request.
#[derive(Clone)]
pub enum VerifyKey {
    Hmac(Hmac<Sha256>),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl From<&Key> for VerifyKey {
    fn from(key: &Key) -> Self {
        match key {
            Key::Hmac(bytes) => VerifyKey::Hmac(
                Hmac::new_from_slice(bytes).expect("HMAC accepts keys of any length"),
            ),
            Key::Public(public) => VerifyKey::Ed25519(*public),
            // A signing key in a route verifies with its public half.
            Key::Signing(signing) => VerifyKey::Ed25519(signing.verifying_key()),
        }
    }
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerifyKey::Hmac(_) => "VerifyKey::Hmac(..)",
            VerifyKey::Ed25519(_) => "VerifyKey::Ed25519(..)",
        })
    }
}

/// A head that passed: the three headers and the timestamp.
pub struct Head<'h> {
    signed: SignedHeaders<'h>,
    timestamp: u64,
}

/// What a successful verification tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The secrets that matched: every one, on a route with several (rotation
    /// visibility), else the one.
    pub matched: Matched,
    /// The signed timestamp, in Unix seconds.
    pub timestamp: u64,
}

/// One route's secrets and the timestamp tolerance.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<VerifyKey>,
    tolerance_secs: u64,
}

impl Verifier {
    pub fn new(keys: Vec<VerifyKey>, tolerance_secs: u64) -> Self {
        Verifier {
            keys,
            tolerance_secs,
        }
    }

    /// The head's checks (`check_head`), for `Scheme::head`.
    pub fn head<'h>(&self, headers: &'h HeaderMap, now: u64) -> Result<Head<'h>, VerifyError> {
        let signed = SignedHeaders::from_headers(headers)?;
        let timestamp = self.check_head(&signed, now)?;
        Ok(Head { signed, timestamp })
    }

    /// The signature's check (`check_signature`) and the body's event type, for
    /// `Scheme::body`.
    pub fn body<'h, 'b>(
        &self,
        head: &Head<'h>,
        body: &'b [u8],
    ) -> Result<super::Verified<'h, 'b>, VerifyError> {
        let verified = self.check_signature(&head.signed, head.timestamp, body)?;
        Ok(super::Verified {
            id: VerifiedId::Head(head.signed.id),
            digest: None,
            timestamp: Some(verified.timestamp),
            event_type: event_type(body),
            matched: verified.matched,
        })
    }

    /// Both checks: the head's, then the signature's. `now` is Unix seconds.
    pub fn verify(
        &self,
        headers: &SignedHeaders<'_>,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, VerifyError> {
        let timestamp = self.check_head(headers, now)?;
        self.check_signature(headers, timestamp, body)
    }

    /// What can be refused before the body is read: the bounds of the three headers, the
    /// timestamp's form and its window. Returns the timestamp.
    pub fn check_head(&self, headers: &SignedHeaders<'_>, now: u64) -> Result<u64, VerifyError> {
        if headers.id.len() > MAX_ID_BYTES {
            return Err(VerifyError::MalformedHeader(HeaderKind::Id));
        }
        let timestamp = parse_timestamp(headers.timestamp)
            .ok_or(VerifyError::MalformedHeader(HeaderKind::Timestamp))?;
        if headers.signature.len() > MAX_SIGNATURE_HEADER_BYTES
            || entries(headers.signature).count() > MAX_SIGNATURE_ENTRIES
        {
            return Err(VerifyError::MalformedHeader(HeaderKind::Signature));
        }
        // Inclusive at exactly `tolerance` both ways, like every official library.
        if timestamp.saturating_add(self.tolerance_secs) < now {
            return Err(VerifyError::TimestampTooOld);
        }
        if timestamp > now.saturating_add(self.tolerance_secs) {
            return Err(VerifyError::TimestampTooNew);
        }
        Ok(timestamp)
    }

    /// The signatures over `{id}.{timestamp}.{body}`, for a head that passed
    /// `check_head`. With one secret, stops at its match; with several, checks each, so
    /// a rotation shows which secrets the sender still signs with.
    pub fn check_signature(
        &self,
        headers: &SignedHeaders<'_>,
        timestamp: u64,
        body: &[u8],
    ) -> Result<Verified, VerifyError> {
        let mut digits = [0u8; 20];
        let timestamp_text = decimal(timestamp, &mut digits);
        let signed = SignedContent {
            id: headers.id.as_bytes(),
            timestamp: timestamp_text,
            body,
        };
        let mut matched = Matched::default();
        let mut joined: Option<Vec<u8>> = None;
        for (secret_index, key) in self.keys.iter().enumerate() {
            let ok = match key {
                VerifyKey::Hmac(keyed) => hmac_matches(keyed, &signed, headers.signature),
                VerifyKey::Ed25519(public) => {
                    ed25519_matches(public, &signed, &mut joined, headers.signature)
                }
            };
            if ok {
                matched.add(secret_index);
                if self.keys.len() == 1 {
                    break;
                }
            }
        }
        if matched == Matched::default() {
            return Err(VerifyError::InvalidSignature);
        }
        Ok(Verified { matched, timestamp })
    }
}

/// The parts of what was signed, kept apart so the body is never copied for HMAC.
pub(crate) struct SignedContent<'a> {
    pub id: &'a [u8],
    pub timestamp: &'a [u8],
    pub body: &'a [u8],
}

impl SignedContent<'_> {
    pub(crate) fn mac(&self, keyed: &Hmac<Sha256>) -> [u8; 32] {
        let mut mac = keyed.clone();
        mac.update(self.id);
        mac.update(b".");
        mac.update(self.timestamp);
        mac.update(b".");
        mac.update(self.body);
        mac.finalize().into_bytes().into()
    }

    /// ed25519 signs one contiguous message, so `v1a` needs the joined bytes.
    pub(crate) fn joined(&self) -> Vec<u8> {
        let mut message =
            Vec::with_capacity(self.id.len() + self.timestamp.len() + self.body.len() + 2);
        message.extend_from_slice(self.id);
        message.push(b'.');
        message.extend_from_slice(self.timestamp);
        message.push(b'.');
        message.extend_from_slice(self.body);
        message
    }
}

/// The non-empty pieces between single spaces, split into (version, signature).
fn entries(header: &str) -> impl Iterator<Item = &str> {
    header.split(' ').filter(|piece| !piece.is_empty())
}

fn versioned<'a>(header: &'a str, version: &'a str) -> impl Iterator<Item = &'a str> {
    entries(header).filter_map(move |entry| match entry.split_once(',') {
        Some((v, signature)) if v == version => Some(signature),
        _ => None,
    })
}

fn hmac_matches(keyed: &Hmac<Sha256>, signed: &SignedContent<'_>, header: &str) -> bool {
    let mut expected: Option<[u8; 32]> = None;
    for encoded in versioned(header, "v1") {
        // 32 bytes are 44 base64 characters; anything far longer cannot match.
        if encoded.len() > 48 {
            continue;
        }
        let mut decoded = [0u8; 48];
        match BASE64.decode_slice(encoded, &mut decoded) {
            Ok(32) => {}
            _ => continue,
        }
        let mac = expected.get_or_insert_with(|| signed.mac(keyed));
        if bool::from(mac.ct_eq(&decoded[..32])) {
            return true;
        }
    }
    false
}

/// At most `MAX_V1A_ENTRIES` well-formed `v1a` entries are checked; `joined` is the
/// signed message, built once for all keys.
fn ed25519_matches(
    public: &ed25519_dalek::VerifyingKey,
    signed: &SignedContent<'_>,
    joined: &mut Option<Vec<u8>>,
    header: &str,
) -> bool {
    let well_formed = versioned(header, "v1a").filter_map(|encoded| {
        // 64 bytes are 88 base64 characters.
        if encoded.len() > 96 {
            return None;
        }
        let mut decoded = [0u8; 96];
        match BASE64.decode_slice(encoded, &mut decoded) {
            Ok(64) => {}
            _ => return None,
        }
        let mut bytes = [0u8; 64];
        bytes.copy_from_slice(&decoded[..64]);
        Some(ed25519_dalek::Signature::from_bytes(&bytes))
    });
    for signature in well_formed.take(MAX_V1A_ENTRIES) {
        let message = joined.get_or_insert_with(|| signed.joined());
        if public.verify_strict(message, &signature).is_ok() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::Signer;
    use proptest::prelude::*;

    fn verifier(secrets: &[&str], tolerance_secs: u64) -> Verifier {
        let keys = secrets
            .iter()
            .map(|s| VerifyKey::from(&Key::decode(s).expect("vector secret decodes")))
            .collect();
        Verifier::new(keys, tolerance_secs)
    }

    fn check(
        verifier: &Verifier,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, VerifyError> {
        let signed = SignedHeaders::from_headers(headers)?;
        verifier.verify(&signed, body, now)
    }

    /// Every case of the shared vectors, made with the official svix library.
    #[test]
    fn official_vectors() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/vectors.json")).unwrap();
        let cases = vectors["cases"].as_array().unwrap();
        assert!(cases.len() >= 40, "only {} cases", cases.len());
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let secrets: Vec<&str> = case["secrets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect();
            let mut headers = HeaderMap::new();
            for (k, v) in case["headers"].as_object().unwrap() {
                headers.insert(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.as_str().unwrap().parse().unwrap(),
                );
            }
            let body = BASE64.decode(case["body_b64"].as_str().unwrap()).unwrap();
            let now = case["now"].as_u64().unwrap();
            let tolerance = case["tolerance_s"].as_u64().unwrap();
            let got = match check(&verifier(&secrets, tolerance), &headers, &body, now) {
                Ok(_) => "ok",
                Err(err) => crate::outcome::verify_outcome(err).0.label(),
            };
            assert_eq!(got, case["expect"].as_str().unwrap(), "case {name}");
        }
    }

    #[test]
    fn reports_which_secret_matched() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let signer = Signer::try_from(&Key::decode(new).unwrap()).unwrap();
        let sig = signer.sign("msg_1", 1000, b"{}");
        let v = verifier(&[old, new], 300);
        let headers = SignedHeaders {
            id: "msg_1",
            timestamp: "1000",
            signature: &sig,
        };
        let matched = v.verify(&headers, b"{}", 1000).unwrap().matched;
        assert_eq!((matched.has(0), matched.has(1)), (false, true));
    }

    /// During a rotation Svix signs with both secrets: both count, in either order.
    #[test]
    fn reports_every_secret_that_matched() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let sign = |secret: &str| {
            Signer::try_from(&Key::decode(secret).unwrap())
                .unwrap()
                .sign("msg_1", 1000, b"{}")
        };
        let both = format!("{} {}", sign(new), sign(old));
        let headers = SignedHeaders {
            id: "msg_1",
            timestamp: "1000",
            signature: &both,
        };
        for order in [[old, new], [new, old]] {
            let matched = verifier(&order, 300)
                .verify(&headers, b"{}", 1000)
                .unwrap()
                .matched;
            assert!(matched.has(0) && matched.has(1), "{order:?}");
            assert_eq!(matched.first(), Some(0));
        }
    }

    /// Past `MAX_V1A_ENTRIES` well-formed `v1a` entries nothing more is checked: a valid
    /// signature placed fifth does not verify, placed fourth it does.
    #[test]
    fn at_most_four_v1a_entries_are_checked() {
        let (secret, public) = ed25519_keys();
        let (other, _) = ed25519_keys_from([9; 32]);
        let body = b"{}";
        let good = Signer::try_from(&Key::decode(&secret).unwrap())
            .unwrap()
            .sign("msg_1", 1000, body);
        let bad = Signer::try_from(&Key::decode(&other).unwrap())
            .unwrap()
            .sign("msg_1", 1000, body);
        let v = verifier(&[&public], 300);
        for (others, verifies) in [(3, true), (4, false)] {
            let header = format!("{} {good}", vec![bad.as_str(); others].join(" "));
            let headers = SignedHeaders {
                id: "msg_1",
                timestamp: "1000",
                signature: &header,
            };
            assert_eq!(v.verify(&headers, body, 1000).is_ok(), verifies, "{others}");
        }
    }

    fn ed25519_keys() -> (String, String) {
        ed25519_keys_from([7; 32])
    }

    /// A `whsk_` signing key and its `whpk_` public key from a seed.
    fn ed25519_keys_from(seed: [u8; 32]) -> (String, String) {
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let public = signing.verifying_key().to_bytes();
        let mut both = seed.to_vec();
        both.extend_from_slice(&public);
        (
            format!("whsk_{}", BASE64.encode(both)),
            format!("whpk_{}", BASE64.encode(public)),
        )
    }

    fn hmac_secret() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<u8>(), 1..64)
            .prop_map(|bytes| format!("whsec_{}", BASE64.encode(bytes)))
    }

    fn ed25519_pair() -> impl Strategy<Value = (String, String)> {
        any::<[u8; 32]>().prop_map(|seed| {
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            (
                format!("whsk_{}", BASE64.encode(key.to_keypair_bytes())),
                format!("whpk_{}", BASE64.encode(key.verifying_key().as_bytes())),
            )
        })
    }

    fn signs_then_verifies(
        signing: &str,
        verifying: &str,
        id: &str,
        ts: u64,
        body: &[u8],
    ) -> Result<(), TestCaseError> {
        let signer = Signer::try_from(&Key::decode(signing).unwrap()).unwrap();
        let v = verifier(&[verifying], 300);
        let sig = signer.sign(id, ts, body);
        let ts_text = ts.to_string();
        let headers = SignedHeaders {
            id,
            timestamp: &ts_text,
            signature: &sig,
        };
        prop_assert!(v.verify(&headers, body, ts).is_ok());

        // Any single-byte change to body, id or timestamp never verifies.
        let mut changed = body.to_vec();
        if !changed.is_empty() {
            let at = (ts as usize) % changed.len();
            changed[at] ^= 1 << (ts % 8);
            prop_assert_eq!(
                v.verify(&headers, &changed, ts),
                Err(VerifyError::InvalidSignature)
            );
        }
        let mut other_id = id.as_bytes().to_vec();
        let at = (ts as usize) % other_id.len();
        other_id[at] = if other_id[at] == b'a' { b'b' } else { b'a' };
        let other_id = String::from_utf8(other_id).unwrap();
        let moved = SignedHeaders {
            id: &other_id,
            ..headers
        };
        prop_assert_eq!(
            v.verify(&moved, body, ts),
            Err(VerifyError::InvalidSignature)
        );
        let later = (ts + 1).to_string();
        let moved = SignedHeaders {
            timestamp: &later,
            ..headers
        };
        prop_assert_eq!(
            v.verify(&moved, body, ts),
            Err(VerifyError::InvalidSignature)
        );
        Ok(())
    }

    proptest! {
        // ed25519 is slow in debug builds; 64 cases still cover keys, ids and bodies well.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn ed25519_signatures_verify_and_changes_do_not(
            (signing, public) in ed25519_pair(),
            id in "[a-zA-Z0-9_]{1,40}",
            ts in 0u64..4_000_000_000,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            signs_then_verifies(&signing, &public, &id, ts, &body)?;
        }
    }

    proptest! {
        #[test]
        fn hmac_signatures_verify_and_changes_do_not(
            secret in hmac_secret(),
            id in "[a-zA-Z0-9_]{1,40}",
            ts in 0u64..4_000_000_000,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            signs_then_verifies(&secret, &secret, &id, ts, &body)?;
        }


        /// Whatever the headers say, verification answers (never panics).
        #[test]
        fn arbitrary_headers_never_panic(
            id in ".{0,300}",
            timestamp in "[0-9+.-]{0,25}",
            signature in "[ a-z0-9,+/=]{0,400}",
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let v = verifier(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], 300);
            let headers = SignedHeaders { id: &id, timestamp: &timestamp, signature: &signature };
            let _ = v.verify(&headers, &body, 1_700_000_000);
        }
    }
}
