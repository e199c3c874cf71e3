//! Tests of the kernels against plain reference products.

use super::attention::{exp_shifted, max_of};
use super::detect::{parse_hints, Cpu};
use super::*;

/// Uniform in `[-1, 1)`, from the crate's generator.
pub(super) fn rng(seed: &mut u64) -> f32 {
    (crate::rng::Rng::step(seed) % 20_000) as f32 / 10_000.0 - 1.0
}

pub(super) fn naive_linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
        }
    }
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `on_pool` runs its closure on a pool worker and returns its value;
/// with pollers, parallel loops inside still finish (none of the
/// pollers blocks the closure's thread), also when nested.
#[test]
fn on_pool_runs_parallel_loops_with_pollers() {
    for spin in [false, true] {
        let (on_worker, sum) = on_pool(spin, || {
            let inner: u64 = on_pool(spin, || (0..10_000u64).into_par_iter().sum());
            let outer: u64 = (0..100_000u64).into_par_iter().map(|v| v % 7).sum();
            (rayon::current_thread_index().is_some(), inner + outer)
        });
        assert!(on_worker);
        assert_eq!(
            sum,
            49_995_000 + (0..100_000u64).map(|v| v % 7).sum::<u64>()
        );
    }
    // A panic inside unwinds out (the pollers stop; before they were
    // told to on unwinding too, this hung), and the pool works on.
    let caught = std::panic::catch_unwind(|| on_pool(true, || -> u32 { panic!("inside") }));
    assert!(caught.is_err());
    assert_eq!((0..1000u64).into_par_iter().sum::<u64>(), 499_500);
}

#[test]
fn linear_matches_naive_for_all_dtypes_and_shapes() {
    let mut s = 7u64;
    for &(m, k, n) in &[
        (1, 37, 5),
        (1, 64, 130),
        (3, 128, 67),
        (4, 16, 4),
        (5, 40, 300),
        (9, 1, 3),
        (13, 67, 33),
        (30, 64, 64),
        (45, 96, 70),
        (70, 128, 40),
        (33, 320, 40),
        // Whole 32-row blocks and panels over three k spans: the tiles
        // store straight into the outputs.
        (64, 576, 64),
    ] {
        let x: Vec<f32> = (0..m * k).map(|_| rng(&mut s)).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng(&mut s)).collect();
        let want = naive_linear(&x, m, k, &w, n);
        assert!(
            max_diff(&linear(&x, m, k, &w, n), &want) < 1e-4,
            "f32 {m}x{k}x{n}"
        );
        // Rounded weights, compared with the naive product of the same rounded values.
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let wbf: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
        let want = naive_linear(&x, m, k, &wbf, n);
        // With AVX512-BF16, the products round activations to bf16.
        #[cfg(target_arch = "x86_64")]
        let want = if has_avx512bf16() {
            let xr: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
            naive_linear(&xr, m, k, &wbf, n)
        } else {
            want
        };
        let got = linear(&x, m, k, &wb, n);
        assert!(max_diff(&got, &want) < 1e-4, "bf16 {m}x{k}x{n}");
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let whf: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
        let want = naive_linear(&x, m, k, &whf, n);
        assert!(
            max_diff(&linear(&x, m, k, &wh, n), &want) < 1e-4,
            "f16 {m}x{k}x{n}"
        );
    }
}

/// Every bf16 dot-product path this CPU can run, not only the one
/// `dot4` picks: portable, AVX2 (blocks of 16), AVX-512 (blocks of 32).
#[test]
fn bf16_dot_paths_agree() {
    let mut s = 3u64;
    for k in [5usize, 16, 47, 64, 100, 1024] {
        let x: Vec<f32> = (0..k).map(|_| rng(&mut s)).collect();
        let rows: Vec<Vec<bf16>> = (0..4)
            .map(|_| (0..k).map(|_| bf16::from_f32(rng(&mut s))).collect())
            .collect();
        let r = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
        let want: Vec<f32> = rows
            .iter()
            .map(|row| x.iter().zip(row).map(|(a, b)| a * b.to_f32()).sum())
            .collect();
        let close = |got: [f32; 4], path: &str| {
            assert!(max_diff(&got, &want) < 1e-4, "{path}, k = {k}");
        };
        close(portable::dot4(&x, r), "portable");
        #[cfg(target_arch = "x86_64")]
        {
            let split = |block: usize| {
                let mut p = x.clone();
                for (dst, src) in p.chunks_exact_mut(block).zip(x.chunks_exact(block)) {
                    for i in 0..block / 2 {
                        dst[i] = src[2 * i];
                        dst[block / 2 + i] = src[2 * i + 1];
                    }
                }
                p
            };
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: features checked just above.
                close(
                    unsafe { x86::avx2::attention::dot4_bf16_pairs(&split(16), r) },
                    "avx2",
                );
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: feature checked just above.
                close(
                    unsafe { x86::avx512::attention::dot4_bf16_pairs(&split(32), r) },
                    "avx512",
                );
            }
        }
    }
}

