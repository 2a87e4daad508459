#![no_main]
// The body lives in src/fuzz.rs, so the corpus also replays as an ordinary test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| hookwall::fuzz::config(data));
