//! CPU kernels for the two operations that dominate a Qwen forward pass:
//! projections (activations × weightsᵀ) and attention.
//!
//! candle's CPU backend widens bf16 weights to f32 on every op and runs
//! attention through generic matmul + mask + softmax tensors. These kernels
//! work on the weight buffers in place instead:
//!
//! - [`Packed`] (in `packed`): projection weights repacked once, at load,
//!   into k-major panels of 32 rows on 2 MB pages. For a few rows (decode,
//!   one token per sequence) a matrix × vector product streams each panel
//!   front to back, f32/bf16/f16 read directly with AVX-512 or AVX2+FMA,
//!   split over all cores; for many rows (prefill, embedding) the
//!   AVX512-BF16 tile kernel reads bf16 panels as they are, and `gemm`
//!   takes the others widened to f32 four panels at a time. [`linear`]
//!   packs and multiplies in one call, for row-major weights.
//! - `q8`: GGUF Q8_0 weights in the same panels, multiplied as int8 with
//!   int8-quantized activations (`vpdpbusd`) in decode, widened to bf16
//!   panel by panel for prefill. Q4_0 and Q5_0 weights are re-encoded as
//!   Q8_0 at load, exactly (`requant`), and take the same path.
//! - [`attention`]: causal attention with online softmax over key tiles
//!   (flash-attention style): scores exist for one tile of keys at a time,
//!   so memory is O(rows × tile), keys and values are read straight from the
//!   KV cache buffers in their own dtype, grouped-query heads share each key
//!   tile, and the output comes out in (batch, time, heads × dim) order for
//!   the output projection.
//!   Over an int8 cache with AVX512-VNNI, decode's scores are integer
//!   products with the queries rounded to int8 blocks. Decode's two-row
//!   scores and weighted sums have AVX-512 and AVX2 instances for every
//!   cache type, int8 included.
//! - `heads`: the fused q/k/v rows cut into head-major q, k, v, with q/k
//!   norms and RoPE, in one pass.
//! - [`on_pool`]: runs a forward pass on a pool worker, the other workers
//!   polling for its parallel loops in decode.
//!
//! Everything here is safe to call; the `unsafe` blocks are SIMD intrinsics
//! behind runtime feature checks, `gemm` calls on bounds-checked slices,
//! and raw writes into output buffers that the kernels fill completely
//! (so they are not zeroed first).

use half::{bf16, f16};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `$f::<R>(args…)` with R = `$rows` as a const generic, for the register
/// tiles of 12 rows (`by_rows!(6; …)` for those of 6): R from the tile's
/// rows down to 2, and 1 for anything else.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_macros))]
macro_rules! by_rows {
    ($rows:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $rows {
            12 => $f::<12>($($arg),*),
            11 => $f::<11>($($arg),*),
            10 => $f::<10>($($arg),*),
            9 => $f::<9>($($arg),*),
            8 => $f::<8>($($arg),*),
            7 => $f::<7>($($arg),*),
            _ => by_rows!(6; $rows, $f($($arg),*)),
        }
    };
    (6; $rows:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $rows {
            6 => $f::<6>($($arg),*),
            5 => $f::<5>($($arg),*),
            4 => $f::<4>($($arg),*),
            3 => $f::<3>($($arg),*),
            2 => $f::<2>($($arg),*),
            _ => $f::<1>($($arg),*),
        }
    };
}

mod amx;
mod attention;
mod heads;
mod packed;
mod q8;
pub mod requant;
#[cfg(target_arch = "x86_64")]
pub use amx::{ceiling as amx_ceiling, Ceiling as AmxCeiling};
pub use heads::{split_heads, HeadSplit};
pub use packed::{Buf, Packed, Zeroable};

