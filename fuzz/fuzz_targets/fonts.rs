//! The font-program and CMap parsers on arbitrary bytes: a ToUnicode or
//! predefined CMap, an embedded Type1 program, an embedded CFF program.
//! Run: RUSTC_BOOTSTRAP=1 cargo fuzz run fonts -- -max_total_time=1800
//! (seeds: `fuzz/seed-fonts.sh`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shirabe::ingest::pdf::fuzz_font_parsers(data);
});
