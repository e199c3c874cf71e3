//! Integer products with AVX512-VNNI (`vpdpbusd`): GGUF Q8_0 panels times
//! int8 activations in decode ([`q8_panel`]), and decode attention's
//! scores over an int8 KV cache, with the query rows rounded to int8 per
//! [`KV_BLOCK`] as the keys are — llama.cpp's Q8_0 × Q8_0 dot.

use std::arch::x86_64::*;

use super::super::{has_avx512vnni, quantize_rows, KV_BLOCK};
use super::avx512::attention::sum4;
use super::store_sums;
use crate::models::kernels::packed::NR;
use crate::models::kernels::q8::{BLOCK_BYTES, QK};
use crate::models::kernels::{cache_hint, prefetch, PREFETCH_AHEAD};

/// A query row rounded to int8 per [`KV_BLOCK`], for the int8 cache's
/// integer scores (`vpdpbusd`, as llama.cpp's Q8_0 × Q8_0 dot).
pub(crate) struct QueryI8 {
    /// The int8 row.
    pub(crate) q: Vec<i8>,
    /// Per group of 4 elements (an int32 lane of the product):
    /// −128 · their sum, which cancels the +128 that makes keys unsigned.
    pub(crate) corr: Vec<i32>,
    /// Per group of 4: its block's scale.
    pub(crate) scales: Vec<f32>,
}

impl QueryI8 {
    pub(crate) fn new(x: &[f32]) -> QueryI8 {
        assert!(x.len().is_multiple_of(KV_BLOCK));
        let mut q = vec![0i8; x.len()];
        let mut bs = vec![0f32; x.len() / KV_BLOCK];
        quantize_rows(x, KV_BLOCK, &mut q, &mut bs);
        let corr = q
            .chunks_exact(4)
            .map(|g| -128 * g.iter().map(|&v| i32::from(v)).sum::<i32>())
            .collect();
        let scales = (0..x.len() / 4).map(|l| bs[l * 4 / KV_BLOCK]).collect();
        QueryI8 { q, corr, scales }
    }
}

/// Whether [`scores2_vnni`] runs for heads of `d` on this CPU: AVX512-VNNI
/// and a head of 64, 128, 192, 256 or 512.
pub(crate) fn vnni_scores_run(d: usize) -> bool {
    has_avx512vnni() && matches!(d, 64 | 128 | 192 | 256 | 512)
}

/// [`scores2_i8_vnni`] for heads of `d`; false, having done
/// nothing, where it does not run ([`vnni_scores_run`]).
pub(crate) fn scores2_vnni(
    q: [&QueryI8; 2],
    keys: &[i8],
    scales: &[f32],
    d: usize,
    out: [&mut [f32]; 2],
) -> bool {
    if !vnni_scores_run(d) {
        return false;
    }
    // SAFETY: AVX512-VNNI was checked above; the kernel checks lengths.
    unsafe {
        match d {
            64 => scores2_i8_vnni::<1>(q, keys, scales, out),
            128 => scores2_i8_vnni::<2>(q, keys, scales, out),
            192 => scores2_i8_vnni::<3>(q, keys, scales, out),
            256 => scores2_i8_vnni::<4>(q, keys, scales, out),
            512 => scores2_i8_vnni::<8>(q, keys, scales, out),
            _ => return false,
        }
    }
    true
}

