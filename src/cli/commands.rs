//! The commands: each turns settings and arguments into library calls and
//! writes the results to stdout (JSON or text).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use shirabe::index::manifest::FileStatus;
use shirabe::index::ShirabeIndex;
use shirabe::ingest::{self, Event, IngestOptions};
use shirabe::retrieve::{self, SearchRequest};

use shirabe::ingest::embed::{EmbedEvent, EmbedOptions, EmbedReport};
use shirabe::models::embed::TextEmbedder;
use shirabe::retrieve::{Mode, Retriever, RetrieverConfig};

use shirabe::index::qdrant::{QdrantConfig, QdrantIndex, SyncReport};

use super::args::{
    EmbedArgs, EmbedIndexArgs, ExtractArgs, GenerateArgs, IngestArgs, MigrateArgs, ModelsAction,
    ModelsArgs, SearchArgs, StatusArgs,
};
use super::style::Style;
use super::{Settings, Status};

/// Runs `f` on a thread with a large stack (deeply nested PDFs recurse).
fn with_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    std::thread::Builder::new()
        .stack_size(ingest::WORKER_STACK_BYTES)
        .spawn(f)?
        .join()
        .map_err(|_| anyhow::anyhow!("internal error while reading the file"))
}

pub fn ingest(s: &Settings, a: &IngestArgs) -> Result<Status> {
    let opts = IngestOptions {
        paths: a.paths.clone(),
        index_dir: s.index.clone(),
        prune: a.prune,
        tokenizer: s.tokenizer.clone(),
        chunking: s.chunking,
        jobs: s.jobs,
        commit_interval: Duration::from_secs(2),
    };
    let bar = if s.progress && !a.json {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.green} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} files · {msg} · ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let started = std::time::Instant::now();
    let pages = std::sync::atomic::AtomicU64::new(0);
    let report = ingest::run(&opts, &|e| {
        let Some(bar) = &bar else { return };
        match e {
            Event::Started { files } => bar.set_length(*files as u64),
            Event::FileDone { pages: p, .. } => {
                let total = pages.fetch_add(u64::from(*p), std::sync::atomic::Ordering::Relaxed)
                    + u64::from(*p);
                let rate = total as f64 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{total} pages ({rate:.0} pages/s)"));
                bar.inc(1);
            }
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut status = if report.failed.is_empty() {
        Status::Success
    } else {
        Status::Partial
    };
    if a.json {
        let mut report = report;
        let embedding = if a.no_embed {
            report
                .notes
                .push("--no-embed: the index is BM25-only".into());
            None
        } else {
            let (r, st) = run_embedding(s, None, false, false)?;
            if st == Status::Interrupted {
                status = st;
            }
            if let Err(why) = &r {
                report.notes.push(why.clone());
            }
            r.ok()
        };
        let synced = sync_qdrant(s)?;
        let mut v = serde_json::to_value(&report)?;
        v["embedding"] = serde_json::to_value(&embedding)?;
        v["qdrant"] = serde_json::to_value(&synced)?;
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(status);
    }
    let st = Style::new(s.color);
    if !s.quiet {
        for note in &report.notes {
            writeln!(out, "note: {note}")?;
        }
    }
    for f in &report.failed {
        writeln!(
            out,
            "{} {}: {}",
            st.error("failed:"),
            st.path(&f.path),
            st.text(&f.error)
        )?;
    }
    for p in &report.empty {
        writeln!(
            out,
            "empty: {}: no extractable text (a scan without a text layer?)",
            st.path(p)
        )?;
    }
    for p in &report.pruned {
        writeln!(out, "pruned: {}", st.path(p))?;
    }
    if !s.quiet {
        writeln!(
            out,
            "{} files: {} indexed, {} unchanged, {} failed{}; {} pages, {} chunks in {:.1}s → {}",
            report.files,
            report.indexed,
            report.unchanged,
            report.failed.len(),
            if report.pruned.is_empty() {
                String::new()
            } else {
                format!(", {} pruned", report.pruned.len())
            },
            report.pages,
            report.chunks,
            report.seconds,
            s.index.display()
        )?;
        if report.tokenizer.starts_with("estimate") && s.tokenizer.is_none() {
            writeln!(
                out,
                "note: token counts are estimated (no Qwen tokenizer found; pass --tokenizer or see README)"
            )?;
        }
    }
    out.flush()?;
    drop(out);
    if a.no_embed {
        if !s.quiet {
            println!(
                "note: --no-embed: the index is BM25-only (`shirabe embed-index` adds vectors)"
            );
        }
        return Ok(status);
    }
    if a.background {
        let pid = spawn_background_embedding(s)?;
        if !s.quiet {
            println!(
                "embedding in the background (pid {pid}, log {}); search works now and turns hybrid as vectors arrive; `shirabe status` shows the progress",
                s.index.join("embed.log").display()
            );
        }
        return Ok(status);
    }
    let (report, st) = run_embedding(s, None, false, !s.quiet)?;
    if let Ok(r) = &report {
        print_embed_report(s, r)?;
    }
    if let Some(q) = sync_qdrant(s)? {
        print_sync_report(s, &q);
    }
    Ok(if st == Status::Interrupted {
        st
    } else {
        status
    })
}

/// Starts `shirabe embed-index` detached from this terminal (its own
/// process group, so Ctrl-C here does not stop it), logging to
/// INDEX/embed.log. Returns its pid.
fn spawn_background_embedding(s: &Settings) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let log_path = s.index.join("embed.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("--index").arg(&s.index).arg("embed-index");
    if let Some(m) = &s.embed.model {
        cmd.arg("--embed-model").arg(m);
    }
    if let Some(d) = s.embed.dims {
        cmd.arg("--dims").arg(d.to_string());
    }
    let dtype = match s.embed.dtype {
        candle_core::DType::BF16 => "bf16",
        candle_core::DType::F16 => "f16",
        _ => "f32",
    };
    cmd.arg("--embed-dtype").arg(dtype);
    cmd.arg("--vector-dtype").arg(match s.embed.vector_dtype {
        shirabe::index::vectors::VectorDtype::F16 => "f16",
        shirabe::index::vectors::VectorDtype::F32 => "f32",
    });
    if let Some(q) = &s.qdrant.qdrant {
        cmd.arg("--qdrant").arg(q);
    }
    // The key travels in the environment, not in argv (visible in ps).
    if let Some(k) = &s.qdrant.qdrant_api_key {
        cmd.env("QDRANT_API_KEY", k);
    }
    if let Some(c) = &s.qdrant.qdrant_collection {
        cmd.arg("--qdrant-collection").arg(c);
    }
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the background embedding")?;
    Ok(child.id())
}

/// The embedding model to use for `index`: the one given, else the one the
/// index was embedded with, else the default model if it is in the local
/// cache. `None` (with the reason) when there is none.
fn choose_embed_model(s: &Settings, index: &ShirabeIndex) -> std::result::Result<String, String> {
    if let Some(m) = &s.embed.model {
        return Ok(m.clone());
    }
    if let Some((_, st)) = index.manifest.as_ref().and_then(|m| m.active_store()) {
        if !st.spec.is_empty() {
            return Ok(st.spec.clone());
        }
    }
    let default = shirabe::models::DEFAULT_EMBED_MODEL;
    match shirabe::models::find(default) {
        Ok(_) => Ok(default.to_string()),
        Err(_) => Err(format!(
            "no embedding model ({default} is not in the Hugging Face cache): the index is BM25-only; pass --embed-model DIR|REPO or run `shirabe models pull {default}`"
        )),
    }
}

/// Loads `spec`; `dims` narrows a Qwen3-Embedding (Matryoshka).
fn load_embedder(s: &Settings, spec: &str, dims: Option<usize>) -> Result<Box<dyn TextEmbedder>> {
    shirabe::models::embed::load(
        spec,
        s.embed.dtype,
        &shirabe::models::default_device(),
        dims,
    )
    .with_context(|| format!("loading the embedding model {spec}"))
}

/// Embeds the chunks of the index that have no vector. `required`: a
/// missing model is an error rather than a reason returned (and printed as
/// a note when `print_note`).
pub(super) fn run_embedding(
    s: &Settings,
    limit: Option<usize>,
    required: bool,
    print_note: bool,
) -> Result<(std::result::Result<EmbedReport, String>, Status)> {
    let mut index = ShirabeIndex::open(&s.index)?;
    let _lock = index.lock()?;
    // Re-read the manifest under the lock.
    index = ShirabeIndex::open(&s.index)?;
    let spec = match choose_embed_model(s, &index) {
        Ok(spec) => spec,
        Err(why) if !required => {
            if print_note {
                println!("note: {why}");
            }
            return Ok((Err(why), Status::Success));
        }
        Err(why) => anyhow::bail!(why),
    };
    // Nothing to do for the index's own model: answer without loading it.
    if let Some(c) = shirabe::ingest::embed::coverage(&index)? {
        if c.spec == spec && c.with_vectors == c.chunks && s.embed.dims.is_none() {
            let report = EmbedReport {
                model: c.model,
                chunks: c.chunks,
                with_vectors: c.with_vectors,
                cached: c.chunks,
                ..EmbedReport::default()
            };
            return Ok((Ok(report), Status::Success));
        }
    }
    // The index's own model keeps the width it was embedded with.
    let dims = s.embed.dims.or_else(|| {
        index
            .manifest
            .as_ref()
            .and_then(|m| m.active_store())
            .filter(|(_, st)| st.spec == spec)
            .map(|(_, st)| st.dims)
    });
    let embedder = load_embedder(s, &spec, dims)?;
    let mut manifest = index
        .manifest
        .clone()
        .context("the index has no manifest; run `shirabe ingest` first")?;
    let bar = s.progress.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.green} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} chunks embedded · {msg} · ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let started = std::time::Instant::now();
    let opts = EmbedOptions {
        dtype: s.embed.vector_dtype,
        spec: spec.clone(),
        limit,
        ..EmbedOptions::default()
    };
    let cancel = interrupt_flag();
    let report = shirabe::ingest::embed::embed_index(
        &index,
        &mut manifest,
        embedder.as_ref(),
        &opts,
        cancel,
        &|e| {
            let Some(bar) = &bar else { return };
            match e {
                EmbedEvent::Started { pending, .. } => bar.set_length(*pending as u64),
                EmbedEvent::Graph { done, total } => {
                    bar.set_length(*total as u64);
                    bar.set_position(*done as u64);
                    bar.set_message("building the HNSW graph".to_string());
                }
                EmbedEvent::Batch { done, tokens } => {
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    bar.set_position(*done as u64);
                    bar.set_message(format!(
                        "{:.1} chunks/s, {:.0} tokens/s",
                        *done as f64 / secs,
                        *tokens as f64 / secs
                    ));
                }
            }
        },
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let interrupted = cancel.load(std::sync::atomic::Ordering::Relaxed);
    Ok((
        Ok(report),
        if interrupted {
            Status::Interrupted
        } else {
            Status::Success
        },
    ))
}

fn print_embed_report(s: &Settings, r: &EmbedReport) -> Result<()> {
    if s.quiet {
        return Ok(());
    }
    let rate = if r.seconds > 0.0 && r.embedded > 0 {
        format!(
            " in {:.1}s ({:.1} chunks/s, {:.0} tokens/s)",
            r.seconds,
            r.embedded as f64 / r.seconds,
            r.tokens as f64 / r.seconds
        )
    } else {
        String::new()
    };
    println!(
        "embeddings ({}): {} embedded{rate}, {} reused from the cache; {}/{} chunks have vectors{}",
        r.model,
        r.embedded,
        r.cached,
        r.with_vectors,
        r.chunks,
        if r.stopped {
            " (stopped early: run `shirabe embed-index` to go on)"
        } else {
            ""
        }
    );
    Ok(())
}

pub fn embed_index(s: &Settings, a: &EmbedIndexArgs) -> Result<Status> {
    let (report, status) = run_embedding(s, a.limit, true, false)?;
    let report = report.map_err(anyhow::Error::msg)?;
    let synced = sync_qdrant(s)?;
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["qdrant"] = serde_json::to_value(&synced)?;
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print_embed_report(s, &report)?;
        if let Some(q) = &synced {
            print_sync_report(s, q);
        }
    }
    Ok(status)
}