/// Decode's two-row scores equal each row's dot products with every
/// key, for each cache type, head size and ragged key count.
#[cfg(target_arch = "x86_64")]
#[test]
fn two_row_scores_match_the_dot_products() {
    // `scaled`: an int8 cache, whose keys have a scale per block.
    use x86::Width;
    fn check<K: Elem>(from: fn(f32) -> K, scaled: bool, table: fn(Width) -> Kernels<K>) {
        let mut s = 11u64;
        for d in [32usize, 64, 128] {
            for jl in [1usize, 3, 4, 7, 256] {
                let q: Vec<Vec<f32>> = (0..2)
                    .map(|_| (0..d).map(|_| rng(&mut s)).collect())
                    .collect();
                let keys: Vec<K> = (0..jl * d).map(|_| from(rng(&mut s))).collect();
                let scales: Vec<f32> = if scaled {
                    (0..jl * d / KV_BLOCK).map(|_| rng(&mut s).abs()).collect()
                } else {
                    Vec::new()
                };
                let scale = |i: usize| scales.get(i / KV_BLOCK).copied().unwrap_or(1.0);
                let want: Vec<f32> = q
                    .iter()
                    .flat_map(|qr| {
                        keys.chunks_exact(d).enumerate().map(move |(j, key)| {
                            let ks = |i: usize| scale(j * d + i);
                            qr.iter()
                                .zip(key)
                                .enumerate()
                                .map(|(i, (a, b))| a * b.to_f32() * ks(i))
                                .sum()
                        })
                    })
                    .collect();
                let mut widths = vec![];
                if has_avx2_fma() && has_f16c() {
                    widths.push(Width::Avx2);
                }
                if x86::widest() == Some(Width::Avx512) {
                    widths.push(Width::Avx512);
                }
                for width in widths {
                    let k = table(width);
                    let prepared: Vec<Vec<f32>> = q.iter().map(|qr| (k.prepare)(qr)).collect();
                    let mut got = vec![f32::NAN; 2 * jl];
                    let (a, b) = got.split_at_mut(jl);
                    let two = k.scores2.expect("two-row scores");
                    // SAFETY: the CPU has the width's features (checked).
                    unsafe { two([&prepared[0], &prepared[1]], &keys, &scales, d, [a, b]) };
                    assert!(
                        max_diff(&got, &want) < 1e-4,
                        "{width:?}, d = {d}, keys = {jl}"
                    );
                }
                if scaled {
                    // The portable path for rows left over.
                    let mut one = vec![f32::NAN; jl];
                    portable::scores_scaled(&q[0], &keys, &scales, &mut one);
                    assert!(max_diff(&one, &want[..jl]) < 1e-4, "portable, d = {d}");
                }
            }
        }
    }
    check::<f32>(|x| x, false, x86::kernels::f32);
    check::<bf16>(bf16::from_f32, false, x86::kernels::bf16);
    check::<f16>(f16::from_f32, false, x86::kernels::f16);
    check::<i8>(|x| (x * 8.0) as i8, true, x86::kernels::i8);
    if !has_avx512bf16() {
        return;
    }
    // `vdpbf16ps`: the same products of queries rounded to bf16.
    let mut s = 5u64;
    for (d, jl) in [(64usize, 1usize), (128, 7), (256, 256)] {
        let q: Vec<Vec<f32>> = (0..2)
            .map(|_| (0..d).map(|_| rng(&mut s)).collect())
            .collect();
        let keys: Vec<bf16> = (0..jl * d).map(|_| bf16::from_f32(rng(&mut s))).collect();
        let want: Vec<f32> = q
            .iter()
            .flat_map(|qr| {
                keys.chunks_exact(d).map(move |key| {
                    let round = |x: f32| bf16::from_f32(x).to_f32();
                    qr.iter()
                        .zip(key)
                        .map(|(a, b)| round(*a) * b.to_f32())
                        .sum()
                })
            })
            .collect();
        let mut pairs = vec![0u32; d];
        for (qr, row) in q.iter().zip(pairs.chunks_exact_mut(d / 2)) {
            // SAFETY: AVX512-BF16 checked above.
            unsafe { x86::bf16::to_pairs(qr, row) };
        }
        let mut got = vec![f32::NAN; 2 * jl];
        let (a, b) = got.split_at_mut(jl);
        let (qa, qb) = pairs.split_at(d / 2);
        // SAFETY: AVX512-BF16 checked above.
        unsafe { x86::bf16::scores2([qa, qb], &keys, d, [a, b]) };
        assert!(max_diff(&got, &want) < 1e-4, "bf16 pairs, d = {d}");
    }
}

