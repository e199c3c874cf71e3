//! `shirabe watch`: the index kept in step with its folders
//! ([`shirabe::ingest::watch`]), events printed as lines or JSON, new
//! chunks embedded after each batch with the model kept loaded.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use shirabe::index::manifest::Manifest;
use shirabe::index::ShirabeIndex;
use shirabe::ingest::watch::{watch, WatchEvent, WatchOptions};
use shirabe::ingest::IngestOptions;

use super::args::WatchArgs;
use super::embedding::embed_pending;
use super::generate::interrupt_flag;
use super::style::Style;
use super::{Settings, Status};

/// The folders `shirabe watch` watches when given none: the config's
/// `[watch] folders` and the folders ingested into the index (with
/// `ingest` or the TUI's `i`).
pub(super) fn watch_list(s: &Settings, manifest: Option<&Manifest>) -> Vec<PathBuf> {
    let mut list: Vec<PathBuf> = s.watch_folders.clone();
    for r in manifest.map_or(&[][..], |m| m.roots.as_slice()) {
        let r = PathBuf::from(r);
        if !list.contains(&r) {
            list.push(r);
        }
    }
    list
}

pub fn run(s: &Settings, a: &WatchArgs) -> Result<Status> {
    let index = ShirabeIndex::open_or_create(&s.index)?;
    let lock = match index.lock() {
        Ok(l) => l,
        Err(e) => {
            let owner = shirabe::index::lock_owner(&s.index);
            anyhow::bail!(
                "{e}{}",
                owner.map_or(String::new(), |o| format!(" (held by: {o})"))
            );
        }
    };
    let roots: Vec<PathBuf> = if !a.paths.is_empty() {
        a.paths.clone()
    } else {
        watch_list(s, index.manifest.as_ref())
    };
    anyhow::ensure!(
        !roots.is_empty(),
        "nothing to watch: give folders (`shirabe watch ~/minutes`), list them under [watch] folders in the config, or ingest a folder first"
    );
    let opts = WatchOptions {
        roots,
        ingest: IngestOptions {
            tokenizer: s.tokenizer.clone(),
            chunking: s.chunking,
            jobs: s.jobs,
            ocr: s.ocr.clone(),
            isolation: s.isolation.clone(),
            ..IngestOptions::new(Vec::new(), &s.index)
        },
        debounce: Duration::from_millis(a.debounce),
        settle: Duration::from_millis(a.settle),
        poll: a
            .poll
            .filter(|p| p.is_finite() && *p > 0.0)
            .map(Duration::from_secs_f64),
        once: a.once,
    };
    let st = Style::new(s.color);
    let mut embedder = None;
    let mut embed_note_said = false;
    let mut failed_files = 0usize;
    let mut on_event = |ev: &WatchEvent| {
        let mut out = std::io::stdout().lock();
        if a.json {
            let _ = serde_json::to_writer(&mut out, ev);
            let _ = writeln!(out);
        } else if !s.quiet || matches!(ev, WatchEvent::Error { .. }) {
            let _ = match ev {
                WatchEvent::Watching {
                    roots,
                    missing,
                    backend,
                } => writeln!(
                    out,
                    "watching {} folder{} ({backend}){}; Ctrl-C stops",
                    roots.len(),
                    if roots.len() == 1 { "" } else { "s" },
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; not there now: {}",
                            missing
                                .iter()
                                .map(|m| st.path(m))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
                WatchEvent::Batch {
                    indexed,
                    removed,
                    failed,
                    paths,
                    latency_ms,
                    ..
                } => {
                    let what = match paths.as_slice() {
                        [one] => st.path(one),
                        many => format!("{} paths", many.len()),
                    };
                    writeln!(
                        out,
                        "{what}: {indexed} indexed, {removed} removed{} ({:.1}s after the change)",
                        if *failed > 0 {
                            format!(", {failed} failed (`shirabe status --files` says why)")
                        } else {
                            String::new()
                        },
                        *latency_ms as f64 / 1000.0
                    )
                }
                WatchEvent::HandedOver { paths } => {
                    writeln!(out, "{} paths handed over by `ingest`", paths.len())
                }
                WatchEvent::RootGone { root } => writeln!(
                    out,
                    "{} is gone; its entries are kept until it comes back",
                    st.path(root)
                ),
                WatchEvent::RootBack { root } => {
                    writeln!(out, "{} is back; catching up", st.path(root))
                }
                WatchEvent::Added { root } => {
                    writeln!(out, "watching {} from now on", st.path(root))
                }
                WatchEvent::Pending { .. } => Ok(()),
                WatchEvent::Error { message } => writeln!(out, "error: {message} (retrying)"),
            };
        }
        drop(out);
        if let WatchEvent::Batch {
            indexed,
            failed,
            latency_ms,
            ..
        } = ev
        {
            failed_files += failed;
            if *indexed > 0 && !a.no_embed {
                let started = std::time::Instant::now();
                match embed_pending(s, &mut embedder) {
                    Ok(Some(r)) if r.embedded > 0 && a.json => {
                        let took = started.elapsed();
                        println!(
                            "{}",
                            serde_json::json!({
                                "event": "embedded",
                                "chunks": r.embedded,
                                "model": r.model,
                                "seconds": took.as_secs_f64(),
                                "latency_ms": *latency_ms + took.as_millis() as u64,
                            })
                        );
                    }
                    Ok(Some(r)) if r.embedded > 0 && !s.quiet => {
                        println!("  {} chunks embedded ({})", r.embedded, r.model);
                    }
                    Ok(None) if !embed_note_said && !a.json && !s.quiet => {
                        embed_note_said = true;
                        println!("  note: no embedding model; the index stays BM25-only");
                    }
                    Err(e) => {
                        let msg = format!("embedding: {}", shirabe::error::chain_text(e.as_ref()));
                        if a.json {
                            println!("{}", serde_json::json!({"event": "error", "message": msg}));
                        } else {
                            eprintln!("error: {msg}");
                        }
                    }
                    _ => {}
                }
            }
        }
    };
    watch(&opts, &lock, interrupt_flag(), &mut on_event).context("watching")?;
    if interrupt_flag().load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(Status::Success);
    }
    Ok(if failed_files > 0 {
        Status::Partial
    } else {
        Status::Success
    })
}
