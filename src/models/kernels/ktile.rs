//! GGUF k-quants (Q4_K, Q6_K) repacked once, at load, into tiles of
//! [`TR`] rows that both decode and prefill read: one copy of the weights.
//!
//! [`super::kquant`] reads the blocks where candle loaded them, one row at
//! a time, and its products take three instructions per 64 multiply-adds
//! (`vpmaddubsw`, `vpmaddwd`, an add). Here a super-block of 256 inputs of
//! 16 rows is one tile, laid out for `vpdpbusd` (AVX512-VNNI): every 64
//! bytes hold 4 consecutive inputs of each of the 16 rows, so one
//! instruction multiplies them by 4 activations broadcast to all rows and
//! adds into 16 int32 lanes, one per row. The same tile serves 1 to
//! [`MR`] rows of activations per pass: decode (one token) streams the
//! weights once, prefill reuses each unpacked register for four tokens.
//!
//! A **Q4_K** tile ([`Q4K_TILE`] bytes, 5.6% more than 16 blocks): the 16
//! rows' `d` and `dmin` as f32, their 6-bit scales and mins unpacked to a
//! byte each (sub-block-major: 16 rows' scale of sub-block j together),
//! then the quants: for each pair of sub-blocks (2p, 2p + 1) and each group
//! of 4 inputs, 64 bytes — row r's 4 bytes are GGUF's own bytes `32p + 4g`
//! .. `+ 4`, whose low nibbles are sub-block 2p's weights and high nibbles
//! sub-block 2p + 1's.
//!
//! A **Q6_K** tile ([`Q6K_TILE`] bytes, 1% more): the rows' `d` as f32,
//! their sixteen int8 scales (sub-block-major), then per half (128 inputs)
//! and group of 4, three 64-byte runs: the low-nibble bytes `l` and
//! `l + 32` and the high-bit byte `l` of each row, as GGUF stores them.
//!
//! A **Q5_K** tile ([`Q5K_TILE`] bytes, 4.5% more): a Q4_K tile, then
//! per group of 4 inputs 64 bytes of the rows' fifth bits, GGUF's bytes
//! `4g` .. `+ 4` of `qh` (bit j: sub-block j).
//!
//! Rows past `n` (the last tile of a matrix whose rows are not a multiple
//! of 16) have zero scales and give 0. The activations are quantized to
//! Q8_K per row ([`Q8K`]), as llama.cpp does; the integer sums are exact,
//! so a tile's product equals [`super::kquant`]'s row by row up to the
//! order of the f32 additions.
//!
//! The tiles are used where the CPU has AVX512-VNNI or AVX2 ([`runs`];
//! the AVX2 kernel takes each 64-byte run as two halves of 8 rows, with
//! `vpmaddubsw` and `vpmaddwd`); elsewhere the blocks stay in place for
//! [`super::kquant`] and candle. The portable kernel here is the
//! reference the tests hold both to.

use half::f16;

use super::kquant::{q4k_scales, Kind, Q4K_BYTES, Q5K_BYTES, Q8K, QK_K};
use super::packed::Buf;
use super::schedule::{for_each_guided, guided_splits};
use super::SendPtr;

/// Rows per tile (int32 lanes of a 512-bit register).
pub const TR: usize = 16;

/// Rows of activations per kernel pass.
pub const MR: usize = 4;

/// Bytes of a Q4_K tile: d, dmin (f32 × 16 each), scales, mins (8 × 16),
/// quants (16 × 128).
pub const Q4K_TILE: usize = 2 * 4 * TR + 2 * 8 * TR + TR * 128;

/// Bytes of a Q5_K tile: a Q4_K tile, then the fifth bits (16 × 32).
pub const Q5K_TILE: usize = Q4K_TILE + TR * 32;

/// Offset of a Q5_K tile's fifth bits.
pub(crate) const Q5K_HIGH: usize = Q4K_TILE;

