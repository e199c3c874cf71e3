//! `shirabe chat`: questions and follow-ups in one session.
//!
//! Each line of input is a question (or `/save FILE.md`, `/quit`, `/help`).
//! A follow-up ("and the second phase?", "それはいつ？") is rewritten into a
//! standalone query by the model when there is one, else retrieved together
//! with the previous question, so its subject is found; the
//! conversation so far goes into the prompt, oldest turns dropped first so
//! that history takes at most a quarter of the window. Answers are checked
//! and cited as in `ask`; `/save` writes the conversation with its sources
//! as Markdown.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result};

use shirabe::answer::conversation::{cited_sources, to_markdown, Turn};
use shirabe::answer::{check_with, extractive};
use shirabe::index::ShirabeIndex;
use shirabe::prompt::{pack, Packed};

use super::args::ChatArgs;
use super::style::Style;
use super::{Settings, Status};

/// Words that make a short question lean on the one before it.
const FOLLOW_UP: &[&str] = &[
    "it", "its", "they", "them", "their", "that", "this", "those", "these", "he", "she", "there",
    "then", "and", "also", "それ", "その", "これ", "この", "あれ", "它", "这", "那", "他们",
];

/// The retrieval query for `question` after `previous`.
pub fn retrieval_query(question: &str, previous: Option<&str>) -> String {
    let Some(prev) = previous else {
        return question.to_string();
    };
    let lower = question.to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let leans = words.len() <= 6
        || words
            .iter()
            .any(|w| FOLLOW_UP.contains(&w.trim_matches(|c: char| !c.is_alphanumeric())))
        || FOLLOW_UP
            .iter()
            .any(|f| !f.is_ascii() && question.contains(f));
    if leans {
        format!("{prev} {question}")
    } else {
        question.to_string()
    }
}

