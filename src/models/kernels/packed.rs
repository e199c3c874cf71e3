//! Projection weights packed once, when a model loads, into the layout the
//! CPU kernels read best: panels of [`NR`] output rows, stored k-major
//! (bf16 as pairs along k: `vdpbf16ps`'s operand).
//!
//! A checkpoint stores a projection row by row (n × k). A matrix × vector
//! product over that layout reads several rows side by side, several
//! streams that the hardware prefetcher follows only part of the way (84%
//! of the machine's read bandwidth over Qwen3-0.6B's projections). A panel
//! is one contiguous run that the product reads front to back (~100%), its
//! 32 outputs accumulate in registers with no horizontal sums, and prefill
//! reads the same panels: the AVX512-BF16 kernel directly, the f32 `gemm`
//! path after widening four of them at a time (as it widened rows before).
//! GGUF Q8_0 weights take the same panels in blocks of 32 inputs, laid out
//! for int8 dot products (see `q8`).

use half::{bf16, f16};
use rayon::prelude::*;

use super::dispatch::panels;
use super::q8;
#[cfg(target_arch = "x86_64")]
use super::x86::avx512::panels as avx512;
use super::{matmul, SendPtr, GEMV_MAX_ROWS};

/// Output rows per panel.
pub const NR: usize = 32;

/// Panels widened together for `gemm` (128 output columns per call).
const GROUP: usize = 4;

/// A projection's weights (n outputs × k inputs), packed.
pub struct Packed {
    n: usize,
    k: usize,
    data: Data,
}

enum Data {
    /// Panel p, input kk, row r at `(p · k + kk) · NR + r`.
    F32(Buf<f32>),
    /// As `F32`.
    F16(Buf<f16>),
    /// Panel p, input pair q, row r at `(p · kp + q) · NR + r`, inputs
    /// 2q (low half) and 2q + 1 (high half, 0 past the end).
    Bf16(Buf<u32>),
    /// GGUF Q8_0 blocks regrouped per panel (see [`q8`]): panel p, block b
    /// at `(p · k / 32 + b) · q8::BLOCK_BYTES`.
    Q8(Buf<u8>),
}

impl Packed {
    /// Packs f32 weights stored row by row (n × k).
    pub fn from_f32(w: &[f32], n: usize, k: usize) -> Packed {
        Packed {
            n,
            k,
            data: Data::F32(pack_k_major(w, n, k)),
        }
    }

    /// Packs f16 weights stored row by row (n × k).
    pub fn from_f16(w: &[f16], n: usize, k: usize) -> Packed {
        Packed {
            n,
            k,
            data: Data::F16(pack_k_major(w, n, k)),
        }
    }

    /// Packs bf16 weights stored row by row (n × k).
    pub fn from_bf16(w: &[bf16], n: usize, k: usize) -> Packed {
        assert_eq!(w.len(), n * k, "weights");
        let kp = k.div_ceil(2);
        let mut data = Buf::<u32>::zeroed(n.div_ceil(NR) * kp * NR);
        if kp > 0 {
            data.par_chunks_mut(kp * NR)
                .enumerate()
                .for_each(|(p, panel)| {
                    pack_pairs(&w[p * NR * k..(p * NR + NR).min(n) * k], k, panel)
                });
        }
        Packed {
            n,
            k,
            data: Data::Bf16(data),
        }
    }

    /// Packs GGUF Q8_0 weights: `n` rows of `k / 32` blocks of 34 bytes (an
    /// f16 scale, 32 int8 weights), as a GGUF file stores them. Panics
    /// unless `k` is a multiple of 32 and the length matches.
    pub fn from_q8_0(w: &[u8], n: usize, k: usize) -> Packed {
        assert!(k.is_multiple_of(q8::QK), "Q8_0 rows are whole blocks");
        let mut data = Buf::<u8>::zeroed(n.div_ceil(NR) * (k / q8::QK) * q8::BLOCK_BYTES);
        q8::pack(w, n, k, &mut data);
        Packed {
            n,
            k,
            data: Data::Q8(data),
        }
    }

