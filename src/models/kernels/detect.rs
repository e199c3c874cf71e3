//! What this CPU can run, found once: its SIMD features (capped by
//! `SHIRABE_SIMD`), its family, and the prefetch hints measured best for it.
//! The kernels' tables ([`super::dispatch`]) are chosen from these.

/// The SIMD features the kernels use, detected once and capped by
/// [`simd_cap`].
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Features {
    /// AVX2 and FMA.
    pub avx2_fma: bool,
    /// F16C (half-precision conversions).
    pub f16c: bool,
    /// AVX-512F.
    pub avx512: bool,
    /// AVX-512F with AVX-512BW (byte and word lanes).
    pub avx512bw: bool,
    /// AVX-512F with AVX512-BF16 (`vdpbf16ps`).
    pub avx512bf16: bool,
    /// AVX-512F/BW with AVX512-VNNI (`vpdpbusd`) and F16C.
    pub avx512vnni: bool,
}

/// This CPU's [`Features`], detected once.
#[cfg(target_arch = "x86_64")]
pub(crate) fn features() -> Features {
    use std::arch::is_x86_feature_detected as has;
    use std::sync::OnceLock;
    static FEATURES: OnceLock<Features> = OnceLock::new();
    *FEATURES.get_or_init(|| {
        let cap = simd_cap();
        let avx2_fma = cap >= 1 && has!("avx2") && has!("fma");
        let f16c = has!("f16c");
        let avx512 = cap >= 2 && has!("avx512f");
        Features {
            avx2_fma,
            f16c,
            avx512,
            avx512bw: avx512 && has!("avx512bw"),
            avx512bf16: avx512 && has!("avx512bf16"),
            avx512vnni: avx512 && f16c && has!("avx512bw") && has!("avx512vnni"),
        }
    })
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    features().avx2_fma
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    features().avx512
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512bw() -> bool {
    features().avx512bw
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_f16c() -> bool {
    features().f16c
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512bf16() -> bool {
    features().avx512bf16
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512vnni() -> bool {
    features().avx512vnni
}

/// The widest SIMD the kernels may use: `SHIRABE_SIMD=none|avx2|avx512`
/// (`avx512`: no AMX tiles; default: whatever the CPU has), for comparing
/// paths and for CPUs that slow down on AVX-512.
#[cfg(target_arch = "x86_64")]
pub(crate) fn simd_cap() -> u8 {
    match std::env::var("SHIRABE_SIMD").as_deref() {
        Ok("none") => 0,
        Ok("avx2") => 1,
        Ok("avx512") => 2,
        _ => 3,
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
    #[cfg_attr(not(any(test, feature = "bench-internals")), allow(dead_code))]
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
pub(super) enum Cpu {
    /// AMD family 0x1A (Zen 5) and later.
    AmdZen5,
    /// Earlier AMD CPUs (family 0x19: Zen 3 and Zen 4).
    AmdEarlier,
    /// Intel and anything else.
    Other,
}

impl Cpu {
    pub(super) fn detect() -> Cpu {
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
    pub(super) fn stream_hint(self) -> StreamHint {
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
    pub(super) fn cache_hint(self) -> StreamHint {
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

pub(super) fn parse_hints(v: Option<&str>) -> (Option<StreamHint>, Option<StreamHint>) {
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

/// Prefetches the lines `bytes` after `p`, [`PREFETCH_AHEAD`] ahead,
/// with `hint`: the CPU's [`stream_hint`], which the kernels read once per
/// call (weights are read once per token).
///
/// # Safety
/// None beyond the caller's: a prefetch never faults. (`unsafe` because
/// the kernels call it on raw pointers inside their own unsafe loops.)
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn ahead<T>(hint: StreamHint, p: *const T, bytes: usize) {
    for line in (0..bytes).step_by(64) {
        prefetch(hint, (p as *const i8).wrapping_add(PREFETCH_AHEAD + line));
    }
}
