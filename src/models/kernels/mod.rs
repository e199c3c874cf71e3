//! CPU kernels for the two operations that dominate a Qwen forward pass:
//! projections (activations × weightsᵀ) and attention.
//!
//! candle's CPU backend widens bf16 weights to f32 on every op and runs
//! attention through generic matmul + mask + softmax tensors. These kernels
//! work on the weight buffers in place instead. The files, by concern:
//!
//! - `detect`: what the CPU runs (SIMD features, found once and capped by
//!   `SHIRABE_SIMD`), its family, and the prefetch hints measured for it.
//! - `dispatch`: each element type's decode kernels, chosen once into a
//!   table ([`Kernels`]) from `x86` (or `portable` elsewhere). A new
//!   instruction set (aarch64 NEON, say) is a new module whose tables the
//!   choice tries first: no element type gains a method.
//! - `portable`: the same kernels in plain Rust, and the fallback for the
//!   shapes the SIMD ones leave.
//! - `x86/`: the intrinsics, one folder per instruction set — `avx2/` and
//!   `avx512/` (attention's decode kernels, projection panels), `vnni`
//!   (int8 scores), `bf16` (AVX512-BF16 tiles), `amx` (AMX tiles).
//! - [`Packed`] (in `packed`): projection weights repacked once, at load,
//!   into k-major panels of 32 rows on 2 MB pages. For a few rows (decode,
//!   one token per sequence) a matrix × vector product streams each panel
//!   front to back, split over all cores; for many rows (prefill,
//!   embedding) the AVX512-BF16 tile kernel reads bf16 panels as they are,
//!   and `gemm` takes the others widened to f32 four panels at a time.
//!   [`linear`] packs and multiplies in one call, for row-major weights.
//! - `ktile`: GGUF Q4_K / Q5_K / Q6_K blocks repacked at load into tiles
//!   of 16 rows for `vpdpbusd` (`x86/vnni_ktile`) or, without VNNI,
//!   AVX2's `vpmaddubsw` (`x86/avx2/ktile`): one copy that decode and
//!   prefill both read. `kquant`: the blocks read in place, row by row,
//!   where neither runs (and the tiles' reference).
//! - `q8`: GGUF Q8_0 weights in the same panels, multiplied as int8 with
//!   int8-quantized activations (`vpdpbusd`) in decode, widened to bf16
//!   panel by panel for prefill. Q4_0 and Q5_0 weights are re-encoded as
//!   Q8_0 at load, exactly (`requant`), and take the same path.
//! - [`attention`]: causal attention with online softmax over key tiles
//!   (flash-attention style): scores exist for one tile of keys at a time,
//!   so memory is O(rows × tile), keys and values are read straight from the
//!   KV cache buffers in their own dtype, grouped-query heads share each key
//!   tile, and the output comes out in (batch, time, heads × dim) order for
//!   the output projection. Over an int8 cache with AVX512-VNNI, decode's
//!   scores are integer products with the queries rounded to int8 blocks.
//! - `heads`: the fused q/k/v rows cut into head-major q, k, v, with q/k
//!   norms and RoPE, in one pass.
//! - `activations`: SwiGLU and the branch-free exp.
//! - `schedule`: [`on_pool`] runs a forward pass on a pool worker, the
//!   other workers polling for its parallel loops in decode; guided
//!   self-scheduling splits the matrix × vector products.
//! - `yardstick`: the read-bandwidth yardstick of the benchmarks.
//!
//! Everything here is safe to call; the `unsafe` blocks are SIMD intrinsics
//! behind runtime feature checks, `gemm` calls on bounds-checked slices,
//! and raw writes into output buffers that the kernels fill completely
//! (so they are not zeroed first).

use half::{bf16, f16};

use rayon::prelude::*;

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

mod activations;
mod attention;
mod detect;
mod dispatch;
mod heads;
pub mod kquant;
pub mod ktile;
mod packed;
mod portable;
mod q8;
pub mod requant;
mod schedule;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(feature = "bench-internals")]
mod yardstick;

