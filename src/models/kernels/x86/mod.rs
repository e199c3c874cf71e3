//! The x86-64 kernels, one folder or file per instruction set: `avx2/`
//! and `avx512/` (decode attention's kernels and the projections' panel
//! kernels at each width), `vnni` (int8 scores), `bf16` (AVX512-BF16
//! tiles for prefill), `amx` (AMX tiles). [`kernels`] offers each element
//! type's decode table at the widest width this CPU has.

use super::dispatch::{Dot4, Kernels, Panels, Prepare, PvRows, TwoRowScores};
use super::packed::NR;
use super::{has_avx2_fma, has_avx512, has_avx512vnni, has_f16c, portable, Elem};

/// Four dot products of `x` with rows of `$t` (attention's scores in
/// decode), for one SIMD width: `$lanes` f32 lanes per register, its
/// zero / load / fused multiply-add / add intrinsics, `$sum` adding a
/// register's lanes, `$load` turning `$lanes` elements into f32.
/// Two accumulators per row, prefetching `PREFETCH_AHEAD` ahead.
macro_rules! dot4 {
    ($name:ident, $t:ty, $features:literal, $lanes:literal,
     [$zero:ident, $loadu:ident, $fmadd:ident, $add:ident], $sum:path, |$p:ident| $load:expr) => {
        /// # Safety
        /// The CPU must support the enabled features; every row must be
        /// at least as long as `x`.
        #[target_feature(enable = $features)]
        pub unsafe fn $name(x: &[f32], rows: [&[$t]; 4]) -> [f32; 4] {
            let hint = crate::models::kernels::cache_hint();
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
                    crate::models::kernels::prefetch(
                        hint,
                        (p[r].wrapping_add(i) as *const i8)
                            .wrapping_add(crate::models::kernels::PREFETCH_AHEAD),
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
                    out[r] += x[j] * crate::models::kernels::Elem::to_f32(rows[r][j]);
                }
            }
            out
        }
    };
}

/// The bf16 panel kernel at one SIMD width (`$lanes` f32 per register,
/// that width's intrinsics): per k pair, the panel's 32 pairs in
/// 32 / `$lanes` loads, a shift giving each pair's even input as f32 and a
/// mask its odd one, two accumulators per load.
macro_rules! panel_bf16 {
    ($features:literal, $lanes:literal, $vi:ty,
     [$zero:ident, $set1:ident, $set1_epi32:ident, $loadu:ident, $slli:ident, $and:ident,
      $cast:ident, $fmadd:ident, $add:ident, $store:ident]) => {
        /// # Safety
        /// The CPU must support the enabled features.
        #[target_feature(enable = $features)]
        pub unsafe fn panel_bf16(x: &[f32], panel: &[u32], tile: &mut [f32; NR]) {
            let hint = crate::models::kernels::stream_hint();
            const LOADS: usize = NR / $lanes;
            let k = x.len();
            let kp = k.div_ceil(2);
            assert!(panel.len() >= kp * NR);
            let (xp, wp) = (x.as_ptr(), panel.as_ptr());
            let hi = $set1_epi32(0xffff_0000u32 as i32);
            let mut a = [$zero(); 2 * LOADS];
            for q in 0..kp {
                let w = wp.add(q * NR);
                ahead(hint, w, NR * 4);
                let xe = $set1(*xp.add(2 * q));
                let xo = $set1(if 2 * q + 1 < k {
                    *xp.add(2 * q + 1)
                } else {
                    0.0
                });
                for l in 0..LOADS {
                    let v = $loadu(w.add($lanes * l) as *const $vi);
                    a[2 * l] = $fmadd($cast($slli(v, 16)), xe, a[2 * l]);
                    a[2 * l + 1] = $fmadd($cast($and(v, hi)), xo, a[2 * l + 1]);
                }
            }
            for l in 0..LOADS {
                $store(
                    tile.as_mut_ptr().add($lanes * l),
                    $add(a[2 * l], a[2 * l + 1]),
                );
            }
        }
    };
}
pub mod amx;
pub mod avx2;
pub mod avx512;
pub mod bf16;
pub mod vnni;
pub mod vnni_ktile;

/// The first `take` (at most 4) of four sums to `o` (the keys' scores of a
/// tile of four, the last tile maybe short): one store when whole (SSE,
/// which every x86-64 CPU has).
///
/// # Safety
/// `o` must be writable for `take` floats.
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

