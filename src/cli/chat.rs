//! `shirabe chat`: questions and follow-ups in one session.
//!
//! Each line of input is a question (or `/save FILE.md`, `/quit`, `/help`),
//! answered by [`shirabe::answer::conversation::reply`] (follow-ups made
//! standalone, history in the prompt) and cited as in `ask`; `/save` writes
//! the conversation with its sources as Markdown. Every question searches
//! the index as last committed ([`shirabe::retrieve::Live`]).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result};

use shirabe::answer::conversation::{cited_sources, reply, to_markdown, Lookup, Turn};
use shirabe::answer::Answered;
use shirabe::index::ShirabeIndex;

use super::args::ChatArgs;
use super::style::Style;
use super::{Settings, Status};

pub fn run(s: &Settings, a: &ChatArgs) -> Result<Status> {
    let index = ShirabeIndex::open(&s.index)?;
    let mut answerer = super::ask::answerer(index.manifest.as_ref(), &a.backend)?;
    // Each question sees the index as last committed (a watcher may be
    // adding to it).
    let live = super::search::live(s, index)?;
    // Documents the whole conversation reads, pinned once.
    let pinned = if answerer.has_model() {
        let snap = live.snapshot();
        super::ask::pinned_chunks(&snap.retriever, Some(&snap.index), &a.doc)?
    } else {
        None
    };
    let glob = super::ask::doc_glob(&a.doc);
    super::ask::fit_window(&mut answerer, !s.quiet)?;
    let cancel = super::generate::interrupt_flag();
    let phases = super::phases::PhaseLine::new(s.quiet);
    let st = Style::new(s.color);
    let interactive = std::io::stdin().is_terminal();
    if interactive && !s.quiet {
        eprintln!("shirabe chat — ask about the indexed documents; /save FILE.md, /quit");
    }
    let mut turns: Vec<Turn> = Vec::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut out = std::io::stdout().lock();
        match line
            .split_once(' ')
            .map_or((line, ""), |(c, r)| (c, r.trim()))
        {
            ("/quit" | "/exit", _) => break,
            ("/help", _) => {
                writeln!(
                    out,
                    "Type a question. /save FILE.md writes the conversation; /quit ends."
                )?;
                continue;
            }
            ("/save", path) => {
                anyhow::ensure!(!path.is_empty(), "/save needs a file name");
                save(path, &turns)?;
                writeln!(out, "saved {} turns to {path}", turns.len())?;
                continue;
            }
            _ => {}
        }
        let question = line.to_string();
        let asked = std::time::Instant::now();
        let mut first_piece: Option<f64> = None;
        let history: Vec<(String, String)> = turns
            .iter()
            .map(|t| (t.question.clone(), t.answer.clone()))
            .collect();
        let snap = live.snapshot();
        let retrieve = |q: &str| {
            snap.retriever
                .retrieve(Some(&snap.index), q, a.passages, glob.clone())
        };
        let rarity = |q: &str| snap.retriever.term_rarity(Some(&snap.index), q);
        let embed = snap.retriever.check_embedder();
        let replied = reply(
            Lookup {
                retrieve: &retrieve,
                embed: embed.as_deref(),
                rarity: Some(&rarity),
                pinned: pinned.as_deref(),
            },
            &answerer,
            &question,
            &history,
            cancel,
            &|p| phases.show(p),
            &mut |_| {
                first_piece.get_or_insert_with(|| asked.elapsed().as_secs_f64());
            },
        );
        phases.done();
        let Answered {
            packed,
            checked,
            declined,
            replaced,
            cached_tokens,
            usage,
            ..
        } = replied?;
        if a.json {
            let v = serde_json::json!({
                "question": question,
                "answer": checked.answer,
                "citations": checked.citations,
                "unsupported": checked.unsupported,
                "refused": checked.refused,
                "declined": declined,
                "passages": packed.passages,
                "context": {"tokens": packed.tokens, "budget": packed.budget,
                            "pinned": packed.pinned, "cached_tokens": cached_tokens},
                "usage": usage,
                "timings": {"ttft_s": first_piece, "total_s": asked.elapsed().as_secs_f64()},
            });
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
            out.flush()?;
            turns.push(Turn {
                question,
                answer: checked.answer.clone(),
                sources: cited_sources(&packed.passages, &checked),
            });
            continue;
        }
        let answer = if checked.answer.trim().is_empty() {
            shirabe::answer::NO_ANSWER.to_string()
        } else {
            checked.answer.trim().to_string()
        };
        writeln!(out, "{answer}")?;
        if replaced.is_some() {
            writeln!(
                out,
                "{}",
                st.dim("(the passages' own sentences: no sentence of the model's answer was supported)")
            )?;
        }
        if let Some(why) = declined {
            writeln!(
                out,
                "{}",
                st.dim(&format!("({})", shirabe::sanitize::terminal(&why)))
            )?;
        }
        super::ask::print_checks(&mut out, &st, &checked)?;
        super::ask::print_sources(&mut out, &st, &packed.passages, &checked)?;
        writeln!(out)?;
        out.flush()?;
        turns.push(Turn {
            question,
            answer,
            sources: cited_sources(&packed.passages, &checked),
        });
        cancel.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(Status::Success)
}

fn save(path: &str, turns: &[Turn]) -> Result<()> {
    std::fs::write(path, to_markdown("shirabe chat", turns))
        .with_context(|| format!("writing {path}"))
}
