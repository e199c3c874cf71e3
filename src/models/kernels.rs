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
mod bf16gemm {
    use std::arch::x86_64::*;

    use half::bf16;
    use rayon::prelude::*;

    use super::SendPtr;

    const NR: usize = 32;
    const MR: usize = 12;

    /// Where the tile kernel's panels (kp × NR pairs each) come from: a
    /// packed bf16 matrix as it is, or a quantized one widened per panel.
    pub trait PanelSource: Sync {
        /// Panel `p`, borrowed or built in `scratch`.
        fn panel<'s>(&'s self, p: usize, scratch: &'s mut Vec<u32>) -> &'s [u32];
    }

    /// A bf16 matrix in panels: panel p at `p · kp · NR`.
    struct Bf16Panels<'a> {
        w: &'a [u32],
        kp: usize,
    }

    impl PanelSource for Bf16Panels<'_> {
        fn panel<'s>(&'s self, p: usize, _: &'s mut Vec<u32>) -> &'s [u32] {
            &self.w[p * self.kp * NR..(p + 1) * self.kp * NR]
        }
    }

    /// `out = x · wᵀ` with `w` already in panels (see [`super::Packed`]):
    /// panel p, pair q, row c at `(p · kp + q) · NR + c`. `out` must be
    /// valid for writes of m × n outputs; every one is written.
    pub fn gemm_packed(x: &[f32], m: usize, k: usize, w: &[u32], n: usize, out: SendPtr) {
        let kp = k.div_ceil(2);
        assert!(w.len() >= n.div_ceil(NR) * kp * NR, "packed weights");
        gemm_panels(x, m, k, &Bf16Panels { w, kp }, n, out);
    }

    /// `out = x · wᵀ` over the n / NR panels of `w`; `out` must be valid
    /// for writes of m × n outputs (row stride n), and every one is written.
    pub fn gemm_panels(
        x: &[f32],
        m: usize,
        k: usize,
        w: &impl PanelSource,
        n: usize,
        dst: SendPtr,
    ) {
        // Pairs per row; x as bf16 pairs, rows padded to an even length.
        let kp = k.div_ceil(2);
        assert_eq!(x.len(), m * k, "activations");
        // AMX tiles take 32 rows at a time: rows past m are zeros.
        let amx = super::amx::fits(kp);
        let rows = if amx {
            m.next_multiple_of(super::amx::ROWS)
        } else {
            m
        };
        let xb = if amx {
            // In tile order, 16 rows at a time.
            let mut xb = vec![0u32; rows * kp];
            xb.par_chunks_mut(16 * kp).enumerate().for_each_init(
                || vec![0u32; kp],
                |row, (g, group)| {
                    for r in 16 * g..(16 * g + 16).min(m) {
                        // SAFETY: the caller checked for AVX512-BF16; the
                        // row is initialised u32s, which it only overwrites.
                        unsafe {
                            let dst = &mut *(row.as_mut_slice() as *mut [u32]
                                as *mut [std::mem::MaybeUninit<u32>]);
                            to_pairs_into(&x[r * k..(r + 1) * k], dst)
                        };
                        for s in (0..kp).step_by(super::amx::STEP) {
                            let at = super::amx::tile_index(r % 16, s, kp);
                            group[at..at + super::amx::STEP]
                                .copy_from_slice(&row[s..s + super::amx::STEP]);
                        }
                    }
                },
            );
            xb
        } else {
            let mut xb = Vec::with_capacity(rows * kp);
            xb.spare_capacity_mut()[..m * kp]
                .par_chunks_mut(kp)
                .zip(x.par_chunks(k))
                // SAFETY: the caller checked for AVX512-BF16.
                .for_each(|(row, src)| unsafe { to_pairs_into(src, row) });
            // SAFETY: `to_pairs_into` wrote every pair of the m rows.
            unsafe { xb.set_len(m * kp) };
            xb
        };
        let panels = n.div_ceil(NR);
        // Rows of `x` per sweep over the panels: a block of activations
        // stays in L2 while every panel passes it, instead of each panel
        // pulling all of `x` from memory (MB × k bf16, 384 KB at k = 1,024;
        // for the AMX tiles, which go through rows faster, about 1 MB).
        const MB: usize = 16 * MR;
        let mb = if amx {
            let rows = super::amx::ROWS;
            ((1 << 20) / (kp * 4)).max(rows) / rows * rows
        } else {
            MB
        };
        for b0 in (0..m).step_by(mb) {
            let b1 = (b0 + mb).min(m);
            if !amx {
                // Two neighbouring panels (64 columns) per register tile.
                (0..panels.div_ceil(2)).into_par_iter().for_each_init(
                    || (Vec::new(), Vec::new()),
                    |(s0, s1), pair| {
                        let p = 2 * pair;
                        let j0 = p * NR;
                        let cols = (2 * NR).min(n - j0);
                        // A last lone panel goes in as both halves; the
                        // second half of its results is not stored.
                        let w0 = w.panel(p, s0);
                        let w1 = if p + 1 < panels {
                            w.panel(p + 1, s1)
                        } else {
                            w0
                        };
                        pair_rows(&xb, b0..b1, kp, [w0, w1], |row, t| {
                            // SAFETY: columns j0..j0+cols of `out` (m × n)
                            // belong to this task alone.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    t.as_ptr(),
                                    dst.get().add(row * n + j0),
                                    cols,
                                )
                            };
                        });
                    },
                );
                continue;
            }
            (0..panels)
                .into_par_iter()
                .for_each_init(Default::default, |(scratch, cbuf), pi| {
                    let j0 = pi * NR;
                    let cols = NR.min(n - j0);
                    let packed = w.panel(pi, scratch);
                    let put = |row: usize, t: &[f32]| {
                        // SAFETY: columns j0..j0+cols of `out` (m × n)
                        // belong to this task alone.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                t.as_ptr(),
                                dst.get().add(row * n + j0),
                                cols,
                            )
                        };
                    };
                    // SAFETY: column j0 of row 0 of the m × n outputs.
                    let direct = (cols == NR).then(|| (SendPtr(unsafe { dst.get().add(j0) }), n));
                    amx_rows(&xb, b0..b1, kp, packed, cbuf, direct, put);
                });
        }
    }

    /// k pairs of a panel per pass of [`amx_rows`]: 16 KB of the panel,
    /// which stay in L1 while every block of rows goes by (a whole panel,
    /// 64 KB at k = 1,024, would be read from L2 once per block, and the
    /// tiles would wait on the loads).
    const AMX_SPAN: usize = 128;

    /// [`panel_rows`] on AMX tiles, 32 rows per call: `x` holds whole
    /// blocks of 32 rows in tile order ([`super::amx::tile_order`]; zero
    /// rows past `rows.end`, which `put` does not receive). The partial sums of each pass over [`AMX_SPAN`] pairs
    /// wait in `cbuf`; with `direct` (row 0's first output and the row
    /// stride, for a whole panel of 32 columns), whole blocks store their
    /// results there instead of going through `put`.
    fn amx_rows(
        x: &[u32],
        rows: std::ops::Range<usize>,
        kp: usize,
        panel: &[u32],
        cbuf: &mut Vec<f32>,
        direct: Option<(SendPtr, usize)>,
        mut put: impl FnMut(usize, &[f32]),
    ) {
        use super::amx::{Tiles, ROWS};
        // Tile order indexes whole groups of 16 rows.
        debug_assert!(rows.start.is_multiple_of(16) && kp > 0);
        let blocks = rows.len().div_ceil(ROWS);
        assert!(x.len() >= (rows.start + blocks * ROWS) * kp && panel.len() >= kp * NR);
        // The first pass writes every block before any pass reads one.
        if cbuf.len() < blocks * ROWS * NR {
            cbuf.resize(blocks * ROWS * NR, 0.0);
        }
        let whole = |r0: usize| r0 + ROWS <= rows.end;
        // No rayon calls while the tiles are configured.
        let mut tiles = Tiles::new();
        for s0 in (0..kp).step_by(AMX_SPAN) {
            let span = s0..(s0 + AMX_SPAN).min(kp);
            let last = span.end == kp;
            for (bi, r0) in rows.clone().step_by(ROWS).enumerate() {
                let part = cbuf[bi * ROWS * NR..].as_mut_ptr();
                let (out, ld) = match direct {
                    // SAFETY: row r0 of the caller's m × n outputs.
                    Some((d, ld)) if last && whole(r0) => (unsafe { d.get().add(r0 * ld) }, ld),
                    _ => (part, NR),
                };
                // SAFETY: x holds the 32 rows from r0 (asserted), the
                // panel kp × 32 pairs; the partial sums are this block's
                // 32 × 32 of `cbuf`, and `out` is that or 32 rows of the
                // outputs (`direct`'s contract).
                unsafe {
                    tiles.block_at(
                        x[r0 * kp..].as_ptr(),
                        kp,
                        span.clone(),
                        panel.as_ptr(),
                        (s0 > 0).then_some((part, NR)),
                        (out, ld),
                    )
                };
            }
        }
        drop(tiles);
        for (bi, r0) in rows.clone().step_by(ROWS).enumerate() {
            if direct.is_some() && whole(r0) {
                continue;
            }
            for r in 0..ROWS.min(rows.end - r0) {
                let at = (bi * ROWS + r) * NR;
                put(r0 + r, &cbuf[at..at + NR]);
            }
        }
    }

    /// Rows `rows` of `x` (kp pairs each) times one panel (kp × NR), 12
    /// rows per tile; `put(row, outputs)` receives each row's 32 results.
    /// The caller checked for AVX512-BF16.
    fn panel_rows(
        x: &[u32],
        rows: std::ops::Range<usize>,
        kp: usize,
        panel: &[u32],
        mut put: impl FnMut(usize, &[f32]),
    ) {
        let mut i = rows.start;
        // Rows past `r` are neither written by `micro` nor read.
        let mut tile = [0f32; MR * NR];
        while i < rows.end {
            let r = MR.min(rows.end - i);
            // SAFETY: AVX512-BF16 (the caller's check); x holds rows i..i+r
            // of kp pairs, the panel kp × NR.
            unsafe { micro_rows(r, &x[i * kp..], kp, panel, &mut tile) };
            for rr in 0..r {
                put(i + rr, &tile[rr * NR..(rr + 1) * NR]);
            }
            i += r;
        }
    }

    /// Rows per register tile of [`micro2`] (`by_rows!(6; …)` picks them).
    const MR2: usize = 6;
    const _: () = assert!(MR2 == 6);

    /// Rows `rows` of `x` (kp pairs each) times two panels side by side
    /// (64 columns), 6 rows per tile; `put(row, outputs)` receives each
    /// row's 64 results. The caller checked for AVX512-BF16.
    fn pair_rows(
        x: &[u32],
        rows: std::ops::Range<usize>,
        kp: usize,
        panels: [&[u32]; 2],
        mut put: impl FnMut(usize, &[f32]),
    ) {
        let mut i = rows.start;
        let mut tile = [0f32; MR2 * 2 * NR];
        while i < rows.end {
            let r = MR2.min(rows.end - i);
            // SAFETY: AVX512-BF16 (the caller's check); x holds rows
            // i..i+r of kp pairs, each panel kp × NR (the kernel asserts).
            unsafe { by_rows!(6; r, micro2(&x[i * kp..], kp, panels, &mut tile)) };
            for rr in 0..r {
                put(i + rr, &tile[rr * 2 * NR..(rr + 1) * 2 * NR]);
            }
            i += r;
        }
    }

    /// `tile` (R × 64) = R rows of `x` (kp pairs each) · two panels: per
    /// k pair, four loads, a broadcast per row and four `vdpbf16ps` per row
    /// (a 12 × 32 tile needs a broadcast for every two).
    ///
    /// # Safety
    /// AVX512-BF16 must be available.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn micro2<const R: usize>(
        x: &[u32],
        kp: usize,
        panels: [&[u32]; 2],
        tile: &mut [f32; MR2 * 2 * NR],
    ) {
        assert!(R <= MR2 && x.len() >= (R - 1) * kp + kp);
        assert!(panels.iter().all(|p| p.len() >= kp * NR));
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let (p0, p1) = (panels[0].as_ptr(), panels[1].as_ptr());
        let rows: [*const u32; R] = std::array::from_fn(|r| x.as_ptr().add(r * kp));
        let load = |p: *const u32| -> __m512bh {
            std::mem::transmute(_mm512_loadu_si512(p as *const __m512i))
        };
        for p in 0..kp {
            let w = [
                load(p0.add(p * NR)),
                load(p0.add(p * NR + 16)),
                load(p1.add(p * NR)),
                load(p1.add(p * NR + 16)),
            ];
            for (a, row) in acc.iter_mut().zip(&rows) {
                let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(*row.add(p) as i32));
                for (al, wl) in a.iter_mut().zip(&w) {
                    *al = _mm512_dpbf16_ps(*al, b, *wl);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            for (l, al) in a.iter().enumerate() {
                _mm512_storeu_ps(tile.as_mut_ptr().add(r * 2 * NR + 16 * l), *al);
            }
        }
    }

    /// [`micro`] for `rows` (1..=12) rows.
    ///
    /// # Safety
    /// As [`micro`].
    unsafe fn micro_rows(rows: usize, x: &[u32], kp: usize, w: &[u32], tile: &mut [f32; MR * NR]) {
        by_rows!(rows, micro(x, kp, w, tile))
    }

    /// `out` (rows × `cols_total`, row stride `stride`) `=` or `+=` `x`
    /// (rows × kp pairs) times the panels in `packed` (each kp × NR).
    /// `x_tiles`: `x` already in AMX tile order ([`queries_in_tiles`]),
    /// or empty to have it made here.
    #[allow(clippy::too_many_arguments)]
    fn tiles(
        x: &[u32],
        x_tiles: &[u32],
        rows: usize,
        kp: usize,
        packed: &[u32],
        cols_total: usize,
        out: &mut [f32],
        stride: usize,
        accumulate: bool,
        bufs: &mut TileBufs,
    ) {
        let mut put = |row: usize, c0: usize, cols: usize, t: &[f32]| {
            let o = &mut out[row * stride + c0..][..cols];
            if accumulate {
                o.iter_mut().zip(&t[..cols]).for_each(|(o, t)| *o += t);
            } else {
                o.copy_from_slice(&t[..cols]);
            }
        };
        let amx = super::amx::fits(kp);
        // AMX takes whole blocks of 32 rows in tile order.
        let TileBufs { order, cbuf } = bufs;
        let xp = if amx && x_tiles.is_empty() {
            super::amx::tile_order_into(x, rows, kp, order);
            &order[..]
        } else {
            x_tiles
        };
        for (pn, panel) in packed.chunks_exact(kp * NR).enumerate() {
            let c0 = pn * NR;
            if c0 >= cols_total {
                break;
            }
            let cols = NR.min(cols_total - c0);
            let take = |row: usize, t: &[f32]| put(row, c0, cols, t);
            if amx {
                amx_rows(xp, 0..rows, kp, panel, cbuf, None, take);
            } else {
                panel_rows(x, 0..rows, kp, panel, take);
            }
        }
    }

    /// Buffers the attention tiles reuse from one key tile to the next
    /// (each call would otherwise allocate and zero them).
    #[derive(Default)]
    pub struct Scratch {
        /// The key or value tile as panels.
        pack: Vec<u32>,
        /// The probabilities as bf16 pairs.
        px: Vec<u32>,
        /// What [`tiles`] itself needs.
        tiles: TileBufs,
    }

    /// [`tiles`]' own buffers.
    #[derive(Default)]
    struct TileBufs {
        /// Rows in AMX tile order.
        order: Vec<u32>,
        /// The AMX partial sums.
        cbuf: Vec<f32>,
    }

    /// `qx` (rows × kp pairs) in AMX tile order when the tiles will take
    /// it, made once for all of a block's key tiles; else empty.
    pub fn queries_in_tiles(qx: &[u32], rows: usize, kp: usize) -> Vec<u32> {
        if super::amx::fits(kp) {
            super::amx::tile_order(qx, rows, kp)
        } else {
            Vec::new()
        }
    }

    /// Attention scores with `vdpbf16ps`: `st` (rows × jl) = `qx` (rows ×
    /// d/2 pairs, the scaled queries rounded to bf16) · the key tile
    /// (jl × d bf16)ᵀ; `qt` is `qx` by [`queries_in_tiles`].
    #[allow(clippy::too_many_arguments)]
    pub fn scores(
        qx: &[u32],
        qt: &[u32],
        rows: usize,
        d: usize,
        ks: &[bf16],
        jl: usize,
        st: &mut [f32],
        scratch: &mut Scratch,
    ) {
        let kp = d / 2;
        let Scratch {
            pack, tiles: bufs, ..
        } = scratch;
        // Every panel is packed over; a short last one is zeroed first, so
        // its unused columns (never stored) multiply zeros, not old keys.
        pack.resize(jl.div_ceil(NR) * kp * NR, 0);
        for (pn, panel) in pack.chunks_exact_mut(kp * NR).enumerate() {
            let keys = &ks[pn * NR * d..(pn * NR + NR).min(jl) * d];
            if keys.len() < NR * d {
                panel.fill(0);
            }
            super::packed::pack_pairs(keys, d, panel);
        }
        tiles(qx, qt, rows, kp, pack, jl, st, jl, false, bufs);
    }

    /// `acc` (rows × d) += `p` (rows × jl probabilities) · the value tile
    /// (jl × d bf16), with `vdpbf16ps`: the probabilities are rounded to
    /// bf16 pairs along the keys.
    pub fn weighted(
        p: &[f32],
        rows: usize,
        jl: usize,
        vs: &[bf16],
        d: usize,
        acc: &mut [f32],
        scratch: &mut Scratch,
    ) {
        // Key pairs, padded with zero pairs to whole AMX steps where the
        // tiles run.
        let jp = if super::amx::available() {
            jl.div_ceil(2).next_multiple_of(super::amx::STEP)
        } else {
            jl.div_ceil(2)
        };
        let Scratch {
            pack,
            px,
            tiles: bufs,
        } = scratch;
        px.resize(rows * jp, 0);
        let pairs = jl.div_ceil(2);
        for (r, row) in px.chunks_exact_mut(jp).enumerate() {
            // SAFETY: the caller checked for AVX512-BF16.
            unsafe { to_pairs(&p[r * jl..(r + 1) * jl], &mut row[..pairs]) };
            row[pairs..].fill(0);
        }
        let panels = d / NR;
        pack.resize(panels * jp * NR, 0);
        // Pairs past the keys multiply zeros.
        for panel in pack.chunks_exact_mut(jp * NR) {
            panel[pairs * NR..].fill(0);
        }
        for q in 0..pairs {
            let lo = &vs[2 * q * d..(2 * q + 1) * d];
            // An odd last key pairs with zeros.
            let zeros;
            let hi = match vs.get((2 * q + 1) * d..(2 * q + 2) * d) {
                Some(hi) => hi,
                None => {
                    zeros = vec![bf16::ZERO; d];
                    &zeros[..]
                }
            };
            // SAFETY: AVX512-BF16 CPUs have AVX512-BW (the caller checked
            // BF16); `d` is a multiple of NR here (the caller's `bf16_dp`).
            unsafe { interleave_pairs(lo, hi, &mut pack[q * NR..], jp * NR) };
        }
        tiles(px, &[], rows, jp, pack, d, acc, d, true, bufs);
    }

    /// Two value rows as one k pair of the value panels: for each block
    /// of NR columns c, `out[(c / NR) · stride + c % NR] = lo[c] | hi[c] << 16`,
    /// 16 pairs per word permute.
    ///
    /// # Safety
    /// AVX512-BW; `lo.len() == hi.len()`, a multiple of NR, and `out`
    /// long enough for every block.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn interleave_pairs(lo: &[bf16], hi: &[bf16], out: &mut [u32], stride: usize) {
        let d = lo.len();
        assert!(hi.len() == d && d.is_multiple_of(NR));
        assert!(out.len() >= (d / NR - 1) * stride + NR);
        /// Word 2i is lo[from + i], 2i + 1 is hi[from + i] (hi's words are
        /// 32..64 of the permute's pair).
        const fn order(from: usize) -> [i16; 32] {
            let mut o = [0i16; 32];
            let mut w = 0;
            while w < 32 {
                o[w] = (from + w / 2 + 32 * (w % 2)) as i16;
                w += 1;
            }
            o
        }
        const FIRST: [i16; 32] = order(0);
        const SECOND: [i16; 32] = order(16);
        let first = _mm512_loadu_si512(FIRST.as_ptr() as *const __m512i);
        let second = _mm512_loadu_si512(SECOND.as_ptr() as *const __m512i);
        for b in 0..d / NR {
            let l = _mm512_loadu_si512(lo.as_ptr().add(b * NR) as *const __m512i);
            let h = _mm512_loadu_si512(hi.as_ptr().add(b * NR) as *const __m512i);
            let o = out.as_mut_ptr().add(b * stride);
            _mm512_storeu_si512(o as *mut __m512i, _mm512_permutex2var_epi16(l, first, h));
            _mm512_storeu_si512(
                o.add(16) as *mut __m512i,
                _mm512_permutex2var_epi16(l, second, h),
            );
        }
    }

    /// Decode's scores for two query rows over a bf16 cache: the queries
    /// as bf16 pairs ([`to_pairs`]), so each 32 elements of a key are one
    /// load and one `vdpbf16ps` per row, four keys at a time.
    ///
    /// # Safety
    /// AVX512-BF16 must be available. Panics unless [`scores2_fits`] `d`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn scores2(q: [&[u32]; 2], keys: &[bf16], d: usize, out: [&mut [f32]; 2]) {
        match d {
            256 => scores2_l::<8>(q, keys, out),
            128 => scores2_l::<4>(q, keys, out),
            64 => scores2_l::<2>(q, keys, out),
            _ => panic!("no two-row bf16 scores for head size {d}"),
        }
    }

    /// The head sizes [`scores2`] handles.
    pub fn scores2_fits(d: usize) -> bool {
        matches!(d, 64 | 128 | 256)
    }

    /// One key (`32 · L` bf16 at `row`) against both queries, front to back.
    #[inline(always)]
    unsafe fn key2<const L: usize>(
        hint: super::StreamHint,
        row: *const bf16,
        x: &[[__m512bh; L]; 2],
    ) -> [__m512; 2] {
        let mut a = [_mm512_setzero_ps(); 2];
        for (l, (x0, x1)) in x[0].iter().zip(&x[1]).enumerate() {
            super::prefetch(
                hint,
                (row.add(32 * l) as *const i8).wrapping_add(super::PREFETCH_AHEAD),
            );
            let w: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(row.add(32 * l) as *const __m512i));
            a[0] = _mm512_dpbf16_ps(a[0], *x0, w);
            a[1] = _mm512_dpbf16_ps(a[1], *x1, w);
        }
        a
    }

    /// [`scores2`] for heads of `32 · L` elements: both queries stay in
    /// registers and each key is read front to back.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn scores2_l<const L: usize>(q: [&[u32]; 2], keys: &[bf16], out: [&mut [f32]; 2]) {
        let hint = super::cache_hint();
        let d = 32 * L;
        let jl = out[0].len();
        assert!(q[0].len() == d / 2 && q[1].len() == d / 2);
        assert!(out[1].len() == jl && super::holds(keys.len(), jl, d));
        if jl == 0 {
            return;
        }
        let mut x: [[__m512bh; L]; 2] = std::mem::zeroed();
        for (xr, qr) in x.iter_mut().zip(q) {
            for (l, xl) in xr.iter_mut().enumerate() {
                *xl = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    qr.as_ptr().add(16 * l) as *const __m512i,
                ));
            }
        }
        let kp = keys.as_ptr();
        let [o0, o1] = out;
        let mut j = 0;
        while j < jl {
            // [key][row], then [row][key] for the sums
            // (No closure: it would not inherit this function's features.)
            let key = |r: usize| kp.add((j + r).min(jl - 1) * d);
            let [k0, k1, k2, k3] = [
                key2::<L>(hint, key(0), &x),
                key2::<L>(hint, key(1), &x),
                key2::<L>(hint, key(2), &x),
                key2::<L>(hint, key(3), &x),
            ];
            let a = [[k0[0], k1[0], k2[0], k3[0]], [k0[1], k1[1], k2[1], k3[1]]];
            let take = (jl - j).min(4);
            for (h, o) in [o0.as_mut_ptr(), o1.as_mut_ptr()].into_iter().enumerate() {
                super::store_sums(o.add(j), super::avx512::sum4(a[h]), take);
            }
            j += 4;
        }
    }

    /// `src` rounded to bf16 (to nearest even), as u32 pairs in order: a
    /// bf16 array's memory is exactly its pairs, so 32 values are one
    /// `vcvtne2ps2bf16` and one store.
    ///
    /// # Safety
    /// AVX512-BF16 must be available; `row` holds `src.len().div_ceil(2)`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn to_pairs(src: &[f32], row: &mut [u32]) {
        // SAFETY: initialised u32s are valid `MaybeUninit<u32>`s, and
        // `to_pairs_into` writes only initialised values.
        let row = std::slice::from_raw_parts_mut(row.as_mut_ptr().cast(), row.len());
        to_pairs_into(src, row)
    }

    /// [`to_pairs`] into a row that need not be initialised (every pair is
    /// written).
    ///
    /// # Safety
    /// As [`to_pairs`].
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn to_pairs_into(src: &[f32], row: &mut [std::mem::MaybeUninit<u32>]) {
        assert_eq!(row.len(), src.len().div_ceil(2));
        let mut i = 0;
        while i + 32 <= src.len() {
            let lo = _mm512_loadu_ps(src.as_ptr().add(i));
            let hi = _mm512_loadu_ps(src.as_ptr().add(i + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(row.as_mut_ptr().add(i / 2) as *mut __m512i, v);
            i += 32;
        }
        for (p, pair) in row.iter_mut().enumerate().skip(i / 2) {
            let lo = bf16::from_f32(src[2 * p]).to_bits() as u32;
            let hi = src
                .get(2 * p + 1)
                .map_or(0, |&v| bf16::from_f32(v).to_bits() as u32);
            pair.write(lo | (hi << 16));
        }
    }

    /// One R × 32 tile over all k pairs.
    ///
    /// # Safety
    /// AVX512-BF16 must be available; `x` holds at least R rows of `kp`
    /// pairs (the last row may end the slice), `w` holds `kp × 32` pairs.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn micro<const R: usize>(x: &[u32], kp: usize, w: &[u32], tile: &mut [f32; MR * NR]) {
        assert!(x.len() >= (R - 1) * kp + kp && w.len() >= kp * NR && R <= MR);
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let xp = x.as_ptr();
        let wp = w.as_ptr();
        for p in 0..kp {
            let w0: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(wp.add(p * NR) as *const __m512i));
            let w1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(wp.add(p * NR + 16) as *const __m512i));
            for (r, a) in acc.iter_mut().enumerate() {
                let b: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*xp.add(r * kp + p) as i32));
                a[0] = _mm512_dpbf16_ps(a[0], b, w0);
                a[1] = _mm512_dpbf16_ps(a[1], b, w1);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR), a[0]);
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR + 16), a[1]);
        }
    }
}

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
mod avx512 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    /// Attention's weighted sum of values for decode: two query rows at a
    /// time stay in registers (`L` × 16 lanes each, the whole head), and
    /// every value row is read and widened once per pair, in one pass.
    macro_rules! pv_rows {
        ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr) => {
            pv_rows!($name, $t, $features, |$p| $load, false);
        };
        ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr, $scaled:literal) => {
            /// # Safety
            /// The CPU must support the enabled features. With `$scaled`,
            /// `scales` holds each row's `KV_BLOCK` scales (else ignored).
            #[target_feature(enable = $features)]
            pub unsafe fn $name<const L: usize>(
                acc: &mut [f32],
                p: &[f32],
                stride: usize,
                jl: usize,
                rows: &[$t],
                scales: &[f32],
            ) {
                let hint = super::cache_hint();
                let d = 16 * L;
                let nrows = acc.len() / d;
                assert!(acc.len() == nrows * d && super::holds(rows.len(), jl, d));
                assert!(super::strided_holds(p.len(), nrows, stride, jl));
                assert!(!$scaled || scales.len() >= jl * d / super::KV_BLOCK);
                let row_bytes = d * std::mem::size_of::<$t>();
                let rp = rows.as_ptr();
                let mut r = 0;
                while r < nrows {
                    let two = nrows - r >= 2;
                    let a0p = acc.as_mut_ptr().add(r * d);
                    let a1p = if two { a0p.add(d) } else { a0p };
                    let p0 = p.as_ptr().add(r * stride);
                    let p1 = if two { p0.add(stride) } else { p0 };
                    let mut a0 = [_mm512_setzero_ps(); L];
                    let mut a1 = [_mm512_setzero_ps(); L];
                    for l in 0..L {
                        a0[l] = _mm512_loadu_ps(a0p.add(16 * l));
                        a1[l] = _mm512_loadu_ps(a1p.add(16 * l));
                    }
                    for j in 0..jl {
                        let base = rp.add(j * d);
                        for line in (0..row_bytes).step_by(64) {
                            super::prefetch(
                                hint,
                                (base as *const i8).wrapping_add(line + super::PREFETCH_AHEAD),
                            );
                        }
                        let w0 = _mm512_set1_ps(*p0.add(j));
                        let w1 = _mm512_set1_ps(*p1.add(j));
                        for l in 0..L {
                            let $p = base.add(16 * l);
                            let mut v = $load;
                            if $scaled {
                                // Two registers per block of 32.
                                let s = *scales.get_unchecked(j * (d / 32) + l / 2);
                                v = _mm512_mul_ps(v, _mm512_set1_ps(s));
                            }
                            a0[l] = _mm512_fmadd_ps(w0, v, a0[l]);
                            a1[l] = _mm512_fmadd_ps(w1, v, a1[l]);
                        }
                    }
                    // With one row left, a1 aliases a0 and is stored first.
                    for l in 0..L {
                        _mm512_storeu_ps(a1p.add(16 * l), a1[l]);
                        _mm512_storeu_ps(a0p.add(16 * l), a0[l]);
                    }
                    r += if two { 2 } else { 1 };
                }
            }
        };
    }

    /// Attention's scores in decode for two query rows (the two heads that
    /// share a key head) in one pass over the keys: four keys at a time,
    /// each widened once into 32 f32 (`$load` gives the two halves of a
    /// block of 32, in the order `Elem::prepare` left the queries), four
    /// accumulators per key, and one shuffle tree adding four keys' lanes.
    macro_rules! scores2 {
        ($name:ident, $t:ty, $features:literal, $lines:literal, |$p:ident| $load:expr) => {
            scores2!($name, $t, $features, $lines, |$p| $load, false);
        };
        ($name:ident, $t:ty, $features:literal, $lines:literal, |$p:ident| $load:expr,
         $scaled:literal) => {
            /// # Safety
            /// The CPU must support the enabled features. With `$scaled`,
            /// `scales` holds each key's `KV_BLOCK` scales (else ignored).
            #[target_feature(enable = $features)]
            pub unsafe fn $name(
                q: [&[f32]; 2],
                keys: &[$t],
                scales: &[f32],
                d: usize,
                out: [&mut [f32]; 2],
            ) {
                let hint = super::cache_hint();
                let jl = out[0].len();
                assert!(d % 32 == 0 && q[0].len() == d && q[1].len() == d);
                assert!(out[1].len() == jl && super::holds(keys.len(), jl, d));
                assert!(!$scaled || scales.len() >= jl * d / super::KV_BLOCK);
                if jl == 0 {
                    return;
                }
                let kp = keys.as_ptr();
                let (q0, q1) = (q[0].as_ptr(), q[1].as_ptr());
                let [o0, o1] = out;
                let mut j = 0;
                while j < jl {
                    let idx = [0, 1, 2, 3].map(|o| (j + o).min(jl - 1));
                    let rows = idx.map(|r| kp.add(r * d));
                    // [key][row 0 even, row 0 odd, row 1 even, row 1 odd]
                    let mut a = [[_mm512_setzero_ps(); 4]; 4];
                    let mut i = 0;
                    while i < d {
                        let x0e = _mm512_loadu_ps(q0.add(i));
                        let x0o = _mm512_loadu_ps(q0.add(i + 16));
                        let x1e = _mm512_loadu_ps(q1.add(i));
                        let x1o = _mm512_loadu_ps(q1.add(i + 16));
                        for (r, ar) in a.iter_mut().enumerate() {
                            for line in 0..$lines {
                                super::prefetch(
                                    hint,
                                    (rows[r].add(i) as *const i8)
                                        .wrapping_add(super::PREFETCH_AHEAD + 64 * line),
                                );
                            }
                            let $p = rows[r].add(i);
                            let (mut we, mut wo) = $load;
                            if $scaled {
                                // One block of 32 per step.
                                let s = _mm512_set1_ps(
                                    *scales.get_unchecked(idx[r] * (d / 32) + i / 32),
                                );
                                we = _mm512_mul_ps(we, s);
                                wo = _mm512_mul_ps(wo, s);
                            }
                            ar[0] = _mm512_fmadd_ps(x0e, we, ar[0]);
                            ar[1] = _mm512_fmadd_ps(x0o, wo, ar[1]);
                            ar[2] = _mm512_fmadd_ps(x1e, we, ar[2]);
                            ar[3] = _mm512_fmadd_ps(x1o, wo, ar[3]);
                        }
                        i += 32;
                    }
                    let take = (jl - j).min(4);
                    for (h, o) in [o0.as_mut_ptr(), o1.as_mut_ptr()].into_iter().enumerate() {
                        let v = [
                            _mm512_add_ps(a[0][2 * h], a[0][2 * h + 1]),
                            _mm512_add_ps(a[1][2 * h], a[1][2 * h + 1]),
                            _mm512_add_ps(a[2][2 * h], a[2][2 * h + 1]),
                            _mm512_add_ps(a[3][2 * h], a[3][2 * h + 1]),
                        ];
                        super::store_sums(o.add(j), sum4(v), take);
                    }
                    j += 4;
                }
            }
        };
    }

    /// The lane sums of four registers, as one 128-bit register.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn sum4(v: [__m512; 4]) -> __m128 {
        // Halve each register into 8 lanes: [v0 | v1] and [v2 | v3].
        let t0 = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(v[0], v[1]),
            _mm512_shuffle_f32x4::<0xEE>(v[0], v[1]),
        );
        let t1 = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(v[2], v[3]),
            _mm512_shuffle_f32x4::<0xEE>(v[2], v[3]),
        );
        // Again, into 4 lanes each: block b holds register b's partial sums.
        let u = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(t0, t1),
            _mm512_shuffle_f32x4::<0xDD>(t0, t1),
        );
        // Within each block: every lane ends up with the block's sum.
        let u = _mm512_add_ps(u, _mm512_permute_ps::<0xB1>(u));
        let u = _mm512_add_ps(u, _mm512_permute_ps::<0x4E>(u));
        let first = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_castps512_ps128(_mm512_permutexvar_ps(first, u))
    }

    scores2!(scores2_f32, f32, "avx512f", 2, |p| (
        _mm512_loadu_ps(p),
        _mm512_loadu_ps(p.add(16))
    ));
    scores2!(scores2_f16, f16, "avx512f,f16c", 1, |p| (
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
        _mm512_cvtph_ps(_mm256_loadu_si256(p.add(16) as *const __m256i))
    ));
    scores2!(scores2_bf16, bf16, "avx512f", 1, |p| {
        let w = _mm512_loadu_si512(p as *const __m512i);
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        (
            _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)),
            _mm512_castsi512_ps(_mm512_and_si512(w, hi)),
        )
    });

    /// [`dot4!`] at AVX-512's width.
    macro_rules! dot4_512 {
        ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr) => {
            dot4!(
                $name,
                $t,
                $features,
                16,
                [
                    _mm512_setzero_ps,
                    _mm512_loadu_ps,
                    _mm512_fmadd_ps,
                    _mm512_add_ps
                ],
                _mm512_reduce_add_ps,
                |$p| $load
            );
        };
    }

    // Attention's scores in decode, for f32 and f16 caches.
    dot4_512!(dot4_f32, f32, "avx512f", |p| _mm512_loadu_ps(p));
    dot4_512!(dot4_f16, f16, "avx512f,f16c", |p| _mm512_cvtph_ps(
        _mm256_loadu_si256(p as *const __m256i)
    ));

    pv_rows!(pv_rows_f32, f32, "avx512f", |p| _mm512_loadu_ps(p));
    pv_rows!(pv_rows_bf16, bf16, "avx512f", |p| _mm512_castsi512_ps(
        _mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i)),
            16
        )
    ));
    // int8 caches: each block of 32 times its scale, in registers.
    scores2!(
        scores2_i8,
        i8,
        "avx512f",
        1,
        |p| (
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                p.add(16) as *const __m128i
            )))
        ),
        true
    );
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
        q: [&super::QueryI8; 2],
        keys: &[i8],
        scales: &[f32],
        out: [&mut [f32]; 2],
    ) {
        let hint = super::cache_hint();
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
            super::prefetch(
                hint,
                (sp.add(j * nb) as *const i8).wrapping_add(super::PREFETCH_AHEAD * 4 * nb / d),
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
                    super::prefetch(hint, row.add(64 * c).wrapping_add(super::PREFETCH_AHEAD));
                    let kv = _mm512_xor_si512(
                        _mm512_loadu_si512(row.add(64 * c) as *const __m512i),
                        flip,
                    );
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
                super::store_sums(o.add(j), sum4(a[h]), take);
            }
            j += 4;
        }
    }

    dot4_512!(dot4_i8, i8, "avx512f", |p| _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))
    ));
    pv_rows!(
        pv_rows_i8,
        i8,
        "avx512f",
        |p| _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))),
        true
    );
    pv_rows!(pv_rows_f16, f16, "avx512f,f16c", |p| _mm512_cvtph_ps(
        _mm256_loadu_si256(p as *const __m256i)
    ));

    /// bf16 rows against an `x` whose blocks of 32 are split into evens and
    /// odds: one 64-byte load holds 32 bf16 (a cache line), a shift gives
    /// the even ones as f32 and a mask the odd ones.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; every row must be at least as long
    /// as `x`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot4_bf16_pairs(x: &[f32], rows: [&[bf16]; 4]) -> [f32; 4] {
        let hint = super::cache_hint();
        let k = x.len();
        assert!(rows.iter().all(|r| r.len() >= k));
        let xp = x.as_ptr();
        let p = rows.map(|r| r.as_ptr());
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let mut a = [_mm512_setzero_ps(); 8];
        let mut i = 0;
        while i + 32 <= k {
            let xe = _mm512_loadu_ps(xp.add(i));
            let xo = _mm512_loadu_ps(xp.add(i + 16));
            for r in 0..4 {
                // The next group of four rows, same offset.
                super::prefetch(
                    hint,
                    (p[r].wrapping_add(i) as *const i8).wrapping_add(super::PREFETCH_AHEAD),
                );
                let w = _mm512_loadu_si512(p[r].add(i) as *const __m512i);
                let even = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
                let odd = _mm512_castsi512_ps(_mm512_and_si512(w, hi));
                a[2 * r] = _mm512_fmadd_ps(xe, even, a[2 * r]);
                a[2 * r + 1] = _mm512_fmadd_ps(xo, odd, a[2 * r + 1]);
            }
            i += 32;
        }
        let mut out = [0f32; 4];
        for r in 0..4 {
            out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a[2 * r], a[2 * r + 1]));
            // The tail was left in order by `prepare`.
            for j in i..k {
                out[r] += x[j] * super::Elem::to_f32(rows[r][j]);
            }
        }
        out
    }
}

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
mod avx2 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    dot4!(
        dot4_f32,
        f32,
        "avx2,fma",
        8,
        [
            _mm256_setzero_ps,
            _mm256_loadu_ps,
            _mm256_fmadd_ps,
            _mm256_add_ps
        ],
        hsum,
        |p| _mm256_loadu_ps(p)
    );
    dot4!(
        dot4_f16,
        f16,
        "avx2,fma,f16c",
        8,
        [
            _mm256_setzero_ps,
            _mm256_loadu_ps,
            _mm256_fmadd_ps,
            _mm256_add_ps
        ],
        hsum,
        |p| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    );

    /// Weighted sums of rows: 64 output lanes stay in registers while every
    /// row is added, instead of a load and store of `acc` per row.
    macro_rules! pv {
        ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr) => {
            /// # Safety
            /// The CPU must support the enabled features.
            #[target_feature(enable = $features)]
            pub unsafe fn $name(acc: &mut [f32], p: &[f32], rows: &[$t]) {
                let d = acc.len();
                assert!(d.is_multiple_of(64) && rows.len() >= p.len() * d);
                let rp = rows.as_ptr();
                for c in (0..d).step_by(64) {
                    let ap = acc.as_mut_ptr().add(c);
                    let mut a = [_mm256_setzero_ps(); 8];
                    for (l, al) in a.iter_mut().enumerate() {
                        *al = _mm256_loadu_ps(ap.add(8 * l));
                    }
                    for (j, &pj) in p.iter().enumerate() {
                        let w = _mm256_set1_ps(pj);
                        let base = rp.add(j * d + c);
                        for (l, al) in a.iter_mut().enumerate() {
                            let $p = base.add(8 * l);
                            *al = _mm256_fmadd_ps(w, $load, *al);
                        }
                    }
                    for (l, al) in a.iter().enumerate() {
                        _mm256_storeu_ps(ap.add(8 * l), *al);
                    }
                }
            }
        };
    }

    pv!(pv_f32, f32, "avx2,fma", |p| _mm256_loadu_ps(p));
    pv!(pv_bf16, bf16, "avx2,fma", |p| _mm256_castsi256_ps(
        _mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
            16
        )
    ));
    pv!(pv_f16, f16, "avx2,fma,f16c", |p| _mm256_cvtph_ps(
        _mm_loadu_si128(p as *const __m128i)
    ));

    /// bf16 rows against an `x` whose blocks of 16 are split into evens and
    /// odds (see `Elem::prepare` for bf16): each 32-byte load holds 16 bf16,
    /// a shift gives the even ones as f32 and a mask the odd ones.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; every row must be at least as
    /// long as `x`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4_bf16_pairs(x: &[f32], rows: [&[bf16]; 4]) -> [f32; 4] {
        let hint = super::cache_hint();
        let k = x.len();
        assert!(rows.iter().all(|r| r.len() >= k));
        let xp = x.as_ptr();
        let p = rows.map(|r| r.as_ptr());
        let hi = _mm256_set1_epi32(0xffff_0000u32 as i32);
        let mut a = [_mm256_setzero_ps(); 8];
        let mut i = 0;
        while i + 32 <= k {
            let xe = _mm256_loadu_ps(xp.add(i));
            let xo = _mm256_loadu_ps(xp.add(i + 8));
            let xe2 = _mm256_loadu_ps(xp.add(i + 16));
            let xo2 = _mm256_loadu_ps(xp.add(i + 24));
            for r in 0..4 {
                // The next group of four rows (see `dot4!`).
                super::prefetch(
                    hint,
                    (p[r].wrapping_add(i) as *const i8).wrapping_add(super::PREFETCH_AHEAD),
                );
                let w = _mm256_loadu_si256(p[r].add(i) as *const __m256i);
                let w2 = _mm256_loadu_si256(p[r].add(i + 16) as *const __m256i);
                let even = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
                let odd = _mm256_castsi256_ps(_mm256_and_si256(w, hi));
                a[2 * r] = _mm256_fmadd_ps(xe, even, a[2 * r]);
                a[2 * r + 1] = _mm256_fmadd_ps(xo, odd, a[2 * r + 1]);
                let even = _mm256_castsi256_ps(_mm256_slli_epi32(w2, 16));
                let odd = _mm256_castsi256_ps(_mm256_and_si256(w2, hi));
                a[2 * r] = _mm256_fmadd_ps(xe2, even, a[2 * r]);
                a[2 * r + 1] = _mm256_fmadd_ps(xo2, odd, a[2 * r + 1]);
            }
            i += 32;
        }
        while i + 16 <= k {
            let xe = _mm256_loadu_ps(xp.add(i));
            let xo = _mm256_loadu_ps(xp.add(i + 8));
            for r in 0..4 {
                let w = _mm256_loadu_si256(p[r].add(i) as *const __m256i);
                let even = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
                let odd = _mm256_castsi256_ps(_mm256_and_si256(w, hi));
                a[2 * r] = _mm256_fmadd_ps(xe, even, a[2 * r]);
                a[2 * r + 1] = _mm256_fmadd_ps(xo, odd, a[2 * r + 1]);
            }
            i += 16;
        }
        let mut out = [0f32; 4];
        for r in 0..4 {
            out[r] = hsum(_mm256_add_ps(a[2 * r], a[2 * r + 1]));
            // The tail was left in order by `prepare`.
            for j in i..k {
                out[r] += x[j] * super::Elem::to_f32(rows[r][j]);
            }
        }
        out
    }

    /// The lane sums of four registers, as one 128-bit register.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn sum4(v: [__m256; 4]) -> __m128 {
        // [v0 lo, v1 lo, v2 lo, v3 lo | v0 hi, v1 hi, v2 hi, v3 hi], each
        // a sum of four lanes; the two halves added give the four sums.
        let t = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
        _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1))
    }

    /// Attention's scores in decode for two query rows (the two heads that
    /// share a key head) in one pass over the keys, at AVX2's width: four
    /// keys at a time, each step of 16 elements widened once (`$load` gives
    /// its two halves in the order `Elem::prepare` left the queries) and
    /// multiplied into both rows; one accumulator per key and row, one
    /// `hadd` tree per row for four keys. With `$scaled` (int8 caches) each
    /// widened half is multiplied by its block's scale.
    macro_rules! scores2 {
        ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr, $scaled:literal) => {
            /// # Safety
            /// The CPU must support the enabled features. With `$scaled`,
            /// `scales` holds each key's `KV_BLOCK` scales (else ignored).
            #[target_feature(enable = $features)]
            pub unsafe fn $name(
                q: [&[f32]; 2],
                keys: &[$t],
                scales: &[f32],
                d: usize,
                out: [&mut [f32]; 2],
            ) {
                let hint = super::cache_hint();
                let jl = out[0].len();
                assert!(d % 32 == 0 && q[0].len() == d && q[1].len() == d);
                assert!(out[1].len() == jl && super::holds(keys.len(), jl, d));
                assert!(!$scaled || scales.len() >= jl * d / super::KV_BLOCK);
                if jl == 0 {
                    return;
                }
                // Elements per cache line of keys: one prefetch each.
                let per_line = 64 / std::mem::size_of::<$t>();
                let kp = keys.as_ptr();
                let (q0, q1) = (q[0].as_ptr(), q[1].as_ptr());
                let [o0, o1] = out;
                let mut j = 0;
                while j < jl {
                    let idx = [0, 1, 2, 3].map(|o| (j + o).min(jl - 1));
                    let rows = idx.map(|r| kp.add(r * d));
                    // [key][row]
                    let mut a = [[_mm256_setzero_ps(); 2]; 4];
                    let mut i = 0;
                    while i < d {
                        let x0e = _mm256_loadu_ps(q0.add(i));
                        let x0o = _mm256_loadu_ps(q0.add(i + 8));
                        let x1e = _mm256_loadu_ps(q1.add(i));
                        let x1o = _mm256_loadu_ps(q1.add(i + 8));
                        for (r, ar) in a.iter_mut().enumerate() {
                            if i % per_line == 0 {
                                super::prefetch(
                                    hint,
                                    (rows[r].add(i) as *const i8)
                                        .wrapping_add(super::PREFETCH_AHEAD),
                                );
                            }
                            let $p = rows[r].add(i);
                            let (mut we, mut wo) = $load;
                            if $scaled {
                                let s = _mm256_set1_ps(*scales.get_unchecked(
                                    idx[r] * (d / super::KV_BLOCK) + i / super::KV_BLOCK,
                                ));
                                we = _mm256_mul_ps(we, s);
                                wo = _mm256_mul_ps(wo, s);
                            }
                            ar[0] = _mm256_fmadd_ps(x0e, we, ar[0]);
                            ar[1] = _mm256_fmadd_ps(x1e, we, ar[1]);
                            ar[0] = _mm256_fmadd_ps(x0o, wo, ar[0]);
                            ar[1] = _mm256_fmadd_ps(x1o, wo, ar[1]);
                        }
                        i += 16;
                    }
                    let take = (jl - j).min(4);
                    for (h, o) in [o0.as_mut_ptr(), o1.as_mut_ptr()].into_iter().enumerate() {
                        let sums = sum4([a[0][h], a[1][h], a[2][h], a[3][h]]);
                        super::store_sums(o.add(j), sums, take);
                    }
                    j += 4;
                }
            }
        };
    }

    scores2!(
        scores2_f32,
        f32,
        "avx2,fma",
        |p| (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))),
        false
    );
    scores2!(
        scores2_f16,
        f16,
        "avx2,fma,f16c",
        |p| (
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(8) as *const __m128i))
        ),
        false
    );
    scores2!(
        scores2_bf16,
        bf16,
        "avx2,fma",
        |p| {
            let w = _mm256_loadu_si256(p as *const __m256i);
            let hi = _mm256_set1_epi32(0xffff_0000u32 as i32);
            (
                _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)),
                _mm256_castsi256_ps(_mm256_and_si256(w, hi)),
            )
        },
        false
    );
    scores2!(
        scores2_i8,
        i8,
        "avx2,fma",
        |p| {
            let w = _mm_loadu_si128(p as *const __m128i);
            (
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(w)),
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(w, 8))),
            )
        },
        true
    );

    /// Attention's weighted sum of values in decode, at AVX2's width: two
    /// query rows at a time, 32 lanes of each in registers per pass over
    /// the tile's values (a 64-byte line of each bf16 row), every value
    /// widened once for both rows. With `$scaled` (int8 caches) the two
    /// rows' weights are multiplied by the value's block scale instead.
    /// Rows of `rows` past the first `jl` (up to `jl` more: the next tile)
    /// are prefetched, a slice of each per pass, so that memory keeps
    /// streaming while the passes after the first read the tile from L2.
    macro_rules! pv_rows {
        ($name:ident, $t:ty, $features:literal, |$p:ident| $load:expr, $scaled:literal) => {
            /// # Safety
            /// The CPU must support the enabled features. With `$scaled`,
            /// `scales` holds each row's `KV_BLOCK` scales (else ignored).
            #[target_feature(enable = $features)]
            pub unsafe fn $name(
                acc: &mut [f32],
                d: usize,
                p: &[f32],
                stride: usize,
                jl: usize,
                rows: &[$t],
                scales: &[f32],
            ) {
                let hint = super::cache_hint();
                assert!(d > 0 && d % 32 == 0);
                let nrows = acc.len() / d;
                assert!(acc.len() == nrows * d && super::holds(rows.len(), jl, d));
                assert!(super::strided_holds(p.len(), nrows, stride, jl));
                assert!(!$scaled || scales.len() >= jl * d / super::KV_BLOCK);
                let size = std::mem::size_of::<$t>();
                let row_bytes = d * size;
                let rp = rows.as_ptr();
                let next = (rows.len() / d).saturating_sub(jl).min(jl);
                let mut r = 0;
                while r < nrows {
                    let two = nrows - r >= 2;
                    let p0 = p.as_ptr().add(r * stride);
                    let p1 = if two { p0.add(stride) } else { p0 };
                    for c in (0..d).step_by(32) {
                        // This pass's lines of the next tile's rows.
                        let (from, to) = ((c * size).next_multiple_of(64), (c + 32) * size);
                        let a0p = acc.as_mut_ptr().add(r * d + c);
                        let a1p = if two { a0p.add(d) } else { a0p };
                        let mut a0 = [_mm256_setzero_ps(); 4];
                        let mut a1 = [_mm256_setzero_ps(); 4];
                        for l in 0..4 {
                            a0[l] = _mm256_loadu_ps(a0p.add(8 * l));
                            a1[l] = _mm256_loadu_ps(a1p.add(8 * l));
                        }
                        for j in 0..jl {
                            let base = rp.add(j * d);
                            if r == 0 && c == 0 {
                                for line in (0..row_bytes).step_by(64) {
                                    super::prefetch(
                                        hint,
                                        (base as *const i8)
                                            .wrapping_add(line + super::PREFETCH_AHEAD),
                                    );
                                }
                            }
                            if r == 0 && j < next {
                                let row = rp.add((jl + j) * d) as *const i8;
                                for line in (from..to).step_by(64) {
                                    super::prefetch(hint, row.add(line));
                                }
                            }
                            let mut w0 = _mm256_set1_ps(*p0.add(j));
                            let mut w1 = _mm256_set1_ps(*p1.add(j));
                            if $scaled {
                                let s = _mm256_set1_ps(
                                    *scales.get_unchecked(j * (d / super::KV_BLOCK) + c / 32),
                                );
                                w0 = _mm256_mul_ps(w0, s);
                                w1 = _mm256_mul_ps(w1, s);
                            }
                            for l in 0..4 {
                                let $p = base.add(c + 8 * l);
                                let v = $load;
                                a0[l] = _mm256_fmadd_ps(w0, v, a0[l]);
                                a1[l] = _mm256_fmadd_ps(w1, v, a1[l]);
                            }
                        }
                        // With one row left, a1 aliases a0 and is stored first.
                        for l in 0..4 {
                            _mm256_storeu_ps(a1p.add(8 * l), a1[l]);
                            _mm256_storeu_ps(a0p.add(8 * l), a0[l]);
                        }
                    }
                    r += if two { 2 } else { 1 };
                }
            }
        };
    }

    pv_rows!(pv_rows_f32, f32, "avx2,fma", |p| _mm256_loadu_ps(p), false);
    pv_rows!(
        pv_rows_f16,
        f16,
        "avx2,fma,f16c",
        |p| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
        false
    );
    pv_rows!(
        pv_rows_bf16,
        bf16,
        "avx2,fma",
        |p| _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
            16
        )),
        false
    );
    pv_rows!(
        pv_rows_i8,
        i8,
        "avx2,fma",
        |p| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))),
        true
    );
}

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

