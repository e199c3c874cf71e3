//! The extractive answer, used when there is no model: the passage
//! sentences that best answer the question, each cited.
//!
//! Sentences are scored by the question terms they hold, analysed as the
//! index analyses text (stems, CJK bigrams) and weighted by rarity among
//! the candidates, plus a share for their passage's retrieval rank and for
//! how much of the question the passage as a whole covers (the sentence
//! that states a figure rarely repeats every word of the question); with
//! an embedding model, the question's similarity to the sentence counts
//! too. A quote is one sentence of at most [`MAX_WORDS`] words (a longer
//! one is cut to the window around its matches) and never a run of table
//! or listing lines. The answer is refused only when retrieval itself is
//! weak: when no passage covers enough of the question.

use std::collections::{HashMap, HashSet};

use super::{parse_citations, sentence_ranges, term_set, EmbedFn};
use crate::prompt::Passage;

/// The longest quote, in words (CJK characters count as half a word).
pub const MAX_WORDS: usize = 60;

/// Below this share of the question's terms in the best passage (and,
/// with embeddings, no sentence standing out by similarity) retrieval is weak and the
/// answer is refused. Unweighted: a paraphrase's own words appear nowhere,
/// and by rarity they would weigh the most.
const WEAK_COVERAGE: f32 = 0.25;

/// Question–sentence similarity that may count as an answer by meaning...
const WEAK_SIMILARITY: f32 = 0.5;

/// ...when it is this far above the median candidate's.
const STANDOUT: f32 = 0.12;

struct Candidate {
    passage: usize,
    start: usize,
    text: String,
    terms: HashSet<String>,
}

/// The extractive answer to `question` from `passages`: at most `max`
/// sentences, two per passage, each followed by its citation, in passage
/// order. Empty when retrieval is too weak to answer. With `embed`, the
/// question's similarity to each candidate sentence is part of its score.
pub fn extractive_with(
    question: &str,
    passages: &[Passage],
    max: usize,
    embed: Option<EmbedFn<'_>>,
) -> crate::Result<String> {
    let q = term_set(question);
    if q.is_empty() || passages.is_empty() {
        return Ok(String::new());
    }
    let mut cands: Vec<Candidate> = Vec::new();
    for (pi, p) in passages.iter().enumerate() {
        for (s, e) in quotable(&p.text) {
            let text = clean_quote(&p.text[s..e]);
            let terms = term_set(&text);
            if !terms.is_empty() {
                cands.push(Candidate {
                    passage: pi,
                    start: s,
                    text,
                    terms,
                });
            }
        }
    }
    if cands.is_empty() {
        return Ok(String::new());
    }
    // Rarity of each question term among the candidate sentences.
    let total = cands.len() as f32;
    let mut df: HashMap<&str, usize> = HashMap::new();
    for c in &cands {
        for w in &q {
            if c.terms.contains(w) {
                *df.entry(w.as_str()).or_default() += 1;
            }
        }
    }
    let weight = |w: &str| (1.0 + total / (1.0 + *df.get(w).unwrap_or(&0) as f32)).ln();
    let full: f32 = q.iter().map(|w| weight(w)).sum();
    let coverage = |terms: &HashSet<String>| -> f32 {
        q.iter()
            .filter(|w| terms.contains(*w))
            .map(|w| weight(w))
            .sum::<f32>()
            / full
    };
    let passage_terms: Vec<HashSet<String>> = passages.iter().map(|p| term_set(&p.text)).collect();
    let passage_cover: Vec<f32> = passage_terms.iter().map(&coverage).collect();
    let best_share = passage_terms
        .iter()
        .map(|t| q.iter().filter(|w| t.contains(*w)).count() as f32 / q.len() as f32)
        .fold(0.0, f32::max);
    let similarity: Option<Vec<f32>> = match embed {
        Some(embed) => {
            let mut texts: Vec<&str> = vec![question];
            texts.extend(cands.iter().map(|c| c.text.as_str()));
            let v = embed(&texts)?;
            let qv = &v[0];
            Some(
                v[1..]
                    .iter()
                    .map(|s| s.iter().zip(qv).map(|(a, b)| a * b).sum())
                    .collect(),
            )
        }
        None => None,
    };
    // Embedders differ in how similar unrelated texts look (e5 puts most
    // pairs above 0.7): the best sentence must stand out from the median.
    let standout = similarity.as_ref().map_or(0.0, |s| {
        let mut v = s.clone();
        v.sort_by(f32::total_cmp);
        let best = v.last().copied().unwrap_or(0.0);
        if best >= WEAK_SIMILARITY {
            best - v[(v.len() - 1) / 2]
        } else {
            0.0
        }
    });
    if best_share < WEAK_COVERAGE && standout < STANDOUT {
        return Ok(String::new());
    }
    let mut scored: Vec<(f32, usize)> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let rank = passages[c.passage].rank.max(1) as f32;
            let mut score =
                coverage(&c.terms) + 0.35 * passage_cover[c.passage] + 0.25 / (1.0 + rank.ln());
            if let Some(sim) = &similarity {
                score += 1.5 * sim[i];
            }
            (score, i)
        })
        .filter(|&(_, i)| coverage(&cands[i].terms) > 0.0 || similarity.is_some())
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let Some(&(best, _)) = scored.first() else {
        return Ok(String::new());
    };
    let mut per_passage = vec![0usize; passages.len()];
    let mut seen: HashSet<&str> = HashSet::new();
    let mut chosen: Vec<&Candidate> = Vec::new();
    for (score, i) in scored {
        if chosen.len() >= max || score < 0.75 * best {
            break;
        }
        let c = &cands[i];
        if per_passage[c.passage] >= 2 || !seen.insert(c.text.as_str()) {
            continue;
        }
        per_passage[c.passage] += 1;
        chosen.push(c);
    }
    chosen.sort_by_key(|c| (c.passage, c.start));
    Ok(chosen
        .into_iter()
        .map(|c| format!("{} [{}]", shorten(&c.text, &q), passages[c.passage].n))
        .collect::<Vec<_>>()
        .join(" "))
}

