//! Decode attention's kernels at AVX2's width (with FMA and F16C): dot
//! products, two-row scores and weighted sums for every cache type.

use std::arch::x86_64::*;

use half::{bf16, f16};

#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

dot4!(
    dot4_f32,
    f32,
    "avx2,fma",
    8,
    [
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps
    ],
    hsum,
    |p| _mm256_loadu_ps(p)
);
dot4!(
    dot4_f16,
    f16,
    "avx2,fma,f16c",
    8,
    [
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps
    ],
    hsum,
    |p| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
);

/// Weighted sums of rows: 64 output lanes stay in registers while every
/// row is added, instead of a load and store of `acc` per row.
macro_rules! pv {
    ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr) => {
        /// # Safety
        /// The CPU must support the enabled features.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(acc: &mut [f32], p: &[f32], rows: &[$t]) {
            let d = acc.len();
            assert!(d.is_multiple_of(64) && rows.len() >= p.len() * d);
            let rp = rows.as_ptr();
            for c in (0..d).step_by(64) {
                let ap = acc.as_mut_ptr().add(c);
                let mut a = [_mm256_setzero_ps(); 8];
                for (l, al) in a.iter_mut().enumerate() {
                    *al = _mm256_loadu_ps(ap.add(8 * l));
                }
                for (j, &pj) in p.iter().enumerate() {
                    let w = _mm256_set1_ps(pj);
                    let base = rp.add(j * d + c);
                    for (l, al) in a.iter_mut().enumerate() {
                        let $p = base.add(8 * l);
                        *al = _mm256_fmadd_ps(w, $load, *al);
                    }
                }
                for (l, al) in a.iter().enumerate() {
                    _mm256_storeu_ps(ap.add(8 * l), *al);
                }
            }
        }
    };
}

pv!(pv_f32, f32, "avx2,fma", |p| _mm256_loadu_ps(p));
pv!(pv_bf16, bf16, "avx2,fma", |p| _mm256_castsi256_ps(
    _mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
        16
    )
));
pv!(pv_f16, f16, "avx2,fma,f16c", |p| _mm256_cvtph_ps(
    _mm_loadu_si128(p as *const __m128i)
));

/// bf16 rows against an `x` whose blocks of 16 are split into evens and
/// odds (see `Elem::prepare` for bf16): each 32-byte load holds 16 bf16,
/// a shift gives the even ones as f32 and a mask the odd ones.
///
/// # Safety
/// The CPU must support AVX2 and FMA; every row must be at least as
/// long as `x`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot4_bf16_pairs(x: &[f32], rows: [&[bf16]; 4]) -> [f32; 4] {
    let hint = crate::models::kernels::cache_hint();
    let k = x.len();
    assert!(rows.iter().all(|r| r.len() >= k));
    let xp = x.as_ptr();
    let p = rows.map(|r| r.as_ptr());
    let hi = _mm256_set1_epi32(0xffff_0000u32 as i32);
    let mut a = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i + 32 <= k {
        let xe = _mm256_loadu_ps(xp.add(i));
        let xo = _mm256_loadu_ps(xp.add(i + 8));
        let xe2 = _mm256_loadu_ps(xp.add(i + 16));
        let xo2 = _mm256_loadu_ps(xp.add(i + 24));
        for r in 0..4 {
            // The next group of four rows (see `dot4!`).
            crate::models::kernels::prefetch(
                hint,
                (p[r].wrapping_add(i) as *const i8)
                    .wrapping_add(crate::models::kernels::PREFETCH_AHEAD),
            );
            let w = _mm256_loadu_si256(p[r].add(i) as *const __m256i);
            let w2 = _mm256_loadu_si256(p[r].add(i + 16) as *const __m256i);
            let even = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
            let odd = _mm256_castsi256_ps(_mm256_and_si256(w, hi));
            a[2 * r] = _mm256_fmadd_ps(xe, even, a[2 * r]);
            a[2 * r + 1] = _mm256_fmadd_ps(xo, odd, a[2 * r + 1]);
            let even = _mm256_castsi256_ps(_mm256_slli_epi32(w2, 16));
            let odd = _mm256_castsi256_ps(_mm256_and_si256(w2, hi));
            a[2 * r] = _mm256_fmadd_ps(xe2, even, a[2 * r]);
            a[2 * r + 1] = _mm256_fmadd_ps(xo2, odd, a[2 * r + 1]);
        }
        i += 32;
    }
    while i + 16 <= k {
        let xe = _mm256_loadu_ps(xp.add(i));
        let xo = _mm256_loadu_ps(xp.add(i + 8));
        for r in 0..4 {
            let w = _mm256_loadu_si256(p[r].add(i) as *const __m256i);
            let even = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
            let odd = _mm256_castsi256_ps(_mm256_and_si256(w, hi));
            a[2 * r] = _mm256_fmadd_ps(xe, even, a[2 * r]);
            a[2 * r + 1] = _mm256_fmadd_ps(xo, odd, a[2 * r + 1]);
        }
        i += 16;
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        out[r] = hsum(_mm256_add_ps(a[2 * r], a[2 * r + 1]));
        // The tail was left in order by `prepare`.
        for j in i..k {
            out[r] += x[j] * crate::models::kernels::Elem::to_f32(rows[r][j]);
        }
    }
    out
}

