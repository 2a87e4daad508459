//! The fuzz bodies of `src/fuzz.rs` on stable: every checked-in corpus file replays as a
//! test, and proptest feeds each body random and mutated inputs. Bounded: FUZZ_CASES
//! (default 2000) cases per target; `.ci/run` sets more. cargo-fuzz runs them longer.

use std::path::Path;

use hookwall::fuzz::TARGETS;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn the_corpus_replays_clean() {
    for (name, body) in TARGETS {
        let inputs = corpus(name);
        assert!(!inputs.is_empty(), "no corpus for {name}");
        for input in inputs {
            body(&input);
        }
    }
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Random bytes, and corpus entries with bytes flipped, cut or inserted.
fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let random = proptest::collection::vec(any::<u8>(), 0..600).boxed();
    let mutated = (
        proptest::sample::select(seeds),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    )
        .prop_map(|(mut seed, edits)| {
            for (at, byte, op) in edits {
                let at = if seed.is_empty() {
                    0
                } else {
                    at % (seed.len() + 1)
                };
                match op {
                    0 if at < seed.len() => seed[at] = byte,
                    1 => seed.insert(at, byte),
                    _ if at < seed.len() => {
                        seed.remove(at);
                    }
                    _ => seed.push(byte),
                }
            }
            seed
        })
        .boxed();
    prop_oneof![random, mutated]
}

#[test]
fn random_and_mutated_inputs_hold_every_invariant() {
    for (name, body) in TARGETS {
        let mut runner = TestRunner::new(Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&inputs(corpus(name)), |input| {
                body(&input);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("fuzz target {name}: {e}"));
    }
}