/// The Qdrant collection of `index`: given by flag, environment or config,
/// else the one the manifest remembers. `None`: the index does not use Qdrant.
fn qdrant_config(s: &Settings, index: &ShirabeIndex) -> Option<QdrantConfig> {
    let known = index.manifest.as_ref().and_then(|m| m.qdrant.clone());
    let url = s
        .qdrant
        .qdrant
        .clone()
        .or(known.as_ref().map(|k| k.url.clone()))?;
    let collection = s
        .qdrant
        .qdrant_collection
        .clone()
        .or(known.map(|k| k.collection))
        .unwrap_or_else(|| QdrantConfig::default_collection(index));
    Some(QdrantConfig {
        url,
        api_key: s.qdrant.qdrant_api_key.clone(),
        collection,
    })
}

/// Mirrors the active vector store into Qdrant, if the index uses it.
fn sync_qdrant(s: &Settings) -> Result<Option<SyncReport>> {
    let index = ShirabeIndex::open(&s.index)?;
    let Some(cfg) = qdrant_config(s, &index) else {
        return Ok(None);
    };
    let _lock = index.lock()?;
    let index = ShirabeIndex::open(&s.index)?;
    let Some((key, state)) = index
        .manifest
        .as_ref()
        .and_then(|m| m.active_store())
        .map(|(k, v)| (k.to_string(), v.clone()))
    else {
        if !s.quiet {
            println!("note: no vectors yet, nothing to send to Qdrant");
        }
        return Ok(None);
    };
    let store = index.open_store(&key, &state)?;
    let q = QdrantIndex::connect(&cfg, state.dims)?;
    // Another store's (model's) vectors in the collection: write all again.
    let rewrite = index
        .manifest
        .as_ref()
        .and_then(|m| m.qdrant.as_ref())
        .is_some_and(|known| known.store != key && known.collection == cfg.collection);
    let bar = s.progress.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.green} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} points to Qdrant · ETA {eta}",
            )
            .expect("valid template"),
        );
        bar
    });
    let report = q.sync(&index, &store, rewrite, &|done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut manifest = index.manifest.clone().expect("has a store");
    manifest.qdrant = Some(shirabe::index::manifest::QdrantState {
        url: cfg.url.clone(),
        collection: cfg.collection.clone(),
        store: key,
    });
    manifest.save(&index.manifest_path())?;
    Ok(Some(report))
}

