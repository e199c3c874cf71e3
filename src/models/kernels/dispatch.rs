//! Each element type's decode kernels, chosen once per process into a
//! table: the widest instruction set's (`x86` on x86-64), or the portable
//! loops. Attention and the projections call through [`Elem`]'s methods,
//! which read the table; they never test a CPU feature themselves.
//!
//! A new instruction set is one module with a function per element type
//! returning its table (or `None` when the CPU lacks it), tried in
//! [`chosen_once`] before the portable one.

use half::f16;

use super::packed::{self, NR};
use super::{portable, q8, Elem};

/// Two query rows' scores against the keys of a tile, in one pass over
/// them: `(q, keys, scales, d, out)`, the queries [`Elem::prepare`]d,
/// `scales` empty or the keys' [`super::KV_BLOCK`] scales (int8 caches),
/// `d` a multiple of 32.
pub type TwoRowScores<W> = unsafe fn([&[f32]; 2], &[W], &[f32], usize, [&mut [f32]; 2]);

/// A query row arranged as the kernels read it ([`Elem::prepare`]).
pub type Prepare = fn(&[f32]) -> Vec<f32>;

/// [`Elem::dot4`]'s kernel.
pub type Dot4<W> = unsafe fn(&[f32], [&[W]; 4]) -> [f32; 4];

/// [`Elem::pv_rows`]'s kernel: `(acc, d, p, stride, jl, rows, scales)`.
pub type PvRows<W> = unsafe fn(&mut [f32], usize, &[f32], usize, usize, &[W], &[f32]);

/// One element type's decode kernels on this CPU ([`Elem::kernels`]).
///
/// The entries are `unsafe fn`s: a table is built only with kernels whose
/// instruction sets the CPU has, which is what calling them requires, and
/// each checks the lengths it is given.
pub struct Kernels<W: 'static> {
    /// Which instruction set the table's kernels use (for benchmarks and
    /// tests to report).
    #[cfg_attr(not(any(test, feature = "bench-internals")), allow(dead_code))]
    pub isa: &'static str,
    /// A query row arranged as `dot4` and `scores2` read it.
    pub prepare: Prepare,
    /// [`Elem::dot4`].
    pub dot4: Dot4<W>,
    /// [`Elem::pv`].
    pub pv: unsafe fn(&mut [f32], &[f32], &[W]),
    /// [`Elem::pv_rows`].
    pub pv_rows: PvRows<W>,
    /// [`Elem::axpy`].
    pub axpy: unsafe fn(&mut [f32], f32, &[W]),
    /// Two-row scores for heads that are a multiple of 32, where the CPU
    /// has a kernel for them.
    pub scores2: Option<TwoRowScores<W>>,
}

impl<W: Elem> Kernels<W> {
    /// The portable loops.
    pub fn portable() -> Kernels<W> {
        Kernels {
            isa: "portable",
            prepare: <[f32]>::to_vec,
            dot4: portable::dot4::<W>,
            pv: portable::pv::<W>,
            pv_rows: portable::pv_rows::<W>,
            axpy: portable::axpy::<W>,
            scores2: None,
        }
    }
}

/// The body of an [`Elem::kernels`]: the table for `$t`, chosen on the
/// first call. Each instruction set's module offers one per type.
macro_rules! chosen_once {
    ($t:ident) => {{
        static TABLE: std::sync::OnceLock<Kernels<$t>> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if let Some(width) = x86::widest() {
                return x86::kernels::$t(width);
            }
            Kernels::portable()
        })
    }};
}
pub(super) use chosen_once;

/// The projections' matrix × vector kernels on this CPU ([`panels`]):
/// `tile[r] = x · row r` for the [`NR`] rows of one packed panel, per
/// weight type. Entries are `unsafe fn`s for the same reason as
/// [`Kernels`]'.
pub struct Panels {
    /// Which instruction sets the kernels use (for the tests to check).
    #[cfg_attr(not(test), allow(dead_code))]
    pub isa: &'static str,
    /// f32 panels (k × NR).
    pub f32: unsafe fn(&[f32], &[f32], &mut [f32; NR]),
    /// f16 panels (k × NR).
    pub f16: unsafe fn(&[f32], &[f16], &mut [f32; NR]),
    /// bf16 panels, as pairs along k (k/2 × NR).
    pub bf16: unsafe fn(&[f32], &[u32], &mut [f32; NR]),
    /// GGUF Q8_0 panels times int8 activations: (values, block scales,
    /// 128 × block sums, panel, tile).
    #[allow(clippy::type_complexity)]
    pub q8: unsafe fn(&[i8], &[f32], &[i32], &[u8], &mut [f32; NR]),
}

impl Panels {
    /// The portable loops.
    pub fn portable() -> Panels {
        Panels {
            isa: "portable",
            f32: packed::portable_f32,
            f16: packed::portable_f16,
            bf16: packed::portable_bf16,
            q8: q8::portable_dot,
        }
    }
}

/// This CPU's [`Panels`], chosen on the first call.
pub fn panels() -> &'static Panels {
    static TABLE: std::sync::OnceLock<Panels> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if let Some(width) = super::x86::widest() {
            return super::x86::panels(width);
        }
        Panels::portable()
    })
}
