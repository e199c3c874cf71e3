//! The content-stream lexer on arbitrary bytes: must terminate without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shirabe::ingest::pdf::lexer::Lexer;

fuzz_target!(|data: &[u8]| {
    let mut lexer = Lexer::new(data);
    let mut operands = Vec::new();
    while lexer.next_op(&mut operands).is_some() {}
});
