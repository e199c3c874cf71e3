//! `shirabe eval QUERIES.jsonl`: retrieval quality on labelled queries, for
//! each search mode side by side.
//!
//! Each line is `{"query": "...", "doc": "NAME or GLOB", "page": N}`
//! (`pages: [..]` for several acceptable pages, no page for "anywhere in
//! the document", `tags: [..]` to break the figures down, e.g. by
//! `paraphrase` or `ja`). A hit is relevant when its file name or path
//! matches `doc` and its page range covers an expected page. With one
//! target per query, Recall@k is the share of queries with a relevant hit
//! in the top k, MRR@10 the mean of 1/rank of the first one, and nDCG@10
//! the mean of 1/log2(rank + 1) (the ideal DCG is 1). An answer set (the
//! lines of `eval --answers`) works too: each answerable question is
//! searched for its answer pages, tagged with its language.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use globset::Glob;
use serde::{Deserialize, Serialize};

use shirabe::retrieve::{Hit, Mode, SearchRequest};

use super::args::EvalArgs;
use super::{Settings, Status};

/// One labelled query.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labelled {
    /// The question.
    pub query: String,
    /// The document that answers it (file name, path or glob).
    pub doc: String,
    /// The page that answers it.
    #[serde(default)]
    pub page: Option<u32>,
    /// Several acceptable pages.
    #[serde(default)]
    pub pages: Vec<u32>,
    /// Groups to report separately.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Labelled {
    fn relevant(&self, matcher: &globset::GlobMatcher, h: &Hit) -> bool {
        let name = std::path::Path::new(&h.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let doc_ok = matcher.is_match(&h.path) || matcher.is_match(&name) || h.path == self.doc;
        let pages: Vec<u32> = self.page.into_iter().chain(self.pages.clone()).collect();
        doc_ok
            && (pages.is_empty()
                || pages
                    .iter()
                    .any(|p| (h.page_start..=h.page_end).contains(p)))
    }
}

/// The figures of one mode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    /// Queries.
    pub queries: usize,
    /// Share with a relevant hit first.
    pub recall_1: f64,
    /// In the top 5.
    pub recall_5: f64,
    /// In the top 10.
    pub recall_10: f64,
    /// Mean reciprocal rank (top 10).
    pub mrr_10: f64,
    /// Mean nDCG@10.
    pub ndcg_10: f64,
}

impl Metrics {
    /// Figures from the rank (from 1) of each query's first relevant hit.
    pub fn from_ranks(ranks: &[Option<usize>]) -> Metrics {
        let n = ranks.len().max(1) as f64;
        let within =
            |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n;
        let top10 = || ranks.iter().flatten().filter(|&&r| r <= 10);
        Metrics {
            queries: ranks.len(),
            recall_1: within(1),
            recall_5: within(5),
            recall_10: within(10),
            mrr_10: top10().map(|&r| 1.0 / r as f64).sum::<f64>() / n,
            ndcg_10: top10().map(|&r| 1.0 / (r as f64 + 1.0).log2()).sum::<f64>() / n,
        }
    }
}

fn read_queries(path: &std::path::Path) -> Result<Vec<Labelled>> {
    let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| path.display().to_string())?;
        if line.trim().is_empty() || line.trim_start().starts_with("//") {
            continue;
        }
        let q: Labelled = match serde_json::from_str(&line) {
            Ok(q) => q,
            // A line of an answer set (`eval --answers`): its question,
            // searched for its answer pages; unanswerable ones are skipped.
            Err(e) => match serde_json::from_str::<shirabe::answer::eval::Case>(&line) {
                Ok(c) if !c.answerable => continue,
                Ok(c) => Labelled {
                    query: c.question,
                    doc: c.doc.map(|d| format!("*{d}")).unwrap_or_default(),
                    page: None,
                    pages: c.pages,
                    tags: c
                        .tags
                        .into_iter()
                        .chain(Some(format!("lang:{}", c.lang)))
                        .collect(),
                },
                Err(_) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "{}:{}: not a labelled query",
                        path.display(),
                        i + 1
                    )))
                }
            },
        };
        out.push(q);
    }
    anyhow::ensure!(!out.is_empty(), "{}: no queries", path.display());
    Ok(out)
}

