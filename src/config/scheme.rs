//! A route's `provider` (contract §10), its secrets and `[routes.hmac]`, built into the
//! `Scheme` that verifies its requests.

use std::path::Path;

use base64::Engine as _;
use http::HeaderName;

use super::raw::RawHmac;
use super::Problems;
use crate::chain::chain;
use crate::secret::{Key, SecretSource, BASE64};
use crate::verify::github::GitHub;
use crate::verify::hmac::{template, Declared, Part, Source};
use crate::verify::mac::{Algorithm, Encoding, MacKey};
use crate::verify::shopify::Shopify;
use crate::verify::stripe::Stripe;
use crate::verify::{Scheme, Verifier, VerifyKey};

/// The providers, as the config writes them.
pub const PROVIDERS: [&str; 5] = ["svix", "stripe", "github", "shopify", "hmac"];

/// What a route says about how its senders sign.
pub(super) struct Signing<'a> {
    pub(super) provider: Option<&'a str>,
    pub(super) hmac: Option<RawHmac>,
    pub(super) secrets: &'a [String],
}

/// The route's scheme (`None` if anything is wrong: each problem is added), and where
/// each secret came from.
pub(super) fn scheme(
    signing: Signing<'_>,
    i: usize,
    base_dir: &Path,
    tolerance_secs: u64,
    problems: &mut Problems,
) -> (Vec<SecretSource>, Option<Scheme>) {
    let at = |key: &str| format!("routes[{i}].{key}");
    let provider = signing.provider.unwrap_or("svix");
    if !PROVIDERS.contains(&provider) {
        let message = format!("{provider:?} is not a provider: {}", PROVIDERS.join(", "));
        problems.add(at("provider"), message);
    }
    if signing.hmac.is_some() && provider != "hmac" {
        let message = "[routes.hmac] declares a scheme: it needs provider = \"hmac\"";
        problems.add(at("hmac"), message);
    }
    if signing.hmac.is_none() && provider == "hmac" {
        problems.add(
            at("hmac"),
            "missing: provider = \"hmac\" needs a [routes.hmac] table",
        );
    }
    if signing.secrets.is_empty() {
        problems.add(at("secrets"), "missing: at least one secret is needed");
    }
    let base64_secrets = signing
        .hmac
        .as_ref()
        .is_some_and(|hmac| hmac.secret_encoding == "base64");
    let mut sources = Vec::new();
    let mut values = Vec::new();
    for (j, spec) in signing.secrets.iter().enumerate() {
        let source = SecretSource::parse(spec, base_dir);
        match source.resolve() {
            Ok(value) => values.push((j, source.clone(), value)),
            Err(err) => problems.add(
                format!("{}[{j}]", at("secrets")),
                format!("{source}: {}", chain(&err)),
            ),
        }
        sources.push(source);
    }
    let before = problems.0.len();
    let scheme = match provider {
        "svix" => {
            let mut keys = Vec::new();
            for (j, source, value) in &values {
                match Key::decode(value) {
                    Ok(key) => keys.push(VerifyKey::from(&key)),
                    Err(err) => problems.add(
                        format!("{}[{j}]", at("secrets")),
                        format!("{source}: {}", chain(&err)),
                    ),
                }
            }
            Some(Scheme::Svix(Verifier::new(keys, tolerance_secs)))
        }
        // The secret's bytes, as the providers' own libraries use them.
        "stripe" | "github" | "shopify" => {
            let secrets: Vec<Vec<u8>> = values
                .iter()
                .map(|(_, _, v)| v.as_bytes().to_vec())
                .collect();
            Some(match provider {
                "stripe" => Scheme::Stripe(Stripe::new(&secrets, tolerance_secs)),
                "github" => Scheme::GitHub(GitHub::new(&secrets)),
                _ => Scheme::Shopify(Shopify::new(&secrets)),
            })
        }
        "hmac" => match signing.hmac {
            Some(raw) => {
                let secrets = hmac_secrets(&values, base64_secrets, i, problems);
                declared(raw, &secrets, i, tolerance_secs, problems)
                    .map(|d| Scheme::Hmac(Box::new(d)))
            }
            None => None,
        },
        _ => None,
    };
    (sources, scheme.filter(|_| problems.0.len() == before))
}

/// An `hmac` route's secrets: their bytes, or with `secret_encoding = "base64"` what they
/// decode to (after an optional `whsec_`).
fn hmac_secrets(
    values: &[(usize, SecretSource, String)],
    base64: bool,
    i: usize,
    problems: &mut Problems,
) -> Vec<Vec<u8>> {
    let mut secrets = Vec::new();
    for (j, source, value) in values {
        if !base64 {
            secrets.push(value.as_bytes().to_vec());
            continue;
        }
        let text = value.strip_prefix("whsec_").unwrap_or(value);
        match BASE64.decode(text) {
            Ok(bytes) if !bytes.is_empty() => secrets.push(bytes),
            _ => problems.add(
                format!("routes[{i}].secrets[{j}]"),
                format!("{source}: not base64 (hmac.secret_encoding = \"base64\")"),
            ),
        }
    }
    secrets
}

