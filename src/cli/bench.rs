//! `shirabe bench`: speed measurements that print figures.
//!
//! `bench vectors` fills embedded vector stores with random unit vectors
//! and times exact dense search (top 10) over them.
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

use shirabe::rng::Rng;

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
        sections: Vec::new(),
        spans: vec![Span {
            ocr: false,
            page: ordinal + 1,
            start: 0,
            end: chars,
            at: 0,
            label: None,
        }],
        tokens: shirabe::ingest::tokens::estimate(&text),
        running: Vec::new(),
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
    match &a.what {
        BenchWhat::Search {
            chunks,
            queries,
            dir,
            json,
        } => search(s, *chunks, *queries, dir.as_ref(), *json),
        BenchWhat::Ttft {
            preset,
            dtype,
            ctx,
            tokenizer,
            json,
        } => ttft_bench(preset, dtype, ctx, tokenizer, *json),
        BenchWhat::Pack {
            ctx,
            passages,
            tokenizer,
            json,
        } => pack_bench(*ctx, *passages, tokenizer, *json),
        BenchWhat::Tui {
            width,
            height,
            frames,
            json,
        } => tui_bench(*width, *height, *frames, *json),
        BenchWhat::IngestEmbed {
            preset,
            dtype,
            chunks,
            tokenizer,
            json,
        } => ingest_embed(preset, dtype, *chunks, tokenizer, *json),
        BenchWhat::Vectors {
            rows,
            dims,
            dtype,
            queries,
            dir,
            json,
            ann_max_rows,
            ef,
            clustered,
        } => vectors(
            rows,
            *dims,
            dtype,
            *queries,
            (*ann_max_rows, *ef, *clustered),
            dir.as_ref(),
            *json,
        ),
    }
}

/// `n` retrieved passages of ~520 tokens over 37 documents.
fn synthetic_hits(n: usize) -> Vec<shirabe::retrieve::Hit> {
    use shirabe::retrieve::{Explain, Hit};
    let mut rng = Rng::new(0xfeed);
    (0..n)
        .map(|i| {
            let text: Vec<String> = (0..40)
                .map(|_| {
                    let words: Vec<String> = (0..6).map(|_| word(50 + rng.zipf(5_000))).collect();
                    format!("{}.", words.join(" "))
                })
                .collect();
            Hit {
                ocr: false,
                path: format!("doc{}.pdf", i % 37),
                title: Some(format!("Document {}", i % 37)),
                section: None,
                page_start: i as u32 + 1,
                page_end: i as u32 + 1,
                page: i as u32 + 1,
                page_label: None,
                chunk_id: format!("d{}-{}", i % 37, i * 3),
                score: 1.0,
                text: text.join(" "),
                snippet: String::new(),
                highlights: Vec::new(),
                explain: Explain::default(),
                neighbors: Vec::new(),
                spans: Vec::new(),
            }
        })
        .collect()
}

