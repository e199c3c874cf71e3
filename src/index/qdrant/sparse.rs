//! BM25 as Qdrant sparse vectors.
//!
//! A chunk becomes a sparse vector over its analysed terms (the same
//! stems and CJK bigrams the tantivy index holds): each term's index is
//! the first four bytes of its BLAKE3 hash and its value is BM25's
//! term-frequency part, `tf·(k1+1) / (tf + k1·(1 − b + b·dl/avgdl))`,
//! plus the section's and the title's (weighted 0.5 and 0.3, as local
//! search boosts those fields). The collection's IDF modifier supplies
//! the other half: Qdrant multiplies each query term by
//! `ln(1 + (N − n + 0.5)/(n + 0.5))` over the points it holds, so the
//! dot product of a query (one per distinct term) with a chunk is that
//! chunk's BM25 score. `avgdl` is fixed when the collection is made (it
//! is in the collection's metadata): chunks are cut to a token budget, so
//! their mean length barely moves as an archive grows.

use std::collections::{BTreeMap, HashSet};

use crate::index::analyzer::terms;

/// BM25's term-frequency saturation.
pub const K1: f32 = 1.2;
/// BM25's length normalisation.
pub const B: f32 = 0.75;
/// The weight of the section heading's terms.
const SECTION_WEIGHT: f32 = 0.5;
/// The weight of the title's terms.
const TITLE_WEIGHT: f32 = 0.3;

/// The sparse index of a term.
pub fn term_index(term: &str) -> u32 {
    let h = blake3::hash(term.as_bytes());
    u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes"))
}

/// Analysed terms with their counts, and the number of tokens.
fn counts(text: &str) -> (BTreeMap<String, u32>, usize) {
    let mut out = BTreeMap::new();
    let all = terms(text);
    let n = all.len();
    for (t, _, _) in all {
        *out.entry(t).or_insert(0) += 1;
    }
    (out, n)
}

/// `tf·(k1+1) / (tf + k1·norm)`.
fn saturate(tf: u32, norm: f32) -> f32 {
    let tf = tf as f32;
    tf * (K1 + 1.0) / (tf + K1 * norm)
}

/// A chunk as a sparse vector: `(index, weight)` pairs sorted by index,
/// and its distinct terms (for the payload's term list).
pub fn document(
    text: &str,
    section: &str,
    title: &str,
    avgdl: f32,
) -> (Vec<(u32, f32)>, Vec<String>) {
    let (body, dl) = counts(text);
    let norm = 1.0 - B + B * dl as f32 / avgdl.max(1.0);
    let mut weights: BTreeMap<u32, f32> = BTreeMap::new();
    for (t, tf) in &body {
        *weights.entry(term_index(t)).or_default() += saturate(*tf, norm);
    }
    for (field, w) in [(section, SECTION_WEIGHT), (title, TITLE_WEIGHT)] {
        for (t, tf) in counts(field).0 {
            *weights.entry(term_index(&t)).or_default() += w * saturate(tf, 1.0);
        }
    }
    (weights.into_iter().collect(), body.into_keys().collect())
}

/// A query as a sparse vector: weight 1 per distinct term.
pub fn query(words: &[String]) -> Vec<(u32, f32)> {
    let mut seen = HashSet::new();
    let mut out: BTreeMap<u32, f32> = BTreeMap::new();
    for w in words {
        if seen.insert(w.as_str()) {
            *out.entry(term_index(w)).or_default() += 1.0;
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_weighs_its_stems_and_saturates() {
        let (v, terms) = document("budget budget budget approved", "", "", 4.0);
        let budget = term_index("budget");
        let approv = term_index("approv");
        let w = |i| v.iter().find(|(j, _)| *j == i).unwrap().1;
        // dl = avgdl: norm 1; tf 3 → 3·2.2/4.2, tf 1 → 1.
        assert!((w(budget) - 3.0 * 2.2 / 4.2).abs() < 1e-6);
        assert!((w(approv) - 1.0).abs() < 1e-6);
        assert_eq!(terms, ["approv", "budget"]);
        assert!(v.windows(2).all(|p| p[0].0 < p[1].0), "sorted by index");
    }

    #[test]
    fn longer_chunks_weigh_a_term_less_and_titles_add() {
        let short = document("osaka warehouse", "", "", 10.0).0;
        let long = document(&format!("osaka {}", "filler ".repeat(30)), "", "", 10.0).0;
        let i = term_index("osaka");
        let w = |v: &[(u32, f32)]| v.iter().find(|(j, _)| *j == i).unwrap().1;
        assert!(w(&short) > w(&long));
        let titled = document("osaka warehouse", "", "Osaka", 10.0).0;
        assert!((w(&titled) - w(&short) - TITLE_WEIGHT).abs() < 1e-6);
    }

    #[test]
    fn cjk_text_becomes_bigrams_and_queries_count_each_term_once() {
        let (_, t) = document("予算案を承認", "", "", 10.0);
        assert!(t.contains(&"予算".to_string()), "{t:?}");
        let q = query(&["予算".into(), "予算".into(), "承認".into()]);
        assert_eq!(q.len(), 2);
        assert!(q.iter().all(|(_, w)| *w == 1.0));
    }
}
