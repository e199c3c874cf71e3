//! k-quant tiles ([`crate::models::kernels::ktile`]) times Q8_K rows with
//! AVX2, for CPUs without AVX512-VNNI: each 64-byte run of a tile (4
//! inputs of 16 rows) is two 256-bit halves of 8 rows; `vpmaddubsw` then
//! `vpmaddwd` by ones turn a half and 4 broadcast activation bytes into 8
//! int32 sums, what one `vpdpbusd` does for 16 rows. The quants are at
//! most 63 and the activations at most 127 in magnitude, so the 16-bit
//! pair sums never saturate. Two activation rows per pass (sixteen
//! registers hold no more); the rest is the VNNI kernel's arithmetic.

use std::arch::x86_64::*;

use crate::models::kernels::kquant::{Q8K, QK_K};
use crate::models::kernels::ktile::{
    check_lengths, Q4K_MINS, Q4K_QUANTS, Q4K_SCALES, Q4K_TILE, Q5K_HIGH, Q5K_TILE, Q6K_QUANTS,
    Q6K_SCALES, Q6K_TILE, TR,
};

/// Q4_K tiles × 1 to 4 Q8_K rows: `out[i·16 + r]`.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
pub unsafe fn q4k(tiles: &[u8], acts: &[Q8K], out: &mut [f32]) {
    let kb = check_lengths(tiles, Q4K_TILE, acts, out);
    for (a, o) in acts.chunks(2).zip(out.chunks_mut(2 * TR)) {
        match a.len() {
            1 => q4k_m::<1, false>(tiles.as_ptr(), kb, a, o),
            _ => q4k_m::<2, false>(tiles.as_ptr(), kb, a, o),
        }
    }
}

/// Q5_K tiles × 1 to 4 Q8_K rows: `out[i·16 + r]`.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
pub unsafe fn q5k(tiles: &[u8], acts: &[Q8K], out: &mut [f32]) {
    let kb = check_lengths(tiles, Q5K_TILE, acts, out);
    for (a, o) in acts.chunks(2).zip(out.chunks_mut(2 * TR)) {
        match a.len() {
            1 => q4k_m::<1, true>(tiles.as_ptr(), kb, a, o),
            _ => q4k_m::<2, true>(tiles.as_ptr(), kb, a, o),
        }
    }
}

/// Q6_K tiles × 1 to 4 Q8_K rows: `out[i·16 + r]`.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
pub unsafe fn q6k(tiles: &[u8], acts: &[Q8K], out: &mut [f32]) {
    let kb = check_lengths(tiles, Q6K_TILE, acts, out);
    for (a, o) in acts.chunks(2).zip(out.chunks_mut(2 * TR)) {
        match a.len() {
            1 => q6k_m::<1>(tiles.as_ptr(), kb, a, o),
            _ => q6k_m::<2>(tiles.as_ptr(), kb, a, o),
        }
    }
}

/// The 4 activation bytes at `at` of row `a`, in every lane.
#[inline(always)]
unsafe fn bcast(a: &Q8K, at: usize) -> __m256i {
    _mm256_set1_epi32((a.q.as_ptr().add(at) as *const i32).read_unaligned())
}

/// 8 int32 sums of 4 products each: unsigned `w` times signed `a`.
#[inline(always)]
unsafe fn dot4(w: __m256i, a: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
}