/// Causal attention. `q` is (batch, heads, t, dim) f32; `k` and `v` are the
/// cache buffers (batch, kv_heads, cap, dim), of which the first `keys`
/// rows are filled; `valid[b][j]` says whether key j of sequence b is a real
/// token. Query i attends to keys `j <= past + i` that are valid, and always
/// to itself. Returns (batch, t, heads × dim).
pub fn attention<K: Elem>(
    q: &[f32],
    k: &[K],
    v: &[K],
    valid: &[Vec<bool>],
    s: AttnShape,
    scale: f32,
) -> Vec<f32> {
    attention_scaled(q, k, v, None, valid, s, scale)
}

/// [`attention`] over a cache whose rows carry a scale per [`kv_block`]
/// (the int8 cache; `block_scales` for keys and values, (batch, kv_heads,
/// cap, dim / block) each): every key and value is its integers times its
/// blocks' scales, applied to each block as the kernels widen it.
pub fn attention_scaled<K: Elem>(
    q: &[f32],
    k: &[K],
    v: &[K],
    block_scales: Option<(&[f32], &[f32])>,
    valid: &[Vec<bool>],
    s: AttnShape,
    scale: f32,
) -> Vec<f32> {
    let AttnShape {
        batch: b,
        heads: h,
        kv_heads: kvh,
        t,
        dim: d,
        past,
        keys,
        cap,
    } = s;
    assert_eq!(q.len(), b * h * t * d, "queries");
    assert!(k.len() >= b * kvh * cap * d && v.len() >= b * kvh * cap * d);
    assert!(keys <= cap && past + t == keys && h % kvh == 0 && valid.len() == b);
    // Block scales per row of an int8 cache.
    let nb = d / kv_block(d);
    assert!(
        block_scales.is_some() || std::any::TypeId::of::<K>() != std::any::TypeId::of::<i8>(),
        "an int8 cache needs its scales"
    );
    if let Some((ks, vs)) = block_scales {
        assert!(
            ks.len() >= b * kvh * cap * nb && vs.len() >= b * kvh * cap * nb,
            "int8 cache scales"
        );
    }
    let rep = h / kvh;
    // Query positions per head in one task.
    let per_head = (QUERY_ROWS / rep).max(1).min(t);
    let blocks = t.div_ceil(per_head);
    // Key masks per sequence: 0 for a real token, -inf for padding.
    // Sequences with no padding have none.
    let masks: Vec<Option<Vec<f32>>> = valid
        .iter()
        .map(|row| {
            row.iter().take(keys).any(|&ok| !ok).then(|| {
                row.iter()
                    .take(keys)
                    .map(|&ok| if ok { 0.0 } else { f32::NEG_INFINITY })
                    .collect()
            })
        })
        .collect();
    // Decode's two-row scores at this CPU's widest width, for heads that
    // are a multiple of 32 (queries `prepare`d for that width).
    #[cfg(target_arch = "x86_64")]
    let two_rows: Option<TwoRowScores<K>> = if d % 32 != 0 {
        None
    } else if has_avx512() {
        Some(K::scores2_avx512)
    } else if has_avx2_fma() && has_f16c() {
        Some(K::scores2_avx2)
    } else {
        None
    };
    // Every output row is written once, by its task (or, split, by the
    // merge): no zeroing first.
    let mut out = Vec::<f32>::with_capacity(b * t * h * d);
    let dst = SendPtr(out.as_mut_ptr());
    // Output row (sequence, time, head) = `acc` × `inv`.
    let store = |bi: usize, ti: usize, hh: usize, acc: &[f32], inv: f32| {
        // SAFETY: each (bi, ti, hh) is stored once, by one task or by the
        // merge; the row lies inside `out`'s capacity (batch × t × heads
        // × dim), and `acc` has `d` values.
        let o = unsafe { dst.get().add(((bi * t + ti) * h + hh) * d) };
        for (c, a) in acc[..d].iter().enumerate() {
            // SAFETY: as above, c < d.
            unsafe { o.add(c).write(a * inv) };
        }
    };
    // Decode has a task per key head: too few to keep the cores busy to
    // the end (8 on two cores keep one waiting for up to a task; on 16
    // cores, half of them idle). So few query rows split their keys into
    // ranges of whole tiles, whose partial softmax sums (running maximum,
    // sum of exponentials, weighted values) are merged afterwards.
    let groups = b * kvh * blocks;
    let span = if blocks == 1 && t * rep <= SMALL_ROWS {
        let want = (8 * rayon::current_num_threads()).div_ceil(groups.max(1));
        keys.div_ceil(want.max(1))
            .max(MIN_SPLIT_KEYS)
            .next_multiple_of(KEY_TILE_SMALL)
    } else {
        keys.max(1)
    };
    // The last range takes the rest (up to two spans), so none is short.
    let splits = (keys / span).max(1);
    // Per task of a split group: its rows' maxima, sums, then weighted values.
    let part_len = per_head * rep * (d + 2);
    let mut parts = match splits {
        1 => Vec::new(),
        _ => vec![0f32; groups * splits * part_len],
    };
    let parts_dst = SendPtr(parts.as_mut_ptr());
    let tasks = groups * splits;
    // One task per split of the range: rayon would otherwise cut it into a
    // piece or two per thread, and a core that finished early could not
    // take the other's remaining key groups.
    (0..tasks).into_par_iter().with_max_len(1).for_each(|task| {
        let (group, part) = (task / splits, task % splits);
        let bi = group / (kvh * blocks);
        let g = group / blocks % kvh;
        let t0 = group % blocks * per_head;
        let t1 = (t0 + per_head).min(t);
        let rows = (t1 - t0) * rep;
        // Gather this group's query rows, scaled: row r = head g*rep + r / n, time t0 + r % n.
        let n = t1 - t0;
        let mut qb = vec![0f32; rows * d];
        for r in 0..rows {
            let (hh, ti) = (g * rep + r / n, t0 + r % n);
            let src = &q[((bi * h + hh) * t + ti) * d..][..d];
            for (o, x) in qb[r * d..(r + 1) * d].iter_mut().zip(src) {
                *o = x * scale;
            }
        }
        let base = (bi * kvh + g) * cap * d;
        let kend = past + t1;
        let mut m = vec![f32::NEG_INFINITY; rows];
        let mut l = vec![0f32; rows];
        let mut acc = vec![0f32; rows * d];
        let mut sc = vec![0f32; rows * KEY_TILE];
        let mut kbuf = Vec::new();
        let mut vbuf = Vec::new();
        // A lone int8 query row's discarded twin scores.
        #[cfg(target_arch = "x86_64")]
        let mut twin: Vec<f32> = Vec::new();
        let mask = masks[bi].as_deref();
        let small = rows <= SMALL_ROWS;
        let qprep: Vec<Vec<f32>> = if small {
            (0..rows)
                .map(|r| K::prepare(&qb[r * d..(r + 1) * d]))
                .collect()
        } else {
            Vec::new()
        };
        // Many rows over a bf16 cache, with AVX512-BF16: scores and
        // weighted sums by the projections' `vdpbf16ps` tiles (queries and
        // probabilities rounded to bf16, as PyTorch's bf16 attention does).
        #[cfg(target_arch = "x86_64")]
        let bf16_dp = d % 32 == 0 && K::as_bf16(k).is_some() && has_avx512bf16();
        #[cfg(not(target_arch = "x86_64"))]
        let bf16_dp = false;
        let bf16_tiles = !small && bf16_dp;
        let mut qx = Vec::new();
        #[cfg(target_arch = "x86_64")]
        if bf16_dp {
            qx = vec![0u32; rows * d / 2];
            for (r, row) in qx.chunks_exact_mut(d / 2).enumerate() {
                // SAFETY: AVX512-BF16 was checked above.
                unsafe { bf16gemm::to_pairs(&qb[r * d..(r + 1) * d], row) };
            }
        }
        // The tiles' own order of the queries, once for every key tile.
        #[cfg(target_arch = "x86_64")]
        let qt = if bf16_tiles {
            bf16gemm::queries_in_tiles(&qx, rows, d / 2)
        } else {
            Vec::new()
        };
        // Few rows over an int8 cache, with AVX512-VNNI: integer scores,
        // the queries rounded to int8 per block as the keys are.
        #[cfg(target_arch = "x86_64")]
        let qi8: Vec<QueryI8> = if small && K::as_i8(k).is_some() && vnni_scores_run(d) {
            (0..rows)
                .map(|r| QueryI8::new(&qb[r * d..(r + 1) * d]))
                .collect()
        } else {
            Vec::new()
        };
        #[cfg(target_arch = "x86_64")]
        let mut scratch = bf16gemm::Scratch::default();
        let tile_len = if small { KEY_TILE_SMALL } else { KEY_TILE };
        // This task's keys: whole tiles from a tile's start, the last
        // range to the end (all keys when unsplit).
        let mut j0 = (part * span).min(kend);
        let jend = match part + 1 == splits {
            true => kend,
            false => ((part + 1) * span).min(kend),
        };
        while j0 < jend {
            let jl = tile_len.min(jend - j0);
            let st = &mut sc[..rows * jl];
            let ks = &k[base + j0 * d..base + (j0 + jl) * d];
            let vs = &v[base + j0 * d..base + (j0 + jl) * d];
            // An int8 cache: the tile's block scales (empty otherwise).
            let (ksc, vsc) = block_scales.map_or((&[][..], &[][..]), |(ksc, vsc)| {
                let at = (base / d + j0) * nb..(base / d + j0 + jl) * nb;
                (&ksc[at.clone()], &vsc[at])
            });
            if small {
                // Few rows (decode): stream the keys once, four at a time,
                // two query rows per pass where the CPU allows.
                let mut pairs = 0;
                #[cfg(target_arch = "x86_64")]
                if !qi8.is_empty() {
                    // Both rows of each pair; a lone last row twice, its
                    // twin's scores discarded.
                    pairs = rows.div_ceil(2);
                    let keys = K::as_i8(ks).unwrap_or(&[]);
                    twin.resize(jl, 0.0);
                    for (pr, q2) in st.chunks_mut(2 * jl).zip(qi8.chunks(2)) {
                        let (a, b) = pr.split_at_mut(jl.min(pr.len()));
                        let (qa, qb2) = (&q2[0], q2.get(1).unwrap_or(&q2[0]));
                        let b = if b.is_empty() { &mut twin[..jl] } else { b };
                        let done = scores2_vnni([qa, qb2], keys, ksc, d, [a, b]);
                        debug_assert!(done, "checked with the queries");
                    }
                } else if bf16_dp && bf16gemm::scores2_fits(d) {
                    // Over a bf16 cache, queries rounded to bf16 as the
                    // tiles round them: one `vdpbf16ps` per 32 elements.
                    pairs = rows / 2;
                    let keys = K::as_bf16(ks).unwrap_or(&[]);
                    for (pr, q2) in st.chunks_exact_mut(2 * jl).zip(qx.chunks_exact(d)) {
                        let (a, b) = pr.split_at_mut(jl);
                        let (qa, qb) = q2.split_at(d / 2);
                        // SAFETY: AVX512-BF16 was checked for `bf16_dp`.
                        unsafe { bf16gemm::scores2([qa, qb], keys, d, [a, b]) };
                    }
                } else if let Some(two) = two_rows {
                    pairs = rows / 2;
                    for (pr, q2) in st.chunks_exact_mut(2 * jl).zip(qprep.chunks_exact(2)) {
                        let (a, b) = pr.split_at_mut(jl);
                        two([&q2[0], &q2[1]], ks, ksc, d, [a, b]);
                    }
                }
                for (r, qr) in qprep.iter().enumerate().skip(2 * pairs) {
                    let srow = &mut st[r * jl..(r + 1) * jl];
                    if !ksc.is_empty() {
                        // int8: the two-row kernel on this row twice, where
                        // it runs; else the portable loop.
                        #[cfg(target_arch = "x86_64")]
                        if let Some(two) = two_rows {
                            twin.resize(jl, 0.0);
                            two([qr, qr], ks, ksc, d, [srow, &mut twin[..jl]]);
                            continue;
                        }
                        scores_scaled(qr, ks, ksc, srow);
                        continue;
                    }
                    let mut j = 0;
                    while j < jl {
                        let key = |o: usize| &ks[(j + o).min(jl - 1) * d..][..d];
                        let dots = K::dot4(qr, [key(0), key(1), key(2), key(3)]);
                        let take = (jl - j).min(4);
                        srow[j..j + take].copy_from_slice(&dots[..take]);
                        j += 4;
                    }
                }
            } else if bf16_tiles {
                #[cfg(target_arch = "x86_64")]
                bf16gemm::scores(
                    &qx,
                    &qt,
                    rows,
                    d,
                    K::as_bf16(ks).unwrap_or(&[]),
                    jl,
                    st,
                    &mut scratch,
                );
            } else {
                let kt = tile(ks, ksc, &mut kbuf);
                // SAFETY: qb is rows × d, kt is jl × d (read transposed), st is rows × jl.
                unsafe {
                    matmul(
                        rows,
                        jl,
                        d,
                        st.as_mut_ptr(),
                        jl,
                        false,
                        &qb,
                        d,
                        kt,
                        1,
                        d,
                        gemm::Parallelism::None,
                    );
                }
            }
            for r in 0..rows {
                let me = past + t0 + r % n;
                let srow = &mut st[r * jl..(r + 1) * jl];
                // Keys after this query are not seen; padding keys are masked
                // except the query's own position.
                let seen = (me + 1).saturating_sub(j0).min(jl);
                let own = me.checked_sub(j0).filter(|&o| o < jl).map(|o| srow[o]);
                if let Some(mask) = mask {
                    for (sv, mv) in srow[..seen].iter_mut().zip(&mask[j0..j0 + seen]) {
                        *sv += mv;
                    }
                }
                if let Some(o) = own {
                    srow[me - j0] = o;
                }
                let mx = max_of(&srow[..seen]);
                let mnew = m[r].max(mx);
                if mnew == f32::NEG_INFINITY {
                    srow.iter_mut().for_each(|x| *x = 0.0);
                    continue;
                }
                let sum = exp_shifted(&mut srow[..seen], mnew);
                srow[seen..].iter_mut().for_each(|x| *x = 0.0);
                let factor = if m[r] == f32::NEG_INFINITY {
                    0.0
                } else {
                    (m[r] - mnew).exp()
                };
                if factor != 1.0 {
                    acc[r * d..(r + 1) * d]
                        .iter_mut()
                        .for_each(|a| *a *= factor);
                }
                l[r] = l[r] * factor + sum;
                m[r] = mnew;
            }
            if small {
                // The values with the next tile's after them, which the
                // AVX2 kernel prefetches while it works on this one.
                let ahead = &v[base + j0 * d..base + (j0 + 2 * jl).min(kend) * d];
                K::pv_rows(&mut acc, d, st, jl, jl, ahead, vsc);
            } else if bf16_tiles {
                #[cfg(target_arch = "x86_64")]
                bf16gemm::weighted(
                    st,
                    rows,
                    jl,
                    K::as_bf16(vs).unwrap_or(&[]),
                    d,
                    &mut acc,
                    &mut scratch,
                );
            } else {
                let vt = tile(vs, vsc, &mut vbuf);
                // SAFETY: st is rows × jl, vt is jl × d, acc is rows × d.
                unsafe {
                    matmul(
                        rows,
                        d,
                        jl,
                        acc.as_mut_ptr(),
                        d,
                        true,
                        st,
                        jl,
                        vt,
                        d,
                        1,
                        gemm::Parallelism::None,
                    );
                }
            }
            j0 += jl;
        }
        if splits > 1 {
            // SAFETY: `part_len` floats from this task's offset are its
            // own, inside `parts` (tasks × part_len); rows × (d + 2) fit.
            let o = unsafe {
                std::slice::from_raw_parts_mut(parts_dst.get().add(task * part_len), part_len)
            };
            o[..rows].copy_from_slice(&m);
            o[rows..2 * rows].copy_from_slice(&l);
            o[2 * rows..2 * rows + rows * d].copy_from_slice(&acc);
            return;
        }
        for r in 0..rows {
            let (hh, ti) = (g * rep + r / n, t0 + r % n);
            store(bi, ti, hh, &acc[r * d..(r + 1) * d], 1.0 / l[r]);
        }
    });
    if splits > 1 {
        // One block of positions per group here (`span` splits only then),
        // so a group's rows are its heads × t.
        let rows = rep * t;
        let mut row = vec![0f32; d];
        for group in 0..groups {
            let (bi, g) = (group / kvh, group % kvh);
            let part = |s: usize| &parts[(group * splits + s) * part_len..][..part_len];
            for r in 0..rows {
                let (hh, ti) = (g * rep + r / t, r % t);
                let top = (0..splits)
                    .map(|s| part(s)[r])
                    .fold(f32::NEG_INFINITY, f32::max);
                row.fill(0.0);
                let mut sum = 0f32;
                for s in 0..splits {
                    let p = part(s);
                    // A range with no key seen (all padding, or past the
                    // causal end) adds nothing.
                    if p[r] == f32::NEG_INFINITY {
                        continue;
                    }
                    let w = (p[r] - top).exp();
                    sum += w * p[rows + r];
                    for (o, a) in row.iter_mut().zip(&p[2 * rows + r * d..][..d]) {
                        *o += w * a;
                    }
                }
                store(bi, ti, hh, &row, 1.0 / sum);
            }
        }
    }
    // SAFETY: the tasks (or, split, the merge) cover every (sequence, key
    // head, block of positions), so every row of every head was written.
    unsafe { out.set_len(b * t * h * d) };
    out
}

