//! A conversation (`chat`, the TUI): each reply, its finished turns, the
//! sources each cited, and the Markdown it is saved as.
//!
//! A follow-up ("and the second phase?", "それはいつ？") is rewritten into a
//! standalone query by the model when there is one, else retrieved together
//! with the previous question, so its subject is found; the conversation so
//! far goes into the prompt, oldest turns dropped first so that history
//! takes at most a quarter of the window. Answers are checked and cited as
//! in `ask`.

use std::sync::atomic::AtomicBool;

use super::grounding::grounding;
use super::{check_answer, extractive, Answerer, Checked, Phase};
use crate::prompt::{pack, Packed, Passage};
use crate::retrieve::TermRarity;
use crate::Result;

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

/// One finished question and answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// The question.
    pub question: String,
    /// The answer, citations checked.
    pub answer: String,
    /// `[n] title — p. 3 (path)` for each cited passage.
    pub sources: Vec<String>,
}

/// `[n] title — p. 3 (path)` for each passage `checked` cites, in order.
pub fn cited_sources(passages: &[Passage], checked: &Checked) -> Vec<String> {
    let mut cited: Vec<usize> = checked.citations.iter().map(|c| c.n).collect();
    cited.sort_unstable();
    cited.dedup();
    cited
        .into_iter()
        .filter_map(|n| passages.get(n.checked_sub(1)?))
        .map(|p| format!("[{}] {} — {} ({})", p.n, p.title, p.pages(), p.path))
        .collect()
}

/// The turns as Markdown under the heading `title`: each question a
/// section, its answer, then its sources.
pub fn to_markdown(title: &str, turns: &[Turn]) -> String {
    let mut md = format!("# {title}\n");
    for t in turns {
        md.push_str(&format!("\n## {}\n\n{}\n", t.question, t.answer));
        if !t.sources.is_empty() {
            md.push_str("\nSources:\n\n");
            for s in &t.sources {
                md.push_str(&format!("- {s}\n"));
            }
        }
    }
    md
}

/// The rarity of a query's words in the index.
pub type RarityFn<'a> = &'a dyn Fn(&str) -> Result<TermRarity>;

/// Where a reply looks things up: passages for a query, and (when the
/// index has an embedding model) vectors to check claims by meaning.
pub struct Lookup<'a> {
    /// Passages for a query.
    pub retrieve: &'a dyn Fn(&str) -> Result<Vec<crate::retrieve::Hit>>,
    /// Embeds texts as unit vectors.
    pub embed: Option<super::EmbedFn<'a>>,
    /// How common a query's words are in the index (to decline a question
    /// no passage covers).
    pub rarity: Option<RarityFn<'a>>,
}

/// One answered question of a conversation.
pub struct Reply {
    /// The passages, packed.
    pub packed: Packed,
    /// The answer, checked.
    pub checked: super::Checked,
    /// Written extractively (no model, or no passages).
    pub extractive: bool,
    /// Why the question was declined unanswered, when it was.
    pub declined: Option<String>,
    /// The model's answer, when no sentence of it was supported and the
    /// passages' own sentences replaced it (`extractive` is then set).
    pub replaced: Option<String>,
}

/// Answers `question` after the earlier `(question, answer)` turns: the
/// follow-up made standalone for retrieval (by the model when there is
/// one), passages retrieved and packed with the history (at most a quarter
/// of the window, newest kept), the answer written (streaming pieces to
/// `on_text`) and checked.
pub fn reply(
    lookup: Lookup<'_>,
    writer: &Answerer,
    question: &str,
    turns: &[(String, String)],
    cancel: &AtomicBool,
    on_phase: &dyn Fn(&Phase),
    on_text: &mut dyn FnMut(&str),
) -> Result<Reply> {
    let backend = writer.backend(cancel);
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
    let Lookup {
        retrieve,
        embed,
        rarity,
    } = lookup;
    on_phase(&Phase::Retrieving);
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
    let budget = writer.window.saturating_sub(writer.config.max_tokens);
    let packed = pack(&hits, question, &writer.counter, budget, &history);
    on_phase(&Phase::Packed {
        passages: packed.passages.len(),
        tokens: packed.tokens,
    });
    let declined = match rarity {
        Some(f) if writer.config.decline => grounding(&f(&query)?, &packed.passages).decline(),
        _ => None,
    };
    let language = super::Lang::of(question);
    // One turn written by the model (streamed); `user` is the packed
    // question, maybe with the insistence on its language.
    let write = |user: &str, on_text: &mut dyn FnMut(&str)| -> Result<String> {
        if let Some(g) = &writer.generator {
            // The history goes into the prompt for a local model.
            let ids = g.encode(&g.chat(Some(writer.system_prompt()), &history, user))?;
            let params = crate::models::generate::SamplingParams {
                max_tokens: writer.config.max_tokens,
                temperature: writer.config.temperature,
                words_first: true,
                cite: writer
                    .config
                    .guided_citations
                    .then_some(crate::models::cite::CiteRule {
                        passages: packed.passages.len(),
                        exempt: super::is_refusal,
                        force: true,
                    }),
                ..Default::default()
            };
            let read = std::time::Instant::now();
            let on_prefill = |done, total| {
                on_phase(&Phase::Prefilling {
                    done,
                    total,
                    elapsed_s: read.elapsed().as_secs_f64(),
                    expected: None,
                })
            };
            let mut first = true;
            let r = g.generate_observed(
                &ids,
                &params,
                cancel,
                |t| {
                    if std::mem::take(&mut first) {
                        on_phase(&Phase::Writing);
                    }
                    on_text(t)
                },
                &on_prefill,
            )?;
            writer.learn(&r);
            return Ok(r.text);
        }
        let m = backend.as_ref().expect("a model or an endpoint");
        let earlier: String = history
            .iter()
            .map(|(q, a)| format!("Earlier question: {q}\nEarlier answer: {a}\n\n"))
            .collect();
        m.stream(
            writer.system_prompt(),
            &format!("{earlier}{user}"),
            writer.config.max_tokens,
            on_text,
        )
    };
    let (raw, extractive) = if declined.is_some() {
        (String::new(), false)
    } else if packed.passages.is_empty() || backend.is_none() {
        (extractive(question, &packed.passages, 5), true)
    } else {
        let first = write(&packed.user, on_text)?;
        // Once more, firmly, when the answer is not in the question's
        // language (as `ask` does).
        if language.written_in(&first) || cancel.load(std::sync::atomic::Ordering::Relaxed) {
            (first, false)
        } else {
            on_text("\n");
            let user = format!("{}\n{}", packed.user, language.insistence());
            (write(&user, on_text)?, false)
        }
    };
    on_phase(&Phase::Checking);
    let mut checked = check_answer(question, &raw, &packed.passages, embed)?;
    checked.refused |= declined.is_some();
    // As `Answerer::answer`: a written answer no passage supports is
    // replaced by the passages' own sentences.
    let mut replaced = None;
    let mut extractive = extractive;
    if !extractive
        && declined.is_none()
        && !cancel.load(std::sync::atomic::Ordering::Relaxed)
        && !checked.refused
        && !checked.citations.iter().any(|c| c.supported)
    {
        let own = super::extractive(question, &packed.passages, 5);
        if !own.is_empty() {
            replaced = Some(checked.answer.clone());
            checked = check_answer(question, &own, &packed.passages, embed)?;
            extractive = true;
        }
    }
    Ok(Reply {
        packed,
        checked,
        extractive,
        declined,
        replaced,
    })
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
