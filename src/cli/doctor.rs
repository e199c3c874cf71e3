//! `shirabe doctor`: checks every part of the index and, with `--repair`,
//! rebuilds the damaged ones (the policy is [`shirabe::index::doctor`]).

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use shirabe::index::doctor::{self, Diagnosis};
use shirabe::ingest::{Event, IngestOptions};

use super::args::DoctorArgs;
use super::style::Style;
use super::{Settings, Status};

pub fn run(s: &Settings, a: &DoctorArgs) -> Result<Status> {
    let d = doctor::diagnose(&s.index)?;
    let st = Style::new(s.color);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !a.repair || d.findings.is_empty() {
        if a.json {
            serde_json::to_writer(&mut out, &json!({ "diagnosis": d }))?;
            writeln!(out)?;
        } else {
            print_diagnosis(&mut out, &st, s, &d)?;
            if !d.findings.is_empty() {
                writeln!(out, "run `shirabe doctor --repair` to rebuild them")?;
            }
        }
        out.flush()?;
        return Ok(if d.findings.is_empty() {
            Status::Success
        } else {
            Status::Partial
        });
    }
    if !a.json {
        print_diagnosis(&mut out, &st, s, &d)?;
        out.flush()?;
    }
    let opts = IngestOptions {
        tokenizer: s.tokenizer.clone(),
        chunking: s.chunking,
        jobs: s.jobs,
        isolation: s.isolation.clone(),
        ..IngestOptions::new(Vec::new(), &s.index)
    };
    let bar = (s.progress && !a.json).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.green} rebuilding [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} files · ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let done = doctor::repair(&s.index, &d, &opts, &|e| {
        let Some(bar) = &bar else { return };
        match e {
            Event::Started { files } => bar.set_length(*files as u64),
            Event::FileDone { .. } => bar.inc(1),
            Event::OcrPage { .. } => {}
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let after = doctor::diagnose(&s.index)?;
    if a.json {
        serde_json::to_writer(
            &mut out,
            &json!({ "diagnosis": d, "repair": done, "after": after }),
        )?;
        writeln!(out)?;
        out.flush()?;
        return Ok(if after.findings.is_empty() {
            Status::Success
        } else {
            Status::Partial
        });
    }
    for name in &done.dropped_stores {
        writeln!(out, "dropped the vector store {name}")?;
    }
    if done.manifest_rebuilt {
        writeln!(out, "rebuilt the manifest")?;
    }
    if let Some(r) = &done.reingest {
        writeln!(
            out,
            "rebuilt the BM25 index: {} files read again, {} chunks",
            r.indexed, r.chunks
        )?;
        super::ingest::print_failures(&mut out, &st, &r.failed)?;
    }
    if after.findings.is_empty() {
        writeln!(out, "the index is sound")?;
        if !done.dropped_stores.is_empty() {
            writeln!(out, "run `shirabe embed-index` to embed the chunks again")?;
        }
    } else {
        print_diagnosis(&mut out, &st, s, &after)?;
    }
    out.flush()?;
    Ok(if after.findings.is_empty() {
        Status::Success
    } else {
        Status::Partial
    })
}

fn print_diagnosis(out: &mut impl Write, st: &Style, s: &Settings, d: &Diagnosis) -> Result<()> {
    writeln!(
        out,
        "{}: {} files, {} chunks in the manifest, {} in the BM25 index, {} vector store(s)",
        st.path(&s.index.display().to_string()),
        d.files,
        d.manifest_chunks,
        d.index_chunks
            .map_or_else(|| "none readable".to_string(), |n| n.to_string()),
        d.vector_stores
    )?;
    if d.findings.is_empty() {
        writeln!(out, "no damage found")?;
    }
    for f in &d.findings {
        writeln!(
            out,
            "{} {} is damaged: {}\n  repair: {}",
            st.error("damaged:"),
            f.part,
            st.text(&f.problem),
            f.repair
        )?;
    }
    Ok(())
}
