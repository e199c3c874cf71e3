//! `shirabe ingest`: files into the index, with a progress bar, then
//! their embeddings (in the foreground or a background process).

use std::io::{BufWriter, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use shirabe::ingest::{self, Event, IngestOptions};

use super::args::IngestArgs;
use super::embedding::{print_embed_report, run_embedding};
use super::migrate::{print_sync_report, sync_qdrant};
use super::style::Style;
use super::{Settings, Status};

pub fn run(s: &Settings, a: &IngestArgs) -> Result<Status> {
    // A watcher owns the index: give it the paths instead of failing.
    if let Some(owner) = shirabe::index::lock_owner(&s.index).filter(|o| o.starts_with("watch ")) {
        let request = shirabe::ingest::watch::hand_over(&s.index, &a.paths)?;
        if a.json {
            println!(
                "{}",
                serde_json::json!({"handed_over": true, "owner": owner, "paths": a.paths, "request": request})
            );
        } else if !s.quiet {
            println!(
                "a watcher ({owner}) owns {}: handed it {} path{}; it ingests them in its next batch",
                s.index.display(),
                a.paths.len(),
                if a.paths.len() == 1 { "" } else { "s" }
            );
        }
        return Ok(Status::Success);
    }
    let opts = IngestOptions {
        paths: a.paths.clone(),
        index_dir: s.index.clone(),
        prune: a.prune,
        tokenizer: s.tokenizer.clone(),
        chunking: s.chunking,
        jobs: s.jobs,
        commit_interval: Duration::from_secs(2),
        ocr: s.ocr.clone(),
        forget: Vec::new(),
        isolation: match a.in_process {
            true => ingest::isolate::Isolation::InProcess,
            false => s.isolation.clone(),
        },
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
    let ocr_pages = std::sync::atomic::AtomicU64::new(0);
    let message = |total: u64| {
        let rate = total as f64 / started.elapsed().as_secs_f64().max(1e-3);
        match ocr_pages.load(std::sync::atomic::Ordering::Relaxed) {
            0 => format!("{total} pages ({rate:.0} pages/s)"),
            n => format!("{total} pages ({rate:.0} pages/s), {n} by OCR"),
        }
    };
    let report = ingest::run(&opts, &|e| {
        let Some(bar) = &bar else { return };
        match e {
            Event::Started { files } => bar.set_length(*files as u64),
            Event::OcrPage { .. } => {
                ocr_pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                bar.set_message(message(pages.load(std::sync::atomic::Ordering::Relaxed)));
            }
            Event::FileDone { pages: p, .. } => {
                let total = pages.fetch_add(u64::from(*p), std::sync::atomic::Ordering::Relaxed)
                    + u64::from(*p);
                bar.set_message(message(total));
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
    print_failures(&mut out, &st, &report.failed)?;
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
            "{} files: {} indexed, {} unchanged, {} failed{}; {} pages{}, {} chunks in {:.1}s → {}",
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
            match (report.ocr_pages, report.ocr_pending) {
                (0, 0) => String::new(),
                (r, 0) => format!(" ({r} read by OCR)"),
                (0, p) => format!(" ({p} need OCR)"),
                (r, p) => format!(" ({r} read by OCR, {p} need OCR)"),
            },
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
    if a.no_embed || a.background {
        // The new chunks reach Qdrant now (BM25); vectors follow with
        // the embedding's own sync.
        if let Some(q) = sync_qdrant(s)? {
            print_sync_report(s, &q);
        }
    }
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
    cmd.arg("--embed-dtype").arg(s.embed.dtype.to_string());
    cmd.arg("--vector-dtype").arg(match s.embed.vector_dtype {
        shirabe::index::vectors::VectorDtype::F16 => "f16",
        shirabe::index::vectors::VectorDtype::F32 => "f32",
    });
    if let Some(q) = &s.qdrant.url {
        cmd.arg("--qdrant").arg(q);
    }
    // The key travels in the environment, not in argv (visible in ps).
    if let Some(k) = &s.qdrant.api_key {
        cmd.env("QDRANT_API_KEY", k);
    }
    if let Some(c) = &s.qdrant.collection {
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

/// One `failed: PATH: why` line per file that could not be read.
pub(super) fn print_failures(
    out: &mut impl Write,
    st: &Style,
    failed: &[shirabe::ingest::Failure],
) -> std::io::Result<()> {
    for f in failed {
        writeln!(
            out,
            "{} {}: {}",
            st.error("failed:"),
            st.path(&f.path),
            st.text(&f.error)
        )?;
    }
    Ok(())
}