/// [`extractive_with`] without an embedding model.
pub fn extractive(question: &str, passages: &[Passage], max: usize) -> String {
    extractive_with(question, passages, max, None).unwrap_or_default()
}

/// The sentences of `text` that may be quoted: a sentence made of several
/// short lines (a table, a listing, a directory tree, a menu) is split into
/// its lines, and lines of a listing (no sentence punctuation, few words,
/// runs of dots or spaces) are left out.
fn quotable(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (s, e) in sentence_ranges(text) {
        let sentence = &text[s..e];
        let lines: Vec<(usize, &str)> = sentence
            .split_inclusive('\n')
            .scan(s, |at, l| {
                let start = *at;
                *at += l.len();
                Some((start, l))
            })
            .filter(|(_, l)| !l.trim().is_empty())
            .collect();
        let short = lines.iter().filter(|(_, l)| words(l) < 8.0).count();
        if lines.len() >= 3 && short * 2 >= lines.len() {
            for (at, l) in lines {
                if !listing_line(l) {
                    let lead = l.len() - l.trim_start().len();
                    out.push((at + lead, at + l.trim_end().len()));
                }
            }
        } else if !listing_line(sentence) {
            out.push((s, e));
        }
    }
    out
}

/// A line of a table of contents, a listing or a table rather than prose.
fn listing_line(line: &str) -> bool {
    let t = line.trim();
    let n = words(t);
    if n < 3.0 {
        return true;
    }
    let leaders = t.contains("....") || t.contains(". . .") || t.contains("\t");
    let letters = t.chars().filter(|c| c.is_alphabetic()).count();
    let symbols = t
        .chars()
        .filter(|c| !c.is_alphanumeric() && !c.is_whitespace())
        .count();
    leaders || letters * 2 < symbols * 3
}