pub fn run(s: &Settings, a: &EvalArgs) -> Result<Status> {
    if a.answers {
        return super::eval_answers::run(s, a);
    }
    // Without a local index, a named Qdrant collection is evaluated alone.
    let index = super::search::open_index(s)?;
    let queries = read_queries(&a.queries)?;
    let modes: Vec<Mode> = a.modes.clone();
    let asked = if modes.is_empty() {
        None
    } else if modes.iter().any(|m| *m != Mode::Bm25) {
        Some(Mode::Hybrid)
    } else {
        Some(Mode::Bm25)
    };
    let retriever = super::search::retriever(s, index.as_ref(), asked)?;
    let embedder = retriever.embedder();
    let modes = if modes.is_empty() {
        if embedder.is_some() {
            vec![Mode::Bm25, Mode::Dense, Mode::Hybrid]
        } else {
            if !s.quiet {
                eprintln!("note: the index has no usable embeddings: evaluating BM25 only");
            }
            vec![Mode::Bm25]
        }
    } else {
        modes
    };
    if !s.quiet {
        if let Some(r) = retriever.remote_index() {
            eprintln!("searching the Qdrant collection {}", r.qdrant.collection());
        }
    }
    // ranks[mode][query]
    let mut ranks: Vec<Vec<Option<usize>>> = vec![Vec::new(); modes.len()];
    let mut out = std::io::stdout().lock();
    for q in &queries {
        let matcher = Glob::new(&q.doc)
            .with_context(|| format!("bad doc glob {:?}", q.doc))?
            .compile_matcher();
        let vector = match embedder {
            Some(e) => e.embed(&[q.query.as_str()], true, 1)?.pop(),
            None => None,
        };
        for (mi, &mode) in modes.iter().enumerate() {
            let req = SearchRequest {
                mode,
                fusion: a.fusion,
                weights: (a.bm25_weight, a.dense_weight),
                rrf_k: a.rrf_k,
                ..SearchRequest::new(q.query.clone(), 10)
            };
            let hits = match retriever.search_as(index.as_ref(), &req, vector.clone()) {
                Ok(h) => h,
                // A query with no searchable words finds nothing by BM25.
                Err(shirabe::Error::Query(_)) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            let rank = hits
                .iter()
                .position(|h| q.relevant(&matcher, h))
                .map(|p| p + 1);
            if a.verbose && !a.json {
                writeln!(
                    out,
                    "{:7} {:>4}  {}",
                    mode.name(),
                    rank.map_or("-".to_string(), |r| format!("#{r}")),
                    q.query
                )?;
            }
            ranks[mi].push(rank);
        }
    }
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    groups.insert("all".into(), (0..queries.len()).collect());
    for (i, q) in queries.iter().enumerate() {
        for t in &q.tags {
            groups.entry(t.clone()).or_default().push(i);
        }
    }
    let ranks = &ranks;
    let modes_ref = &modes;
    let table: Vec<(String, Mode, Metrics)> = groups
        .iter()
        .flat_map(|(g, idx)| {
            modes_ref.iter().enumerate().map(move |(mi, &m)| {
                (g.clone(), m, {
                    let r: Vec<Option<usize>> = idx.iter().map(|&i| ranks[mi][i]).collect();
                    Metrics::from_ranks(&r)
                })
            })
        })
        .collect::<Vec<_>>();
    if a.json {
        let rows: Vec<serde_json::Value> = table
            .iter()
            .map(|(g, m, x)| {
                let mut v = serde_json::to_value(x).expect("serialisable");
                v["group"] = g.clone().into();
                v["mode"] = m.name().into();
                v
            })
            .collect();
        serde_json::to_writer(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        if a.verbose {
            writeln!(out)?;
        }
        writeln!(
            out,
            "{:12} {:7} {:>7} {:>6} {:>6} {:>6} {:>7} {:>8}",
            "group", "mode", "queries", "R@1", "R@5", "R@10", "MRR@10", "nDCG@10"
        )?;
        for (g, m, x) in &table {
            writeln!(
                out,
                "{:12} {:7} {:>7} {:>6.3} {:>6.3} {:>6.3} {:>7.3} {:>8.3}",
                g,
                m.name(),
                x.queries,
                x.recall_1,
                x.recall_5,
                x.recall_10,
                x.mrr_10,
                x.ndcg_10
            )?;
        }
    }
    out.flush()?;
    Ok(Status::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_ranks() {
        let m = Metrics::from_ranks(&[Some(1), Some(3), None, Some(12)]);
        assert_eq!(m.queries, 4);
        assert_eq!(m.recall_1, 0.25);
        assert_eq!(m.recall_5, 0.5);
        assert_eq!(m.recall_10, 0.5);
        assert!((m.mrr_10 - (1.0 + 1.0 / 3.0) / 4.0).abs() < 1e-12);
        assert!((m.ndcg_10 - (1.0 + 1.0 / 4f64.log2()) / 4.0).abs() < 1e-12);
    }
}