/// The lane sums of four registers, as one 128-bit register.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sum4(v: [__m256; 4]) -> __m128 {
    // [v0 lo, v1 lo, v2 lo, v3 lo | v0 hi, v1 hi, v2 hi, v3 hi], each
    // a sum of four lanes; the two halves added give the four sums.
    let t = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1))
}

/// Attention's scores in decode for two query rows (the two heads that
/// share a key head) in one pass over the keys, at AVX2's width: four
/// keys at a time, each step of 16 elements widened once (`$load` gives
/// its two halves in the order `Elem::prepare` left the queries) and
/// multiplied into both rows; one accumulator per key and row, one
/// `hadd` tree per row for four keys. With `$scaled` (int8 caches) each
/// widened half is multiplied by its block's scale.
macro_rules! scores2 {
    ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr, $scaled:literal) => {
        /// # Safety
        /// The CPU must support the enabled features. With `$scaled`,
        /// `scales` holds each key's `KV_BLOCK` scales (else ignored).
        #[target_feature(enable = $features)]
        pub unsafe fn $name(
            q: [&[f32]; 2],
            keys: &[$t],
            scales: &[f32],
            d: usize,
            out: [&mut [f32]; 2],
        ) {
            let hint = crate::models::kernels::cache_hint();
            let jl = out[0].len();
            assert!(d % 32 == 0 && q[0].len() == d && q[1].len() == d);
            assert!(out[1].len() == jl && crate::models::kernels::holds(keys.len(), jl, d));
            assert!(!$scaled || scales.len() >= jl * d / crate::models::kernels::KV_BLOCK);
            if jl == 0 {
                return;
            }
            // Elements per cache line of keys: one prefetch each.
            let per_line = 64 / std::mem::size_of::<$t>();
            let kp = keys.as_ptr();
            let (q0, q1) = (q[0].as_ptr(), q[1].as_ptr());
            let [o0, o1] = out;
            let mut j = 0;
            while j < jl {
                let idx = [0, 1, 2, 3].map(|o| (j + o).min(jl - 1));
                let rows = idx.map(|r| kp.add(r * d));
                // [key][row]
                let mut a = [[_mm256_setzero_ps(); 2]; 4];
                let mut i = 0;
                while i < d {
                    let x0e = _mm256_loadu_ps(q0.add(i));
                    let x0o = _mm256_loadu_ps(q0.add(i + 8));
                    let x1e = _mm256_loadu_ps(q1.add(i));
                    let x1o = _mm256_loadu_ps(q1.add(i + 8));
                    for (r, ar) in a.iter_mut().enumerate() {
                        if i % per_line == 0 {
                            crate::models::kernels::prefetch(
                                hint,
                                (rows[r].add(i) as *const i8)
                                    .wrapping_add(crate::models::kernels::PREFETCH_AHEAD),
                            );
                        }
                        let $p = rows[r].add(i);
                        let (mut we, mut wo) = $load;
                        if $scaled {
                            let s = _mm256_set1_ps(*scales.get_unchecked(
                                idx[r] * (d / crate::models::kernels::KV_BLOCK)
                                    + i / crate::models::kernels::KV_BLOCK,
                            ));
                            we = _mm256_mul_ps(we, s);
                            wo = _mm256_mul_ps(wo, s);
                        }
                        ar[0] = _mm256_fmadd_ps(x0e, we, ar[0]);
                        ar[1] = _mm256_fmadd_ps(x1e, we, ar[1]);
                        ar[0] = _mm256_fmadd_ps(x0o, wo, ar[0]);
                        ar[1] = _mm256_fmadd_ps(x1o, wo, ar[1]);
                    }
                    i += 16;
                }
                let take = (jl - j).min(4);
                for (h, o) in [o0.as_mut_ptr(), o1.as_mut_ptr()].into_iter().enumerate() {
                    let sums = sum4([a[0][h], a[1][h], a[2][h], a[3][h]]);
                    super::super::store_sums(o.add(j), sums, take);
                }
                j += 4;
            }
        }
    };
}

scores2!(
    scores2_f32,
    f32,
    "avx2,fma",
    |p| (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))),
    false
);
scores2!(
    scores2_f16,
    f16,
    "avx2,fma,f16c",
    |p| (
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
        _mm256_cvtph_ps(_mm_loadu_si128(p.add(8) as *const __m128i))
    ),
    false
);
scores2!(
    scores2_bf16,
    bf16,
    "avx2,fma",
    |p| {
        let w = _mm256_loadu_si256(p as *const __m256i);
        let hi = _mm256_set1_epi32(0xffff_0000u32 as i32);
        (
            _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)),
            _mm256_castsi256_ps(_mm256_and_si256(w, hi)),
        )
    },
    false
);
scores2!(
    scores2_i8,
    i8,
    "avx2,fma",
    |p| {
        let w = _mm_loadu_si128(p as *const __m128i);
        (
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(w)),
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(w, 8))),
        )
    },
    true
);