/// A key or value tile as f32: the cache itself when it is f32, else
/// widened (and, for an int8 cache, each block times its `scales`).
fn tile<'a, K: Elem>(src: &'a [K], scales: &[f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    if !scales.is_empty() {
        buf.resize(src.len(), 0.0);
        K::widen(src, buf);
        let block = src.len() / scales.len();
        for (b, s) in buf.chunks_exact_mut(block).zip(scales) {
            b.iter_mut().for_each(|x| *x *= s);
        }
        return buf;
    }
    match K::as_f32(src) {
        Some(s) => s,
        None => {
            buf.resize(src.len(), 0.0);
            K::widen(src, buf);
            buf
        }
    }
}

/// The largest of `xs` (−inf when empty), kept in 16 lanes so the loop
/// vectorises: a plain `fold(f32::max)` is one dependent scalar `max` per
/// score, which for decode was as slow as reading the keys.
fn max_of(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { max_of_avx512(xs) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 (checked above).
        return unsafe { max_of_avx2(xs) };
    }
    max_of_body(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_of_avx2(xs: &[f32]) -> f32 {
    max_of_body(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn max_of_avx512(xs: &[f32]) -> f32 {
    max_of_body(xs)
}

#[inline(always)]
fn max_of_body(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = xs.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    tail.iter()
        .chain(&lanes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Replaces each x with exp(x − shift) and returns their sum. A polynomial
/// exp written without branches so the loop vectorises (relative error
/// below 1e-6 over the range softmax sees).
fn exp_shifted(xs: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked above).
        return unsafe { exp_shifted_avx512(xs, shift) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { exp_shifted_avx2(xs, shift) };
    }
    exp_shifted_body::<8>(xs, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_avx2(xs: &mut [f32], shift: f32) -> f32 {
    exp_shifted_body::<8>(xs, shift)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_shifted_avx512(xs: &mut [f32], shift: f32) -> f32 {
    exp_shifted_body::<16>(xs, shift)
}

/// `L` lanes: the vector width the loop is written for (8 for AVX2, 16
/// for AVX-512).
#[inline(always)]
fn exp_shifted_body<const L: usize>(xs: &mut [f32], shift: f32) -> f32 {
    let mut lanes = [0f32; L];
    let mut chunks = xs.chunks_exact_mut(L);
    for c in &mut chunks {
        for l in 0..L {
            c[l] = fast_exp(c[l] - shift);
            lanes[l] += c[l];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for x in chunks.into_remainder() {
        *x = fast_exp(*x - shift);
        sum += *x;
    }
    sum
}

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
mod tests {
    use super::*;

    pub(super) fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % 20_000) as f32 / 10_000.0 - 1.0
    }

    pub(super) fn naive_linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
            }
        }
        out
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// `on_pool` runs its closure on a pool worker and returns its value;
    /// with pollers, parallel loops inside still finish (none of the
    /// pollers blocks the closure's thread), also when nested.
    #[test]
    fn on_pool_runs_parallel_loops_with_pollers() {
        for spin in [false, true] {
            let (on_worker, sum) = on_pool(spin, || {
                let inner: u64 = on_pool(spin, || (0..10_000u64).into_par_iter().sum());
                let outer: u64 = (0..100_000u64).into_par_iter().map(|v| v % 7).sum();
                (rayon::current_thread_index().is_some(), inner + outer)
            });
            assert!(on_worker);
            assert_eq!(
                sum,
                49_995_000 + (0..100_000u64).map(|v| v % 7).sum::<u64>()
            );
        }
        // A panic inside unwinds out (the pollers stop; before they were
        // told to on unwinding too, this hung), and the pool works on.
        let caught = std::panic::catch_unwind(|| on_pool(true, || -> u32 { panic!("inside") }));
        assert!(caught.is_err());
        assert_eq!((0..1000u64).into_par_iter().sum::<u64>(), 499_500);
    }

    #[test]
    fn linear_matches_naive_for_all_dtypes_and_shapes() {
        let mut s = 7u64;
        for &(m, k, n) in &[
            (1, 37, 5),
            (1, 64, 130),
            (3, 128, 67),
            (4, 16, 4),
            (5, 40, 300),
            (9, 1, 3),
            (13, 67, 33),
            (30, 64, 64),
            (45, 96, 70),
            (70, 128, 40),
            (33, 320, 40),
            // Whole 32-row blocks and panels over three k spans: the tiles
            // store straight into the outputs.
            (64, 576, 64),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rng(&mut s)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng(&mut s)).collect();
            let want = naive_linear(&x, m, k, &w, n);
            assert!(
                max_diff(&linear(&x, m, k, &w, n), &want) < 1e-4,
                "f32 {m}x{k}x{n}"
            );
            // Rounded weights, compared with the naive product of the same rounded values.
            let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let wbf: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
            let want = naive_linear(&x, m, k, &wbf, n);
            // With AVX512-BF16, the products round activations to bf16.
            #[cfg(target_arch = "x86_64")]
            let want = if has_avx512bf16() {
                let xr: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
                naive_linear(&xr, m, k, &wbf, n)
            } else {
                want
            };
            let got = linear(&x, m, k, &wb, n);
            assert!(max_diff(&got, &want) < 1e-4, "bf16 {m}x{k}x{n}");
            let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let whf: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
            let want = naive_linear(&x, m, k, &whf, n);
            assert!(
                max_diff(&linear(&x, m, k, &wh, n), &want) < 1e-4,
                "f16 {m}x{k}x{n}"
            );
        }
    }

    /// Every bf16 dot-product path this CPU can run, not only the one
    /// `dot4` picks: portable, AVX2 (blocks of 16), AVX-512 (blocks of 32).
    #[test]
    fn bf16_dot_paths_agree() {
        let mut s = 3u64;
        for k in [5usize, 16, 47, 64, 100, 1024] {
            let x: Vec<f32> = (0..k).map(|_| rng(&mut s)).collect();
            let rows: Vec<Vec<bf16>> = (0..4)
                .map(|_| (0..k).map(|_| bf16::from_f32(rng(&mut s))).collect())
                .collect();
            let r = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            let want: Vec<f32> = rows
                .iter()
                .map(|row| x.iter().zip(row).map(|(a, b)| a * b.to_f32()).sum())
                .collect();
            let close = |got: [f32; 4], path: &str| {
                assert!(max_diff(&got, &want) < 1e-4, "{path}, k = {k}");
            };
            close(dot4_portable(&x, r), "portable");
            #[cfg(target_arch = "x86_64")]
            {
                let split = |block: usize| {
                    let mut p = x.clone();
                    for (dst, src) in p.chunks_exact_mut(block).zip(x.chunks_exact(block)) {
                        for i in 0..block / 2 {
                            dst[i] = src[2 * i];
                            dst[block / 2 + i] = src[2 * i + 1];
                        }
                    }
                    p
                };
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: features checked just above.
                    close(unsafe { avx2::dot4_bf16_pairs(&split(16), r) }, "avx2");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: feature checked just above.
                    close(unsafe { avx512::dot4_bf16_pairs(&split(32), r) }, "avx512");
                }
            }
        }
    }

    /// Decode's two-row scores equal each row's dot products with every
    /// key, for each cache type, head size and ragged key count.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn two_row_scores_match_the_dot_products() {
        // `scaled`: an int8 cache, whose keys have a scale per block.
        fn check<K: Elem>(from: fn(f32) -> K, scaled: bool) {
            let mut s = 11u64;
            for d in [32usize, 64, 128] {
                for jl in [1usize, 3, 4, 7, 256] {
                    let q: Vec<Vec<f32>> = (0..2)
                        .map(|_| (0..d).map(|_| rng(&mut s)).collect())
                        .collect();
                    let keys: Vec<K> = (0..jl * d).map(|_| from(rng(&mut s))).collect();
                    let scales: Vec<f32> = if scaled {
                        (0..jl * d / KV_BLOCK).map(|_| rng(&mut s).abs()).collect()
                    } else {
                        Vec::new()
                    };
                    let scale = |i: usize| scales.get(i / KV_BLOCK).copied().unwrap_or(1.0);
                    let want: Vec<f32> = q
                        .iter()
                        .flat_map(|qr| {
                            keys.chunks_exact(d).enumerate().map(move |(j, key)| {
                                let ks = |i: usize| scale(j * d + i);
                                qr.iter()
                                    .zip(key)
                                    .enumerate()
                                    .map(|(i, (a, b))| a * b.to_f32() * ks(i))
                                    .sum()
                            })
                        })
                        .collect();
                    if has_avx512() {
                        let prepared: Vec<Vec<f32>> = q.iter().map(|qr| K::prepare(qr)).collect();
                        let mut got = vec![f32::NAN; 2 * jl];
                        let (a, b) = got.split_at_mut(jl);
                        K::scores2_avx512([&prepared[0], &prepared[1]], &keys, &scales, d, [a, b]);
                        assert!(max_diff(&got, &want) < 1e-4, "d = {d}, keys = {jl}");
                    }
                    if has_avx2_fma() && has_f16c() {
                        // As `prepare` leaves them for AVX2 (bf16's blocks
                        // of 16 split), whatever this CPU's widest path.
                        let prepared: Vec<Vec<f32>> = q
                            .iter()
                            .map(|qr| match K::as_bf16(&keys) {
                                Some(_) => evens_then_odds(qr, 16),
                                None => qr.clone(),
                            })
                            .collect();
                        let mut got = vec![f32::NAN; 2 * jl];
                        let (a, b) = got.split_at_mut(jl);
                        K::scores2_avx2([&prepared[0], &prepared[1]], &keys, &scales, d, [a, b]);
                        assert!(max_diff(&got, &want) < 1e-4, "AVX2, d = {d}, keys = {jl}");
                    }
                    if scaled {
                        // The portable path for rows left over.
                        let mut one = vec![f32::NAN; jl];
                        scores_scaled(&q[0], &keys, &scales, &mut one);
                        assert!(max_diff(&one, &want[..jl]) < 1e-4, "portable, d = {d}");
                    }
                }
            }
        }
        check::<f32>(|x| x, false);
        check::<bf16>(bf16::from_f32, false);
        check::<f16>(f16::from_f32, false);
        check::<i8>(|x| (x * 8.0) as i8, true);
        if !has_avx512bf16() {
            return;
        }
        // `vdpbf16ps`: the same products of queries rounded to bf16.
        let mut s = 5u64;
        for (d, jl) in [(64usize, 1usize), (128, 7), (256, 256)] {
            let q: Vec<Vec<f32>> = (0..2)
                .map(|_| (0..d).map(|_| rng(&mut s)).collect())
                .collect();
            let keys: Vec<bf16> = (0..jl * d).map(|_| bf16::from_f32(rng(&mut s))).collect();
            let want: Vec<f32> = q
                .iter()
                .flat_map(|qr| {
                    keys.chunks_exact(d).map(move |key| {
                        let round = |x: f32| bf16::from_f32(x).to_f32();
                        qr.iter()
                            .zip(key)
                            .map(|(a, b)| round(*a) * b.to_f32())
                            .sum()
                    })
                })
                .collect();
            let mut pairs = vec![0u32; d];
            for (qr, row) in q.iter().zip(pairs.chunks_exact_mut(d / 2)) {
                // SAFETY: AVX512-BF16 checked above.
                unsafe { bf16gemm::to_pairs(qr, row) };
            }
            let mut got = vec![f32::NAN; 2 * jl];
            let (a, b) = got.split_at_mut(jl);
            let (qa, qb) = pairs.split_at(d / 2);
            // SAFETY: AVX512-BF16 checked above.
            unsafe { bf16gemm::scores2([qa, qb], &keys, d, [a, b]) };
            assert!(max_diff(&got, &want) < 1e-4, "bf16 pairs, d = {d}");
        }
    }

    #[test]
    fn guided_tasks_cover_every_item_once_and_shrink() {
        for (items, threads, most) in [(0, 2, 4), (1, 2, 4), (192, 2, 16), (4748, 2, 16), (7, 8, 1)]
        {
            let s = guided_splits(items, threads, most);
            assert_eq!((s[0], *s.last().unwrap()), (0, items));
            let sizes: Vec<usize> = s.windows(2).map(|w| w[1] - w[0]).collect();
            assert!(sizes.iter().all(|&n| (1..=most).contains(&n)), "{sizes:?}");
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
            if items > 0 {
                assert_eq!(sizes.last(), Some(&1), "{sizes:?}");
            }
            // Claimed from several threads, every item is visited once.
            let seen: Vec<std::sync::atomic::AtomicUsize> =
                (0..items).map(|_| Default::default()).collect();
            for_each_guided(&s, |r| {
                for i in r {
                    seen[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            assert!(seen
                .iter()
                .all(|n| n.load(std::sync::atomic::Ordering::Relaxed) == 1));
        }
        // 192 panels on two cores: a quarter first, few tasks in all.
        let s = guided_splits(192, 2, 64);
        assert_eq!(s[1], 48);
        assert!(s.len() < 24, "{s:?}");
    }

    #[test]
    fn prefetch_overrides_set_both_hints_or_each() {
        use StreamHint as H;
        assert_eq!(parse_hints(None), (None, None));
        assert_eq!(parse_hints(Some("none")), (Some(H::None), Some(H::None)));
        assert_eq!(parse_hints(Some("nta,t1")), (Some(H::Nta), Some(H::T1)));
        assert_eq!(parse_hints(Some("t0, none")), (Some(H::T0), Some(H::None)));
        // An unknown name keeps the CPU's own choice for that stream.
        assert_eq!(parse_hints(Some("fast,t1")), (None, Some(H::T1)));
        assert_eq!(parse_hints(Some("")), (None, None));
        // Every CPU kind has a hint for both streams.
        for cpu in [Cpu::AmdZen5, Cpu::AmdEarlier, Cpu::Other, Cpu::detect()] {
            assert!(StreamHint::ALL.contains(&cpu.stream_hint()));
            assert!(StreamHint::ALL.contains(&cpu.cache_hint()));
        }
    }

    #[test]
    fn bounds_checks_refuse_overflowing_sizes() {
        assert!(holds(12, 3, 4) && !holds(11, 3, 4));
        assert!(!holds(usize::MAX, 1 << 59, 1 << 6));
        assert!(strided_holds(0, 0, usize::MAX, 5));
        assert!(strided_holds(11, 3, 4, 3) && !strided_holds(10, 3, 4, 3));
        assert!(!strided_holds(64, 2, usize::MAX - (1 << 59) + 1, 1 << 59));
    }

    /// The AVX2 weighted sums of values (two rows per pass, a lone last
    /// row, int8 rows times their block scales, a next tile's rows after
    /// the tile's) equal the portable loop.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_weighted_sums_match_the_portable_loop() {
        fn check<K: Elem>(from: fn(f32) -> K, scaled: bool) {
            let mut s = 13u64;
            for d in [32usize, 64, 128] {
                for (nrows, jl) in [(1usize, 1usize), (2, 7), (3, 256), (4, 33)] {
                    let stride = jl + 3;
                    let p: Vec<f32> = (0..nrows * stride).map(|_| rng(&mut s).abs()).collect();
                    // Rows of a next tile after the jl, only prefetched.
                    let extra = jl / 2;
                    let vals: Vec<K> = (0..(jl + extra) * d).map(|_| from(rng(&mut s))).collect();
                    let scales: Vec<f32> = if scaled {
                        (0..jl * d / KV_BLOCK).map(|_| rng(&mut s).abs()).collect()
                    } else {
                        Vec::new()
                    };
                    let start: Vec<f32> = (0..nrows * d).map(|_| rng(&mut s)).collect();
                    let mut want = start.clone();
                    for (r, a) in want.chunks_exact_mut(d).enumerate() {
                        let pr = &p[r * stride..r * stride + jl];
                        if scaled {
                            pv_scaled(a, pr, &vals[..jl * d], &scales);
                        } else {
                            pv_portable(a, pr, &vals[..jl * d]);
                        }
                    }
                    let mut got = start.clone();
                    K::pv_rows_avx2(&mut got, d, &p, stride, jl, &vals, &scales);
                    assert!(
                        max_diff(&got, &want) < 1e-4,
                        "d = {d}, rows = {nrows}, keys = {jl}"
                    );
                }
            }
        }
        if !(has_avx2_fma() && has_f16c()) {
            return;
        }
        check::<f32>(|x| x, false);
        check::<bf16>(bf16::from_f32, false);
        check::<f16>(f16::from_f32, false);
        check::<i8>(|x| (x * 8.0) as i8, true);
    }

    #[test]
    fn silu_mul_matches_the_definition() {
        let width = 37;
        let mut s = 9u64;
        let gu: Vec<f32> = (0..3 * 2 * width).map(|_| rng(&mut s) * 40.0).collect();
        let got = silu_mul(&gu, width);
        for (r, row) in gu.chunks(2 * width).enumerate() {
            for j in 0..width {
                let (x, y) = (row[j] as f64, row[width + j] as f64);
                let want = x / (1.0 + (-x).exp()) * y;
                let g = got[r * width + j] as f64;
                assert!(
                    (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{x}: {g} vs {want}"
                );
            }
        }
        // Far tails: no overflow, no NaN.
        let tails = silu_mul(&[-200.0, 200.0, 1.0, 1.0], 2);
        assert_eq!(tails, vec![-0.0, 200.0]);
    }

    #[test]
    fn fast_exp_is_accurate() {
        for i in 0..10_000 {
            let x = -(i as f32) * 0.0087;
            let (a, b) = (fast_exp(x), x.exp());
            assert!((a - b).abs() <= 1e-6 * b + 1e-12, "{x}: {a} vs {b}");
        }
        assert_eq!(fast_exp(0.0), 1.0);
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(-100.0), 0.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn integer_scores_equal_the_rounded_queries_products() {
        if !vnni_scores_run(64) {
            return;
        }
        for d in [64, 128, 192, 256, 512] {
            for jl in [1, 3, 4, 7, 33] {
                let mut s = (d * 7 + jl) as u64;
                let mut keys: Vec<i8> = (0..jl * d).map(|_| (rng(&mut s) * 255.0) as i8).collect();
                keys[0] = -128;
                let scales: Vec<f32> = (0..jl * d / 32).map(|_| rng(&mut s).abs() + 0.01).collect();
                let q: Vec<Vec<f32>> = (0..2)
                    .map(|_| (0..d).map(|_| rng(&mut s) * 3.0).collect())
                    .collect();
                let qi = [QueryI8::new(&q[0]), QueryI8::new(&q[1])];
                let (mut a, mut b) = (vec![0f32; jl], vec![0f32; jl]);
                assert!(scores2_vnni(
                    [&qi[0], &qi[1]],
                    &keys,
                    &scales,
                    d,
                    [&mut a, &mut b]
                ));
                for (h, got) in [&a, &b].into_iter().enumerate() {
                    for j in 0..jl {
                        let (mut rounded, mut exact, mut size) = (0f64, 0f64, 0f64);
                        for i in 0..d {
                            let ks = scales[j * d / 32 + i / 32] as f64;
                            let k = keys[j * d + i] as f64 * ks;
                            let qr = qi[h].q[i] as f64 * qi[h].scales[i / 4] as f64;
                            rounded += qr * k;
                            exact += q[h][i] as f64 * k;
                            size += (q[h][i] as f64 * k).abs();
                        }
                        let g = got[j] as f64;
                        assert!(
                            (g - rounded).abs() <= 1e-5 * size + 1e-6,
                            "d {d}, key {j}: {g} vs {rounded}"
                        );
                        // The queries' rounding: within 1% of the products' size.
                        assert!(
                            (g - exact).abs() <= 1e-2 * size,
                            "d {d}, key {j}: {g} vs {exact}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn softmax_loops_match_scalar_on_every_width() {
        // Lengths around the 8- and 16-lane vectors, with masked scores.
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 33, 100] {
            let mut s = n as u64 + 5;
            let mut xs: Vec<f32> = (0..n).map(|_| rng(&mut s) * 20.0).collect();
            if n > 2 {
                xs[1] = f32::NEG_INFINITY;
            }
            let want_max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_of(&xs), want_max, "n = {n}");
            let shift = want_max.max(0.0);
            let want: Vec<f32> = xs.iter().map(|&x| fast_exp(x - shift)).collect();
            let sum = exp_shifted(&mut xs, shift);
            assert!(max_diff(&xs, &want) <= 1e-7, "n = {n}");
            let want_sum: f32 = want.iter().sum();
            assert!(
                (sum - want_sum).abs() <= 1e-5 * want_sum.max(1.0),
                "n = {n}"
            );
        }
    }

    /// Attention the obvious way: full score rows, softmax, weighted sum.
    fn naive_attention(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        valid: &[Vec<bool>],
        s: AttnShape,
        scale: f32,
    ) -> Vec<f32> {
        let (h, d, rep) = (s.heads, s.dim, s.heads / s.kv_heads);
        let mut out = vec![0f32; s.batch * s.t * h * d];
        for b in 0..s.batch {
            for hh in 0..h {
                let g = hh / rep;
                for i in 0..s.t {
                    let me = s.past + i;
                    let qr = &q[((b * h + hh) * s.t + i) * d..][..d];
                    let krow = |j: usize| &k[((b * s.kv_heads + g) * s.cap + j) * d..][..d];
                    let vrow = |j: usize| &v[((b * s.kv_heads + g) * s.cap + j) * d..][..d];
                    let allowed: Vec<usize> =
                        (0..=me).filter(|&j| j == me || valid[b][j]).collect();
                    let sc: Vec<f32> = allowed
                        .iter()
                        .map(|&j| qr.iter().zip(krow(j)).map(|(a, b)| a * b).sum::<f32>() * scale)
                        .collect();
                    let mx = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = sc.iter().map(|x| (x - mx).exp()).collect();
                    let z: f32 = e.iter().sum();
                    let o = &mut out[((b * s.t + i) * h + hh) * d..][..d];
                    for (&j, p) in allowed.iter().zip(&e) {
                        for (o, vv) in o.iter_mut().zip(vrow(j)) {
                            *o += p / z * vv;
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn attention_matches_naive_with_padding_cache_and_groups() {
        let mut seed = 11u64;
        // Several tiles of keys, several query blocks, padding, a cache prefix.
        for &(batch, heads, kv_heads, t, past, dim) in &[
            (1, 2, 1, 1, 0, 8),
            (2, 4, 2, 7, 5, 16),
            (1, 16, 8, 70, 600, 32),
            (1, 4, 2, 45, 290, 128),
            (2, 3, 3, 130, 0, 8),
            // Decode: one query row per head over a long cache (dot products),
            // heads of 128 and 64, and an odd number of heads per key head.
            (2, 16, 8, 1, 700, 128),
            (1, 8, 4, 1, 300, 64),
            (1, 3, 1, 1, 40, 64),
            // Decode over few key heads and many keys: each head's keys
            // split between tasks, their partial sums merged.
            (2, 4, 1, 1, 1800, 128),
            (1, 2, 1, 1, 1100, 32),
            // Several query times (rows of heads x times) split and merged.
            (1, 2, 1, 4, 1022, 32),
        ] {
            let keys = past + t;
            let cap = keys + 3;
            let s = AttnShape {
                batch,
                heads,
                kv_heads,
                t,
                dim,
                past,
                keys,
                cap,
            };
            let q: Vec<f32> = (0..batch * heads * t * dim)
                .map(|_| rng(&mut seed) * 3.0)
                .collect();
            let kv_len = batch * kv_heads * cap * dim;
            let k: Vec<f32> = (0..kv_len).map(|_| rng(&mut seed)).collect();
            let v: Vec<f32> = (0..kv_len).map(|_| rng(&mut seed)).collect();
            // Row 1 (if any) starts with padding: over a long cache, more
            // than a split decode task's range of keys.
            let pad = if keys > 1000 { 600 } else { 4 };
            let valid: Vec<Vec<bool>> = (0..batch)
                .map(|b| (0..keys).map(|j| b == 0 || j >= pad).collect())
                .collect();
            let want = naive_attention(&q, &k, &v, &valid, s, 0.3);
            let got = attention(&q, &k, &v, &valid, s, 0.3);
            assert!(
                max_diff(&got, &want) < 1e-5,
                "{s:?}: {}",
                max_diff(&got, &want)
            );
            // bf16 cache against the naive result on the rounded values.
            let kb: Vec<bf16> = k.iter().map(|&x| bf16::from_f32(x)).collect();
            let vb: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
            let kr: Vec<f32> = kb.iter().map(|x| x.to_f32()).collect();
            let vr: Vec<f32> = vb.iter().map(|x| x.to_f32()).collect();
            let want = naive_attention(&q, &kr, &vr, &valid, s, 0.3);
            let got = attention(&q, &kb, &vb, &valid, s, 0.3);
            // With AVX512-BF16 the queries are rounded to bf16 too, and
            // many query rows also round the probabilities (outputs are
            // averages of values in [-1, 1]).
            let rounds = dim % 32 == 0 && {
                #[cfg(target_arch = "x86_64")]
                {
                    has_avx512bf16()
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            };
            let tol = if rounds { 2e-2 } else { 1e-5 };
            assert!(
                max_diff(&got, &want) < tol,
                "bf16 {s:?}: {}",
                max_diff(&got, &want)
            );
            // f16 cache likewise (widened exactly on every path).
            let kh: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
            let vh: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            let kr: Vec<f32> = kh.iter().map(|x| x.to_f32()).collect();
            let vr: Vec<f32> = vh.iter().map(|x| x.to_f32()).collect();
            let want = naive_attention(&q, &kr, &vr, &valid, s, 0.3);
            let got = attention(&q, &kh, &vh, &valid, s, 0.3);
            assert!(max_diff(&got, &want) < 1e-5, "f16 {s:?}");
            // int8 cache (blocks of 32, or whole rows of 8 and 16): against
            // the naive result on the dequantized rows.
            let block = kv_block(dim);
            let (mut k8, mut v8) = (vec![0i8; kv_len], vec![0i8; kv_len]);
            let (mut ks, mut vs) = (vec![0f32; kv_len / block], vec![0f32; kv_len / block]);
            quantize_rows(&k, block, &mut k8, &mut ks);
            quantize_rows(&v, block, &mut v8, &mut vs);
            let deq = |q: &[i8], sc: &[f32]| -> Vec<f32> {
                q.iter()
                    .enumerate()
                    .map(|(i, &x)| f32::from(x) * sc[i / block])
                    .collect()
            };
            let (kr, vr) = (deq(&k8, &ks), deq(&v8, &vs));
            assert!(max_diff(&kr, &k) <= 1.0 / 254.0 + 1e-6, "int8 rounding");
            let want = naive_attention(&q, &kr, &vr, &valid, s, 0.3);
            let got = attention_scaled(&q, &k8, &v8, Some((&ks, &vs)), &valid, s, 0.3);
            // Decode with AVX512-VNNI rounds the queries to int8 as well.
            let rounds = {
                #[cfg(target_arch = "x86_64")]
                {
                    vnni_scores_run(dim)
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            };
            let tol = if rounds { 1e-2 } else { 1e-5 };
            assert!(
                max_diff(&got, &want) < tol,
                "int8 {s:?}: {}",
                max_diff(&got, &want)
            );
        }
    }
}
