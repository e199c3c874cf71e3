//! `shirabe eval SET.jsonl --answers`: answer quality on a labelled set,
//! for one backend (extractive, a local model, an endpoint), with or
//! without retrieval (`--oracle`: only the answer pages as context).
//! The scoring lives in [`shirabe::answer::eval`]; this runs each question
//! through `ask`'s own path and prints the figures.

use std::io::{BufRead, Write};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use shirabe::answer::eval::{score, Case, Figures, Report, Scored};
use shirabe::answer::{AnswerHooks, Question};
use shirabe::index::ShirabeIndex;
use shirabe::retrieve;

use super::args::EvalArgs;
use super::ask::{answerer, fit_window};
use super::{Settings, Status};

fn read_cases(path: &std::path::Path) -> Result<Vec<Case>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not an answer case", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// The answers as written in an earlier run's `--json` output, by
/// question id.
fn read_replay(path: &std::path::Path) -> Result<std::collections::HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not the --json output of eval --answers",
            path.display()
        )
    })?;
    let answers = v["answers"]
        .as_array()
        .with_context(|| format!("{}: no \"answers\"", path.display()))?;
    Ok(answers
        .iter()
        .filter_map(|a| {
            Some((
                a["id"].as_str()?.to_string(),
                a["raw"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect())
}

/// The chunks of `case`'s answer pages (the oracle's context).
fn oracle_hits(index: &ShirabeIndex, case: &Case) -> Result<Vec<retrieve::Hit>> {
    let Some(doc) = &case.doc else {
        return Ok(Vec::new());
    };
    let keys = retrieve::matching_docs(index, &format!("*{doc}"))?;
    Ok(retrieve::document_chunks(index, &keys)?
        .into_iter()
        .filter(|h| {
            case.pages
                .iter()
                .any(|p| (h.page_start..=h.page_end).contains(p))
        })
        .collect())
}

pub fn run(s: &Settings, a: &EvalArgs) -> Result<Status> {
    let index = ShirabeIndex::open(&s.index)?;
    let mut cases = read_cases(&a.queries)?;
    if let Some(n) = a.limit {
        cases.truncate(n);
    }
    anyhow::ensure!(
        !cases.is_empty(),
        "{} has no questions",
        a.queries.display()
    );
    let mut retriever = super::search::retriever(s, Some(&index), None)?;
    retriever.fusion = a.fusion;
    let mode = retriever.mode;
    let mut answerer = answerer(index.manifest.as_ref(), &a.backend)?;
    fit_window(&mut answerer, !s.quiet && !a.json)?;
    let embed = retriever.check_embedder();
    let embed_ref = embed.as_deref();
    let cancel = super::generate::interrupt_flag();
    let name = match (&answerer.generator, &answerer.endpoint) {
        (Some(_), _) => a.backend.model.clone().unwrap_or_default(),
        (None, Some(ep)) => ep.model.clone(),
        _ => "extractive".to_string(),
    };
    let replay = a.replay.as_deref().map(read_replay).transpose()?;
    let mut scored: Vec<Scored> = Vec::new();
    let mut err = std::io::stderr().lock();
    for (i, case) in cases.iter().enumerate() {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let t0 = Instant::now();
        let hits = if a.oracle {
            oracle_hits(&index, case)?
        } else {
            retriever.retrieve(Some(&index), &case.question, a.passages, None)?
        };
        let retrieved = t0.elapsed().as_secs_f64();
        let rarity = retriever.term_rarity(Some(&index), &case.question)?;
        let replayed = replay
            .as_ref()
            .map(|m| m.get(&case.id).map(String::as_str).unwrap_or_default());
        let r = answerer.answer(
            &Question {
                text: &case.question,
                hits: &hits,
                embed: embed_ref,
                cancel,
                max_answer_tokens: None,
                rarity: Some(&rarity),
                written: replayed,
                history: &[],
                pinned: None,
            },
            &AnswerHooks::silent(),
            &mut |_| {},
        )?;
        let ttft = r.first_token_s.map(|t| t + retrieved);
        let mut one = score(
            case,
            &r.packed.passages,
            &r.checked,
            ttft,
            t0.elapsed().as_secs_f64(),
        );
        one.raw = r.raw;
        one.grounding = r.grounding;
        if a.verbose {
            writeln!(
                err,
                "{:>3}/{} {} {}{}{} {:.1}s  {}",
                i + 1,
                cases.len(),
                case.id,
                if one.correct {
                    "right "
                } else if one.refused {
                    "refused "
                } else {
                    "wrong "
                },
                if one.page_cited { "page-cited " } else { "" },
                if one.right_language {
                    ""
                } else {
                    "wrong-language "
                },
                one.total_s,
                one.answer
                    .chars()
                    .take(100)
                    .collect::<String>()
                    .replace('\n', " ")
            )?;
        } else if !s.quiet && !a.json {
            write!(err, "\r{}/{} questions", i + 1, cases.len())?;
        }
        scored.push(one);
    }
    if !s.quiet && !a.json && !a.verbose {
        writeln!(err)?;
    }
    let report = Report::of(&scored);
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(
            &mut out,
            &json!({"backend": name, "oracle": a.oracle, "mode": mode.name(), "report": report, "answers": scored}),
        )?;
        writeln!(out)?;
        return Ok(Status::Success);
    }
    writeln!(
        out,
        "{} answers by {name}{} ({} retrieval)",
        scored.len(),
        if a.oracle { ", oracle context" } else { "" },
        if a.oracle { "no" } else { mode.name() },
    )?;
    writeln!(
        out,
        "{:<16} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>7} {:>7} {:>6}",
        "group",
        "n",
        "correct",
        "page",
        "p@top10",
        "given",
        "c.prec",
        "no-src",
        "unsup",
        "lang",
        "refuse",
        "ttft",
        "time"
    )?;
    let row = |out: &mut dyn Write, name: &str, f: &Figures| -> std::io::Result<()> {
        writeln!(
            out,
            "{:<16} {:>5} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7} {:>6.2} {:>6.3} {:>7} {:>7} {:>5.1}s",
            name,
            f.answerable + f.unanswerable,
            f.correct,
            f.page_cited,
            f.page_cited_top10,
            f.page_given,
            f.citation_precision,
            f.without_sources,
            f.unsupported_per_answer,
            f.right_language,
            if f.unanswerable > 0 {
                format!("{:.3}", f.refused_unanswerable)
            } else {
                "-".into()
            },
            f.first_token_s.map_or("-".into(), |t| format!("{t:.1}s")),
            f.total_s
        )
    };
    row(&mut out, "all", &report.all)?;
    for (k, f) in &report.groups {
        row(&mut out, k, f)?;
    }
    if !s.quiet {
        writeln!(
            out,
            "{}",
            super::style::Style::new(s.color).dim(
                "correct: every fact (answerable); page: answer page cited; p@top10: cited when \
                 retrieval ranked it in the top 10; given: among the passages; c.prec: citations \
                 whose quote supports the claim; no-src: answers without sources; unsup: \
                 unsupported sentences per answer; lang: in the question's language; refuse: \
                 unanswerable refused; ttft: median time to first token"
            )
        )?;
    }
    Ok(Status::Success)
}
