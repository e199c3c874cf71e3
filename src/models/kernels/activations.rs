//! Element-wise activations: SwiGLU's `silu(gate) · up` and the
//! branch-free exp it and the softmax share.

use std::mem::MaybeUninit;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::{has_avx2_fma, has_avx512};

/// SwiGLU's `silu(gate) · up` for rows laid out as `[gate | up]` (each
/// `width` wide, as the fused gate/up projection writes them): m × width.
/// The sigmoid takes `fast_exp` of −|x| only, so the loop vectorises and
/// never overflows (candle's silu calls libm's `expf` per element).
pub fn silu_mul(gate_up: &[f32], width: usize) -> Vec<f32> {
    assert!(width > 0 && gate_up.len().is_multiple_of(2 * width));
    let m = gate_up.len() / (2 * width);
    let mut out = Vec::with_capacity(m * width);
    let slots = &mut out.spare_capacity_mut()[..m * width];
    // Parallel only when there is enough work to pay for the wake-ups.
    let run = |(o, gu): (&mut [MaybeUninit<f32>], &[f32])| {
        let (g, u) = gu.split_at(width);
        silu_mul_row(g, u, o);
    };
    if m * width >= 1 << 16 {
        slots
            .par_chunks_mut(width)
            .zip(gate_up.par_chunks(2 * width))
            .for_each(run);
    } else {
        slots
            .chunks_mut(width)
            .zip(gate_up.chunks(2 * width))
            .for_each(run);
    }
    // SAFETY: the m rows tile `slots`, and each row's loop writes all of it.
    unsafe { out.set_len(m * width) };
    out
}

fn silu_mul_row(g: &[f32], u: &[f32], o: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { silu_mul_avx512(g, u, o) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { silu_mul_avx2(g, u, o) };
    }
    silu_mul_body(g, u, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_avx2(g: &[f32], u: &[f32], o: &mut [MaybeUninit<f32>]) {
    silu_mul_body(g, u, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn silu_mul_avx512(g: &[f32], u: &[f32], o: &mut [MaybeUninit<f32>]) {
    silu_mul_body(g, u, o)
}

#[inline(always)]
fn silu_mul_body(g: &[f32], u: &[f32], o: &mut [MaybeUninit<f32>]) {
    assert!(g.len() == o.len() && u.len() == o.len());
    for ((o, &x), &y) in o.iter_mut().zip(g).zip(u) {
        let e = fast_exp(-x.abs());
        let r = 1.0 / (1.0 + e);
        let sig = if x >= 0.0 { r } else { e * r };
        o.write(x * sig * y);
    }
}

/// exp(x) for x ≤ 0 (softmax after the max is subtracted); below −87
/// (and −inf, a masked score) gives exactly 0.
#[inline(always)]
pub(super) fn fast_exp(x: f32) -> f32 {
    // exp(x) = 2^i · 2^f with x·log2(e) = i + f, f in [-0.5, 0.5].
    let under = x < -87.0;
    let x = x.max(-87.0);
    let t = x * std::f32::consts::LOG2_E;
    // Rounding by the 1.5 · 2^23 trick leaves i = round(t) in the low
    // mantissa bits of `j`: integer arithmetic on those bits vectorises,
    // where `as i32` (a saturating cast) would go lane by lane.
    const MAGIC: f32 = 12_582_912.0;
    let j = t + MAGIC;
    let i = j - MAGIC;
    let f = t - i;
    // 2^f, minimax-style polynomial (degree 6) in f.
    let p = 1.535_336_2e-4_f32;
    let p = p * f + 1.339_887_4e-3;
    let p = p * f + 9.618_437e-3;
    let p = p * f + 5.550_332_5e-2;
    let p = p * f + 2.402_264_6e-1;
    let p = p * f + 6.931_472e-1;
    let p = p * f + 1.0;
    // i ≥ −126 here (x ≥ −87), so the biased exponent is positive.
    let bits = (j.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127)) << 23;
    let r = p * f32::from_bits(bits);
    if under {
        0.0
    } else {
        r
    }
}
