//! GGUF Q4_0 and Q5_0 blocks re-encoded as Q8_0, exactly.
//!
//! Both formats hold 32 weights per block as small integers times one f16
//! scale: Q4_0 stores `q` in 0..16 and means `d · (q − 8)`, Q5_0 stores a
//! fifth bit apart and means `d · (q − 16)`. Every such value is an int8
//! times the same scale, so a Q8_0 block with the same `d` holds the same
//! weights bit for bit. Re-encoding once at load lets these files use the
//! Q8_0 kernels ([`super::q8`]) instead of a generic quantized product; the
//! price is memory (34 bytes per block instead of 18 or 22). Q4_1 and Q5_1
//! (which add an offset per block) and the k-quants are not expressible
//! this way and stay as they are.

use super::q8::{GGUF_BLOCK_BYTES, QK};

/// GGUF's bytes per Q4_0 block: an f16 scale, then 16 bytes of nibbles.
pub const Q4_0_BLOCK_BYTES: usize = 2 + QK / 2;

/// GGUF's bytes per Q5_0 block: an f16 scale, 4 bytes of fifth bits, then
/// 16 bytes of nibbles.
pub const Q5_0_BLOCK_BYTES: usize = 2 + 4 + QK / 2;

/// Q8_0 blocks holding the same weights as the Q4_0 blocks in `src`;
/// `None` when `src` is not whole blocks.
pub fn q4_0_to_q8_0(src: &[u8]) -> Option<Vec<u8>> {
    if !src.len().is_multiple_of(Q4_0_BLOCK_BYTES) {
        return None;
    }
    let mut out = vec![0u8; src.len() / Q4_0_BLOCK_BYTES * GGUF_BLOCK_BYTES];
    for (blk, dst) in src
        .chunks_exact(Q4_0_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(GGUF_BLOCK_BYTES))
    {
        dst[..2].copy_from_slice(&blk[..2]);
        let (lo, hi) = dst[2..].split_at_mut(QK / 2);
        for (j, &q) in blk[2..].iter().enumerate() {
            lo[j] = ((q & 0x0f) as i8 - 8) as u8;
            hi[j] = ((q >> 4) as i8 - 8) as u8;
        }
    }
    Some(out)
}

/// Q8_0 blocks holding the same weights as the Q5_0 blocks in `src`;
/// `None` when `src` is not whole blocks.
pub fn q5_0_to_q8_0(src: &[u8]) -> Option<Vec<u8>> {
    if !src.len().is_multiple_of(Q5_0_BLOCK_BYTES) {
        return None;
    }
    let mut out = vec![0u8; src.len() / Q5_0_BLOCK_BYTES * GGUF_BLOCK_BYTES];
    for (blk, dst) in src
        .chunks_exact(Q5_0_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(GGUF_BLOCK_BYTES))
    {
        dst[..2].copy_from_slice(&blk[..2]);
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        let (lo, hi) = dst[2..].split_at_mut(QK / 2);
        for (j, &q) in blk[6..].iter().enumerate() {
            // Bit j is weight j's fifth bit, bit j + 16 weight j + 16's.
            let h0 = ((qh >> j) & 1) as u8;
            let h1 = ((qh >> (j + 16)) & 1) as u8;
            lo[j] = (((q & 0x0f) | (h0 << 4)) as i8 - 16) as u8;
            hi[j] = (((q >> 4) | (h1 << 4)) as i8 - 16) as u8;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use half::f16;

    /// The weights of Q8_0 bytes, as f32.
    fn dequantize_q8_0(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(GGUF_BLOCK_BYTES)
            .flat_map(|b| {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                b[2..].iter().map(move |&q| d * q as i8 as f32)
            })
            .collect()
    }

    #[test]
    fn re_encoded_blocks_hold_the_same_weights_bit_for_bit() {
        let dev = Device::Cpu;
        // Wide ranges and a block of zeros, so every nibble and fifth bit
        // shows up, and the extremes (−16 and 15, −8 and 7) too.
        let w = (Tensor::randn(0f32, 1.0, (4, 256), &dev).unwrap() * 3.0).unwrap();
        let w = Tensor::cat(
            &[
                &w,
                &Tensor::zeros((1, 256), candle_core::DType::F32, &dev).unwrap(),
            ],
            0,
        )
        .unwrap();
        for (dtype, convert) in [
            (
                GgmlDType::Q4_0,
                q4_0_to_q8_0 as fn(&[u8]) -> Option<Vec<u8>>,
            ),
            (GgmlDType::Q5_0, q5_0_to_q8_0),
        ] {
            let qt = QTensor::quantize(&w, dtype).unwrap();
            let want: Vec<f32> = qt
                .dequantize(&dev)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let q8 = convert(&qt.data().unwrap()).expect("whole blocks");
            let got = dequantize_q8_0(&q8);
            assert_eq!(got.len(), want.len(), "{dtype:?}");
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), e.to_bits(), "{dtype:?} weight {i}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn partial_blocks_are_refused() {
        assert!(q4_0_to_q8_0(&[0; Q4_0_BLOCK_BYTES + 1]).is_none());
        assert!(q5_0_to_q8_0(&[0; Q5_0_BLOCK_BYTES - 1]).is_none());
        assert_eq!(q5_0_to_q8_0(&[]).unwrap().len(), 0);
    }
}
