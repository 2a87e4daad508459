//! Fuzz bodies: plain functions over arbitrary bytes, each checking an invariant beyond
//! "does not panic". The checked-in corpus (`fuzz/corpus/<name>/`) replays through them as
//! ordinary tests, proptest drives them with random input in CI, and cargo-fuzz
//! (`fuzz/fuzz_targets/`) runs them longer. A crash found becomes a corpus file.
//!
//! Compiled only with the `fuzzing` feature: every build of the tests turns it on (the
//! crate's dev-dependency on itself), and so does `fuzz/`; the binary never has it.

use hmac::Mac as _;

use crate::route::{event_type as read_event_type, EventType, Glob, MAX_EVENT_TYPE_BYTES};
use crate::secret::{Key, BASE64};
use crate::sign::Signer;
use crate::verify::{decimal, parse_timestamp, SignedHeaders, Verifier, VerifyKey};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW: u64 = 1_763_812_800;

/// Splits input into `n` pieces at 0xFF bytes (the rest stays in the last piece).
fn pieces<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for slot in out.iter_mut().take(N - 1) {
        match rest.iter().position(|&b| b == 0xFF) {
            Some(at) => {
                *slot = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *slot = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    out[N - 1] = rest;
    out
}

/// Signature header parsing and verification: never panics, and accepts only when the
/// header carries the true signature of what was sent.
pub fn verify(data: &[u8]) {
    let [id, timestamp, signature, body] = pieces::<4>(data);
    let (Ok(id), Ok(timestamp), Ok(signature)) = (
        std::str::from_utf8(id),
        std::str::from_utf8(timestamp),
        std::str::from_utf8(signature),
    ) else {
        return;
    };
    let key = Key::decode(SECRET).expect("the fuzz secret decodes");
    let verifier = Verifier::new(vec![VerifyKey::from(&key)], 300);
    let headers = SignedHeaders {
        id,
        timestamp,
        signature,
    };
    if let Ok(verified) = verifier.verify(&headers, body, NOW) {
        let Key::Hmac(raw) = &key else { unreachable!() };
        let mut digits = [0u8; 20];
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(raw).expect("any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(decimal(verified.timestamp, &mut digits));
        mac.update(b".");
        mac.update(body);
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        let genuine = signature.split(' ').any(|entry| {
            entry.strip_prefix("v1,").is_some_and(|b64| {
                base64::Engine::decode(&BASE64, b64).is_ok_and(|d| d == expected)
            })
        });
        assert!(genuine, "accepted without the true signature: {headers:?}");
    }
}

/// A fresh signature always verifies, whatever id and body (the round trip).
pub fn sign_then_verify(data: &[u8]) {
    let [id, body] = pieces::<2>(data);
    let Ok(id) = std::str::from_utf8(id) else {
        return;
    };
    if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return;
    }
    let key = Key::decode(SECRET).expect("the fuzz secret decodes");
    let signature = Signer::try_from(&key)
        .expect("hmac signs")
        .sign(id, NOW, body);
    let verifier = Verifier::new(vec![VerifyKey::from(&key)], 300);
    let timestamp = NOW.to_string();
    let headers = SignedHeaders {
        id,
        timestamp: &timestamp,
        signature: &signature,
    };
    assert!(verifier.verify(&headers, body, NOW).is_ok(), "{headers:?}");
}

/// Timestamp parsing: what parses prints back as the input without leading zeros.
pub fn timestamp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(n) = parse_timestamp(text) {
        let mut digits = [0u8; 20];
        let trimmed = text.trim_start_matches('0');
        let expected = if trimmed.is_empty() { "0" } else { trimmed };
        assert_eq!(decimal(n, &mut digits), expected.as_bytes());
    }
}

/// Event-type extraction: a valid type is short visible ASCII, and is what routes.
pub fn event_type(data: &[u8]) {
    match read_event_type(data) {
        EventType::Valid(name) => {
            assert!(name.len() <= MAX_EVENT_TYPE_BYTES);
            assert!(name.bytes().all(|b| b.is_ascii_graphic()));
        }
        EventType::None | EventType::Invalid => {}
    }
}

/// Glob matching: never panics; without `*` it is equality; `*` matches everything.
pub fn glob(data: &[u8]) {
    let [pattern, text] = pieces::<2>(data);
    let (Ok(pattern), Ok(text)) = (std::str::from_utf8(pattern), std::str::from_utf8(text)) else {
        return;
    };
    let matched = Glob::new(pattern).matches(text);
    if !pattern.contains('*') {
        assert_eq!(matched, pattern == text);
    }
    assert!(Glob::new("*").matches(text));
    if matched {
        // Every literal piece of the pattern occurs in the text.
        assert!(pattern.split('*').all(|part| text.contains(part)));
    }
}

/// Config loading: any text gives a config or a list of problems, never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(err) = crate::config::Config::parse(text, std::path::Path::new("fuzz.toml"), &[]) {
        assert!(!err.problems.is_empty());
    }
}

/// A fuzz body.
pub type Body = fn(&[u8]);

/// Every fuzz body by name, for the corpus replay and the cargo-fuzz targets.
pub const TARGETS: [(&str, Body); 6] = [
    ("verify", verify),
    ("sign_then_verify", sign_then_verify),
    ("timestamp", timestamp),
    ("event_type", event_type),
    ("glob", glob),
    ("config", config),
];