/// Bytes of a Q6_K tile: d (f32 × 16), scales (16 × 16), quants (16 × 192).
pub const Q6K_TILE: usize = 4 * TR + 16 * TR + TR * 192;

/// Offset of a Q4_K tile's scales, mins and quants.
pub(crate) const Q4K_SCALES: usize = 8 * TR;
pub(crate) const Q4K_MINS: usize = Q4K_SCALES + 8 * TR;
pub(crate) const Q4K_QUANTS: usize = Q4K_MINS + 8 * TR;

/// Offset of a Q6_K tile's scales and quants.
pub(crate) const Q6K_SCALES: usize = 4 * TR;
pub(crate) const Q6K_QUANTS: usize = Q6K_SCALES + 16 * TR;

/// Bytes of one tile of `kind`.
pub fn tile_bytes(kind: Kind) -> usize {
    match kind {
        Kind::Q4K => Q4K_TILE,
        Kind::Q5K => Q5K_TILE,
        Kind::Q6K => Q6K_TILE,
    }
}

/// Whether this CPU multiplies tiles with its own instructions (AVX512-VNNI
/// and AVX512BW, or AVX2 and FMA, within `SHIRABE_SIMD`): only then are
/// weights repacked.
pub fn runs() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        vnni() || super::has_avx2_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the VNNI kernels run.
#[cfg(target_arch = "x86_64")]
fn vnni() -> bool {
    super::has_avx512vnni() && super::has_avx512bw()
}

/// A k-quant matrix (n rows × k inputs) in tiles: `n.div_ceil(16)` row
/// tiles, each `k / 256` tiles long.
pub struct KTiles {
    kind: Kind,
    n: usize,
    k: usize,
    data: Buf<u8>,
}

/// Tile-major products: `m` rows of activations (`acts`, Q8_K) times one
/// row tile (`kb` tiles at `tile`), `out[i·16 + r]` = row i · weight row r.
pub type TileKernel = unsafe fn(tile: &[u8], acts: &[Q8K], out: &mut [f32]);

/// Checks the lengths the SIMD kernels rely on (whole tiles of `tile`
/// bytes, 1 to [`MR`] rows of as many super-blocks, an output per row and
/// tile row); returns the super-blocks.
pub(crate) fn check_lengths(tiles: &[u8], tile: usize, acts: &[Q8K], out: &[f32]) -> usize {
    assert!(tiles.len().is_multiple_of(tile), "whole tiles");
    let kb = tiles.len() / tile;
    assert!((1..=MR).contains(&acts.len()), "1 to {MR} rows");
    assert!(
        acts.iter()
            .all(|a| a.q.len() == kb * QK_K && a.sums.len() == kb * 16 && a.d.len() == kb),
        "activations of {kb} super-blocks"
    );
    assert_eq!(out.len(), acts.len() * TR, "outputs");
    kb
}

impl KTiles {
    /// Repacks `n` GGUF rows of `kind` (`k` inputs, a multiple of 256).
    pub fn pack(kind: Kind, src: &[u8], n: usize, k: usize) -> KTiles {
        use rayon::prelude::*;
        assert!(
            k.is_multiple_of(QK_K),
            "k-quant rows are whole super-blocks"
        );
        let kb = k / QK_K;
        let row_bytes = kb * kind.block_bytes();
        assert_eq!(src.len(), n * row_bytes, "k-quant weights");
        let stride = kb * tile_bytes(kind);
        let mut data = Buf::<u8>::zeroed(n.div_ceil(TR) * stride);
        if stride > 0 {
            data.par_chunks_mut(stride)
                .enumerate()
                .for_each(|(t, dst)| {
                    let rows = t * TR..((t + 1) * TR).min(n);
                    for (b, tile) in dst.chunks_exact_mut(tile_bytes(kind)).enumerate() {
                        for r in rows.clone() {
                            let at = r * row_bytes + b * kind.block_bytes();
                            let blk = &src[at..at + kind.block_bytes()];
                            match kind {
                                Kind::Q4K => put_q4k(tile, r - rows.start, blk),
                                Kind::Q5K => put_q5k(tile, r - rows.start, blk),
                                Kind::Q6K => put_q6k(tile, r - rows.start, blk),
                            }
                        }
                    }
                });
        }
        KTiles { kind, n, k, data }
    }