pub fn run(s: &Settings, a: &ChatArgs) -> Result<Status> {
    let index = ShirabeIndex::open(&s.index)?;
    let (mode, dense_backend) = super::commands::search_backend(s, &index, None)?;
    let mut writer = super::ask::Writer::new(index.manifest.as_ref(), &a.b)?;
    writer.fit_to_wait(&a.b, !s.quiet)?;
    let cancel = super::commands::interrupt_flag();
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
        let history: Vec<(String, String)> = turns
            .iter()
            .map(|t| (t.question.clone(), t.answer.clone()))
            .collect();
        let retrieve = |q: &str| {
            super::commands::retrieve_passages(
                &index,
                mode,
                dense_backend.as_ref(),
                q,
                a.passages,
                None,
            )
        };
        let embed = dense_backend
            .as_ref()
            .map(|(e, _)| move |t: &[&str]| e.embed(t, false, 8));
        let Reply {
            packed, checked, ..
        } = reply(
            Lookup {
                retrieve: &retrieve,
                embed: embed.as_ref().map(|f| f as shirabe::answer::EmbedFn<'_>),
            },
            &writer,
            &a.b,
            &question,
            &history,
            cancel,
            &mut |_| {},
        )?;
        let answer = if checked.answer.trim().is_empty() {
            shirabe::answer::NO_ANSWER.to_string()
        } else {
            checked.answer.trim().to_string()
        };
        writeln!(out, "{answer}")?;
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

/// Where a reply looks things up: passages for a query, and (when the
/// index has an embedding model) vectors to check claims by meaning.
pub(super) struct Lookup<'a> {
    /// Passages for a query.
    pub retrieve: &'a dyn Fn(&str) -> Result<Vec<shirabe::retrieve::Hit>>,
    /// Embeds texts as unit vectors.
    pub embed: Option<shirabe::answer::EmbedFn<'a>>,
}

/// One answered question of a conversation.
pub(super) struct Reply {
    /// The passages, packed.
    pub packed: Packed,
    /// The answer, checked.
    pub checked: shirabe::answer::Checked,
    /// Written extractively (no model, or no passages).
    pub extractive: bool,
}

/// Answers `question` after the earlier `(question, answer)` turns: the
/// follow-up made standalone for retrieval (by the model when there is
/// one), passages retrieved and packed with the history (at most a quarter
/// of the window, newest kept), the answer written (streaming pieces to
/// `on_text`) and checked.
pub(super) fn reply(
    lookup: Lookup<'_>,
    writer: &super::ask::Writer,
    b: &super::args::BackendArgs,
    question: &str,
    turns: &[(String, String)],
    cancel: &std::sync::atomic::AtomicBool,
    on_text: &mut dyn FnMut(&str),
) -> Result<Reply> {
    let backend = writer.backend(cancel, b.temperature);
    let previous = turns.last().map(|t| t.0.as_str());
    let mut query = retrieval_query(question, previous);
    // With a model, a follow-up is rewritten into a standalone query (the
    // rule above stays the fallback).
    if let (Some(m), Some(prev)) = (&backend, previous) {
        if query != question {
            let prompt = format!(
                "Earlier question: {prev}\nFollow-up: {question}\n\nRewrite the follow-up as one standalone search query, in its language. Reply with the query only."
            );
            if let Ok(q) = m.complete("You rewrite follow-up questions for search.", &prompt, 48) {
                let q = q
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .trim_matches('"');
                if !q.is_empty() && q.len() < 300 {
                    query = format!("{q} {question}");
                }
            }
        }
    }
    let Lookup { retrieve, embed } = lookup;
    let hits = retrieve(&query)?;
    let mut history: Vec<(String, String)> = Vec::new();
    let mut used = 0;
    for (q, a) in turns.iter().rev() {
        let cost = writer.counter.count(q) + writer.counter.count(a) + 16;
        if used + cost > writer.window / 4 {
            break;
        }
        used += cost;
        history.insert(0, (q.clone(), a.clone()));
    }
    let budget = writer.window.saturating_sub(b.max_tokens);
    let packed = pack(&hits, question, &writer.counter, budget, &history);
    let (raw, extractive) = match (&writer.generator, &backend) {
        (Some(g), _) if !packed.passages.is_empty() => {
            // The history goes into the prompt for a local model.
            let ids =
                g.encode(&g.chat(Some(shirabe::prompt::SYSTEM_PROMPT), &history, &packed.user))?;
            let params = shirabe::models::generate::SamplingParams {
                max_tokens: b.max_tokens,
                temperature: b.temperature,
                ..Default::default()
            };
            let r = g.generate(&ids, &params, cancel, |t| on_text(t))?;
            writer.learn(&r);
            (r.text, false)
        }
        (None, Some(m)) if !packed.passages.is_empty() => {
            let earlier: String = history
                .iter()
                .map(|(q, a)| format!("Earlier question: {q}\nEarlier answer: {a}\n\n"))
                .collect();
            let user = format!("{earlier}{}", packed.user);
            (
                m.stream(shirabe::prompt::SYSTEM_PROMPT, &user, b.max_tokens, on_text)?,
                false,
            )
        }
        _ => (extractive(question, &packed.passages, 5), true),
    };
    let checked = check_with(&raw, &packed.passages, embed)?;
    Ok(Reply {
        packed,
        checked,
        extractive,
    })
}

fn save(path: &str, turns: &[Turn]) -> Result<()> {
    std::fs::write(path, to_markdown("shirabe chat", turns))
        .with_context(|| format!("writing {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_ups_lean_on_the_previous_question() {
        let prev = Some("What did the board decide about the Osaka warehouse?");
        assert_eq!(retrieval_query("When?", None), "When?");
        assert!(retrieval_query("And when does it start?", prev).starts_with("What did the board"));
        assert!(retrieval_query("それはいつ決まりましたか", prev).starts_with("What did"));
        let fresh = "How many data engineers were hired for the analytics team last quarter?";
        assert_eq!(retrieval_query(fresh, prev), fresh);
    }
}
