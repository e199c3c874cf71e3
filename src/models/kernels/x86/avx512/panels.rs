//! The projections' panel kernels at AVX-512's width: matrix × vector
//! over f32, f16 and bf16 panels, the f32 register tile of prefill, and
//! bf16 rows packed into pairs.

use std::arch::x86_64::*;

use half::{bf16, f16};

use crate::models::kernels::ahead;
use crate::models::kernels::packed::NR;

/// Rows per f32 register tile.
pub const F32_ROWS: usize = 6;
// `f32_tile` picks its rows with `by_rows!(6; …)`.
const _: () = assert!(F32_ROWS == 6);

/// `tile = x · panel` for a bf16 panel and `x` already rounded to bf16
/// pairs: per k pair, the panel's 32 pairs in two loads and one
/// `vdpbf16ps` each against the broadcast pair — a third of the
/// instructions of [`panel_bf16`]'s widening, so more of the core's
/// window goes to loads in flight (decode reads weights at 24 GB/s
/// with the widening kernel, f32 panels at 28).
///
/// # Safety
/// AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn panel_bf16_pairs(x: &[u32], panel: &[u32], tile: &mut [f32; NR]) {
    let hint = crate::models::kernels::stream_hint();
    let kp = x.len();
    assert!(panel.len() >= kp * NR);
    let (xp, wp) = (x.as_ptr(), panel.as_ptr());
    let load = |p: *const u32| -> __m512bh {
        std::mem::transmute(_mm512_loadu_si512(p as *const __m512i))
    };
    let pair = |q: usize| -> __m512bh { std::mem::transmute(_mm512_set1_epi32(*xp.add(q) as i32)) };
    // Two k pairs per round, each into accumulators of its own.
    let mut a = [_mm512_setzero_ps(); 4];
    let mut q = 0;
    while q + 2 <= kp {
        let w = wp.add(q * NR);
        ahead(hint, w, 2 * NR * 4);
        let (x0, x1) = (pair(q), pair(q + 1));
        a[0] = _mm512_dpbf16_ps(a[0], load(w), x0);
        a[1] = _mm512_dpbf16_ps(a[1], load(w.add(16)), x0);
        a[2] = _mm512_dpbf16_ps(a[2], load(w.add(NR)), x1);
        a[3] = _mm512_dpbf16_ps(a[3], load(w.add(NR + 16)), x1);
        q += 2;
    }
    if q < kp {
        let w = wp.add(q * NR);
        let x0 = pair(q);
        a[0] = _mm512_dpbf16_ps(a[0], load(w), x0);
        a[1] = _mm512_dpbf16_ps(a[1], load(w.add(16)), x0);
    }
    _mm512_storeu_ps(tile.as_mut_ptr(), _mm512_add_ps(a[0], a[2]));
    _mm512_storeu_ps(tile.as_mut_ptr().add(16), _mm512_add_ps(a[1], a[3]));
}

/// `tile` (rows × 2·NR, row stride 2·NR) = `rows` rows of `x` (row
/// stride `k`) · two k-major f32 panels side by side (k × NR each):
/// per k, four loads of the panels, a broadcast per row and four FMAs
/// per row.
///
/// # Safety
/// AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn f32_tile(
    rows: usize,
    x: &[f32],
    k: usize,
    panels: [&[f32]; 2],
    tile: &mut [f32; F32_ROWS * 2 * NR],
) {
    by_rows!(6; rows, f32_rows(x, k, panels, tile))
}

#[target_feature(enable = "avx512f")]
unsafe fn f32_rows<const R: usize>(
    x: &[f32],
    k: usize,
    panels: [&[f32]; 2],
    tile: &mut [f32; F32_ROWS * 2 * NR],
) {
    assert!(R <= F32_ROWS && x.len() >= (R - 1) * k + k);
    assert!(panels.iter().all(|p| p.len() >= k * NR));
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    let (p0, p1) = (panels[0].as_ptr(), panels[1].as_ptr());
    let rows: [*const f32; R] = std::array::from_fn(|r| x.as_ptr().add(r * k));
    for kk in 0..k {
        let w = [
            _mm512_loadu_ps(p0.add(kk * NR)),
            _mm512_loadu_ps(p0.add(kk * NR + 16)),
            _mm512_loadu_ps(p1.add(kk * NR)),
            _mm512_loadu_ps(p1.add(kk * NR + 16)),
        ];
        for (a, row) in acc.iter_mut().zip(&rows) {
            let b = _mm512_set1_ps(*row.add(kk));
            for (al, wl) in a.iter_mut().zip(&w) {
                *al = _mm512_fmadd_ps(b, *wl, *al);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (l, al) in a.iter().enumerate() {
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * 2 * NR + 16 * l), *al);
        }
    }
}