/// `[routes.hmac]`, checked: a declaration that cannot work is refused.
fn declared(
    raw: RawHmac,
    secrets: &[Vec<u8>],
    i: usize,
    tolerance_secs: u64,
    problems: &mut Problems,
) -> Option<Declared> {
    let at = |key: &str| format!("routes[{i}].hmac.{key}");
    let start = problems.0.len();
    let header = |problems: &mut Problems, key: &str, name: &str| {
        HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| problems.add(at(key), format!("{name:?} is not a header name")))
            .ok()
    };
    let signature_header = match &raw.signature_header {
        Some(name) => header(problems, "signature_header", name),
        None => {
            problems.add(
                at("signature_header"),
                "missing: the header that carries the signature",
            );
            None
        }
    };
    let timestamp_header = raw
        .timestamp_header
        .as_deref()
        .and_then(|name| header(problems, "timestamp_header", name));
    let algorithm = match raw.algorithm.as_str() {
        "sha256" => Some(Algorithm::Sha256),
        "sha512" => Some(Algorithm::Sha512),
        "sha1" => Some(Algorithm::Sha1),
        other => {
            problems.add(
                at("algorithm"),
                format!("{other:?} is not sha256, sha512 or sha1"),
            );
            None
        }
    };
    let encoding = match raw.encoding.as_str() {
        "hex" => Some(Encoding::Hex),
        "base64" => Some(Encoding::Base64),
        other => {
            problems.add(
                at("encoding"),
                format!("{other:?} is neither \"hex\" nor \"base64\""),
            );
            None
        }
    };
    if !["raw", "base64"].contains(&raw.secret_encoding.as_str()) {
        let message = format!(
            "{:?} is neither \"raw\" nor \"base64\"",
            raw.secret_encoding
        );
        problems.add(at("secret_encoding"), message);
    }
    let mut source = |key: &str, text: Option<&str>| match text {
        Some(text) => Source::parse(text)
            .map_err(|err| problems.add(at(key), err))
            .ok(),
        None => {
            problems.add(at(key), "missing: \"header:NAME\" or \"json:/pointer\"");
            None
        }
    };
    let id = source("id", raw.id.as_deref());
    let event_type = source("event_type", Some(&raw.event_type));
    let content = template(&raw.signed_content)
        .map_err(|err| problems.add(at("signed_content"), err))
        .ok();
    if let Some(parts) = &content {
        let timestamp_header = timestamp_header.is_some();
        check_content(
            parts,
            &raw.signed_content,
            timestamp_header,
            id.as_ref(),
            &at,
            problems,
        );
    }
    if problems.0.len() > start {
        return None;
    }
    let algorithm = algorithm?;
    Some(Declared {
        keys: secrets.iter().map(|s| MacKey::new(algorithm, s)).collect(),
        algorithm,
        signature_header: signature_header?,
        prefix: raw.signature_prefix,
        encoding: encoding?,
        content: content?,
        timestamp_header,
        id: id?,
        event_type: event_type?,
        tolerance_secs,
    })
}

/// What a `signed_content` template must say for the rest of the declaration to be safe:
/// the timestamp signed when it is read, placeholders apart, an id known before the body.
fn check_content(
    parts: &[Part],
    text: &str,
    timestamp_header: bool,
    id: Option<&Source>,
    at: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) {
    if parts.contains(&Part::Timestamp) && !timestamp_header {
        let message = "{timestamp} needs a timestamp_header to read it from";
        problems.add(at("signed_content"), message);
    }
    if timestamp_header && !parts.contains(&Part::Timestamp) {
        let message = "timestamp_header is set but {timestamp} is not in signed_content: \
                       a timestamp that is not signed can be changed to pass the window";
        problems.add(at("timestamp_header"), message);
    }
    if parts
        .windows(2)
        .any(|pair| !matches!(pair[0], Part::Text(_)) && !matches!(pair[1], Part::Text(_)))
    {
        let message = format!(
            "{text:?}: placeholders need literal text between them: bytes could move from \
             one to the other without changing what is signed"
        );
        problems.add(at("signed_content"), message);
    }
    if parts.contains(&Part::Id) && matches!(id, Some(Source::Json(_))) {
        let message = "{id} needs an id from a header: one read from the body is read only \
                       after the signature verified";
        problems.add(at("signed_content"), message);
    }
}
