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
//!
//! [`Answerer`] is the policy around them: who writes, in which window,
//! and the checks before anyone sees the text.

pub mod answerer;
pub mod conversation;
pub mod eval;
pub mod extractive;
pub mod grounding;
pub mod lang;
pub mod openai;
pub mod summarize;
pub mod window;

pub use answerer::{
    AnswerConfig, AnswerHooks, Answered, Answerer, LocalModel, Phase, Question, WindowFit,
};
pub use extractive::{extractive, extractive_with};
pub use lang::Lang;

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
            .map_err(crate::Error::from)
    }
}

use std::collections::HashSet;

use serde::Serialize;

use crate::index::analyzer::terms;
use crate::ingest::chunk::fine_sentences;
use crate::prompt::{Located, Passage};

/// What an answer says when the passages hold none.
pub const NO_ANSWER: &str =
    "The indexed documents do not seem to contain an answer to this question.";

/// Below this share of supported terms a claim is flagged.
pub const SUPPORT_THRESHOLD: f32 = 0.35;

/// The share of a claim's terms its quoted sentence must hold for the
/// quote to count as supporting it on its own.
pub const QUOTE_SUPPORT: f32 = 0.5;

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

/// Who put a citation on a sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CitedBy {
    /// The model wrote it, and it was checked.
    Model,
    /// The model gave none that supports the sentence; shirabe found the
    /// passage sentence that does.
    Shirabe,
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
    /// passage text).
    pub quote: (usize, usize),
    /// The quoted text (one line).
    pub quote_text: String,
    /// Share of the sentence's terms found in the quoted sentence.
    pub quote_support: f32,
    /// Where the quote is: its page, printed label and character range
    /// within the page's text.
    #[serde(flatten)]
    pub located: Located,
    /// Cosine similarity of the claim and the quote, when an embedding
    /// model was at hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    /// Who made the citation.
    pub by: CitedBy,
    /// Whether the passage supports the sentence (by its words, or by
    /// meaning when an embedding model was at hand).
    pub supported: bool,
}

/// A sentence whose citations do not support it.
#[derive(Debug, Clone, Serialize)]
pub struct Unsupported {
    /// Byte range in the answer.
    pub sentence: (usize, usize),
    /// Its best support among the passages.
    pub support: f32,
}

/// The outcome of [`check`].
#[derive(Debug, Clone, Serialize, Default)]
pub struct Checked {
    /// Citations, per cited sentence and passage: the model's own, and
    /// those shirabe added to sentences the model left unsupported.
    pub citations: Vec<CheckedCitation>,
    /// Numbers that name no passage (dropped).
    pub invalid: Vec<usize>,
    /// The model's citations whose passage does not hold their claim
    /// (removed from the answer; the claim is attributed anew or flagged).
    pub unverified: Vec<usize>,
    /// Claims no passage supports.
    pub unsupported: Vec<Unsupported>,
    /// Sentences about the passages rather than the question ("This can be
    /// found in passage 1."): byte ranges in the answer.
    pub meta: Vec<(usize, usize)>,
    /// The answer says the documents do not answer the question.
    pub refused: bool,
    /// The answer with invalid citations removed and shirabe's added.
    pub answer: String,
}

impl Checked {
    /// Citations shirabe added.
    pub fn attributed(&self) -> impl Iterator<Item = &CheckedCitation> {
        self.citations.iter().filter(|c| c.by == CitedBy::Shirabe)
    }

