//! bf16 matrix products on Intel AMX tiles (`tdpbf16ps`), for prefill and
//! embedding on CPUs that have them (Sapphire Rapids and later Xeons).
//!
//! A tile multiply does 16 × 16 × 32 multiply-adds at once, 8× the work of
//! a `vdpbf16ps` per instruction: on a Xeon with AMX, PyTorch (oneDNN)
//! embedded 4–5× faster than the AVX512-BF16 tile kernel. The packed
//! panels need no repacking for it: one k pair of 16 panel rows is 64
//! bytes, exactly a row of AMX's B operand ("VNNI" layout), so a B tile is
//! 16 k pairs of half a panel read with the panel's stride. Activations
//! are the same bf16 pair rows the AVX-512 kernel reads (A tiles of 16
//! rows × 32 k).
//!
//! Activations go in tile order ([`tile_order`]): each A tile's 16 rows ×
//! 64 bytes are contiguous, so the tiles read two sequential streams the
//! prefetchers follow instead of 32 rows 2–6 KB apart (the tile registers
//! are not renamed: a load waits for the multiplies reading its register,
//! and one that misses L1 stalls them all).
//!
//! Each call works one block of 32 rows × one 32-column panel in four
//! accumulator tiles (tmm0–3), with two A tiles (tmm4, tmm5) and two B
//! tiles (tmm6, tmm7) loaded per 32 k. Rust has no stable AMX intrinsics,
//! so the instructions are inline assembly; the compiler never allocates
//! tile registers itself, so they are ours between the blocks. Linux hands
//! out AMX state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`),
//! which [`available`] makes once for the process.

/// Whether AMX-BF16 is usable here: the CPU has it (CPUID), the kernel
/// granted this process the tile state, and `SHIRABE_SIMD` does not cap
/// the kernels below it.
pub fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if crate::models::kernels::simd_cap() < 3 || !crate::models::kernels::has_avx512bf16() {
            return false;
        }
        let leaf = std::arch::x86_64::__cpuid_count(7, 0);
        // EDX bit 22: AMX-BF16, bit 24: AMX-TILE.
        if leaf.edx & (1 << 22) == 0 || leaf.edx & (1 << 24) == 0 {
            return false;
        }
        request_tiles()
    })
}

/// Asks Linux for the AMX tile data state (XFEATURE 18) for this process.
#[cfg(target_os = "linux")]
fn request_tiles() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes which extended
    // states the process may use; it reads and writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn request_tiles() -> bool {
    false
}

/// Whether the tiles take products with `kp` k pairs here: AMX is
/// [`available`] and `kp` is one or more whole [`STEP`]s.
pub fn fits(kp: usize) -> bool {
    kp > 0 && kp.is_multiple_of(STEP) && available()
}

/// Rows per block: two A tiles of 16.
pub const ROWS: usize = 32;
/// k pairs per step: one tile row of 64 bytes.
pub const STEP: usize = 16;

/// Where pair `p` of row `r` of activations with `kp` pairs per row goes
/// in tile order: groups of 16 rows, each group `kp / 16` tiles of 16
/// rows × 16 pairs (1 KB) one after another. A block of 32 rows starting
/// at row `r0` (a multiple of 16) starts at `r0 · kp`, as in row order.
#[inline]
pub fn tile_index(r: usize, p: usize, kp: usize) -> usize {
    (r / 16) * kp * 16 + (p / STEP) * 256 + (r % 16) * STEP + p % STEP
}

/// `rows` rows of `kp` pairs (row-major) in tile order ([`tile_index`]),
/// with zero rows up to whole blocks of [`ROWS`].
pub fn tile_order(x: &[u32], rows: usize, kp: usize) -> Vec<u32> {
    let mut out = Vec::new();
    tile_order_into(x, rows, kp, &mut out);
    out
}