/// Attention's weighted sum of values in decode, at AVX2's width: two
/// query rows at a time, 32 lanes of each in registers per pass over
/// the tile's values (a 64-byte line of each bf16 row), every value
/// widened once for both rows. With `$scaled` (int8 caches) the two
/// rows' weights are multiplied by the value's block scale instead.
/// Rows of `rows` past the first `jl` (up to `jl` more: the next tile)
/// are prefetched, a slice of each per pass, so that memory keeps
/// streaming while the passes after the first read the tile from L2.
macro_rules! pv_rows {
    ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr, $scaled:literal) => {
        /// # Safety
        /// The CPU must support the enabled features. With `$scaled`,
        /// `scales` holds each row's `KV_BLOCK` scales (else ignored).
        #[target_feature(enable = $features)]
        pub unsafe fn $name(
            acc: &mut [f32],
            d: usize,
            p: &[f32],
            stride: usize,
            jl: usize,
            rows: &[$t],
            scales: &[f32],
        ) {
            let hint = crate::models::kernels::cache_hint();
            assert!(d > 0 && d % 32 == 0);
            let nrows = acc.len() / d;
            assert!(acc.len() == nrows * d && crate::models::kernels::holds(rows.len(), jl, d));
            assert!(crate::models::kernels::strided_holds(
                p.len(),
                nrows,
                stride,
                jl
            ));
            assert!(!$scaled || scales.len() >= jl * d / crate::models::kernels::KV_BLOCK);
            let size = std::mem::size_of::<$t>();
            let row_bytes = d * size;
            let rp = rows.as_ptr();
            let next = (rows.len() / d).saturating_sub(jl).min(jl);
            let mut r = 0;
            while r < nrows {
                let two = nrows - r >= 2;
                let p0 = p.as_ptr().add(r * stride);
                let p1 = if two { p0.add(stride) } else { p0 };
                for c in (0..d).step_by(32) {
                    // This pass's lines of the next tile's rows.
                    let (from, to) = ((c * size).next_multiple_of(64), (c + 32) * size);
                    let a0p = acc.as_mut_ptr().add(r * d + c);
                    let a1p = if two { a0p.add(d) } else { a0p };
                    let mut a0 = [_mm256_setzero_ps(); 4];
                    let mut a1 = [_mm256_setzero_ps(); 4];
                    for l in 0..4 {
                        a0[l] = _mm256_loadu_ps(a0p.add(8 * l));
                        a1[l] = _mm256_loadu_ps(a1p.add(8 * l));
                    }
                    for j in 0..jl {
                        let base = rp.add(j * d);
                        if r == 0 && c == 0 {
                            for line in (0..row_bytes).step_by(64) {
                                crate::models::kernels::prefetch(
                                    hint,
                                    (base as *const i8).wrapping_add(
                                        line + crate::models::kernels::PREFETCH_AHEAD,
                                    ),
                                );
                            }
                        }
                        if r == 0 && j < next {
                            let row = rp.add((jl + j) * d) as *const i8;
                            for line in (from..to).step_by(64) {
                                crate::models::kernels::prefetch(hint, row.add(line));
                            }
                        }
                        let mut w0 = _mm256_set1_ps(*p0.add(j));
                        let mut w1 = _mm256_set1_ps(*p1.add(j));
                        if $scaled {
                            let s = _mm256_set1_ps(*scales.get_unchecked(
                                j * (d / crate::models::kernels::KV_BLOCK) + c / 32,
                            ));
                            w0 = _mm256_mul_ps(w0, s);
                            w1 = _mm256_mul_ps(w1, s);
                        }
                        for l in 0..4 {
                            let $p = base.add(c + 8 * l);
                            let v = $load;
                            a0[l] = _mm256_fmadd_ps(w0, v, a0[l]);
                            a1[l] = _mm256_fmadd_ps(w1, v, a1[l]);
                        }
                    }
                    // With one row left, a1 aliases a0 and is stored first.
                    for l in 0..4 {
                        _mm256_storeu_ps(a1p.add(8 * l), a1[l]);
                        _mm256_storeu_ps(a0p.add(8 * l), a0[l]);
                    }
                }
                r += if two { 2 } else { 1 };
            }
        }
    };
}

pv_rows!(pv_rows_f32, f32, "avx2,fma", |p| _mm256_loadu_ps(p), false);
pv_rows!(
    pv_rows_f16,
    f16,
    "avx2,fma,f16c",
    |p| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
    false
);
pv_rows!(
    pv_rows_bf16,
    bf16,
    "avx2,fma",
    |p| _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
        16
    )),
    false
);
pv_rows!(
    pv_rows_i8,
    i8,
    "avx2,fma",
    |p| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))),
    true
);
