//! Answer quality on a labelled set: is the answer right, is its answer
//! page cited, do its citations hold, is it in the question's language,
//! are unanswerable questions refused.
//!
//! A case ([`Case`]) is a question with the facts a right answer must
//! contain (each fact a list of alternatives; matched NFKC-normalised,
//! case-insensitive, whitespace-collapsed, citation markers removed), the
//! file and physical pages that state them, and its language; or a question
//! the corpus cannot answer (`"answerable": false`). [`score`] judges one
//! answer, [`Report::of`] sums them up per group.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::{parse_citations, Checked, Lang, QUOTE_SUPPORT};
use crate::prompt::Passage;

/// One labelled question.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Its id.
    pub id: String,
    /// The question.
    pub question: String,
    /// The question's language (`en`, `ja`, `zh`).
    pub lang: String,
    /// The file (name) that answers it.
    #[serde(default)]
    pub doc: Option<String>,
    /// Physical pages that state the answer.
    #[serde(default)]
    pub pages: Vec<u32>,
    /// What a right answer contains: every fact, by one of its
    /// alternatives.
    #[serde(default)]
    pub facts: Vec<Vec<String>>,
    /// False for questions the corpus cannot answer.
    #[serde(default = "yes")]
    pub answerable: bool,
    /// Groups to report separately.
    #[serde(default)]
    pub tags: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Text as facts are matched: NFKC, lowercase, whitespace collapsed.
fn norm(text: &str) -> String {
    text.nfkc()
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl Case {
    /// Whether `answer` holds every fact.
    pub fn correct(&self, answer: &str) -> bool {
        let mut bare = answer.to_string();
        for c in parse_citations(answer).iter().rev() {
            bare.replace_range(c.span.0..c.span.1, " ");
        }
        let a = norm(&bare);
        let squeezed: String = a.chars().filter(|c| !c.is_whitespace()).collect();
        !self.facts.is_empty()
            && self.facts.iter().all(|alts| {
                alts.iter().any(|f| {
                    let f = norm(f);
                    a.contains(&f) || squeezed.contains(&f.replace(' ', ""))
                })
            })
    }

    /// Whether `path` is the case's file.
    fn is_doc(&self, path: &str) -> bool {
        let Some(doc) = &self.doc else { return false };
        std::path::Path::new(path)
            .file_name()
            .is_some_and(|n| n.to_string_lossy() == doc.as_str())
            || path == doc
    }

    /// Whether a passage holds an answer page.
    pub fn holds_answer(&self, p: &Passage) -> bool {
        self.is_doc(&p.path)
            && self
                .pages
                .iter()
                .any(|pg| (p.page_start..=p.page_end).contains(pg))
    }
}

/// How one answer did.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    /// The case's id.
    pub id: String,
    /// Its language.
    pub lang: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Answerable.
    pub answerable: bool,
    /// Holds every fact.
    pub correct: bool,
    /// A citation names an answer page of the answer file.
    pub page_cited: bool,
    /// An answer page was among the passages.
    pub page_given: bool,
    /// An answer page was among retrieval's first ten hits.
    pub page_top10: bool,
    /// Citations, and those whose quoted sentence supports its claim.
    pub citations: usize,
    /// Citations whose quote supports the claim.
    pub precise: usize,
    /// Citations shirabe added.
    pub attributed: usize,
    /// Sentences flagged as unsupported.
    pub unsupported: usize,
    /// Sentences about the passages.
    pub meta: usize,
    /// It had text but no citation (and was not a refusal).
    pub without_sources: bool,
    /// Written in the question's language.
    pub right_language: bool,
    /// Said the documents do not answer (or gave no answer).
    pub refused: bool,
    /// Seconds to the first token (model answers).
    pub first_token_s: Option<f64>,
    /// Seconds for the whole answer.
    pub total_s: f64,
    /// The answer.
    pub answer: String,
    /// The answer as written, before its citations were checked (for
    /// scoring a checker again without the model).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub raw: String,
    /// The citations whose quote does not hold their claim.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub imprecise: Vec<Imprecise>,
    /// How well the passages covered the question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grounding: Option<super::grounding::Grounding>,
    /// Each citation as `[n] file p. N (by): quote`, to see where a miss went.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cited: Vec<String>,
    /// The passage numbers that hold an answer page.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answer_in: Vec<usize>,
}

/// A citation whose quoted sentence does not hold its claim.
#[derive(Debug, Clone, Serialize)]
pub struct Imprecise {
    /// The passage cited.
    pub n: usize,
    /// The claim.
    pub claim: String,
    /// The quote.
    pub quote: String,
    /// Share of the claim's terms in the passage.
    pub support: f32,
    /// Share of the claim's terms in the quote.
    pub quote_support: f32,
    /// Who cited it.
    pub by: super::CitedBy,
}