fn print_sync_report(s: &Settings, r: &SyncReport) {
    if !s.quiet {
        println!(
            "qdrant ({}): {} points written, {} removed, {} unchanged{}",
            r.collection,
            r.upserted,
            r.deleted,
            r.unchanged,
            if r.without_vectors > 0 {
                format!("; {} chunks have no vector yet", r.without_vectors)
            } else {
                String::new()
            }
        );
    }
}

pub fn migrate(s: &Settings, a: &MigrateArgs) -> Result<Status> {
    if a.to.first().map(String::as_str) == Some("embedded") {
        let index = ShirabeIndex::open(&s.index)?;
        let _lock = index.lock()?;
        let index = ShirabeIndex::open(&s.index)?;
        let mut manifest = index
            .manifest
            .clone()
            .context("the index has no manifest")?;
        let old = manifest.qdrant.take();
        manifest.save(&index.manifest_path())?;
        if !s.quiet {
            match old {
                Some(q) => println!(
                    "search uses the embedded store again; the Qdrant collection {} at {} is left as it is",
                    q.collection, q.url
                ),
                None => println!("the index already uses the embedded store"),
            }
        }
        return Ok(Status::Success);
    }
    let report = sync_qdrant(s)?
        .context("the index has no vectors to migrate (run `shirabe embed-index`)")?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_sync_report(s, &report);
    }
    Ok(Status::Success)
}