/// [`tile_order`] into `out`, whose allocation (and, at the same size,
/// contents) is reused: only the zero rows past `rows` are written besides
/// the rows themselves.
pub fn tile_order_into(x: &[u32], rows: usize, kp: usize, out: &mut Vec<u32>) {
    assert!(kp.is_multiple_of(STEP) && x.len() >= rows * kp);
    let len = rows.next_multiple_of(ROWS) * kp;
    if out.len() != len {
        out.clear();
        out.resize(len, 0);
    } else {
        for r in rows..rows.next_multiple_of(ROWS) {
            for s in (0..kp).step_by(STEP) {
                let at = tile_index(r, s, kp);
                out[at..at + STEP].fill(0);
            }
        }
    }
    for r in 0..rows {
        for s in (0..kp).step_by(STEP) {
            let at = tile_index(r, s, kp);
            out[at..at + STEP].copy_from_slice(&x[r * kp + s..r * kp + s + STEP]);
        }
    }
}

/// Palette 1, all eight tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            // Bytes per row (u16 at 16 + 2t), rows (u8 at 48 + t).
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            c[48 + t] = 16;
        }
        TileConfig(c)
    }
}

/// Tile state configured for [`Tiles::block`] on this thread, released
/// on drop. Not `Send`: the configuration belongs to the thread. Hold one
/// only where no other work can run on the thread meanwhile (no rayon
/// calls while it lives), or that work's own `Tiles` would release it.
pub struct Tiles(std::marker::PhantomData<*const ()>);

impl Tiles {
    /// Configures this thread's tiles. [`available`] must have returned
    /// true.
    pub fn new() -> Tiles {
        assert!(available(), "AMX tiles are not available");
        let cfg = TileConfig::new();
        // SAFETY: AMX is present and granted (`available`); the config is
        // a valid palette-1 configuration of 64 bytes.
        unsafe { std::arch::asm!("ldtilecfg [{0}]", in(reg) cfg.0.as_ptr(), options(nostack)) };
        Tiles(std::marker::PhantomData)
    }

    /// `c` (32 × 32 f32, row stride 32) = rows `a` (32 rows of `kp` bf16
    /// pairs, row-major) · `panel` (`kp` × 32 pairs, see
    /// [`crate::models::kernels::Packed`]). `kp` must be a multiple of [`STEP`].
    #[cfg(test)]
    pub fn block(&mut self, a: &[u32], kp: usize, panel: &[u32], c: &mut [f32; ROWS * 32]) {
        self.block_part(a, kp, 0..kp, panel, c, false);
    }

    /// Part of a [`Tiles::block`]: pairs `span` of the product, added to
    /// `c` when `add` (else `c` is overwritten). `span` must start and end
    /// on multiples of [`STEP`].
    #[cfg(test)]
    pub fn block_part(
        &mut self,
        a: &[u32],
        kp: usize,
        span: std::ops::Range<usize>,
        panel: &[u32],
        c: &mut [f32; ROWS * 32],
        add: bool,
    ) {
        assert!(panel.len() >= kp * 32);
        let a = tile_order(a, ROWS, kp);
        let p = c.as_mut_ptr();
        // SAFETY: `a` and `panel` hold the rows and pairs the call reads
        // (asserted); `c` is 32 rows of 32 at stride 32.
        unsafe {
            self.block_at(
                a.as_ptr(),
                kp,
                span,
                panel.as_ptr(),
                add.then_some((p, 32)),
                (p, 32),
            )
        }
    }

