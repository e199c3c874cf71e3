//! Answers: citations parsed and checked against the passages, the sources
//! list, and the extractive answer used when there is no model.
//!
//! [`parse_citations`] finds `[n]`, `[n, m]`, `[n-m]` (also with full-width
//! brackets `［n］` and `【n】`), outside code spans. [`check`] splits the
//! answer into sentences, maps each citation to its passage, drops and
//! reports numbers that name no passage, and scores each cited sentence by
//! lexical support: the share of its terms (analysed as the index analyses
//! text, so CJK sentences count by bigrams) found in the passages it cites.
//! Sentences below [`SUPPORT_THRESHOLD`] are flagged. Each citation also
//! gets the passage sentence that supports it best, for the sources list.

pub mod conversation;
pub mod openai;
pub mod summarize;

/// What writes text: a local Qwen, an OpenAI-compatible endpoint (the
/// seam `ask`'s and `summarize`'s model calls go through).
pub trait Backend {
    /// One chat turn: `system` instructions, `user` content; at most
    /// `max_tokens` tokens back.
    fn complete(&self, system: &str, user: &str, max_tokens: usize) -> crate::Result<String> {
        self.stream(system, user, max_tokens, &mut |_| {})
    }

    /// [`Backend::complete`], handing each piece of text to `on_text` as it
    /// is produced.
    fn stream(
        &self,
        system: &str,
        user: &str,
        max_tokens: usize,
        on_text: &mut dyn FnMut(&str),
    ) -> crate::Result<String>;
}

/// A local Qwen model as a [`Backend`].
pub struct LocalBackend<'a> {
    /// The model.
    pub generator: &'a crate::models::generate::Generator,
    /// Stops generation.
    pub cancel: &'a std::sync::atomic::AtomicBool,
    /// Sampling temperature.
    pub temperature: f32,
}

impl Backend for LocalBackend<'_> {
    fn stream(
        &self,
        system: &str,
        user: &str,
        max_tokens: usize,
        on_text: &mut dyn FnMut(&str),
    ) -> crate::Result<String> {
        let prompt = self.generator.chat_prompt(Some(system), user);
        let ids = self.generator.encode(&prompt)?;
        let params = crate::models::generate::SamplingParams {
            max_tokens,
            temperature: self.temperature,
            ..Default::default()
        };
        Ok(self
            .generator
            .generate(&ids, &params, self.cancel, |t| on_text(t))?
            .text)
    }
}

/// An OpenAI-compatible endpoint as a [`Backend`].
pub struct EndpointBackend<'a> {
    /// The endpoint.
    pub endpoint: &'a openai::Endpoint,
    /// Stops the stream.
    pub cancel: &'a std::sync::atomic::AtomicBool,
    /// Sampling temperature.
    pub temperature: f32,
}

impl Backend for EndpointBackend<'_> {
    fn stream(
        &self,
        system: &str,
        user: &str,
        max_tokens: usize,
        on_text: &mut dyn FnMut(&str),
    ) -> crate::Result<String> {
        self.endpoint
            .complete(
                system,
                user,
                max_tokens,
                self.temperature,
                self.cancel,
                |t| on_text(t),
            )
            .map(|c| c.text)
            .map_err(|e| crate::Error::Model(e.to_string()))
    }
}

use std::collections::HashSet;

use serde::Serialize;

use crate::index::analyzer::terms;
use crate::ingest::chunk::sentences;
use crate::prompt::Passage;

/// What an answer says when the passages hold none.
pub const NO_ANSWER: &str =
    "The indexed documents do not seem to contain an answer to this question.";

/// Below this share of supported terms a claim is flagged.
pub const SUPPORT_THRESHOLD: f32 = 0.35;

/// One `[…]` in the answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Citation {
    /// Byte range of the brackets in the answer.
    pub span: (usize, usize),
    /// The passage numbers it names.
    pub numbers: Vec<usize>,
}

