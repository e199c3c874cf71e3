//! `shirabe search`, and the retriever every command that searches
//! builds from the settings.

use std::io::{BufWriter, Write};

use anyhow::{Context, Result};
use serde_json::json;

use shirabe::index::ShirabeIndex;
use shirabe::retrieve::{self, SearchRequest};

use shirabe::retrieve::{Live, Mode, Retriever, RetrieverConfig};

use super::args::SearchArgs;
use super::migrate::qdrant_config;
use super::style::Style;
use super::{Settings, Status};

/// The local index; `None` when there is none and the settings name a
/// Qdrant server and collection, which are then searched on their own.
pub(super) fn open_index(s: &Settings) -> Result<Option<ShirabeIndex>> {
    match ShirabeIndex::open(&s.index) {
        Ok(i) => Ok(Some(i)),
        Err(shirabe::Error::NoIndex(_))
            if s.qdrant.url.is_some() && s.qdrant.collection.is_some() =>
        {
            Ok(None)
        }
        Err(shirabe::Error::NoIndex(dir)) if s.qdrant.url.is_some() => anyhow::bail!(
            "no index at {}; to search a Qdrant collection without one, name it with --qdrant-collection",
            dir.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// The retriever for `index` (or, without one, for the Qdrant collection
/// the settings name): the mode asked for (else `s.mode`, else the best
/// the index supports), with the embedder and vector index it needs; why
/// it searches with less goes to stderr as a note.
pub(super) fn retriever(
    s: &Settings,
    index: Option<&ShirabeIndex>,
    asked: Option<Mode>,
) -> Result<Retriever> {
    let mut note = |note: &str| {
        if !s.quiet {
            eprintln!("note: {note}");
        }
    };
    let cfg = retriever_config(s, index, asked);
    Ok(match index {
        Some(index) => Retriever::open(index, &cfg, &mut note)?,
        None => Retriever::open_remote(&cfg, &mut note)?,
    })
}

fn retriever_config(
    s: &Settings,
    index: Option<&ShirabeIndex>,
    asked: Option<Mode>,
) -> RetrieverConfig {
    RetrieverConfig {
        mode: asked.or(s.mode),
        embed_model: s.embed.model.clone(),
        embed_dtype: s.embed.dtype,
        dims: s.embed.dims,
        qdrant: qdrant_config(s, index),
    }
}

/// [`retriever`] over `index`, kept current as writers commit: for the
/// readers that stay open (`serve`, the TUI, `chat`). Notes of later
/// reloads go to stderr too (the TUI's log, once its screen is up).
pub(super) fn live(s: &Settings, index: ShirabeIndex) -> Result<Live> {
    let retriever = retriever(s, Some(&index), None)?;
    let cfg = retriever_config(s, Some(&index), None);
    let quiet = s.quiet;
    let on_note = Box::new(move |note: &str| {
        if !quiet {
            eprintln!("note: {note}");
        }
    });
    Ok(Live::from_parts(index, retriever, cfg, on_note))
}

pub fn run(s: &Settings, a: &SearchArgs) -> Result<Status> {
    let index = open_index(s)?;
    let asked = a.mode;
    let retriever = retriever(s, index.as_ref(), asked)?;
    let mode = retriever.mode;
    let query = a.query.join(" ");
    let limit = a.limit.unwrap_or(s.limit);
    let req = SearchRequest {
        query,
        limit: if a.rerank {
            limit.max(a.rerank_depth)
        } else {
            limit
        },
        doc_glob: a.doc.clone(),
        mode,
        fusion: a.fusion,
        weights: (a.bm25_weight, a.dense_weight),
        rrf_k: a.rrf_k,
        neighbors: a.neighbors,
    };
    let mut hits = retriever.search(index.as_ref(), req.clone())?;
    if a.rerank && !hits.is_empty() {
        let t = std::time::Instant::now();
        let reranker = shirabe::models::rerank::Reranker::load(
            &a.rerank_model,
            s.embed.dtype.fixed().unwrap_or(candle_core::DType::F32),
            &shirabe::models::default_device(),
        )
        .with_context(|| format!("loading the reranker {}", a.rerank_model))?;
        let loaded = t.elapsed().as_secs_f64();
        let depth = a.rerank_depth.min(hits.len());
        let rest = hits.split_off(depth);
        let texts: Vec<&str> = hits.iter().map(|h| h.text.as_str()).collect();
        let scores = reranker.score(&req.query, &texts)?;
        hits = retrieve::apply_rerank(hits, &scores);
        hits.extend(rest);
        hits.truncate(limit);
        if !s.quiet {
            eprintln!(
                "reranked {depth} passages with {} in {:.1}s (model load {loaded:.1}s)",
                a.rerank_model,
                t.elapsed().as_secs_f64() - loaded
            );
        }
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    let st = Style::new(s.color);
    for (i, h) in hits.iter().enumerate() {
        if a.json {
            let v = json!({
                "path": h.path,
                "title": h.title,
                "section": h.section,
                "page": h.page,
                "page_start": h.page_start,
                "page_end": h.page_end,
                "page_label": h.page_label,
                "ocr": h.ocr,
                "chunk_id": h.chunk_id,
                "score": h.score,
                "text": h.text,
                "snippet": h.snippet,
                "highlights": h.highlights,
                "mode": mode.name(),
                "explain": if a.explain { Some(&h.explain) } else { None },
                "neighbors": h.neighbors,
            });
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
            continue;
        }
        let page = shirabe::prompt::ocr_mark(
            shirabe::prompt::page_range(h.page, h.page, h.page_label.as_deref()),
            h.ocr,
        );
        writeln!(
            out,
            "{}. {} {} {}",
            i + 1,
            st.path(&h.path),
            st.page(&page),
            st.dim(&format!("{} {:.3} · {}", mode.name(), h.score, h.chunk_id))
        )?;
        if let Some(sec) = &h.section {
            writeln!(out, "   {}", st.bold(sec))?;
        }
        writeln!(out, "   {}", st.highlight(&h.snippet, &h.highlights))?;
        if a.explain {
            let e = &h.explain;
            let part = |rank: Option<usize>, score: Option<f32>, what: &str| match (rank, score) {
                (Some(r), Some(v)) => format!("{what} #{r} ({v:.3})"),
                _ => format!("{what} –"),
            };
            let mut line = vec![
                part(e.bm25_rank, e.bm25_score, "bm25"),
                part(e.dense_rank, e.similarity, "dense"),
            ];
            if let Some(f) = e.fused {
                line.push(format!("fused {f:.4}"));
            }
            if let Some(r) = e.rerank {
                line.push(format!("rerank {r:.3}"));
            }
            writeln!(out, "   {}", st.dim(&line.join(" · ")))?;
        }
        for n in &h.neighbors {
            let text: String = n.text.split_whitespace().collect::<Vec<_>>().join(" ");
            let short: String = text.chars().take(160).collect();
            writeln!(
                out,
                "   {} {}{}",
                st.dim(&format!("[{:+}] p. {}", n.offset, n.page_start)),
                short,
                if short.len() < text.len() { "…" } else { "" }
            )?;
        }
        if i + 1 < hits.len() {
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(if hits.is_empty() {
        Status::Partial
    } else {
        Status::Success
    })
}

/// Parses "1-3,7" into a page filter.
pub(super) fn page_filter(spec: &str) -> Result<Vec<(u32, u32)>> {
    spec.split(',')
        .map(|part| {
            let part = part.trim();
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: u32 = a
                .trim()
                .parse()
                .with_context(|| format!("--pages: bad page {a:?}"))?;
            let b: u32 = if b.trim().is_empty() {
                u32::MAX
            } else {
                b.trim()
                    .parse()
                    .with_context(|| format!("--pages: bad page {b:?}"))?
            };
            anyhow::ensure!(a >= 1 && a <= b, "--pages: bad range {part:?}");
            Ok((a, b))
        })
        .collect()
}