    /// Which k-quant the tiles hold.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Output rows.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inputs per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Bytes of one row tile (all its super-blocks).
    fn stride(&self) -> usize {
        self.k / QK_K * tile_bytes(self.kind)
    }

    /// Row `j`, dequantized (an embedding lookup from a tied head).
    pub fn row(&self, j: usize) -> Vec<f32> {
        assert!(j < self.n, "row {j} of {}", self.n);
        let (t, r) = (j / TR, j % TR);
        let tiles = &self.data[t * self.stride()..(t + 1) * self.stride()];
        let mut out = Vec::with_capacity(self.k);
        for tile in tiles.chunks_exact(tile_bytes(self.kind)) {
            match self.kind {
                Kind::Q4K => out.extend(dequant_q4k(tile, r, &q4k_quants(tile, r))),
                Kind::Q5K => out.extend(dequant_q4k(tile, r, &q5k_quants(tile, r))),
                Kind::Q6K => out.extend(dequant_q6k(tile, r)),
            }
        }
        out
    }

    /// Joins matrices of the same kind and inputs whose rows are whole
    /// tiles (all but the last): their outputs side by side.
    pub fn concat(parts: &[&KTiles]) -> Option<KTiles> {
        let first = parts.first()?;
        let fits = parts.iter().enumerate().all(|(i, p)| {
            p.kind == first.kind
                && p.k == first.k
                && (i + 1 == parts.len() || p.n.is_multiple_of(TR))
        });
        if !fits {
            return None;
        }
        let len: usize = parts.iter().map(|p| p.data.len()).sum();
        let mut data = Buf::<u8>::zeroed(len);
        let mut at = 0;
        for p in parts {
            data[at..at + p.data.len()].copy_from_slice(&p.data);
            at += p.data.len();
        }
        Some(KTiles {
            kind: first.kind,
            n: parts.iter().map(|p| p.n).sum(),
            k: first.k,
            data,
        })
    }

    /// `x` (m × k, row-major) times the weights transposed: m × n. Each
    /// row of `x` is quantized to Q8_K once; the row tiles are split
    /// between the threads, and each task takes the activations in blocks
    /// that stay in the core's L2 cache while it walks its tiles.
    pub fn linear(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.linear_with(x, m, kernel(self.kind))
    }

    /// [`KTiles::linear`] with the kernel given (the tests compare them).
    pub(crate) fn linear_with(&self, x: &[f32], m: usize, kern: TileKernel) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "activations");
        if m == 0 || n == 0 || k == 0 {
            return vec![0f32; m * n];
        }
        let acts: Vec<Q8K> = if m > 1 {
            use rayon::prelude::*;
            x.par_chunks_exact(k).map(Q8K::new).collect()
        } else {
            vec![Q8K::new(x)]
        };
        let tiles = n.div_ceil(TR);
        let stride = self.stride();
        // Activations per block: about 256 KB of int8.
        let block = (256 * 1024 / k).clamp(MR, 256) / MR * MR;
        // Decode: tasks of ~1 MB of weights, shrinking towards the end so
        // the cores finish together; prefill: as many as the block needs.
        let most = if m <= MR {
            (1usize << 20).div_ceil(stride).max(1)
        } else {
            usize::MAX
        };
        let splits = guided_splits(tiles, rayon::current_num_threads(), most);
        let mut out = Vec::<f32>::with_capacity(m * n);
        let dst = SendPtr(out.as_mut_ptr());
        for_each_guided(&splits, |task| {
            let mut tile_out = [0f32; MR * TR];
            for rows in (0..m).step_by(block) {
                let rows = rows..(rows + block).min(m);
                for t in task.clone() {
                    let w = &self.data[t * stride..(t + 1) * stride];
                    let cols = TR.min(n - t * TR);
                    for i0 in rows.clone().step_by(MR) {
                        let a = &acts[i0..(i0 + MR).min(rows.end)];
                        // SAFETY: the kernel's instruction sets were checked
                        // when it was chosen; it checks the lengths.
                        unsafe { kern(w, a, &mut tile_out[..a.len() * TR]) };
                        for (j, o) in tile_out.chunks_exact(TR).take(a.len()).enumerate() {
                            // SAFETY: outputs (i0 + j, t·16..) belong to this
                            // task alone, inside the m × n `out` holds.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    o.as_ptr(),
                                    dst.get().add((i0 + j) * n + t * TR),
                                    cols,
                                )
                            };
                        }
                    }
                }
            }
        });
        // SAFETY: every (i, r) was written above.
        unsafe { out.set_len(m * n) };
        out
    }
}

