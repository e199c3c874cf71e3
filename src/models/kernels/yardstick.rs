//! The read-bandwidth yardstick the developer benchmarks measure the
//! streaming kernels against.

use super::StreamHint;
#[cfg(target_arch = "x86_64")]
use super::{has_avx2_fma, prefetch, PREFETCH_AHEAD};

/// The sum of `x`, read the way the matrix × vector kernels read weights
/// (wide loads, software prefetch [`PREFETCH_AHEAD`] bytes ahead with
/// `hint`): the benchmark's yardstick for memory bandwidth, taken with
/// every hint and the best kept, so that a kernel's fraction of it is not
/// flattered by a slower reader.
pub fn stream_sum(x: &[f32], hint: StreamHint) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 detected; loads stay within `x`.
        return unsafe { stream_sum_avx2(x, hint) };
    }
    let _ = hint;
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stream_sum_avx2(x: &[f32], hint: StreamHint) -> f32 {
    use std::arch::x86_64::*;
    let p = x.as_ptr();
    let mut a = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= x.len() {
        prefetch(hint, (p.add(i) as *const i8).wrapping_add(PREFETCH_AHEAD));
        prefetch(
            hint,
            (p.add(i) as *const i8).wrapping_add(PREFETCH_AHEAD + 64),
        );
        for (l, al) in a.iter_mut().enumerate() {
            *al = _mm256_add_ps(*al, _mm256_loadu_ps(p.add(i + 8 * l)));
        }
        i += 32;
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(
        lanes.as_mut_ptr(),
        _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])),
    );
    lanes.iter().sum::<f32>() + x[i..].iter().sum::<f32>()
}
