//! Whether the retrieved passages can answer the question at all.
//!
//! A model answers from whatever it is given, so an unanswerable question
//! must be recognised before it writes. The evidence is the question's own
//! words, weighted by their rarity in the whole index (inverse document
//! frequency): a question about `pgfgantt` in an archive that never says
//! it leaves its rarest, most specific words unmatched, while a paraphrase
//! of an answerable question still shares most of its rare words with the
//! passage that answers it.
//!
//! [`Grounding::coverage`] is the rarity-weighted share of the question's
//! terms found in the best single passage. The question is declined
//! ([`Grounding::decline`]) when that share is below [`WEAK_COVERAGE`], or
//! when the question names a word the index never contains (a Latin-script
//! word: a package, a command, a product; CJK text is indexed as character
//! pairs, and a pair spanning two words is missing from any archive) and
//! the best passage covers less than [`KNOWN_COVERAGE`] of it. Absence is
//! evidence only in an archive large enough that everyday words occur in
//! it: below [`LARGE_INDEX`] chunks the unknown-word rule is off and the
//! coverage bar is [`SMALL_WEAK_COVERAGE`].

use std::collections::HashSet;

use serde::Serialize;

use super::term_set;
use crate::prompt::Passage;
use crate::retrieve::{RareTerm, TermRarity};

/// Below this rarity-weighted coverage no passage is about the question.
pub const WEAK_COVERAGE: f32 = 0.3;

/// The coverage bar of a small index (where a paraphrase's everyday words
/// may be missing from the whole archive).
pub const SMALL_WEAK_COVERAGE: f32 = 0.15;

/// Chunks from which an index counts as large: a word it never contains
/// is then a specific one.
pub const LARGE_INDEX: u64 = 1000;

/// A question naming a word the index lacks is declined below this
/// coverage (above it, the rest of the question is matched well enough
/// that the word is likely the user's paraphrase).
pub const KNOWN_COVERAGE: f32 = 0.6;

/// How well the passages cover the question.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Grounding {
    /// Rarity-weighted share of the question's terms in the best passage.
    pub coverage: f32,
    /// Chunks in the index.
    pub chunks: u64,
    /// The question's words that appear nowhere in the index (Latin
    /// script; as the question wrote them).
    pub unknown_words: Vec<String>,
    /// The question's terms the best passage lacks, rarest first.
    pub missing: Vec<RareTerm>,
}

impl Grounding {
    /// Why the passages cannot answer the question, when they cannot.
    pub fn decline(&self) -> Option<String> {
        let large = self.chunks >= LARGE_INDEX;
        let bar = if large {
            WEAK_COVERAGE
        } else {
            SMALL_WEAK_COVERAGE
        };
        let unknown = large && !self.unknown_words.is_empty() && self.coverage < KNOWN_COVERAGE;
        if !unknown && self.coverage >= bar {
            return None;
        }
        if self.unknown_words.is_empty() {
            return Some(format!(
                "no passage is about the question (the best holds {:.0}% of its weight)",
                100.0 * self.coverage
            ));
        }
        let words: Vec<String> = self
            .unknown_words
            .iter()
            .map(|w| format!("\u{201c}{w}\u{201d}"))
            .collect();
        Some(format!(
            "the indexed documents never mention {}",
            words.join(", ")
        ))
    }
}

/// A term the analyser made from Latin-script text (not a CJK pair), not
/// a bare number, and longer than one letter (the `s` of "Mongolia's").
fn latin_word(term: &str) -> bool {
    term.len() > 1
        && term
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && term.chars().any(|c| c.is_ascii_alphabetic())
}

/// Chinese pairs that ask rather than name: question words and their
/// neighbours ("哪个地方", "是什么", "怎么", …).
const ZH_QUESTION_PAIRS: &[&str] = &[
    "哪个", "个地", "地方", "什么", "是什", "么是", "怎么", "么样", "怎样", "如何", "哪些", "哪里",
    "为什", "多少", "是否", "可以", "能否", "有没", "没有", "请问", "一下", "应该", "需要",
];