/// Frame times of the TUI while an answer streams in.
fn tui_bench(width: u16, height: u16, frames: usize, json: bool) -> Result<Status> {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::CrosstermBackend;
    use ratatui::layout::Rect;
    use ratatui::{Terminal, TerminalOptions, Viewport};
    use shirabe::tui::app::{Action, App, Report};
    anyhow::ensure!(frames > 0, "--frames must be at least 1");
    let backend = CrosstermBackend::new(std::io::sink());
    let mut term = Terminal::with_options(
        backend,
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, width, height)),
        },
    )?;
    let info = shirabe::tui::Info {
        documents: 37,
        chunks: 16_484,
        embedded: 16_484,
        mode: "hybrid".into(),
        backend: "qwen3-4b".into(),
        window: 131_072,
        ..Default::default()
    };
    let mut app = App::new(info, true);
    let t0 = Instant::now();
    app.set_query("What did the board decide about the budget?", t0);
    let Some(Action::Search { seq, .. }) = app.tick(t0) else {
        anyhow::bail!("the TUI did not search");
    };
    let mut hits = synthetic_hits(30);
    for h in &mut hits {
        h.snippet = h.text.chars().take(200).collect();
        h.highlights = vec![(3, 9), (40, 47)];
    }
    app.on_report(Report::Results {
        seq,
        query: app.query.clone(),
        hits,
    });
    let ask = app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE), t0);
    let [Action::Ask { seq, .. }] = ask.as_slice() else {
        anyhow::bail!("the TUI did not ask");
    };
    let mut rng = Rng::new(0xc0ffee);
    let mut times = Vec::with_capacity(frames);
    let started = Instant::now();
    for i in 0..frames {
        // A few tokens per frame, as a fast backend delivers them.
        let mut text: Vec<String> = (0..4).map(|_| word(50 + rng.zipf(5_000))).collect();
        if i % 12 == 11 {
            text.push(format!("[{}].", 1 + i % 9));
        }
        app.on_report(Report::Text {
            seq: *seq,
            text: format!(" {}", text.join(" ")),
        });
        let t = Instant::now();
        term.draw(|f| shirabe::tui::ui::draw(f, &mut app, std::time::Instant::now()))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = started.elapsed().as_secs_f64();
    let answer_chars = app.answer.as_ref().map_or(0, |a| a.text.chars().count());
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted[sorted.len() - 1],
    );
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(
            &mut out,
            &json!({"width": width, "height": height, "frames": frames, "answer_chars": answer_chars,
                    "frame_ms_p50": p50, "frame_ms_p99": p99, "frame_ms_max": max,
                    "frames_per_second_possible": frames as f64 / total}),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "tui {width}x{height}, {frames} frames while a {answer_chars}-character answer streamed: frame p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({:.0} frames/s possible; the loop draws every 25 ms while busy)",
            frames as f64 / total
        )?;
    }
    Ok(Status::Success)
}

/// Time to first token of a packed prompt with a random-weight model in
/// real shapes: packing, tokenizing and prefill, at several windows.
fn ttft_bench(
    preset: &str,
    dtype: &shirabe::models::WeightDtype,
    ctxs: &[usize],
    tokenizer: &std::path::Path,
    json: bool,
) -> Result<Status> {
    use candle_core::Device;
    use shirabe::ingest::tokens::TokenCounter;
    use shirabe::models::generate::{Generator, SamplingParams};
    use shirabe::models::qwen3::Model;
    use shirabe::models::weights::Random;
    anyhow::ensure!(
        tokenizer.is_file(),
        "{}: no tokenizer (run corpora/fetch-qwen-tokenizer.sh)",
        tokenizer.display()
    );
    let tok = tokenizers::Tokenizer::from_file(tokenizer).map_err(|e| anyhow::anyhow!("{e}"))?;
    let counter = TokenCounter::from_tokenizer(tok.clone(), tokenizer);
    let cfg = shirabe::models::config::Config::qwen3_preset(preset)?;
    let dt = (*dtype).into();
    let generator = Generator::new(Model::new(&cfg, &Random::new(dt, &Device::Cpu))?, tok);
    let hits = synthetic_hits(400);
    let mut out = std::io::stdout().lock();
    let mut rows = Vec::new();
    for &ctx in ctxs {
        let t = Instant::now();
        let packed =
            shirabe::prompt::pack(&hits, "What did the board decide?", &counter, ctx - 64, &[]);
        let ids = generator.encode(&packed.prompt)?;
        let pack_s = t.elapsed().as_secs_f64();
        let params = SamplingParams {
            max_tokens: 1,
            ..Default::default()
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        let t = Instant::now();
        generator.generate(&ids, &params, &stop, |_| {})?;
        let first = t.elapsed().as_secs_f64();
        let row = json!({"ctx": ctx, "prompt_tokens": ids.len(), "pack_and_tokenize_s": pack_s,
                         "prefill_and_first_token_s": first, "ttft_s": pack_s + first,
                         "prefill_tokens_per_s": ids.len() as f64 / first});
        if !json {
            writeln!(
                out,
                "{preset} {dtype}: {} prompt tokens: pack+tokenize {pack_s:.2}s, prefill+first token {first:.1}s ({:.0} tokens/s) → time to first token {:.1}s",
                ids.len(),
                ids.len() as f64 / first,
                pack_s + first
            )?;
            out.flush()?;
        }
        rows.push(row);
    }
    if json {
        serde_json::to_writer(&mut out, &rows)?;
        writeln!(out)?;
    }
    Ok(Status::Success)
}

fn pack_bench(ctx: usize, n: usize, tokenizer: &std::path::Path, json: bool) -> Result<Status> {
    use shirabe::ingest::tokens::TokenCounter;
    anyhow::ensure!(
        tokenizer.is_file(),
        "{}: no tokenizer (run corpora/fetch-qwen-tokenizer.sh)",
        tokenizer.display()
    );
    let counter = TokenCounter::load(tokenizer)?;
    let hits = synthetic_hits(n);
    let budget = ctx - 1024;
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    let packed = shirabe::prompt::pack(
        &hits,
        "What did the board decide about the budget?",
        &counter,
        budget,
        &[],
    );
    let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(
            &mut out,
            &json!({"ctx": ctx, "budget": budget, "tokens": packed.tokens, "passages": packed.passages.len(),
                    "candidates": n, "wall_seconds": wall, "cpu_seconds": cpu}),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} from {n} candidates: packed in {wall:.3}s wall, {cpu:.3}s CPU",
            packed.summary()
        )?;
    }
    Ok(Status::Success)
}

