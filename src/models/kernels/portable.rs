//! The decode kernels in plain Rust: every element type's table on a CPU
//! without the SIMD the `x86` kernels need, and the fallback for shapes
//! those kernels leave (heads that are not a multiple of 32). Loops are
//! written so the compiler vectorises them for whatever the target has.

use super::{kv_block, Elem};

/// [`Elem::pv`] as a row-by-row axpy.
pub(super) fn pv<W: Elem>(acc: &mut [f32], p: &[f32], rows: &[W]) {
    let d = acc.len();
    for (j, &pj) in p.iter().enumerate() {
        if pj != 0.0 {
            W::axpy(acc, pj, &rows[j * d..(j + 1) * d]);
        }
    }
}

/// [`Elem::pv`] over rows with [`KV_BLOCK`] scales: each block of a row
/// weighted by its probability times its scale.
pub(super) fn pv_scaled<W: Elem>(acc: &mut [f32], p: &[f32], rows: &[W], scales: &[f32]) {
    let d = acc.len();
    let block = kv_block(d);
    let nb = d / block;
    for (j, &pj) in p.iter().enumerate() {
        if pj == 0.0 {
            continue;
        }
        let row = &rows[j * d..(j + 1) * d];
        for ((a, w), s) in acc
            .chunks_mut(block)
            .zip(row.chunks(block))
            .zip(&scales[j * nb..(j + 1) * nb])
        {
            W::axpy(a, pj * s, w);
        }
    }
}

/// Scores of one query row against `out.len()` keys with [`KV_BLOCK`]
/// scales: each block's dot product times its scale.
pub(super) fn scores_scaled<W: Elem>(q: &[f32], keys: &[W], scales: &[f32], out: &mut [f32]) {
    let d = q.len();
    let (block, nb) = (kv_block(d), d / kv_block(d));
    for (j, o) in out.iter_mut().enumerate() {
        let key = &keys[j * d..(j + 1) * d];
        *o = q
            .chunks(block)
            .zip(key.chunks(block))
            .zip(&scales[j * nb..(j + 1) * nb])
            .map(|((qb, kb), s)| s * qb.iter().zip(kb).map(|(a, b)| a * b.to_f32()).sum::<f32>())
            .sum();
    }
}

#[inline(always)]
pub(super) fn axpy<W: Elem>(acc: &mut [f32], a: f32, row: &[W]) {
    for (o, w) in acc.iter_mut().zip(row) {
        *o += a * w.to_f32();
    }
}

/// Eight independent lanes: the compiler vectorises this with whatever SIMD
/// the target has (SSE2, NEON), without reassociating a single sum.
pub(super) fn dot4<W: Elem>(x: &[f32], rows: [&[W]; 4]) -> [f32; 4] {
    let mut out = [0f32; 4];
    for (o, row) in out.iter_mut().zip(rows) {
        let mut acc = [0f32; 8];
        let (xc, xr) = x.split_at(x.len() / 8 * 8);
        let (wc, wr) = row.split_at(xc.len());
        for (xs, ws) in xc.chunks_exact(8).zip(wc.chunks_exact(8)) {
            for l in 0..8 {
                acc[l] += xs[l] * ws[l].to_f32();
            }
        }
        let mut s: f32 = acc.iter().sum();
        for (a, b) in xr.iter().zip(wr) {
            s += a * b.to_f32();
        }
        *o = s;
    }
    out
}

/// [`Elem::pv_rows`] row by row: [`Elem::pv`], or [`pv_scaled`] over an
/// int8 cache.
pub(super) fn pv_rows<W: Elem>(
    acc: &mut [f32],
    d: usize,
    p: &[f32],
    stride: usize,
    jl: usize,
    rows: &[W],
    scales: &[f32],
) {
    for (r, a) in acc.chunks_exact_mut(d).enumerate() {
        let pr = &p[r * stride..r * stride + jl];
        if scales.is_empty() {
            W::pv(a, pr, rows);
        } else {
            pv_scaled(a, pr, rows, scales);
        }
    }
}
