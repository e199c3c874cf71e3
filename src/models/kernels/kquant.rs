//! GGUF k-quants (Q4_K, Q6_K) read in place: matrix × few-vectors
//! products for decoding, as llama.cpp computes them.
//!
//! A k-quant row is a run of super-blocks of 256 weights:
//! - **Q4_K** (144 bytes): f16 `d` and `dmin`, twelve bytes packing eight
//!   6-bit scales and eight 6-bit mins, then 128 bytes of 4-bit quants;
//!   weight = `d·scale·q − dmin·min` per sub-block of 32.
//! - **Q5_K** (176 bytes): Q4_K's scales and mins, then 32 bytes holding
//!   each weight's fifth bit (bit j of byte l: sub-block j, weight l),
//!   then the 128 bytes of low 4 bits; weight = `d·scale·q − dmin·min`.
//! - **Q6_K** (210 bytes): 128 bytes of low 4 bits, 64 of high 2 bits,
//!   sixteen int8 scales, f16 `d`; weight = `d·scale·(q − 32)` per
//!   sub-block of 16.
//!
//! The activations are quantized once per row to Q8_K ([`Q8K`]: int8 per
//! 256 with an f32 scale, and the sums of each 16), so a super-block's
//! product is integer multiply-adds of the quants with per-sub-block
//! scales; the mins (Q4_K) and the offset 32 (Q6_K) come out of those
//! sums, without touching the weights. The weights stay where candle
//! loaded them: nothing is repacked or copied.
//!
//! The inner products are chosen once ([`Dots`]): `vpmaddubsw` at
//! AVX-512's width or AVX2's where the CPU has them, else the portable
//! loops here, which are also the reference the tests hold the SIMD ones
//! to. Q5_K has the portable loop only: it is the reference of the tiles
//! ([`super::ktile`]); where they do not run its products stay candle's.
//! On x86 with AVX2 the tiles take every k-quant, so these rows serve
//! `SHIRABE_SIMD=none` and CPUs of other architectures.

use half::f16;

use super::schedule::{for_each_guided, guided_splits};
use super::SendPtr;

/// Weights per super-block.
pub const QK_K: usize = 256;
/// Bytes of a Q4_K super-block.
pub const Q4K_BYTES: usize = 144;
/// Bytes of a Q5_K super-block.
pub const Q5K_BYTES: usize = 176;
/// Bytes of a Q6_K super-block.
pub const Q6K_BYTES: usize = 210;

/// Which k-quant a tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 4-bit quants with 6-bit scales and mins.
    Q4K,
    /// 5-bit quants with 6-bit scales and mins.
    Q5K,
    /// 6-bit quants with int8 scales.
    Q6K,
}

impl Kind {
    /// Bytes per super-block.
    pub fn block_bytes(self) -> usize {
        match self {
            Kind::Q4K => Q4K_BYTES,
            Kind::Q5K => Q5K_BYTES,
            Kind::Q6K => Q6K_BYTES,
        }
    }
}

/// One row of activations quantized to Q8_K.
pub struct Q8K {
    /// Scale of each super-block.
    pub d: Vec<f32>,
    /// The int8 quants.
    pub q: Vec<i8>,
    /// The sum of each run of 16 quants.
    pub sums: Vec<i16>,
}

impl Q8K {
    /// Quantizes `x` (a multiple of 256 long): per super-block, the
    /// largest magnitude maps to 127.
    pub fn new(x: &[f32]) -> Q8K {
        assert!(x.len().is_multiple_of(QK_K), "whole super-blocks");
        let blocks = x.len() / QK_K;
        let mut out = Q8K {
            d: Vec::with_capacity(blocks),
            q: vec![0; x.len()],
            sums: vec![0; x.len() / 16],
        };
        for (b, xs) in x.chunks_exact(QK_K).enumerate() {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (d, inv) = if amax > 0.0 {
                (amax / 127.0, 127.0 / amax)
            } else {
                (0.0, 0.0)
            };
            out.d.push(d);
            let q = &mut out.q[b * QK_K..(b + 1) * QK_K];
            for (qi, &v) in q.iter_mut().zip(xs) {
                *qi = (v * inv).round().clamp(-127.0, 127.0) as i8;
            }
            for (g, s) in out.sums[b * 16..(b + 1) * 16].iter_mut().enumerate() {
                *s = q[g * 16..(g + 1) * 16].iter().map(|&v| v as i16).sum();
            }
        }
        out
    }
}