/// A weight or cache element: f32, bf16 or f16.
pub trait Elem: Copy + Send + Sync + 'static {
    /// Writes `src` as f32 into `dst` (same length).
    fn widen(src: &[Self], dst: &mut [f32]);
    /// `src` itself, when it already is f32.
    fn as_f32(src: &[Self]) -> Option<&[f32]>;
    /// One element as f32.
    fn to_f32(self) -> f32;
    /// `x` arranged as [`Elem::dot4`] reads it (a copy, reordered where the
    /// SIMD path wants it).
    fn prepare(x: &[f32]) -> Vec<f32> {
        x.to_vec()
    }
    /// Dot products of a [`Elem::prepare`]d `x` with four rows, on this
    /// CPU's best path.
    fn dot4(x: &[f32], rows: [&[Self]; 4]) -> [f32; 4];
    /// Scores of two [`Elem::prepare`]d query rows against the `out[0].len()`
    /// keys in `keys` (rows of `d`) in one pass, with AVX-512 (panics
    /// unless the CPU has it and `d` is a multiple of 32). `scales`: empty,
    /// or the keys' [`KV_BLOCK`] scales (int8 caches).
    #[cfg(target_arch = "x86_64")]
    fn scores2_avx512(
        q: [&[f32]; 2],
        keys: &[Self],
        scales: &[f32],
        d: usize,
        out: [&mut [f32]; 2],
    );
    /// Row-major weights (n × k) packed for the projection kernels.
    fn pack(w: &[Self], n: usize, k: usize) -> Packed;
    /// The values as bf16, if that is what they are.
    fn as_bf16(_: &[Self]) -> Option<&[bf16]> {
        None
    }
    /// The values as int8, if that is what they are.
    fn as_i8(_: &[Self]) -> Option<&[i8]> {
        None
    }
    /// `acc += Σ_j p[j] · rows[j]` for `p.len()` rows of `acc.len()`
    /// elements each, laid out one after another in `rows`.
    fn pv(acc: &mut [f32], p: &[f32], rows: &[Self]) {
        pv_portable(acc, p, rows)
    }
    /// For each row r of `acc` (rows of `d`), adds the `jl` rows of values
    /// weighted by `p[r * stride..][..jl]`: the weighted sums of attention
    /// for several query rows that share one tile of values. `scales`:
    /// empty, or the values' [`KV_BLOCK`] scales (int8 caches). Rows of
    /// `rows` after the first `jl` (the next tile's) are only prefetched.
    #[allow(clippy::too_many_arguments)]
    fn pv_rows(
        acc: &mut [f32],
        d: usize,
        p: &[f32],
        stride: usize,
        jl: usize,
        rows: &[Self],
        scales: &[f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() && Self::pv_rows_avx512(acc, d, p, stride, jl, rows, scales) {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() && has_f16c() && d.is_multiple_of(32) {
            // Also the AVX-512 CPU's path for heads its kernel leaves.
            return Self::pv_rows_avx2(acc, d, p, stride, jl, rows, scales);
        }
        for (r, a) in acc.chunks_exact_mut(d).enumerate() {
            let pr = &p[r * stride..r * stride + jl];
            if scales.is_empty() {
                Self::pv(a, pr, rows);
            } else {
                pv_scaled(a, pr, rows, scales);
            }
        }
    }
    /// [`Elem::pv_rows`] with AVX-512 (panics unless the CPU has it), for
    /// the head sizes it handles (64 and 128); false for others.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn pv_rows_avx512(
        _acc: &mut [f32],
        _d: usize,
        _p: &[f32],
        _stride: usize,
        _jl: usize,
        _rows: &[Self],
        _scales: &[f32],
    ) -> bool {
        false
    }
    /// [`Elem::scores2_avx512`] at AVX2's width (panics unless the CPU has
    /// AVX2, FMA and F16C and `d` is a multiple of 32). The queries are in
    /// AVX2's order: as [`prepare`](Elem::prepare) leaves them on a CPU
    /// without AVX-512 (bf16's blocks of 16 split into evens and odds).
    #[cfg(target_arch = "x86_64")]
    fn scores2_avx2(q: [&[f32]; 2], keys: &[Self], scales: &[f32], d: usize, out: [&mut [f32]; 2]);
    /// [`Elem::pv_rows`] at AVX2's width (panics unless the CPU has AVX2,
    /// FMA and F16C), two query rows per pass over the values, for heads
    /// that are a multiple of 32.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn pv_rows_avx2(
        acc: &mut [f32],
        d: usize,
        p: &[f32],
        stride: usize,
        jl: usize,
        rows: &[Self],
        scales: &[f32],
    );
    /// `acc += a · row`.
    fn axpy(acc: &mut [f32], a: f32, row: &[Self]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { axpy_avx2(acc, a, row) };
        }
        axpy_body(acc, a, row)
    }
}

/// [`Elem::pv`] as a row-by-row axpy.
fn pv_portable<W: Elem>(acc: &mut [f32], p: &[f32], rows: &[W]) {
    let d = acc.len();
    for (j, &pj) in p.iter().enumerate() {
        if pj != 0.0 {
            W::axpy(acc, pj, &rows[j * d..(j + 1) * d]);
        }
    }
}

