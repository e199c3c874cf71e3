//! Embedding from the command line: `embed` (texts to vectors),
//! `embed-index` (the chunks that have none), and the run `ingest` and the
//! TUI share.

use std::io::{BufWriter, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use shirabe::index::ShirabeIndex;

use shirabe::ingest::embed::{EmbedEvent, EmbedOptions, EmbedReport};
use shirabe::models::embed::TextEmbedder;

use super::args::{EmbedArgs, EmbedIndexArgs};
use super::generate::interrupt_flag;
use super::migrate::{print_sync_report, sync_qdrant};
use super::{Settings, Status};

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

/// For `watch`: embeds the chunks that have no vector, under the lock
/// the caller holds, keeping the model loaded in `loaded` between calls.
/// `Ok(None)` when the index has no embedding model to use.
pub(super) fn embed_pending(
    s: &Settings,
    loaded: &mut Option<Box<dyn TextEmbedder>>,
) -> Result<Option<EmbedReport>> {
    let index = ShirabeIndex::open(&s.index)?;
    let Ok(spec) = choose_embed_model(s, &index) else {
        return Ok(None);
    };
    let dims = s.embed.dims.or_else(|| {
        index
            .manifest
            .as_ref()
            .and_then(|m| m.active_store())
            .filter(|(_, st)| st.spec == spec)
            .map(|(_, st)| st.dims)
    });
    if loaded.is_none() {
        *loaded = Some(load_embedder(s, &spec, dims)?);
    }
    let embedder = loaded.as_deref().expect("loaded above");
    let mut manifest = index
        .manifest
        .clone()
        .context("the index has no manifest")?;
    let opts = EmbedOptions {
        dtype: s.embed.vector_dtype,
        spec,
        ..EmbedOptions::default()
    };
    let report = shirabe::ingest::embed::embed_index(
        &index,
        &mut manifest,
        embedder,
        &opts,
        interrupt_flag(),
        &|_| {},
    )?;
    Ok(Some(report))
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

pub(super) fn print_embed_report(s: &Settings, r: &EmbedReport) -> Result<()> {
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

pub fn embed(_s: &Settings, a: &EmbedArgs) -> Result<Status> {
    use std::io::BufRead;
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
        a.dtype,
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
