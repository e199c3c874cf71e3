//! Page trees of any shape (cycles, shared subtrees, lying or absurd
//! `/Count`s, missing types) over two real pages: extraction must never
//! panic, abort or hang. The bytes describe the tree
//! (`shirabe::samples::page_tree_from`), so the fuzzer explores shapes
//! rather than broken syntax.
//! Run: cargo +nightly fuzz run page_tree -- -max_total_time=1800
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pdf) = shirabe::samples::page_tree_from(data) {
        let _ = shirabe::ingest::pdf::extract(&pdf);
    }
});