use activations::fast_exp;
pub use activations::silu_mul;
pub(crate) use attention::max_of_body;
pub use attention::{attention, attention_scaled};
pub(crate) use detect::*;
pub use detect::{cache_hint, stream_hint, StreamHint};
pub use dispatch::Kernels;
pub use heads::{split_heads, HeadSplit};
pub use packed::Packed;
#[cfg(feature = "bench-internals")]
pub use packed::{Buf, Zeroable};
pub use schedule::on_pool;
#[cfg(feature = "bench-internals")]
pub use schedule::POLL_IDLE;
pub(crate) use schedule::{for_each_guided, guided_splits};
#[cfg(all(target_arch = "x86_64", feature = "bench-internals"))]
pub use x86::amx::{ceiling as amx_ceiling, Ceiling as AmxCeiling};
#[cfg(feature = "bench-internals")]
pub use yardstick::stream_sum;

/// A weight or cache element: f32, bf16, f16 or i8 (the int8 cache). Its
/// decode kernels come from [`Elem::kernels`], chosen once for this CPU.
pub trait Elem: Copy + Send + Sync + 'static {
    /// Writes `src` as f32 into `dst` (same length).
    fn widen(src: &[Self], dst: &mut [f32]);
    /// `src` itself, when it already is f32.
    fn as_f32(src: &[Self]) -> Option<&[f32]>;
    /// One element as f32.
    fn to_f32(self) -> f32;
    /// Row-major weights (n × k) packed for the projection kernels.
    #[cfg_attr(not(any(test, feature = "bench-internals")), allow(dead_code))]
    fn pack(w: &[Self], n: usize, k: usize) -> Packed;
    /// The values as bf16, if that is what they are.
    fn as_bf16(_: &[Self]) -> Option<&[bf16]> {
        None
    }
    /// The values as int8, if that is what they are.
    fn as_i8(_: &[Self]) -> Option<&[i8]> {
        None
    }
    /// This type's decode kernels on this CPU, chosen once.
    fn kernels() -> &'static Kernels<Self>;
    /// `x` arranged as [`Elem::dot4`] and the two-row scores read it (a
    /// copy, reordered where the SIMD kernels want it).
    fn prepare(x: &[f32]) -> Vec<f32> {
        (Self::kernels().prepare)(x)
    }
    /// Dot products of a [`Elem::prepare`]d `x` with four rows (each at
    /// least as long as `x`).
    fn dot4(x: &[f32], rows: [&[Self]; 4]) -> [f32; 4] {
        // SAFETY: the table holds kernels this CPU runs (`dispatch`); they
        // check the lengths.
        unsafe { (Self::kernels().dot4)(x, rows) }
    }
    /// `acc += Σ_j p[j] · rows[j]` for `p.len()` rows of `acc.len()`
    /// elements each, laid out one after another in `rows`.
    fn pv(acc: &mut [f32], p: &[f32], rows: &[Self]) {
        // SAFETY: as in `dot4`.
        unsafe { (Self::kernels().pv)(acc, p, rows) }
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
        // SAFETY: as in `dot4`.
        unsafe { (Self::kernels().pv_rows)(acc, d, p, stride, jl, rows, scales) }
    }
    /// `acc += a · row`.
    fn axpy(acc: &mut [f32], a: f32, row: &[Self]) {
        // SAFETY: as in `dot4`.
        unsafe { (Self::kernels().axpy)(acc, a, row) }
    }
}

impl Elem for f32 {
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
    fn kernels() -> &'static Kernels<f32> {
        dispatch::chosen_once!(f32)
    }
}

impl Elem for bf16 {
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
    fn kernels() -> &'static Kernels<bf16> {
        dispatch::chosen_once!(bf16)
    }
}

impl Elem for f16 {
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
    fn kernels() -> &'static Kernels<f16> {
        dispatch::chosen_once!(f16)
    }
}

/// An int8 cache element. Its decode kernels take the blocks' scales
/// ([`attention_scaled`] passes them) and multiply each widened block by
/// its own; `dot4` and `pv` see plain integers.
impl Elem for i8 {
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
    fn kernels() -> &'static Kernels<i8> {
        dispatch::chosen_once!(i8)
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
/// Whether this CPU runs the int8 KV cache's decode kernels (AVX-512, or
/// AVX2 with FMA and F16C; for heads that are a multiple of 32, as
/// Qwen's); elsewhere a portable loop does, slower than a float cache's
/// kernels.
pub fn fast_int8_cache() -> bool {
    i8::kernels().scores2.is_some()
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
#[cfg_attr(not(any(test, feature = "bench-internals")), allow(dead_code))]
pub fn linear<W: Elem>(x: &[f32], m: usize, k: usize, w: &[W], n: usize) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "activations");
    assert_eq!(w.len(), n * k, "weights");
    W::pack(w, n, k).linear(x, m)
}
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

#[cfg(test)]
mod tests;
