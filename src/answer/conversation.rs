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

use super::{AnswerHooks, Answered, Answerer, Checked, Phase, Question};
use crate::prompt::Passage;
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
    /// Whole documents every reply reads ([`Question::pinned`]).
    pub pinned: Option<&'a [crate::retrieve::Hit]>,
}

/// The search query for `question` after the earlier turns: a follow-up
/// made standalone, by the model when there is one ([`retrieval_query`]
/// is the fallback).
pub fn search_query(
    answerer: &Answerer,
    question: &str,
    turns: &[(String, String)],
    cancel: &AtomicBool,
) -> String {
    let previous = turns.last().map(|t| t.0.as_str());
    let query = retrieval_query(question, previous);
    let (Some(m), Some(prev)) = (answerer.backend(cancel), previous) else {
        return query;
    };
    if query == question {
        return query;
    }
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
            return format!("{q} {question}");
        }
    }
    query
}

/// The earlier turns that go into the prompt: the newest, taking at most
/// a quarter of the window.
pub fn history(answerer: &Answerer, turns: &[(String, String)]) -> Vec<(String, String)> {
    let mut history: Vec<(String, String)> = Vec::new();
    let mut used = 0;
    for (q, a) in turns.iter().rev() {
        let cost = answerer.counter.count(q) + answerer.counter.count(a) + 16;
        if used + cost > answerer.window / 4 {
            break;
        }
        used += cost;
        history.insert(0, (q.clone(), a.clone()));
    }
    history
}

/// Answers `question` after the earlier `(question, answer)` turns: the
/// passages are retrieved for its [`search_query`], then it is answered as
/// `ask` answers ([`Answerer::answer`]) with the [`history`] in the
/// prompt, streaming pieces to `on_text`.
pub fn reply(
    lookup: Lookup<'_>,
    answerer: &Answerer,
    question: &str,
    turns: &[(String, String)],
    cancel: &AtomicBool,
    on_phase: &dyn Fn(&Phase),
    on_text: &mut dyn FnMut(&str),
) -> Result<Answered> {
    let query = search_query(answerer, question, turns, cancel);
    on_phase(&Phase::Retrieving);
    let hits = (lookup.retrieve)(&query)?;
    let history = history(answerer, turns);
    // The query's words, not the bare follow-up's, decide whether the
    // passages cover the question.
    let rarity = lookup.rarity.map(|f| f(&query)).transpose()?;
    answerer.answer(
        &Question {
            text: question,
            hits: &hits,
            embed: lookup.embed,
            cancel,
            max_answer_tokens: None,
            rarity: rarity.as_ref(),
            written: None,
            history: &history,
            pinned: lookup.pinned,
        },
        &AnswerHooks {
            on_packed: &|_| {},
            on_note: &|_| {},
            on_phase,
        },
        on_text,
    )
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