/// The retriever for `index`: the mode asked for (else `s.mode`, else the
/// best the index supports), with the embedder and vector index it needs;
/// why it searches with less goes to stderr as a note.
pub(super) fn retriever(
    s: &Settings,
    index: &ShirabeIndex,
    asked: Option<Mode>,
) -> Result<Retriever> {
    let cfg = RetrieverConfig {
        mode: asked.or(s.mode),
        embed_model: s.embed.model.clone(),
        embed_dtype: s.embed.dtype,
        dims: s.embed.dims,
        qdrant: qdrant_config(s, index),
    };
    Ok(Retriever::open(index, &cfg, &mut |note| {
        if !s.quiet {
            eprintln!("note: {note}");
        }
    })?)
}

pub fn search(s: &Settings, a: &SearchArgs) -> Result<Status> {
    let index = ShirabeIndex::open(&s.index)?;
    let asked = a.mode.as_deref().map(Mode::parse).transpose()?;
    let retriever = retriever(s, &index, asked)?;
    let mode = retriever.mode;
    let query = a.query.join(" ");
    let limit = a.limit.unwrap_or(s.limit);
    let req = SearchRequest {
        query,
        limit: if a.rerank {
            limit.max(a.rerank_depth)
        } else {
            limit
        },
        doc_glob: a.doc.clone(),
        mode,
        weights: (a.bm25_weight, a.dense_weight),
        rrf_k: a.rrf_k,
        neighbors: a.neighbors,
    };
    let mut hits = retriever.search(&index, req.clone())?;
    if a.rerank && !hits.is_empty() {
        let t = std::time::Instant::now();
        let reranker = shirabe::models::rerank::Reranker::load(
            &a.rerank_model,
            s.embed.dtype,
            &shirabe::models::default_device(),
        )
        .with_context(|| format!("loading the reranker {}", a.rerank_model))?;
        let loaded = t.elapsed().as_secs_f64();
        let depth = a.rerank_depth.min(hits.len());
        let rest = hits.split_off(depth);
        let texts: Vec<&str> = hits.iter().map(|h| h.text.as_str()).collect();
        let scores = reranker.score(&req.query, &texts)?;
        hits = retrieve::apply_rerank(hits, &scores);
        hits.extend(rest);
        hits.truncate(limit);
        if !s.quiet {
            eprintln!(
                "reranked {depth} passages with {} in {:.1}s (model load {loaded:.1}s)",
                a.rerank_model,
                t.elapsed().as_secs_f64() - loaded
            );
        }
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    let st = Style::new(s.color);
    for (i, h) in hits.iter().enumerate() {
        if a.json {
            let v = json!({
                "path": h.path,
                "title": h.title,
                "section": h.section,
                "page": h.page,
                "page_start": h.page_start,
                "page_end": h.page_end,
                "page_label": h.page_label,
                "chunk_id": h.chunk_id,
                "score": h.score,
                "text": h.text,
                "snippet": h.snippet,
                "highlights": h.highlights,
                "mode": mode.name(),
                "explain": if a.explain { Some(&h.explain) } else { None },
                "neighbors": h.neighbors,
            });
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
            continue;
        }
        let page = shirabe::prompt::page_range(h.page, h.page, h.page_label.as_deref());
        writeln!(
            out,
            "{}. {} {} {}",
            i + 1,
            st.path(&h.path),
            st.page(&page),
            st.dim(&format!("{} {:.3} · {}", mode.name(), h.score, h.chunk_id))
        )?;
        if let Some(sec) = &h.section {
            writeln!(out, "   {}", st.bold(sec))?;
        }
        writeln!(out, "   {}", st.highlight(&h.snippet, &h.highlights))?;
        if a.explain {
            let e = &h.explain;
            let part = |rank: Option<usize>, score: Option<f32>, what: &str| match (rank, score) {
                (Some(r), Some(v)) => format!("{what} #{r} ({v:.3})"),
                _ => format!("{what} –"),
            };
            let mut line = vec![
                part(e.bm25_rank, e.bm25_score, "bm25"),
                part(e.dense_rank, e.similarity, "dense"),
            ];
            if let Some(f) = e.fused {
                line.push(format!("fused {f:.4}"));
            }
            if let Some(r) = e.rerank {
                line.push(format!("rerank {r:.3}"));
            }
            writeln!(out, "   {}", st.dim(&line.join(" · ")))?;
        }
        for n in &h.neighbors {
            let text: String = n.text.split_whitespace().collect::<Vec<_>>().join(" ");
            let short: String = text.chars().take(160).collect();
            writeln!(
                out,
                "   {} {}{}",
                st.dim(&format!("[{:+}] p. {}", n.offset, n.page_start)),
                short,
                if short.len() < text.len() { "…" } else { "" }
            )?;
        }
        if i + 1 < hits.len() {
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(if hits.is_empty() {
        Status::Partial
    } else {
        Status::Success
    })
}

/// Parses "1-3,7" into a page filter.
fn page_filter(spec: &str) -> Result<Vec<(u32, u32)>> {
    spec.split(',')
        .map(|part| {
            let part = part.trim();
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: u32 = a
                .trim()
                .parse()
                .with_context(|| format!("--pages: bad page {a:?}"))?;
            let b: u32 = if b.trim().is_empty() {
                u32::MAX
            } else {
                b.trim()
                    .parse()
                    .with_context(|| format!("--pages: bad page {b:?}"))?
            };
            anyhow::ensure!(a >= 1 && a <= b, "--pages: bad range {part:?}");
            Ok((a, b))
        })
        .collect()
}

pub fn extract(s: &Settings, a: &ExtractArgs) -> Result<Status> {
    let ranges = a.pages.as_deref().map(page_filter).transpose()?;
    let path = a.file.clone();
    let want = move |p: u32| {
        ranges
            .as_ref()
            .is_none_or(|r| r.iter().any(|&(lo, hi)| lo <= p && p <= hi))
    };
    let want2 = want.clone();
    let boxes = a.boxes;
    let doc = with_big_stack(move || -> shirabe::Result<_> {
        let kind = ingest::FileKind::of(&path).ok_or(shirabe::Error::Unsupported)?;
        match kind {
            ingest::FileKind::Pdf => {
                let bytes = std::fs::read(&path).map_err(|e| shirabe::Error::io(&path, e))?;
                shirabe::ingest::pdf::extract_pages(&bytes, want2, boxes)
            }
            _ => ingest::load_file(&path),
        }
    })?
    .with_context(|| a.file.display().to_string())?;
    let mut doc = doc;
    if a.body {
        doc.strip_furniture();
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    if a.json {
        let pages: Vec<_> = doc
            .pages
            .iter()
            .filter(|p| want(p.page))
            .map(|p| {
                let mut v = json!({"page": p.page, "label": p.label, "text": p.text, "furniture": p.furniture});
                if a.boxes {
                    v["boxes"] = json!(p.boxes);
                }
                v
            })
            .collect();
        let v = json!({
            "path": a.file.display().to_string(),
            "title": doc.title,
            "author": doc.author,
            "created": doc.created,
            "modified": doc.modified,
            "pages": pages,
            "warnings": doc.warnings,
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    } else {
        for p in doc.pages.iter().filter(|p| want(p.page)) {
            out.write_all(p.text.as_bytes())?;
            if !p.text.is_empty() {
                out.write_all(b"\n")?;
            }
            out.write_all(b"\x0c")?;
        }
        if !s.quiet {
            for w in &doc.warnings {
                eprintln!("warning: {}: {w}", a.file.display());
            }
        }
    }
    out.flush()?;
    Ok(Status::Success)
}

fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

pub fn status(s: &Settings, a: &StatusArgs) -> Result<Status> {
    let index = ShirabeIndex::open(&s.index)?;
    let manifest = index.manifest.clone().unwrap_or_else(|| {
        shirabe::index::manifest::Manifest::new(
            String::new(),
            shirabe::ingest::tokens::TokenizerInfo {
                kind: "unknown".into(),
                source: String::new(),
            },
            Default::default(),
        )
    });
    let reader = index.reader()?;
    let chunks = reader.searcher().num_docs();
    let count = |st: FileStatus| manifest.files.values().filter(|f| f.status == st).count();
    let pages: u64 = manifest.files.values().map(|f| u64::from(f.pages)).sum();
    let bytes = dir_size(&s.index);
    let coverage = shirabe::ingest::embed::coverage(&index)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if a.json {
        let v = json!({
            "index": s.index.display().to_string(),
            "files": manifest.files.len(),
            "ok": count(FileStatus::Ok),
            "empty": count(FileStatus::Empty),
            "failed": count(FileStatus::Failed),
            "pages": pages,
            "chunks": chunks,
            "bytes": bytes,
            "schema_version": manifest.schema_version,
            "analyzer": manifest.analyzer,
            "tokenizer": manifest.tokenizer,
            "chunking": manifest.chunking,
            "generation": manifest.generation,
            "embeddings": coverage,
            "qdrant": manifest.qdrant,
            "file_list": if a.files { Some(&manifest.files) } else { None },
        });
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        let st = Style::new(s.color);
        writeln!(
            out,
            "index      {} ({:.1} MB)",
            s.index.display(),
            bytes as f64 / 1e6
        )?;
        writeln!(
            out,
            "files      {} ({} ok, {} empty, {} failed)",
            manifest.files.len(),
            count(FileStatus::Ok),
            count(FileStatus::Empty),
            count(FileStatus::Failed)
        )?;
        writeln!(out, "pages      {pages}")?;
        writeln!(out, "chunks     {chunks}")?;
        writeln!(out, "analyzer   {}", manifest.analyzer)?;
        writeln!(
            out,
            "tokenizer  {} ({})",
            manifest.tokenizer.kind, manifest.tokenizer.source
        )?;
        writeln!(
            out,
            "chunking   {} tokens, {} overlap",
            manifest.chunking.target_tokens, manifest.chunking.overlap_tokens
        )?;
        match &coverage {
            None => writeln!(
                out,
                "vectors    none (BM25 only; `shirabe embed-index` adds them)"
            )?,
            Some(c) => {
                let pct = 100.0 * c.with_vectors as f64 / c.chunks.max(1) as f64;
                write!(
                    out,
                    "vectors    {}/{} chunks ({pct:.0}%) · {} · {} rows, {:.1} MB",
                    c.with_vectors,
                    c.chunks,
                    c.model,
                    c.rows,
                    c.bytes as f64 / 1e6
                )?;
                if c.with_vectors < c.chunks {
                    match (c.tokens_per_second, c.eta_seconds) {
                        (Some(r), Some(eta)) => write!(
                            out,
                            " · {} tokens to go, ETA {} at {r:.0} tokens/s",
                            c.pending_tokens,
                            human_duration(eta)
                        )?,
                        _ => write!(out, " · {} tokens to go", c.pending_tokens)?,
                    }
                }
                writeln!(out)?;
            }
        }
        if let Some(q) = &manifest.qdrant {
            writeln!(out, "qdrant     collection {} at {}", q.collection, q.url)?;
        }
        if a.files {
            writeln!(out)?;
            for f in manifest.files.values() {
                let state = match f.status {
                    FileStatus::Ok => "ok".to_string(),
                    FileStatus::Empty => "empty".to_string(),
                    FileStatus::Failed => st.error("failed"),
                };
                write!(
                    out,
                    "{:6} {:>5} pages {:>5} chunks  {}",
                    state,
                    f.pages,
                    f.chunks,
                    st.path(&f.path)
                )?;
                if let Some(e) = &f.error {
                    write!(out, "  ({})", st.text(e))?;
                }
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(Status::Success)
}

fn human_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

pub fn sample_corpus(s: &Settings, dir: &Path) -> Result<Status> {
    let files = shirabe::samples::write_sample_corpus(dir)
        .with_context(|| format!("writing the sample corpus to {}", dir.display()))?;
    if !s.quiet {
        println!("wrote {} files to {}", files.len(), dir.display());
    }
    Ok(Status::Success)
}

fn dtype(name: &str, flag: &str) -> Result<candle_core::DType> {
    super::parse_dtype(name, flag)
}

pub fn embed(_s: &Settings, a: &EmbedArgs) -> Result<Status> {
    use std::io::BufRead;
    let dtype = dtype(&a.dtype, "--dtype")?;
    let texts: Vec<String> = if a.texts.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()?
    } else {
        a.texts.clone()
    };
    let embedder = shirabe::models::embed::load(
        &a.embed_model,
        dtype,
        &shirabe::models::default_device(),
        a.dims,
    )?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs, a.query, a.batch)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for v in vectors {
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(Status::Success)
}

pub fn generate(_s: &Settings, a: &GenerateArgs) -> Result<Status> {
    use shirabe::models::generate::{Generator, SamplingParams};
    let mut generator = Generator::load(
        &a.model,
        dtype(&a.dtype, "--dtype")?,
        &shirabe::models::default_device(),
    )?;
    if let Some(d) = &a.cache_dtype {
        generator.cache_dtype = super::parse_cache_dtype(d, "--cache-dtype")?;
    }
    let prompt = if a.raw {
        a.prompt.clone()
    } else {
        generator.chat_prompt(a.system.as_deref(), &a.prompt)
    };
    let ids = generator.encode(&prompt)?;
    let params = SamplingParams {
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        repeat_penalty: a.repeat_penalty,
        seed: a.seed,
        max_tokens: a.max_tokens,
        ..SamplingParams::default()
    };
    let cancel = interrupt_flag();
    let mut out = std::io::stdout().lock();
    let mut write_err: Option<std::io::Error> = None;
    let result = generator.generate(&ids, &params, cancel, |piece| {
        if a.json || write_err.is_some() {
            return;
        }
        if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
            // A closed pipe ends the generation early.
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            write_err = Some(e);
        }
    })?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    if a.json {
        serde_json::to_writer(&mut out, &result)?;
    }
    writeln!(out)?;
    out.flush()?;
    if result.stop == shirabe::models::generate::StopReason::Cancelled {
        eprintln!("interrupted after {} tokens", result.completion_tokens);
        return Ok(Status::Interrupted);
    }
    Ok(Status::Success)
}

/// A flag that Ctrl-C sets, so long work stops cleanly and keeps what it
/// has; a second Ctrl-C exits at once.
pub(super) fn interrupt_flag() -> &'static std::sync::atomic::AtomicBool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FLAG: AtomicBool = AtomicBool::new(false);
    // Fails only if a handler is already installed, which is then ours.
    let _ = ctrlc::set_handler(|| {
        if FLAG.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
    });
    &FLAG
}

pub fn models(s: &Settings, a: &ModelsArgs) -> Result<Status> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    match &a.action {
        ModelsAction::List { json } => {
            let models = shirabe::models::list_cached();
            if *json {
                serde_json::to_writer(&mut out, &models)?;
                writeln!(out)?;
            } else if models.is_empty() {
                writeln!(
                    out,
                    "no models in the Hugging Face cache (try `shirabe models pull {}`)",
                    shirabe::models::DEFAULT_EMBED_MODEL
                )?;
            } else {
                let st = Style::new(s.color);
                for m in &models {
                    writeln!(
                        out,
                        "{:40} {:>8.1} MB  {:8} {}{}",
                        st.path(&m.repo),
                        m.weight_bytes as f64 / 1e6,
                        m.model_type.as_deref().unwrap_or("?"),
                        m.path.display(),
                        if m.loadable {
                            ""
                        } else {
                            "  (not loadable by shirabe)"
                        }
                    )?;
                }
            }
        }
        ModelsAction::Pull { repo } => {
            let files = shirabe::models::pull(repo)?;
            writeln!(
                out,
                "{repo}: {} ({} weight files)",
                files.dir.display(),
                files.weights.len()
            )?;
        }
    }
    out.flush()?;
    Ok(Status::Success)
}