/// `x` with each full block of `block` elements reordered as its even
/// elements, then its odd ones (bf16's [`Elem::prepare`]); a short tail
/// stays in order.
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

/// `acc += a · row` compiled for AVX2+FMA (the compiler vectorises the
/// portable loop).
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2<W: Elem>(acc: &mut [f32], a: f32, row: &[W]) {
    portable::axpy(acc, a, row)
}

/// The SIMD width a table is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// AVX-512F, with AVX2, FMA and F16C (as every AVX-512 CPU has).
    Avx512,
    /// AVX2, FMA and F16C.
    Avx2,
}

/// This CPU's widest [`Width`], or none (the portable tables).
pub fn widest() -> Option<Width> {
    if !(has_avx2_fma() && has_f16c()) {
        None
    } else if has_avx512() {
        Some(Width::Avx512)
    } else {
        Some(Width::Avx2)
    }
}

/// `Elem::pv` at AVX2's width for accumulators that are a multiple of 64,
/// else the portable loop.
macro_rules! pv_wide {
    ($name:ident, $t:ty, $kernel:path) => {
        /// # Safety
        /// AVX2, FMA and F16C.
        unsafe fn $name(acc: &mut [f32], p: &[f32], rows: &[$t]) {
            if acc.len().is_multiple_of(64) {
                $kernel(acc, p, rows)
            } else {
                portable::pv(acc, p, rows)
            }
        }
    };
}
pv_wide!(pv_f32, f32, avx2::attention::pv_f32);
pv_wide!(pv_bf16, half::bf16, avx2::attention::pv_bf16);
pv_wide!(pv_f16, half::f16, avx2::attention::pv_f16);

/// `Elem::pv_rows` for a CPU with AVX-512: its kernel for heads of 64 and
/// 128, AVX2's for other multiples of 32, else the portable loop.
macro_rules! pv_rows_512 {
    ($name:ident, $t:ty, $($wide:ident)::+, $narrow:path) => {
        /// # Safety
        /// AVX-512F, AVX2, FMA and F16C.
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            acc: &mut [f32],
            d: usize,
            p: &[f32],
            stride: usize,
            jl: usize,
            rows: &[$t],
            scales: &[f32],
        ) {
            match d {
                128 => $($wide)::+::<8>(acc, p, stride, jl, rows, scales),
                64 => $($wide)::+::<4>(acc, p, stride, jl, rows, scales),
                _ if d.is_multiple_of(32) => $narrow(acc, d, p, stride, jl, rows, scales),
                _ => portable::pv_rows(acc, d, p, stride, jl, rows, scales),
            }
        }
    };
}

/// `Elem::pv_rows` at AVX2's width for heads that are a multiple of 32,
/// else the portable loop.
macro_rules! pv_rows_256 {
    ($name:ident, $t:ty, $narrow:path) => {
        /// # Safety
        /// AVX2, FMA and F16C.
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            acc: &mut [f32],
            d: usize,
            p: &[f32],
            stride: usize,
            jl: usize,
            rows: &[$t],
            scales: &[f32],
        ) {
            if d.is_multiple_of(32) {
                $narrow(acc, d, p, stride, jl, rows, scales)
            } else {
                portable::pv_rows(acc, d, p, stride, jl, rows, scales)
            }
        }
    };
}

/// Each element type's decode kernels at a [`Width`] the CPU has (the
/// caller checks: [`widest`] or narrower).
pub mod kernels {
    use half::{bf16, f16};

    use super::*;

    pv_rows_512!(
        pv_rows_512_f32,
        f32,
        avx512::attention::pv_rows_f32,
        avx2::attention::pv_rows_f32
    );
    pv_rows_512!(
        pv_rows_512_bf16,
        bf16,
        avx512::attention::pv_rows_bf16,
        avx2::attention::pv_rows_bf16
    );
    pv_rows_512!(
        pv_rows_512_f16,
        f16,
        avx512::attention::pv_rows_f16,
        avx2::attention::pv_rows_f16
    );
    pv_rows_512!(
        pv_rows_512_i8,
        i8,
        avx512::attention::pv_rows_i8,
        avx2::attention::pv_rows_i8
    );
    pv_rows_256!(pv_rows_256_f32, f32, avx2::attention::pv_rows_f32);
    pv_rows_256!(pv_rows_256_bf16, bf16, avx2::attention::pv_rows_bf16);
    pv_rows_256!(pv_rows_256_f16, f16, avx2::attention::pv_rows_f16);
    pv_rows_256!(pv_rows_256_i8, i8, avx2::attention::pv_rows_i8);

