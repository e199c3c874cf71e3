//! `shirabe bench`: speed measurements that print figures.
//!
//! `bench search` builds (or reuses) a synthetic index of N chunks of
//! Zipf-distributed words, with a share of Japanese chunks, and times full
//! searches (query analysis, BM25, top 10, stored fields and snippets).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use shirabe::index::ShirabeIndex;
use shirabe::ingest::chunk::{Chunk, Span};
use shirabe::retrieve::{self, SearchRequest};

use super::args::{BenchArgs, BenchWhat};
use super::{Settings, Status};

const SYLLABLES: [&str; 24] = [
    "ka", "to", "re", "mi", "sa", "lo", "ne", "vi", "pu", "ra", "de", "mo", "li", "ta", "su", "ge",
    "bo", "an", "er", "in", "on", "us", "el", "ti",
];
const JA_WORDS: [&str; 16] = [
    "会議",
    "予算",
    "承認",
    "倉庫",
    "大阪",
    "報告",
    "決定",
    "事項",
    "担当",
    "期限",
    "売上",
    "改善",
    "計画",
    "次回",
    "議事録",
    "検討",
];

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// A Zipf-like rank in 0..n (density ~ 1/rank).
    fn zipf(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as u64
    }
}

fn word(rank: u64) -> String {
    let mut w = String::new();
    let mut r = rank + 24;
    while r > 0 {
        w.push_str(SYLLABLES[(r % 24) as usize]);
        r /= 24;
    }
    w
}

const VOCABULARY: u64 = 50_000;

fn synthetic_chunk(rng: &mut Rng, ordinal: u32) -> Chunk {
    let japanese = rng.below(20) == 0;
    let mut text = String::new();
    let n = 300 + rng.below(150);
    for i in 0..n {
        if japanese {
            text.push_str(JA_WORDS[rng.zipf(JA_WORDS.len() as u64) as usize]);
            if i % 12 == 11 {
                text.push('。');
            }
        } else {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(&word(rng.zipf(VOCABULARY)));
            if i % 15 == 14 {
                text.push('.');
            }
        }
    }
    let chars = text.chars().count();
    Chunk {
        ordinal,
        page_start: ordinal + 1,
        page_end: ordinal + 1,
        page_labels: Vec::new(),
        section: None,
        spans: vec![Span {
            page: ordinal + 1,
            start: 0,
            end: chars,
            at: 0,
            label: None,
        }],
        tokens: shirabe::ingest::tokens::estimate(&text),
        text,
    }
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn run(s: &Settings, a: &BenchArgs) -> Result<Status> {
    let BenchWhat::Search {
        chunks,
        queries,
        dir,
        json,
    } = &a.what;
    let tmp;
    let dir: PathBuf = match dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let mut build_rate = None;
    let existing = ShirabeIndex::open(&dir)
        .ok()
        .map(|i| -> Result<u64> { Ok(i.reader()?.searcher().num_docs()) });
    let have = match existing {
        Some(n) => n?,
        None => 0,
    };
    if have != *chunks as u64 {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let index = ShirabeIndex::open_or_create(&dir)?;
        let mut writer = index.writer()?;
        let mut rng = Rng(0x5eed);
        let started = Instant::now();
        let per_doc = 100;
        for d in 0..chunks.div_ceil(per_doc) {
            let n = per_doc.min(chunks - d * per_doc);
            let batch: Vec<Chunk> = (0..n as u32)
                .map(|i| synthetic_chunk(&mut rng, i))
                .collect();
            let key = format!("/bench/doc-{d:06}.pdf");
            index.add_chunks(&writer, &key, &key, Some("Synthetic document"), &batch)?;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        let secs = started.elapsed().as_secs_f64();
        build_rate = Some(*chunks as f64 / secs);
        if !s.quiet && !json {
            eprintln!(
                "indexed {chunks} synthetic chunks in {secs:.1}s ({:.0} chunks/s)",
                *chunks as f64 / secs
            );
        }
    }
    let index = ShirabeIndex::open(&dir)?;
    let mut rng = Rng(0xbeef);
    let make_query = |rng: &mut Rng| -> String {
        if rng.below(10) == 0 {
            return JA_WORDS[rng.below(JA_WORDS.len() as u64) as usize].to_string();
        }
        let n = 1 + rng.below(3);
        (0..n)
            .map(|_| word(50 + rng.below(5_000)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for _ in 0..50 {
        let q = make_query(&mut rng);
        retrieve::search(
            &index,
            &SearchRequest {
                query: q,
                limit: 10,
                doc_glob: None,
            },
        )?;
    }
    let mut times = Vec::with_capacity(*queries);
    let mut found = 0usize;
    for _ in 0..*queries {
        let q = make_query(&mut rng);
        let t = Instant::now();
        let hits = retrieve::search(
            &index,
            &SearchRequest {
                query: q,
                limit: 10,
                doc_glob: None,
            },
        )?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        found += usize::from(!hits.is_empty());
    }
    times.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let rss = peak_rss_mb();
    let mut out = std::io::stdout().lock();
    if *json {
        serde_json::to_writer(
            &mut out,
            &json!({"chunks": chunks, "queries": queries, "p50_ms": p50, "p99_ms": p99, "mean_ms": mean,
                    "queries_with_hits": found, "index_chunks_per_s": build_rate, "peak_rss_mb": rss}),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "search latency over {chunks} chunks, {queries} queries (top 10, with snippets):"
        )?;
        writeln!(
            out,
            "  p50 {p50:.2} ms   p99 {p99:.2} ms   mean {mean:.2} ms   ({found} queries had hits)"
        )?;
        if let Some(r) = build_rate {
            writeln!(out, "  indexing: {r:.0} chunks/s")?;
        }
        if let Some(rss) = rss {
            writeln!(out, "  peak RSS: {rss:.0} MB")?;
        }
    }
    Ok(Status::Success)
}