/// CPU time of this process (user + system), seconds.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |x| x.1)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn ingest_embed(
    preset: &str,
    dtype: &shirabe::models::WeightDtype,
    chunks: usize,
    tokenizer: &std::path::Path,
    json: bool,
) -> Result<Status> {
    use candle_core::Device;
    use shirabe::ingest::embed::{embed_index, EmbedOptions};
    use shirabe::models::embed::{named, Embedder};
    use shirabe::models::qwen3::Model;
    use shirabe::models::weights::Random;
    anyhow::ensure!(
        tokenizer.is_file(),
        "{}: no tokenizer (run corpora/fetch-qwen-tokenizer.sh)",
        tokenizer.display()
    );
    let dt = (*dtype).into();
    let cfg = shirabe::models::config::Config::qwen3_preset(preset)?;
    let tmp = tempfile::tempdir()?;
    // Synthetic English: each file becomes one 512-token chunk.
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs)?;
    let mut rng = Rng::new(0x1de5);
    for i in 0..chunks {
        let text: Vec<String> = (0..240).map(|_| word(50 + rng.zipf(5_000))).collect();
        std::fs::write(docs.join(format!("doc{i:04}.txt")), text.join(" "))?;
    }
    let opts = shirabe::ingest::IngestOptions {
        paths: vec![docs],
        index_dir: tmp.path().join("index"),
        prune: false,
        tokenizer: Some(tokenizer.display().to_string()),
        chunking: shirabe::ingest::chunk::ChunkParams {
            target_tokens: 512,
            overlap_tokens: 0,
        },
        jobs: 0,
        commit_interval: std::time::Duration::from_secs(2),
        ocr: shirabe::ingest::ocr::OcrSettings::default(),
        forget: Vec::new(),
        isolation: Default::default(),
    };
    let ingest = shirabe::ingest::run(&opts, &|_| {})?;
    let t = Instant::now();
    let model = Model::new(&cfg, &Random::new(dt, &Device::Cpu))?;
    let tok = tokenizers::Tokenizer::from_file(tokenizer).map_err(|e| anyhow::anyhow!("{e}"))?;
    let embedder = named(
        Embedder::new(model, tok),
        format!("random-{preset}-{dtype}"),
    );
    let load = t.elapsed().as_secs_f64();
    let index = ShirabeIndex::open(&opts.index_dir)?;
    let _lock = index.lock()?;
    let mut manifest = index.manifest.clone().expect("ingested");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let r = embed_index(
        &index,
        &mut manifest,
        embedder.as_ref(),
        &EmbedOptions::default(),
        &stop,
        &|_| {},
    )?;
    let (cps, tps) = (r.embedded as f64 / r.seconds, r.tokens as f64 / r.seconds);
    let rss = peak_rss_mb();
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(
            &mut out,
            &json!({
                "preset": preset, "dtype": dtype, "chunks": r.embedded, "tokens": r.tokens,
                "seconds": r.seconds, "chunks_per_s": cps, "tokens_per_s": tps,
                "seconds_per_chunk": r.seconds / r.embedded.max(1) as f64,
                "model_build_seconds": load, "ingest_seconds": ingest.seconds, "peak_rss_mb": rss,
            }),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{preset} ({dtype}, random weights): {} chunks, {} tokens embedded in {:.1}s: {cps:.2} chunks/s, {tps:.0} tokens/s, {:.1} s per chunk; BM25 ingest {:.2}s; peak RSS {:.0} MB",
            r.embedded,
            r.tokens,
            r.seconds,
            r.seconds / r.embedded.max(1) as f64,
            ingest.seconds,
            rss.unwrap_or(0.0)
        )?;
    }
    Ok(Status::Success)
}