    /// A table at `width` from each kernel's two instances, `[AVX-512,
    /// AVX2]`.
    fn table<W: Elem>(
        width: Width,
        prepare: [Prepare; 2],
        dot4: [Dot4<W>; 2],
        pv: unsafe fn(&mut [f32], &[f32], &[W]),
        pv_rows: [PvRows<W>; 2],
        scores2: [TwoRowScores<W>; 2],
    ) -> Kernels<W> {
        let i = usize::from(width == Width::Avx2);
        Kernels {
            isa: ["avx512", "avx2"][i],
            prepare: prepare[i],
            dot4: dot4[i],
            pv,
            pv_rows: pv_rows[i],
            axpy: axpy_avx2::<W>,
            scores2: Some(scores2[i]),
        }
    }

    pub fn f32(width: Width) -> Kernels<f32> {
        use {avx2::attention as a2, avx512::attention as a5};
        let same = <[f32]>::to_vec;
        table(
            width,
            [same, same],
            [a5::dot4_f32, a2::dot4_f32],
            pv_f32,
            [pv_rows_512_f32, pv_rows_256_f32],
            [a5::scores2_f32, a2::scores2_f32],
        )
    }

    /// bf16's queries come in blocks of 16 (32 with AVX-512) split into
    /// their even elements, then their odd ones: the kernels widen a load
    /// of bf16 pairs into the even lanes (shift) and the odd lanes (mask)
    /// without shuffles.
    pub fn bf16(width: Width) -> Kernels<bf16> {
        use {avx2::attention as a2, avx512::attention as a5};
        table(
            width,
            [|x| evens_then_odds(x, 32), |x| evens_then_odds(x, 16)],
            [a5::dot4_bf16_pairs, a2::dot4_bf16_pairs],
            pv_bf16,
            [pv_rows_512_bf16, pv_rows_256_bf16],
            [a5::scores2_bf16, a2::scores2_bf16],
        )
    }

    pub fn f16(width: Width) -> Kernels<f16> {
        use {avx2::attention as a2, avx512::attention as a5};
        let same = <[f32]>::to_vec;
        table(
            width,
            [same, same],
            [a5::dot4_f16, a2::dot4_f16],
            pv_f16,
            [pv_rows_512_f16, pv_rows_256_f16],
            [a5::scores2_f16, a2::scores2_f16],
        )
    }

    /// The int8 cache: no AVX2 `dot4` or `pv` (its decode goes through
    /// the two-row kernels, which apply the blocks' scales).
    pub fn i8(width: Width) -> Kernels<i8> {
        use {avx2::attention as a2, avx512::attention as a5};
        let same = <[f32]>::to_vec;
        table(
            width,
            [same, same],
            [a5::dot4_i8, portable::dot4::<i8>],
            portable::pv::<i8>,
            [pv_rows_512_i8, pv_rows_256_i8],
            [a5::scores2_i8, a2::scores2_i8],
        )
    }
}

/// The Q8_0 panel kernel at AVX2's width, in the table's signature (it
/// needs no block sums).
///
/// # Safety
/// AVX2, FMA and F16C.
unsafe fn q8_panel_avx2(q: &[i8], d: &[f32], _c: &[i32], panel: &[u8], tile: &mut [f32; NR]) {
    avx2::q8::panel(q, d, panel, tile)
}

/// The projections' panel kernels at `width` (the caller checks the CPU
/// has it); Q8_0 with VNNI wherever the CPU has it, at either width.
pub fn panels(width: Width) -> Panels {
    let wide = width == Width::Avx512;
    let vnni = has_avx512vnni();
    Panels {
        isa: match (wide, vnni) {
            (true, true) => "avx512, vnni",
            (true, false) => "avx512",
            (false, true) => "avx2, vnni",
            (false, false) => "avx2",
        },
        f32: if wide {
            avx512::panels::panel_f32
        } else {
            avx2::panels::panel_f32
        },
        f16: if wide {
            avx512::panels::panel_f16
        } else {
            avx2::panels::panel_f16
        },
        bf16: if wide {
            avx512::panels::panel_bf16
        } else {
            avx2::panels::panel_bf16
        },
        q8: if vnni { vnni::q8_panel } else { q8_panel_avx2 },
    }
}
