//! Decode attention's kernels at AVX-512's width: dot products, two-row
//! scores and weighted sums for every cache type.

use std::arch::x86_64::*;

use half::{bf16, f16};

/// Attention's weighted sum of values for decode: two query rows at a
/// time stay in registers (`L` × 16 lanes each, the whole head), and
/// every value row is read and widened once per pair, in one pass.
macro_rules! pv_rows {
    ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr) => {
        pv_rows!($name, $t, $features, |$p| $load, false);
    };
    ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr, $scaled:literal) => {
        /// # Safety
        /// The CPU must support the enabled features. With `$scaled`,
        /// `scales` holds each row's `KV_BLOCK` scales (else ignored).
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const L: usize>(
            acc: &mut [f32],
            p: &[f32],
            stride: usize,
            jl: usize,
            rows: &[$t],
            scales: &[f32],
        ) {
            let hint = crate::models::kernels::cache_hint();
            let d = 16 * L;
            let nrows = acc.len() / d;
            assert!(acc.len() == nrows * d && crate::models::kernels::holds(rows.len(), jl, d));
            assert!(crate::models::kernels::strided_holds(
                p.len(),
                nrows,
                stride,
                jl
            ));
            assert!(!$scaled || scales.len() >= jl * d / crate::models::kernels::KV_BLOCK);
            let row_bytes = d * std::mem::size_of::<$t>();
            let rp = rows.as_ptr();
            let mut r = 0;
            while r < nrows {
                let two = nrows - r >= 2;
                let a0p = acc.as_mut_ptr().add(r * d);
                let a1p = if two { a0p.add(d) } else { a0p };
                let p0 = p.as_ptr().add(r * stride);
                let p1 = if two { p0.add(stride) } else { p0 };
                let mut a0 = [_mm512_setzero_ps(); L];
                let mut a1 = [_mm512_setzero_ps(); L];
                for l in 0..L {
                    a0[l] = _mm512_loadu_ps(a0p.add(16 * l));
                    a1[l] = _mm512_loadu_ps(a1p.add(16 * l));
                }
                for j in 0..jl {
                    let base = rp.add(j * d);
                    for line in (0..row_bytes).step_by(64) {
                        crate::models::kernels::prefetch(
                            hint,
                            (base as *const i8)
                                .wrapping_add(line + crate::models::kernels::PREFETCH_AHEAD),
                        );
                    }
                    let w0 = _mm512_set1_ps(*p0.add(j));
                    let w1 = _mm512_set1_ps(*p1.add(j));
                    for l in 0..L {
                        let $p = base.add(16 * l);
                        let mut v = $load;
                        if $scaled {
                            // Two registers per block of 32.
                            let s = *scales.get_unchecked(j * (d / 32) + l / 2);
                            v = _mm512_mul_ps(v, _mm512_set1_ps(s));
                        }
                        a0[l] = _mm512_fmadd_ps(w0, v, a0[l]);
                        a1[l] = _mm512_fmadd_ps(w1, v, a1[l]);
                    }
                }
                // With one row left, a1 aliases a0 and is stored first.
                for l in 0..L {
                    _mm512_storeu_ps(a1p.add(16 * l), a1[l]);
                    _mm512_storeu_ps(a0p.add(16 * l), a0[l]);
                }
                r += if two { 2 } else { 1 };
            }
        }
    };
}