/// Finds the citations of `answer` (not inside `code spans`).
pub fn parse_citations(answer: &str) -> Vec<Citation> {
    let mut out = Vec::new();
    let mut in_code = false;
    let chars: Vec<(usize, char)> = answer.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if c == '`' {
            in_code = !in_code;
            i += 1;
            continue;
        }
        let close = match c {
            '[' => ']',
            '［' => '］',
            '【' => '】',
            _ => {
                i += 1;
                continue;
            }
        };
        if in_code {
            i += 1;
            continue;
        }
        let Some(j) = (i + 1..chars.len().min(i + 40)).find(|&j| chars[j].1 == close) else {
            i += 1;
            continue;
        };
        let inner: String = chars[i + 1..j].iter().map(|x| x.1).collect();
        if let Some(numbers) = parse_numbers(&inner) {
            let end = chars[j].0 + close.len_utf8();
            out.push(Citation {
                span: (at, end),
                numbers,
            });
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

/// `1`, `1, 3`, `2-4`, `2–4`, `１` → numbers; `None` if it is not a list of
/// numbers (a link, a checkbox, prose in brackets).
fn parse_numbers(inner: &str) -> Option<Vec<usize>> {
    let norm: String = inner
        .chars()
        .map(|c| match c {
            '０'..='９' => char::from(b'0' + (c as u32 - '０' as u32) as u8),
            '，' | '、' | ';' => ',',
            '–' | '—' | '－' | '~' | '〜' => '-',
            _ => c,
        })
        .collect();
    let mut out = Vec::new();
    for part in norm.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return None;
        }
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            if a == 0 || b < a || b - a > 50 {
                return None;
            }
            out.extend(a..=b);
        } else {
            let n: usize = part.parse().ok()?;
            if n == 0 {
                return None;
            }
            out.push(n);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A checked citation of one sentence.
#[derive(Debug, Clone, Serialize)]
pub struct CheckedCitation {
    /// The passage number.
    pub n: usize,
    /// Byte range of the citing sentence in the answer.
    pub sentence: (usize, usize),
    /// Share of the sentence's terms found in this passage.
    pub support: f32,
    /// The passage sentence that supports it best (byte range in the
    /// passage text) and its text.
    pub quote: (usize, usize),
    /// The quoted text.
    pub quote_text: String,
    /// Cosine similarity of the claim and the quote, when an embedding
    /// model was at hand ([`add_similarity`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
}

/// A sentence whose citations do not support it.
#[derive(Debug, Clone, Serialize)]
pub struct Unsupported {
    /// Byte range in the answer.
    pub sentence: (usize, usize),
    /// Its best support among the passages it cites.
    pub support: f32,
}

/// The outcome of [`check`].
#[derive(Debug, Clone, Serialize, Default)]
pub struct Checked {
    /// Valid citations, per cited sentence and passage.
    pub citations: Vec<CheckedCitation>,
    /// Numbers that name no passage (dropped).
    pub invalid: Vec<usize>,
    /// Cited sentences the passages do not support.
    pub unsupported: Vec<Unsupported>,
    /// The answer with invalid citations removed.
    pub answer: String,
}

/// Words too common to show that a sentence answers a question (the
/// analyzer's stemmed forms).
pub(crate) const STOPWORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "am", "do", "doe", "did", "what",
    "which", "who", "whom", "when", "where", "why", "how", "of", "in", "on", "at", "to", "for",
    "from", "by", "with", "and", "or", "it", "it'", "this", "that", "these", "those", "there",
    "as", "if", "than", "then", "so", "not", "no", "can", "could", "should", "would", "will",
    "shall", "may", "might", "must", "has", "have", "had", "i", "you", "we", "they", "he", "she",
    "my", "our", "their", "its", "about", "into", "over", "after", "befor", "any", "some", "all",
    "more", "most", "much", "mani", "veri", "also", "onli", "tell", "me",
];

fn term_set(text: &str) -> HashSet<String> {
    terms(text)
        .into_iter()
        .map(|t| t.0)
        .filter(|t| !STOPWORDS.contains(&t.as_str()))
        .collect()
}

/// Sentence ranges of `text`: paragraphs (blank lines) first, so a heading
/// line is not glued to the sentence after it, then sentences; citations
/// that open a sentence belong to the one before ("… one. [1] Next …").
pub(crate) fn sentence_ranges(text: &str) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i <= text.len() {
        let at_break = i == text.len()
            || (bytes[i] == b'\n'
                && text[i + 1..]
                    .trim_start_matches([' ', '\t'])
                    .starts_with('\n'));
        if at_break {
            if start < i {
                out.extend(sentences(text, start, i));
            }
            start = (i + 1).min(text.len());
        }
        i += 1;
    }
    let cites = parse_citations(text);
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(out.len());
    for (mut s, e) in out {
        if let Some(prev) = merged.last_mut() {
            while let Some(c) = cites
                .iter()
                .find(|c| c.span.0 == s + (text[s..e].len() - text[s..e].trim_start().len()))
            {
                prev.1 = c.span.1;
                s = c.span.1;
                if s >= e {
                    break;
                }
            }
        }
        if s < e && !text[s..e].trim().is_empty() {
            let lead = text[s..e].len() - text[s..e].trim_start().len();
            merged.push((s + lead, e));
        }
    }
    merged
}

