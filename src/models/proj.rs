//! A decoder's projections (its weight matrices) and how they multiply:
//! dense or Q8_0 weights repacked once for the project's CPU kernels
//! ([`kernels::Packed`]), Q4_0/Q5_0 re-encoded as Q8_0, Q4_K/Q5_K/Q6_K
//! repacked into tiles ([`kernels::ktile`]) where the CPU has
//! AVX512-VNNI or AVX2 and otherwise read in place by [`kernels::kquant`]
//! for decoding, anything else through candle (`Linear`, `QMatMul`).
//! Projections that read the same input fuse into one (q/k/v, gate/up).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Storage, Tensor, WithDType};
use candle_nn::Linear;
use half::{bf16, f16};

use super::kernels;

/// A projection: dense (safetensors) or quantized (GGUF) weights.
pub enum Proj {
    /// Dense weights (and bias).
    Dense(Linear),
    /// Quantized weights, with a dense bias.
    Quant(QMatMul, Option<Tensor>),
    /// Dense or Q8_0 weights on the CPU, packed for the project's kernels,
    /// with an f32 bias.
    Packed(kernels::Packed, Option<Tensor>),
    /// Q4_K / Q5_K / Q6_K weights on the CPU in VNNI tiles, with an f32 bias.
    KTiles(kernels::ktile::KTiles, Option<Tensor>),
}

/// Runs `f` on the elements of a contiguous CPU tensor, in place.
pub(super) fn with_cpu_slice<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> R,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("expected a CPU tensor")
    };
    let all = cpu.as_slice::<T>()?;
    let Some((a, b)) = layout.contiguous_offsets() else {
        candle_core::bail!("expected a contiguous tensor")
    };
    Ok(f(&all[a..b]))
}

impl Proj {
    /// The weights as GGUF Q8_0 blocks and their shape (n, k), when this is
    /// a CPU projection that [`kernels::Packed`] can hold (whole blocks per
    /// row): Q8_0 as it is, Q4_0 and Q5_0 re-encoded exactly
    /// ([`kernels::requant`]).
    fn q8_0(&self) -> Option<(&QTensor, usize, usize)> {
        let Proj::Quant(QMatMul::QTensor(w), _) = self else {
            return None;
        };
        let (n, k) = w.shape().dims2().ok()?;
        let fits = matches!(
            w.dtype(),
            GgmlDType::Q8_0 | GgmlDType::Q5_0 | GgmlDType::Q4_0
        );
        (fits && w.device().is_cpu() && k % 32 == 0).then_some((w, n, k))
    }

    /// The Q8_0 blocks of a tensor [`Proj::q8_0`] accepted.
    fn q8_0_bytes(w: &QTensor) -> candle_core::Result<Vec<u8>> {
        let data = w.data()?;
        let q8 = match w.dtype() {
            GgmlDType::Q8_0 => Some(data.into_owned()),
            GgmlDType::Q5_0 => kernels::requant::q5_0_to_q8_0(&data),
            GgmlDType::Q4_0 => kernels::requant::q4_0_to_q8_0(&data),
            other => candle_core::bail!("{other:?} weights are not Q8_0 blocks"),
        };
        q8.ok_or_else(|| candle_core::Error::Msg(format!("{:?} weights: partial block", w.dtype())))
    }

    /// The weights as Q4_K / Q5_K / Q6_K blocks and their shape (n, k), when this
    /// is a CPU projection of whole super-blocks and the CPU multiplies
    /// k-quant tiles ([`kernels::ktile::runs`]).
    fn k_tiles(&self) -> Option<(kernels::kquant::Kind, &QTensor, usize, usize)> {
        use kernels::kquant::{Kind, QK_K};
        let Proj::Quant(QMatMul::QTensor(w), _) = self else {
            return None;
        };
        let kind = match w.dtype() {
            GgmlDType::Q4K => Kind::Q4K,
            GgmlDType::Q5K => Kind::Q5K,
            GgmlDType::Q6K => Kind::Q6K,
            _ => return None,
        };
        let (n, k) = w.shape().dims2().ok()?;
        (kernels::ktile::runs() && w.device().is_cpu() && k.is_multiple_of(QK_K))
            .then_some((kind, w, n, k))
    }