/// [`Elem::pv`] over rows with [`KV_BLOCK`] scales: each block of a row
/// weighted by its probability times its scale.
fn pv_scaled<W: Elem>(acc: &mut [f32], p: &[f32], rows: &[W], scales: &[f32]) {
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
fn scores_scaled<W: Elem>(q: &[f32], keys: &[W], scales: &[f32], out: &mut [f32]) {
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

/// The same loop compiled for AVX2+FMA (the compiler vectorises it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2<W: Elem>(acc: &mut [f32], a: f32, row: &[W]) {
    axpy_body(acc, a, row)
}

#[inline(always)]
fn axpy_body<W: Elem>(acc: &mut [f32], a: f32, row: &[W]) {
    for (o, w) in acc.iter_mut().zip(row) {
        *o += a * w.to_f32();
    }
}

/// An [`Elem`]'s decode kernels at AVX-512's width (two-row scores for any
/// head that is a multiple of 32, the two-row weighted sum for heads of 64
/// and 128) and at AVX2's (both for heads that are a multiple of 32). Each
/// asserts that the CPU has its features; the kernels check the lengths.
macro_rules! simd_rows {
    ($t:ty, $scores:ident, $pv:ident) => {
        #[cfg(target_arch = "x86_64")]
        fn scores2_avx2(
            q: [&[f32]; 2],
            keys: &[$t],
            scales: &[f32],
            d: usize,
            out: [&mut [f32]; 2],
        ) {
            assert!(has_avx2_fma() && has_f16c(), "AVX2, FMA and F16C");
            // SAFETY: the CPU has the features (asserted above); the kernel
            // checks the lengths.
            unsafe { avx2::$scores(q, keys, scales, d, out) }
        }
        #[cfg(target_arch = "x86_64")]
        fn pv_rows_avx2(
            acc: &mut [f32],
            d: usize,
            p: &[f32],
            stride: usize,
            jl: usize,
            rows: &[$t],
            scales: &[f32],
        ) {
            assert!(has_avx2_fma() && has_f16c(), "AVX2, FMA and F16C");
            // SAFETY: as above.
            unsafe { avx2::$pv(acc, d, p, stride, jl, rows, scales) }
        }
        #[cfg(target_arch = "x86_64")]
        fn scores2_avx512(
            q: [&[f32]; 2],
            keys: &[$t],
            scales: &[f32],
            d: usize,
            out: [&mut [f32]; 2],
        ) {
            assert!(has_avx512(), "AVX-512");
            // SAFETY: the CPU has AVX-512F (asserted above) and F16C, as
            // every AVX-512 CPU; the kernel checks the lengths.
            unsafe { avx512::$scores(q, keys, scales, d, out) }
        }
        #[cfg(target_arch = "x86_64")]
        fn pv_rows_avx512(
            acc: &mut [f32],
            d: usize,
            p: &[f32],
            stride: usize,
            jl: usize,
            rows: &[$t],
            scales: &[f32],
        ) -> bool {
            assert!(has_avx512(), "AVX-512");
            // SAFETY: as above.
            unsafe {
                match d {
                    128 => avx512::$pv::<8>(acc, p, stride, jl, rows, scales),
                    64 => avx512::$pv::<4>(acc, p, stride, jl, rows, scales),
                    _ => return false,
                }
            }
            true
        }
    };
}

impl Elem for f32 {
    simd_rows!(f32, scores2_f32, pv_rows_f32);
    fn pack(w: &[f32], n: usize, k: usize) -> Packed {
        Packed::from_f32(w, n, k)
    }
    fn widen(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn as_f32(src: &[f32]) -> Option<&[f32]> {
        Some(src)
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn pv(acc: &mut [f32], p: &[f32], rows: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() && acc.len().is_multiple_of(64) {
            // SAFETY: the CPU has the features (checked above); the kernel
            // checks the lengths.
            return unsafe { avx2::pv_f32(acc, p, rows) };
        }
        pv_portable(acc, p, rows)
    }
    fn dot4(x: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { avx512::dot4_f32(x, rows) };
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { avx2::dot4_f32(x, rows) };
        }
        dot4_portable(x, rows)
    }
}

impl Elem for bf16 {
    simd_rows!(bf16, scores2_bf16, pv_rows_bf16);
    fn pack(w: &[bf16], n: usize, k: usize) -> Packed {
        Packed::from_bf16(w, n, k)
    }
    fn as_bf16(src: &[bf16]) -> Option<&[bf16]> {
        Some(src)
    }
    fn widen(src: &[bf16], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            // bf16 is the upper half of an f32.
            *d = f32::from_bits((s.to_bits() as u32) << 16);
        }
    }
    fn as_f32(_: &[bf16]) -> Option<&[f32]> {
        None
    }
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    /// Each full block of 16 (32 with AVX-512) becomes its even elements,
    /// then its odd ones: the kernels widen a load of bf16 pairs into the
    /// even lanes (shift) and the odd lanes (mask) without shuffles.
    fn prepare(x: &[f32]) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx512() {
                return evens_then_odds(x, 32);
            } else if has_avx2_fma() {
                return evens_then_odds(x, 16);
            }
        }
        x.to_vec()
    }
    fn pv(acc: &mut [f32], p: &[f32], rows: &[bf16]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() && acc.len().is_multiple_of(64) {
            // SAFETY: the CPU has the features (checked above); the kernel
            // checks the lengths.
            return unsafe { avx2::pv_bf16(acc, p, rows) };
        }
        pv_portable(acc, p, rows)
    }
    fn dot4(x: &[f32], rows: [&[bf16]; 4]) -> [f32; 4] {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked above), and
            // `prepare` arranged `x` for this kernel.
            return unsafe { avx512::dot4_bf16_pairs(x, rows) };
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above), and
            // `prepare` arranged `x` for this kernel.
            return unsafe { avx2::dot4_bf16_pairs(x, rows) };
        }
        dot4_portable(x, rows)
    }
}

