//! k-quant tiles ([`crate::models::kernels::ktile`]) times Q8_K rows with
//! AVX512-VNNI: every 64-byte run of a tile is 4 inputs of 16 rows, the
//! unsigned side of `vpdpbusd`; the activations' 4 bytes at those inputs
//! are broadcast to all 16 lanes as the signed side. Each unpacked run
//! serves up to [`MR`](crate::models::kernels::ktile::MR) rows of activations (const generic `M`), so prefill
//! does one load and two or three bit operations per 4·M instructions.
//!
//! Q5_K runs Q4_K's kernel with the fifth bits added as 16 under a byte
//! mask (`vptestmb`, a masked `vpaddb`).
//!
//! Per sub-block the int32 sums are multiplied by the rows' scales
//! (`vpmulld`) and gathered per super-block; Q4_K's mins and Q6_K's offset
//! of 32 come from the activations' sums of 16, and each super-block ends
//! in one multiply-add into 16 f32 lanes.

use std::arch::x86_64::*;

use crate::models::kernels::kquant::{Q8K, QK_K};
use crate::models::kernels::ktile::{
    check_lengths, Q4K_MINS, Q4K_QUANTS, Q4K_SCALES, Q4K_TILE, Q5K_HIGH, Q5K_TILE, Q6K_QUANTS,
    Q6K_SCALES, Q6K_TILE, TR,
};

/// Q4_K tiles × 1 to 4 Q8_K rows: `out[i·16 + r]`.
///
/// # Safety
/// The CPU must have AVX512F, AVX512BW and AVX512-VNNI.
pub unsafe fn q4k(tiles: &[u8], acts: &[Q8K], out: &mut [f32]) {
    let kb = check_lengths(tiles, Q4K_TILE, acts, out);
    match acts.len() {
        1 => q4k_m::<1, false>(tiles.as_ptr(), kb, acts, out),
        2 => q4k_m::<2, false>(tiles.as_ptr(), kb, acts, out),
        3 => q4k_m::<3, false>(tiles.as_ptr(), kb, acts, out),
        _ => q4k_m::<4, false>(tiles.as_ptr(), kb, acts, out),
    }
}

/// Q5_K tiles × 1 to 4 Q8_K rows: `out[i·16 + r]`.
///
/// # Safety
/// The CPU must have AVX512F, AVX512BW and AVX512-VNNI.
pub unsafe fn q5k(tiles: &[u8], acts: &[Q8K], out: &mut [f32]) {
    let kb = check_lengths(tiles, Q5K_TILE, acts, out);
    match acts.len() {
        1 => q4k_m::<1, true>(tiles.as_ptr(), kb, acts, out),
        2 => q4k_m::<2, true>(tiles.as_ptr(), kb, acts, out),
        3 => q4k_m::<3, true>(tiles.as_ptr(), kb, acts, out),
        _ => q4k_m::<4, true>(tiles.as_ptr(), kb, acts, out),
    }
}

/// Q6_K tiles × 1 to 4 Q8_K rows: `out[i·16 + r]`.
///
/// # Safety
/// The CPU must have AVX512F, AVX512BW and AVX512-VNNI.
pub unsafe fn q6k(tiles: &[u8], acts: &[Q8K], out: &mut [f32]) {
    let kb = check_lengths(tiles, Q6K_TILE, acts, out);
    match acts.len() {
        1 => q6k_m::<1>(tiles.as_ptr(), kb, acts, out),
        2 => q6k_m::<2>(tiles.as_ptr(), kb, acts, out),
        3 => q6k_m::<3>(tiles.as_ptr(), kb, acts, out),
        _ => q6k_m::<4>(tiles.as_ptr(), kb, acts, out),
    }
}

/// The 4 activation bytes at `at` of row `a`, in every lane.
#[inline(always)]
unsafe fn bcast(a: &Q8K, at: usize) -> __m512i {
    _mm512_set1_epi32((a.q.as_ptr().add(at) as *const i32).read_unaligned())
}

