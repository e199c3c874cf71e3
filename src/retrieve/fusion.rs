//! Fusion: one ranking from several.
//!
//! Hybrid search has two rankings of the same chunks: BM25's (unbounded
//! sums) and the dense one's (cosine similarities). Two ways to fuse them:
//!
//! - **Reciprocal rank** ([`Fusion::Rrf`], the default): each list gives an
//!   item `weight / (k + rank)` (rank from 1; [`rrf`]); scores are never
//!   compared, only ranks. `k = 60` is the constant of Cormack, Clarke &
//!   Büttcher (2009). Alone, it loses a list's confident first hit that
//!   the other list lacks: that hit scores `1 / 61`, below any item both
//!   lists put at rank 15, so ten such items push it out of the top ten.
//!   So each list's first hit is then kept near the top ([`first_hits`]):
//!   the first list's no lower than third, the second's no lower than
//!   fourth.
//! - **Scores** ([`Fusion::Scores`]; [`min_max`]): each list's scores are
//!   mapped onto [0, 1] between its last and first candidate, and an
//!   item's fused score is the weighted sum over the lists (0 where it is
//!   absent, which is where the list's last candidate stands).
//!
//! On the labelled Debian set with multilingual-e5-small (docs/benchmarks.md)
//! both are at or above BM25's recall in every language group; scores rank
//! the answer page first more often, but the answers written from them
//! cited the answer page less often than from reciprocal rank's.

use std::collections::HashMap;
use std::hash::Hash;

/// The usual RRF constant.
pub const DEFAULT_K: f32 = 60.0;

/// How hybrid search fuses its rankings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Weighted reciprocal rank, each list's first hit kept near the top.
    #[default]
    Rrf,
    /// Weighted sum of each list's min-max-normalized scores.
    Scores,
}

impl Fusion {
    /// The name the CLI and `--json` use.
    pub fn name(self) -> &'static str {
        match self {
            Fusion::Scores => "scores",
            Fusion::Rrf => "rrf",
        }
    }

    /// Fuses scored `lists` (each with its weight, best first) this way;
    /// `k` is the RRF constant.
    pub fn fuse<T: Clone + Eq + Hash>(self, lists: &[(f32, &[(T, f32)])], k: f32) -> Vec<Fused<T>> {
        match self {
            Fusion::Scores => min_max(lists),
            Fusion::Rrf => {
                let items: Vec<Vec<T>> = lists
                    .iter()
                    .map(|(_, l)| l.iter().map(|x| x.0.clone()).collect())
                    .collect();
                let ranked: Vec<(f32, &[T])> = lists
                    .iter()
                    .zip(&items)
                    .map(|((w, _), l)| (*w, l.as_slice()))
                    .collect();
                first_hits(rrf(&ranked, k))
            }
        }
    }
}

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
/// count at their best rank) by reciprocal rank. The result is sorted by
/// fused score, ties broken by the best rank in any list, then by list
/// order.
pub fn rrf<T: Clone + Eq + Hash>(lists: &[(f32, &[T])], k: f32) -> Vec<Fused<T>> {
    combine(lists.len(), |add| {
        for (li, (weight, list)) in lists.iter().enumerate() {
            for (pos, item) in list.iter().enumerate() {
                let rank = pos + 1;
                add(li, rank, item, weight / (k + rank as f32));
            }
        }
    })
}

/// Moves each list's first hit (rank 1 in list i) up to position `3 + i`
/// (from 1) of `fused` when it sits lower; everything else keeps its
/// order. A first hit moved up keeps its fused score, so the scores of
/// the result need not descend.
pub fn first_hits<T: Clone + Eq + Hash>(mut fused: Vec<Fused<T>>) -> Vec<Fused<T>> {
    let lists = fused.first().map_or(0, |f| f.ranks.len());
    for li in 0..lists {
        let want = 2 + li;
        if let Some(at) = fused.iter().position(|f| f.ranks[li] == Some(1)) {
            if at > want {
                let f = fused.remove(at);
                fused.insert(want, f);
            }
        }
    }
    fused
}