impl Elem for f16 {
    simd_rows!(f16, scores2_f16, pv_rows_f16);
    fn pack(w: &[f16], n: usize, k: usize) -> Packed {
        Packed::from_f16(w, n, k)
    }
    fn widen(src: &[f16], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
    fn as_f32(_: &[f16]) -> Option<&[f32]> {
        None
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn pv(acc: &mut [f32], p: &[f32], rows: &[f16]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma()
            && std::arch::is_x86_feature_detected!("f16c")
            && acc.len().is_multiple_of(64)
        {
            // SAFETY: the CPU has the features (checked above); the kernel
            // checks the lengths.
            return unsafe { avx2::pv_f16(acc, p, rows) };
        }
        pv_portable(acc, p, rows)
    }
    fn dot4(x: &[f32], rows: [&[f16]; 4]) -> [f32; 4] {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() && has_f16c() {
            // SAFETY: the CPU supports AVX-512F and F16C (checked above).
            return unsafe { avx512::dot4_f16(x, rows) };
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() && has_f16c() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked above).
            return unsafe { avx2::dot4_f16(x, rows) };
        }
        dot4_portable(x, rows)
    }
}

/// `x` with each full block of `block` elements reordered as its even
/// elements, then its odd ones (bf16's [`Elem::prepare`]); a short tail
/// stays in order.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn evens_then_odds(x: &[f32], block: usize) -> Vec<f32> {
    let mut p = x.to_vec();
    for (dst, src) in p.chunks_exact_mut(block).zip(x.chunks_exact(block)) {
        for i in 0..block / 2 {
            dst[i] = src[2 * i];
            dst[block / 2 + i] = src[2 * i + 1];
        }
    }
    p
}

/// An int8 cache element. Its decode kernels take the blocks' scales
/// ([`attention_scaled`] passes them) and multiply each widened block by
/// its own; `dot4` and `pv` see plain integers.
impl Elem for i8 {
    simd_rows!(i8, scores2_i8, pv_rows_i8);
    fn as_i8(src: &[i8]) -> Option<&[i8]> {
        Some(src)
    }
    fn pack(w: &[i8], n: usize, k: usize) -> Packed {
        let wide: Vec<f32> = w.iter().map(|&v| f32::from(v)).collect();
        Packed::from_f32(&wide, n, k)
    }
    fn widen(src: &[i8], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f32::from(s);
        }
    }
    fn as_f32(_: &[i8]) -> Option<&[f32]> {
        None
    }
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
    fn dot4(x: &[f32], rows: [&[i8]; 4]) -> [f32; 4] {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { avx512::dot4_i8(x, rows) };
        }
        dot4_portable(x, rows)
    }
}

/// Whether a buffer of `len` holds `rows` rows of `width` (false when the
/// product overflows): the SIMD kernels' bounds checks, which must hold in
/// release builds too.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn holds(len: usize, rows: usize, width: usize) -> bool {
    rows.checked_mul(width).is_some_and(|n| len >= n)
}

/// Whether a buffer of `len` holds `rows` rows of `width` spaced `stride`
/// apart (the last one need only be `width` long).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn strided_holds(len: usize, rows: usize, stride: usize, width: usize) -> bool {
    rows == 0
        || (rows - 1)
            .checked_mul(stride)
            .and_then(|n| n.checked_add(width))
            .is_some_and(|n| len >= n)
}

/// Elements per scale in an int8 KV cache row, as in GGUF's Q8_0 blocks:
/// an outlier channel coarsens only its own block.
pub const KV_BLOCK: usize = 32;
// The AVX2 and AVX-512 int8 kernels index scales per 32 elements.
const _: () = assert!(KV_BLOCK == 32);

/// The int8 cache's elements per scale for head size `d`: [`KV_BLOCK`],
/// or the whole row when `d` is not a multiple of it.
pub fn kv_block(d: usize) -> usize {
    if d.is_multiple_of(KV_BLOCK) {
        KV_BLOCK
    } else {
        d.max(1)
    }
}

/// A query row rounded to int8 per [`KV_BLOCK`], for the int8 cache's
/// integer scores (`vpdpbusd`, as llama.cpp's Q8_0 × Q8_0 dot).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct QueryI8 {
    /// The int8 row.
    q: Vec<i8>,
    /// Per group of 4 elements (an int32 lane of the product):
    /// −128 · their sum, which cancels the +128 that makes keys unsigned.
    corr: Vec<i32>,
    /// Per group of 4: its block's scale.
    scales: Vec<f32>,
}

impl QueryI8 {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn new(x: &[f32]) -> QueryI8 {
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
#[cfg(target_arch = "x86_64")]
fn vnni_scores_run(d: usize) -> bool {
    has_avx512vnni() && matches!(d, 64 | 128 | 192 | 256 | 512)
}

/// [`avx512::scores2_i8_vnni`] for heads of `d`; false, having done
/// nothing, where it does not run ([`vnni_scores_run`]).
#[cfg(target_arch = "x86_64")]
fn scores2_vnni(
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
            64 => avx512::scores2_i8_vnni::<1>(q, keys, scales, out),
            128 => avx512::scores2_i8_vnni::<2>(q, keys, scales, out),
            192 => avx512::scores2_i8_vnni::<3>(q, keys, scales, out),
            256 => avx512::scores2_i8_vnni::<4>(q, keys, scales, out),
            512 => avx512::scores2_i8_vnni::<8>(q, keys, scales, out),
            _ => return false,
        }
    }
    true
}

