//! Whole-PDF extraction on arbitrary bytes: must never panic or hang.
//! Run: cargo +nightly fuzz run extract -- -max_total_time=1800
//! (seed the corpus with `cargo run -- sample-corpus fuzz/corpus/extract`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = shirabe::ingest::pdf::extract(data);
});