    /// The cited passage numbers, each once, in order.
    pub fn cited(&self) -> Vec<usize> {
        let mut n: Vec<usize> = self.citations.iter().map(|c| c.n).collect();
        n.sort();
        n.dedup();
        n
    }
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

pub(crate) fn term_set(text: &str) -> HashSet<String> {
    terms(text)
        .into_iter()
        .map(|t| t.0)
        .filter(|t| !STOPWORDS.contains(&t.as_str()))
        .collect()
}

/// Terms of sentences that talk about the passages instead of answering
/// (stemmed, as the analyzer gives them).
const META: &[&str] = &[
    "passag", "document", "found", "find", "mention", "provid", "inform", "context", "sourc",
    "text", "refer", "state", "answer", "question", "accord", "given", "base", "here", "abov",
    "below", "cite", "citat", "see", "detail", "describ", "explain", "discuss", "section", "page",
    "specif", "relev", "content", "data", "say", "said",
];

/// Whether a sentence's terms only talk about the passages.
fn is_meta(words: &HashSet<String>) -> bool {
    !words.is_empty() && words.iter().all(|w| META.contains(&w.as_str()))
}

/// What to say when answers are extractive because no model is set: how
/// to get one.
pub const MODEL_HINT: &str =
    "(extractive, no model: `shirabe models pull`, --model FILE.gguf or --endpoint URL writes answers)";

/// Whether `text` says the documents do not answer.
pub fn is_refusal(text: &str) -> bool {
    let t = text.to_lowercase();
    const SAYS: &[&str] = &[
        "do not seem to contain an answer",
        "do not contain",
        "does not contain",
        "don't contain",
        "doesn't contain",
        "could not find",
        "cannot find",
        "can't find",
        "not found in the",
        "no information",
        "not mentioned",
        "not provided",
        "do not mention",
        "does not mention",
        "do not say",
        "does not say",
        "do not answer",
        "does not answer",
        "no answer",
        "i don't know",
        "見つかりません",
        "見つけられません",
        "記載はありません",
        "記載がありません",
        "記載されていません",
        "含まれていません",
        "書かれていません",
        "わかりません",
        "分かりません",
        "答えられません",
        "没有找到",
        "未找到",
        "找不到",
        "没有提到",
        "没有提及",
        "未提及",
        "没有相关",
        "无法回答",
        "没有包含",
        "不包含",
    ];
    SAYS.iter().any(|p| t.contains(p))
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
                out.extend(fine_sentences(text, start, i));
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
    // A citation ends its claim: "A [1] B [2]" without a stop between
    // (quotes joined by the extractive answerer, a model's list) is two
    // claims, unless what follows continues the sentence (", and", "or").
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(merged.len());
    for (s, e) in merged {
        let mut from = s;
        for c in cites.iter().filter(|c| c.span.0 > s && c.span.1 < e) {
            if c.span.0 <= from {
                continue;
            }
            let rest = &text[c.span.1..e];
            let next = rest.trim_start();
            let continues = next.is_empty()
                || rest.len() == next.len()
                || next.starts_with(|ch: char| {
                    ch.is_ascii_lowercase() || ",;:)]）、，。.!?！？[［【".contains(ch)
                });
            if !continues {
                out.push((from, c.span.1));
                from = c.span.1 + (rest.len() - next.len());
            }
        }
        out.push((from, e));
    }
    out
}

/// The passage sentence that supports `words` best: most of its terms
/// shared, then the densest; a heading or the title is quoted only when
/// nothing else shares a term. Returns its byte range, its text and the
/// share of `words` it holds.
/// The passage text that best supports a claim.
struct Quote {
    /// Byte range in the passage.
    range: (usize, usize),
    /// The sentence within it holding most of the claim (where it is
    /// located: its page).
    core: (usize, usize),
    /// The quote, one line.
    text: String,
    /// Share of the claim's terms it holds.
    share: f32,
}

/// A claim's terms for quoting: all of them, and those it adds to the
/// question (what the quote must hold; all of them when it adds none).
struct ClaimTerms<'a> {
    words: &'a HashSet<String>,
    focus: &'a HashSet<String>,
}

fn best_quote(p: &Passage, claim: &ClaimTerms<'_>) -> Quote {
    let (words, focus) = (claim.words, claim.focus);
    let title = normalize(&p.title);
    // (range, core, (quotable, shared new terms, shared terms, density))
    type Scored = ((usize, usize), (usize, usize), (bool, usize, usize, f32));
    let mut best: Option<Scored> = None;
    let ranges = sentence_ranges(&p.text);
    let shared_in = |s: usize, e: usize| term_set(&p.text[s..e]).intersection(focus).count();
    // One sentence; or, when none holds enough of the claim, two adjacent
    // ones (within the quote's length) when the claim draws on both.
    let pairs = ranges.windows(2).filter_map(|w| {
        let (s, e) = (w[0].0, w[1].1);
        let core = if shared_in(w[1].0, w[1].1) > shared_in(w[0].0, w[0].1) {
            w[1]
        } else {
            w[0]
        };
        (extractive::words(&p.text[s..e]) <= extractive::MAX_WORDS as f32).then_some(((s, e), core))
    });
    let singles: Vec<((usize, usize), (usize, usize))> = ranges.iter().map(|&r| (r, r)).collect();
    let need = (QUOTE_SUPPORT * focus.len() as f32).ceil() as usize;
    for (round, candidates) in [singles, pairs.collect()].into_iter().enumerate() {
        if round == 1 && best.as_ref().is_some_and(|b| b.2 .0 && b.2 .1 >= need) {
            break;
        }
        for ((s, e), core) in candidates {
            let sentence = &p.text[s..e];
            let terms = term_set(sentence);
            let shared = terms.intersection(focus).count();
            let all = terms.intersection(words).count();
            let heading = normalize(sentence) == title || looks_like_heading(sentence);
            let key = (
                !heading && shared > 0,
                shared,
                all,
                all as f32 / terms.len().max(1) as f32,
            );
            let better = match &best {
                None => true,
                Some((_, _, b)) => {
                    (key.0, key.1, key.2) > (b.0, b.1, b.2)
                        || ((key.0, key.1, key.2) == (b.0, b.1, b.2) && key.3 > b.3)
                }
            };
            if better {
                best = Some(((s, e), core, key));
            }
        }
    }
    let Some(((mut s, e), mut core, (_, shared, _, _))) = best else {
        return Quote {
            range: (0, 0),
            core: (0, 0),
            text: String::new(),
            share: 0.0,
        };
    };
    // A heading line glued to the sentence by a single line break.
    if let Some(nl) = p.text[s..e].find('\n') {
        let (head, rest) = (&p.text[s..s + nl], p.text[s + nl..e].trim());
        if looks_like_heading(head) && rest.split_whitespace().count() >= 4 {
            s += nl + 1;
            s += p.text[s..e].len() - p.text[s..e].trim_start().len();
        }
    }
    core.0 = core.0.max(s);
    if core.0 >= core.1 {
        core = (s, e);
    }
    let share = if focus.is_empty() {
        0.0
    } else {
        shared as f32 / focus.len() as f32
    };
    Quote {
        range: (s, e),
        core,
        text: extractive::clean_quote(&p.text[s..e]),
        share,
    }
}

fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A short line without a sentence's end: a heading, a title, a caption.
fn looks_like_heading(sentence: &str) -> bool {
    let t = sentence.trim();
    let ends = t.ends_with(['.', '!', '?', '。', '．', '｡', '！', '？', ':', '：']);
    !ends && t.split_whitespace().count() <= 8 && t.chars().count() <= 60
}

impl Claim {
    fn terms(&self) -> ClaimTerms<'_> {
        ClaimTerms {
            words: &self.words,
            focus: &self.focus,
        }
    }
}

/// One answer sentence being checked.
struct Claim {
    range: (usize, usize),
    words: HashSet<String>,
    /// The words beyond the question's (see [`ClaimTerms`]).
    focus: HashSet<String>,
    /// Passage numbers the model cited here (valid ones).
    cited: Vec<usize>,
    /// (n, support, by) decided for it.
    chosen: Vec<(usize, f32, CitedBy, Option<f32>)>,
    /// Best support found anywhere.
    best: f32,
}

/// Checks the citations of `answer` against `passages` (by words only).
pub fn check(answer: &str, passages: &[Passage]) -> Checked {
    check_with(answer, passages, None).unwrap_or_default()
}

/// Checks and completes the citations of `answer`. Numbers that name no
/// passage are dropped. Each sentence that makes a claim keeps the model's
/// citations that support it; when none does, the passage that supports it
/// best is cited instead (marked as shirabe's, and its `[n]` written into
/// the answer); a claim nothing supports is flagged. Support is lexical
/// (the share of the claim's terms in the passage, at least
/// [`SUPPORT_THRESHOLD`]) and, with `embed`, by meaning (the cosine of the
/// claim and the passage sentence that supports it best, at least
/// [`SIMILARITY_THRESHOLD`]). Every citation quotes that sentence and
/// names its page.
pub fn check_with(
    answer: &str,
    passages: &[Passage],
    embed: Option<EmbedFn<'_>>,
) -> crate::Result<Checked> {
    check_answer("", answer, passages, embed)
}

/// [`check_with`] for an answer to `question`: what a claim repeats of the
/// question is its framing, so its quote is chosen, and judged, by the
/// words it adds.
pub fn check_answer(
    question: &str,
    answer: &str,
    passages: &[Passage],
    embed: Option<EmbedFn<'_>>,
) -> crate::Result<Checked> {
    check_inner(question, answer, passages, embed, &HashSet::new())
}

