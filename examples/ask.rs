//! Ingest a folder and ask it a question with the library alone: BM25
//! retrieval, and an extractive answer (or a local Qwen GGUF named by
//! `SHIRABE_MODEL`), its citations checked.
//!
//! cargo run --release --example ask -- corpora/sample "What was the budget?"

use std::sync::atomic::AtomicBool;

use shirabe::answer::{AnswerConfig, AnswerHooks, Answerer, LocalModel, Question};
use shirabe::index::ShirabeIndex;
use shirabe::ingest::{self, IngestOptions};
use shirabe::retrieve::Retriever;

fn main() -> shirabe::Result<()> {
    let mut args = std::env::args().skip(1);
    let folder = args.next().expect("usage: ask FOLDER QUESTION...");
    let question = args.collect::<Vec<_>>().join(" ");
    let dir = std::env::temp_dir().join("shirabe-example-index");
    ingest::run(&IngestOptions::new(vec![folder.into()], &dir), &|_| {})?;
    let index = ShirabeIndex::open(&dir)?;
    let hits = Retriever::bm25().retrieve(Some(&index), &question, 8, None)?;
    let model = std::env::var("SHIRABE_MODEL").ok().map(|spec| LocalModel {
        spec,
        dtype: candle_core::DType::F32,
        cache_dtype: None,
    });
    let answerer = Answerer::new(
        model.as_ref(),
        None,
        index.manifest.as_ref(),
        AnswerConfig::default(),
    )?;
    let rarity = shirabe::retrieve::term_rarity(&index, &question)?;
    let cancel = AtomicBool::new(false);
    let q = Question {
        rarity: Some(&rarity),
        ..Question::new(&question, &hits, &cancel)
    };
    let r = answerer.answer(&q, &AnswerHooks::silent(), &mut |_| {})?;
    println!("{}", r.checked.answer);
    for c in &r.checked.citations {
        let p = &r.packed.passages[c.n - 1];
        println!(
            "[{}] {} p. {}: {}",
            c.n, p.path, c.located.page, c.quote_text
        );
    }
    Ok(())
}
