//! GGUF Q8_0 weights in the project's panel layout, and their products.
//!
//! A GGUF Q8_0 row is a run of 34-byte blocks: an f16 scale, then 32 int8
//! weights. [`pack`] moves them, once at load, into panels of [`NR`] rows
//! (as [`super::Packed`] does for dense weights), one block of 32 inputs
//! after another. Within a block, every 4 inputs of 16 rows are one 64-byte
//! run, the operand of `vpdpbusd` (AVX512-VNNI): 4 unsigned bytes times 4
//! signed bytes, summed into each of 16 int32 lanes. The weights are stored
//! offset by 128 (`w ^ 0x80`, unsigned) so that the activations can be the
//! signed side; the block's 32 row scales follow its quants. That is 1,088
//! bytes per 32 × 32 weights, exactly GGUF's 34 per 32.
//!
//! - Decode ([`Acts::panel_dot`]): the activations are quantized once per row to
//!   int8 blocks of 32 with their own scales ([`Acts`], as llama.cpp's
//!   Q8_0 × Q8_0 product does). Per block, 16 `vpdpbusd` give 32 rows'
//!   exact integer sums, and one multiply-add per 16 rows applies both
//!   scales: about one instruction per 20 bytes of weights, where widening
//!   int8 to f32 took one per 3. AVX2 machines use `vpmaddubsw` on |w| and
//!   x·sign(w).
//! - Prefill (`Panels`): each panel is widened to bf16 pairs when a task
//!   takes it, for the AVX512-BF16 tile kernel (the weights rounded to
//!   bf16, as the activations are there; decode's products are exact);
//!   without it, to f32 for `gemm` ([`widen_f32`]).

use half::f16;

use super::packed::NR;

/// Weights per block (and per scale).
pub const QK: usize = 32;

/// GGUF's bytes per block: an f16 scale, then 32 int8 weights.
pub const GGUF_BLOCK_BYTES: usize = 2 + QK;

/// Bytes of one block of one panel: NR rows × 32 quants, then NR f16 scales.
pub const BLOCK_BYTES: usize = NR * QK + 2 * NR;

/// Offset within a block of row `r`'s weight `j` (`j` < 32).
#[inline(always)]
fn at(r: usize, j: usize) -> usize {
    (j / 4) * 128 + (r / 16) * 64 + (r % 16) * 4 + j % 4
}

/// Packs `n` GGUF Q8_0 rows of `k` inputs (`k` a multiple of 32) into
/// `panel`-sized chunks of `dst`: `dst` holds `n.div_ceil(NR)` panels of
/// `k / 32` blocks. Rows past `n` keep scale 0.
pub fn pack(src: &[u8], n: usize, k: usize, dst: &mut [u8]) {
    use rayon::prelude::*;
    assert!(k.is_multiple_of(QK), "Q8_0 rows are whole blocks");
    let kb = k / QK;
    let row_bytes = kb * GGUF_BLOCK_BYTES;
    assert_eq!(src.len(), n * row_bytes, "Q8_0 weights");
    assert_eq!(
        dst.len(),
        n.div_ceil(NR) * kb * BLOCK_BYTES,
        "packed buffer"
    );
    if kb == 0 {
        return;
    }
    dst.par_chunks_mut(kb * BLOCK_BYTES)
        .enumerate()
        .for_each(|(p, panel)| {
            for r in 0..NR.min(n - p * NR) {
                let row = &src[(p * NR + r) * row_bytes..][..row_bytes];
                for (b, blk) in row.chunks_exact(GGUF_BLOCK_BYTES).enumerate() {
                    let out = &mut panel[b * BLOCK_BYTES..][..BLOCK_BYTES];
                    out[NR * QK + 2 * r..][..2].copy_from_slice(&blk[..2]);
                    for (j, &q) in blk[2..].iter().enumerate() {
                        out[at(r, j)] = q ^ 0x80;
                    }
                }
            }
        });
}

/// Row `r` of a panel's block: its scale and 32 weights as integers.
#[inline]
fn block_row(block: &[u8], r: usize) -> (f32, [i32; QK]) {
    let s = f16::from_le_bytes([block[NR * QK + 2 * r], block[NR * QK + 2 * r + 1]]).to_f32();
    let mut w = [0i32; QK];
    for (j, v) in w.iter_mut().enumerate() {
        *v = i32::from((block[at(r, j)] ^ 0x80) as i8);
    }
    (s, w)
}

/// Row `r` (< NR) of a packed panel as f32.
pub fn row(panel: &[u8], r: usize, k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(k);
    for block in panel.chunks_exact(BLOCK_BYTES).take(k / QK) {
        let (s, w) = block_row(block, r);
        out.extend(w.iter().map(|&v| v as f32 * s));
    }
    out
}