#[test]
fn guided_tasks_cover_every_item_once_and_shrink() {
    for (items, threads, most) in [(0, 2, 4), (1, 2, 4), (192, 2, 16), (4748, 2, 16), (7, 8, 1)] {
        let s = guided_splits(items, threads, most);
        assert_eq!((s[0], *s.last().unwrap()), (0, items));
        let sizes: Vec<usize> = s.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(sizes.iter().all(|&n| (1..=most).contains(&n)), "{sizes:?}");
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        if items > 0 {
            assert_eq!(sizes.last(), Some(&1), "{sizes:?}");
        }
        // Claimed from several threads, every item is visited once.
        let seen: Vec<std::sync::atomic::AtomicUsize> =
            (0..items).map(|_| Default::default()).collect();
        for_each_guided(&s, |r| {
            for i in r {
                seen[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        assert!(seen
            .iter()
            .all(|n| n.load(std::sync::atomic::Ordering::Relaxed) == 1));
    }
    // 192 panels on two cores: a quarter first, few tasks in all.
    let s = guided_splits(192, 2, 64);
    assert_eq!(s[1], 48);
    assert!(s.len() < 24, "{s:?}");
}

#[test]
fn prefetch_overrides_set_both_hints_or_each() {
    use StreamHint as H;
    assert_eq!(parse_hints(None), (None, None));
    assert_eq!(parse_hints(Some("none")), (Some(H::None), Some(H::None)));
    assert_eq!(parse_hints(Some("nta,t1")), (Some(H::Nta), Some(H::T1)));
    assert_eq!(parse_hints(Some("t0, none")), (Some(H::T0), Some(H::None)));
    // An unknown name keeps the CPU's own choice for that stream.
    assert_eq!(parse_hints(Some("fast,t1")), (None, Some(H::T1)));
    assert_eq!(parse_hints(Some("")), (None, None));
    // Every CPU kind has a hint for both streams.
    for cpu in [Cpu::AmdZen5, Cpu::AmdEarlier, Cpu::Other, Cpu::detect()] {
        assert!(StreamHint::ALL.contains(&cpu.stream_hint()));
        assert!(StreamHint::ALL.contains(&cpu.cache_hint()));
    }
}

#[test]
fn bounds_checks_refuse_overflowing_sizes() {
    assert!(holds(12, 3, 4) && !holds(11, 3, 4));
    assert!(!holds(usize::MAX, 1 << 59, 1 << 6));
    assert!(strided_holds(0, 0, usize::MAX, 5));
    assert!(strided_holds(11, 3, 4, 3) && !strided_holds(10, 3, 4, 3));
    assert!(!strided_holds(64, 2, usize::MAX - (1 << 59) + 1, 1 << 59));
}

/// The AVX2 weighted sums of values (two rows per pass, a lone last
/// row, int8 rows times their block scales, a next tile's rows after
/// the tile's) equal the portable loop.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_weighted_sums_match_the_portable_loop() {
    fn check<K: Elem>(from: fn(f32) -> K, scaled: bool, table: fn(x86::Width) -> Kernels<K>) {
        let mut s = 13u64;
        for d in [32usize, 64, 128] {
            for (nrows, jl) in [(1usize, 1usize), (2, 7), (3, 256), (4, 33)] {
                let stride = jl + 3;
                let p: Vec<f32> = (0..nrows * stride).map(|_| rng(&mut s).abs()).collect();
                // Rows of a next tile after the jl, only prefetched.
                let extra = jl / 2;
                let vals: Vec<K> = (0..(jl + extra) * d).map(|_| from(rng(&mut s))).collect();
                let scales: Vec<f32> = if scaled {
                    (0..jl * d / KV_BLOCK).map(|_| rng(&mut s).abs()).collect()
                } else {
                    Vec::new()
                };
                let start: Vec<f32> = (0..nrows * d).map(|_| rng(&mut s)).collect();
                let mut want = start.clone();
                for (r, a) in want.chunks_exact_mut(d).enumerate() {
                    let pr = &p[r * stride..r * stride + jl];
                    if scaled {
                        portable::pv_scaled(a, pr, &vals[..jl * d], &scales);
                    } else {
                        portable::pv(a, pr, &vals[..jl * d]);
                    }
                }
                let mut got = start.clone();
                let k = table(x86::Width::Avx2);
                // SAFETY: the CPU has AVX2, FMA and F16C (checked below).
                unsafe { (k.pv_rows)(&mut got, d, &p, stride, jl, &vals, &scales) };
                assert!(
                    max_diff(&got, &want) < 1e-4,
                    "d = {d}, rows = {nrows}, keys = {jl}"
                );
            }
        }
    }
    if !(has_avx2_fma() && has_f16c()) {
        return;
    }
    check::<f32>(|x| x, false, x86::kernels::f32);
    check::<bf16>(bf16::from_f32, false, x86::kernels::bf16);
    check::<f16>(f16::from_f32, false, x86::kernels::f16);
    check::<i8>(|x| (x * 8.0) as i8, true, x86::kernels::i8);
}

#[test]
fn silu_mul_matches_the_definition() {
    let width = 37;
    let mut s = 9u64;
    let gu: Vec<f32> = (0..3 * 2 * width).map(|_| rng(&mut s) * 40.0).collect();
    let got = silu_mul(&gu, width);
    for (r, row) in gu.chunks(2 * width).enumerate() {
        for j in 0..width {
            let (x, y) = (row[j] as f64, row[width + j] as f64);
            let want = x / (1.0 + (-x).exp()) * y;
            let g = got[r * width + j] as f64;
            assert!(
                (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{x}: {g} vs {want}"
            );
        }
    }
    // Far tails: no overflow, no NaN.
    let tails = silu_mul(&[-200.0, 200.0, 1.0, 1.0], 2);
    assert_eq!(tails, vec![-0.0, 200.0]);
}

#[test]
fn fast_exp_is_accurate() {
    for i in 0..10_000 {
        let x = -(i as f32) * 0.0087;
        let (a, b) = (fast_exp(x), x.exp());
        assert!((a - b).abs() <= 1e-6 * b + 1e-12, "{x}: {a} vs {b}");
    }
    assert_eq!(fast_exp(0.0), 1.0);
    assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(fast_exp(-100.0), 0.0);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn integer_scores_equal_the_rounded_queries_products() {
    if !x86::vnni::vnni_scores_run(64) {
        return;
    }
    for d in [64, 128, 192, 256, 512] {
        for jl in [1, 3, 4, 7, 33] {
            let mut s = (d * 7 + jl) as u64;
            let mut keys: Vec<i8> = (0..jl * d).map(|_| (rng(&mut s) * 255.0) as i8).collect();
            keys[0] = -128;
            let scales: Vec<f32> = (0..jl * d / 32).map(|_| rng(&mut s).abs() + 0.01).collect();
            let q: Vec<Vec<f32>> = (0..2)
                .map(|_| (0..d).map(|_| rng(&mut s) * 3.0).collect())
                .collect();
            let qi = [
                x86::vnni::QueryI8::new(&q[0]),
                x86::vnni::QueryI8::new(&q[1]),
            ];
            let (mut a, mut b) = (vec![0f32; jl], vec![0f32; jl]);
            assert!(x86::vnni::scores2_vnni(
                [&qi[0], &qi[1]],
                &keys,
                &scales,
                d,
                [&mut a, &mut b]
            ));
            for (h, got) in [&a, &b].into_iter().enumerate() {
                for j in 0..jl {
                    let (mut rounded, mut exact, mut size) = (0f64, 0f64, 0f64);
                    for i in 0..d {
                        let ks = scales[j * d / 32 + i / 32] as f64;
                        let k = keys[j * d + i] as f64 * ks;
                        let qr = qi[h].q[i] as f64 * qi[h].scales[i / 4] as f64;
                        rounded += qr * k;
                        exact += q[h][i] as f64 * k;
                        size += (q[h][i] as f64 * k).abs();
                    }
                    let g = got[j] as f64;
                    assert!(
                        (g - rounded).abs() <= 1e-5 * size + 1e-6,
                        "d {d}, key {j}: {g} vs {rounded}"
                    );
                    // The queries' rounding: within 1% of the products' size.
                    assert!(
                        (g - exact).abs() <= 1e-2 * size,
                        "d {d}, key {j}: {g} vs {exact}"
                    );
                }
            }
        }
    }
}

#[test]
fn softmax_loops_match_scalar_on_every_width() {
    // Lengths around the 8- and 16-lane vectors, with masked scores.
    for n in [0, 1, 7, 8, 9, 15, 16, 17, 33, 100] {
        let mut s = n as u64 + 5;
        let mut xs: Vec<f32> = (0..n).map(|_| rng(&mut s) * 20.0).collect();
        if n > 2 {
            xs[1] = f32::NEG_INFINITY;
        }
        let want_max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(max_of(&xs), want_max, "n = {n}");
        let shift = want_max.max(0.0);
        let want: Vec<f32> = xs.iter().map(|&x| fast_exp(x - shift)).collect();
        let sum = exp_shifted(&mut xs, shift);
        assert!(max_diff(&xs, &want) <= 1e-7, "n = {n}");
        let want_sum: f32 = want.iter().sum();
        assert!(
            (sum - want_sum).abs() <= 1e-5 * want_sum.max(1.0),
            "n = {n}"
        );
    }
}

/// Attention the obvious way: full score rows, softmax, weighted sum.
fn naive_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    valid: &[Vec<bool>],
    s: AttnShape,
    scale: f32,
) -> Vec<f32> {
    let (h, d, rep) = (s.heads, s.dim, s.heads / s.kv_heads);
    let mut out = vec![0f32; s.batch * s.t * h * d];
    for b in 0..s.batch {
        for hh in 0..h {
            let g = hh / rep;
            for i in 0..s.t {
                let me = s.past + i;
                let qr = &q[((b * h + hh) * s.t + i) * d..][..d];
                let krow = |j: usize| &k[((b * s.kv_heads + g) * s.cap + j) * d..][..d];
                let vrow = |j: usize| &v[((b * s.kv_heads + g) * s.cap + j) * d..][..d];
                let allowed: Vec<usize> = (0..=me).filter(|&j| j == me || valid[b][j]).collect();
                let sc: Vec<f32> = allowed
                    .iter()
                    .map(|&j| qr.iter().zip(krow(j)).map(|(a, b)| a * b).sum::<f32>() * scale)
                    .collect();
                let mx = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = sc.iter().map(|x| (x - mx).exp()).collect();
                let z: f32 = e.iter().sum();
                let o = &mut out[((b * s.t + i) * h + hh) * d..][..d];
                for (&j, p) in allowed.iter().zip(&e) {
                    for (o, vv) in o.iter_mut().zip(vrow(j)) {
                        *o += p / z * vv;
                    }
                }
            }
        }
    }
    out
}

#[test]
fn attention_matches_naive_with_padding_cache_and_groups() {
    let mut seed = 11u64;
    // Several tiles of keys, several query blocks, padding, a cache prefix.
    for &(batch, heads, kv_heads, t, past, dim) in &[
        (1, 2, 1, 1, 0, 8),
        (2, 4, 2, 7, 5, 16),
        (1, 16, 8, 70, 600, 32),
        (1, 4, 2, 45, 290, 128),
        (2, 3, 3, 130, 0, 8),
        // Decode: one query row per head over a long cache (dot products),
        // heads of 128 and 64, and an odd number of heads per key head.
        (2, 16, 8, 1, 700, 128),
        (1, 8, 4, 1, 300, 64),
        (1, 3, 1, 1, 40, 64),
        // Decode over few key heads and many keys: each head's keys
        // split between tasks, their partial sums merged.
        (2, 4, 1, 1, 1800, 128),
        (1, 2, 1, 1, 1100, 32),
        // Several query times (rows of heads x times) split and merged.
        (1, 2, 1, 4, 1022, 32),
    ] {
        let keys = past + t;
        let cap = keys + 3;
        let s = AttnShape {
            batch,
            heads,
            kv_heads,
            t,
            dim,
            past,
            keys,
            cap,
        };
        let q: Vec<f32> = (0..batch * heads * t * dim)
            .map(|_| rng(&mut seed) * 3.0)
            .collect();
        let kv_len = batch * kv_heads * cap * dim;
        let k: Vec<f32> = (0..kv_len).map(|_| rng(&mut seed)).collect();
        let v: Vec<f32> = (0..kv_len).map(|_| rng(&mut seed)).collect();
        // Row 1 (if any) starts with padding: over a long cache, more
        // than a split decode task's range of keys.
        let pad = if keys > 1000 { 600 } else { 4 };
        let valid: Vec<Vec<bool>> = (0..batch)
            .map(|b| (0..keys).map(|j| b == 0 || j >= pad).collect())
            .collect();
        let want = naive_attention(&q, &k, &v, &valid, s, 0.3);
        let got = attention(&q, &k, &v, &valid, s, 0.3);
        assert!(
            max_diff(&got, &want) < 1e-5,
            "{s:?}: {}",
            max_diff(&got, &want)
        );
        // bf16 cache against the naive result on the rounded values.
        let kb: Vec<bf16> = k.iter().map(|&x| bf16::from_f32(x)).collect();
        let vb: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
        let kr: Vec<f32> = kb.iter().map(|x| x.to_f32()).collect();
        let vr: Vec<f32> = vb.iter().map(|x| x.to_f32()).collect();
        let want = naive_attention(&q, &kr, &vr, &valid, s, 0.3);
        let got = attention(&q, &kb, &vb, &valid, s, 0.3);
        // With AVX512-BF16 the queries are rounded to bf16 too, and
        // many query rows also round the probabilities (outputs are
        // averages of values in [-1, 1]).
        let rounds = dim % 32 == 0 && {
            #[cfg(target_arch = "x86_64")]
            {
                has_avx512bf16()
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                false
            }
        };
        let tol = if rounds { 2e-2 } else { 1e-5 };
        assert!(
            max_diff(&got, &want) < tol,
            "bf16 {s:?}: {}",
            max_diff(&got, &want)
        );
        // f16 cache likewise (widened exactly on every path).
        let kh: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
        let vh: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        let kr: Vec<f32> = kh.iter().map(|x| x.to_f32()).collect();
        let vr: Vec<f32> = vh.iter().map(|x| x.to_f32()).collect();
        let want = naive_attention(&q, &kr, &vr, &valid, s, 0.3);
        let got = attention(&q, &kh, &vh, &valid, s, 0.3);
        assert!(max_diff(&got, &want) < 1e-5, "f16 {s:?}");
        // int8 cache (blocks of 32, or whole rows of 8 and 16): against
        // the naive result on the dequantized rows.
        let block = kv_block(dim);
        let (mut k8, mut v8) = (vec![0i8; kv_len], vec![0i8; kv_len]);
        let (mut ks, mut vs) = (vec![0f32; kv_len / block], vec![0f32; kv_len / block]);
        quantize_rows(&k, block, &mut k8, &mut ks);
        quantize_rows(&v, block, &mut v8, &mut vs);
        let deq = |q: &[i8], sc: &[f32]| -> Vec<f32> {
            q.iter()
                .enumerate()
                .map(|(i, &x)| f32::from(x) * sc[i / block])
                .collect()
        };
        let (kr, vr) = (deq(&k8, &ks), deq(&v8, &vs));
        assert!(max_diff(&kr, &k) <= 1.0 / 254.0 + 1e-6, "int8 rounding");
        let want = naive_attention(&q, &kr, &vr, &valid, s, 0.3);
        let got = attention_scaled(&q, &k8, &v8, Some((&ks, &vs)), &valid, s, 0.3);
        // Decode with AVX512-VNNI rounds the queries to int8 as well.
        let rounds = {
            #[cfg(target_arch = "x86_64")]
            {
                x86::vnni::vnni_scores_run(dim)
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                false
            }
        };
        let tol = if rounds { 1e-2 } else { 1e-5 };
        assert!(
            max_diff(&got, &want) < tol,
            "int8 {s:?}: {}",
            max_diff(&got, &want)
        );
    }
}

/// Every element type's decode table is chosen once, at this CPU's widest
/// width, and the int8 cache is fast exactly where that table has two-row
/// scores.
#[test]
fn each_element_type_gets_the_widest_table() {
    #[cfg(target_arch = "x86_64")]
    let want = match x86::widest() {
        Some(x86::Width::Avx512) => "avx512",
        Some(x86::Width::Avx2) => "avx2",
        None => "portable",
    };
    #[cfg(not(target_arch = "x86_64"))]
    let want = "portable";
    assert_eq!(f32::kernels().isa, want);
    assert_eq!(bf16::kernels().isa, want);
    assert_eq!(f16::kernels().isa, want);
    assert_eq!(i8::kernels().isa, want);
    assert!(std::ptr::eq(f32::kernels(), f32::kernels()), "chosen once");
    assert!(
        dispatch::panels().isa.starts_with(want),
        "{}",
        dispatch::panels().isa
    );
    assert_eq!(fast_int8_cache(), want != "portable");
}