/// [`check_answer`]; `was_cited` holds claims (text without markers,
/// trimmed) whose citations a first pass removed: they are checked even
/// when short.
fn check_inner(
    question: &str,
    answer: &str,
    passages: &[Passage],
    embed: Option<EmbedFn<'_>>,
    was_cited: &HashSet<String>,
) -> crate::Result<Checked> {
    let question_terms = term_set(question);
    let cites = parse_citations(answer);
    let valid = |n: usize| n >= 1 && n <= passages.len();
    let mut invalid: Vec<usize> = cites
        .iter()
        .flat_map(|c| c.numbers.iter().copied())
        .filter(|&n| !valid(n))
        .collect();
    invalid.sort();
    invalid.dedup();
    // The answer without invalid numbers.
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

    let passage_terms: Vec<HashSet<String>> = passages.iter().map(|p| term_set(&p.text)).collect();
    let support_in = |words: &HashSet<String>, n: usize| -> f32 {
        if words.is_empty() {
            return 1.0;
        }
        let pt = &passage_terms[n - 1];
        words.iter().filter(|w| pt.contains(*w)).count() as f32 / words.len() as f32
    };
    let mut out = Checked {
        invalid,
        ..Checked::default()
    };
    let cites = parse_citations(&cleaned);
    let sentences = sentence_ranges(&cleaned);
    out.refused = sentences
        .first()
        .is_some_and(|&(s, e)| is_refusal(&cleaned[s..e]))
        || (sentences.len() <= 2 && is_refusal(&cleaned));
    let mut claims: Vec<Claim> = Vec::new();
    for &(s, e) in &sentences {
        let mine: Vec<usize> = cites
            .iter()
            .filter(|c| c.span.0 >= s && c.span.1 <= e)
            .flat_map(|c| c.numbers.iter().copied())
            .collect();
        let mut claim = cleaned[s..e].to_string();
        for c in cites
            .iter()
            .rev()
            .filter(|c| c.span.0 >= s && c.span.1 <= e)
        {
            claim.replace_range(c.span.0 - s..c.span.1 - s, "");
        }
        let words = term_set(&claim);
        if is_meta(&words) {
            out.meta.push((s, e));
            continue;
        }
        let numbers_only = words
            .iter()
            .all(|w| w.chars().all(|ch| ch.is_ascii_digit()));
        if is_refusal(&claim)
            || (mine.is_empty() && numbers_only)
            || (mine.is_empty() && words.len() < 2 && !was_cited.contains(claim.trim()))
        {
            continue;
        }
        let mut cited: Vec<usize> = mine;
        cited.sort();
        cited.dedup();
        // What the claim adds: its terms beyond the question's, without
        // the CJK pairs that only glue words together ("ジと", "を依").
        let new: HashSet<String> = words
            .difference(&question_terms)
            .filter(|t| !grounding::glue(t))
            .cloned()
            .collect();
        claims.push(Claim {
            range: (s, e),
            focus: if new.is_empty() { words.clone() } else { new },
            words,
            cited,
            chosen: Vec::new(),
            best: 0.0,
        });
    }
    // The model's own citations must hold their claim: the passage most
    // of its words, and one quoted sentence (or two) at least half of
    // them, or (with an embedder) that quote close in meaning. Those that
    // do not are taken out of the answer, which is checked again.
    // Each (claim, passage) quote is found once and asked for again by
    // the steps below.
    let memo: std::cell::RefCell<std::collections::HashMap<(usize, usize), std::rc::Rc<Quote>>> =
        Default::default();
    let quote_of = |c: &Claim, n: usize| -> std::rc::Rc<Quote> {
        memo.borrow_mut()
            .entry((c.range.0, n))
            .or_insert_with(|| std::rc::Rc::new(best_quote(&passages[n - 1], &c.terms())))
            .clone()
    };
    // Markers around nothing but numbers ("[1] [2] [3]", "1. [1]") cite
    // no claim, and never hold.
    let bare = |c: &Claim| {
        c.words
            .iter()
            .all(|w| w.chars().all(|ch| ch.is_ascii_digit()))
    };
    let holds = |c: &Claim, n: usize| {
        !bare(c)
            && support_in(&c.words, n) >= SUPPORT_THRESHOLD
            && quote_of(c, n).share >= QUOTE_SUPPORT
    };
    let mut failing: Vec<(usize, usize)> = Vec::new(); // (claim, n)
    for (ci, c) in claims.iter().enumerate() {
        for &n in &c.cited {
            if !holds(c, n) {
                failing.push((ci, n));
            }
        }
    }
    if let (Some(embed), false) = (embed, failing.is_empty()) {
        let mut texts: Vec<String> = Vec::new();
        for &(ci, n) in &failing {
            let (s, e) = claims[ci].range;
            texts.push(cleaned[s..e].to_string());
            texts.push(quote_of(&claims[ci], n).text.clone());
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let v = embed(&refs)?;
        let mut i = 0;
        failing.retain(|&(ci, _)| {
            let sim: f32 = v[i].iter().zip(&v[i + 1]).map(|(a, b)| a * b).sum();
            i += 2;
            bare(&claims[ci]) || sim < SIMILARITY_THRESHOLD
        });
    }
    if !failing.is_empty() {
        let mut stripped = String::with_capacity(cleaned.len());
        let mut at = 0;
        for c in &cites {
            stripped.push_str(&cleaned[at..c.span.0]);
            let claim = claims
                .iter()
                .position(|x| c.span.0 >= x.range.0 && c.span.1 <= x.range.1);
            let keep: Vec<String> = c
                .numbers
                .iter()
                .filter(|&&n| !claim.is_some_and(|ci| failing.contains(&(ci, n))))
                .map(|n| n.to_string())
                .collect();
            if !keep.is_empty() {
                stripped.push_str(&format!("[{}]", keep.join(", ")));
            } else if cleaned[c.span.1..].starts_with([' ', '.', ',', ';', ':', '!', '?', '\n'])
                || c.span.1 == cleaned.len()
            {
                let kept = stripped.trim_end_matches([' ', '\t']).len();
                stripped.truncate(kept);
            }
            at = c.span.1;
        }
        stripped.push_str(&cleaned[at..]);
        let cited_before: HashSet<String> = failing
            .iter()
            .map(|&(ci, _)| {
                let (s, e) = claims[ci].range;
                let mut t = cleaned[s..e].to_string();
                for c in cites
                    .iter()
                    .rev()
                    .filter(|c| c.span.0 >= s && c.span.1 <= e)
                {
                    t.replace_range(c.span.0 - s..c.span.1 - s, "");
                }
                t.trim().to_string()
            })
            .collect();
        let mut again = check_inner(question, &stripped, passages, embed, &cited_before)?;
        again.invalid = out.invalid;
        let mut gone: Vec<usize> = failing.iter().map(|x| x.1).collect();
        gone.sort();
        gone.dedup();
        again.unverified = gone;
        return Ok(again);
    }
    // Lexical support: the model's citations that hold, else the passage
    // whose best sentence holds most of the claim (a precise quote, on
    // its own page), supported as a whole. A model citation whose quote
    // holds only part of what the claim adds gains, beside it, a passage
    // whose sentence holds more of it.
    let quote_share = |c: &Claim, n: usize| quote_of(c, n).share;
    let mut undecided: Vec<usize> = Vec::new();
    for (ci, c) in claims.iter_mut().enumerate() {
        let mut model_quote = 0f32;
        for &n in &c.cited {
            let sup = support_in(&c.words, n);
            c.best = c.best.max(sup);
            model_quote = model_quote.max(quote_share(c, n));
            c.chosen.push((n, sup, CitedBy::Model, None));
        }
        if c.best >= SUPPORT_THRESHOLD && model_quote >= 1.0 {
            continue;
        }
        let best = (1..=passages.len())
            .filter(|n| !c.cited.contains(n))
            .map(|n| (n, support_in(&c.words, n)))
            .filter(|x| x.1 >= SUPPORT_THRESHOLD)
            .map(|(n, sup)| (n, sup, quote_share(c, n)))
            .max_by(|a, b| {
                a.2.total_cmp(&b.2)
                    .then(a.1.total_cmp(&b.1))
                    .then(b.0.cmp(&a.0))
            });
        match best {
            Some((n, sup, q))
                if q >= QUOTE_SUPPORT && (c.best < SUPPORT_THRESHOLD || q > model_quote) =>
            {
                c.best = c.best.max(sup);
                c.chosen.push((n, sup, CitedBy::Shirabe, None));
            }
            _ if c.best < SUPPORT_THRESHOLD => undecided.push(ci),
            _ => {}
        }
    }
    // By meaning: every chosen citation gets its similarity; claims the
    // words did not settle look at the best few passages' best sentences.
    if let Some(embed) = embed {
        let mut texts: Vec<String> = Vec::new();
        let mut asks: Vec<(usize, usize)> = Vec::new(); // (claim, passage n)
        for (ci, c) in claims.iter().enumerate() {
            let mut ns: Vec<usize> = c.chosen.iter().map(|x| x.0).collect();
            if undecided.contains(&ci) {
                let mut by_support: Vec<(usize, f32)> = (1..=passages.len())
                    .map(|n| (n, support_in(&c.words, n)))
                    .collect();
                by_support.sort_by(|a, b| b.1.total_cmp(&a.1));
                ns.extend(by_support.iter().take(3).map(|x| x.0));
            }
            ns.dedup();
            for n in ns {
                asks.push((ci, n));
            }
        }
        if !asks.is_empty() {
            let mut claim_at: Vec<Option<usize>> = vec![None; claims.len()];
            for &(ci, n) in &asks {
                if claim_at[ci].is_none() {
                    claim_at[ci] = Some(texts.len());
                    let (s, e) = claims[ci].range;
                    texts.push(cleaned[s..e].to_string());
                }
                texts.push(quote_of(&claims[ci], n).text.clone());
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let v = embed(&refs)?;
            let mut next = 0usize;
            let mut last_claim = usize::MAX;
            for &(ci, n) in &asks {
                if ci != last_claim {
                    next = claim_at[ci].expect("set above") + 1;
                    last_claim = ci;
                }
                let cv = &v[claim_at[ci].expect("set above")];
                let sim: f32 = v[next].iter().zip(cv).map(|(a, b)| a * b).sum();
                next += 1;
                let c = &mut claims[ci];
                if let Some(x) = c.chosen.iter_mut().find(|x| x.0 == n) {
                    x.3 = Some(sim);
                } else if sim >= SIMILARITY_THRESHOLD
                    && !c.chosen.iter().any(|x| {
                        x.1 >= SUPPORT_THRESHOLD || x.3.is_some_and(|s| s >= SIMILARITY_THRESHOLD)
                    })
                {
                    let sup = support_in(&c.words, n);
                    c.chosen.push((n, sup, CitedBy::Shirabe, Some(sim)));
                }
            }
        }
    }
    // Write shirabe's markers into the answer, before each sentence's
    // closing stop.
    let mut inserts: Vec<(usize, String)> = Vec::new();
    for c in &claims {
        let added: Vec<String> = c
            .chosen
            .iter()
            .filter(|x| x.2 == CitedBy::Shirabe)
            .map(|x| x.0.to_string())
            .collect();
        if added.is_empty() {
            continue;
        }
        let (s, e) = c.range;
        let body = cleaned[s..e].trim_end();
        let mut pos = s + body.len();
        // Before the stop, and before any citation the model put there.
        let trimmed = body.trim_end_matches(['.', '!', '?', '。', '！', '？']);
        if trimmed.len() < body.len() {
            pos = s + trimmed.len();
        }
        let cjk = cleaned[s..pos]
            .chars()
            .last()
            .is_some_and(|ch| ch as u32 >= 0x2E80);
        let sep = if cjk || cleaned[..pos].ends_with(' ') {
            ""
        } else {
            " "
        };
        inserts.push((pos, format!("{sep}[{}]", added.join(", "))));
    }
    inserts.sort_by_key(|x| x.0);
    let moved = |p: usize, inclusive: bool| -> usize {
        p + inserts
            .iter()
            .filter(|(at, _)| *at < p || (inclusive && *at == p))
            .map(|(_, t)| t.len())
            .sum::<usize>()
    };
    let mut text = String::with_capacity(cleaned.len() + 8 * inserts.len());
    let mut at = 0;
    for (pos, t) in &inserts {
        text.push_str(&cleaned[at..*pos]);
        text.push_str(t);
        at = *pos;
    }
    text.push_str(&cleaned[at..]);
    for (s, e) in out.meta.iter_mut() {
        (*s, *e) = (moved(*s, false), moved(*e, true));
    }
    for c in &claims {
        let range = (moved(c.range.0, false), moved(c.range.1, true));
        let mut supported_any = false;
        for &(n, support, by, similarity) in &c.chosen {
            let p = &passages[n - 1];
            let q = quote_of(c, n);
            let (quote, quote_text, quote_support) = (q.range, q.text.clone(), q.share);
            let supported = (support >= SUPPORT_THRESHOLD && quote_support >= QUOTE_SUPPORT)
                || similarity.is_some_and(|s| s >= SIMILARITY_THRESHOLD);
            supported_any |= supported;
            out.citations.push(CheckedCitation {
                n,
                sentence: range,
                support,
                quote,
                quote_text,
                quote_support,
                located: p.locate(q.core),
                similarity,
                by,
                supported,
            });
        }
        if !supported_any {
            out.unsupported.push(Unsupported {
                sentence: range,
                support: c.best,
            });
        }
    }
    out.answer = text;
    Ok(out)
}

/// Embeds texts as unit vectors.
pub type EmbedFn<'a> = &'a EmbedBox<'a>;

/// What an [`EmbedFn`] points to.
pub type EmbedBox<'a> = dyn Fn(&[&str]) -> crate::Result<Vec<Vec<f32>>> + 'a;

/// Similarity at which a claim counts as supported by meaning even when
/// its words differ (a paraphrase, a translation).
pub const SIMILARITY_THRESHOLD: f32 = 0.6;

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn passage(n: usize, text: &str) -> Passage {
        Passage {
            n,
            path: format!("d{n}.pdf"),
            title: format!("Doc {n}"),
            page_start: n as u32,
            page_end: n as u32,
            page_label: None,
            text: text.into(),
            chunk_ids: vec![format!("d{n}-0")],
            page_map: Vec::new(),
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
        // The cheese, and the sentence whose only citation was invalid.
        assert_eq!(c.unsupported.len(), 2);
        let (s, e) = c.unsupported[0].sentence;
        assert!(c.answer[s..e].contains("cheese"));
    }

    #[test]
    fn markers_around_nothing_cite_nothing() {
        let passages = vec![
            passage(1, "The board approved the budget of 1.8 million euros."),
            passage(2, "The night shift was reduced."),
        ];
        // Markers alone (what small models write when told to cite), and a
        // list number before markers.
        let c = check_answer("How much was the budget?", "[1] [2]", &passages, None).unwrap();
        assert!(c.citations.is_empty(), "{c:?}");
        assert_eq!(c.unverified, [1, 2]);
        assert!(!c.answer.contains('['), "{}", c.answer);
        let c = check_answer(
            "How much was the budget?",
            "1. [1] [2] The board approved a budget of 1.8 million euros [1].",
            &passages,
            None,
        )
        .unwrap();
        // Both bare markers go; the claim keeps its own [1].
        assert_eq!(c.unverified, [1, 2]);
        assert!(c.citations.iter().all(|x| x.n == 1 && x.supported), "{c:?}");
        assert!(c.answer.contains("euros [1]"), "{}", c.answer);
        assert!(!c.answer.contains("[2]"), "{}", c.answer);
        // The list number left behind is no claim.
        assert_eq!(c.citations.len(), 1, "{c:?}");
        assert!(c.unsupported.is_empty(), "{c:?}");
    }

    /// A fake embedder: texts about approval point one way, others the
    /// other.
    pub(crate) fn fake_embed(texts: &[&str]) -> crate::Result<Vec<Vec<f32>>> {
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
    }

    #[test]
    fn similarity_clears_paraphrases_only() {
        let passages = vec![passage(1, "The board approved the budget.")];
        let answer = "Spending got the green light [1]. Cheese is blue [1].";
        let c = check(answer, &passages);
        assert_eq!((c.unsupported.len(), c.unverified.clone()), (2, vec![1]));
        assert!(c.citations.is_empty(), "{c:?}");
        let c = check_with(answer, &passages, Some(&fake_embed)).unwrap();
        assert_eq!(c.unsupported.len(), 1);
        let (s, e) = c.unsupported[0].sentence;
        assert!(c.answer[s..e].contains("Cheese"));
        // The paraphrase keeps its citation, by meaning; the false claim
        // loses its own.
        assert_eq!(c.citations.len(), 1);
        assert!(c.citations[0].similarity.unwrap() > 0.99);
        assert!(c.citations[0].supported);
        assert_eq!(
            c.answer,
            "Spending got the green light [1]. Cheese is blue."
        );
    }

    #[test]
    fn uncited_claims_are_attributed_to_the_sentence_that_supports_them() {
        let passages = vec![
            passage(1, "Northwind Quarterly Report\nRevenue rose in the third quarter."),
            passage(
                2,
                "Board minutes\nThe board approved a budget of 4.2 million euros for the Osaka warehouse expansion. The canteen closes at six.",
            ),
        ];
        let answer = "The board approved 4.2 million euros for the Osaka warehouse. The moon is made of green cheese.";
        let c = check(answer, &passages);
        assert_eq!(
            c.answer,
            "The board approved 4.2 million euros for the Osaka warehouse [2]. The moon is made of green cheese."
        );
        assert_eq!(c.citations.len(), 1);
        let x = &c.citations[0];
        assert_eq!((x.n, x.by, x.supported), (2, CitedBy::Shirabe, true));
        assert!(
            x.quote_text.starts_with("The board approved a budget"),
            "{x:?}"
        );
        assert_eq!(
            &c.answer[x.sentence.0..x.sentence.1],
            "The board approved 4.2 million euros for the Osaka warehouse [2]."
        );
        assert_eq!(c.unsupported.len(), 1);
        // A citation the model got wrong is taken out, and the right
        // passage cited instead.
        let c = check(
            "The board approved 4.2 million euros for the Osaka warehouse [1].",
            &passages,
        );
        assert_eq!(made_by(&c), [(2, CitedBy::Shirabe, true)]);
        assert_eq!(c.unverified, [1]);
        assert!(c.unsupported.is_empty());
        assert!(c.answer.ends_with("warehouse [2]."), "{}", c.answer);
    }

    /// Each citation's passage, maker and support.
    fn made_by(c: &Checked) -> Vec<(usize, CitedBy, bool)> {
        c.citations
            .iter()
            .map(|x| (x.n, x.by, x.supported))
            .collect()
    }

    #[test]
    fn a_citation_no_sentence_backs_gives_way_to_the_precise_one() {
        let passages = vec![
            passage(1, "The board met in Osaka. The warehouse was discussed at length. Euros were mentioned."),
            passage(2, "The board approved 4.2 million euros for the Osaka warehouse."),
        ];
        let c = check(
            "The board approved 4.2 million euros for the Osaka warehouse [1].",
            &passages,
        );
        // Passage 1 holds the words, but no sentence of it the claim: its
        // citation gives way to passage 2's precise quote.
        assert_eq!(made_by(&c), [(2, CitedBy::Shirabe, true)]);
        assert_eq!(c.unverified, [1]);
        assert!(c.citations[0].quote_support >= QUOTE_SUPPORT);
        // A precise model citation is left alone.
        let c = check(
            "The board approved 4.2 million euros for the Osaka warehouse [2].",
            &passages,
        );
        assert_eq!(c.citations.len(), 1);
    }

    #[test]
    fn a_quote_holding_part_of_the_claim_gains_one_holding_all_of_it() {
        // The real case (zxjafont's manual): the model cites the overview,
        // which names one of the two packages; the list on the next page
        // names both. The pairs that glue the Japanese words together
        // ("ジと", "ジを", "を依") are not what a quote must hold, or the
        // overview would hold enough of the claim with them.
        let passages = vec![
            passage(
                1,
                "XeLaTeX では fontspec パッケージを用いることでフォント指定が可能である。",
            ),
            passage(
                2,
                "• エンジン： XeTeX\n• 依存パッケージ：\n– fontspec パッケージ\n– etoolbox パッケージ",
            ),
        ];
        let c = check_answer(
            "zxjafont パッケージが依存しているパッケージは何ですか？",
            "zxjafont パッケージは fontspec パッケージと etoolbox パッケージを依存している。[1]",
            &passages,
            None,
        )
        .unwrap();
        assert_eq!(
            made_by(&c),
            [(1, CitedBy::Model, true), (2, CitedBy::Shirabe, true)]
        );
        assert!(c.citations[1].quote_text.contains("etoolbox"));
        // A quote that holds the whole claim gains nothing.
        let c = check_answer(
            "zxjafont パッケージが依存しているパッケージは何ですか？",
            "zxjafont パッケージは fontspec パッケージと etoolbox パッケージを依存している。[2]",
            &passages,
            None,
        )
        .unwrap();
        assert_eq!(made_by(&c), [(2, CitedBy::Model, true)]);
    }

    #[test]
    fn quotes_end_at_the_full_width_stops_of_technical_japanese() {
        // jlreq's manual lists its options one per line, each sentence
        // ended by "．": the quote is the sentence that states the value,
        // not a run of options (nor taken for a heading for being short).
        let text = "•fontsize=<寸法;Q,H>：欧文フォントサイズ．デフォルトは 10pt．\n\
                    •jafontsize=<寸法;Q,H>：和文フォントサイズ．\n\
                    •jafontscale=<実数値>：欧文フォントと和文フォントの比（和文/ 欧文）．\n\
                    •baselineskip=<寸法;Q,H,zw,zh>：行送り．デフォルトは jafontsize の 1.7 倍．\n\
                    •linegap=<寸法;Q,H,zw,zh>：行間．";
        let c = check_answer(
            "jlreq の行送り（baselineskip）のデフォルト値はいくつですか？",
            "jlreq の行送り（baselineskip）のデフォルト値は jafontsize の 1.7 倍です。[1]",
            &[passage(1, text)],
            None,
        )
        .unwrap();
        assert_eq!(made_by(&c), [(1, CitedBy::Model, true)]);
        assert_eq!(
            c.citations[0].quote_text,
            "デフォルトは jafontsize の 1.7 倍．"
        );
    }

    #[test]
    fn meta_sentences_and_refusals_are_told_apart_from_claims() {
        let passages = vec![passage(1, "The board approved the budget.")];
        let c = check(
            "This can be found in the passage [1]. The board approved the budget [1].",
            &passages,
        );
        assert_eq!(c.meta.len(), 1);
        assert!(c.answer[c.meta[0].0..c.meta[0].1].starts_with("This can be found"));
        assert_eq!(c.citations.len(), 1);
        assert!(!c.refused);
        for refusal in [
            "The documents do not contain an answer to this question.",
            "資料には記載がありません。",
            "资料中没有提到这个问题。",
        ] {
            let c = check(refusal, &passages);
            assert!(c.refused, "{refusal}");
            assert!(c.unsupported.is_empty() && c.citations.is_empty(), "{c:?}");
        }
    }

    #[test]
    fn quotes_name_their_own_page_not_the_passage_range() {
        let mut p = passage(
            1,
            "Title line\nFirst page text about rent.\n\nSecond page says the budget was approved.",
        );
        p.page_start = 4;
        p.page_end = 5;
        let second = p.text.find("Second").unwrap();
        p.page_map = vec![
            crate::prompt::PageAt {
                ocr: false,
                at: 0,
                page: 4,
                label: Some("iv".into()),
                page_char: 10,
            },
            crate::prompt::PageAt {
                ocr: false,
                at: second,
                page: 5,
                label: Some("v".into()),
                page_char: 0,
            },
        ];
        let c = check("The budget was approved [1].", &[p]);
        let x = &c.citations[0];
        assert_eq!(x.located.page, 5);
        assert_eq!(x.located.page_label.as_deref(), Some("v"));
        assert_eq!(
            x.located.page_chars,
            (
                0,
                "Second page says the budget was approved.".chars().count()
            )
        );
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
