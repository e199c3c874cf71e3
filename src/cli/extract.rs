//! `shirabe extract`: a file's text page by page, as the index sees it;
//! and `sample-corpus`, which writes the generated corpus.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use shirabe::ingest::{self};

use super::args::ExtractArgs;
use super::search::page_filter;
use super::{Settings, Status};

/// Runs `f` on a thread with a large stack (deeply nested PDFs recurse).
fn with_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    std::thread::Builder::new()
        .stack_size(ingest::WORKER_STACK_BYTES)
        .spawn(f)?
        .join()
        .map_err(|_| anyhow::anyhow!("internal error while reading the file"))
}

pub fn run(s: &Settings, a: &ExtractArgs) -> Result<Status> {
    let ranges = a.pages.as_deref().map(page_filter).transpose()?;
    let path = a.file.clone();
    let want = move |p: u32| {
        ranges
            .as_ref()
            .is_none_or(|r| r.iter().any(|&(lo, hi)| lo <= p && p <= hi))
    };
    let want2 = want.clone();
    let boxes = a.boxes;
    let ocr = s.ocr.clone();
    let engine = std::sync::Arc::new(ingest::ocr::Lazy::new(ocr.program.clone()));
    let engine2 = engine.clone();
    let doc = with_big_stack(move || -> shirabe::Result<_> {
        let kind = ingest::FileKind::of(&path).ok_or(shirabe::Error::Unsupported)?;
        match kind {
            ingest::FileKind::Pdf => {
                let bytes = std::fs::read(&path).map_err(|e| shirabe::Error::io(&path, e))?;
                let mut doc = shirabe::ingest::pdf::extract_pages(&bytes, &want2, boxes)?;
                // Only the pages asked for are read.
                for p in &mut doc.pages {
                    if !want2(p.page) {
                        p.image_cover = 0.0;
                    }
                }
                let outcome = ingest::ocr::ocr_pdf(&bytes, &mut doc, &ocr, &engine2, boxes, &|| {});
                Ok((doc, outcome.pending))
            }
            _ => ingest::load_file(&path).map(|d| (d, 0)),
        }
    })?
    .with_context(|| a.file.display().to_string())?;
    let (mut doc, pending) = doc;
    if pending > 0 {
        let n = pending;
        let what = if n == 1 { "page has" } else { "pages have" };
        doc.warnings.push(
            if s.ocr.mode != ingest::ocr::OcrMode::Never && engine.get().is_none() {
                format!(
                    "{n} {what} no text layer and need OCR; {}",
                    ingest::ocr::INSTALL_HINT
                )
            } else if s.ocr.mode == ingest::ocr::OcrMode::Never {
                format!("{n} {what} no text layer; `--ocr auto` reads them")
            } else {
                format!("{n} {what} no text layer and could not be read by OCR")
            },
        );
    }
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
                if let Some(o) = &p.ocr {
                    v["ocr"] = json!(o);
                }
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

pub fn sample_corpus(s: &Settings, dir: &Path, scanned: bool) -> Result<Status> {
    let files = if scanned {
        shirabe::samples::scan::write_scans(dir)
    } else {
        shirabe::samples::write_sample_corpus(dir)
    }
    .with_context(|| format!("writing the sample corpus to {}", dir.display()))?;
    if !s.quiet {
        println!("wrote {} files to {}", files.len(), dir.display());
    }
    Ok(Status::Success)
}
