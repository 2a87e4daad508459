//! Signing the way Svix does: used by `hookwall send`, the demo, tests and benchmarks.
//! The verifier never calls this; both agree through the shared test vectors.

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::{Key, BASE64};
use crate::verify::{decimal, SignedContent};

/// A key that can sign: HMAC (`v1`) or an ed25519 signing key (`v1a`).
#[derive(Clone)]
pub enum Signer {
    Hmac(Hmac<Sha256>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

/// A public key cannot sign.
#[derive(Debug, thiserror::Error)]
#[error("a `whpk_` public key cannot sign; use the `whsk_` signing key or a `whsec_` secret")]
pub struct CannotSign;

impl TryFrom<&Key> for Signer {
    type Error = CannotSign;

    fn try_from(key: &Key) -> Result<Self, CannotSign> {
        match key {
            Key::Hmac(bytes) => Ok(Signer::Hmac(
                Hmac::new_from_slice(bytes).expect("HMAC accepts keys of any length"),
            )),
            Key::Signing(signing) => Ok(Signer::Ed25519(Box::new(signing.clone()))),
            Key::Public(_) => Err(CannotSign),
        }
    }
}

impl Signer {
    /// The signature header value for one message: `v1,<base64>` or `v1a,<base64>`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut digits = [0u8; 20];
        let content = SignedContent {
            id: id.as_bytes(),
            timestamp: decimal(timestamp, &mut digits),
            body,
        };
        match self {
            Signer::Hmac(keyed) => format!("v1,{}", BASE64.encode(content.mac(keyed))),
            Signer::Ed25519(key) => {
                let signature = key.sign(&content.joined());
                format!("v1a,{}", BASE64.encode(signature.to_bytes()))
            }
        }
    }
}
