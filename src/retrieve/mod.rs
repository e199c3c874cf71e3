//! Retrieval: BM25, dense and hybrid search over the chunk index, with
//! highlighted snippets.
//!
//! **BM25.** Queries are analysed like the indexed text, so English words
//! match their stems and Japanese/Chinese text matches by character
//! bigrams. Free words are OR-ed (BM25 ranks chunks with more of them
//! higher); `"quoted text"` must appear as a phrase.
//!
//! **Dense.** The caller embeds the query (the model is not this module's
//! business) and passes the vector with the store; the store's exact scan
//! returns content hashes, which resolve to live chunks through the tantivy
//! index, so deleted or stale vectors never surface.
//!
//! **Hybrid** fuses the two rankings: by reciprocal rank, each list's first
//! hit kept near the top, or by min-max-normalized scores ([`fusion`]).
//!
//! A snippet is the window of the chunk with the most distinct query terms,
//! and the hit's page is the page that window is on. Neighbour expansion
//! adds the chunks just before and after a hit in its document.
//!
//! Which mode, embedder and vector index a front end searches with is
//! [`Retriever`]'s policy; [`Live`] keeps one current for a reader that
//! stays open while the index is written.

pub mod fusion;
pub mod live;
pub mod remote;
pub mod retriever;

pub use fusion::Fusion;
pub use live::{Live, Snapshot};
pub use retriever::{Dense, Retriever, RetrieverConfig};

use std::collections::{HashMap, HashSet};

use globset::Glob;
use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{DocAddress, Searcher, TantivyDocument, Term};

use crate::index::analyzer::terms;
use crate::index::vectors::VectorStore;
use crate::index::{ShirabeIndex, StoredChunk};
use crate::ingest::chunk::Span;
use crate::{Error, Result};

/// Characters of chunk text shown around the best match.
const SNIPPET_CHARS: usize = 220;

/// How to rank. The same type reads the `--mode` flags and the config's
/// `[search] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Words only.
    Bm25,
    /// Meaning only (embeddings).
    Dense,
    /// Both, fused by reciprocal rank.
    Hybrid,
}

impl Mode {
    /// Parses `bm25`, `dense` or `hybrid`.
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "bm25" => Ok(Mode::Bm25),
            "dense" => Ok(Mode::Dense),
            "hybrid" => Ok(Mode::Hybrid),
            other => Err(Error::Query(format!(
                "mode must be bm25, dense or hybrid, not {other:?}"
            ))),
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Bm25 => "bm25",
            Mode::Dense => "dense",
            Mode::Hybrid => "hybrid",
        }
    }
}

/// What to search for.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The query text (words, and `"phrases"`).
    pub query: String,
    /// How many hits to return.
    pub limit: usize,
    /// Only documents whose path matches this glob.
    pub doc_glob: Option<String>,
    /// How to rank.
    pub mode: Mode,
    /// How hybrid fuses the BM25 and dense lists.
    pub fusion: Fusion,
    /// Weights of the BM25 and dense lists in the fusion.
    pub weights: (f32, f32),
    /// RRF constant (with [`Fusion::Rrf`]).
    pub rrf_k: f32,
    /// Add this many chunks before and after each hit.
    pub neighbors: usize,
}

impl SearchRequest {
    /// A BM25 request with the usual settings.
    pub fn new(query: impl Into<String>, limit: usize) -> SearchRequest {
        SearchRequest {
            query: query.into(),
            limit,
            doc_glob: None,
            mode: Mode::Bm25,
            fusion: Fusion::default(),
            weights: (1.0, 1.0),
            rrf_k: fusion::DEFAULT_K,
            neighbors: 0,
        }
    }
}

/// The query's vector and the store to search with it.
pub struct DenseQuery<'a> {
    /// The store.
    pub store: &'a VectorStore,
    /// The embedded query (unit length).
    pub vector: Vec<f32>,
}

/// How a hit was ranked (`--explain`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Explain {
    /// Rank in the BM25 list (from 1).
    pub bm25_rank: Option<usize>,
    /// BM25 score.
    pub bm25_score: Option<f32>,
    /// Rank in the dense list.
    pub dense_rank: Option<usize>,
    /// Cosine similarity.
    pub similarity: Option<f32>,
    /// Fused RRF score (hybrid only).
    pub fused: Option<f32>,
    /// Reranker probability (with `--rerank`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank: Option<f32>,
}

