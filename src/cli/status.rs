//! `shirabe status`: what the index holds, what failed, vectors and ETA,
//! and the watcher keeping it current.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use shirabe::index::manifest::FileStatus;
use shirabe::index::ShirabeIndex;
use shirabe::ingest::watch::WatchState;

use super::args::StatusArgs;
use super::style::Style;
use super::{Settings, Status};

fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

pub fn run(s: &Settings, a: &StatusArgs) -> Result<Status> {
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
    let ocr_pages: u64 = manifest
        .files
        .values()
        .map(|f| u64::from(f.ocr_pages))
        .sum();
    let ocr_pending: u64 = manifest
        .files
        .values()
        .map(|f| u64::from(f.ocr_pending))
        .sum();
    let bytes = dir_size(&s.index);
    let coverage = shirabe::ingest::embed::coverage(&index)?;
    let watcher = shirabe::ingest::watch::state(&s.index);
    let watch_list: Vec<String> = match &watcher {
        Some(w) => w.roots.clone(),
        None => super::watch::watch_list(s, index.manifest.as_ref())
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    if a.json {
        let v = json!({
            "index": s.index.display().to_string(),
            "files": manifest.files.len(),
            "ok": count(FileStatus::Ok),
            "empty": count(FileStatus::Empty),
            "failed": count(FileStatus::Failed),
            "pages": pages,
            "ocr_pages": ocr_pages,
            "ocr_pending": ocr_pending,
            "chunks": chunks,
            "bytes": bytes,
            "schema_version": manifest.schema_version,
            "analyzer": manifest.analyzer,
            "tokenizer": manifest.tokenizer,
            "chunking": manifest.chunking,
            "generation": manifest.generation,
            "embeddings": coverage,
            "qdrant": manifest.qdrant,
            "watch": {
                "running": watcher.is_some(),
                "folders": watch_list,
                "state": watcher,
            },
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
        write!(out, "pages      {pages}")?;
        match (ocr_pages, ocr_pending) {
            (0, 0) => writeln!(out)?,
            (r, 0) => writeln!(out, " ({r} read by OCR)")?,
            (r, p) => writeln!(
                out,
                " ({r} read by OCR, {p} need OCR: `shirabe ingest --ocr auto` with Tesseract installed)"
            )?,
        }
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
        print_watch(&mut out, &st, watcher.as_ref(), &watch_list)?;
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
                if f.ocr_pages > 0 {
                    write!(out, "  ({} pages by OCR)", f.ocr_pages)?;
                }
                if f.ocr_pending > 0 {
                    write!(out, "  ({} pages need OCR)", f.ocr_pending)?;
                }
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    Ok(Status::Success)
}

/// The `watch` lines: the running watcher's state, or what `shirabe
/// watch` would watch.
fn print_watch(
    out: &mut impl Write,
    st: &Style,
    watcher: Option<&WatchState>,
    folders: &[String],
) -> std::io::Result<()> {
    match watcher {
        Some(w) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            write!(
                out,
                "watch      running (pid {}, {}), {} folder{}, {} pending",
                w.pid,
                w.backend,
                w.roots.len(),
                if w.roots.len() == 1 { "" } else { "s" },
                w.pending
            )?;
            match w.last_change {
                Some(t) => writeln!(
                    out,
                    ", last change {} ago",
                    human_duration(now.saturating_sub(t) as f64)
                )?,
                None => writeln!(out, ", no change yet")?,
            }
            if let Some(e) = &w.error {
                writeln!(out, "           {}", st.error(&format!("retrying: {e}")))?;
            }
        }
        None if folders.is_empty() => return Ok(()),
        None => writeln!(out, "watch      not running (`shirabe watch` watches:)")?,
    }
    for f in folders {
        let gone = watcher.is_some_and(|w| w.missing.contains(f));
        writeln!(
            out,
            "           {}{}",
            st.path(f),
            if gone { " (not there now)" } else { "" }
        )?;
    }
    Ok(())
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