/// Runs of `d` values rounded to int8 with one scale each (the run's
/// largest magnitude over 127): `x ≈ scale · q`. The int8 KV cache rounds
/// [`kv_block`]s of its rows; Q8_0 products, blocks of activations.
pub fn quantize_rows(x: &[f32], d: usize, q: &mut [i8], scales: &mut [f32]) {
    assert!(d > 0 && x.len() == q.len() && x.len() == scales.len() * d);
    for ((row, qr), s) in x.chunks_exact(d).zip(q.chunks_exact_mut(d)).zip(scales) {
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        *s = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (o, v) in qr.iter_mut().zip(row) {
            // Rounded half away from zero, as `round` (a libm call per
            // element); |v · inv| ≤ 127 by the choice of scale.
            let r = v * inv;
            *o = ((r + 0.5f32.copysign(r)) as i32).clamp(-127, 127) as i8;
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        simd_cap() >= 1
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    })
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| simd_cap() >= 2 && std::arch::is_x86_feature_detected!("avx512f"))
}

#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("f16c"))
}

#[cfg(target_arch = "x86_64")]
fn has_avx512bf16() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| has_avx512() && std::arch::is_x86_feature_detected!("avx512bf16"))
}

#[cfg(target_arch = "x86_64")]
fn has_avx512vnni() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx512()
            && has_f16c()
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    })
}

/// bf16 × bf16 → f32 matrix products with AVX512-BF16 (`vdpbf16ps`).
///
/// `out (m × n) = x (m × k) · wᵀ` with `w` (n × k) bf16, packed once at
/// load ([`Packed`]) in panels of 32 rows where one 64-byte load holds the
/// same k pair of 16 rows. Activations are rounded to bf16 once, as pairs
/// along k (one u32 per pair, k padded to even). Each task runs a 12 × 32
/// register tile down all rows of `x` for one panel: per k pair, 2 loads,
/// 12 broadcasts and 24 `vdpbf16ps` (768 multiply-adds).
#[cfg(target_arch = "x86_64")]
mod bf16gemm;

/// The widest SIMD the kernels may use: `SHIRABE_SIMD=none|avx2|avx512`
/// (`avx512`: no AMX tiles; default: whatever the CPU has), for comparing
/// paths and for CPUs that slow down on AVX-512.
#[cfg(target_arch = "x86_64")]
fn simd_cap() -> u8 {
    match std::env::var("SHIRABE_SIMD").as_deref() {
        Ok("none") => 0,
        Ok("avx2") => 1,
        Ok("avx512") => 2,
        _ => 3,
    }
}

