//! Micro-benchmark: a full `Verifier::verify` (header bounds, timestamp, base64, HMAC,
//! constant-time compare) against a bare HMAC-SHA256 over the same bytes; then what one
//! `v1a` (ed25519) check costs, the figure `MAX_V1A_ENTRIES` is sized by.
//!
//! Run: `cargo bench --bench verify`. A small self-timed harness (median of batches) keeps
//! criterion out of every test build. Without `--bench` on its command line (that is, under
//! `cargo test --bench verify`, the CI smoke run) it runs a few iterations only.

use std::hint::black_box;
use std::time::Instant;

use hmac::{Hmac, Mac};
use hookwall::secret::Key;
use hookwall::sign::Signer;
use hookwall::verify::{SignedHeaders, Verifier, VerifyKey};
use sha2::Sha256;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CLERK_EVENT: &[u8] = include_bytes!("../src/cli/clerk_user_created.json");
const ID: &str = "msg_2pMx6Yj5YQ8cOqkM5rK0tT1uVwX";
const NOW: u64 = 1_763_812_800;

/// Median nanoseconds of a full `verify` of `body`, signed by `signer`.
fn time_verify(signer: &Signer, verifier: &Verifier, body: &[u8], batches: (usize, usize)) -> f64 {
    let signature = signer.sign(ID, NOW, body);
    let timestamp = NOW.to_string();
    let headers = SignedHeaders {
        id: ID,
        timestamp: &timestamp,
        signature: &signature,
    };
    assert!(verifier.verify(&headers, body, NOW).is_ok());
    time(batches.0, batches.1, || {
        black_box(verifier.verify(black_box(&headers), black_box(body), NOW)).ok();
    })
}

/// Median nanoseconds per call over `batches` batches of `per_batch` calls.
fn time(batches: usize, per_batch: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..batches)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            start.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (batches, per_batch) = if quick { (3, 10) } else { (31, 2000) };

    let key = Key::decode(SECRET).unwrap();
    let Key::Hmac(raw_key) = &key else {
        unreachable!()
    };
    let keyed = Hmac::<Sha256>::new_from_slice(raw_key).unwrap();
    let signer = Signer::try_from(&key).unwrap();
    let verifier = Verifier::new(vec![VerifyKey::from(&key)], 300);
    let now = NOW;

    println!(
        "{:<10} {:>12} {:>12} {:>8}",
        "body", "verify ns", "hmac ns", "ratio"
    );
    for (label, body) in [
        ("1 KB", vec![b'a'; 1024]),
        ("2.9 KB", CLERK_EVENT.to_vec()),
        ("64 KB", vec![b'a'; 64 * 1024]),
    ] {
        let verify_ns = time_verify(&signer, &verifier, &body, (batches, per_batch));
        let (id, timestamp) = (ID, now.to_string());
        // The floor: the same signed bytes through a pre-keyed HMAC, nothing else.
        let hmac_ns = time(batches, per_batch, || {
            let mut mac = keyed.clone();
            mac.update(black_box(id.as_bytes()));
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(black_box(&body));
            black_box(mac.finalize());
        });
        println!(
            "{label:<10} {verify_ns:>12.0} {hmac_ns:>12.0} {:>7.3}x",
            verify_ns / hmac_ns
        );
    }
    ed25519(quick);
}

/// One `v1a` check (ed25519, strict) over bodies up to `max_body_bytes`' default.
fn ed25519(quick: bool) {
    let (batches, per_batch) = if quick { (3, 1) } else { (11, 20) };
    let seed = [7u8; 32];
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let secret = format!(
        "whsk_{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            signing.to_keypair_bytes()
        )
    );
    let key = Key::decode(&secret).unwrap();
    let signer = Signer::try_from(&key).unwrap();
    let verifier = Verifier::new(vec![VerifyKey::from(&key)], 300);
    println!("\n{:<10} {:>12}", "body", "v1a ns");
    for (label, body) in [
        ("2.9 KB", CLERK_EVENT.to_vec()),
        ("1 MiB", vec![b'a'; 1024 * 1024]),
    ] {
        let ns = time_verify(&signer, &verifier, &body, (batches, per_batch));
        println!("{label:<10} {ns:>12.0}");
    }
}