/// 8 bytes at `p` widened to 8 int32 lanes (unsigned).
#[inline(always)]
unsafe fn u8x8(p: *const u8) -> __m256i {
    _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

/// 8 bytes at `p` widened to 8 int32 lanes (signed).
#[inline(always)]
unsafe fn i8x8(p: *const u8) -> __m256i {
    _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

/// 16 where bit `mask` of a byte of `bits` is set, else 0.
#[inline(always)]
unsafe fn sixteen_where(bits: __m256i, mask: u8) -> __m256i {
    let m = _mm256_set1_epi8(mask as i8);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bits, m), m);
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

/// Q4_K tiles, or with `FIVE` Q5_K tiles (the fifth bits added as 16).
#[target_feature(enable = "avx2,fma")]
unsafe fn q4k_m<const M: usize, const FIVE: bool>(
    tiles: *const u8,
    kb: usize,
    acts: &[Q8K],
    out: &mut [f32],
) {
    let low = _mm256_set1_epi8(0x0f);
    let stride = if FIVE { Q5K_TILE } else { Q4K_TILE };
    let mut res = [[_mm256_setzero_ps(); 2]; M];
    for b in 0..kb {
        let t = tiles.add(b * stride);
        let at = b * QK_K;
        let mut acc = [[_mm256_setzero_si256(); 2]; M];
        for p in 0..4 {
            let mut s0 = [[_mm256_setzero_si256(); 2]; M];
            let mut s1 = [[_mm256_setzero_si256(); 2]; M];
            for g in 0..8 {
                for h in 0..2 {
                    let run = t.add(Q4K_QUANTS + (p * 8 + g) * 64 + 32 * h);
                    let w = _mm256_loadu_si256(run as *const _);
                    let mut lo = _mm256_and_si256(w, low);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(w), low);
                    if FIVE {
                        let five =
                            _mm256_loadu_si256(t.add(Q5K_HIGH + g * 64 + 32 * h) as *const _);
                        lo = _mm256_add_epi8(lo, sixteen_where(five, 1 << (2 * p)));
                        hi = _mm256_add_epi8(hi, sixteen_where(five, 2 << (2 * p)));
                    }
                    for i in 0..M {
                        let x = at + 64 * p + 4 * g;
                        s0[i][h] = _mm256_add_epi32(s0[i][h], dot4(lo, bcast(&acts[i], x)));
                        s1[i][h] = _mm256_add_epi32(s1[i][h], dot4(hi, bcast(&acts[i], x + 32)));
                    }
                }
            }
            for h in 0..2 {
                let sc0 = u8x8(t.add(Q4K_SCALES + TR * 2 * p + 8 * h));
                let sc1 = u8x8(t.add(Q4K_SCALES + TR * (2 * p + 1) + 8 * h));
                for i in 0..M {
                    let both = _mm256_add_epi32(
                        _mm256_mullo_epi32(s0[i][h], sc0),
                        _mm256_mullo_epi32(s1[i][h], sc1),
                    );
                    acc[i][h] = _mm256_add_epi32(acc[i][h], both);
                }
            }
        }
        for h in 0..2 {
            let mut mins = [_mm256_setzero_si256(); M];
            for j in 0..8 {
                let mn = u8x8(t.add(Q4K_MINS + TR * j + 8 * h));
                for (i, m) in mins.iter_mut().enumerate() {
                    let s = acts[i].sums.as_ptr().add(b * 16 + 2 * j);
                    let pair = *s as i32 + *s.add(1) as i32;
                    *m = _mm256_add_epi32(*m, _mm256_mullo_epi32(mn, _mm256_set1_epi32(pair)));
                }
            }
            let d = _mm256_loadu_ps(t.add(32 * h) as *const f32);
            let dmin = _mm256_loadu_ps(t.add(4 * TR + 32 * h) as *const f32);
            for i in 0..M {
                let v = _mm256_fmsub_ps(
                    d,
                    _mm256_cvtepi32_ps(acc[i][h]),
                    _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(mins[i])),
                );
                let da = _mm256_set1_ps(*acts[i].d.as_ptr().add(b));
                res[i][h] = _mm256_fmadd_ps(da, v, res[i][h]);
            }
        }
    }
    for (i, r) in res.iter().enumerate() {
        for (h, v) in r.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(i * TR + 8 * h), *v);
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q6k_m<const M: usize>(tiles: *const u8, kb: usize, acts: &[Q8K], out: &mut [f32]) {
    let low = _mm256_set1_epi8(0x0f);
    let high2 = _mm256_set1_epi8(0x30);
    let mut res = [[_mm256_setzero_ps(); 2]; M];
    for b in 0..kb {
        let t = tiles.add(b * Q6K_TILE);
        let at = b * QK_K;
        // The quants carry +32: start from −32 × each group's sum, scaled.
        let mut acc = [[_mm256_setzero_si256(); 2]; M];
        for j in 0..16 {
            for (i, a) in acc.iter_mut().enumerate() {
                let s = _mm256_set1_epi32(32 * *acts[i].sums.as_ptr().add(b * 16 + j) as i32);
                for (h, half) in a.iter_mut().enumerate() {
                    let sc = i8x8(t.add(Q6K_SCALES + TR * j + 8 * h));
                    *half = _mm256_sub_epi32(*half, _mm256_mullo_epi32(sc, s));
                }
            }
        }
        for half128 in 0..2 {
            for half in 0..2 {
                for pass in 0..2 {
                    let mut sa = [[_mm256_setzero_si256(); 2]; M];
                    let mut sb = [[_mm256_setzero_si256(); 2]; M];
                    for g in 4 * half..4 * half + 4 {
                        for h in 0..2 {
                            let run = t.add(Q6K_QUANTS + (half128 * 8 + g) * 192 + 32 * h);
                            let a = _mm256_loadu_si256(run as *const _);
                            let c = _mm256_loadu_si256(run.add(64) as *const _);
                            let hb = _mm256_loadu_si256(run.add(128) as *const _);
                            let (qa, qb) = if pass == 0 {
                                (
                                    _mm256_or_si256(
                                        _mm256_and_si256(a, low),
                                        _mm256_and_si256(_mm256_slli_epi16::<4>(hb), high2),
                                    ),
                                    _mm256_or_si256(
                                        _mm256_and_si256(c, low),
                                        _mm256_and_si256(_mm256_slli_epi16::<2>(hb), high2),
                                    ),
                                )
                            } else {
                                (
                                    _mm256_or_si256(
                                        _mm256_and_si256(_mm256_srli_epi16::<4>(a), low),
                                        _mm256_and_si256(hb, high2),
                                    ),
                                    _mm256_or_si256(
                                        _mm256_and_si256(_mm256_srli_epi16::<4>(c), low),
                                        _mm256_and_si256(_mm256_srli_epi16::<2>(hb), high2),
                                    ),
                                )
                            };
                            let x = at + 128 * half128 + 64 * pass + 4 * g;
                            for i in 0..M {
                                sa[i][h] = _mm256_add_epi32(sa[i][h], dot4(qa, bcast(&acts[i], x)));
                                sb[i][h] =
                                    _mm256_add_epi32(sb[i][h], dot4(qb, bcast(&acts[i], x + 32)));
                            }
                        }
                    }
                    // Quarter q's sub-block: 8·half128 + 2q + half.
                    let qa = 2 * pass;
                    for h in 0..2 {
                        let sca =
                            i8x8(t.add(Q6K_SCALES + TR * (8 * half128 + 2 * qa + half) + 8 * h));
                        let scb = i8x8(
                            t.add(Q6K_SCALES + TR * (8 * half128 + 2 * qa + 2 + half) + 8 * h),
                        );
                        for i in 0..M {
                            let both = _mm256_add_epi32(
                                _mm256_mullo_epi32(sa[i][h], sca),
                                _mm256_mullo_epi32(sb[i][h], scb),
                            );
                            acc[i][h] = _mm256_add_epi32(acc[i][h], both);
                        }
                    }
                }
            }
        }
        for h in 0..2 {
            let d = _mm256_loadu_ps(t.add(32 * h) as *const f32);
            for i in 0..M {
                let da = _mm256_mul_ps(d, _mm256_set1_ps(*acts[i].d.as_ptr().add(b)));
                res[i][h] = _mm256_fmadd_ps(da, _mm256_cvtepi32_ps(acc[i][h]), res[i][h]);
            }
        }
    }
    for (i, r) in res.iter().enumerate() {
        for (h, v) in r.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(i * TR + 8 * h), *v);
        }
    }
}
