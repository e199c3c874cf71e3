//! The step between the fused q/k/v projection and attention, in one pass:
//! each token's `[q | k | v]` row is cut into heads, q and k get their
//! per-head RMS norm (Qwen3) and rotary embedding, and every head lands in
//! the head-major (batch, heads, time, dim) layout that attention and the
//! KV cache read.
//!
//! candle would take nine ops for this (three narrows made contiguous, two
//! norms, two RoPEs, three transposes made contiguous), each a full pass
//! over the activations with its own allocation; in prefill they cost as
//! much as attention's softmax.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The shapes and per-head parameters of [`split_heads`].
pub struct HeadSplit<'a> {
    /// Sequences.
    pub batch: usize,
    /// Positions per sequence.
    pub t: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Elements per head.
    pub dim: usize,
    /// RMS-norm weights (`dim`) for the q heads, if the model has them.
    pub q_norm: Option<&'a [f32]>,
    /// The same for the k heads.
    pub k_norm: Option<&'a [f32]>,
    /// The norms' epsilon.
    pub eps: f32,
    /// RoPE tables, (batch, t, dim / 2) each.
    pub cos: &'a [f32],
    /// See `cos`.
    pub sin: &'a [f32],
}

/// The rows of `qkv`, (batch × t) rows of `(heads + 2 · kv_heads) · dim`,
/// as head-major q (batch, heads, t, dim), k and v (batch, kv_heads, t,
/// dim): q and k normed (when the model has the weights) then rotated
/// (rotate-half RoPE, as Hugging Face's Qwen), v as it is.
pub fn split_heads(qkv: &[f32], s: &HeadSplit) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (b, t, h, kvh, d) = (s.batch, s.t, s.heads, s.kv_heads, s.dim);
    let width = (h + 2 * kvh) * d;
    assert!(d > 0 && d.is_multiple_of(2), "head dim {d} must be even");
    assert_eq!(qkv.len(), b * t * width, "q/k/v rows");
    assert!(s.cos.len() == b * t * d / 2 && s.sin.len() == s.cos.len());
    for w in [s.q_norm, s.k_norm].into_iter().flatten() {
        assert_eq!(w.len(), d, "norm weights");
    }
    // One unit is one (sequence, head) of t rows: q heads, then k, then v.
    let unit = |out: &mut [MaybeUninit<f32>], bi: usize, col: usize, kind: Kind| {
        let mut scratch = match kind {
            Kind::Rotate(Some(_)) => vec![0f32; d],
            _ => Vec::new(),
        };
        for (ti, o) in out.chunks_exact_mut(d).enumerate() {
            let row = (bi * t + ti) * width + col * d;
            let x = &qkv[row..row + d];
            let cs = (bi * t + ti) * d / 2;
            let (cos, sin) = (&s.cos[cs..cs + d / 2], &s.sin[cs..cs + d / 2]);
            match kind {
                Kind::Copy => {
                    for (o, &x) in o.iter_mut().zip(x) {
                        o.write(x);
                    }
                }
                Kind::Rotate(norm) => rotate(x, norm, s.eps, &mut scratch, cos, sin, o),
            }
        }
    };
    let mut q = Vec::with_capacity(b * h * t * d);
    let mut k = Vec::with_capacity(b * kvh * t * d);
    let mut v = Vec::with_capacity(b * kvh * t * d);
    let jobs = |out: &mut [MaybeUninit<f32>], heads: usize, first: usize, kind: Kind| {
        let run =
            |(i, o): (usize, &mut [MaybeUninit<f32>])| unit(o, i / heads, first + i % heads, kind);
        // Parallel only when there is enough work to pay for the wake-ups.
        if out.len() >= 1 << 15 {
            out.par_chunks_mut(t * d).enumerate().for_each(run);
        } else {
            out.chunks_mut(t * d).enumerate().for_each(run);
        }
    };
    jobs(
        &mut q.spare_capacity_mut()[..b * h * t * d],
        h,
        0,
        Kind::Rotate(s.q_norm),
    );
    jobs(
        &mut k.spare_capacity_mut()[..b * kvh * t * d],
        kvh,
        h,
        Kind::Rotate(s.k_norm),
    );
    jobs(
        &mut v.spare_capacity_mut()[..b * kvh * t * d],
        kvh,
        h + kvh,
        Kind::Copy,
    );
    // SAFETY: every unit wrote each of its t × d elements (rotate and the
    // copy write all of `o`), and the units tile the three buffers.
    unsafe {
        q.set_len(b * h * t * d);
        k.set_len(b * kvh * t * d);
        v.set_len(b * kvh * t * d);
    }
    (q, k, v)
}

#[derive(Clone, Copy)]
enum Kind<'a> {
    Copy,
    Rotate(Option<&'a [f32]>),
}