/// Words of `text`, a CJK character counting as half of one.
pub(crate) fn words(text: &str) -> f32 {
    let cjk = text.chars().filter(|c| is_cjk(*c)).count();
    let latin = text
        .split_whitespace()
        .filter(|w| w.chars().any(|c| c.is_alphanumeric() && !is_cjk(c)))
        .count();
    latin as f32 + cjk as f32 / 2.0
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

/// The quote as one line, without citation markers of its own (a `[2]` in
/// a document is the document's reference, not one of ours).
pub(crate) fn clean_quote(text: &str) -> String {
    let mut t = text.to_string();
    for c in parse_citations(text).iter().rev() {
        t.replace_range(c.span.0..c.span.1, "");
    }
    let mut out = String::with_capacity(t.len());
    let mut prev: Option<char> = None;
    for w in t.split_whitespace() {
        // No space between two CJK characters joined across a line break.
        if let (Some(p), Some(f)) = (prev, w.chars().next()) {
            if !(is_cjk(p) && is_cjk(f)) {
                out.push(' ');
            }
        }
        out.push_str(w);
        prev = w.chars().last();
    }
    // A marker removed before the final stop leaves " .".
    for p in [" .", " ,", " ;", " :"] {
        out = out.replace(p, &p[1..]);
    }
    out
}

/// `text` cut to at most [`MAX_WORDS`] words around the question terms it
/// holds, with an ellipsis where it was cut.
fn shorten(text: &str, q: &HashSet<String>) -> String {
    if words(text) <= MAX_WORDS as f32 {
        return text.to_string();
    }
    // Pieces: whitespace-separated words, or single CJK characters.
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        if c.is_whitespace() {
            continue;
        }
        match pieces.last_mut() {
            Some(last)
                if last.1 == i && !is_cjk(c) && !text[last.0..last.1].chars().any(is_cjk) =>
            {
                last.1 = end
            }
            _ => pieces.push((i, end)),
        }
    }
    let cost = |p: &(usize, usize)| {
        if text[p.0..p.1].chars().any(is_cjk) {
            0.5
        } else {
            1.0
        }
    };
    let hit: Vec<bool> = pieces
        .iter()
        .map(|p| !term_set(&text[p.0..p.1]).is_disjoint(q))
        .collect();
    // The window of MAX_WORDS with the most matching pieces.
    let (mut best, mut best_at) = (0usize, 0usize);
    for start in 0..pieces.len() {
        let (mut used, mut got, mut j) = (0.0, 0usize, start);
        while j < pieces.len() && used + cost(&pieces[j]) <= MAX_WORDS as f32 {
            used += cost(&pieces[j]);
            got += usize::from(hit[j]);
            j += 1;
        }
        if got > best {
            best = got;
            best_at = start;
        }
        if j == pieces.len() {
            break;
        }
    }
    let (mut used, mut end) = (0.0, best_at);
    while end < pieces.len() && used + cost(&pieces[end]) <= MAX_WORDS as f32 {
        used += cost(&pieces[end]);
        end += 1;
    }
    let from = pieces[best_at].0;
    let to = pieces[end - 1].1;
    format!(
        "{}{}{}",
        if best_at > 0 { "… " } else { "" },
        &text[from..to],
        if end < pieces.len() { " …" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fake_embed, passage};
    use super::*;

    #[test]
    fn answers_paraphrased_questions_from_the_best_passage() {
        let passages = vec![
            passage(
                1,
                "Minutes of the board. The board approved a budget of 4.2 million euros for the Osaka warehouse expansion. Construction starts in spring.",
            ),
            passage(2, "The Kobe office moved to a new building in May."),
        ];
        let a = extractive(
            "How much money was set aside to expand the Osaka warehouse?",
            &passages,
            3,
        );
        assert!(a.contains("4.2 million euros"), "{a}");
        assert!(a.contains("[1]"), "{a}");
        assert!(!a.contains("Kobe"), "{a}");
    }

    #[test]
    fn refuses_only_when_no_passage_covers_the_question() {
        let passages = vec![passage(
            1,
            "The Kobe office moved to a new building in May.",
        )];
        assert_eq!(
            extractive(
                "What is the capital of Mongolia and its population?",
                &passages,
                3
            ),
            ""
        );
        assert_eq!(extractive("zzz", &passages, 3), "");
    }

    #[test]
    fn never_quotes_listings_or_more_than_sixty_words() {
        let listing = "Contents\nintro.tex 12\nbudget.tex 14\nwarehouse/osaka.tex 15\nwarehouse/kobe.tex 16\nappendix.tex 20";
        let long = format!(
            "The warehouse budget {} was approved by the board after a long debate.",
            "and the committee discussed many other unrelated matters ".repeat(12)
        );
        let passages = vec![passage(1, listing), passage(2, &long)];
        let a = extractive("Was the warehouse budget approved?", &passages, 3);
        assert!(!a.contains("tex"), "{a}");
        let quote = a.trim_end_matches(" [2]");
        assert!(words(quote) <= MAX_WORDS as f32 + 2.0, "{a}");
        assert!(a.contains("…"), "{a}");
    }

    #[test]
    fn markers_inside_documents_are_not_quoted() {
        let passages = vec![
            passage(1, "The warehouse budget was approved [2] in October."),
            passage(2, "Unrelated text about the canteen menu."),
        ];
        let a = extractive("When was the warehouse budget approved?", &passages, 3);
        assert_eq!(a, "The warehouse budget was approved in October. [1]");
    }

    #[test]
    fn joined_cjk_lines_keep_no_space() {
        assert_eq!(clean_quote("予算案を承認し\nた。"), "予算案を承認した。");
        assert_eq!(clean_quote("budget\napproved"), "budget approved");
    }

    #[test]
    fn similarity_finds_answers_without_shared_words() {
        let passages = vec![passage(
            1,
            "Spending got the green light. The canteen closes at six.",
        )];
        let a =
            extractive_with("Was the budget approved?", &passages, 1, Some(&fake_embed)).unwrap();
        // (The canteen sentence is the median; the answer stands out.)
        assert_eq!(a, "Spending got the green light. [1]");
    }
}