    /// Row `j` of the weights, dequantized (a tied head's embedding lookup).
    pub(super) fn row(&self, j: usize) -> candle_core::Result<Vec<f32>> {
        match self {
            Proj::Packed(p, _) => Ok(p.row(j)),
            Proj::KTiles(t, _) => Ok(t.row(j)),
            _ => candle_core::bail!("rows are read from packed projections only"),
        }
    }

    /// Dense CPU weights, CPU Q8_0 weights and (with VNNI or AVX2) CPU
    /// Q4_K / Q6_K weights, repacked for the CPU kernels (see
    /// [`kernels::Packed`], [`kernels::ktile`]); anything else as it is.
    pub(super) fn packed(self) -> candle_core::Result<Proj> {
        if let Some((kind, w, n, k)) = self.k_tiles() {
            let tiles = kernels::ktile::KTiles::pack(kind, &w.data()?, n, k);
            let Proj::Quant(_, bias) = self else {
                unreachable!("k_tiles() matched a quantized projection")
            };
            let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
            return Ok(Proj::KTiles(tiles, bias));
        }
        if let Some((w, n, k)) = self.q8_0() {
            let packed = kernels::Packed::from_q8_0(&Self::q8_0_bytes(w)?, n, k);
            let Proj::Quant(_, bias) = self else {
                unreachable!("q8_0() matched a quantized projection")
            };
            let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
            return Ok(Proj::Packed(packed, bias));
        }
        let Proj::Dense(l) = &self else {
            return Ok(self);
        };
        let w = l.weight();
        if !w.device().is_cpu() || w.rank() != 2 {
            return Ok(self);
        }
        let (n, k) = w.dims2()?;
        let w = w.contiguous()?;
        let packed = match w.dtype() {
            DType::F32 => with_cpu_slice::<f32, _>(&w, |ws| kernels::Packed::from_f32(ws, n, k))?,
            DType::BF16 => {
                with_cpu_slice::<bf16, _>(&w, |ws| kernels::Packed::from_bf16(ws, n, k))?
            }
            DType::F16 => with_cpu_slice::<f16, _>(&w, |ws| kernels::Packed::from_f16(ws, n, k))?,
            _ => return Ok(self),
        };
        let bias = l.bias().map(|b| b.to_dtype(DType::F32)).transpose()?;
        Ok(Proj::Packed(packed, bias))
    }

    /// A few rows times CPU Q4_K / Q6_K weights, through the project's
    /// k-quant kernels ([`kernels::kquant`], reading candle's blocks in
    /// place); `None` for anything else (candle's product then).
    fn kquant(q: &QMatMul, x: &Tensor) -> candle_core::Result<Option<Tensor>> {
        use kernels::kquant::{self, Kind, QK_K};
        let QMatMul::QTensor(w) = q else {
            return Ok(None);
        };
        let kind = match w.dtype() {
            GgmlDType::Q4K => Kind::Q4K,
            GgmlDType::Q6K => Kind::Q6K,
            _ => return Ok(None),
        };
        let (n, k) = w.shape().dims2()?;
        let m = x.elem_count() / k.max(1);
        if !w.device().is_cpu() || !k.is_multiple_of(QK_K) || m > kernels::GEMV_MAX_ROWS {
            return Ok(None);
        }
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let data = w.data()?;
        let y = with_cpu_slice::<f32, _>(&x, |xs| kquant::matmul(kind, &data, n, k, xs, m))?;
        let mut dims = x.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        Ok(Some(Tensor::from_vec(y, dims, x.device())?))
    }