/// Attention's scores in decode for two query rows (the two heads that
/// share a key head) in one pass over the keys: four keys at a time,
/// each widened once into 32 f32 (`$load` gives the two halves of a
/// block of 32, in the order `Elem::prepare` left the queries), four
/// accumulators per key, and one shuffle tree adding four keys' lanes.
macro_rules! scores2 {
    ($name:ident, $t:ty, $features:literal, $lines:literal, |$p:ident| $load:expr) => {
        scores2!($name, $t, $features, $lines, |$p| $load, false);
    };
    ($name:ident, $t:ty, $features:literal, $lines:literal, |$p:ident| $load:expr,
     $scaled:literal) => {
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
            let kp = keys.as_ptr();
            let (q0, q1) = (q[0].as_ptr(), q[1].as_ptr());
            let [o0, o1] = out;
            let mut j = 0;
            while j < jl {
                let idx = [0, 1, 2, 3].map(|o| (j + o).min(jl - 1));
                let rows = idx.map(|r| kp.add(r * d));
                // [key][row 0 even, row 0 odd, row 1 even, row 1 odd]
                let mut a = [[_mm512_setzero_ps(); 4]; 4];
                let mut i = 0;
                while i < d {
                    let x0e = _mm512_loadu_ps(q0.add(i));
                    let x0o = _mm512_loadu_ps(q0.add(i + 16));
                    let x1e = _mm512_loadu_ps(q1.add(i));
                    let x1o = _mm512_loadu_ps(q1.add(i + 16));
                    for (r, ar) in a.iter_mut().enumerate() {
                        for line in 0..$lines {
                            crate::models::kernels::prefetch(
                                hint,
                                (rows[r].add(i) as *const i8).wrapping_add(
                                    crate::models::kernels::PREFETCH_AHEAD + 64 * line,
                                ),
                            );
                        }
                        let $p = rows[r].add(i);
                        let (mut we, mut wo) = $load;
                        if $scaled {
                            // One block of 32 per step.
                            let s =
                                _mm512_set1_ps(*scales.get_unchecked(idx[r] * (d / 32) + i / 32));
                            we = _mm512_mul_ps(we, s);
                            wo = _mm512_mul_ps(wo, s);
                        }
                        ar[0] = _mm512_fmadd_ps(x0e, we, ar[0]);
                        ar[1] = _mm512_fmadd_ps(x0o, wo, ar[1]);
                        ar[2] = _mm512_fmadd_ps(x1e, we, ar[2]);
                        ar[3] = _mm512_fmadd_ps(x1o, wo, ar[3]);
                    }
                    i += 32;
                }
                let take = (jl - j).min(4);
                for (h, o) in [o0.as_mut_ptr(), o1.as_mut_ptr()].into_iter().enumerate() {
                    let v = [
                        _mm512_add_ps(a[0][2 * h], a[0][2 * h + 1]),
                        _mm512_add_ps(a[1][2 * h], a[1][2 * h + 1]),
                        _mm512_add_ps(a[2][2 * h], a[2][2 * h + 1]),
                        _mm512_add_ps(a[3][2 * h], a[3][2 * h + 1]),
                    ];
                    super::super::store_sums(o.add(j), sum4(v), take);
                }
                j += 4;
            }
        }
    };
}

/// The lane sums of four registers, as one 128-bit register.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn sum4(v: [__m512; 4]) -> __m128 {
    // Halve each register into 8 lanes: [v0 | v1] and [v2 | v3].
    let t0 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x44>(v[0], v[1]),
        _mm512_shuffle_f32x4::<0xEE>(v[0], v[1]),
    );
    let t1 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x44>(v[2], v[3]),
        _mm512_shuffle_f32x4::<0xEE>(v[2], v[3]),
    );
    // Again, into 4 lanes each: block b holds register b's partial sums.
    let u = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(t0, t1),
        _mm512_shuffle_f32x4::<0xDD>(t0, t1),
    );
    // Within each block: every lane ends up with the block's sum.
    let u = _mm512_add_ps(u, _mm512_permute_ps::<0xB1>(u));
    let u = _mm512_add_ps(u, _mm512_permute_ps::<0x4E>(u));
    let first = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castps512_ps128(_mm512_permutexvar_ps(first, u))
}