/// Scores of two int8 query rows against int8 keys in integers: per
/// 64 bytes of a key (two blocks of 32), one `vpdpbusd` per query row
/// sums 4 products per lane (keys made unsigned by +128, which the
/// rows' `corr` takes back), then each lane is scaled by its key
/// block's scale times its query block's. `C` is `d / 64`.
///
/// # Safety
/// The CPU must support AVX512-VNNI (and F, BW).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn scores2_i8_vnni<const C: usize>(
    q: [&QueryI8; 2],
    keys: &[i8],
    scales: &[f32],
    out: [&mut [f32]; 2],
) {
    let hint = cache_hint();
    let d = 64 * C;
    let nb = d / 32;
    let jl = out[0].len();
    assert!(C > 0 && nb <= 16 && out[1].len() == jl);
    assert!(keys.len() >= jl * d && scales.len() >= jl * nb);
    for r in q {
        assert!(r.q.len() == d && r.corr.len() == d / 4 && r.scales.len() == d / 4);
    }
    if jl == 0 {
        return;
    }
    // Per row and chunk of 64: the int8 queries, the correction that
    // starts each lane and the query scales, all in registers.
    let mut qv = [[_mm512_setzero_si512(); C]; 2];
    let mut init = [[_mm512_setzero_si512(); C]; 2];
    let mut qs = [[_mm512_setzero_ps(); C]; 2];
    let mut sidx = [_mm512_setzero_si512(); C];
    for c in 0..C {
        for h in 0..2 {
            qv[h][c] = _mm512_loadu_si512(q[h].q.as_ptr().add(64 * c) as *const __m512i);
            init[h][c] = _mm512_loadu_si512(q[h].corr.as_ptr().add(16 * c) as *const __m512i);
            qs[h][c] = _mm512_loadu_ps(q[h].scales.as_ptr().add(16 * c));
        }
        // Lanes 0..8 take block 2c's scale, 8..16 block 2c + 1's.
        let lanes: [i32; 16] = std::array::from_fn(|l| (2 * c + l / 8) as i32);
        sidx[c] = _mm512_loadu_si512(lanes.as_ptr() as *const __m512i);
    }
    let flip = _mm512_set1_epi8(-128);
    let smask: __mmask16 = ((1u32 << nb) - 1) as u16;
    let (kp, sp) = (keys.as_ptr(), scales.as_ptr());
    let [o0, o1] = out;
    let mut j = 0;
    while j < jl {
        let mut a = [[_mm512_setzero_ps(); 4]; 2];
        // The scales' stream, as far ahead as the keys'.
        prefetch(
            hint,
            (sp.add(j * nb) as *const i8).wrapping_add(PREFETCH_AHEAD * 4 * nb / d),
        );
        // `r` picks the key and its accumulators in both rows.
        #[allow(clippy::needless_range_loop)]
        for r in 0..4 {
            let key = (j + r).min(jl - 1);
            let row = kp.add(key * d);
            // The key's block scales (a masked load here was half the
            // kernel's time on Zen 5).
            let at = sp.add(key * nb);
            let ks = match C {
                1 => _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd(at as *const f64))),
                2 => _mm512_castps128_ps512(_mm_loadu_ps(at)),
                4 => _mm512_castps256_ps512(_mm256_loadu_ps(at)),
                8 => _mm512_loadu_ps(at),
                _ => _mm512_maskz_loadu_ps(smask, at),
            };
            for c in 0..C {
                prefetch(hint, row.add(64 * c).wrapping_add(PREFETCH_AHEAD));
                let kv =
                    _mm512_xor_si512(_mm512_loadu_si512(row.add(64 * c) as *const __m512i), flip);
                let s = _mm512_permutexvar_ps(sidx[c], ks);
                for h in 0..2 {
                    let dot = _mm512_dpbusd_epi32(init[h][c], kv, qv[h][c]);
                    let w = _mm512_mul_ps(s, qs[h][c]);
                    a[h][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), w, a[h][r]);
                }
            }
        }
        let take = (jl - j).min(4);
        for (h, o) in [o0.as_mut_ptr(), o1.as_mut_ptr()].into_iter().enumerate() {
            store_sums(o.add(j), sum4(a[h]), take);
        }
        j += 4;
    }
}

/// Per block: 8 steps of 4 inputs, each one broadcast of 4 activation
/// bytes and two `vpdpbusd` (rows 0–15, 16–31), alternating between two
/// pairs of integer accumulators; then the offset's sum taken off, and
/// both scales applied in one multiply-add per 16 rows.
///
/// # Safety
/// The CPU must support AVX-512F/BW/VNNI and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
pub unsafe fn q8_panel(q: &[i8], d: &[f32], c: &[i32], panel: &[u8], tile: &mut [f32; NR]) {
    let hint = crate::models::kernels::stream_hint();
    assert!(q.len() >= d.len() * QK && c.len() >= d.len() && panel.len() >= d.len() * BLOCK_BYTES);
    let (qp, pp) = (q.as_ptr(), panel.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 2];
    for b in 0..d.len() {
        let base = pp.add(b * BLOCK_BYTES);
        crate::models::kernels::ahead(hint, base.add(NR * QK), 64);
        let mut s = [_mm512_setzero_si512(); 4];
        for g in 0..QK / 4 {
            crate::models::kernels::ahead(hint, base.add(g * 128), 128);
            let x = _mm512_set1_epi32(std::ptr::read_unaligned(
                qp.add(b * QK + 4 * g) as *const i32
            ));
            let w0 = _mm512_loadu_si512(base.add(g * 128) as *const __m512i);
            let w1 = _mm512_loadu_si512(base.add(g * 128 + 64) as *const __m512i);
            let h = 2 * (g % 2);
            s[h] = _mm512_dpbusd_epi32(s[h], w0, x);
            s[h + 1] = _mm512_dpbusd_epi32(s[h + 1], w1, x);
        }
        let off = _mm512_set1_epi32(c[b]);
        let db = _mm512_set1_ps(d[b]);
        for half in 0..2 {
            let sum = _mm512_sub_epi32(_mm512_add_epi32(s[half], s[half + 2]), off);
            let scales = _mm512_cvtph_ps(_mm256_loadu_si256(
                base.add(NR * QK + 32 * half) as *const __m256i
            ));
            acc[half] = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(sum),
                _mm512_mul_ps(scales, db),
                acc[half],
            );
        }
    }
    _mm512_storeu_ps(tile.as_mut_ptr(), acc[0]);
    _mm512_storeu_ps(tile.as_mut_ptr().add(16), acc[1]);
}