    /// The product of rows `a` (32 rows of `kp` pairs in tile order, see
    /// [`tile_index`]) and `panel` over
    /// pairs `span`: plus the 32 × 32 block at `c_in` when given (else
    /// from zero), stored at `c_out`. Each C block comes with its row
    /// stride in floats; they may be the same block.
    ///
    /// # Safety
    /// `a` must be readable for 32 rows of `kp` pairs, `panel` for `kp` ×
    /// 32 pairs, `c_in` for and `c_out` writable for 32 rows of 32 floats
    /// at their strides.
    pub unsafe fn block_at(
        &mut self,
        a: *const u32,
        kp: usize,
        span: std::ops::Range<usize>,
        panel: *const u32,
        c_in: Option<(*mut f32, usize)>,
        c_out: (*mut f32, usize),
    ) {
        assert!(span.start.is_multiple_of(STEP) && span.end.is_multiple_of(STEP));
        assert!(span.start < span.end && span.end <= kp);
        // The second A tile's group of 16 rows, in bytes.
        let group = kp * 64;
        let (a0, b0) = (a as *const u8, panel as *const u8);
        // SAFETY: tiles configured by `new` on this thread (`Tiles` is not
        // Send); every tile load reads 1 KB inside `a` (rows r..r+16 at
        // pairs q..q+16, q + 16 ≤ kp, in tile order), `panel` (pairs q..q+16,
        // half h) or `c_in`, and the stores write 16 rows of 64 bytes
        // inside `c_out` (the caller's contract).
        unsafe {
            if let Some(c) = c_in {
                let ([o0, o1, o2, o3], s) = c_tiles(c);
                std::arch::asm!(
                    "tileloadd tmm0, [{o0} + {s}*1]",
                    "tileloadd tmm1, [{o1} + {s}*1]",
                    "tileloadd tmm2, [{o2} + {s}*1]",
                    "tileloadd tmm3, [{o3} + {s}*1]",
                    o0 = in(reg) o0,
                    o1 = in(reg) o1,
                    o2 = in(reg) o2,
                    o3 = in(reg) o3,
                    s = in(reg) s,
                    options(nostack, readonly)
                );
            } else {
                std::arch::asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
            }
            for q in span.step_by(STEP) {
                let a_lo = a0.add(q * 64);
                let a_hi = a_lo.add(group);
                let b = b0.add(q * 128);
                std::arch::asm!(
                    // Each multiply as soon as its operands are in: the
                    // tile registers are not renamed, so a load waits
                    // for the multiplies still reading its register.
                    "tileloadd tmm4, [{alo} + {sa}*1]",
                    "tileloadd tmm6, [{b} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b2} + {sb}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{ahi} + {sa}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    alo = in(reg) a_lo,
                    ahi = in(reg) a_hi,
                    sa = in(reg) 64usize,
                    b = in(reg) b,
                    b2 = in(reg) b.add(64),
                    sb = in(reg) 128usize,
                    options(nostack, readonly)
                );
            }
            let ([o0, o1, o2, o3], s) = c_tiles(c_out);
            std::arch::asm!(
                "tilestored [{o0} + {s}*1], tmm0",
                "tilestored [{o1} + {s}*1], tmm1",
                "tilestored [{o2} + {s}*1], tmm2",
                "tilestored [{o3} + {s}*1], tmm3",
                o0 = in(reg) o0,
                o1 = in(reg) o1,
                o2 = in(reg) o2,
                o3 = in(reg) o3,
                s = in(reg) s,
                options(nostack)
            );
        }
    }
}

/// What the tiles can do on one core with everything in L1, for `bench
/// linear`: a 32 × 32 block over 128 pairs (GFLOP/s), a multiply alone
/// and a 1 KB tile load alone (ns each). On the Xeon this was written on
/// a multiply took 5.7 ns but a load 15 ns, so a block, with a load per
/// multiply, ran at a third of the multiplies' rate: the products are
/// bound by the tile loads, not by memory.
#[cfg(feature = "bench-internals")]
pub struct Ceiling {
    /// One 32 × 32 block over 128 pairs, again and again.
    pub block_gflops: f64,
    /// A `tdpbf16ps` (16 × 16 × 32) alone.
    pub multiply_ns: f64,
    /// A `tileloadd` of 1 KB from L1 alone.
    pub load_ns: f64,
}

