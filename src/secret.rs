//! Webhook secrets: where a configured secret comes from (`env:`, `file:` or a literal)
//! and what its value decodes to (an HMAC key, an ed25519 public key or signing key).
//!
//! Decoding happens once, at config load; the request path only sees decoded keys.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// Standard base64, lenient the way Python's decoder (used by the Svix and Standard
/// Webhooks Python libraries) is: `=` padding optional, stray trailing bits ignored.
pub const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

const HMAC_PREFIX: &str = "whsec_";
const PUBLIC_PREFIX: &str = "whpk_";
const SIGNING_PREFIX: &str = "whsk_";

/// Where a secret's value is read from, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `env:NAME`
    Env(String),
    /// `file:PATH`: the file's content, trimmed (how Kubernetes mounts secrets).
    File(PathBuf),
    /// Any other string is the secret itself.
    Literal(String),
}

impl SecretSource {
    /// Parses a config value. A relative `file:` path is taken from `base_dir`
    /// (the config file's folder), so a config and its secrets can move together.
    pub fn parse(spec: &str, base_dir: &Path) -> Self {
        if let Some(name) = spec.strip_prefix("env:") {
            SecretSource::Env(name.to_owned())
        } else if let Some(path) = spec.strip_prefix("file:") {
            SecretSource::File(base_dir.join(path))
        } else {
            SecretSource::Literal(spec.to_owned())
        }
    }

    /// Reads the value now (at load and on every reload).
    pub fn resolve(&self) -> Result<String, SecretError> {
        let value = match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(value) => value,
                Err(std::env::VarError::NotPresent) => {
                    return Err(SecretError::EnvMissing { name: name.clone() })
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(SecretError::EnvNotUnicode { name: name.clone() })
                }
            },
            SecretSource::File(path) => {
                std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?
            }
            SecretSource::Literal(value) => value.clone(),
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(value.to_owned())
    }
}

/// How a secret is shown to people: the source, never the value.
impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "env:{name}"),
            SecretSource::File(path) => write!(f, "file:{}", path.display()),
            SecretSource::Literal(_) => f.write_str("literal"),
        }
    }
}

/// A decoded secret.
#[derive(Clone)]
pub enum Key {
    /// `whsec_` + base64, or bare base64: HMAC-SHA256 key for `v1` signatures.
    Hmac(Vec<u8>),
    /// `whpk_` + base64 of a 32-byte ed25519 public key: verifies `v1a` signatures.
    Public(ed25519_dalek::VerifyingKey),
    /// `whsk_` + base64 of seed ‖ public key (64 bytes, as Svix writes them): signs `v1a`.
    Signing(ed25519_dalek::SigningKey),
}

// Keys never print their bytes.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Hmac(_) => f.write_str("Key::Hmac(..)"),
            Key::Public(_) => f.write_str("Key::Public(..)"),
            Key::Signing(_) => f.write_str("Key::Signing(..)"),
        }
    }
}

impl Key {
    /// Decodes a secret's value (already resolved and trimmed).
    pub fn decode(value: &str) -> Result<Key, SecretError> {
        if let Some(b64) = value.strip_prefix(PUBLIC_PREFIX) {
            let bytes: [u8; 32] = decode_exact(PUBLIC_PREFIX, b64)?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|_| SecretError::NotACurvePoint)?;
            return Ok(Key::Public(key));
        }
        if let Some(b64) = value.strip_prefix(SIGNING_PREFIX) {
            let bytes: [u8; 64] = decode_exact(SIGNING_PREFIX, b64)?;
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&bytes[..32]);
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            if key.verifying_key().as_bytes()[..] != bytes[32..] {
                return Err(SecretError::KeyPairMismatch);
            }
            return Ok(Key::Signing(key));
        }
        let b64 = value.strip_prefix(HMAC_PREFIX).unwrap_or(value);
        let bytes = BASE64.decode(b64).map_err(|source| SecretError::Base64 {
            prefix: HMAC_PREFIX,
            source,
        })?;
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Key::Hmac(bytes))
    }
}

fn decode_exact<const N: usize>(prefix: &'static str, b64: &str) -> Result<[u8; N], SecretError> {
    let bytes = BASE64
        .decode(b64)
        .map_err(|source| SecretError::Base64 { prefix, source })?;
    bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| SecretError::Length {
            prefix,
            expected: N,
            got: bytes.len(),
        })
}

/// Why a secret could not be used. Never carries the secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {name} is not set")]
    EnvMissing { name: String },
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode { name: String },
    #[error("cannot read {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret is empty")]
    Empty,
    #[error("secret is not base64 (after an optional `{prefix}` prefix)")]
    Base64 {
        prefix: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("a `{prefix}` key must decode to {expected} bytes, not {got}")]
    Length {
        prefix: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("a `whpk_` key is not a valid ed25519 public key")]
    NotACurvePoint,
    #[error("a `whsk_` key's public half does not belong to its seed")]
    KeyPairMismatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_optional_and_padding_is_too() {
        let with = Key::decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let without = Key::decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let (Key::Hmac(a), Key::Hmac(b)) = (with, without) else {
            panic!("not hmac keys")
        };
        assert_eq!(a, b);
        assert!(matches!(
            Key::decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS"),
            Ok(Key::Hmac(_))
        ));
    }

    #[test]
    fn bad_secrets_are_errors() {
        assert!(matches!(Key::decode("whsec_"), Err(SecretError::Empty)));
        assert!(matches!(
            Key::decode("not base64!"),
            Err(SecretError::Base64 { .. })
        ));
        assert!(matches!(
            Key::decode("whpk_AAAA"),
            Err(SecretError::Length { got: 3, .. })
        ));
    }

    #[test]
    fn signing_key_round_trips_and_checks_its_halves() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let good = format!("whsk_{}", BASE64.encode(key.to_keypair_bytes()));
        assert!(matches!(Key::decode(&good), Ok(Key::Signing(_))));
        let mut bytes = key.to_keypair_bytes();
        bytes[40] ^= 1;
        let bad = format!("whsk_{}", BASE64.encode(bytes));
        assert!(matches!(
            Key::decode(&bad),
            Err(SecretError::KeyPairMismatch)
        ));
    }

    #[test]
    fn display_never_shows_a_literal() {
        let dir = Path::new("/etc/hookwall");
        assert_eq!(SecretSource::parse("whsec_abc", dir).to_string(), "literal");
        assert_eq!(SecretSource::parse("env:X", dir).to_string(), "env:X");
        assert_eq!(
            SecretSource::parse("file:s/current", dir).to_string(),
            "file:/etc/hookwall/s/current"
        );
    }

    #[test]
    fn missing_env_is_named() {
        let err = SecretSource::Env("HOOKWALL_TEST_SURELY_UNSET".into())
            .resolve()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable HOOKWALL_TEST_SURELY_UNSET is not set"
        );
    }
}
