//! GGUF k-quant rows times Q8_K activations with AVX-512 (F and BW): the
//! AVX2 kernels (`super::super::avx2::kquant`) at twice the width, 64
//! quants per `vpmaddubsw`, with each super-block's scales widened and
//! spread over the lanes once.

use std::arch::x86_64::*;

use crate::models::kernels::kquant::{q4k_scales, Q4K_BYTES, Q6K_BYTES, Q8K, QK_K};

#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    half::f16::from_bits(std::ptr::read_unaligned(p as *const u16)).to_f32()
}

/// Q4_K rows · Q8_K.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dot_q4k(rows: &[u8], a: &Q8K, out: &mut [f32]) {
    let blocks = a.d.len();
    assert!(rows.len() >= out.len() * blocks * Q4K_BYTES);
    assert!(a.q.len() >= blocks * QK_K && a.sums.len() >= blocks * 16);
    for (r, o) in out.iter_mut().enumerate() {
        *o = row_q4k(rows.as_ptr().add(r * blocks * Q4K_BYTES), blocks, a);
    }
}

#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn row_q4k(row: *const u8, blocks: usize, a: &Q8K) -> f32 {
    let mask = _mm256_set1_epi8(0x0f);
    let mut acc = _mm512_setzero_ps();
    let mut acc_mins = _mm256_setzero_ps();
    for b in 0..blocks {
        let blk = row.add(b * Q4K_BYTES);
        let both = q4k_scales(std::slice::from_raw_parts(blk.add(4), 12));
        let qs = blk.add(16);
        let q8 = a.q.as_ptr().add(b * QK_K);
        let mut sum = _mm512_setzero_si512();
        for il in 0..4 {
            let bits = _mm256_loadu_si256(qs.add(32 * il) as *const __m256i);
            let lo = _mm256_and_si256(bits, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), mask);
            let q4 = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            let x = _mm512_loadu_si512(q8.add(64 * il) as *const __m512i);
            let scales = _mm512_inserti64x4(
                _mm512_set1_epi16(both[2 * il] as i16),
                _mm256_set1_epi16(both[2 * il + 1] as i16),
                1,
            );
            sum = _mm512_add_epi32(sum, _mm512_madd_epi16(_mm512_maddubs_epi16(q4, x), scales));
        }
        let mins = _mm_loadl_epi64(both.as_ptr().add(8) as *const __m128i);
        let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mins, mins));
        let sums = _mm256_loadu_si256(a.sums.as_ptr().add(b * 16) as *const __m256i);
        let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, sums));
        let (d, dmin) = (f16_at(blk), f16_at(blk.add(2)));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(a.d[b] * d), acc);
        acc_mins = _mm256_fmadd_ps(m, _mm256_set1_ps(a.d[b] * dmin), acc_mins);
    }
    let mins = _mm_add_ps(
        _mm256_castps256_ps128(acc_mins),
        _mm256_extractf128_ps(acc_mins, 1),
    );
    let mins = _mm_add_ps(mins, _mm_movehl_ps(mins, mins));
    let mins = _mm_add_ss(mins, _mm_movehdup_ps(mins));
    _mm512_reduce_add_ps(acc) - _mm_cvtss_f32(mins)
}

/// Q6_K rows · Q8_K.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dot_q6k(rows: &[u8], a: &Q8K, out: &mut [f32]) {
    let blocks = a.d.len();
    assert!(rows.len() >= out.len() * blocks * Q6K_BYTES);
    assert!(a.q.len() >= blocks * QK_K && a.sums.len() >= blocks * 16);
    // Lane i of the j-th spread takes scale 4j + i / 8.
    let spread: [__m512i; 4] = std::array::from_fn(|j| {
        let idx: [i16; 32] = std::array::from_fn(|i| (4 * j + i / 8) as i16);
        _mm512_loadu_si512(idx.as_ptr() as *const __m512i)
    });
    for (r, o) in out.iter_mut().enumerate() {
        *o = row_q6k(
            rows.as_ptr().add(r * blocks * Q6K_BYTES),
            blocks,
            a,
            &spread,
        );
    }
}

#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn row_q6k(row: *const u8, blocks: usize, a: &Q8K, spread: &[__m512i; 4]) -> f32 {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    let mut acc = _mm512_setzero_ps();
    for b in 0..blocks {
        let blk = row.add(b * Q6K_BYTES);
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192) as *const __m128i));
        let spread_from = _mm512_castsi256_si512(sc16);
        let q8 = a.q.as_ptr().add(b * QK_K);
        let mut sum = _mm512_setzero_si512();
        for n in 0..2 {
            let ql = blk.add(64 * n);
            let qh = _mm256_loadu_si256(blk.add(128 + 32 * n) as *const __m256i);
            let l0 = _mm256_loadu_si256(ql as *const __m256i);
            let l32 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let h = |shifted: __m256i| _mm256_slli_epi16(_mm256_and_si256(shifted, m2), 4);
            let q1 = _mm256_or_si256(_mm256_and_si256(l0, m4), h(qh));
            let q2 = _mm256_or_si256(_mm256_and_si256(l32, m4), h(_mm256_srli_epi16(qh, 2)));
            let q3 = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                h(_mm256_srli_epi16(qh, 4)),
            );
            let q4 = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(l32, 4), m4),
                h(_mm256_srli_epi16(qh, 6)),
            );
            for (half, (qa, qb)) in [(q1, q2), (q3, q4)].into_iter().enumerate() {
                let q = _mm512_inserti64x4(_mm512_castsi256_si512(qa), qb, 1);
                let x = _mm512_loadu_si512(q8.add(128 * n + 64 * half) as *const __m512i);
                let scales = _mm512_permutexvar_epi16(spread[2 * n + half], spread_from);
                sum = _mm512_add_epi32(sum, _mm512_madd_epi16(_mm512_maddubs_epi16(q, x), scales));
            }
        }
        // The quants carry +32: take 32 × each run's sum back out.
        let sums = _mm256_loadu_si256(a.sums.as_ptr().add(b * 16) as *const __m256i);
        let offset = _mm256_slli_epi32(_mm256_madd_epi16(sc16, sums), 5);
        let offset = _mm512_castsi256_si512(offset);
        let offset = _mm512_maskz_mov_epi32(0x00ff, offset);
        let scale = _mm512_set1_ps(a.d[b] * f16_at(blk.add(208)));
        acc = _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, offset)),
            scale,
            acc,
        );
    }
    _mm512_reduce_add_ps(acc)
}
