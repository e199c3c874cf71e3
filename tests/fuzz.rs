//! Property tests over mutated PDFs: extraction must never panic, whatever
//! bytes it is given. (The cargo-fuzz targets in `fuzz/` go further.)

use proptest::prelude::*;

fn seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let mut out: Vec<Vec<u8>> = shirabe::samples::write_sample_corpus(dir.path())
        .unwrap()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pdf"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    out.push(shirabe::samples::long_pdf(3));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_pdfs_never_panic(
        seed in 0usize..64,
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..24),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
        splice in proptest::option::of((any::<proptest::sample::Index>(), proptest::collection::vec(any::<u8>(), 0..64))),
    ) {
        thread_local!(static SEEDS: Vec<Vec<u8>> = seeds());
        let mut bytes = SEEDS.with(|s| s[seed % s.len()].clone());
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Some((at, data)) = splice {
            let i = at.index(bytes.len());
            bytes.splice(i..i, data);
        }
        if let Some(cut) = cut {
            let i = cut.index(bytes.len());
            bytes.truncate(i);
        }
        let _ = shirabe::ingest::pdf::extract(&bytes);
    }

    /// Page trees with cycles, shared subtrees, lying or absurd counts and
    /// missing types (the `page_tree` fuzz target's shapes): never a panic
    /// or an abort, and the two real pages are read once each when the root
    /// reaches them.
    #[test]
    fn page_trees_of_any_shape_are_walked_safely(spec in proptest::collection::vec(any::<u8>(), 0..96)) {
        let pdf = shirabe::samples::page_tree_from(&spec).unwrap();
        if let Ok(doc) = shirabe::ingest::pdf::extract(&pdf) {
            prop_assert!(doc.pages.len() <= 2, "{} pages", doc.pages.len());
        }
    }
}

#[test]
fn content_lexer_survives_random_bytes() {
    let mut state = 0x1234_5678_u64;
    for _ in 0..2000 {
        let len = (state % 512) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Bias towards PDF syntax characters.
                const SYNTAX: &[u8] = b"()<>[]/{}%\\ 0123456789.-+TJjBTETfd\n";
                SYNTAX[(state % SYNTAX.len() as u64) as usize]
            })
            .collect();
        let mut lexer = shirabe::ingest::pdf::lexer::Lexer::new(&bytes);
        let mut ops = Vec::new();
        let mut n = 0;
        while lexer.next_op(&mut ops).is_some() {
            n += 1;
            assert!(n <= bytes.len() + 1, "lexer does not advance");
        }
    }
}