/// The eight 6-bit scales and mins of a Q4_K super-block (its twelve
/// packed bytes): bytes 0..8 the scales, 8..16 the mins. Scales and mins
/// 0..4 are the low six bits of bytes 0..4 and 4..8; 4..8 put those
/// bytes' top two bits above the nibbles of bytes 8..12.
#[inline(always)]
pub fn q4k_scales(packed: &[u8]) -> [u8; 16] {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let word =
        |i: usize| u32::from_le_bytes([packed[i], packed[i + 1], packed[i + 2], packed[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    let scales_lo = a & LOW6;
    let mins_lo = b & LOW6;
    let scales_hi = (c & LOW4) | (((a >> 6) & LOW2) << 4);
    let mins_hi = ((c >> 4) & LOW4) | (((b >> 6) & LOW2) << 4);
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&scales_lo.to_le_bytes());
    out[4..8].copy_from_slice(&scales_hi.to_le_bytes());
    out[8..12].copy_from_slice(&mins_lo.to_le_bytes());
    out[12..].copy_from_slice(&mins_hi.to_le_bytes());
    out
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The products of consecutive weight rows with one row of activations:
/// `rows` holds `out.len()` rows of whole super-blocks, as many per row as
/// `a` has; `out[r]` gets row r's product.
pub type Dot = unsafe fn(&[u8], &Q8K, &mut [f32]);

/// The inner products of this CPU, chosen once.
pub struct Dots {
    /// Which instruction sets they use (for the tests to show).
    #[cfg_attr(not(test), allow(dead_code))]
    pub isa: &'static str,
    /// Q4_K row · Q8_K.
    pub q4k: Dot,
    /// Q6_K row · Q8_K.
    pub q6k: Dot,
}

/// [`Dots`] for this CPU (capped by `SHIRABE_SIMD`).
pub fn dots() -> &'static Dots {
    static DOTS: std::sync::OnceLock<Dots> = std::sync::OnceLock::new();
    DOTS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if super::has_avx512bw() {
            return Dots {
                isa: "avx512bw",
                q4k: super::x86::avx512::kquant::dot_q4k,
                q6k: super::x86::avx512::kquant::dot_q6k,
            };
        }
        #[cfg(target_arch = "x86_64")]
        if super::has_avx2_fma() {
            return Dots {
                isa: "avx2",
                q4k: super::x86::avx2::kquant::dot_q4k,
                q6k: super::x86::avx2::kquant::dot_q6k,
            };
        }
        portable()
    })
}

/// The portable [`Dots`].
pub fn portable() -> Dots {
    Dots {
        isa: "portable",
        q4k: dot_q4k,
        q6k: dot_q6k,
    }
}

/// Q4_K rows · Q8_K, portable.
///
/// # Safety
/// None (`unsafe` only to share [`Dot`]'s type).
pub unsafe fn dot_q4k(rows: &[u8], a: &Q8K, out: &mut [f32]) {
    let row_bytes = a.d.len() * Q4K_BYTES;
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(row_bytes)) {
        *o = row_q4k(row, a);
    }
}

/// Q5_K rows · Q8_K, portable.
///
/// # Safety
/// None (`unsafe` only to share [`Dot`]'s type).
pub unsafe fn dot_q5k(rows: &[u8], a: &Q8K, out: &mut [f32]) {
    let row_bytes = a.d.len() * Q5K_BYTES;
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(row_bytes)) {
        *o = row_q5k(row, a);
    }
}

/// Q6_K rows · Q8_K, portable.
///
/// # Safety
/// None (`unsafe` only to share [`Dot`]'s type).
pub unsafe fn dot_q6k(rows: &[u8], a: &Q8K, out: &mut [f32]) {
    let row_bytes = a.d.len() * Q6K_BYTES;
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(row_bytes)) {
        *o = row_q6k(row, a);
    }
}