/// Reorders hits by reranker scores (one per hit, in order; ties keep the
/// retrieval order) and records each score in the hit's [`Explain`].
pub fn apply_rerank(hits: Vec<Hit>, scores: &[f32]) -> Vec<Hit> {
    let mut scored: Vec<(f32, usize, Hit)> = hits
        .into_iter()
        .enumerate()
        .map(|(i, mut h)| {
            let s = scores.get(i).copied().unwrap_or(f32::NEG_INFINITY);
            h.explain.rerank = Some(s);
            (s, i, h)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|x| x.2).collect()
}

/// A chunk next to a hit.
#[derive(Debug, Clone, Serialize)]
pub struct Neighbor {
    /// Chunk id.
    pub chunk_id: String,
    /// Position relative to the hit (-1 = just before).
    pub offset: i64,
    /// First page.
    pub page_start: u32,
    /// Last page.
    pub page_end: u32,
    /// Text.
    pub text: String,
}

/// One ranked passage.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Source path, as given to ingest.
    pub path: String,
    /// Document title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Section heading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    /// First page of the chunk.
    pub page_start: u32,
    /// Last page of the chunk.
    pub page_end: u32,
    /// The page the snippet is on.
    pub page: u32,
    /// Its printed label.
    pub page_label: Option<String>,
    /// True when that page's text was read by OCR.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ocr: bool,
    /// Chunk id.
    pub chunk_id: String,
    /// The ranking score: BM25, similarity or fused, by mode.
    pub score: f32,
    /// The whole chunk text.
    pub text: String,
    /// The best window of the text (newlines as spaces).
    pub snippet: String,
    /// Matched terms in `snippet`, as character ranges.
    pub highlights: Vec<(usize, usize)>,
    /// How it was ranked.
    pub explain: Explain,
    /// Adjacent chunks (with `neighbors`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<Neighbor>,
    /// Where the chunk's text comes from, page by page (for citations at
    /// page precision).
    #[serde(skip)]
    pub spans: Vec<Span>,
}

pub(crate) struct ParsedQuery {
    pub(crate) words: Vec<String>,
    pub(crate) phrases: Vec<Vec<String>>,
}

pub(crate) fn parse(query: &str) -> ParsedQuery {
    let mut words = Vec::new();
    let mut phrases = Vec::new();
    for (i, part) in query.split('"').enumerate() {
        let t: Vec<String> = terms(part).into_iter().map(|t| t.0).collect();
        if i % 2 == 1 && !t.is_empty() {
            phrases.push(t);
        } else {
            words.extend(t);
        }
    }
    ParsedQuery { words, phrases }
}

/// How common each of a question's words is in the index: the evidence
/// for whether the archive can answer it at all (see
/// [`crate::answer::grounding`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TermRarity {
    /// Chunks in the index.
    pub chunks: u64,
    /// Each distinct term of the question (analysed as the index analyses
    /// text, stopwords left out).
    pub terms: Vec<RareTerm>,
}

/// One term of a question and how many chunks hold it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RareTerm {
    /// The analysed term (a stem, a CJK bigram).
    pub term: String,
    /// The question's text it came from.
    pub word: String,
    /// Chunks holding it.
    pub chunks: u64,
}

impl TermRarity {
    /// The inverse document frequency of a term held by `df` chunks.
    pub fn idf(&self, df: u64) -> f32 {
        (1.0 + self.chunks as f32 / (1.0 + df as f32)).ln()
    }
}

/// The rarity of `question`'s terms in `index`.
pub fn term_rarity(index: &ShirabeIndex, question: &str) -> Result<TermRarity> {
    let reader = index.reader()?;
    let searcher = reader.searcher();
    let mut seen = HashSet::new();
    let mut terms_out = Vec::new();
    for (t, from, to) in terms(question) {
        if crate::answer::STOPWORDS.contains(&t.as_str()) || !seen.insert(t.clone()) {
            continue;
        }
        let chunks = searcher.doc_freq(&Term::from_field_text(index.fields.text, &t))?;
        terms_out.push(RareTerm {
            word: question.get(from..to).unwrap_or(&t).to_string(),
            term: t,
            chunks,
        });
    }
    Ok(TermRarity {
        chunks: searcher.num_docs(),
        terms: terms_out,
    })
}