/// Checks the citations of `answer` against `passages`.
pub fn check(answer: &str, passages: &[Passage]) -> Checked {
    let cites = parse_citations(answer);
    let valid = |n: usize| n >= 1 && n <= passages.len();
    let mut invalid: Vec<usize> = cites
        .iter()
        .flat_map(|c| c.numbers.iter().copied())
        .filter(|&n| !valid(n))
        .collect();
    invalid.sort();
    invalid.dedup();
    // Rewrite the answer without invalid numbers.
    let mut cleaned = String::with_capacity(answer.len());
    let mut at = 0;
    for c in &cites {
        cleaned.push_str(&answer[at..c.span.0]);
        let keep: Vec<String> = c
            .numbers
            .iter()
            .filter(|&&n| valid(n))
            .map(|n| n.to_string())
            .collect();
        if !keep.is_empty() {
            cleaned.push_str(&format!("[{}]", keep.join(", ")));
        }
        at = c.span.1;
    }
    cleaned.push_str(&answer[at..]);
    // Score each sentence of the cleaned answer against what it cites.
    let passage_terms: Vec<HashSet<String>> = passages.iter().map(|p| term_set(&p.text)).collect();
    let mut out = Checked {
        invalid,
        ..Checked::default()
    };
    let cites = parse_citations(&cleaned);
    for (s, e) in sentence_ranges(&cleaned) {
        let mine: Vec<usize> = cites
            .iter()
            .filter(|c| c.span.0 >= s && c.span.1 <= e)
            .flat_map(|c| c.numbers.iter().copied())
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut claim = cleaned[s..e].to_string();
        for c in cites
            .iter()
            .rev()
            .filter(|c| c.span.0 >= s && c.span.1 <= e)
        {
            claim.replace_range(c.span.0 - s..c.span.1 - s, "");
        }
        let words = term_set(&claim);
        let mut best = 0f32;
        for n in mine.iter().copied().collect::<HashSet<_>>() {
            let pt = &passage_terms[n - 1];
            let support = if words.is_empty() {
                1.0
            } else {
                words.iter().filter(|w| pt.contains(*w)).count() as f32 / words.len() as f32
            };
            best = best.max(support);
            let (quote, quote_text) = best_sentence(&passages[n - 1].text, &words);
            out.citations.push(CheckedCitation {
                n,
                sentence: (s, e),
                support,
                quote,
                quote_text,
                similarity: None,
            });
        }
        if best < SUPPORT_THRESHOLD {
            out.unsupported.push(Unsupported {
                sentence: (s, e),
                support: best,
            });
        }
    }
    out.answer = cleaned;
    out
}

/// Embeds texts as unit vectors.
pub type EmbedFn<'a> = &'a dyn Fn(&[&str]) -> crate::Result<Vec<Vec<f32>>>;

/// Similarity at which a claim counts as supported by meaning even when
/// its words differ (a paraphrase, a translation).
pub const SIMILARITY_THRESHOLD: f32 = 0.6;