fn row_q4k(row: &[u8], a: &Q8K) -> f32 {
    row_scaled_mins(row, a, Q4K_BYTES, |blk, il, l| {
        let w = blk[16 + 32 * il + l];
        (w & 0x0f, w >> 4)
    })
}

fn row_q5k(row: &[u8], a: &Q8K) -> f32 {
    row_scaled_mins(row, a, Q5K_BYTES, |blk, il, l| {
        let (w, high) = (blk[48 + 32 * il + l], blk[16 + l]);
        (
            (w & 0x0f) | (((high >> (2 * il)) & 1) << 4),
            (w >> 4) | (((high >> (2 * il + 1)) & 1) << 4),
        )
    })
}

/// A row of blocks with Q4_K's scales and mins (`bytes` each) · Q8_K;
/// `quants(block, il, l)` gives weight `l` of sub-blocks `2il` and
/// `2il + 1`.
#[inline(always)]
fn row_scaled_mins(
    row: &[u8],
    a: &Q8K,
    bytes: usize,
    quants: impl Fn(&[u8], usize, usize) -> (u8, u8),
) -> f32 {
    let mut total = 0f32;
    for (b, blk) in row.chunks_exact(bytes).enumerate() {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let both = q4k_scales(&blk[4..16]);
        let (sc, mn) = (&both[..8], &both[8..]);
        let q8 = &a.q[b * QK_K..(b + 1) * QK_K];
        let mut sumi = 0i32;
        for il in 0..4 {
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let (q0, q1) = quants(blk, il, l);
                lo += q0 as i32 * q8[64 * il + l] as i32;
                hi += q1 as i32 * q8[64 * il + 32 + l] as i32;
            }
            sumi += lo * sc[2 * il] as i32 + hi * sc[2 * il + 1] as i32;
        }
        let sums = &a.sums[b * 16..(b + 1) * 16];
        let mins: i32 = (0..8)
            .map(|j| mn[j] as i32 * (sums[2 * j] as i32 + sums[2 * j + 1] as i32))
            .sum();
        total += a.d[b] * (d * sumi as f32 - dmin * mins as f32);
    }
    total
}

