//! bf16 × bf16 → f32 matrix products with AVX512-BF16 (`vdpbf16ps`).
//!
//! `out (m × n) = x (m × k) · wᵀ` with `w` (n × k) bf16, packed once at
//! load (`Packed`) in panels of 32 rows where one 64-byte load holds the
//! same k pair of 16 rows. Activations are rounded to bf16 once, as pairs
//! along k (one u32 per pair, k padded to even). Each task runs a 12 × 32
//! register tile down all rows of `x` for one panel: per k pair, 2 loads,
//! 12 broadcasts and 24 `vdpbf16ps` (768 multiply-adds). Attention's
//! bf16 tiles and decode scores use the same instructions.

use std::arch::x86_64::*;

use half::bf16;
use rayon::prelude::*;

use crate::models::kernels::SendPtr;

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

/// `out = x · wᵀ` with `w` already in panels (see [`crate::models::kernels::Packed`]):
/// panel p, pair q, row c at `(p · kp + q) · NR + c`. `out` must be
/// valid for writes of m × n outputs; every one is written.
pub fn gemm_packed(x: &[f32], m: usize, k: usize, w: &[u32], n: usize, out: SendPtr) {
    let kp = k.div_ceil(2);
    assert!(w.len() >= n.div_ceil(NR) * kp * NR, "packed weights");
    gemm_panels(x, m, k, &Bf16Panels { w, kp }, n, out);
}

/// `out = x · wᵀ` over the n / NR panels of `w`; `out` must be valid
/// for writes of m × n outputs (row stride n), and every one is written.
pub fn gemm_panels(x: &[f32], m: usize, k: usize, w: &impl PanelSource, n: usize, dst: SendPtr) {
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
                        std::ptr::copy_nonoverlapping(t.as_ptr(), dst.get().add(row * n + j0), cols)
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
        crate::models::kernels::packed::pack_pairs(keys, d, panel);
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
    hint: crate::models::kernels::StreamHint,
    row: *const bf16,
    x: &[[__m512bh; L]; 2],
) -> [__m512; 2] {
    let mut a = [_mm512_setzero_ps(); 2];
    for (l, (x0, x1)) in x[0].iter().zip(&x[1]).enumerate() {
        crate::models::kernels::prefetch(
            hint,
            (row.add(32 * l) as *const i8).wrapping_add(crate::models::kernels::PREFETCH_AHEAD),
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
    let hint = crate::models::kernels::cache_hint();
    let d = 32 * L;
    let jl = out[0].len();
    assert!(q[0].len() == d / 2 && q[1].len() == d / 2);
    assert!(out[1].len() == jl && crate::models::kernels::holds(keys.len(), jl, d));
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
            super::store_sums(o.add(j), super::avx512::attention::sum4(a[h]), take);
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
            let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(*xp.add(r * kp + p) as i32));
            a[0] = _mm512_dpbf16_ps(a[0], b, w0);
            a[1] = _mm512_dpbf16_ps(a[1], b, w1);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR), a[0]);
        _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR + 16), a[1]);
    }
}

/// Widens a GGUF Q8_0 panel (`q8`) to bf16 pairs for the tiles: per 4 inputs of 16 rows, one load, four
/// shifts to sign-extend each byte, four conversions scaled by the rows'
/// scales, rounded to bf16 and interleaved into two pair vectors.
///
/// # Safety
/// AVX512-BF16 must be available; `out` holds `blocks × 16 × NR` pairs for
/// the panel's blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub unsafe fn q8_pairs(panel: &[u8], out: &mut [u32]) {
    use crate::models::kernels::q8::{BLOCK_BYTES, QK};
    let blocks = panel.len() / BLOCK_BYTES;
    assert!(out.len() >= blocks * QK / 2 * NR);
    let flip = _mm512_set1_epi8(0x80u8 as i8);
    let op = out.as_mut_ptr();
    let widen = |v: __m512i, s: __m512| -> __m256i {
        std::mem::transmute(_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_cvtepi32_ps(v), s)))
    };
    for b in 0..blocks {
        let base = panel.as_ptr().add(b * BLOCK_BYTES);
        for half in 0..2 {
            let s = _mm512_cvtph_ps(_mm256_loadu_si256(
                base.add(NR * QK + 32 * half) as *const __m256i
            ));
            for g in 0..QK / 4 {
                let v = _mm512_xor_si512(
                    _mm512_loadu_si512(base.add(g * 128 + 64 * half) as *const __m512i),
                    flip,
                );
                let w = [
                    _mm512_srai_epi32(_mm512_slli_epi32(v, 24), 24),
                    _mm512_srai_epi32(_mm512_slli_epi32(v, 16), 24),
                    _mm512_srai_epi32(_mm512_slli_epi32(v, 8), 24),
                    _mm512_srai_epi32(v, 24),
                ];
                for pair in 0..2 {
                    let lo = _mm512_cvtepu16_epi32(widen(w[2 * pair], s));
                    let hi = _mm512_cvtepu16_epi32(widen(w[2 * pair + 1], s));
                    let q = b * QK / 2 + 2 * g + pair;
                    _mm512_storeu_si512(
                        op.add(q * NR + 16 * half) as *mut __m512i,
                        _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)),
                    );
                }
            }
        }
    }
}
