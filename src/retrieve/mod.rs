//! Retrieval: BM25 search over the chunk index, with highlighted snippets.
//!
//! Queries are analysed like the indexed text, so English words match their
//! stems and Japanese/Chinese text matches by character bigrams. Free words
//! are OR-ed (BM25 ranks chunks with more of them higher); `"quoted text"` must
//! appear as a phrase. A snippet is the window of the chunk with the most
//! distinct query terms, and the hit's page is the page that window is on.

use std::collections::HashSet;

use globset::Glob;
use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{TantivyDocument, Term};

use crate::index::analyzer::terms;
use crate::index::ShirabeIndex;
use crate::ingest::chunk::Span;
use crate::{Error, Result};

/// Characters of chunk text shown around the best match.
const SNIPPET_CHARS: usize = 220;

/// What to search for.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The query text (words, and `"phrases"`).
    pub query: String,
    /// How many hits to return.
    pub limit: usize,
    /// Only documents whose path matches this glob.
    pub doc_glob: Option<String>,
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
    /// Chunk id.
    pub chunk_id: String,
    /// BM25 score.
    pub score: f32,
    /// The whole chunk text.
    pub text: String,
    /// The best window of the text (newlines as spaces).
    pub snippet: String,
    /// Matched terms in `snippet`, as character ranges.
    pub highlights: Vec<(usize, usize)>,
}

struct ParsedQuery {
    words: Vec<String>,
    phrases: Vec<Vec<String>>,
}

fn parse(query: &str) -> ParsedQuery {
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

/// Searches the index.
pub fn search(index: &ShirabeIndex, req: &SearchRequest) -> Result<Vec<Hit>> {
    let f = index.fields;
    let parsed = parse(&req.query);
    if parsed.words.is_empty() && parsed.phrases.is_empty() {
        return Err(Error::Query(format!(
            "{:?} has no searchable words",
            req.query
        )));
    }
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
    if let Some(glob) = &req.doc_glob {
        let matcher = Glob::new(glob)
            .map_err(|e| Error::Query(format!("--doc {glob:?}: {e}")))?
            .compile_matcher();
        let keys: Vec<Box<dyn Query>> = index
            .manifest
            .iter()
            .flat_map(|m| m.files.iter())
            .filter(|(key, rec)| {
                let name = std::path::Path::new(&rec.path)
                    .file_name()
                    .unwrap_or_default();
                matcher.is_match(&rec.path) || matcher.is_match(key) || matcher.is_match(name)
            })
            .map(|(key, _)| {
                Box::new(TermQuery::new(
                    Term::from_field_text(f.doc_key, key),
                    IndexRecordOption::Basic,
                )) as Box<dyn Query>
            })
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let any: Vec<(Occur, Box<dyn Query>)> =
            keys.into_iter().map(|q| (Occur::Should, q)).collect();
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(any))));
    }
    let query = BooleanQuery::new(clauses);
    let reader = index.reader()?;
    let searcher = reader.searcher();
    let top = searcher.search(&query, &TopDocs::with_limit(req.limit.max(1)))?;
    let mut highlight_terms: HashSet<String> = parsed.words.into_iter().collect();
    highlight_terms.extend(parsed.phrases.into_iter().flatten());
    let mut hits = Vec::with_capacity(top.len());
    for (score, addr) in top {
        let doc: TantivyDocument = searcher.doc(addr)?;
        let text_of = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let num_of = |field| doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        let text = text_of(f.text).unwrap_or_default();
        let spans: Vec<Span> = text_of(f.spans)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let snip = snippet(&text, &highlight_terms);
        let span = spans
            .iter()
            .rev()
            .find(|s| s.at <= snip.anchor_char)
            .or(spans.first());
        let sections: Vec<(usize, String)> = text_of(f.sections)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let section = sections
            .iter()
            .rev()
            .find(|(at, _)| *at <= snip.anchor_char)
            .map(|(_, h)| h.clone())
            .or_else(|| text_of(f.section));
        hits.push(Hit {
            path: text_of(f.path).unwrap_or_default(),
            title: text_of(f.title),
            section,
            page_start: num_of(f.page_start),
            page_end: num_of(f.page_end),
            page: span.map_or(num_of(f.page_start), |s| s.page),
            page_label: span.and_then(|s| s.label.clone()),
            chunk_id: text_of(f.chunk_id).unwrap_or_default(),
            score,
            text,
            snippet: snip.text,
            highlights: snip.highlights,
        });
    }
    Ok(hits)
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