/// Four dot products of `x` with rows of `$t` (attention's scores in
/// decode), for one SIMD width: `$lanes` f32 lanes per register, its
/// zero / load / fused multiply-add / add intrinsics, `$sum` adding a
/// register's lanes, `$load` turning `$lanes` elements into f32.
/// Two accumulators per row, prefetching `PREFETCH_AHEAD` ahead.
#[cfg(target_arch = "x86_64")]
macro_rules! dot4 {
    ($name:ident, $t:ty, $features:literal, $lanes:literal,
     [$zero:ident, $loadu:ident, $fmadd:ident, $add:ident], $sum:path, |$p:ident| $load:expr) => {
        /// # Safety
        /// The CPU must support the enabled features; every row must be
        /// at least as long as `x`.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(x: &[f32], rows: [&[$t]; 4]) -> [f32; 4] {
            let hint = super::cache_hint();
            let k = x.len();
            assert!(rows.iter().all(|r| r.len() >= k));
            let xp = x.as_ptr();
            let p = rows.map(|r| r.as_ptr());
            let mut a = [$zero(); 8];
            let mut i = 0;
            while i + 2 * $lanes <= k {
                let x0 = $loadu(xp.add(i));
                let x1 = $loadu(xp.add(i + $lanes));
                for r in 0..4 {
                    super::prefetch(
                        hint,
                        (p[r].wrapping_add(i) as *const i8).wrapping_add(super::PREFETCH_AHEAD),
                    );
                    let $p = p[r].add(i);
                    a[2 * r] = $fmadd(x0, $load, a[2 * r]);
                    let $p = p[r].add(i + $lanes);
                    a[2 * r + 1] = $fmadd(x1, $load, a[2 * r + 1]);
                }
                i += 2 * $lanes;
            }
            let mut out = [0f32; 4];
            for r in 0..4 {
                out[r] = $sum($add(a[2 * r], a[2 * r + 1]));
                for j in i..k {
                    out[r] += x[j] * super::Elem::to_f32(rows[r][j]);
                }
            }
            out
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Eight independent lanes: the compiler vectorises this with whatever SIMD
/// the target has (SSE2, NEON), without reassociating a single sum.
fn dot4_portable<W: Elem>(x: &[f32], rows: [&[W]; 4]) -> [f32; 4] {
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

#[cfg(target_arch = "x86_64")]
mod avx2;

/// The first `take` (at most 4) of four sums to `o` (the keys' scores of a
/// tile of four, the last tile maybe short): one store when whole (SSE,
/// which every x86-64 CPU has).
///
/// # Safety
/// `o` must be writable for `take` floats.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn store_sums(o: *mut f32, sums: std::arch::x86_64::__m128, take: usize) {
    use std::arch::x86_64::_mm_storeu_ps;
    if take == 4 {
        _mm_storeu_ps(o, sums);
    } else {
        let mut s = [0f32; 4];
        _mm_storeu_ps(s.as_mut_ptr(), sums);
        std::ptr::copy_nonoverlapping(s.as_ptr(), o, take);
    }
}

/// How far ahead of its reads each streaming kernel prefetches, in bytes
/// (a fixed distance: the lead is what matters). Over the packed panels,
/// 8 KB: on Zen 5 in fast minutes (the yardstick at 65+ GB/s) the panel
/// kernel read at 82% of the yardstick against 76% at 16 KB, over
/// 331 paired rounds, and the same in its slower minutes.
pub(crate) const PREFETCH_AHEAD: usize = 8192;

/// The prefetch hint for data read once and streamed (weights in decode).
/// The best one depends on the CPU, so it is chosen per CPU family
/// ([`Cpu::stream_hint`]); the bandwidth yardstick tries every hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamHint {
    /// `prefetchnta`.
    Nta,
    /// `prefetcht1` (into L2).
    T1,
    /// `prefetcht0`.
    T0,
    /// No software prefetch: the hardware's prefetchers alone.
    None,
}

impl StreamHint {
    /// Every hint, for the yardstick to take the best of.
    pub const ALL: [StreamHint; 4] = [
        StreamHint::Nta,
        StreamHint::T1,
        StreamHint::T0,
        StreamHint::None,
    ];

    fn parse(s: &str) -> Option<StreamHint> {
        Some(match s.trim() {
            "nta" => StreamHint::Nta,
            "t1" => StreamHint::T1,
            "t0" => StreamHint::T0,
            "none" => StreamHint::None,
            _ => return None,
        })
    }
}

/// The CPU kinds whose streaming reads were measured, each with its own
/// best prefetch hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cpu {
    /// AMD family 0x1A (Zen 5) and later.
    AmdZen5,
    /// Earlier AMD CPUs (family 0x19: Zen 3 and Zen 4).
    AmdEarlier,
    /// Intel and anything else.
    Other,
}

impl Cpu {
    fn detect() -> Cpu {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::__cpuid;
            if __cpuid(0).ebx.to_le_bytes() != *b"Auth" {
                return Cpu::Other;
            }
            let eax = __cpuid(1).eax;
            // The family: the base field, plus the extended one when the
            // base is 0xF (as every Zen's is).
            let base = (eax >> 8) & 0xF;
            let family = if base == 0xF {
                base + ((eax >> 20) & 0xFF)
            } else {
                base
            };
            if family >= 0x1A {
                Cpu::AmdZen5
            } else {
                Cpu::AmdEarlier
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Cpu::Other
    }

    /// For the weights decode streams. On Zen 5 non-temporal (`NTA`) read
    /// the panels at 85% of the yardstick against 82% with `T0` (313
    /// paired rounds); on an Intel Xeon (Sapphire Rapids class) `NTA`
    /// halved bf16 decode (6.1 tokens/s against 13.1 with `T1` and 11.9
    /// with none) by keeping lines out of L2, where Intel's own streamer
    /// works; on Zen 4 (EPYC, family 0x19 model 0x11) software hints only
    /// got in the hardware's way: two cores streaming 256 MB read 53–56
    /// GB/s in fast minutes with none or `T1` against 37–41 with `NTA` or
    /// `T0` (30–33 against 26–30 in slow ones), and bf16 decode of
    /// Qwen3-0.6B ran at 21.2–22.2 tokens/s with none against 18.3–20.0
    /// with `NTA` in four alternating rounds (Zen 3 showed no difference).
    fn stream_hint(self) -> StreamHint {
        match self {
            Cpu::AmdZen5 => StreamHint::Nta,
            Cpu::AmdEarlier => StreamHint::None,
            Cpu::Other => StreamHint::T1,
        }
    }

    /// For decode attention's reads of the KV cache: `T0` on Zen 5 (what
    /// those kernels were tuned with there), `T1` elsewhere — on the Xeon
    /// a bf16 cache of 2,048 tokens took 9.6–10.6 ms per step over 28
    /// layers with `T1` against 11.6–13.8 with `T0`; on Zen 4 7.7–10.1
    /// against 8.8–9.6 (f32 cache 16.0–19.3 against 17.2–23.1).
    fn cache_hint(self) -> StreamHint {
        match self {
            Cpu::AmdZen5 => StreamHint::T0,
            Cpu::AmdEarlier | Cpu::Other => StreamHint::T1,
        }
    }
}

/// This CPU's prefetch hint for streamed weights, chosen once.
pub fn stream_hint() -> StreamHint {
    static HINT: std::sync::OnceLock<StreamHint> = std::sync::OnceLock::new();
    *HINT.get_or_init(|| {
        hint_override()
            .0
            .unwrap_or_else(|| Cpu::detect().stream_hint())
    })
}

/// This CPU's prefetch hint for the KV cache in decode, chosen once.
pub fn cache_hint() -> StreamHint {
    static HINT: std::sync::OnceLock<StreamHint> = std::sync::OnceLock::new();
    *HINT.get_or_init(|| {
        hint_override()
            .1
            .unwrap_or_else(|| Cpu::detect().cache_hint())
    })
}

/// `SHIRABE_PREFETCH=HINT` for both, or `WEIGHTS,CACHE`: each `nta`,
/// `t1`, `t0` or `none` (anything else keeps the CPU's own choice).
fn hint_override() -> (Option<StreamHint>, Option<StreamHint>) {
    parse_hints(std::env::var("SHIRABE_PREFETCH").ok().as_deref())
}

fn parse_hints(v: Option<&str>) -> (Option<StreamHint>, Option<StreamHint>) {
    let Some(v) = v else {
        return (None, None);
    };
    match v.split_once(',') {
        Some((w, c)) => (StreamHint::parse(w), StreamHint::parse(c)),
        None => (StreamHint::parse(v), StreamHint::parse(v)),
    }
}

/// One prefetch of the line at `p` with `hint`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch(hint: StreamHint, p: *const i8) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_NTA, _MM_HINT_T0, _MM_HINT_T1};
    // SAFETY: a prefetch never faults, whatever the address.
    unsafe {
        match hint {
            StreamHint::Nta => _mm_prefetch(p, _MM_HINT_NTA),
            StreamHint::T1 => _mm_prefetch(p, _MM_HINT_T1),
            StreamHint::T0 => _mm_prefetch(p, _MM_HINT_T0),
            StreamHint::None => {}
        }
    }
}