/// A panel widened to f32, k-major: input kk of row r at `kk · width + r`
/// of `dst` (the `gemm` path's layout, `width` ≥ NR).
pub fn widen_f32(panel: &[u8], k: usize, dst: &mut [f32], width: usize) {
    for (b, block) in panel.chunks_exact(BLOCK_BYTES).take(k / QK).enumerate() {
        for r in 0..NR {
            let (s, w) = block_row(block, r);
            for (j, &v) in w.iter().enumerate() {
                dst[(b * QK + j) * width + r] = v as f32 * s;
            }
        }
    }
}

/// Rows of activations quantized for the integer products: per block of
/// 32, int8 values, their scale (absmax / 127) and 128 × their sum (what
/// the weights' +128 offset adds to a `vpdpbusd` sum).
pub struct Acts {
    k: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    c: Vec<i32>,
}

impl Acts {
    /// Quantizes `m` rows of `k` (a multiple of 32).
    pub fn new(x: &[f32], k: usize) -> Acts {
        assert!(k.is_multiple_of(QK) && x.len().is_multiple_of(k.max(1)));
        let blocks = x.len() / QK;
        let mut q = vec![0i8; x.len()];
        let mut d = vec![0f32; blocks];
        super::quantize_rows(x, QK, &mut q, &mut d);
        let c = q
            .chunks_exact(QK)
            .map(|b| 128 * b.iter().map(|&v| i32::from(v)).sum::<i32>())
            .collect();
        Acts { k, q, d, c }
    }

    /// Row `i` against one panel: `tile[r] = x_i · row r`.
    pub fn panel_dot(&self, i: usize, panel: &[u8], tile: &mut [f32; NR]) {
        let kb = self.k / QK;
        let q = &self.q[i * self.k..(i + 1) * self.k];
        let d = &self.d[i * kb..(i + 1) * kb];
        let c = &self.c[i * kb..(i + 1) * kb];
        assert!(panel.len() >= kb * BLOCK_BYTES, "packed panel");
        // SAFETY: the table holds kernels this CPU runs; lengths checked
        // above.
        unsafe { (super::dispatch::panels().q8)(q, d, c, panel, tile) }
    }
}

/// The product in plain Rust (`c`, the activations' block sums, is for
/// the VNNI kernel's offset).
pub(super) fn portable_dot(q: &[i8], d: &[f32], _c: &[i32], panel: &[u8], tile: &mut [f32; NR]) {
    portable(q, d, panel, tile)
}

fn portable(q: &[i8], d: &[f32], panel: &[u8], tile: &mut [f32; NR]) {
    tile.fill(0.0);
    for (b, block) in panel.chunks_exact(BLOCK_BYTES).take(d.len()).enumerate() {
        let xq = &q[b * QK..(b + 1) * QK];
        for (r, t) in tile.iter_mut().enumerate() {
            let (s, w) = block_row(block, r);
            let dot: i32 = w.iter().zip(xq).map(|(&w, &x)| w * i32::from(x)).sum();
            *t += dot as f32 * (s * d[b]);
        }
    }
}

/// A packed Q8_0 matrix as the AVX512-BF16 tile kernel's panels: each
/// one widened to bf16 pairs (pair q of row r at `q · NR + r`) into the
/// task's scratch when the task takes it.
#[cfg(target_arch = "x86_64")]
pub struct Panels<'a> {
    pub data: &'a [u8],
    pub k: usize,
}

