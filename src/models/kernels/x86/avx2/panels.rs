//! The projections' panel kernels at AVX2's width (with FMA and F16C):
//! matrix × vector over f32, f16 and bf16 panels.

use std::arch::x86_64::*;

use half::f16;

use crate::models::kernels::ahead;
use crate::models::kernels::packed::NR;

/// A k-major panel (f32 or f16): each input broadcast against the
/// panel's 32 rows in four registers.
macro_rules! panel_k_major {
    ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr) => {
        /// # Safety
        /// The CPU must support the enabled features.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(x: &[f32], panel: &[$t], tile: &mut [f32; NR]) {
            let k = x.len();
            assert!(panel.len() >= k * NR);
            let (xp, wp) = (x.as_ptr(), panel.as_ptr());
            let load = |$p: *const $t| $load;
            let hint = crate::models::kernels::stream_hint();
            let mut a = [_mm256_setzero_ps(); 4];
            for kk in 0..k {
                let w = wp.add(kk * NR);
                ahead(hint, w, NR * std::mem::size_of::<$t>());
                let b = _mm256_set1_ps(*xp.add(kk));
                for (l, al) in a.iter_mut().enumerate() {
                    *al = _mm256_fmadd_ps(load(w.add(8 * l)), b, *al);
                }
            }
            for (l, al) in a.iter().enumerate() {
                _mm256_storeu_ps(tile.as_mut_ptr().add(8 * l), *al);
            }
        }
    };
}

panel_k_major!(panel_f32, f32, "avx2,fma", |p| _mm256_loadu_ps(p));
panel_k_major!(panel_f16, f16, "avx2,fma,f16c", |p| _mm256_cvtph_ps(
    _mm_loadu_si128(p as *const __m128i)
));

panel_bf16!(
    "avx2,fma",
    8,
    __m256i,
    [
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_set1_epi32,
        _mm256_loadu_si256,
        _mm256_slli_epi32,
        _mm256_and_si256,
        _mm256_castsi256_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        _mm256_storeu_ps
    ]
);