/// 16 bytes at `p` widened to 16 int32 lanes (unsigned).
#[inline(always)]
unsafe fn u8x16(p: *const u8) -> __m512i {
    _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i))
}

/// 16 bytes at `p` widened to 16 int32 lanes (signed).
#[inline(always)]
unsafe fn i8x16(p: *const u8) -> __m512i {
    _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))
}

/// Q4_K tiles, or with `FIVE` Q5_K tiles (a Q4_K tile and the fifth
/// bits, added as 16 where set).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn q4k_m<const M: usize, const FIVE: bool>(
    tiles: *const u8,
    kb: usize,
    acts: &[Q8K],
    out: &mut [f32],
) {
    let low = _mm512_set1_epi8(0x0f);
    let sixteen = _mm512_set1_epi8(16);
    let stride = if FIVE { Q5K_TILE } else { Q4K_TILE };
    let mut res = [_mm512_setzero_ps(); M];
    for b in 0..kb {
        let t = tiles.add(b * stride);
        let at = b * QK_K;
        let mut acc = [_mm512_setzero_si512(); M];
        for p in 0..4 {
            let mut s0 = [_mm512_setzero_si512(); M];
            let mut s1 = [_mm512_setzero_si512(); M];
            for g in 0..8 {
                let w = _mm512_loadu_si512(t.add(Q4K_QUANTS + (p * 8 + g) * 64) as *const _);
                let mut lo = _mm512_and_si512(w, low);
                let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(w), low);
                if FIVE {
                    // Bits 2p and 2p + 1 of each byte: sub-blocks 2p, 2p + 1.
                    let five = _mm512_loadu_si512(t.add(Q5K_HIGH + g * 64) as *const _);
                    let k0 = _mm512_test_epi8_mask(five, _mm512_set1_epi8((1u8 << (2 * p)) as i8));
                    let k1 = _mm512_test_epi8_mask(five, _mm512_set1_epi8((2u8 << (2 * p)) as i8));
                    lo = _mm512_mask_add_epi8(lo, k0, lo, sixteen);
                    hi = _mm512_mask_add_epi8(hi, k1, hi, sixteen);
                }
                for i in 0..M {
                    let x = at + 64 * p + 4 * g;
                    s0[i] = _mm512_dpbusd_epi32(s0[i], lo, bcast(&acts[i], x));
                    s1[i] = _mm512_dpbusd_epi32(s1[i], hi, bcast(&acts[i], x + 32));
                }
            }
            let sc0 = u8x16(t.add(Q4K_SCALES + TR * 2 * p));
            let sc1 = u8x16(t.add(Q4K_SCALES + TR * (2 * p + 1)));
            for i in 0..M {
                let both = _mm512_add_epi32(
                    _mm512_mullo_epi32(s0[i], sc0),
                    _mm512_mullo_epi32(s1[i], sc1),
                );
                acc[i] = _mm512_add_epi32(acc[i], both);
            }
        }
        let mut mins = [_mm512_setzero_si512(); M];
        for j in 0..8 {
            let mn = u8x16(t.add(Q4K_MINS + TR * j));
            for i in 0..M {
                let s = acts[i].sums.as_ptr().add(b * 16 + 2 * j);
                let pair = *s as i32 + *s.add(1) as i32;
                mins[i] =
                    _mm512_add_epi32(mins[i], _mm512_mullo_epi32(mn, _mm512_set1_epi32(pair)));
            }
        }
        let d = _mm512_loadu_ps(t as *const f32);
        let dmin = _mm512_loadu_ps(t.add(4 * TR) as *const f32);
        for i in 0..M {
            let v = _mm512_fmsub_ps(
                d,
                _mm512_cvtepi32_ps(acc[i]),
                _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(mins[i])),
            );
            res[i] = _mm512_fmadd_ps(_mm512_set1_ps(*acts[i].d.as_ptr().add(b)), v, res[i]);
        }
    }
    for (i, r) in res.iter().enumerate() {
        _mm512_storeu_ps(out.as_mut_ptr().add(i * TR), *r);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn q6k_m<const M: usize>(tiles: *const u8, kb: usize, acts: &[Q8K], out: &mut [f32]) {
    let low = _mm512_set1_epi8(0x0f);
    let high2 = _mm512_set1_epi8(0x30);
    let mut res = [_mm512_setzero_ps(); M];
    for b in 0..kb {
        let t = tiles.add(b * Q6K_TILE);
        let at = b * QK_K;
        // The quants carry +32: start from −32 × each group's sum, scaled.
        let mut acc = [_mm512_setzero_si512(); M];
        for j in 0..16 {
            let sc = i8x16(t.add(Q6K_SCALES + TR * j));
            for i in 0..M {
                let s = 32 * *acts[i].sums.as_ptr().add(b * 16 + j) as i32;
                acc[i] = _mm512_sub_epi32(acc[i], _mm512_mullo_epi32(sc, _mm512_set1_epi32(s)));
            }
        }
        for h in 0..2 {
            for half in 0..2 {
                // Quarters 0 and 1 (low nibbles, high bits 0..4), then 2
                // and 3 (high nibbles, high bits 4..8).
                for pass in 0..2 {
                    let mut sa = [_mm512_setzero_si512(); M];
                    let mut sb = [_mm512_setzero_si512(); M];
                    for g in 4 * half..4 * half + 4 {
                        let run = t.add(Q6K_QUANTS + (h * 8 + g) * 192);
                        let a = _mm512_loadu_si512(run as *const _);
                        let c = _mm512_loadu_si512(run.add(64) as *const _);
                        let hb = _mm512_loadu_si512(run.add(128) as *const _);
                        let (qa, qb) = if pass == 0 {
                            (
                                _mm512_or_si512(
                                    _mm512_and_si512(a, low),
                                    _mm512_and_si512(_mm512_slli_epi16::<4>(hb), high2),
                                ),
                                _mm512_or_si512(
                                    _mm512_and_si512(c, low),
                                    _mm512_and_si512(_mm512_slli_epi16::<2>(hb), high2),
                                ),
                            )
                        } else {
                            (
                                _mm512_or_si512(
                                    _mm512_and_si512(_mm512_srli_epi16::<4>(a), low),
                                    _mm512_and_si512(hb, high2),
                                ),
                                _mm512_or_si512(
                                    _mm512_and_si512(_mm512_srli_epi16::<4>(c), low),
                                    _mm512_and_si512(_mm512_srli_epi16::<2>(hb), high2),
                                ),
                            )
                        };
                        let x = at + 128 * h + 64 * pass + 4 * g;
                        for i in 0..M {
                            sa[i] = _mm512_dpbusd_epi32(sa[i], qa, bcast(&acts[i], x));
                            sb[i] = _mm512_dpbusd_epi32(sb[i], qb, bcast(&acts[i], x + 32));
                        }
                    }
                    // Quarter q's sub-block in this half: 8h + 2q + half.
                    let qa = 2 * pass;
                    let sca = i8x16(t.add(Q6K_SCALES + TR * (8 * h + 2 * qa + half)));
                    let scb = i8x16(t.add(Q6K_SCALES + TR * (8 * h + 2 * qa + 2 + half)));
                    for i in 0..M {
                        let both = _mm512_add_epi32(
                            _mm512_mullo_epi32(sa[i], sca),
                            _mm512_mullo_epi32(sb[i], scb),
                        );
                        acc[i] = _mm512_add_epi32(acc[i], both);
                    }
                }
            }
        }
        let d = _mm512_loadu_ps(t as *const f32);
        for i in 0..M {
            let da = _mm512_mul_ps(d, _mm512_set1_ps(*acts[i].d.as_ptr().add(b)));
            res[i] = _mm512_fmadd_ps(da, _mm512_cvtepi32_ps(acc[i]), res[i]);
        }
    }
    for (i, r) in res.iter().enumerate() {
        _mm512_storeu_ps(out.as_mut_ptr().add(i * TR), *r);
    }
}