/// The sum of `x`, read the way the matrix × vector kernels read weights
/// (wide loads, software prefetch [`PREFETCH_AHEAD`] bytes ahead with
/// `hint`): the benchmark's yardstick for memory bandwidth, taken with
/// every hint and the best kept, so that a kernel's fraction of it is not
/// flattered by a slower reader.
pub fn stream_sum(x: &[f32], hint: StreamHint) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 detected; loads stay within `x`.
        return unsafe { stream_sum_avx2(x, hint) };
    }
    let _ = hint;
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stream_sum_avx2(x: &[f32], hint: StreamHint) -> f32 {
    use std::arch::x86_64::*;
    let p = x.as_ptr();
    let mut a = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= x.len() {
        prefetch(hint, (p.add(i) as *const i8).wrapping_add(PREFETCH_AHEAD));
        prefetch(
            hint,
            (p.add(i) as *const i8).wrapping_add(PREFETCH_AHEAD + 64),
        );
        for (l, al) in a.iter_mut().enumerate() {
            *al = _mm256_add_ps(*al, _mm256_loadu_ps(p.add(i + 8 * l)));
        }
        i += 32;
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(
        lanes.as_mut_ptr(),
        _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])),
    );
    lanes.iter().sum::<f32>() + x[i..].iter().sum::<f32>()
}