/// The doc keys `--doc GLOB` selects; `None` without a glob.
fn doc_filter(index: &ShirabeIndex, glob: Option<&str>) -> Result<Option<HashSet<String>>> {
    let Some(glob) = glob else { return Ok(None) };
    let docs = index
        .manifest
        .iter()
        .flat_map(|m| m.files.iter())
        .map(|(key, rec)| (key.as_str(), rec.path.as_str()));
    Ok(Some(glob_docs(glob, docs)?))
}

/// The doc keys of `docs` (key, path) whose path, key or file name
/// matches `glob`.
pub(crate) fn glob_docs<'a>(
    glob: &str,
    docs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<HashSet<String>> {
    let matcher = Glob::new(glob)
        .map_err(|e| Error::Query(format!("--doc {glob:?}: {e}")))?
        .compile_matcher();
    Ok(docs
        .filter(|(key, path)| {
            let name = std::path::Path::new(path).file_name().unwrap_or_default();
            matcher.is_match(path) || matcher.is_match(key) || matcher.is_match(name)
        })
        .map(|(key, _)| key.to_string())
        .collect())
}

/// The BM25 ranking, best first.
fn bm25(
    index: &ShirabeIndex,
    searcher: &Searcher,
    parsed: &ParsedQuery,
    docs: Option<&HashSet<String>>,
    depth: usize,
) -> Result<Vec<(DocAddress, f32)>> {
    let f = index.fields;
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let mut seen = HashSet::new();
    for w in &parsed.words {
        if !seen.insert(w.clone()) {
            continue;
        }
        for (field, boost) in [(f.text, 1.0), (f.section, 0.5), (f.title, 0.3)] {
            let q = TermQuery::new(
                Term::from_field_text(field, w),
                IndexRecordOption::WithFreqs,
            );
            clauses.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), boost))));
        }
    }
    for p in &parsed.phrases {
        let q: Box<dyn Query> = if p.len() == 1 {
            Box::new(TermQuery::new(
                Term::from_field_text(f.text, &p[0]),
                IndexRecordOption::WithFreqs,
            ))
        } else {
            Box::new(PhraseQuery::new(
                p.iter().map(|t| Term::from_field_text(f.text, t)).collect(),
            ))
        };
        clauses.push((Occur::Must, q));
    }
    if clauses.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(keys) = docs {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let any: Vec<(Occur, Box<dyn Query>)> = keys
            .iter()
            .map(|key| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(f.doc_key, key),
                    IndexRecordOption::Basic,
                ));
                (Occur::Should, q)
            })
            .collect();
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(any))));
    }
    let query = BooleanQuery::new(clauses);
    let depth = depth.min(searcher.num_docs() as usize).max(1);
    Ok(searcher
        .search(&query, &TopDocs::with_limit(depth))?
        .into_iter()
        .map(|(s, a)| (a, s))
        .collect())
}

/// The dense ranking, best first: store rows resolved to live chunks.
fn dense(
    index: &ShirabeIndex,
    searcher: &Searcher,
    store: &VectorStore,
    vector: &[f32],
    docs: Option<&HashSet<String>>,
    depth: usize,
) -> Result<Vec<(DocAddress, f32)>> {
    if let Some(keys) = docs {
        // Only the rows of the selected documents' chunks, scanned exactly
        // (an ANN graph does not know about filters).
        let mut rows: HashSet<u32> = HashSet::new();
        for c in index.live_keys(searcher)? {
            if let Some(r) = store.row_of(&c.key) {
                if keys.contains(&index.doc_key_of(searcher, c.addr)?) {
                    rows.insert(r);
                }
            }
        }
        let allow = |r: u32| rows.contains(&r);
        let hits = store.search(vector, depth.max(1), Some(&allow))?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for h in &hits {
            for addr in index.docs_with_key(searcher, &store.key(h.row))? {
                if keys.contains(&index.doc_key_of(searcher, addr)?) && seen.insert(addr) {
                    out.push((addr, h.score));
                }
            }
        }
        out.truncate(depth);
        return Ok(out);
    }
    let mut k = depth * 2 + 16;
    loop {
        let rows = store.search_ann(vector, k, crate::index::vectors::ANN_EF)?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for r in &rows {
            for addr in index.docs_with_key(searcher, &store.key(r.row))? {
                if seen.insert(addr) {
                    out.push((addr, r.score));
                }
            }
            if out.len() >= depth {
                break;
            }
        }
        // Stale rows (text no longer indexed) can leave too few: look
        // further, up to the whole store.
        if out.len() >= depth || rows.len() < k || k >= store.len() {
            out.truncate(depth);
            return Ok(out);
        }
        k = (k * 4).min(store.len());
    }
}