/// A k-major panel (f32 or f16): two inputs per step, each broadcast
/// against the panel's 32 rows in two registers, four accumulators.
macro_rules! panel_k_major {
    ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr) => {
        /// # Safety
        /// The CPU must support the enabled features.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(x: &[f32], panel: &[$t], tile: &mut [f32; NR]) {
            let hint = crate::models::kernels::stream_hint();
            let k = x.len();
            assert!(panel.len() >= k * NR);
            let (xp, wp) = (x.as_ptr(), panel.as_ptr());
            let load = |$p: *const $t| $load;
            let mut a = [_mm512_setzero_ps(); 4];
            let mut kk = 0;
            while kk + 2 <= k {
                let w = wp.add(kk * NR);
                ahead(hint, w, 2 * NR * std::mem::size_of::<$t>());
                let (b0, b1) = (_mm512_set1_ps(*xp.add(kk)), _mm512_set1_ps(*xp.add(kk + 1)));
                a[0] = _mm512_fmadd_ps(load(w), b0, a[0]);
                a[1] = _mm512_fmadd_ps(load(w.add(16)), b0, a[1]);
                a[2] = _mm512_fmadd_ps(load(w.add(32)), b1, a[2]);
                a[3] = _mm512_fmadd_ps(load(w.add(48)), b1, a[3]);
                kk += 2;
            }
            if kk < k {
                let w = wp.add(kk * NR);
                let b0 = _mm512_set1_ps(*xp.add(kk));
                a[0] = _mm512_fmadd_ps(load(w), b0, a[0]);
                a[1] = _mm512_fmadd_ps(load(w.add(16)), b0, a[1]);
            }
            _mm512_storeu_ps(tile.as_mut_ptr(), _mm512_add_ps(a[0], a[2]));
            _mm512_storeu_ps(tile.as_mut_ptr().add(16), _mm512_add_ps(a[1], a[3]));
        }
    };
}

panel_k_major!(panel_f32, f32, "avx512f", |p| _mm512_loadu_ps(p));
panel_k_major!(panel_f16, f16, "avx512f,f16c", |p| _mm512_cvtph_ps(
    _mm256_loadu_si256(p as *const __m256i)
));

panel_bf16!(
    "avx512f",
    16,
    __m512i,
    [
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_set1_epi32,
        _mm512_loadu_si512,
        _mm512_slli_epi32,
        _mm512_and_si512,
        _mm512_castsi512_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        _mm512_storeu_ps
    ]
);

/// [`pack_pairs`] for a whole panel of rows (`NR` rows, `k` a multiple of
/// 32) as 16 × 16 transposes of the rows' pairs (read as u32).
///
/// # Safety
/// AVX-512F; `rows.len() == NR · k`, `panel.len() ≥ k / 2 · NR`.
#[target_feature(enable = "avx512f")]
pub unsafe fn pack_pairs(rows: &[bf16], k: usize, panel: &mut [u32]) {
    use std::arch::x86_64::*;
    let kp = k / 2;
    assert!(rows.len() == NR * k && panel.len() >= kp * NR && kp.is_multiple_of(16));
    let src = rows.as_ptr() as *const u32;
    let dst = panel.as_mut_ptr();
    for r0 in (0..NR).step_by(16) {
        for q0 in (0..kp).step_by(16) {
            let mut r: [__m512i; 16] = std::array::from_fn(|i| {
                _mm512_loadu_si512(src.add((r0 + i) * kp + q0) as *const __m512i)
            });
            let mut t = [_mm512_setzero_si512(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
            }
            for g in 0..4 {
                let b = 4 * g;
                r[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
                r[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
                r[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
                r[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
            }
            for h in 0..2 {
                let b = 8 * h;
                for i in 0..4 {
                    t[b + i] = _mm512_shuffle_i32x4::<0x88>(r[b + i], r[b + i + 4]);
                    t[b + i + 4] = _mm512_shuffle_i32x4::<0xdd>(r[b + i], r[b + i + 4]);
                }
            }
            for i in 0..8 {
                r[i] = _mm512_shuffle_i32x4::<0x88>(t[i], t[i + 8]);
                r[i + 8] = _mm512_shuffle_i32x4::<0xdd>(t[i], t[i + 8]);
            }
            // r[j] is pair q0 + j of rows r0..r0 + 16.
            for (j, v) in r.iter().enumerate() {
                _mm512_storeu_si512(dst.add((q0 + j) * NR + r0) as *mut __m512i, *v);
            }
        }
    }
}