/// The kernel for `kind` on this CPU.
fn kernel(kind: Kind) -> TileKernel {
    #[cfg(target_arch = "x86_64")]
    if vnni() {
        return match kind {
            Kind::Q4K => super::x86::vnni_ktile::q4k,
            Kind::Q5K => super::x86::vnni_ktile::q5k,
            Kind::Q6K => super::x86::vnni_ktile::q6k,
        };
    }
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        use super::x86::avx2::ktile;
        return match kind {
            Kind::Q4K => ktile::q4k,
            Kind::Q5K => ktile::q5k,
            Kind::Q6K => ktile::q6k,
        };
    }
    portable(kind)
}

/// The portable kernel for `kind`.
pub fn portable(kind: Kind) -> TileKernel {
    match kind {
        Kind::Q4K => tile_q4k,
        Kind::Q5K => tile_q5k,
        Kind::Q6K => tile_q6k,
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn put_f32(tile: &mut [u8], at: usize, v: f32) {
    tile[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn f32_at(tile: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([tile[at], tile[at + 1], tile[at + 2], tile[at + 3]])
}

/// Writes GGUF Q4_K block `blk` as row `r` of `tile`.
fn put_q4k(tile: &mut [u8], r: usize, blk: &[u8]) {
    put_f32(tile, 4 * r, f16_at(blk, 0));
    put_f32(tile, 4 * TR + 4 * r, f16_at(blk, 2));
    let both = q4k_scales(&blk[4..16]);
    for j in 0..8 {
        tile[Q4K_SCALES + TR * j + r] = both[j];
        tile[Q4K_MINS + TR * j + r] = both[8 + j];
    }
    let qs = &blk[16..Q4K_BYTES];
    for p in 0..4 {
        for g in 0..8 {
            let at = Q4K_QUANTS + (p * 8 + g) * 64 + 4 * r;
            tile[at..at + 4].copy_from_slice(&qs[32 * p + 4 * g..32 * p + 4 * g + 4]);
        }
    }
}

/// Writes GGUF Q5_K block `blk` as row `r` of `tile`: its scales, mins
/// and low bits as Q4_K's, then its fifth bits.
fn put_q5k(tile: &mut [u8], r: usize, blk: &[u8]) {
    let mut as_q4k = [0u8; Q4K_BYTES];
    as_q4k[..16].copy_from_slice(&blk[..16]);
    as_q4k[16..].copy_from_slice(&blk[48..Q5K_BYTES]);
    put_q4k(tile, r, &as_q4k);
    for g in 0..8 {
        let at = Q5K_HIGH + g * 64 + 4 * r;
        tile[at..at + 4].copy_from_slice(&blk[16 + 4 * g..16 + 4 * g + 4]);
    }
}

/// Writes GGUF Q6_K block `blk` as row `r` of `tile`.
fn put_q6k(tile: &mut [u8], r: usize, blk: &[u8]) {
    put_f32(tile, 4 * r, f16_at(blk, 208));
    for j in 0..16 {
        tile[Q6K_SCALES + TR * j + r] = blk[192 + j];
    }
    let (ql, qh) = (&blk[..128], &blk[128..192]);
    for h in 0..2 {
        for g in 0..8 {
            let run = Q6K_QUANTS + (h * 8 + g) * 192 + 4 * r;
            let l = 4 * g;
            tile[run..run + 4].copy_from_slice(&ql[64 * h + l..64 * h + l + 4]);
            tile[run + 64..run + 68].copy_from_slice(&ql[64 * h + 32 + l..64 * h + 32 + l + 4]);
            tile[run + 128..run + 132].copy_from_slice(&qh[32 * h + l..32 * h + l + 4]);
        }
    }
}

/// The 256 quants (0..16) of row `r` of a Q4_K tile, in input order.
fn q4k_quants(tile: &[u8], r: usize) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for p in 0..4 {
        for g in 0..8 {
            for b in 0..4 {
                let byte = tile[Q4K_QUANTS + (p * 8 + g) * 64 + 4 * r + b];
                q[64 * p + 4 * g + b] = byte & 0x0f;
                q[64 * p + 32 + 4 * g + b] = byte >> 4;
            }
        }
    }
    q
}

/// The 256 quants (0..32) of row `r` of a Q5_K tile, in input order.
fn q5k_quants(tile: &[u8], r: usize) -> [u8; QK_K] {
    let mut q = q4k_quants(tile, r);
    for g in 0..8 {
        for b in 0..4 {
            let high = tile[Q5K_HIGH + g * 64 + 4 * r + b];
            for j in 0..8 {
                q[32 * j + 4 * g + b] |= ((high >> j) & 1) << 4;
            }
        }
    }
    q
}

/// The 256 quants (0..64, offset by 32) of row `r` of a Q6_K tile.
fn q6k_quants(tile: &[u8], r: usize) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for h in 0..2 {
        for g in 0..8 {
            let run = Q6K_QUANTS + (h * 8 + g) * 192 + 4 * r;
            for b in 0..4 {
                let (a, c, hi) = (tile[run + b], tile[run + 64 + b], tile[run + 128 + b]);
                let l = 128 * h + 4 * g + b;
                q[l] = (a & 0x0f) | ((hi & 3) << 4);
                q[l + 32] = (c & 0x0f) | (((hi >> 2) & 3) << 4);
                q[l + 64] = (a >> 4) | (((hi >> 4) & 3) << 4);
                q[l + 96] = (c >> 4) | (((hi >> 6) & 3) << 4);
            }
        }
    }
    q
}

/// Row `r` of a Q4_K or Q5_K tile, whose quants are `q`.
fn dequant_q4k(tile: &[u8], r: usize, q: &[u8; QK_K]) -> Vec<f32> {
    let (d, dmin) = (f32_at(tile, 4 * r), f32_at(tile, 4 * TR + 4 * r));
    (0..QK_K)
        .map(|i| {
            let j = i / 32;
            let (sc, mn) = (tile[Q4K_SCALES + TR * j + r], tile[Q4K_MINS + TR * j + r]);
            d * sc as f32 * q[i] as f32 - dmin * mn as f32
        })
        .collect()
}

fn dequant_q6k(tile: &[u8], r: usize) -> Vec<f32> {
    let d = f32_at(tile, 4 * r);
    let q = q6k_quants(tile, r);
    (0..QK_K)
        .map(|i| {
            let sc = tile[Q6K_SCALES + TR * (i / 16) + r] as i8;
            d * sc as f32 * (q[i] as f32 - 32.0)
        })
        .collect()
}

/// Q4_K tiles × Q8_K rows, portable (and the reference).
///
/// # Safety
/// None (`unsafe` only to share [`TileKernel`]'s type).
pub unsafe fn tile_q4k(tiles: &[u8], acts: &[Q8K], out: &mut [f32]) {
    scaled_mins(tiles, Q4K_TILE, q4k_quants, acts, out)
}

/// Q5_K tiles × Q8_K rows, portable (and the reference).
///
/// # Safety
/// None (`unsafe` only to share [`TileKernel`]'s type).
pub unsafe fn tile_q5k(tiles: &[u8], acts: &[Q8K], out: &mut [f32]) {
    scaled_mins(tiles, Q5K_TILE, q5k_quants, acts, out)
}

/// Tiles of `tile` bytes with Q4_K's scales and mins, whose quants
/// `quants` reads, × Q8_K rows.
fn scaled_mins(
    tiles: &[u8],
    tile: usize,
    quants: fn(&[u8], usize) -> [u8; QK_K],
    acts: &[Q8K],
    out: &mut [f32],
) {
    assert_eq!(out.len(), acts.len() * TR, "outputs");
    out.fill(0.0);
    for (b, tile) in tiles.chunks_exact(tile).enumerate() {
        for r in 0..TR {
            let (d, dmin) = (f32_at(tile, 4 * r), f32_at(tile, 4 * TR + 4 * r));
            let q = quants(tile, r);
            for (i, a) in acts.iter().enumerate() {
                let q8 = &a.q[b * QK_K..(b + 1) * QK_K];
                let sums = &a.sums[b * 16..(b + 1) * 16];
                let (mut sumi, mut mins) = (0i32, 0i32);
                for j in 0..8 {
                    let dot: i32 = (32 * j..32 * j + 32)
                        .map(|l| q[l] as i32 * q8[l] as i32)
                        .sum();
                    sumi += dot * tile[Q4K_SCALES + TR * j + r] as i32;
                    mins += tile[Q4K_MINS + TR * j + r] as i32
                        * (sums[2 * j] as i32 + sums[2 * j + 1] as i32);
                }
                out[i * TR + r] += a.d[b] * (d * sumi as f32 - dmin * mins as f32);
            }
        }
    }
}

/// Q6_K tiles × Q8_K rows, portable (and the reference).
///
/// # Safety
/// None (`unsafe` only to share [`TileKernel`]'s type).
pub unsafe fn tile_q6k(tiles: &[u8], acts: &[Q8K], out: &mut [f32]) {
    assert_eq!(out.len(), acts.len() * TR, "outputs");
    out.fill(0.0);
    for (b, tile) in tiles.chunks_exact(Q6K_TILE).enumerate() {
        for r in 0..TR {
            let d = f32_at(tile, 4 * r);
            let q = q6k_quants(tile, r);
            for (i, a) in acts.iter().enumerate() {
                let q8 = &a.q[b * QK_K..(b + 1) * QK_K];
                let sums = &a.sums[b * 16..(b + 1) * 16];
                let mut sumi = 0i32;
                for j in 0..16 {
                    let dot: i32 = (16 * j..16 * j + 16)
                        .map(|l| q[l] as i32 * q8[l] as i32)
                        .sum();
                    let sc = tile[Q6K_SCALES + TR * j + r] as i8 as i32;
                    sumi += sc * (dot - 32 * sums[j] as i32);
                }
                out[i * TR + r] += a.d[b] * d * sumi as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::kernels::kquant;
    use crate::models::kernels::kquant::tests::{
        acts, assert_near, blocks, candles_product, real_gguf, real_matrices,
    };

    /// The row-by-row products of `kquant` (in place, portable).
    fn reference(kind: Kind, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
        let row_bytes = k / QK_K * kind.block_bytes();
        let dot = match kind {
            Kind::Q4K => kquant::dot_q4k as kquant::Dot,
            Kind::Q5K => kquant::dot_q5k as kquant::Dot,
            Kind::Q6K => kquant::dot_q6k as kquant::Dot,
        };
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            let a = Q8K::new(&x[i * k..(i + 1) * k]);
            // SAFETY: portable.
            unsafe { dot(&w[..n * row_bytes], &a, &mut out[i * n..(i + 1) * n]) };
        }
        out
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{what} [{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn rows_dequantize_as_the_blocks_do() {
        for kind in [Kind::Q4K, Kind::Q5K, Kind::Q6K] {
            let (n, k) = (21, 2 * QK_K);
            let w = blocks(kind, n * 2, 3);
            let tiles = KTiles::pack(kind, &w, n, k);
            let row_bytes = 2 * kind.block_bytes();
            for j in [0, 7, 15, 16, 20] {
                let want = kquant::dequantize(kind, &w[j * row_bytes..(j + 1) * row_bytes]);
                assert_eq!(tiles.row(j), want, "{kind:?} row {j}");
            }
        }
    }

    #[test]
    fn every_kernel_gives_kquants_products() {
        let mut kernels: Vec<(&str, Kind, TileKernel)> = vec![
            ("portable", Kind::Q4K, tile_q4k as TileKernel),
            ("portable", Kind::Q5K, tile_q5k as TileKernel),
            ("portable", Kind::Q6K, tile_q6k as TileKernel),
        ];
        #[cfg(target_arch = "x86_64")]
        if crate::models::kernels::has_avx2_fma() {
            use crate::models::kernels::x86::avx2::ktile as a;
            kernels.push(("avx2", Kind::Q4K, a::q4k as TileKernel));
            kernels.push(("avx2", Kind::Q5K, a::q5k as TileKernel));
            kernels.push(("avx2", Kind::Q6K, a::q6k as TileKernel));
        }
        #[cfg(target_arch = "x86_64")]
        if vnni() {
            use crate::models::kernels::x86::vnni_ktile as v;
            kernels.push(("vnni", Kind::Q4K, v::q4k as TileKernel));
            kernels.push(("vnni", Kind::Q5K, v::q5k as TileKernel));
            kernels.push(("vnni", Kind::Q6K, v::q6k as TileKernel));
        }
        for (isa, kind, kern) in kernels {
            // Rows not a multiple of 16, every count of activation rows
            // up to two passes and a remainder.
            for (n, m) in [(37, 1), (16, 3), (33, 4), (40, 9)] {
                let k = 3 * QK_K;
                let w = blocks(kind, n * 3, 5 + n as u64);
                let x = acts(m * k, 11 + m as u32);
                let want = reference(kind, &w, n, k, &x, m);
                let got = KTiles::pack(kind, &w, n, k).linear_with(&x, m, kern);
                close(&got, &want, &format!("{isa} {kind:?} n {n} m {m}"));
            }
        }
    }

    #[test]
    fn concatenated_tiles_give_both_outputs() {
        let k = QK_K;
        let (a, b) = (blocks(Kind::Q4K, 32, 1), blocks(Kind::Q4K, 7, 2));
        let (ta, tb) = (
            KTiles::pack(Kind::Q4K, &a, 32, k),
            KTiles::pack(Kind::Q4K, &b, 7, k),
        );
        let both = KTiles::concat(&[&ta, &tb]).expect("whole tiles first");
        assert_eq!(both.n(), 39);
        let x = acts(2 * k, 4);
        let (ya, yb, y) = (ta.linear(&x, 2), tb.linear(&x, 2), both.linear(&x, 2));
        for i in 0..2 {
            close(&y[i * 39..i * 39 + 32], &ya[i * 32..(i + 1) * 32], "first");
            close(
                &y[i * 39 + 32..(i + 1) * 39],
                &yb[i * 7..(i + 1) * 7],
                "second",
            );
        }
        // A part whose rows end inside a tile cannot come first.
        assert!(KTiles::concat(&[&tb, &ta]).is_none());
        let q6 = KTiles::pack(Kind::Q6K, &blocks(Kind::Q6K, 16, 3), 16, k);
        assert!(KTiles::concat(&[&ta, &q6]).is_none());
    }

    /// Matrices candle quantizes to each kind, times 1 and 7 rows: the
    /// same products as candle's own k-quant kernels.
    #[test]
    fn candles_blocks_give_candles_products() {
        use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
        use candle_core::{Device, Tensor};
        let (n, k) = (48, 2 * QK_K);
        let w = Tensor::from_vec(acts(n * k, 77), (n, k), &Device::Cpu).unwrap();
        for (kind, dt) in [
            (Kind::Q4K, GgmlDType::Q4K),
            (Kind::Q5K, GgmlDType::Q5K),
            (Kind::Q6K, GgmlDType::Q6K),
        ] {
            let q = QTensor::quantize(&w, dt).unwrap();
            let tiles = KTiles::pack(kind, &q.data().unwrap(), n, k);
            let mm = QMatMul::from_qtensor(q).unwrap();
            for m in [1, 7] {
                let x = acts(m * k, 5 + m as u32);
                let what = format!("{kind:?} m {m}");
                assert_near(
                    &tiles.linear(&x, m),
                    &candles_product(&mm, &x, m, k),
                    1e-3,
                    &what,
                );
            }
        }
    }

    /// Every Q4_K and Q6_K matrix kind of the real file times a few rows:
    /// candle's k-quant products.
    #[test]
    fn real_gguf_matrices_give_candles_products() {
        for (kind, name, t) in real_matrices() {
            let (n, k) = t.shape().dims2().unwrap();
            let tiles = KTiles::pack(kind, &t.data().unwrap(), n, k);
            let q = candle_core::quantized::QMatMul::from_qtensor(t).unwrap();
            for m in [1, 6] {
                let x = acts(m * k, 31 + m as u32);
                let what = format!("{name} m {m}");
                assert_near(
                    &tiles.linear(&x, m),
                    &candles_product(&q, &x, m, k),
                    2e-3,
                    &what,
                );
            }
        }
    }

    /// The whole real 0.5B model on the project's kernels (tiles where this
    /// CPU has VNNI) against candle-transformers' quantized Qwen2 on the
    /// same file: the same next token and nearly the same logits.
    #[test]
    fn real_gguf_model_gives_candles_logits() {
        use candle_core::quantized::gguf_file;
        use candle_core::{Device, Tensor};
        use candle_transformers::models::quantized_qwen2::ModelWeights;
        let path = real_gguf();
        let ids: Vec<u32> = vec![
            151644, 872, 198, 785, 30112, 304, 86985, 17183, 1181, 5819, 8654, 553, 17073, 3266,
            13, 151645, 198, 151644, 77091, 198,
        ];
        let ours = crate::models::load_gguf(&path, &Device::Cpu).unwrap();
        // An f16 cache, as candle's model keeps (the int8 cache's rounding
        // alone moves the cosine to ~0.989 on this prompt).
        let mut cache = crate::models::qwen3::Cache::new(&ours, ours.float_cache_dtype());
        let hidden = ours
            .forward(
                std::slice::from_ref(&ids),
                &[vec![true; ids.len()]],
                &mut cache,
            )
            .unwrap();
        let ours: Vec<f32> = ours
            .logits(&crate::models::qwen3::Model::last_hidden(&hidden).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let mut theirs = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
        let x = Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu).unwrap();
        let theirs: Vec<f32> = theirs
            .forward(&x, 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let theirs = &theirs[theirs.len() - ours.len()..];
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|x| x.0)
        };
        assert_eq!(argmax(&ours), argmax(theirs), "next token");
        let dot: f64 = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (norm(&ours) * norm(theirs));
        assert!(cos > 0.995, "cosine of the logits {cos}");
    }
}