/// Adds the embedding similarity of each cited claim and its quote, and
/// clears the "unsupported" flag of claims their sources support by
/// meaning. `embed` embeds passages (unit vectors).
pub fn add_similarity(c: &mut Checked, embed: EmbedFn<'_>) -> crate::Result<()> {
    if c.citations.is_empty() {
        return Ok(());
    }
    let mut texts: Vec<&str> = Vec::with_capacity(2 * c.citations.len());
    for x in &c.citations {
        texts.push(&c.answer[x.sentence.0..x.sentence.1]);
        texts.push(&x.quote_text);
    }
    let v = embed(&texts)?;
    for (i, x) in c.citations.iter_mut().enumerate() {
        let (a, b) = (&v[2 * i], &v[2 * i + 1]);
        x.similarity = Some(a.iter().zip(b).map(|(p, q)| p * q).sum());
    }
    let citations = &c.citations;
    c.unsupported.retain(|u| {
        !citations.iter().any(|x| {
            x.sentence == u.sentence && x.similarity.is_some_and(|s| s >= SIMILARITY_THRESHOLD)
        })
    });
    Ok(())
}

/// The sentence of `text` sharing the most terms with `words`.
fn best_sentence(text: &str, words: &HashSet<String>) -> ((usize, usize), String) {
    let mut best = ((0, 0), 0usize);
    for (s, e) in sentence_ranges(text) {
        let n = term_set(&text[s..e]).intersection(words).count();
        if n > best.1 || best.0 == (0, 0) {
            best = ((s, e), n);
        }
    }
    let (s, e) = best.0;
    (
        best.0,
        text[s..e].split_whitespace().collect::<Vec<_>>().join(" "),
    )
}