/// Judges `checked` (the answer to `case` from `passages`).
pub fn score(
    case: &Case,
    passages: &[Passage],
    checked: &Checked,
    first_token_s: Option<f64>,
    total_s: f64,
) -> Scored {
    let answer = checked.answer.trim();
    let refused = answer.is_empty() || checked.refused;
    let page_cited = checked.citations.iter().any(|c| {
        passages
            .get(c.n - 1)
            .is_some_and(|p| case.is_doc(&p.path) && case.pages.contains(&c.located.page))
    });
    let is_precise = |c: &&super::CheckedCitation| {
        c.supported
            && (c.quote_support >= QUOTE_SUPPORT
                || c.similarity
                    .is_some_and(|s| s >= super::SIMILARITY_THRESHOLD))
    };
    let precise = checked.citations.iter().filter(is_precise).count();
    let imprecise = checked
        .citations
        .iter()
        .filter(|c| !is_precise(c))
        .map(|c| Imprecise {
            n: c.n,
            claim: checked.answer[c.sentence.0..c.sentence.1].to_string(),
            quote: c.quote_text.clone(),
            support: c.support,
            quote_support: c.quote_support,
            by: c.by,
        })
        .collect();
    let lang = match case.lang.as_str() {
        "ja" => Lang::Ja,
        "zh" => Lang::Zh,
        "ko" => Lang::Ko,
        _ => Lang::En,
    };
    Scored {
        id: case.id.clone(),
        lang: case.lang.clone(),
        tags: case.tags.clone(),
        answerable: case.answerable,
        correct: case.answerable && case.correct(answer),
        page_cited,
        page_given: passages.iter().any(|p| case.holds_answer(p)),
        page_top10: passages
            .iter()
            .any(|p| p.rank <= 10 && case.holds_answer(p)),
        citations: checked.citations.len(),
        precise,
        attributed: checked.attributed().count(),
        unsupported: checked.unsupported.len(),
        meta: checked.meta.len(),
        without_sources: !refused && checked.citations.is_empty(),
        right_language: refused || lang.written_in(answer),
        refused,
        first_token_s,
        total_s,
        answer: answer.to_string(),
        raw: String::new(),
        grounding: None,
        imprecise,
        cited: checked
            .citations
            .iter()
            .map(|c| {
                let file = passages.get(c.n - 1).map_or("?", |p| {
                    p.path.rsplit('/').next().unwrap_or(p.path.as_str())
                });
                let quote: String = c.quote_text.chars().take(100).collect();
                format!(
                    "[{}] {file} p. {} ({:?}): {quote}",
                    c.n, c.located.page, c.by
                )
            })
            .collect(),
        answer_in: passages
            .iter()
            .enumerate()
            .filter(|(_, p)| case.holds_answer(p))
            .map(|(i, _)| i + 1)
            .collect(),
    }
}

/// The figures of a group of answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Answerable questions.
    pub answerable: usize,
    /// Share of them answered right.
    pub correct: f64,
    /// Share of them whose answer page is cited.
    pub page_cited: f64,
    /// Share of them whose answer page was among the passages.
    pub page_given: f64,
    /// Of those whose answer page was in retrieval's top ten, the share
    /// that cite it.
    pub page_cited_top10: f64,
    /// Share of citations whose quote supports their claim.
    pub citation_precision: f64,
    /// Citations per answer, and the share shirabe added.
    pub citations_per_answer: f64,
    /// Share of citations shirabe added.
    pub attributed: f64,
    /// Answers with text but no source.
    pub without_sources: usize,
    /// Unsupported sentences per answer.
    pub unsupported_per_answer: f64,
    /// Sentences about the passages, per answer.
    pub meta_per_answer: f64,
    /// Share of answers in the question's language.
    pub right_language: f64,
    /// Unanswerable questions.
    pub unanswerable: usize,
    /// Share of them refused.
    pub refused_unanswerable: f64,
    /// Share of answerable questions refused.
    pub refused_answerable: f64,
    /// Median seconds to the first token.
    pub first_token_s: Option<f64>,
    /// Mean seconds per answer.
    pub total_s: f64,
}

/// Figures overall, per language and per tag.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// All answers.
    pub all: Figures,
    /// Per group (`lang:ja`, `tag:paraphrase`).
    pub groups: BTreeMap<String, Figures>,
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