scores2!(scores2_f32, f32, "avx512f", 2, |p| (
    _mm512_loadu_ps(p),
    _mm512_loadu_ps(p.add(16))
));
scores2!(scores2_f16, f16, "avx512f,f16c", 1, |p| (
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
    _mm512_cvtph_ps(_mm256_loadu_si256(p.add(16) as *const __m256i))
));
scores2!(scores2_bf16, bf16, "avx512f", 1, |p| {
    let w = _mm512_loadu_si512(p as *const __m512i);
    let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
    (
        _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)),
        _mm512_castsi512_ps(_mm512_and_si512(w, hi)),
    )
});

/// [`dot4!`] at AVX-512's width.
macro_rules! dot4_512 {
    ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr) => {
        dot4!(
            $name,
            $t,
            $features,
            16,
            [
                _mm512_setzero_ps,
                _mm512_loadu_ps,
                _mm512_fmadd_ps,
                _mm512_add_ps
            ],
            _mm512_reduce_add_ps,
            |$p| $load
        );
    };
}

// Attention's scores in decode, for f32 and f16 caches.
dot4_512!(dot4_f32, f32, "avx512f", |p| _mm512_loadu_ps(p));
dot4_512!(dot4_f16, f16, "avx512f,f16c", |p| _mm512_cvtph_ps(
    _mm256_loadu_si256(p as *const __m256i)
));

pv_rows!(pv_rows_f32, f32, "avx512f", |p| _mm512_loadu_ps(p));
pv_rows!(pv_rows_bf16, bf16, "avx512f", |p| _mm512_castsi512_ps(
    _mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i)),
        16
    )
));
// int8 caches: each block of 32 times its scale, in registers.
scores2!(
    scores2_i8,
    i8,
    "avx512f",
    1,
    |p| (
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))),
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
            p.add(16) as *const __m128i
        )))
    ),
    true
);
dot4_512!(dot4_i8, i8, "avx512f", |p| _mm512_cvtepi32_ps(
    _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))
));
pv_rows!(
    pv_rows_i8,
    i8,
    "avx512f",
    |p| _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))),
    true
);
pv_rows!(pv_rows_f16, f16, "avx512f,f16c", |p| _mm512_cvtph_ps(
    _mm256_loadu_si256(p as *const __m256i)
));

/// bf16 rows against an `x` whose blocks of 32 are split into evens and
/// odds: one 64-byte load holds 32 bf16 (a cache line), a shift gives
/// the even ones as f32 and a mask the odd ones.
///
/// # Safety
/// The CPU must support AVX-512F; every row must be at least as long
/// as `x`.
#[target_feature(enable = "avx512f")]
pub unsafe fn dot4_bf16_pairs(x: &[f32], rows: [&[bf16]; 4]) -> [f32; 4] {
    let hint = crate::models::kernels::cache_hint();
    let k = x.len();
    assert!(rows.iter().all(|r| r.len() >= k));
    let xp = x.as_ptr();
    let p = rows.map(|r| r.as_ptr());
    let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
    let mut a = [_mm512_setzero_ps(); 8];
    let mut i = 0;
    while i + 32 <= k {
        let xe = _mm512_loadu_ps(xp.add(i));
        let xo = _mm512_loadu_ps(xp.add(i + 16));
        for r in 0..4 {
            // The next group of four rows, same offset.
            crate::models::kernels::prefetch(
                hint,
                (p[r].wrapping_add(i) as *const i8)
                    .wrapping_add(crate::models::kernels::PREFETCH_AHEAD),
            );
            let w = _mm512_loadu_si512(p[r].add(i) as *const __m512i);
            let even = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
            let odd = _mm512_castsi512_ps(_mm512_and_si512(w, hi));
            a[2 * r] = _mm512_fmadd_ps(xe, even, a[2 * r]);
            a[2 * r + 1] = _mm512_fmadd_ps(xo, odd, a[2 * r + 1]);
        }
        i += 32;
    }
    let mut out = [0f32; 4];
    for r in 0..4 {
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a[2 * r], a[2 * r + 1]));
        // The tail was left in order by `prepare`.
        for j in i..k {
            out[r] += x[j] * crate::models::kernels::Elem::to_f32(rows[r][j]);
        }
    }
    out
}