/// The extractive answer: the sentences of the passages that best cover
/// the question's words (rarer words count more), at most `max` of them and
/// two per passage, each followed by its citation, in passage order. Empty
/// when no sentence covers enough of the question: the documents do not
/// seem to answer it.
pub fn extractive(question: &str, passages: &[Passage], max: usize) -> String {
    let q = term_set(question);
    if q.is_empty() {
        return String::new();
    }
    let mut cands: Vec<(usize, usize, usize, HashSet<String>)> = Vec::new();
    for (pi, p) in passages.iter().enumerate() {
        for (s, e) in sentence_ranges(&p.text) {
            let t = term_set(&p.text[s..e]);
            if t.iter().any(|w| q.contains(w)) {
                cands.push((pi, s, e, t));
            }
        }
    }
    // Inverse sentence frequency of each question word.
    let total = cands.len().max(1) as f32;
    let weight = |w: &String| {
        let df = cands.iter().filter(|c| c.3.contains(w)).count() as f32;
        (1.0 + total / (1.0 + df)).ln()
    };
    let weights: Vec<(String, f32)> = q.iter().map(|w| (w.clone(), weight(w))).collect();
    let full: f32 = weights.iter().map(|x| x.1).sum();
    let mut scored: Vec<(f32, usize, usize, usize)> = cands
        .iter()
        .map(|(pi, s, e, t)| {
            let got: f32 = weights
                .iter()
                .filter(|(w, _)| t.contains(w))
                .map(|x| x.1)
                .sum();
            (got / full - 0.001 * passages[*pi].rank as f32, *pi, *s, *e)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let Some(&(best, ..)) = scored.first() else {
        return String::new();
    };
    if best < 0.5 {
        return String::new();
    }
    let mut per_passage = vec![0usize; passages.len()];
    let mut seen: HashSet<String> = HashSet::new();
    let mut chosen = Vec::new();
    for (score, pi, s, e) in scored {
        if chosen.len() >= max || score < 0.6 * best {
            break;
        }
        let text: String = passages[pi].text[s..e]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if per_passage[pi] >= 2 || !seen.insert(text.clone()) {
            continue;
        }
        per_passage[pi] += 1;
        chosen.push((pi, s, text));
    }
    chosen.sort_by_key(|c| (c.0, c.1));
    chosen
        .into_iter()
        .map(|(pi, _, text)| format!("{text} [{}]", passages[pi].n))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(n: usize, text: &str) -> Passage {
        Passage {
            n,
            path: format!("d{n}.pdf"),
            title: format!("Doc {n}"),
            page_start: n as u32,
            page_end: n as u32,
            page_label: None,
            text: text.into(),
            chunk_ids: vec![format!("d{n}-0")],
            rank: n,
        }
    }

    #[test]
    fn parses_the_forms_and_skips_code_and_prose() {
        let a = "A [1]. B [2, 3]. C [4-6]. D［７］. E【2–3】. `x[9]` [see above] [0] [a](b) [1,]";
        let got: Vec<Vec<usize>> = parse_citations(a).into_iter().map(|c| c.numbers).collect();
        assert_eq!(
            got,
            [vec![1], vec![2, 3], vec![4, 5, 6], vec![7], vec![2, 3]]
        );
        let c = &parse_citations("x [12] y")[0];
        assert_eq!(c.span, (2, 6));
    }

    #[test]
    fn checks_support_and_drops_invalid_numbers() {
        let passages = vec![
            passage(
                1,
                "The board approved the budget of 1.8 million euros. It met in Osaka.",
            ),
            passage(2, "本日の会議では予算案を承認した。次回は来月に開催する。"),
        ];
        let answer = "The board approved a budget of 1.8 million euros [1]. The moon is made of cheese [1]. 会議で予算案を承認した[2]。Something else [7].";
        let c = check(answer, &passages);
        assert_eq!(c.invalid, [7]);
        assert!(!c.answer.contains("[7]"));
        assert!(c.answer.contains("Something else"));
        let first = c.citations.iter().find(|x| x.n == 1).unwrap();
        assert!(first.support > 0.6, "{first:?}");
        assert!(first.quote_text.starts_with("The board approved"));
        let ja = c.citations.iter().find(|x| x.n == 2).unwrap();
        assert!(ja.support > 0.5, "{ja:?}");
        assert_eq!(c.unsupported.len(), 1);
        let (s, e) = c.unsupported[0].sentence;
        assert!(c.answer[s..e].contains("cheese"));
    }

    #[test]
    fn similarity_clears_paraphrases_only() {
        let passages = vec![passage(1, "The board approved the budget.")];
        let mut c = check(
            "Spending got the green light [1]. Cheese is blue [1].",
            &passages,
        );
        assert_eq!(c.unsupported.len(), 2);
        // A fake embedder: the paraphrase and the quote point the same way.
        let embed = |texts: &[&str]| -> crate::Result<Vec<Vec<f32>>> {
            Ok(texts
                .iter()
                .map(|t| {
                    if t.contains("green light") || t.contains("approved") {
                        vec![1.0, 0.0]
                    } else {
                        vec![0.0, 1.0]
                    }
                })
                .collect())
        };
        add_similarity(&mut c, &embed).unwrap();
        assert_eq!(c.unsupported.len(), 1);
        let (s, e) = c.unsupported[0].sentence;
        assert!(c.answer[s..e].contains("Cheese"));
        assert!(c.citations[0].similarity.unwrap() > 0.99);
    }

    #[test]
    fn citations_opening_a_sentence_belong_to_the_one_before() {
        let passages = vec![
            passage(1, "Alpha beta gamma delta."),
            passage(2, "Epsilon zeta eta theta."),
        ];
        let c = check("Alpha beta gamma. [1] Epsilon zeta eta. [2]", &passages);
        assert!(c.unsupported.is_empty(), "{c:?}");
        let by_n: Vec<(usize, &str)> = c
            .citations
            .iter()
            .map(|x| (x.n, c.answer[x.sentence.0..x.sentence.1].trim()))
            .collect();
        assert_eq!(
            by_n,
            [(1, "Alpha beta gamma. [1]"), (2, "Epsilon zeta eta. [2]")]
        );
    }

    #[test]
    fn extractive_answers_cite_every_sentence() {
        let passages = vec![
            passage(
                1,
                "Filler text here. The Osaka warehouse budget was approved in October.",
            ),
            passage(2, "Unrelated words only. Nothing."),
        ];
        let a = extractive(
            "When was the Osaka warehouse budget approved?",
            &passages,
            3,
        );
        assert_eq!(a, "The Osaka warehouse budget was approved in October. [1]");
        let c = check(&a, &passages);
        assert!(c.invalid.is_empty() && c.unsupported.is_empty(), "{c:?}");
        assert_eq!(extractive("zzz", &passages, 3), "");
    }
}