/// Fuses scored `lists` (each with its weight; best first; duplicates
/// count at their best rank) by the weighted sum of min-max-normalized
/// scores: a list's best score maps to 1 and its worst to 0 (all to 1
/// when they are equal). Sorted and tie-broken as [`rrf`].
pub fn min_max<T: Clone + Eq + Hash>(lists: &[(f32, &[(T, f32)])]) -> Vec<Fused<T>> {
    combine(lists.len(), |add| {
        for (li, (weight, list)) in lists.iter().enumerate() {
            let (lo, hi) = list
                .iter()
                .map(|x| x.1)
                .filter(|s| s.is_finite())
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), s| {
                    (lo.min(s), hi.max(s))
                });
            let span = hi - lo;
            for (pos, (item, score)) in list.iter().enumerate() {
                let norm = if !score.is_finite() {
                    0.0
                } else if span > f32::EPSILON * hi.abs().max(1.0) {
                    (score - lo) / span
                } else {
                    1.0
                };
                add(li, pos + 1, item, weight * norm);
            }
        }
    })
}

/// Gathers what `feed` adds (list, rank, item, contribution), the first
/// time an item appears in each list, and sorts the result.
fn combine<'a, T: Clone + Eq + Hash + 'a>(
    lists: usize,
    feed: impl FnOnce(&mut dyn FnMut(usize, usize, &'a T, f32)),
) -> Vec<Fused<T>> {
    let mut at: HashMap<&'a T, usize> = HashMap::new();
    let mut out: Vec<Fused<T>> = Vec::new();
    feed(&mut |li, rank, item, gain| {
        let i = *at.entry(item).or_insert_with(|| {
            out.push(Fused {
                item: item.clone(),
                score: 0.0,
                ranks: vec![None; lists],
            });
            out.len() - 1
        });
        if out[i].ranks[li].is_none() {
            out[i].ranks[li] = Some(rank);
            out[i].score += gain;
        }
    });
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

    /// The distinct items of `a` and `b`, sorted.
    fn union(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut u: Vec<u8> = a.iter().chain(b).copied().collect();
        u.sort();
        u.dedup();
        u
    }

    /// The fused items, sorted.
    fn sorted_items(f: &[Fused<u8>]) -> Vec<u8> {
        let mut v: Vec<u8> = f.iter().map(|x| x.item).collect();
        v.sort();
        v
    }

    /// A ranking with descending scores: `items` best first.
    fn scored<T: Copy>(items: &[T], scores: impl Fn(usize) -> f32) -> Vec<(T, f32)> {
        items
            .iter()
            .enumerate()
            .map(|(i, &x)| (x, scores(i)))
            .collect()
    }

    #[test]
    fn min_max_worked_example() {
        let a = [("x", 10.0), ("y", 5.0), ("z", 0.0)];
        let b = [("y", 0.9), ("w", 0.5)];
        let f = min_max(&[(1.0, &a[..]), (1.0, &b[..])]);
        let items: Vec<&str> = f.iter().map(|f| f.item).collect();
        // y: 0.5 + 1; x: 1; w and z: 0, w first by its better rank.
        assert_eq!(items, ["y", "x", "w", "z"]);
        assert!((f[0].score - 1.5).abs() < 1e-6);
        assert_eq!(f[0].ranks, [Some(2), Some(1)]);
        // Equal scores all count as the best.
        let c = [("p", 2.0), ("q", 2.0)];
        assert!(min_max(&[(0.5, &c[..])]).iter().all(|f| f.score == 0.5));
    }

    #[test]
    fn a_confident_first_hit_the_other_list_lacks_stays_in_the_top_ten() {
        // BM25 is sure of "answer" (far above the rest); the dense list does
        // not have it, and both lists hold the same fifty other chunks in
        // nearly the same order. Plain reciprocal rank pushes "answer"
        // below every chunk both lists rank highly; the first-hit guard
        // and score fusion keep it.
        let others: Vec<u32> = (1..=50).collect();
        let mut lexical = vec![(0u32, 30.0)];
        lexical.extend(scored(&others, |i| 12.0 - 0.1 * i as f32));
        let mut swapped = others.clone();
        swapped.swap(0, 1);
        let dense = scored(&swapped, |i| 0.86 - 0.002 * i as f32);
        let lists = [(1.0, &lexical[..]), (1.0, &dense[..])];
        let place = |f: &[Fused<u32>]| f.iter().position(|x| x.item == 0).unwrap();
        let ranked: Vec<u32> = lexical.iter().map(|x| x.0).collect();
        let others_ranked: Vec<u32> = dense.iter().map(|x| x.0).collect();
        let plain = rrf(&[(1.0, &ranked[..]), (1.0, &others_ranked[..])], DEFAULT_K);
        assert!(place(&plain) >= 10);
        assert_eq!(place(&Fusion::Rrf.fuse(&lists, DEFAULT_K)), 2);
        assert!(place(&Fusion::Scores.fuse(&lists, DEFAULT_K)) < 10);
    }

    #[test]
    fn rrf_through_fuse_is_rrf_with_first_hits_kept() {
        let a = [("x", 3.0), ("y", 2.0)];
        let b = [("y", 0.5), ("z", 0.1)];
        let f = Fusion::Rrf.fuse(&[(1.0, &a[..]), (2.0, &b[..])], 10.0);
        let g = rrf(&[(1.0, &["x", "y"][..]), (2.0, &["y", "z"][..])], 10.0);
        // Short lists: every first hit is in the top three already.
        assert_eq!(f, g);
    }

    #[test]
    fn first_hits_move_up_and_nothing_else_moves() {
        // Ranks (list 0, list 1) of six items, fused order as given.
        let f = |item: u8, r0: Option<usize>, r1: Option<usize>| Fused {
            item,
            score: 0.0,
            ranks: vec![r0, r1],
        };
        let fused = vec![
            f(0, Some(2), Some(2)),
            f(1, Some(3), Some(3)),
            f(2, Some(4), Some(4)),
            f(3, Some(5), Some(5)),
            f(4, None, Some(1)),
            f(5, Some(1), None),
        ];
        let order: Vec<u8> = first_hits(fused).iter().map(|x| x.item).collect();
        // List 0's first hit (5) to third; list 1's (4) to fourth.
        assert_eq!(order, [0, 1, 5, 4, 2, 3]);
    }

    proptest! {
        #[test]
        fn min_max_is_the_union_sorted_with_each_list_in_0_to_weight(
            a in ranking(), b in ranking(), wa in 0.1f32..3.0, wb in 0.1f32..3.0
        ) {
            let sa = scored(&a, |i| 20.0 / (1.0 + i as f32));
            let sb = scored(&b, |i| 0.9 - 0.01 * i as f32);
            let f = min_max(&[(wa, &sa[..]), (wb, &sb[..])]);
            prop_assert_eq!(sorted_items(&f), union(&a, &b));
            for w in f.windows(2) {
                prop_assert!(w[0].score >= w[1].score);
            }
            for x in &f {
                prop_assert!(x.score >= 0.0 && x.score <= wa + wb + 1e-5);
            }
        }

        #[test]
        fn min_max_keeps_one_lists_order_and_agreeing_lists_order(a in ranking()) {
            let sa = scored(&a, |i| 5.0 - 0.25 * i as f32);
            let sd = scored(&a, |i| 0.8 - 0.001 * i as f32);
            let one: Vec<u8> = min_max(&[(1.0, &sa[..])]).iter().map(|x| x.item).collect();
            prop_assert_eq!(&one, &a);
            let both: Vec<u8> = min_max(&[(1.0, &sa[..]), (1.0, &sd[..])])
                .iter()
                .map(|x| x.item)
                .collect();
            prop_assert_eq!(both, a);
        }

        #[test]
        fn output_is_the_union_without_duplicates(a in ranking(), b in ranking()) {
            let f = rrf(&[(1.0, &a[..]), (0.5, &b[..])], DEFAULT_K);
            prop_assert_eq!(sorted_items(&f), union(&a, &b));
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