    /// Q8 panel `p` of `d` (this matrix's Q8 data).
    /// Bytes of one panel of `NR` rows.
    fn panel_bytes(&self) -> usize {
        let k = self.k;
        match &self.data {
            Data::F32(_) => k * NR * 4,
            Data::F16(_) => k * NR * 2,
            Data::Bf16(_) => k.div_ceil(2) * NR * 4,
            Data::Q8(_) => k / q8::QK * q8::BLOCK_BYTES,
        }
    }

    fn q8_panel<'a>(&self, d: &'a [u8], p: usize) -> &'a [u8] {
        let bytes = self.k / q8::QK * q8::BLOCK_BYTES;
        &d[p * bytes..(p + 1) * bytes]
    }

    /// Outputs.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Inputs.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Row `j` of the original matrix as f32 (an embedding lookup on a
    /// head tied to the embedding table).
    pub fn row(&self, j: usize) -> Vec<f32> {
        assert!(j < self.n, "row {j} of {}", self.n);
        let (p, r, k) = (j / NR, j % NR, self.k);
        match &self.data {
            Data::F32(d) => (0..k).map(|kk| d[(p * k + kk) * NR + r]).collect(),
            Data::F16(d) => (0..k).map(|kk| d[(p * k + kk) * NR + r].to_f32()).collect(),
            Data::Q8(d) => q8::row(self.q8_panel(d, p), r, k),
            Data::Bf16(d) => {
                let kp = k.div_ceil(2);
                (0..k)
                    .map(|kk| {
                        let pair = d[(p * kp + kk / 2) * NR + r];
                        let bits = if kk % 2 == 0 {
                            pair << 16
                        } else {
                            pair & 0xffff_0000
                        };
                        f32::from_bits(bits)
                    })
                    .collect()
            }
        }
    }

    /// `x` (m × k, row-major) times the weights transposed: m × n.
    pub fn linear(&self, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "activations");
        if m == 0 || n == 0 || k == 0 {
            return vec![0f32; m * n];
        }
        #[cfg(target_arch = "x86_64")]
        if let (true, Data::F32(d)) = (m > GEMV_MAX_ROWS && super::has_avx512(), &self.data) {
            // f32 panels read in place by a register tile (`gemm` on stable
            // Rust stops at AVX2, and widening copied every panel).
            let mut out = Vec::<f32>::with_capacity(m * n);
            gemm_f32(x, m, k, d, n, SendPtr(out.as_mut_ptr()));
            // SAFETY: `gemm_f32` wrote all m × n outputs.
            unsafe { out.set_len(m * n) };
            return out;
        }
        if m > GEMV_MAX_ROWS && !self.tiles() {
            let mut out = vec![0f32; m * n];
            self.gemm_widened(x, m, &mut out);
            return out;
        }
        // The matrix × vector and tile kernels write every output once, so
        // the buffer is not zeroed first (a memset of the whole output, ~4%
        // of a bf16 embedding pass).
        let mut out = Vec::<f32>::with_capacity(m * n);
        let dst = SendPtr(out.as_mut_ptr());
        #[cfg(target_arch = "x86_64")]
        if m > GEMV_MAX_ROWS {
            match &self.data {
                Data::Bf16(d) => super::x86::bf16::gemm_packed(x, m, k, d, n, dst),
                Data::Q8(d) => {
                    let panels = q8::Panels { data: d, k };
                    super::x86::bf16::gemm_panels(x, m, k, &panels, n, dst);
                }
                _ => unreachable!("tiles() holds for bf16 and Q8 panels only"),
            }
        }
        if m <= GEMV_MAX_ROWS {
            self.gemv(x, m, dst);
        }
        // SAFETY: the kernels above wrote all m × n outputs.
        unsafe { out.set_len(m * n) };
        out
    }

    /// Whether many rows go through the AVX512-BF16 tile kernel (bf16 and
    /// Q8 panels on a CPU that has it).
    fn tiles(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            super::has_avx512bf16() && matches!(self.data, Data::Bf16(_) | Data::Q8(_))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Few rows: every panel streamed once, each row of `x` against it.
    ///
    /// `dst` must be valid for writes of m × n outputs (row stride n).
    fn gemv(&self, x: &[f32], m: usize, dst: SendPtr) {
        let (n, k) = (self.n, self.k);
        let panels = n.div_ceil(NR);
        // Tasks of whole panels, none longer than `GEMV_TASK_BYTES` (the
        // tied head's 311 MB of bf16 as 16 tasks kept one core waiting up
        // to a millisecond per token) and shrinking towards the end, so
        // the cores finish together to within a panel.
        let most = GEMV_TASK_BYTES.div_ceil(self.panel_bytes()).max(1);
        let splits = super::guided_splits(panels, rayon::current_num_threads(), most);
        // Q8 weights take the activations as int8 blocks, quantized once;
        // bf16 weights as bf16 pairs where the CPU multiplies those.
        let acts = match &self.data {
            Data::Q8(_) => Some(q8::Acts::new(x, k)),
            _ => None,
        };
        let pairs = self.bf16_pairs(x, m);
        #[cfg(target_arch = "x86_64")]
        let kp = k.div_ceil(2);
        super::for_each_guided(&splits, |task| {
            let mut tile = [0f32; NR];
            for p in task {
                let cols = NR.min(n - p * NR);
                for i in 0..m {
                    match (&pairs, &self.data) {
                        #[cfg(target_arch = "x86_64")]
                        (Some(xp), Data::Bf16(d)) => {
                            // SAFETY: AVX512-BF16 (`bf16_pairs` checked);
                            // the kernel checks the lengths.
                            unsafe {
                                avx512::panel_bf16_pairs(
                                    &xp[i * kp..(i + 1) * kp],
                                    &d[p * kp * NR..(p + 1) * kp * NR],
                                    &mut tile,
                                )
                            }
                        }
                        _ => {
                            let acts = acts.as_ref().map(|a| (a, i));
                            self.panel_dot(p, &x[i * k..(i + 1) * k], acts, &mut tile);
                        }
                    }
                    // SAFETY: columns p·NR.. of row i belong to this task,
                    // inside the m × n outputs `dst` holds.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            tile.as_ptr(),
                            dst.get().add(i * n + p * NR),
                            cols,
                        )
                    };
                }
            }
        });
    }

    /// For bf16 weights on a CPU with AVX512-BF16, the m rows of `x` as
    /// bf16 pairs (the rounding the tile kernels of many rows make too).
    fn bf16_pairs(&self, x: &[f32], m: usize) -> Option<Vec<u32>> {
        #[cfg(target_arch = "x86_64")]
        if let (Data::Bf16(_), true, true) = (&self.data, super::has_avx512bf16(), self.k > 0) {
            let (k, kp) = (self.k, self.k.div_ceil(2));
            let mut pairs = vec![0u32; m * kp];
            for (row, src) in pairs.chunks_mut(kp).zip(x.chunks(k)) {
                // SAFETY: AVX512-BF16 detected.
                unsafe { super::x86::bf16::to_pairs(src, row) };
            }
            return Some(pairs);
        }
        let _ = (x, m);
        None
    }

    /// `tile[r] = x · row (p · NR + r)` for the 32 rows of panel `p`.
    /// Q8 panels take row `i` of `acts` (`x` quantized), else quantize `x`.
    fn panel_dot(
        &self,
        p: usize,
        x: &[f32],
        acts: Option<(&q8::Acts, usize)>,
        tile: &mut [f32; NR],
    ) {
        let k = self.k;
        match &self.data {
            // SAFETY (each): the table holds kernels this CPU runs; they
            // check the lengths.
            Data::F32(d) => {
                let panel = &d[p * k * NR..(p + 1) * k * NR];
                unsafe { (panels().f32)(x, panel, tile) }
            }
            Data::F16(d) => {
                let panel = &d[p * k * NR..(p + 1) * k * NR];
                unsafe { (panels().f16)(x, panel, tile) }
            }
            Data::Bf16(d) => {
                let kp = k.div_ceil(2);
                let panel = &d[p * kp * NR..(p + 1) * kp * NR];
                unsafe { (panels().bf16)(x, panel, tile) }
            }
            Data::Q8(d) => match acts {
                Some((a, i)) => a.panel_dot(i, self.q8_panel(d, p), tile),
                None => q8::Acts::new(x, k).panel_dot(0, self.q8_panel(d, p), tile),
            },
        }
    }

    /// Many rows without the tile kernel: `gemm` on groups of panels
    /// widened to f32.
    fn gemm_widened(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        let groups = n.div_ceil(NR * GROUP);
        let dst = SendPtr(out.as_mut_ptr());
        (0..groups).into_par_iter().for_each_init(
            || vec![0f32; k * NR * GROUP],
            |buf, g| {
                let j0 = g * NR * GROUP;
                let cols = (NR * GROUP).min(n - j0);
                self.widen_group(g, buf);
                // SAFETY: this task writes only columns j0..j0+cols of `out`
                // (m × n, row stride n); `buf` is k × 128, row stride 128.
                unsafe {
                    matmul(
                        m,
                        cols,
                        k,
                        dst.get().add(j0),
                        n,
                        false,
                        x,
                        k,
                        buf,
                        NR * GROUP,
                        1,
                        gemm::Parallelism::None,
                    );
                }
            },
        );
    }

    /// Panels `g · GROUP ..` as f32, k × (NR · GROUP) row-major.
    fn widen_group(&self, g: usize, buf: &mut [f32]) {
        let k = self.k;
        let width = NR * GROUP;
        let panels = self.n.div_ceil(NR);
        for q in 0..GROUP {
            let p = g * GROUP + q;
            if p >= panels {
                for kk in 0..k {
                    buf[kk * width + q * NR..kk * width + (q + 1) * NR].fill(0.0);
                }
                continue;
            }
            match &self.data {
                Data::F32(d) => {
                    for kk in 0..k {
                        buf[kk * width + q * NR..][..NR]
                            .copy_from_slice(&d[(p * k + kk) * NR..][..NR]);
                    }
                }
                Data::F16(d) => {
                    use half::slice::HalfFloatSliceExt;
                    for kk in 0..k {
                        d[(p * k + kk) * NR..][..NR]
                            .convert_to_f32_slice(&mut buf[kk * width + q * NR..][..NR]);
                    }
                }
                Data::Q8(d) => q8::widen_f32(self.q8_panel(d, p), k, &mut buf[q * NR..], width),
                Data::Bf16(d) => {
                    let kp = k.div_ceil(2);
                    for qq in 0..kp {
                        let pairs = &d[(p * kp + qq) * NR..][..NR];
                        for (r, &pair) in pairs.iter().enumerate() {
                            buf[2 * qq * width + q * NR + r] = f32::from_bits(pair << 16);
                            if 2 * qq + 1 < k {
                                buf[(2 * qq + 1) * width + q * NR + r] =
                                    f32::from_bits(pair & 0xffff_0000);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Element types of a [`Buf`]: plain values whose all-zero bit pattern is
/// a valid zero (bytemuck's `Zeroable`, an unsafe trait, vouches for that).
pub trait Zeroable: bytemuck::Zeroable + Copy + Send + Sync + 'static {}
impl<T: bytemuck::Zeroable + Copy + Send + Sync + 'static> Zeroable for T {}

/// A zeroed buffer for packed weights. On Linux it is its own anonymous
/// mapping, advised for 2 MB pages before anything touches it: the heap
/// (which keeps large buffers since `main` raised malloc's mmap threshold)
/// would hand back memory already faulted in as 4 KB pages, and the
/// matrix × vector kernels read ~10% slower through 4 KB pages (a TLB miss
/// every 4 KB of a stream). Elsewhere, and for small buffers, a `Vec`.
pub struct Buf<T: Zeroable> {
    ptr: *mut T,
    len: usize,
    /// Bytes mapped, or 0 when the buffer is the `Vec` in `_heap`.
    mapped: usize,
    /// Owns the memory when it is not mapped (freed with the buffer).
    _heap: Vec<T>,
}

// SAFETY: `Buf` owns its memory exclusively, like a `Vec<T>` of Send + Sync
// elements.
unsafe impl<T: Zeroable> Send for Buf<T> {}
unsafe impl<T: Zeroable> Sync for Buf<T> {}

impl<T: Zeroable> Buf<T> {
    /// `len` zeros.
    pub fn zeroed(len: usize) -> Buf<T> {
        let bytes = len * std::mem::size_of::<T>();
        #[cfg(target_os = "linux")]
        if bytes >= 2 << 20 {
            // SAFETY: an anonymous private mapping of `bytes` bytes, which the
            // kernel zero-fills; zero bits are a valid `T` (`bytemuck::Zeroable`).
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p != libc::MAP_FAILED {
                    libc::madvise(p, bytes, libc::MADV_HUGEPAGE);
                    return Buf {
                        ptr: p as *mut T,
                        len,
                        mapped: bytes,
                        _heap: Vec::new(),
                    };
                }
            }
        }
        let mut vec = Vec::with_capacity(len);
        // SAFETY: capacity `len`, and zero bits are a valid `T`
        // (`bytemuck::Zeroable`).
        unsafe {
            std::ptr::write_bytes(vec.as_mut_ptr(), 0, len);
            vec.set_len(len);
        }
        Buf {
            ptr: vec.as_mut_ptr(),
            len,
            mapped: 0,
            _heap: vec,
        }
    }
}

impl<T: Zeroable> std::ops::Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points at `len` initialised elements owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Zeroable> std::ops::DerefMut for Buf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Zeroable> Drop for Buf<T> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if self.mapped > 0 {
            // SAFETY: the mapping was made by `zeroed` with this length and
            // is unmapped once.
            unsafe {
                libc::munmap(self.ptr as *mut libc::c_void, self.mapped);
            }
        }
    }
}

/// Up to `NR` row-major bf16 rows of `k` into one panel of pairs (kp × NR,
/// pair q of row r at `q · NR + r`; rows past the end stay as they are).
pub(super) fn pack_pairs(rows: &[bf16], k: usize, panel: &mut [u32]) {
    let kp = k.div_ceil(2);
    #[cfg(target_arch = "x86_64")]
    if k.is_multiple_of(32) && rows.len() == NR * k && super::has_avx512() {
        // SAFETY: AVX-512F was checked; 32 whole rows of k, k even.
        unsafe { avx512::pack_pairs(rows, k, panel) };
        return;
    }
    for (r, row) in rows.chunks_exact(k).enumerate() {
        for q in 0..kp {
            let lo = row[2 * q].to_bits() as u32;
            let hi = row.get(2 * q + 1).map_or(0, |v| v.to_bits() as u32);
            panel[q * NR + r] = lo | (hi << 16);
        }
    }
}

/// Row-major n × k into k-major panels of `NR` rows, zero-padded.
fn pack_k_major<T: Zeroable>(w: &[T], n: usize, k: usize) -> Buf<T> {
    assert_eq!(w.len(), n * k, "weights");
    let mut data = Buf::<T>::zeroed(n.div_ceil(NR) * k * NR);
    if k > 0 {
        data.par_chunks_mut(k * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                for r in 0..NR.min(n - p * NR) {
                    let row = &w[(p * NR + r) * k..(p * NR + r + 1) * k];
                    for (kk, &v) in row.iter().enumerate() {
                        panel[kk * NR + r] = v;
                    }
                }
            });
    }
    data
}

/// The f32 panel kernel in plain Rust.
pub(super) fn portable_f32(x: &[f32], panel: &[f32], tile: &mut [f32; NR]) {
    portable_k_major(x, panel, tile, |v| *v)
}

/// The f16 panel kernel in plain Rust.
pub(super) fn portable_f16(x: &[f32], panel: &[f16], tile: &mut [f32; NR]) {
    portable_k_major(x, panel, tile, |v| v.to_f32())
}

fn portable_k_major<T>(x: &[f32], panel: &[T], tile: &mut [f32; NR], f: impl Fn(&T) -> f32) {
    *tile = [0.0; NR];
    for (kk, &xv) in x.iter().enumerate() {
        for (t, w) in tile.iter_mut().zip(&panel[kk * NR..(kk + 1) * NR]) {
            *t += xv * f(w);
        }
    }
}

pub(super) fn portable_bf16(x: &[f32], panel: &[u32], tile: &mut [f32; NR]) {
    *tile = [0.0; NR];
    for (q, pairs) in panel.chunks_exact(NR).enumerate() {
        let xe = x[2 * q];
        let xo = x.get(2 * q + 1).copied().unwrap_or(0.0);
        for (t, &pair) in tile.iter_mut().zip(pairs) {
            *t += xe * f32::from_bits(pair << 16) + xo * f32::from_bits(pair & 0xffff_0000);
        }
    }
}

/// The most weight bytes one task of the matrix × vector kernel streams.
const GEMV_TASK_BYTES: usize = 1 << 20;
/// `out = x · wᵀ` (m × n, row stride n) over f32 panels (k × NR each):
/// blocks of rows that stay in L2 while every panel passes them, 6 rows
/// by two neighbouring panels (64 columns) per register tile, so each
/// broadcast input feeds four multiply-adds. `out` must be valid for
/// m × n writes; every one is written. The caller checked AVX-512F.
#[cfg(target_arch = "x86_64")]
fn gemm_f32(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, dst: SendPtr) {
    const MR: usize = avx512::F32_ROWS;
    let panels = n.div_ceil(NR);
    assert!(x.len() == m * k && w.len() >= panels * k * NR);
    // About 1 MB of activations per sweep.
    let mb = ((1 << 20) / (k * 4)).max(MR) / MR * MR;
    for b0 in (0..m).step_by(mb) {
        let b1 = (b0 + mb).min(m);
        (0..panels.div_ceil(2)).into_par_iter().for_each(|pair| {
            let p = 2 * pair;
            let j0 = p * NR;
            let cols = (2 * NR).min(n - j0);
            // A last lone panel goes in as both halves; its second half of
            // the tile is not stored.
            let second = if p + 1 < panels { p + 1 } else { p };
            let w0 = &w[p * k * NR..(p + 1) * k * NR];
            let w1 = &w[second * k * NR..(second + 1) * k * NR];
            let mut tile = [0f32; MR * 2 * NR];
            for r0 in (b0..b1).step_by(MR) {
                let rows = MR.min(b1 - r0);
                // SAFETY: AVX-512F (the caller's check); rows r0..r0+rows
                // of x and both panels are in bounds (the kernel asserts).
                unsafe { avx512::f32_tile(rows, &x[r0 * k..], k, [w0, w1], &mut tile) };
                for r in 0..rows {
                    // SAFETY: columns j0..j0+cols of `out` belong to this
                    // task alone.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            tile[r * 2 * NR..].as_ptr(),
                            dst.get().add((r0 + r) * n + j0),
                            cols,
                        )
                    };
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "x86_64")]
    use crate::models::kernels::x86::avx2::panels as avx2;

    use crate::models::kernels::tests::{naive_linear as naive, rng};

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len).map(|_| rng(&mut s)).collect()
    }

    /// Every dtype, both paths (few rows, many), ragged n and odd k; the
    /// weights are exactly representable in each dtype, so only the order
    /// of the sums differs.
    #[test]
    fn packed_products_match_the_row_major_ones() {
        for (n, k) in [(1, 1), (37, 33), (64, 64), (100, 130), (200, 7)] {
            let w: Vec<f32> = values(n * k, 3 + n as u64)
                .into_iter()
                .map(|v| bf16::from_f32(v).to_f32())
                .collect();
            let packs = [
                ("f32", Packed::from_f32(&w, n, k)),
                (
                    "f16",
                    Packed::from_f16(
                        &w.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
                        n,
                        k,
                    ),
                ),
                (
                    "bf16",
                    Packed::from_bf16(
                        &w.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(),
                        n,
                        k,
                    ),
                ),
            ];
            for m in [1, 3, 4, 5, 13] {
                let x = values(m * k, 11 + m as u64);
                let want = naive(&x, m, k, &w, n);
                // f16 rounds these bf16 values only below its range.
                for (name, p) in &packs {
                    let got = p.linear(&x, m);
                    #[cfg(target_arch = "x86_64")]
                    let bf16_rounds = super::super::has_avx512bf16();
                    #[cfg(not(target_arch = "x86_64"))]
                    let bf16_rounds = false;
                    let tol = if *name == "bf16" && bf16_rounds {
                        // AVX512-BF16 rounds activations to bf16.
                        2e-2 * (k as f32).sqrt()
                    } else {
                        1e-4 * k as f32
                    };
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() <= tol, "{name} n={n} k={k} m={m}: {g} vs {w}");
                    }
                }
            }
            for (name, p) in &packs {
                for j in [0, n / 2, n - 1] {
                    let row = p.row(j);
                    for (a, b) in row.iter().zip(&w[j * k..(j + 1) * k]) {
                        assert!((a - b).abs() <= 1e-3 * b.abs().max(1e-2), "{name} row {j}");
                    }
                }
            }
        }
    }

    /// Large matrices live in their own mapping (Linux): same products.
    /// Q8_0 weights, few rows and many (the int8 products, and the tiles
    /// over panels widened to bf16), ragged n including a lone last panel.
    #[test]
    fn q8_products_match_the_dequantized_ones() {
        use candle_core::quantized::{GgmlDType, QTensor};
        for (n, k) in [(37, 64), (100, 96), (200, 32)] {
            let w = values(n * k, 5 + n as u64);
            let t = candle_core::Tensor::from_slice(&w, (n, k), &candle_core::Device::Cpu).unwrap();
            let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
            // The reference: the weights as the blocks hold them.
            let deq: Vec<f32> = q
                .dequantize(&candle_core::Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let p = Packed::from_q8_0(&q.data().unwrap(), n, k);
            for m in [1, 4, 5, 13] {
                let x = values(m * k, 23 + m as u64);
                let want = naive(&x, m, k, &deq, n);
                let got = p.linear(&x, m);
                // Activations are rounded (int8 blocks or bf16).
                let tol = 2e-2 * (k as f32).sqrt();
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= tol, "n={n} k={k} m={m}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn large_packed_buffers_are_zeroed_and_readable() {
        let (n, k) = (1100, 1024); // 4.5 MB as f32, above the mapping size
        let w = values(n * k, 17);
        let p = Packed::from_f32(&w, n, k);
        let x = values(k, 19);
        let got = p.linear(&x, 1);
        for j in [0, 555, n - 1] {
            let want: f32 = (0..k).map(|kk| x[kk] * w[j * k + kk]).sum();
            assert!((got[j] - want).abs() <= 1e-3, "{j}");
        }
        // The padding rows of the last panel read as zeros.
        let Data::F32(d) = &p.data else {
            unreachable!()
        };
        assert!(d[d.len() - 1] == 0.0);
        assert_eq!(p.row(n - 1), w[(n - 1) * k..].to_vec());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_simd_path_agrees_with_the_portable_one() {
        let k = 75;
        let x = values(k, 5);
        let w = values(NR * k, 9);
        let f = pack_k_major(&w, NR, k);
        let h = pack_k_major(
            &w.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
            NR,
            k,
        );
        let b = match Packed::from_bf16(
            &w.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(),
            NR,
            k,
        )
        .data
        {
            Data::Bf16(d) => d,
            _ => unreachable!(),
        };
        let mut want = [[0f32; NR]; 3];
        portable_k_major(&x, &f, &mut want[0], |v| *v);
        portable_k_major(&x, &h, &mut want[1], |v| v.to_f32());
        portable_bf16(&x, &b, &mut want[2]);
        let close = |got: &[f32; NR], want: &[f32; NR], what: &str| {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= 1e-4 * k as f32, "{what}: {g} vs {w}");
            }
        };
        let mut got = [0f32; NR];
        if super::super::has_avx2_fma() {
            // SAFETY: features checked; lengths are the kernels' contract.
            unsafe {
                avx2::panel_f32(&x, &f, &mut got);
                close(&got, &want[0], "avx2 f32");
                avx2::panel_f16(&x, &h, &mut got);
                close(&got, &want[1], "avx2 f16");
                avx2::panel_bf16(&x, &b, &mut got);
                close(&got, &want[2], "avx2 bf16");
            }
        }
        if super::super::has_avx512() {
            // SAFETY: as above.
            unsafe {
                avx512::panel_f32(&x, &f, &mut got);
                close(&got, &want[0], "avx512 f32");
                avx512::panel_f16(&x, &h, &mut got);
                close(&got, &want[1], "avx512 f16");
                avx512::panel_bf16(&x, &b, &mut got);
                close(&got, &want[2], "avx512 bf16");
            }
        }
    }

    /// The transposing pack equals the scalar one.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn whole_panel_pack_matches_the_scalar_loop() {
        if !super::super::has_avx512() {
            return;
        }
        let k = 96;
        let rows: Vec<bf16> = (0..NR * k)
            .map(|i| bf16::from_bits((i * 7919 % 65521) as u16))
            .collect();
        let mut fast = vec![0u32; k / 2 * NR];
        pack_pairs(&rows, k, &mut fast);
        let mut want = vec![0u32; k / 2 * NR];
        for (r, row) in rows.chunks_exact(k).enumerate() {
            for q in 0..k / 2 {
                want[q * NR + r] =
                    row[2 * q].to_bits() as u32 | (row[2 * q + 1].to_bits() as u32) << 16;
            }
        }
        assert_eq!(fast, want);
    }
}
