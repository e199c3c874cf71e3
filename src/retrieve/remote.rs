//! Search with no local index: the whole hybrid in a Qdrant collection.
//!
//! The query is analysed as the local index would analyse it; its terms
//! become the sparse (BM25) search and its embedding the dense one, both
//! in one batch call, fused as a local index fuses them
//! ([`QdrantIndex::search`]). Hits,
//! the term statistics of the grounding check and whole documents come
//! from the points' payloads, so `search`, `ask` and `eval` need only the
//! collection. A `"quoted phrase"` cannot be a sparse query: its words
//! are searched, and hits whose text lacks the phrase are dropped.

use std::collections::HashSet;

use super::TermRarity;
use super::{glob_docs, hit_of, parse, Explain, Hit, Mode, Neighbor, RareTerm, SearchRequest};
use crate::index::analyzer::terms;
use crate::index::qdrant::{sparse, QdrantIndex, RemoteQuery};
use crate::Result;

/// A Qdrant collection searched on its own.
pub struct Remote {
    /// The collection.
    pub qdrant: QdrantIndex,
}

impl Remote {
    /// The doc keys whose path, key or file name matches `glob`.
    pub fn matching_docs(&self, glob: &str) -> Result<Vec<String>> {
        let docs = self.qdrant.documents()?;
        let mut keys: Vec<String> =
            glob_docs(glob, docs.iter().map(|(k, p)| (k.as_str(), p.as_str())))?
                .into_iter()
                .collect();
        keys.sort();
        Ok(keys)
    }

    /// `req` in `req.mode`, with the query's embedding when the mode needs
    /// one.
    pub fn search(&self, req: &SearchRequest, vector: Option<Vec<f32>>) -> Result<Vec<Hit>> {
        let parsed = parse(&req.query);
        let mut words = parsed.words.clone();
        words.extend(parsed.phrases.iter().flatten().cloned());
        if req.mode == Mode::Bm25 && words.is_empty() {
            return Err(crate::Error::Query(format!(
                "{:?} has no searchable words",
                req.query
            )));
        }
        let doc_keys = match &req.doc_glob {
            Some(g) => Some(self.matching_docs(g)?),
            None => None,
        };
        let limit = req.limit.max(1);
        // Phrases are checked on the hits: ask for more to keep `limit`.
        let fetch = if parsed.phrases.is_empty() {
            limit
        } else {
            limit * 4
        };
        let q = RemoteQuery {
            sparse: if req.mode == Mode::Dense {
                Vec::new()
            } else {
                sparse::query(&words)
            },
            dense: if req.mode == Mode::Bm25 { None } else { vector },
            doc_keys,
            limit: fetch,
            depth: if req.mode == Mode::Hybrid {
                (limit * 5).max(50)
            } else {
                fetch
            },
            fusion: req.fusion,
            weights: req.weights,
            rrf_k: req.rrf_k,
        };
        let mut highlight: HashSet<String> = words.iter().cloned().collect();
        highlight.extend(parsed.phrases.iter().flatten().cloned());
        let mut hits = Vec::new();
        for (rank, f) in self.qdrant.search(&q)?.into_iter().enumerate() {
            if !parsed
                .phrases
                .iter()
                .all(|p| holds_phrase(&f.chunk.text, p))
            {
                continue;
            }
            let (doc_key, ordinal) = (f.chunk.doc_key.clone(), f.chunk.ordinal);
            let mut hit = hit_of(f.chunk, f.score, &highlight);
            hit.explain = match req.mode {
                Mode::Bm25 => Explain {
                    bm25_rank: Some(rank + 1),
                    bm25_score: Some(f.score),
                    ..Explain::default()
                },
                Mode::Dense => Explain {
                    dense_rank: Some(rank + 1),
                    similarity: Some(f.score),
                    ..Explain::default()
                },
                Mode::Hybrid => Explain {
                    bm25_rank: f.lists[0].map(|x| x.0),
                    bm25_score: f.lists[0].map(|x| x.1),
                    dense_rank: f.lists[1].map(|x| x.0),
                    similarity: f.lists[1].map(|x| x.1),
                    fused: Some(f.score),
                    ..Explain::default()
                },
            };
            if req.neighbors > 0 {
                hit.neighbors = self.neighbors(&doc_key, ordinal, req.neighbors)?;
            }
            hits.push(hit);
            if hits.len() == limit {
                break;
            }
        }
        Ok(hits)
    }

    /// The chunks within `n` positions of chunk `ordinal` of `doc_key`.
    fn neighbors(&self, doc_key: &str, ordinal: u64, n: usize) -> Result<Vec<Neighbor>> {
        let chunks = self.qdrant.document_chunks(&[doc_key.to_string()])?;
        Ok(chunks
            .into_iter()
            .filter(|c| c.ordinal != ordinal && c.ordinal.abs_diff(ordinal) as usize <= n)
            .map(|c| Neighbor {
                offset: c.ordinal as i64 - ordinal as i64,
                chunk_id: c.chunk_id,
                page_start: c.page_start,
                page_end: c.page_end,
                text: c.text,
            })
            .collect())
    }

    /// How common each of `question`'s terms is in the collection.
    pub fn term_rarity(&self, question: &str) -> Result<TermRarity> {
        let mut seen = HashSet::new();
        let mut wanted = Vec::new();
        for (t, from, to) in terms(question) {
            if crate::answer::STOPWORDS.contains(&t.as_str()) || !seen.insert(t.clone()) {
                continue;
            }
            wanted.push((t, question.get(from..to).unwrap_or_default().to_string()));
        }
        let names: Vec<String> = wanted.iter().map(|w| w.0.clone()).collect();
        let (chunks, counts) = self.qdrant.term_counts(&names)?;
        Ok(TermRarity {
            chunks,
            terms: wanted
                .into_iter()
                .zip(counts)
                .map(|((term, word), n)| RareTerm {
                    word: if word.is_empty() { term.clone() } else { word },
                    term,
                    chunks: n,
                })
                .collect(),
        })
    }

    /// Every chunk of the documents `doc_keys`, in document then chunk
    /// order.
    pub fn document_chunks(&self, doc_keys: &[String]) -> Result<Vec<Hit>> {
        Ok(self
            .qdrant
            .document_chunks(doc_keys)?
            .into_iter()
            .map(|c| hit_of(c, 0.0, &HashSet::new()))
            .collect())
    }
}

/// Whether `text`'s analysed terms hold `phrase` in a row.
fn holds_phrase(text: &str, phrase: &[String]) -> bool {
    if phrase.is_empty() {
        return true;
    }
    let t: Vec<String> = terms(text).into_iter().map(|x| x.0).collect();
    t.windows(phrase.len()).any(|w| w == phrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_are_checked_on_analysed_terms() {
        let p = parse(r#""budget approved""#).phrases.remove(0);
        assert!(holds_phrase("The Budget was Approved today", &[]));
        assert!(!holds_phrase("The budget was approved", &p));
        assert!(holds_phrase("The BUDGET APPROVED in May", &p));
    }
}
