//! Reciprocal rank fusion: one ranking from several.
//!
//! Each list gives an item `weight / (k + rank)` (rank from 1); an item's
//! fused score is the sum over the lists it is in. Scores of different
//! retrievers (BM25's unbounded sums, cosine similarities) are never
//! compared, only ranks, which is why RRF needs no calibration. `k = 60` is
//! the constant of Cormack, Clarke & Büttcher (2009).

use std::collections::HashMap;
use std::hash::Hash;

/// The usual RRF constant.
pub const DEFAULT_K: f32 = 60.0;

/// One fused item.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused<T> {
    /// The item.
    pub item: T,
    /// Its fused score.
    pub score: f32,
    /// Its rank (from 1) in each list, `None` where absent.
    pub ranks: Vec<Option<usize>>,
}

/// Fuses ranked `lists` (each with its weight; duplicates within a list
/// count at their best rank). The result is sorted by fused score, ties
/// broken by the best rank in any list, then by list order.
pub fn rrf<T: Clone + Eq + Hash>(lists: &[(f32, &[T])], k: f32) -> Vec<Fused<T>> {
    let mut at: HashMap<&T, usize> = HashMap::new();
    let mut out: Vec<Fused<T>> = Vec::new();
    for (li, (weight, list)) in lists.iter().enumerate() {
        for (pos, item) in list.iter().enumerate() {
            let rank = pos + 1;
            let i = *at.entry(item).or_insert_with(|| {
                out.push(Fused {
                    item: item.clone(),
                    score: 0.0,
                    ranks: vec![None; lists.len()],
                });
                out.len() - 1
            });
            if out[i].ranks[li].is_none() {
                out[i].ranks[li] = Some(rank);
                out[i].score += weight / (k + rank as f32);
            }
        }
    }
    let best = |f: &Fused<T>| {
        f.ranks
            .iter()
            .flatten()
            .min()
            .copied()
            .unwrap_or(usize::MAX)
    };
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by(|&a, &b| {
        out[b]
            .score
            .total_cmp(&out[a].score)
            .then_with(|| best(&out[a]).cmp(&best(&out[b])))
            .then(a.cmp(&b))
    });
    let mut slots: Vec<Option<Fused<T>>> = out.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|i| slots[i].take().expect("each index once"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ranking() -> impl Strategy<Value = Vec<u8>> {
        // Distinct items in random order.
        proptest::collection::hash_set(0u8..40, 0..25)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle()
    }

    #[test]
    fn worked_example() {
        let a = ["x", "y", "z"];
        let b = ["y", "w"];
        let f = rrf(&[(1.0, &a[..]), (1.0, &b[..])], 60.0);
        let items: Vec<&str> = f.iter().map(|f| f.item).collect();
        assert_eq!(items, ["y", "x", "w", "z"]);
        assert!((f[0].score - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-7);
        assert_eq!(f[0].ranks, [Some(2), Some(1)]);
        assert_eq!(f[2].ranks, [None, Some(2)]);
    }

    proptest! {
        #[test]
        fn output_is_the_union_without_duplicates(a in ranking(), b in ranking()) {
            let f = rrf(&[(1.0, &a[..]), (0.5, &b[..])], DEFAULT_K);
            let mut got: Vec<u8> = f.iter().map(|x| x.item).collect();
            let mut want: Vec<u8> = a.iter().chain(&b).copied().collect();
            want.sort();
            want.dedup();
            got.sort();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn scores_follow_the_formula_and_are_sorted(
            a in ranking(), b in ranking(), wa in 0.1f32..3.0, wb in 0.1f32..3.0, k in 1.0f32..100.0
        ) {
            let f = rrf(&[(wa, &a[..]), (wb, &b[..])], k);
            for x in &f {
                let ra = a.iter().position(|&i| i == x.item).map(|p| p + 1);
                let rb = b.iter().position(|&i| i == x.item).map(|p| p + 1);
                prop_assert_eq!(&x.ranks, &vec![ra, rb]);
                let want = ra.map_or(0.0, |r| wa / (k + r as f32)) + rb.map_or(0.0, |r| wb / (k + r as f32));
                prop_assert!((x.score - want).abs() < 1e-6);
            }
            for w in f.windows(2) {
                prop_assert!(w[0].score >= w[1].score);
            }
        }

        #[test]
        fn one_list_keeps_its_order(a in ranking(), w in 0.1f32..5.0) {
            let f = rrf(&[(w, &a[..])], DEFAULT_K);
            let got: Vec<u8> = f.iter().map(|x| x.item).collect();
            prop_assert_eq!(got, a);
        }

        #[test]
        fn agreeing_lists_keep_their_order(a in ranking()) {
            // An item above another in every list is above it after fusion.
            let f = rrf(&[(1.0, &a[..]), (2.0, &a[..])], DEFAULT_K);
            let got: Vec<u8> = f.iter().map(|x| x.item).collect();
            prop_assert_eq!(got, a);
        }

        #[test]
        fn raising_a_weight_never_lowers_that_lists_top_item(a in ranking(), b in ranking()) {
            prop_assume!(!a.is_empty());
            let pos = |w: f32| {
                rrf(&[(w, &a[..]), (1.0, &b[..])], DEFAULT_K)
                    .iter()
                    .position(|x| x.item == a[0])
                    .unwrap()
            };
            prop_assert!(pos(3.0) <= pos(1.0));
        }
    }
}