/// Searches the index. `dense` is required for the dense and hybrid modes.
pub fn search(
    index: &ShirabeIndex,
    req: &SearchRequest,
    dense_query: Option<&DenseQuery<'_>>,
) -> Result<Vec<Hit>> {
    let parsed = parse(&req.query);
    if req.mode == Mode::Bm25 && parsed.words.is_empty() && parsed.phrases.is_empty() {
        return Err(Error::Query(format!(
            "{:?} has no searchable words",
            req.query
        )));
    }
    if req.query.trim().is_empty() {
        return Err(Error::Query("the query is empty".into()));
    }
    let docs = doc_filter(index, req.doc_glob.as_deref())?;
    let reader = index.reader()?;
    let searcher = reader.searcher();
    let limit = req.limit.max(1);
    let depth = if req.mode == Mode::Hybrid {
        (limit * 5).max(50)
    } else {
        limit
    };
    let need_dense = || {
        dense_query.ok_or_else(|| {
            Error::Query(format!(
                "{} search needs embeddings (run `shirabe embed-index`)",
                req.mode.name()
            ))
        })
    };
    let lexical = if req.mode == Mode::Dense {
        Vec::new()
    } else {
        bm25(index, &searcher, &parsed, docs.as_ref(), depth)?
    };
    let semantic = if req.mode == Mode::Bm25 {
        Vec::new()
    } else {
        let q = need_dense()?;
        dense(index, &searcher, q.store, &q.vector, docs.as_ref(), depth)?
    };
    let info = |list: &[(DocAddress, f32)]| -> HashMap<DocAddress, (usize, f32)> {
        list.iter()
            .enumerate()
            .map(|(i, (a, s))| (*a, (i + 1, *s)))
            .collect()
    };
    let (lex, sem) = (info(&lexical), info(&semantic));
    let ranked: Vec<(DocAddress, f32, Option<f32>)> = match req.mode {
        Mode::Bm25 => lexical.iter().map(|(a, s)| (*a, *s, None)).collect(),
        Mode::Dense => semantic.iter().map(|(a, s)| (*a, *s, None)).collect(),
        Mode::Hybrid => req
            .fusion
            .fuse(
                &[(req.weights.0, &lexical), (req.weights.1, &semantic)],
                req.rrf_k,
            )
            .into_iter()
            .map(|f| (f.item, f.score, Some(f.score)))
            .collect(),
    };
    let mut highlight_terms: HashSet<String> = parsed.words.into_iter().collect();
    highlight_terms.extend(parsed.phrases.into_iter().flatten());
    let mut hits = Vec::with_capacity(limit.min(ranked.len()));
    for (addr, score, fused) in ranked.into_iter().take(limit) {
        let explain = Explain {
            bm25_rank: lex.get(&addr).map(|x| x.0),
            bm25_score: lex.get(&addr).map(|x| x.1),
            dense_rank: sem.get(&addr).map(|x| x.0),
            similarity: sem.get(&addr).map(|x| x.1),
            fused,
            rerank: None,
        };
        let mut hit = make_hit(index, &searcher, addr, score, &highlight_terms)?;
        hit.explain = explain;
        if req.neighbors > 0 {
            hit.neighbors = neighbors(index, &searcher, addr, req.neighbors)?;
        }
        hits.push(hit);
    }
    Ok(hits)
}