impl Figures {
    /// The figures of `scored`.
    pub fn of(scored: &[&Scored]) -> Figures {
        let ans: Vec<&&Scored> = scored.iter().filter(|s| s.answerable).collect();
        let un: Vec<&&Scored> = scored.iter().filter(|s| !s.answerable).collect();
        let citations: usize = scored.iter().map(|s| s.citations).sum();
        let mut ttft: Vec<f64> = scored.iter().filter_map(|s| s.first_token_s).collect();
        ttft.sort_by(f64::total_cmp);
        let n = scored.len().max(1) as f64;
        Figures {
            answerable: ans.len(),
            correct: share(ans.iter().filter(|s| s.correct).count(), ans.len()),
            page_cited: share(ans.iter().filter(|s| s.page_cited).count(), ans.len()),
            page_given: share(ans.iter().filter(|s| s.page_given).count(), ans.len()),
            page_cited_top10: share(
                ans.iter().filter(|s| s.page_top10 && s.page_cited).count(),
                ans.iter().filter(|s| s.page_top10).count(),
            ),
            citation_precision: share(scored.iter().map(|s| s.precise).sum(), citations),
            citations_per_answer: citations as f64 / n,
            attributed: share(scored.iter().map(|s| s.attributed).sum(), citations),
            without_sources: scored.iter().filter(|s| s.without_sources).count(),
            unsupported_per_answer: scored.iter().map(|s| s.unsupported).sum::<usize>() as f64 / n,
            meta_per_answer: scored.iter().map(|s| s.meta).sum::<usize>() as f64 / n,
            right_language: share(
                scored.iter().filter(|s| s.right_language).count(),
                scored.len(),
            ),
            unanswerable: un.len(),
            refused_unanswerable: share(un.iter().filter(|s| s.refused).count(), un.len()),
            refused_answerable: share(ans.iter().filter(|s| s.refused).count(), ans.len()),
            first_token_s: (!ttft.is_empty()).then(|| ttft[ttft.len() / 2]),
            total_s: scored.iter().map(|s| s.total_s).sum::<f64>() / n,
        }
    }
}

impl Report {
    /// The report of `scored`.
    pub fn of(scored: &[Scored]) -> Report {
        let all: Vec<&Scored> = scored.iter().collect();
        let mut keys: Vec<String> = Vec::new();
        for s in scored {
            keys.push(format!("lang:{}", s.lang));
            keys.extend(s.tags.iter().map(|t| format!("tag:{t}")));
        }
        keys.sort();
        keys.dedup();
        let groups = keys
            .into_iter()
            .map(|k| {
                let members: Vec<&Scored> = scored
                    .iter()
                    .filter(|s| {
                        k.strip_prefix("lang:") == Some(s.lang.as_str())
                            || k.strip_prefix("tag:")
                                .is_some_and(|t| s.tags.iter().any(|x| x == t))
                    })
                    .collect();
                (k, Figures::of(&members))
            })
            .collect();
        Report {
            all: Figures::of(&all),
            groups,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::passage;
    use super::*;

    fn case(facts: &[&[&str]]) -> Case {
        Case {
            id: "t".into(),
            question: "How much was the budget?".into(),
            lang: "en".into(),
            doc: Some("d1.pdf".into()),
            pages: vec![1],
            facts: facts
                .iter()
                .map(|a| a.iter().map(|s| s.to_string()).collect())
                .collect(),
            answerable: true,
            tags: vec!["copied".into()],
        }
    }

    #[test]
    fn facts_match_loosely_but_all_of_them() {
        let c = case(&[&["4.2 million", "4,2 Mio"], &["Osaka"]]);
        assert!(c.correct("The budget was 4.2  Million euros for OSAKA [1]."));
        assert!(c.correct("予算は４．２ million、osaka。"));
        assert!(!c.correct("The budget was 4.2 million euros."));
        // A citation marker does not split a fact.
        let d = case(&[&["1.8億円"]]);
        assert!(d.correct("予算は1.8億[1]円です。") || d.correct("予算は1.8億円です[1]。"));
        assert!(!case(&[]).correct("anything"));
    }

    #[test]
    fn answers_are_scored_and_summed() {
        let passages = vec![
            passage(1, "The budget was 4.2 million euros for Osaka."),
            passage(2, "Unrelated canteen text."),
        ];
        let c = case(&[&["4.2 million"]]);
        let good = check("The budget was 4.2 million euros for Osaka [1].", &passages);
        let s = score(&c, &passages, &good, Some(1.5), 3.0);
        assert!(
            s.correct && s.page_cited && s.page_given && s.right_language,
            "{s:?}"
        );
        assert_eq!((s.citations, s.precise, s.attributed), (1, 1, 0));
        let bare = check("The moon is far away.", &passages);
        let t = score(&c, &passages, &bare, None, 1.0);
        assert!(!t.correct && !t.page_cited && t.without_sources && t.unsupported == 1);
        let mut un = case(&[]);
        un.answerable = false;
        let refusal = check("The documents do not answer this question.", &passages);
        let u = score(&un, &passages, &refusal, None, 1.0);
        assert!(u.refused && !u.without_sources);
        let r = Report::of(&[s, t, u]);
        assert_eq!(r.all.answerable, 2);
        assert_eq!(r.all.correct, 0.5);
        assert_eq!(r.all.refused_unanswerable, 1.0);
        assert_eq!(r.all.without_sources, 1);
        assert_eq!(r.all.first_token_s, Some(1.5));
        assert_eq!(r.groups["lang:en"].answerable, 2);
        assert_eq!(r.groups["tag:copied"].unanswerable, 1);
    }
}