#[cfg(target_arch = "x86_64")]
impl super::x86::bf16::PanelSource for Panels<'_> {
    fn panel<'s>(&'s self, p: usize, scratch: &'s mut Vec<u32>) -> &'s [u32] {
        assert!(super::has_avx512bf16(), "bf16 panels need AVX512-BF16");
        let kb = self.k / QK;
        let panel = &self.data[p * kb * BLOCK_BYTES..(p + 1) * kb * BLOCK_BYTES];
        scratch.clear();
        scratch.resize(kb * QK / 2 * NR, 0);
        // SAFETY: the tile kernel runs only with AVX512-BF16 detected; the
        // lengths are as `q8_pairs` requires.
        unsafe { super::x86::bf16::q8_pairs(panel, scratch) };
        scratch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::models::kernels::tests::rng;

    /// GGUF Q8_0 rows of random weights, and the same weights as f32.
    pub(crate) fn gguf_rows(n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
        let mut s = seed;
        let mut bytes = Vec::new();
        let mut dense = Vec::new();
        for _ in 0..n * k / QK {
            let scale = f16::from_f32(0.001 + 0.01 * rng(&mut s).abs());
            bytes.extend(scale.to_le_bytes());
            for j in 0..QK {
                // The full range, -128 included, at the ends of some blocks.
                let q = if j == 0 && dense.len() % 64 == 0 {
                    -128i8
                } else {
                    (rng(&mut s) * 127.0).round() as i8
                };
                bytes.push(q as u8);
                dense.push(q as f32 * scale.to_f32());
            }
        }
        (bytes, dense)
    }

    #[test]
    fn packing_keeps_every_weight() {
        let (n, k) = (40, 96);
        let (src, dense) = gguf_rows(n, k, 3);
        let mut dst = vec![0u8; n.div_ceil(NR) * (k / QK) * BLOCK_BYTES];
        pack(&src, n, k, &mut dst);
        let panel_bytes = (k / QK) * BLOCK_BYTES;
        for j in 0..n {
            let got = row(&dst[(j / NR) * panel_bytes..], j % NR, k);
            assert_eq!(got, dense[j * k..(j + 1) * k].to_vec(), "row {j}");
        }
        // f32 widening as the rows; padding rows read as zeros.
        let mut wide = vec![1f32; k * NR];
        widen_f32(&dst[panel_bytes..], k, &mut wide, NR);
        for kk in 0..k {
            assert_eq!(wide[kk * NR + 3], dense[(NR + 3) * k + kk]);
            assert_eq!(wide[kk * NR + NR - 1], 0.0);
        }
    }

    /// The integer products are exact, so every path equals the sum of
    /// the dequantized activations times the dequantized weights, up to
    /// the order of f32 adds.
    #[test]
    fn every_path_computes_the_quantized_product() {
        let k = 160;
        let (src, dense) = gguf_rows(NR, k, 7);
        let mut panel = vec![0u8; (k / QK) * BLOCK_BYTES];
        pack(&src, NR, k, &mut panel);
        let mut s = 11;
        let x: Vec<f32> = (0..k).map(|_| rng(&mut s)).collect();
        let acts = Acts::new(&x, k);
        let xd: Vec<f32> = (0..k)
            .map(|i| f32::from(acts.q[i]) * acts.d[i / QK])
            .collect();
        let want: Vec<f32> = (0..NR)
            .map(|r| (0..k).map(|i| xd[i] * dense[r * k + i]).sum())
            .collect();
        let check = |got: &[f32; NR], what: &str| {
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{what}: {g} vs {w}"
                );
            }
        };
        let mut got = [0f32; NR];
        portable(&acts.q, &acts.d, &panel, &mut got);
        check(&got, "portable");
        acts.panel_dot(0, &panel, &mut got);
        check(&got, "dispatched");
        #[cfg(target_arch = "x86_64")]
        {
            use crate::models::kernels::{has_avx2_fma, has_avx512vnni, has_f16c};
            if has_avx2_fma() && has_f16c() {
                // SAFETY: features checked; lengths as the kernel requires.
                unsafe {
                    crate::models::kernels::x86::avx2::q8::panel(&acts.q, &acts.d, &panel, &mut got)
                };
                check(&got, "avx2");
            }
            if has_avx512vnni() {
                // SAFETY: as above.
                unsafe {
                    crate::models::kernels::x86::vnni::q8_panel(
                        &acts.q, &acts.d, &acts.c, &panel, &mut got,
                    )
                };
                check(&got, "avx512 vnni");
            }
        }
        // Against the exact f32 product: the activations' rounding only.
        let exact: Vec<f32> = (0..NR)
            .map(|r| (0..k).map(|i| x[i] * dense[r * k + i]).sum())
            .collect();
        let norm = exact.iter().map(|v| v * v).sum::<f32>().sqrt();
        let err = exact
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        assert!(err <= 1e-2 * norm, "{err} vs {norm}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn bf16_pairs_are_the_rounded_weights() {
        use crate::models::kernels::x86::bf16::PanelSource;
        if !crate::models::kernels::has_avx512bf16() {
            return;
        }
        let k = 64;
        let (src, dense) = gguf_rows(NR, k, 5);
        let mut data = vec![0u8; (k / QK) * BLOCK_BYTES];
        pack(&src, NR, k, &mut data);
        let mut scratch = Vec::new();
        let panels = Panels { data: &data, k };
        let pairs = panels.panel(0, &mut scratch);
        for r in 0..NR {
            for kk in 0..k {
                let pair = pairs[(kk / 2) * NR + r];
                let bits = if kk % 2 == 0 {
                    pair << 16
                } else {
                    pair & 0xffff_0000
                };
                let want = half::bf16::from_f32(dense[r * k + kk]).to_f32();
                assert_eq!(f32::from_bits(bits), want, "row {r}, input {kk}");
            }
        }
    }
}