    /// One projection whose outputs are `projs`' outputs side by side, so
    /// one pass over the input serves all of them: dense weights, or CPU
    /// Q8_0 rows (whole blocks, so rows simply concatenate); `None` for
    /// other quantized weights, or biases on some parts only.
    pub(super) fn fuse(projs: &[&Proj]) -> candle_core::Result<Option<Proj>> {
        let q8: Option<Vec<_>> = projs.iter().map(|p| p.q8_0()).collect();
        let q8 = q8.filter(|q| !q.is_empty() && q.iter().all(|(_, _, k)| *k == q[0].2));
        let kt: Option<Vec<_>> = projs.iter().map(|p| p.k_tiles()).collect();
        let kt = kt.filter(|t| {
            t.iter().enumerate().all(|(i, (kind, _, n, k))| {
                *kind == t[0].0
                    && *k == t[0].3
                    && (i + 1 == t.len() || n.is_multiple_of(kernels::ktile::TR))
            })
        });
        if q8.is_none() && kt.is_none() && !projs.iter().all(|p| matches!(p, Proj::Dense(_))) {
            return Ok(None);
        }
        let biases: Vec<Tensor> = projs
            .iter()
            .filter_map(|p| match p {
                Proj::Dense(l) => l.bias().cloned(),
                Proj::Quant(_, b) | Proj::Packed(_, b) | Proj::KTiles(_, b) => b.clone(),
            })
            .collect();
        let bias = match biases.len() {
            0 => None,
            n if n == projs.len() => Some(Tensor::cat(&biases, 0)?),
            _ => return Ok(None),
        };
        if let Some(kt) = kt.filter(|t| !t.is_empty()) {
            let parts = kt
                .iter()
                .map(|(kind, w, n, k)| Ok(kernels::ktile::KTiles::pack(*kind, &w.data()?, *n, *k)))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let refs: Vec<&kernels::ktile::KTiles> = parts.iter().collect();
            let tiles = kernels::ktile::KTiles::concat(&refs).expect("checked above");
            let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
            return Ok(Some(Proj::KTiles(tiles, bias)));
        }
        if let Some(q8) = q8 {
            let mut rows = Vec::new();
            for (w, _, _) in &q8 {
                rows.extend_from_slice(&Self::q8_0_bytes(w)?);
            }
            let n = q8.iter().map(|(_, n, _)| n).sum();
            let packed = kernels::Packed::from_q8_0(&rows, n, q8[0].2);
            let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
            return Ok(Some(Proj::Packed(packed, bias)));
        }
        let mut ws = Vec::new();
        for p in projs {
            let Proj::Dense(l) = p else { return Ok(None) };
            ws.push(l.weight().clone());
        }
        Ok(Some(Proj::Dense(Linear::new(Tensor::cat(&ws, 0)?, bias))))
    }

    /// `x`'s rows (k inputs each) through `linear` (m rows in, m × n out),
    /// plus the bias.
    fn rows(
        x: &Tensor,
        n: usize,
        k: usize,
        bias: &Option<Tensor>,
        linear: impl FnOnce(&[f32], usize) -> Vec<f32>,
    ) -> candle_core::Result<Tensor> {
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let mut dims = x.dims().to_vec();
        let have = *dims.last().unwrap_or(&0);
        if have != k {
            candle_core::bail!("projection: {k} inputs, activations have {have}");
        }
        let m = x.elem_count() / k.max(1);
        let y = with_cpu_slice::<f32, _>(&x, |xs| linear(xs, m))?;
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        let y = Tensor::from_vec(y, dims, x.device())?;
        match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Proj::Packed(p, bias) => Self::rows(x, p.n(), p.k(), bias, |xs, m| p.linear(xs, m)),
            Proj::KTiles(t, bias) => Self::rows(x, t.n(), t.k(), bias, |xs, m| t.linear(xs, m)),
            Proj::Dense(l) => l.forward(x),
            Proj::Quant(q, bias) => {
                let y = match Self::kquant(q, x)? {
                    Some(y) => y,
                    None => q.forward(x)?,
                };
                match bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
        }
    }
}