/// Runs `f` on a worker of rayon's pool, so the kernels' parallel loops
/// split work from there instead of waking the pool and sleeping on a
/// latch for each of the hundreds of operations of a decode step. With
/// `spin`, the pool's other workers poll for work until `f` returns
/// (rayon would put them to sleep between two products, and a sleeping
/// worker joins the next product only after a wake-up of tens of µs, as
/// long as a small decode projection takes): for work made of many short
/// parallel loops.
///
/// The pollers are detached: `f` never waits for them. Every worker gets
/// one, by a broadcast (a spawned poller could be taken by `f`'s own
/// thread while it waits in a join, leaving the other worker of a 2-core
/// pool without one); the one on `f`'s own thread returns at once, and
/// every poller gives up after [`POLL_IDLE`] without finding work, so a
/// worker that picked one up while waiting for something else (another
/// caller's join) is held up for at most that long. They stop when `f`
/// returns or unwinds.
pub fn on_pool<R: Send>(spin: bool, f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    /// Sets the flag when dropped: on return and on unwinding.
    struct Done(Arc<AtomicBool>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    rayon::scope(|_| {
        let done = Done(Arc::new(AtomicBool::new(false)));
        if spin {
            let home = rayon::current_thread_index();
            let flag = Arc::clone(&done.0);
            rayon::spawn_broadcast(move |ctx| {
                if Some(ctx.index()) == home {
                    return;
                }
                let mut idle_since = std::time::Instant::now();
                while !flag.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        idle_since = std::time::Instant::now();
                    } else if idle_since.elapsed() > POLL_IDLE {
                        return;
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        f()
    })
}

/// Guided self-scheduling of `items` over `threads`: the starts of
/// consecutive tasks (and `items` last), each task a share of what is
/// left — half of it split between the threads, at most `most` and at
/// least one item — so the first tasks are long (few claims, long
/// streams) and the last ones short: the cores finish a parallel loop
/// together to within one item instead of one task of a fixed size.
pub(crate) fn guided_splits(items: usize, threads: usize, most: usize) -> Vec<usize> {
    let (threads, most) = (threads.max(1), most.max(1));
    let mut starts = vec![0];
    let mut at = 0;
    while at < items {
        at += (items - at).div_ceil(2 * threads).clamp(1, most);
        starts.push(at);
    }
    starts
}

/// Runs `f` on every task of `splits` (from [`guided_splits`]), the
/// tasks claimed in order from a shared counter by one job per thread of
/// the pool: a core that is done takes the next task, and the short ones
/// come last. (Rayon's splitting of a range would hand one core the last,
/// short tasks while the other still had the long ones.)
pub(crate) fn for_each_guided(splits: &[usize], f: impl Fn(std::ops::Range<usize>) + Sync) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let tasks = splits.len().saturating_sub(1);
    let next = AtomicUsize::new(0);
    let jobs = rayon::current_num_threads().clamp(1, tasks.max(1));
    (0..jobs)
        .into_par_iter()
        .with_max_len(1)
        .for_each(|_| loop {
            let t = next.fetch_add(1, Ordering::Relaxed);
            if t >= tasks {
                break;
            }
            f(splits[t]..splits[t + 1]);
        });
}

/// How long an [`on_pool`] poller spins without finding work before it
/// leaves the worker to rayon (longer than any pause within a decode step).
pub const POLL_IDLE: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether this CPU runs the int8 KV cache's decode kernels (AVX-512, or
/// AVX2 with FMA and F16C; for heads that are a multiple of 32, as
/// Qwen's); elsewhere a portable loop does, slower than a float cache's
/// kernels.
pub fn fast_int8_cache() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx512() || (has_avx2_fma() && has_f16c())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows of activations at or below which [`linear`] streams weights as a
/// matrix × vector product instead of calling `gemm`.
pub const GEMV_MAX_ROWS: usize = 4;

/// Raw output pointer shared by tasks that write disjoint parts.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: every task writes only its own, disjoint region.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `SendPtr`).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst (m × n, row stride dst_rs) = lhs · rhs` (or `+=` with
/// `accumulate`): `lhs` is m × k row-major with row stride `lhs_rs`; rhs
/// element (p, j) sits at `p * rhs_rs + j * rhs_cs`, so a row-major matrix
/// read transposed is just swapped strides. The one place `gemm` is called.
///
/// # Safety
/// `dst` must be valid for writes of the m × n block, which no other thread
/// touches meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(lhs.len() >= (m - 1) * lhs_rs + k, "lhs too short");
    assert!(
        rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs,
        "rhs too short"
    );
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.as_ptr(),
        1,
        lhs_rs as isize,
        rhs.as_ptr(),
        rhs_cs as isize,
        rhs_rs as isize,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        par,
    );
}

/// `x` (m × k, row-major) times `w`ᵀ, with `w` (n × k) as checkpoints store
/// projections: returns m × n. Packs `w` first (see [`Packed`]); a model
/// packs its weights once, at load, and calls [`Packed::linear`].
pub fn linear<W: Elem>(x: &[f32], m: usize, k: usize, w: &[W], n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "activations");
    assert_eq!(w.len(), n * k, "weights");
    W::pack(w, n, k).linear(x, m)
}

/// [`Elem::scores2_avx512`] or [`Elem::scores2_avx2`].
#[cfg(target_arch = "x86_64")]
type TwoRowScores<K> = fn([&[f32]; 2], &[K], &[f32], usize, [&mut [f32]; 2]);

/// The shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// Sequences.
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` is a multiple).
    pub kv_heads: usize,
    /// New query tokens per sequence.
    pub t: usize,
    /// Head dimension.
    pub dim: usize,
    /// Tokens cached before these queries (the first query's key index).
    pub past: usize,
    /// Keys in the cache, `past + t`.
    pub keys: usize,
    /// Rows between one (batch, kv head) and the next in the cache buffers
    /// (the buffers' capacity).
    pub cap: usize,
}

/// Keys per tile of the online softmax.
const KEY_TILE: usize = 256;
/// Keys per tile for few query rows: the tile stays in L1 while every row
/// reads it.
const KEY_TILE_SMALL: usize = 256;
/// Query rows (over the heads of a group) per task.
const QUERY_ROWS: usize = 64;
/// The fewest keys decode's attention gives one task when it splits a
/// head's keys between cores (a range's partial sums cost a merge).
const MIN_SPLIT_KEYS: usize = 512;
/// Tasks with at most this many query rows (decode) use dot products and
/// axpys on the cache rows instead of `gemm`, whose packing would dominate.
const SMALL_ROWS: usize = 8;

pub use attention::{attention, attention_scaled};

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
fn fast_exp(x: f32) -> f32 {
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

#[cfg(test)]
mod tests;