/// The four 6-bit quants (0..64) that low-bit byte `l` of a Q6_K half
/// block (and its partner `l + 32`) and high-bit byte `l` hold: weights
/// `l`, `l + 32`, `l + 64` and `l + 96` of the half.
#[inline(always)]
fn q6_quarters(ql: &[u8], qh: &[u8], l: usize) -> [u8; 4] {
    [
        (ql[l] & 0x0f) | ((qh[l] & 3) << 4),
        (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4),
        (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
        (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
    ]
}

fn row_q6k(row: &[u8], a: &Q8K) -> f32 {
    let mut total = 0f32;
    for (b, blk) in row.chunks_exact(Q6K_BYTES).enumerate() {
        let (ql, qh) = (&blk[..128], &blk[128..192]);
        let sc = &blk[192..208];
        let d = f16_at(blk, 208);
        let q8 = &a.q[b * QK_K..(b + 1) * QK_K];
        let mut sumi = 0i32;
        for n in 0..2 {
            let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
            let mut part = [0i32; 8];
            for l in 0..32 {
                let q = q6_quarters(ql, qh, l);
                for (quarter, &v) in q.iter().enumerate() {
                    let at = 128 * n + 32 * quarter + l;
                    part[2 * quarter + l / 16] += v as i32 * q8[at] as i32;
                }
            }
            for (g, p) in part.iter().enumerate() {
                sumi += (sc[8 * n + g] as i8) as i32 * p;
            }
        }
        // The quants carry +32: take 32 × each group's sum back out.
        let sums = &a.sums[b * 16..(b + 1) * 16];
        let offset: i32 = (0..16).map(|g| (sc[g] as i8) as i32 * sums[g] as i32).sum();
        total += a.d[b] * d * (sumi - 32 * offset) as f32;
    }
    total
}

/// Dequantizes one row of super-blocks (the tests' reference).
#[cfg(test)]
pub fn dequantize(kind: Kind, row: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(row.len() / kind.block_bytes() * QK_K);
    for blk in row.chunks_exact(kind.block_bytes()) {
        match kind {
            Kind::Q4K => {
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                let both = q4k_scales(&blk[4..16]);
                let (sc, mn) = (&both[..8], &both[8..]);
                let qs = &blk[16..144];
                for il in 0..4 {
                    for (shift, j) in [(0, 2 * il), (4, 2 * il + 1)] {
                        for l in 0..32 {
                            let q = (qs[32 * il + l] >> shift) & 0x0f;
                            out.push(d * sc[j] as f32 * q as f32 - dmin * mn[j] as f32);
                        }
                    }
                }
            }
            Kind::Q5K => {
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                let both = q4k_scales(&blk[4..16]);
                let (sc, mn) = (&both[..8], &both[8..]);
                let (qh, qs) = (&blk[16..48], &blk[48..176]);
                for il in 0..4 {
                    for (shift, j) in [(0, 2 * il), (4, 2 * il + 1)] {
                        for l in 0..32 {
                            let q = ((qs[32 * il + l] >> shift) & 0x0f) | (((qh[l] >> j) & 1) << 4);
                            out.push(d * sc[j] as f32 * q as f32 - dmin * mn[j] as f32);
                        }
                    }
                }
            }
            Kind::Q6K => {
                let d = f16_at(blk, 208);
                let mut v = [0f32; QK_K];
                for n in 0..2 {
                    let (ql, qh) = (&blk[64 * n..], &blk[128 + 32 * n..]);
                    let sc = &blk[192 + 8 * n..];
                    for l in 0..32 {
                        let q = q6_quarters(ql, qh, l);
                        for (quarter, &qv) in q.iter().enumerate() {
                            let s = sc[2 * quarter + l / 16] as i8;
                            v[128 * n + 32 * quarter + l] = d * s as f32 * (qv as f32 - 32.0);
                        }
                    }
                }
                out.extend_from_slice(&v);
            }
        }
    }
    out
}

/// Rows of weights per task claim (a few hundred KB of Q4_K).
const ROWS_PER_TASK: usize = 64;

/// `x` (m × k) times the `n` rows of k-quant weights `w` transposed:
/// m × n. Each row of `x` is quantized to Q8_K once; the weight rows are
/// split between the threads, each streamed once for all m rows.
pub fn matmul(kind: Kind, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    assert!(
        k.is_multiple_of(QK_K),
        "k-quant rows are whole super-blocks"
    );
    let row_bytes = k / QK_K * kind.block_bytes();
    assert_eq!(w.len(), n * row_bytes, "k-quant weights");
    assert_eq!(x.len(), m * k, "activations");
    let acts: Vec<Q8K> = x.chunks_exact(k.max(1)).map(Q8K::new).collect();
    let dots = dots();
    let dot = match kind {
        Kind::Q4K => dots.q4k,
        Kind::Q5K => dot_q5k as Dot,
        Kind::Q6K => dots.q6k,
    };
    let mut out = Vec::<f32>::with_capacity(m * n);
    let dst = SendPtr(out.as_mut_ptr());
    let splits = guided_splits(
        n.div_ceil(ROWS_PER_TASK),
        rayon::current_num_threads(),
        usize::MAX,
    );
    for_each_guided(&splits, |task| {
        let rows = task.start * ROWS_PER_TASK..(task.end * ROWS_PER_TASK).min(n);
        let wr = &w[rows.start * row_bytes..rows.end * row_bytes];
        for (i, a) in acts.iter().enumerate() {
            // SAFETY: outputs (i, rows) belong to this task alone and lie
            // inside the m × n `out` holds (written before being read).
            let o = unsafe {
                std::slice::from_raw_parts_mut(dst.get().add(i * n + rows.start), rows.len())
            };
            // SAFETY: the dot's instruction sets were checked when chosen.
            unsafe { dot(wr, a, o) };
        }
    });
    // SAFETY: every (i, r) was written above.
    unsafe { out.set_len(m * n) };
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Random super-blocks with sane f16 scales.
    pub(crate) fn blocks(kind: Kind, count: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut byte = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u8
        };
        let mut out = Vec::new();
        for _ in 0..count {
            let mut b: Vec<u8> = (0..kind.block_bytes()).map(|_| byte()).collect();
            let put = |b: &mut [u8], at: usize, v: f32| {
                b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes())
            };
            match kind {
                Kind::Q4K | Kind::Q5K => {
                    put(&mut b, 0, 0.01 + byte() as f32 * 1e-4);
                    put(&mut b, 2, 0.005 + byte() as f32 * 1e-4);
                }
                Kind::Q6K => put(&mut b, 208, 0.002 + byte() as f32 * 1e-5),
            }
            out.extend(b);
        }
        out
    }

    /// `k` activations in [−1, 1], a hash of their index.
    pub(crate) fn acts(k: usize, seed: u32) -> Vec<f32> {
        (0..k)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn scales_unpack_as_ggml_spells_them() {
        for seed in 0..50u32 {
            let packed: Vec<u8> = (0..12u32)
                .map(|i| (i.wrapping_mul(2654435761) ^ seed.wrapping_mul(40503)) as u8)
                .collect();
            let both = q4k_scales(&packed);
            for j in 0..8 {
                let (sc, mn) = if j < 4 {
                    (packed[j] & 63, packed[j + 4] & 63)
                } else {
                    (
                        (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4),
                        (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
                    )
                };
                assert_eq!((both[j], both[8 + j]), (sc, mn), "seed {seed} j {j}");
            }
        }
    }

    #[test]
    fn the_layout_is_candles() {
        use candle_core::quantized::{GgmlDType, QTensor};
        use candle_core::{Device, Tensor};
        let t = Tensor::from_vec(acts(3 * QK_K, 1), (3, QK_K), &Device::Cpu).unwrap();
        for (kind, dt) in [
            (Kind::Q4K, GgmlDType::Q4K),
            (Kind::Q5K, GgmlDType::Q5K),
            (Kind::Q6K, GgmlDType::Q6K),
        ] {
            let q = QTensor::quantize(&t, dt).unwrap();
            let want: Vec<f32> = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got = dequantize(kind, &q.data().unwrap());
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-6, "{kind:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn dots_match_the_dequantized_product() {
        for kind in [Kind::Q4K, Kind::Q5K, Kind::Q6K] {
            let k = 4 * QK_K;
            let row = blocks(kind, 4, 7);
            let x = acts(k, 3);
            let w = dequantize(kind, &row);
            let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
            let norm: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            let a = Q8K::new(&x);
            let got = match kind {
                Kind::Q4K => row_q4k(&row, &a),
                Kind::Q5K => row_q5k(&row, &a),
                Kind::Q6K => row_q6k(&row, &a),
            };
            // Only the activations' int8 rounding differs.
            assert!(
                (got - exact).abs() <= 0.01 * norm,
                "{kind:?}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn the_chosen_dots_equal_the_portable_ones() {
        let chosen = dots();
        for kind in [Kind::Q4K, Kind::Q6K] {
            let row = blocks(kind, 8, 11);
            let a = Q8K::new(&acts(4 * QK_K, 5));
            let (p, c) = match kind {
                Kind::Q4K => (portable().q4k, chosen.q4k),
                Kind::Q5K => unreachable!("Q5_K has the portable dot only"),
                Kind::Q6K => (portable().q6k, chosen.q6k),
            };
            let (mut po, mut co) = ([0f32; 2], [0f32; 2]);
            // SAFETY: `chosen` fits this CPU.
            unsafe { (p(&row, &a, &mut po), c(&row, &a, &mut co)) };
            let (p, c) = (po[0] + 2.0 * po[1], co[0] + 2.0 * co[1]);
            assert!(
                (p - c).abs() <= 1e-4 * p.abs().max(1.0),
                "{kind:?} {}: {c} vs {p}",
                chosen.isa
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_width_equals_the_portable_dots() {
        let mut tables = vec![];
        if crate::models::kernels::has_avx2_fma() {
            use crate::models::kernels::x86::avx2::kquant as k;
            tables.push(("avx2", k::dot_q4k as Dot, k::dot_q6k as Dot));
        }
        if crate::models::kernels::has_avx512bw() {
            use crate::models::kernels::x86::avx512::kquant as k;
            tables.push(("avx512bw", k::dot_q4k as Dot, k::dot_q6k as Dot));
        }
        for (isa, q4k, q6k) in tables {
            for (kind, f, p) in [
                (Kind::Q4K, q4k, dot_q4k as Dot),
                (Kind::Q6K, q6k, dot_q6k as Dot),
            ] {
                let rows = blocks(kind, 15, 17);
                let a = Q8K::new(&acts(5 * QK_K, 23));
                let (mut got, mut want) = ([0f32; 3], [0f32; 3]);
                // SAFETY: checked above.
                unsafe { (f(&rows, &a, &mut got), p(&rows, &a, &mut want)) };
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{isa} {kind:?}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// The real 0.5B GGUF (fetched by `.ci/run`).
    pub(crate) fn real_gguf() -> std::path::PathBuf {
        let dir = std::env::var_os("SHIRABE_REAL_MODELS")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| std::path::PathBuf::from(h).join(".cache/shirabe/real-models"))
            })
            .unwrap_or_default();
        let path = dir.join("qwen2.5-coder-0.5b-instruct-q4.gguf");
        assert!(
            path.exists(),
            "{} is missing: run ../shared/models/fetch-real-models.sh ~/.cache/shirabe/real-models qwen0.5b (.ci/run does)",
            path.display()
        );
        path
    }

    /// candle's product of `x` (m × k) and the quantized matrix `q`.
    pub(crate) fn candles_product(
        q: &candle_core::quantized::QMatMul,
        x: &[f32],
        m: usize,
        k: usize,
    ) -> Vec<f32> {
        use candle_core::{Device, Module, Tensor};
        q.forward(&Tensor::from_vec(x.to_vec(), (m, k), &Device::Cpu).unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// The real 0.5B GGUF's first Q4_K and Q6_K matrices (by name).
    pub(crate) fn real_matrices() -> Vec<(Kind, String, candle_core::quantized::QTensor)> {
        use candle_core::quantized::{gguf_file, GgmlDType};
        let path = real_gguf();
        let mut file = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        [(Kind::Q4K, GgmlDType::Q4K), (Kind::Q6K, GgmlDType::Q6K)]
            .into_iter()
            .map(|(kind, dtype)| {
                let name = content
                    .tensor_infos
                    .iter()
                    .filter(|(_, t)| t.ggml_dtype == dtype && t.shape.dims().len() == 2)
                    .map(|(n, _)| n.clone())
                    .min()
                    .unwrap_or_else(|| panic!("no {dtype:?} matrix in {}", path.display()));
                let t = content
                    .tensor(&mut file, &name, &candle_core::Device::Cpu)
                    .unwrap();
                (kind, name, t)
            })
            .collect()
    }

    /// Asserts `got` is within `tol` of `want`'s largest magnitude.
    pub(crate) fn assert_near(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= tol * scale,
                "{what}: {g} vs {w} (max {scale})"
            );
        }
    }

    /// The real 0.5B GGUF's first Q4_K and Q6_K matrices times one
    /// vector: the same outputs as candle's k-quant products.
    #[test]
    fn real_gguf_matrices_give_candles_products() {
        for (kind, name, t) in real_matrices() {
            let (n, k) = t.shape().dims2().unwrap();
            let x = acts(k, 31);
            let got = matmul(kind, &t.data().unwrap(), n, k, &x, 1);
            let q = candle_core::quantized::QMatMul::from_qtensor(t).unwrap();
            assert_near(&got, &candles_product(&q, &x, 1, k), 2e-3, &name);
        }
    }

    #[test]
    fn matmul_matches_row_by_row_dots() {
        let (n, k, m) = (130, 2 * QK_K, 3);
        let w = blocks(Kind::Q4K, n * 2, 13);
        let x = acts(m * k, 9);
        let out = matmul(Kind::Q4K, &w, n, k, &x, m);
        for i in 0..m {
            let a = Q8K::new(&x[i * k..(i + 1) * k]);
            for r in [0, 63, 64, 129] {
                let want = row_q4k(&w[r * 2 * Q4K_BYTES..(r + 1) * 2 * Q4K_BYTES], &a);
                assert!((out[i * n + r] - want).abs() <= 1e-4 * want.abs().max(1.0));
            }
        }
    }
}