/// Every chunk of the documents `doc_keys`, in document then chunk order.
pub fn document_chunks(index: &ShirabeIndex, doc_keys: &[String]) -> Result<Vec<Hit>> {
    let reader = index.reader()?;
    let searcher = reader.searcher();
    let mut out = Vec::new();
    for key in doc_keys {
        let q = TermQuery::new(
            Term::from_field_text(index.fields.doc_key, key),
            IndexRecordOption::Basic,
        );
        let mut addrs: Vec<(u64, DocAddress)> = Vec::new();
        for a in searcher.search(&q, &tantivy::collector::DocSetCollector)? {
            let ord = searcher
                .segment_reader(a.segment_ord)
                .fast_fields()
                .u64("ordinal")?
                .first(a.doc_id)
                .unwrap_or(0);
            addrs.push((ord, a));
        }
        addrs.sort();
        for (_, a) in addrs {
            out.push(make_hit(index, &searcher, a, 0.0, &HashSet::new())?);
        }
    }
    Ok(out)
}

/// The doc keys whose path or file name matches `glob`.
pub fn matching_docs(index: &ShirabeIndex, glob: &str) -> Result<Vec<String>> {
    let mut keys: Vec<String> = doc_filter(index, Some(glob))?
        .unwrap_or_default()
        .into_iter()
        .collect();
    keys.sort();
    Ok(keys)
}

fn make_hit(
    index: &ShirabeIndex,
    searcher: &Searcher,
    addr: DocAddress,
    score: f32,
    highlight_terms: &HashSet<String>,
) -> Result<Hit> {
    let doc: TantivyDocument = searcher.doc(addr)?;
    Ok(hit_of(index.stored_chunk(&doc), score, highlight_terms))
}

/// A hit from a chunk's stored fields: the snippet around the query's
/// terms, and the page, label and section where that snippet is.
pub(crate) fn hit_of(c: StoredChunk, score: f32, highlight_terms: &HashSet<String>) -> Hit {
    let spans: Vec<Span> = serde_json::from_str(&c.spans).unwrap_or_default();
    let snip = snippet(&c.text, highlight_terms);
    let span = spans
        .iter()
        .rev()
        .find(|s| s.at <= snip.anchor_char)
        .or(spans.first());
    let sections: Vec<(usize, String)> = serde_json::from_str(&c.sections).unwrap_or_default();
    let section = sections
        .iter()
        .rev()
        .find(|(at, _)| *at <= snip.anchor_char)
        .map(|(_, h)| h.clone())
        .or(c.section);
    Hit {
        path: c.path,
        title: c.title,
        section,
        page_start: c.page_start,
        page_end: c.page_end,
        page: span.map_or(c.page_start, |s| s.page),
        page_label: span.and_then(|s| s.label.clone()),
        ocr: span.is_some_and(|s| s.ocr),
        chunk_id: c.chunk_id,
        score,
        text: c.text,
        snippet: snip.text,
        highlights: snip.highlights,
        explain: Explain::default(),
        neighbors: Vec::new(),
        spans,
    }
}

/// The chunks within `n` positions of `addr` in its document, in order.
fn neighbors(
    index: &ShirabeIndex,
    searcher: &Searcher,
    addr: DocAddress,
    n: usize,
) -> Result<Vec<Neighbor>> {
    let f = index.fields;
    let doc: TantivyDocument = searcher.doc(addr)?;
    let key = doc
        .get_first(f.doc_key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let ord = doc
        .get_first(f.ordinal)
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as i64;
    let q = TermQuery::new(
        Term::from_field_text(f.doc_key, &key),
        IndexRecordOption::Basic,
    );
    let all = searcher.search(&q, &tantivy::collector::DocSetCollector)?;
    let mut out = Vec::new();
    for a in all {
        if a == addr {
            continue;
        }
        let seg = searcher.segment_reader(a.segment_ord);
        let o = seg
            .fast_fields()
            .u64("ordinal")?
            .first(a.doc_id)
            .unwrap_or(0) as i64;
        if (o - ord).unsigned_abs() as usize <= n {
            let d: TantivyDocument = searcher.doc(a)?;
            let num = |field| d.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0) as u32;
            out.push(Neighbor {
                chunk_id: d
                    .get_first(f.chunk_id)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
                offset: o - ord,
                page_start: num(f.page_start),
                page_end: num(f.page_end),
                text: d
                    .get_first(f.text)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
            });
        }
    }
    out.sort_by_key(|n| n.offset);
    Ok(out)
}