/// A random unit vector.
fn random_unit(rng: &mut Rng, dims: usize) -> Vec<f32> {
    // Sums of uniforms: near-Gaussian, enough for random directions.
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            (0..4)
                .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                .sum()
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

#[allow(clippy::too_many_arguments)]
fn vectors(
    sizes: &[usize],
    dims: usize,
    dtype: &shirabe::index::vectors::VectorDtype,
    queries: usize,
    (ann_max_rows, ef, clustered): (usize, usize, bool),
    dir: Option<&PathBuf>,
    json: bool,
) -> Result<Status> {
    use shirabe::index::hnsw::Params;
    use shirabe::index::vectors::{Key, VectorStore};
    let dtype = *dtype;
    let tname = format!("{dtype:?}").to_lowercase();
    let tmp = tempfile::tempdir()?;
    let root = dir.cloned().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut rows_out = Vec::new();
    let mut out = std::io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:>9} {:>5} {:>5} {:>6} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9}",
            "rows",
            "dims",
            "type",
            "search",
            "p50 ms",
            "p99 ms",
            "mean ms",
            "disk MB",
            "build s",
            "recall@10"
        )?;
        out.flush()?;
    }
    let time =
        |store: &VectorStore, qs: &[Vec<f32>], ann: bool| -> Result<(Vec<f64>, Vec<Vec<u32>>)> {
            let mut times = Vec::with_capacity(qs.len());
            let mut found = Vec::with_capacity(qs.len());
            for q in qs.iter().take(5) {
                store.search(q, 10, None)?;
            }
            for q in qs {
                let t = Instant::now();
                let hits = if ann {
                    store.search_ann(q, 10, ef)?
                } else {
                    store.search(q, 10, None)?
                };
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                found.push(hits.iter().map(|h| h.row).collect());
            }
            times.sort_by(f64::total_cmp);
            Ok((times, found))
        };
    for &n in sizes {
        let path = root.join(format!("bench-{n}-{dims}-{tname}"));
        let _ = std::fs::remove_dir_all(&path);
        let mut store = VectorStore::open(&path, dims, dtype, 0)?;
        let mut rng = Rng::new(0x5eed ^ n as u64);
        let centres: Vec<Vec<f32>> = if clustered {
            (0..1000).map(|_| random_unit(&mut rng, dims)).collect()
        } else {
            Vec::new()
        };
        let draw = |rng: &mut Rng| {
            let v = random_unit(rng, dims);
            if centres.is_empty() {
                return v;
            }
            let c = &centres[rng.below(centres.len() as u64) as usize];
            let mut w: Vec<f32> = c.iter().zip(&v).map(|(a, b)| a + 0.6 * b).collect();
            let n = w.iter().map(|x| x * x).sum::<f32>().sqrt();
            w.iter_mut().for_each(|x| *x /= n);
            w
        };
        let t = Instant::now();
        let batch = 8192;
        let mut done = 0;
        while done < n {
            let m = batch.min(n - done);
            let items: Vec<(Key, Vec<f32>)> = (0..m)
                .map(|i| {
                    let mut key = [0u8; 16];
                    key[..8].copy_from_slice(&((done + i) as u64).to_le_bytes());
                    (key, draw(&mut rng))
                })
                .collect();
            store.append(&items)?;
            done += m;
        }
        let fill = t.elapsed().as_secs_f64();
        let qs: Vec<Vec<f32>> = (0..queries).map(|_| draw(&mut rng)).collect();
        let (times, exact) = time(&store, &qs, false)?;
        let mut report = |kind: &str,
                          times: &[f64],
                          build: f64,
                          recall: Option<f64>,
                          disk: f64|
         -> Result<()> {
            let (p50, p99) = (percentile(times, 0.5), percentile(times, 0.99));
            let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
            if json {
                rows_out.push(json!({
                    "rows": n, "dims": dims, "dtype": tname, "search": kind,
                    "p50_ms": p50, "p99_ms": p99, "mean_ms": mean, "disk_mb": disk,
                    "build_seconds": build, "recall_at_10": recall,
                    "clustered": clustered, "ef": ef,
                }));
            } else {
                writeln!(
                    out,
                    "{n:>9} {dims:>5} {tname:>5} {kind:>6} {p50:>8.2} {p99:>8.2} {mean:>8.2} {disk:>9.1} {build:>8.1} {:>9}",
                    recall.map_or("-".to_string(), |r| format!("{r:.3}"))
                )?;
                out.flush()?;
            }
            Ok(())
        };
        let disk = store.disk_bytes() as f64 / 1e6;
        report("exact", &times, fill, None, disk)?;
        if n <= ann_max_rows {
            let t = Instant::now();
            store.build_ann(
                Params::default(),
                &std::sync::atomic::AtomicBool::new(false),
                &|_, _| {},
            )?;
            let build = t.elapsed().as_secs_f64();
            let graph =
                std::fs::metadata(path.join("hnsw.bin")).map_or(0, |m| m.len()) as f64 / 1e6;
            let (times, got) = time(&store, &qs, true)?;
            let hit: usize = got
                .iter()
                .zip(&exact)
                .map(|(g, e)| g.iter().filter(|r| e.contains(r)).count())
                .sum();
            let recall = hit as f64 / exact.iter().map(Vec::len).sum::<usize>().max(1) as f64;
            report("hnsw", &times, build, Some(recall), disk + graph)?;
        }
        drop(store);
        if dir.is_none() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    if json {
        serde_json::to_writer(&mut out, &rows_out)?;
        writeln!(out)?;
    }
    Ok(Status::Success)
}

fn search(
    s: &Settings,
    chunks: usize,
    queries: usize,
    dir: Option<&PathBuf>,
    json: bool,
) -> Result<Status> {
    let (chunks, queries, json) = (&chunks, &queries, &json);
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
        let mut rng = Rng::new(0x5eed);
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
    let mut rng = Rng::new(0xbeef);
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
        retrieve::search(&index, &SearchRequest::new(q, 10), None)?;
    }
    let mut times = Vec::with_capacity(*queries);
    let mut found = 0usize;
    for _ in 0..*queries {
        let q = make_query(&mut rng);
        let t = Instant::now();
        let hits = retrieve::search(&index, &SearchRequest::new(q, 10), None)?;
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
