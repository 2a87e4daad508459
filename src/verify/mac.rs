//! The HMAC that Stripe, GitHub, Shopify and declared schemes share: keys prepared at
//! load, signatures decoded from hex or base64 into fixed buffers, every key checked
//! against at most `MAX_CHECKED` signatures in constant time.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::Matched;
use crate::secret::BASE64;

/// Most signatures checked in one request (contract §10): a rotation needs two.
pub const MAX_CHECKED: usize = 8;

/// The hash an HMAC is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
    Sha1,
}

impl Algorithm {
    /// Bytes of a MAC.
    pub fn mac_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
            Algorithm::Sha1 => 20,
        }
    }
}

/// How a signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// A secret, keyed once at load; cloned per request.
#[derive(Clone)]
pub enum MacKey {
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
    Sha1(Hmac<Sha1>),
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl MacKey {
    pub fn new(algorithm: Algorithm, secret: &[u8]) -> MacKey {
        // HMAC takes keys of any length: these cannot fail.
        match algorithm {
            Algorithm::Sha256 => MacKey::Sha256(
                Hmac::new_from_slice(secret).expect("HMAC accepts keys of any length"),
            ),
            Algorithm::Sha512 => MacKey::Sha512(
                Hmac::new_from_slice(secret).expect("HMAC accepts keys of any length"),
            ),
            Algorithm::Sha1 => {
                MacKey::Sha1(Hmac::new_from_slice(secret).expect("HMAC accepts keys of any length"))
            }
        }
    }

    /// The MAC of `parts`, one after the other.
    pub fn digest(&self, parts: &[&[u8]]) -> Digest {
        fn run<M: Mac + Clone>(keyed: &M, parts: &[&[u8]]) -> Digest {
            let mut mac = keyed.clone();
            for part in parts {
                mac.update(part);
            }
            Digest::from_slice(&mac.finalize().into_bytes())
        }
        match self {
            MacKey::Sha256(keyed) => run(keyed, parts),
            MacKey::Sha512(keyed) => run(keyed, parts),
            MacKey::Sha1(keyed) => run(keyed, parts),
        }
    }
}

/// HMAC-SHA256 keys from secrets' bytes, as Stripe, GitHub and Shopify sign.
pub fn sha256_keys(secrets: &[Vec<u8>]) -> Vec<MacKey> {
    secrets
        .iter()
        .map(|secret| MacKey::new(Algorithm::Sha256, secret))
        .collect()
}

/// A MAC, or a signature decoded: at most 64 bytes, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    bytes: [u8; 64],
    len: usize,
}

impl Digest {
    fn from_slice(slice: &[u8]) -> Digest {
        let mut bytes = [0u8; 64];
        let len = slice.len().min(64);
        bytes[..len].copy_from_slice(&slice[..len]);
        Digest { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// `text` decoded, if it is exactly `len` bytes in `encoding`.
    pub fn decode(text: &str, encoding: Encoding, len: usize) -> Option<Digest> {
        let mut bytes = [0u8; 64];
        match encoding {
            Encoding::Hex => {
                if text.len() != 2 * len || len > 64 {
                    return None;
                }
                for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
                    *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
                }
            }
            Encoding::Base64 => {
                // 64 bytes are 88 base64 characters; anything far longer cannot match.
                if text.len() > 96 {
                    return None;
                }
                let mut decoded = [0u8; 72];
                match BASE64.decode_slice(text, &mut decoded) {
                    Ok(n) if n == len => bytes[..n].copy_from_slice(&decoded[..n]),
                    _ => return None,
                }
            }
        }
        Some(Digest { bytes, len })
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Up to `MAX_CHECKED` decoded signatures from one request.
#[derive(Debug, Clone, Copy)]
pub struct Signatures {
    list: [Digest; MAX_CHECKED],
    len: usize,
}

impl Default for Signatures {
    fn default() -> Self {
        Signatures {
            list: [Digest::from_slice(&[]); MAX_CHECKED],
            len: 0,
        }
    }
}

impl Signatures {
    /// Adds one; past `MAX_CHECKED` the rest are not checked.
    pub fn push(&mut self, signature: Digest) {
        if self.len < MAX_CHECKED {
            self.list[self.len] = signature;
            self.len += 1;
        }
    }

    pub fn one(signature: Digest) -> Signatures {
        let mut signatures = Signatures::default();
        signatures.push(signature);
        signatures
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn iter(&self) -> impl Iterator<Item = &Digest> {
        self.list[..self.len].iter()
    }
}

/// Every key that signed `content` as one of `signatures` (compared in constant time);
/// with one key, stops at its match. `InvalidSignature` if none did.
pub fn check(
    keys: &[MacKey],
    content: &[&[u8]],
    signatures: &Signatures,
) -> Result<Matched, super::VerifyError> {
    let mut matched = Matched::default();
    for (index, key) in keys.iter().enumerate() {
        let mac = key.digest(content);
        if signatures
            .iter()
            .any(|signature| bool::from(signature.as_bytes().ct_eq(mac.as_bytes())))
        {
            matched.add(index);
            if keys.len() == 1 {
                break;
            }
        }
    }
    if matched == Matched::default() {
        return Err(super::VerifyError::InvalidSignature);
    }
    Ok(matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2 ("Jefe"), for each algorithm, and RFC 2202 for SHA-1.
    #[test]
    fn hmacs_are_the_published_ones() {
        let content: &[&[u8]] = &[b"what do ya want ", b"for nothing?"];
        let cases = [
            (
                Algorithm::Sha256,
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                Algorithm::Sha512,
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ),
            (
                Algorithm::Sha1,
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
        ];
        for (algorithm, hex) in cases {
            let key = MacKey::new(algorithm, b"Jefe");
            let want = Digest::decode(hex, Encoding::Hex, algorithm.mac_len()).unwrap();
            assert_eq!(key.digest(content), want, "{algorithm:?}");
            let upper = Digest::decode(&hex.to_uppercase(), Encoding::Hex, algorithm.mac_len());
            assert_eq!(upper, Some(want));
        }
    }

    #[test]
    fn signatures_of_the_wrong_length_or_alphabet_do_not_decode() {
        assert!(Digest::decode("abc", Encoding::Hex, 32).is_none());
        assert!(Digest::decode(&"zz".repeat(32), Encoding::Hex, 32).is_none());
        assert!(Digest::decode("AAAA", Encoding::Base64, 32).is_none());
        let b64 = BASE64.encode([7u8; 32]);
        assert_eq!(
            Digest::decode(&b64, Encoding::Base64, 32)
                .unwrap()
                .as_bytes(),
            [7u8; 32]
        );
    }

    #[test]
    fn every_key_that_signed_is_counted_and_at_most_eight_signatures_are_checked() {
        let (a, b) = (
            MacKey::new(Algorithm::Sha256, b"a"),
            MacKey::new(Algorithm::Sha256, b"b"),
        );
        let content: &[&[u8]] = &[b"body"];
        let mut both = Signatures::default();
        both.push(b.digest(content));
        both.push(a.digest(content));
        let matched = check(&[a.clone(), b.clone()], content, &both).unwrap();
        assert!(matched.has(0) && matched.has(1));
        let wrong = Digest::decode(&"00".repeat(32), Encoding::Hex, 32).unwrap();
        let mut ninth = Signatures::default();
        for _ in 0..MAX_CHECKED {
            ninth.push(wrong);
        }
        ninth.push(a.digest(content));
        assert!(
            check(&[a], content, &ninth).is_err(),
            "the ninth is not checked"
        );
    }
}