/// A question term that carries no content: a CJK pair holding hiragana
/// (in Japanese, particles and endings glue content words together:
/// "すか", "と何", "紙の"), or a Chinese question pair. Such pairs are rare
/// in any index, so as terms they would weigh most and match least.
pub(crate) fn glue(term: &str) -> bool {
    let hiragana = |c: char| ('\u{3041}'..='\u{309f}').contains(&c);
    let cjk = |c: char| {
        hiragana(c)
            || ('\u{30a0}'..='\u{30ff}').contains(&c)
            || ('\u{4e00}'..='\u{9fff}').contains(&c)
            || ('\u{3400}'..='\u{4dbf}').contains(&c)
    };
    term.chars().all(cjk) && (term.chars().any(hiragana) || ZH_QUESTION_PAIRS.contains(&term))
}

/// The grounding of a question whose terms have `rarity`, in `passages`.
pub fn grounding(rarity: &TermRarity, passages: &[Passage]) -> Grounding {
    // Japanese writes particles in hiragana between words, so a pair of
    // kanji or katakana the index never holds is likely a word it lacks.
    let japanese = rarity.terms.iter().any(|t| {
        t.term
            .chars()
            .any(|c| ('\u{3041}'..='\u{309f}').contains(&c))
    });
    let content: Vec<RareTerm> = rarity
        .terms
        .iter()
        .filter(|t| !glue(&t.term))
        .cloned()
        .collect();
    let rarity = &TermRarity {
        chunks: rarity.chunks,
        terms: content,
    };
    let weights: Vec<f32> = rarity.terms.iter().map(|t| rarity.idf(t.chunks)).collect();
    let total: f32 = weights.iter().sum();
    if total <= 0.0 {
        return Grounding::default();
    }
    let mut best: Option<(f32, HashSet<String>)> = None;
    for p in passages {
        let held: HashSet<String> = term_set(&p.text);
        let c = rarity
            .terms
            .iter()
            .zip(&weights)
            .filter(|(t, _)| held.contains(&t.term))
            .map(|(_, w)| w)
            .sum::<f32>()
            / total;
        if best.as_ref().is_none_or(|b| c > b.0) {
            best = Some((c, held));
        }
    }
    let (coverage, held) = best.unwrap_or_default();
    let mut missing: Vec<RareTerm> = rarity
        .terms
        .iter()
        .filter(|t| !held.contains(&t.term))
        .cloned()
        .collect();
    missing.sort_by_key(|m| m.chunks);
    let mut unknown_words: Vec<String> = rarity
        .terms
        .iter()
        .filter(|t| t.chunks == 0 && latin_word(&t.term))
        .map(|t| t.word.clone())
        .collect();
    // Two such pairs, not one: a pair can also straddle two words.
    let unknown_pairs: Vec<String> = rarity
        .terms
        .iter()
        .filter(|t| japanese && t.chunks == 0 && !latin_word(&t.term))
        .map(|t| t.word.clone())
        .collect();
    if unknown_pairs.len() >= 2 {
        unknown_words.extend(unknown_pairs);
    }
    Grounding {
        coverage,
        chunks: rarity.chunks,
        unknown_words,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::tests::passage;

    fn rarity(terms: &[(&str, u64)]) -> TermRarity {
        TermRarity {
            chunks: 1000,
            terms: terms
                .iter()
                .map(|(t, n)| RareTerm {
                    term: t.to_string(),
                    word: t.to_string(),
                    chunks: *n,
                })
                .collect(),
        }
    }

    #[test]
    fn a_word_the_index_lacks_declines_unless_the_rest_is_well_matched() {
        let ps = [passage(1, "Draw a chart in LaTeX with a package.")];
        // "How do I make a Gantt chart with pgfgantt?"
        let g = grounding(
            &rarity(&[("gantt", 0), ("pgfgantt", 0), ("chart", 40), ("latex", 900)]),
            &ps,
        );
        assert_eq!(g.unknown_words, ["gantt", "pgfgantt"]);
        assert_eq!(g.missing[0].term, "gantt");
        let why = g.decline().unwrap();
        assert!(
            why.contains("never mention") && why.contains("pgfgantt"),
            "{why}"
        );
        // A paraphrase's one foreign word, the rest matched.
        let ps = [passage(
            1,
            "The direction command of pTeX is DVI command 255.",
        )];
        let g = grounding(
            &rarity(&[
                ("opcod", 0),
                ("ptex", 30),
                ("direct", 200),
                ("dvi", 20),
                ("255", 3),
            ]),
            &ps,
        );
        assert!(g.coverage > KNOWN_COVERAGE, "{g:?}");
        assert_eq!(g.decline(), None);
    }

    #[test]
    fn weak_coverage_declines_and_numbers_or_cjk_pairs_are_not_unknown_words() {
        let ps = [passage(1, "tlmgr update --self updates tlmgr itself.")];
        let g = grounding(
            &rarity(&[("年賀", 0), ("2099", 0), ("s", 0), ("zotero", 5)]),
            &ps,
        );
        assert!(g.unknown_words.is_empty());
        assert_eq!(g.coverage, 0.0);
        assert!(g.decline().unwrap().contains("no passage"));
        let g = grounding(&rarity(&[("tlmgr", 12), ("self", 50)]), &ps);
        assert_eq!(g.decline(), None);
    }

    #[test]
    fn particles_and_question_words_are_not_what_a_passage_must_hold() {
        // 「漢数字で何と書きますか」: the content is 漢数 and 数字; すか, と書
        // and 何と are rare glue that no answer page needs to hold.
        let ps = [passage(1, "漢数字を出力するには \\kansuji を使う。")];
        let g = grounding(
            &rarity(&[
                ("漢数", 12),
                ("数字", 40),
                ("すか", 1),
                ("と書", 2),
                ("何と", 1),
                ("kansuji", 3),
            ]),
            &ps,
        );
        assert!(g.coverage > 0.99, "{g:?}");
        assert!(g.missing.is_empty(), "{g:?}");
        // Two kanji pairs the index never holds, in a Japanese question,
        // are words it lacks; one may straddle two words.
        let ps = [passage(1, "日本語の文章を組版するパッケージ。")];
        let q = |pairs: &[(&'static str, u64)]| {
            let mut t = vec![("日本", 50), ("本語", 50), ("組版", 30), ("すか", 1)];
            t.extend_from_slice(pairs);
            grounding(&rarity(&t), &ps)
        };
        let g = q(&[("年賀", 0), ("賀状", 0)]);
        assert_eq!(g.unknown_words, ["年賀", "賀状"]);
        assert!(g.decline().is_some(), "{g:?}");
        assert!(q(&[("話文", 0)]).unknown_words.is_empty());
        // Chinese question pairs likewise; katakana and Han pairs stay.
        assert!(glue("哪个") && glue("什么") && glue("すか") && glue("紙の"));
        assert!(!glue("漢数") && !glue("ソース") && !glue("源码") && !glue("latex"));
    }

    #[test]
    fn in_a_small_index_absence_says_little() {
        let ps = [passage(1, "Kenji Sato will prepare the tender documents.")];
        let mut r = rarity(&[("paperwork", 0), ("readi", 0), ("tender", 2), ("sato", 3)]);
        r.chunks = 30;
        let g = grounding(&r, &ps);
        assert!(
            g.coverage > SMALL_WEAK_COVERAGE && g.coverage < KNOWN_COVERAGE,
            "{g:?}"
        );
        assert_eq!(g.decline(), None);
        r.chunks = 5000;
        assert!(grounding(&r, &ps).decline().is_some());
        // Nothing matched at all is declined at any size, naming the words.
        let mut r = rarity(&[("mongolia", 0), ("popul", 0)]);
        r.chunks = 30;
        let why = grounding(&r, &ps).decline().unwrap();
        assert!(why.contains("“mongolia”"), "{why}");
    }
}
