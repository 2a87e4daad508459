//! Signing the way senders do (Svix; Stripe, GitHub and Shopify): used by `hookwall send`,
//! the demo, tests and benchmarks. The verifier never calls this; both agree through the
//! shared test vectors and the providers' own libraries (in the tests).

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::{Key, BASE64};
use crate::verify::decimal;
use crate::verify::mac::{Algorithm, MacKey};
use crate::verify::svix::SignedContent;

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

/// `Stripe-Signature` for `body` at `timestamp`: `t=…,v1=<hex>` over `{t}.{body}`, keyed
/// with the secret's bytes.
pub fn stripe(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut digits = [0u8; 20];
    let t = decimal(timestamp, &mut digits);
    let mac = MacKey::new(Algorithm::Sha256, secret).digest(&[t, b".", body]);
    format!("t={timestamp},v1={}", hex(mac.as_bytes()))
}

/// `X-Hub-Signature-256`: `sha256=<hex>` over the body.
pub fn github(secret: &[u8], body: &[u8]) -> String {
    let mac = MacKey::new(Algorithm::Sha256, secret).digest(&[body]);
    format!("sha256={}", hex(mac.as_bytes()))
}

/// `X-Shopify-Hmac-Sha256`: the base64 HMAC-SHA256 of the body.
pub fn shopify(secret: &[u8], body: &[u8]) -> String {
    let mac = MacKey::new(Algorithm::Sha256, secret).digest(&[body]);
    BASE64.encode(mac.as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}