/// One head row: RMS-normed by `norm` (if any, into `scratch`, as long as
/// the row), then rotated; writes all of `out`.
fn rotate(
    x: &[f32],
    norm: Option<&[f32]>,
    eps: f32,
    scratch: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    out: &mut [MaybeUninit<f32>],
) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { rotate_avx512(x, norm, eps, scratch, cos, sin, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { rotate_avx2(x, norm, eps, scratch, cos, sin, out) };
    }
    rotate_body(x, norm, eps, scratch, cos, sin, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rotate_avx512(
    x: &[f32],
    norm: Option<&[f32]>,
    eps: f32,
    scratch: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    out: &mut [MaybeUninit<f32>],
) {
    rotate_body(x, norm, eps, scratch, cos, sin, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rotate_avx2(
    x: &[f32],
    norm: Option<&[f32]>,
    eps: f32,
    scratch: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    out: &mut [MaybeUninit<f32>],
) {
    rotate_body(x, norm, eps, scratch, cos, sin, out)
}

#[inline(always)]
fn rotate_body(
    x: &[f32],
    norm: Option<&[f32]>,
    eps: f32,
    scratch: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    out: &mut [MaybeUninit<f32>],
) {
    let half = x.len() / 2;
    let x = match norm {
        Some(w) => {
            let mut lanes = [0f32; 16];
            let chunks = x.chunks_exact(16);
            let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
            for c in chunks {
                for l in 0..16 {
                    lanes[l] += c[l] * c[l];
                }
            }
            let ss = lanes.iter().sum::<f32>() + tail;
            let r = 1.0 / (ss / x.len() as f32 + eps).sqrt();
            for ((o, &x), &w) in scratch.iter_mut().zip(x).zip(w) {
                *o = x * r * w;
            }
            &scratch[..x.len()]
        }
        None => x,
    };
    let (lo, hi) = x.split_at(half);
    let (out_lo, out_hi) = out.split_at_mut(half);
    for i in 0..half {
        let (a, b, c, s) = (lo[i], hi[i], cos[i], sin[i]);
        out_lo[i].write(a * c - b * s);
        out_hi[i].write(a * s + b * c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(s: &mut u64) -> f32 {
        (crate::rng::Rng::step(s) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    /// The obvious loops: slice out each head, norm, rotate.
    fn reference(qkv: &[f32], s: &HeadSplit) -> [Vec<f32>; 3] {
        let (b, t, h, kvh, d) = (s.batch, s.t, s.heads, s.kv_heads, s.dim);
        let width = (h + 2 * kvh) * d;
        let mut outs = [Vec::new(), Vec::new(), Vec::new()];
        for (which, (heads, first)) in [(h, 0), (kvh, h), (kvh, h + kvh)].iter().enumerate() {
            for bi in 0..b {
                for hi in 0..*heads {
                    for ti in 0..t {
                        let at = (bi * t + ti) * width + (first + hi) * d;
                        let mut x = qkv[at..at + d].to_vec();
                        if which == 2 {
                            outs[2].extend(x);
                            continue;
                        }
                        if let Some(w) = [s.q_norm, s.k_norm][which] {
                            let ms = x.iter().map(|v| (v * v) as f64).sum::<f64>() / d as f64;
                            let r = 1.0 / (ms + s.eps as f64).sqrt();
                            for (v, w) in x.iter_mut().zip(w) {
                                *v = (*v as f64 * r) as f32 * w;
                            }
                        }
                        let cs = (bi * t + ti) * d / 2;
                        for i in 0..d / 2 {
                            let (a, bb) = (x[i], x[i + d / 2]);
                            let (c, sn) = (s.cos[cs + i], s.sin[cs + i]);
                            outs[which].push(a * c - bb * sn);
                        }
                        for i in 0..d / 2 {
                            let (a, bb) = (x[i], x[i + d / 2]);
                            let (c, sn) = (s.cos[cs + i], s.sin[cs + i]);
                            outs[which].push(a * sn + bb * c);
                        }
                    }
                }
            }
        }
        outs
    }

    #[test]
    fn split_heads_matches_slicing_norming_and_rotating() {
        // Small (serial) and large (parallel) inputs, with and without norms.
        for (b, t, h, kvh, d, norms) in [
            (1, 1, 4, 2, 8, true),
            (2, 3, 6, 2, 16, false),
            (2, 40, 16, 8, 128, true),
            (1, 5, 2, 1, 6, true),
        ] {
            let mut seed = (b * 131 + t * 17 + d) as u64;
            let qkv: Vec<f32> = (0..b * t * (h + 2 * kvh) * d)
                .map(|_| rng(&mut seed) * 4.0)
                .collect();
            let qn: Vec<f32> = (0..d).map(|_| 1.0 + rng(&mut seed)).collect();
            let kn: Vec<f32> = (0..d).map(|_| 1.0 + rng(&mut seed)).collect();
            let angles: Vec<f32> = (0..b * t * d / 2).map(|i| i as f32 * 0.37).collect();
            let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
            let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
            let s = HeadSplit {
                batch: b,
                t,
                heads: h,
                kv_heads: kvh,
                dim: d,
                q_norm: norms.then_some(&qn[..]),
                k_norm: norms.then_some(&kn[..]),
                eps: 1e-6,
                cos: &cos,
                sin: &sin,
            };
            let (q, k, v) = split_heads(&qkv, &s);
            let want = reference(&qkv, &s);
            for (name, got, want) in [
                ("q", &q, &want[0]),
                ("k", &k, &want[1]),
                ("v", &v, &want[2]),
            ] {
                assert_eq!(got.len(), want.len(), "{name}");
                let diff = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(diff < 1e-5, "{name}, {b}×{t}, d = {d}: {diff}");
            }
        }
    }
}