/// Measures a [`Ceiling`] on this thread (None without AMX). Hold no
/// other [`Tiles`] on the thread meanwhile.
#[cfg(feature = "bench-internals")]
pub fn ceiling() -> Option<Ceiling> {
    if !available() {
        return None;
    }
    let kp = 128;
    let a = vec![0x3f80_3f80u32; ROWS * kp];
    let b = vec![0x3f80_3f80u32; kp * 32];
    let mut c = vec![0f32; ROWS * 32];
    let mut t = Tiles::new();
    let n = 20_000;
    let timed = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        for _ in 0..n {
            f();
        }
        start.elapsed().as_secs_f64()
    };
    let block = timed(&mut || {
        // SAFETY: `a` holds 32 rows of kp pairs, `b` kp × 32 pairs, `c` a
        // 32 × 32 block at stride 32.
        unsafe {
            t.block_at(
                a.as_ptr(),
                kp,
                0..kp,
                b.as_ptr(),
                None,
                (c.as_mut_ptr(), 32),
            )
        }
    });
    let multiplies = timed(&mut || {
        // SAFETY: the tiles are configured (`t`); multiplies touch only
        // tile registers.
        unsafe {
            std::arch::asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem)
            )
        }
    });
    let loads = timed(&mut || {
        // SAFETY: each load reads 16 rows of 64 bytes at stride 64 inside
        // `a` (16 KB) or `b` (16 KB).
        unsafe {
            std::arch::asm!(
                "tileloadd tmm4, [{a} + {s}*1]",
                "tileloadd tmm5, [{a2} + {s}*1]",
                "tileloadd tmm6, [{b} + {s}*1]",
                "tileloadd tmm7, [{b2} + {s}*1]",
                a = in(reg) a.as_ptr(),
                a2 = in(reg) a.as_ptr().add(1024),
                b = in(reg) b.as_ptr(),
                b2 = in(reg) b.as_ptr().add(1024),
                s = in(reg) 64usize,
                options(nostack, readonly)
            )
        }
    });
    drop(t);
    let flops = 2.0 * (ROWS * 32 * 2 * kp) as f64 * n as f64;
    Some(Ceiling {
        block_gflops: flops / block / 1e9,
        multiply_ns: multiplies * 1e9 / (4 * n) as f64,
        load_ns: loads * 1e9 / (4 * n) as f64,
    })
}

/// The four accumulator tiles of a 32 × 32 C block (`c`, row stride in
/// floats): where each starts (columns 0 and 16 of rows 0 and 16), and the
/// row stride in bytes.
fn c_tiles((c, ld): (*mut f32, usize)) -> ([*mut u8; 4], usize) {
    let (o, s) = (c as *mut u8, ld * 4);
    let at = |bytes: usize| o.wrapping_add(bytes);
    ([o, at(64), at(16 * s), at(16 * s + 64)], s)
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: releases the tile state `new` configured.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reused buffer of the same length, other rows and pairs: the
    /// same as a fresh one.
    #[test]
    fn tile_order_into_reuses_buffers_cleanly() {
        let x: Vec<u32> = (1..=40 * 32).collect();
        let mut out = Vec::new();
        tile_order_into(&x, 40, 16, &mut out);
        tile_order_into(&x, 10, 32, &mut out);
        assert_eq!(out.len(), 32 * 32);
        assert_eq!(out, tile_order(&x, 10, 32));
        tile_order_into(&x, 40, 16, &mut out);
        assert_eq!(out, tile_order(&x, 40, 16));
    }

    /// A block equals the f32 products of the same bf16 values.
    #[test]
    fn tile_block_matches_the_products() {
        if !available() {
            return;
        }
        let mut seed = 7u64;
        let mut next = || crate::models::kernels::tests::rng(&mut seed);
        let kp = 48;
        let bf = |x: f32| half::bf16::from_f32(x);
        let pair = |e: f32, o: f32| u32::from(bf(e).to_bits()) | (u32::from(bf(o).to_bits()) << 16);
        let a: Vec<(f32, f32)> = (0..ROWS * kp).map(|_| (next(), next())).collect();
        let w: Vec<(f32, f32)> = (0..kp * 32).map(|_| (next(), next())).collect();
        let ap: Vec<u32> = a.iter().map(|&(e, o)| pair(e, o)).collect();
        let wp: Vec<u32> = w.iter().map(|&(e, o)| pair(e, o)).collect();
        let mut c = [0f32; ROWS * 32];
        let mut t = Tiles::new();
        t.block(&ap, kp, &wp, &mut c);
        // The same product in two parts.
        let mut parts = [0f32; ROWS * 32];
        t.block_part(&ap, kp, 0..16, &wp, &mut parts, false);
        t.block_part(&ap, kp, 16..kp, &wp, &mut parts, true);
        drop(t);
        for (x, y) in c.iter().zip(&parts) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        let r = |x: f32| bf(x).to_f32();
        for i in 0..ROWS {
            for j in 0..32 {
                let want: f32 = (0..kp)
                    .map(|q| {
                        let (ae, ao) = a[i * kp + q];
                        let (we, wo) = w[q * 32 + j];
                        r(ae) * r(we) + r(ao) * r(wo)
                    })
                    .sum();
                let got = c[i * 32 + j];
                assert!(
                    (got - want).abs() < 1e-3,
                    "row {i} col {j}: {got} vs {want}"
                );
            }
        }
    }
}
