//! GGUF k-quant rows (`crate::models::kernels::kquant`) times Q8_K
//! activations with AVX2: the quants unpacked to bytes, `vpmaddubsw`
//! with the int8 activations (unsigned × signed; exact, as 2 × 63 × 127
//! fits 16 bits), `vpmaddwd` by each sub-block's scale into int32. The
//! mins (Q4_K) and the offset 32 (Q6_K) meet the activations' sums of 16
//! in one `vpmaddwd` per super-block; all of it accumulates in f32 lanes,
//! summed once per row.

use std::arch::x86_64::*;

use crate::models::kernels::kquant::{q4k_scales, Q4K_BYTES, Q6K_BYTES, Q8K, QK_K};

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    half::f16::from_bits(std::ptr::read_unaligned(p as *const u16)).to_f32()
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Q4_K rows · Q8_K.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q4k(rows: &[u8], a: &Q8K, out: &mut [f32]) {
    let blocks = a.d.len();
    assert!(rows.len() >= out.len() * blocks * Q4K_BYTES);
    assert!(a.q.len() >= blocks * QK_K && a.sums.len() >= blocks * 16);
    for (r, o) in out.iter_mut().enumerate() {
        *o = row_q4k(rows.as_ptr().add(r * blocks * Q4K_BYTES), blocks, a);
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn row_q4k(row: *const u8, blocks: usize, a: &Q8K) -> f32 {
    let mask = _mm256_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    let mut acc_mins = _mm256_setzero_ps();
    for b in 0..blocks {
        let blk = row.add(b * Q4K_BYTES);
        let both = q4k_scales(std::slice::from_raw_parts(blk.add(4), 12));
        let qs = blk.add(16);
        let q8 = a.q.as_ptr().add(b * QK_K);
        let mut sum = _mm256_setzero_si256();
        for il in 0..4 {
            let bits = _mm256_loadu_si256(qs.add(32 * il) as *const __m256i);
            let lo = _mm256_and_si256(bits, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), mask);
            let xlo = _mm256_loadu_si256(q8.add(64 * il) as *const __m256i);
            let xhi = _mm256_loadu_si256(q8.add(64 * il + 32) as *const __m256i);
            let plo = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, xlo),
                _mm256_set1_epi16(both[2 * il] as i16),
            );
            let phi = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, xhi),
                _mm256_set1_epi16(both[2 * il + 1] as i16),
            );
            sum = _mm256_add_epi32(sum, _mm256_add_epi32(plo, phi));
        }
        // mins: each of the eight meets the sums of its two runs of 16.
        let mins = _mm_loadl_epi64(both.as_ptr().add(8) as *const __m128i);
        let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins, mins));
        let sums = _mm256_loadu_si256(a.sums.as_ptr().add(b * 16) as *const __m256i);
        let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, sums));
        let (d, dmin) = (f16_at(blk), f16_at(blk.add(2)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(a.d[b] * d), acc);
        acc_mins = _mm256_fmadd_ps(m, _mm256_set1_ps(a.d[b] * dmin), acc_mins);
    }
    hsum(_mm256_sub_ps(acc, acc_mins))
}

/// Q6_K rows · Q8_K.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q6k(rows: &[u8], a: &Q8K, out: &mut [f32]) {
    let blocks = a.d.len();
    assert!(rows.len() >= out.len() * blocks * Q6K_BYTES);
    assert!(a.q.len() >= blocks * QK_K && a.sums.len() >= blocks * 16);
    for (r, o) in out.iter_mut().enumerate() {
        *o = row_q6k(rows.as_ptr().add(r * blocks * Q6K_BYTES), blocks, a);
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn row_q6k(row: *const u8, blocks: usize, a: &Q8K) -> f32 {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    let mut acc = _mm256_setzero_ps();
    for b in 0..blocks {
        let blk = row.add(b * Q6K_BYTES);
        let sc = blk.add(192) as *const i8;
        let q8 = a.q.as_ptr().add(b * QK_K);
        let mut sum = _mm256_setzero_si256();
        for n in 0..2 {
            let ql = blk.add(64 * n);
            let qh = _mm256_loadu_si256(blk.add(128 + 32 * n) as *const __m256i);
            let l0 = _mm256_loadu_si256(ql as *const __m256i);
            let l32 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let h = |shifted: __m256i| _mm256_slli_epi16(_mm256_and_si256(shifted, m2), 4);
            let q = [
                _mm256_or_si256(_mm256_and_si256(l0, m4), h(qh)),
                _mm256_or_si256(_mm256_and_si256(l32, m4), h(_mm256_srli_epi16(qh, 2))),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                    h(_mm256_srli_epi16(qh, 4)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l32, 4), m4),
                    h(_mm256_srli_epi16(qh, 6)),
                ),
            ];
            for (quarter, &qv) in q.iter().enumerate() {
                let x = _mm256_loadu_si256(q8.add(128 * n + 32 * quarter) as *const __m256i);
                let g = 8 * n + 2 * quarter;
                // Pairs 0..7 (weights 0..15) take scale g, 8..15 g + 1.
                let scales = _mm256_setr_m128i(
                    _mm_set1_epi16(*sc.add(g) as i16),
                    _mm_set1_epi16(*sc.add(g + 1) as i16),
                );
                sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(qv, x), scales));
            }
        }
        // The quants carry +32: take 32 × each run's sum back out.
        let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc as *const __m128i));
        let sums = _mm256_loadu_si256(a.sums.as_ptr().add(b * 16) as *const __m256i);
        let offset = _mm256_slli_epi32(_mm256_madd_epi16(scales, sums), 5);
        let scale = _mm256_set1_ps(a.d[b] * f16_at(blk.add(208)));
        acc = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(_mm256_sub_epi32(sum, offset)),
            scale,
            acc,
        );
    }
    hsum(acc)
}