/// A window of a chunk's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Snippet {
    /// The text shown (with `…` where it was cut).
    pub text: String,
    /// Matched terms, as character ranges of `text`.
    pub highlights: Vec<(usize, usize)>,
    /// Where the window starts in the chunk, in characters.
    pub start_char: usize,
    /// Where its first match is in the chunk, in characters (the window
    /// start when nothing matched): the hit's page is the page of this.
    pub anchor_char: usize,
}

/// The window of `text` with the most distinct `wanted` terms.
pub fn snippet(text: &str, wanted: &HashSet<String>) -> Snippet {
    let matches: Vec<(String, usize, usize)> = terms(text)
        .into_iter()
        .filter(|(t, _, _)| wanted.contains(t))
        .collect();
    // Work in characters so windows never split one.
    let char_at: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let to_char = |byte: usize| char_at.partition_point(|&b| b < byte);
    let n = char_at.len();
    let mut best = (0usize, 0usize); // (distinct terms, window start char)
    for (i, (_, from, _)) in matches.iter().enumerate() {
        let start = to_char(*from).saturating_sub(40);
        let end = start + SNIPPET_CHARS;
        let distinct: HashSet<&str> = matches[i..]
            .iter()
            .take_while(|(_, _, to)| to_char(*to) <= end)
            .map(|(t, _, _)| t.as_str())
            .collect();
        if distinct.len() > best.0 {
            best = (distinct.len(), start);
        }
    }
    let mut start = best.1.min(n);
    // Start at a word boundary when one is near.
    if start > 0 {
        let chars: Vec<char> = text[char_at[start]..].chars().take(20).collect();
        if let Some(ws) = chars.iter().position(|c| c.is_whitespace()) {
            start += ws + 1;
        }
    }
    let end = (start + SNIPPET_CHARS).min(n);
    let byte = |c: usize| if c >= n { text.len() } else { char_at[c] };
    let (bs, be) = (byte(start), byte(end));
    let mut out = String::new();
    let mut offset = 0usize;
    if start > 0 {
        out.push('…');
        offset = 1;
    }
    out.extend(
        text[bs..be]
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c }),
    );
    if end < n {
        out.push('…');
    }
    let highlights = matches
        .iter()
        .filter(|(_, from, to)| *from >= bs && *to <= be)
        .map(|(_, from, to)| {
            (
                to_char(*from) - start + offset,
                to_char(*to) - start + offset,
            )
        })
        .collect();
    let anchor_char = matches
        .iter()
        .find(|(_, from, _)| *from >= bs)
        .map_or(start, |(_, from, _)| to_char(*from));
    Snippet {
        text: out,
        highlights,
        start_char: start,
        anchor_char,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(words: &[&str]) -> HashSet<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn snippet_centres_on_matches() {
        let text = format!(
            "{} revenue grew twelve percent {}",
            "filler ".repeat(60),
            "tail ".repeat(60)
        );
        let s = snippet(&text, &set(&["revenu", "grew"]));
        assert!(s.text.starts_with('…') && s.text.ends_with('…'));
        let hl: Vec<String> = s
            .highlights
            .iter()
            .map(|&(a, b)| s.text.chars().skip(a).take(b - a).collect())
            .collect();
        assert_eq!(hl, ["revenue", "grew"]);
    }

    #[test]
    fn snippet_of_cjk_text() {
        let text = "本日の会議では予算案を承認した。次回は来月に開催する。";
        let s = snippet(text, &set(&["予算", "算案"]));
        assert_eq!(s.text, text);
        let hl: Vec<String> = s
            .highlights
            .iter()
            .map(|&(a, b)| s.text.chars().skip(a).take(b - a).collect())
            .collect();
        assert_eq!(hl, ["予算", "算案"]);
    }

    #[test]
    fn query_parsing() {
        let p = parse(r#"osaka "budget approved" 会議"#);
        assert_eq!(p.words, ["osaka", "会議"]);
        assert_eq!(
            p.phrases,
            [vec!["budget".to_string(), "approv".to_string()]]
        );
    }
}
