//! GGUF Q8_0 panels (`super::super::q8`) times int8 activations at AVX2's
//! width, without VNNI.

use std::arch::x86_64::*;

use crate::models::kernels::packed::NR;
use crate::models::kernels::q8::{BLOCK_BYTES, QK};

/// As the VNNI kernel (`x86::vnni::q8_panel`) with 256-bit registers and no VNNI: `vpmaddubsw` of
/// |w| (unsigned) and x carrying w's sign, then `vpmaddwd` by ones into
/// int32 (exact: |w| ≤ 128, |x| ≤ 127, so pairs stay below 2¹⁵).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn panel(q: &[i8], d: &[f32], panel: &[u8], tile: &mut [f32; NR]) {
    let hint = crate::models::kernels::stream_hint();
    assert!(q.len() >= d.len() * QK && panel.len() >= d.len() * BLOCK_BYTES);
    let (qp, pp) = (q.as_ptr(), panel.as_ptr());
    let flip = _mm256_set1_epi8(0x80u8 as i8);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    for (b, &db) in d.iter().enumerate() {
        let base = pp.add(b * BLOCK_BYTES);
        crate::models::kernels::ahead(hint, base.add(NR * QK), 64);
        let mut s = [_mm256_setzero_si256(); 4];
        for g in 0..QK / 4 {
            crate::models::kernels::ahead(hint, base.add(g * 128), 128);
            let x = _mm256_set1_epi32(std::ptr::read_unaligned(
                qp.add(b * QK + 4 * g) as *const i32
            ));
            for (l, sl) in s.iter_mut().enumerate() {
                let u = _mm256_loadu_si256(base.add(g * 128 + 32 * l) as *const __m256i);
                let w = _mm256_xor_si256(u, flip);
                let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
                *sl = _mm256_add_epi32(*sl, _mm256_madd_epi16(pairs, ones));
            }
        }
        let db = _mm256_set1_ps(db);
        for (l, a) in acc.iter_mut().enumerate() {
            let scales =
                _mm256_cvtph_ps(_mm_loadu_si128(base.add(NR * QK + 16 * l) as *const __m128i));
            *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[l]), _mm256_mul_ps(scales, db), *a);
        }
    }
    for (l, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(tile.as_mut_ptr().add(8 * l), *a);
    }
}
