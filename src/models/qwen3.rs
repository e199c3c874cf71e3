//! The Qwen3 (and Qwen2/Qwen2.5) decoder, written on candle-core/candle-nn.
//!
//! Unlike candle-transformers' `qwen3`, this module takes a padding mask
//! (so left-padded batches embed exactly like single texts), keeps its KV
//! cache in a [`Cache`] the caller owns and can reset, reads YaRN RoPE
//! scaling from `rope_scaling` (so Qwen3 runs at 131,072 positions), and
//! computes attention one block of queries at a time: scores are
//! `block × keys`, never `seq × seq`, so a long prompt needs memory for the
//! weights, the KV cache and O(block × seq) only. Layer names equal the
//! checkpoint keys; the embedding checkpoints' layout (no `model.` prefix)
//! loads too.

use candle_core::{DType, Device, Module, Tensor, WithDType, D};
use candle_nn::{Embedding, Linear};
use half::{bf16, f16};

use super::config::Config;
use super::kernels::{self, AttnShape, Elem};
use super::proj::with_cpu_slice;
pub use super::proj::Proj;
use super::weights::Weights;
use crate::{Error, Result};

/// Bytes the attention scores of one query block may take (f32), by default.
const SCORE_BUDGET_BYTES: usize = 256 << 20;

/// Rows of activations (sequences × positions) per pass of a forward: a
/// 512-row block's largest intermediate (the MLP's, 512 × 3,072 f32 for
/// Qwen3-0.6B) is 6 MB and stays in cache; a batch of eight 512-token
/// passages at once streamed 50 MB buffers through memory for every
/// element-wise step.
pub const FORWARD_ROWS: usize = 512;

fn err(e: candle_core::Error) -> Error {
    Error::model_lib(e)
}

struct RmsNorm {
    weight: Tensor,
    /// The weights as f32 on the host, for the CPU kernels (empty on a GPU).
    host: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    fn new(size: usize, eps: f64, w: &dyn Weights, name: &str) -> candle_core::Result<Self> {
        let weight = w
            .tensor(&format!("{name}.weight"), &[size])?
            .to_dtype(activation_dtype(w))?;
        let host = if weight.device().is_cpu() {
            weight.to_dtype(DType::F32)?.to_vec1()?
        } else {
            Vec::new()
        };
        Ok(RmsNorm {
            weight,
            host,
            eps: eps as f32,
        })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)
    }
}

/// The dtype activations flow in: f32 on the CPU (the kernels read bf16/f16
/// weights directly, and candle's CPU ops would widen them anyway), the
/// weights' dtype on a GPU.
fn activation_dtype(w: &dyn Weights) -> DType {
    if w.device().is_cpu() {
        DType::F32
    } else {
        w.dtype()
    }
}

/// RoPE frequencies, with YaRN scaling when the config asks for it.
struct Rotary {
    inv_freq: Vec<f32>,
    /// YaRN's attention factor, applied to cos and sin (1 without YaRN).
    mscale: f32,
}

impl Rotary {
    fn new(cfg: &Config) -> Rotary {
        let dim = cfg.head_dim();
        let base = cfg.rope_theta;
        let pos_freqs: Vec<f64> = (0..dim / 2)
            .map(|i| base.powf((2 * i) as f64 / dim as f64))
            .collect();
        let Some(s) = &cfg.rope_scaling else {
            return Rotary {
                inv_freq: pos_freqs.iter().map(|p| (1.0 / p) as f32).collect(),
                mscale: 1.0,
            };
        };
        // YaRN, as in Hugging Face's `_compute_yarn_parameters`.
        let factor = s.factor;
        let orig = s
            .original_max_position_embeddings
            .unwrap_or(cfg.max_position_embeddings) as f64;
        let (beta_fast, beta_slow) = (s.beta_fast.unwrap_or(32.0), s.beta_slow.unwrap_or(1.0));
        let correction_dim = |rotations: f64| {
            (dim as f64 * (orig / (rotations * 2.0 * std::f64::consts::PI)).ln())
                / (2.0 * base.ln())
        };
        let low = correction_dim(beta_fast).floor().max(0.0);
        let high = correction_dim(beta_slow).ceil().min(dim as f64 - 1.0);
        let high = if high == low { high + 0.001 } else { high };
        let inv_freq = pos_freqs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                let extrapolation = 1.0 - ramp;
                let (inter, extra) = (1.0 / (factor * p), 1.0 / p);
                (inter * (1.0 - extrapolation) + extra * extrapolation) as f32
            })
            .collect();
        let mscale = s.attention_factor.unwrap_or(if factor <= 1.0 {
            1.0
        } else {
            0.1 * factor.ln() + 1.0
        });
        Rotary {
            inv_freq,
            mscale: mscale as f32,
        }
    }

    /// cos and sin, each (batch, seq, head_dim / 2), for the given positions.
    fn cos_sin(
        &self,
        positions: &[Vec<u32>],
        dev: &Device,
        dtype: DType,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, t, half) = (positions.len(), positions[0].len(), self.inv_freq.len());
        let mut cos = Vec::with_capacity(b * t * half);
        let mut sin = Vec::with_capacity(b * t * half);
        for row in positions {
            for &p in row {
                for &f in &self.inv_freq {
                    // f64 keeps positions past 100K exact enough.
                    let a = p as f64 * f as f64;
                    cos.push((a.cos() as f32) * self.mscale);
                    sin.push((a.sin() as f32) * self.mscale);
                }
            }
        }
        let cos = Tensor::from_vec(cos, (b, t, half), dev)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (b, t, half), dev)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// Projections that read the same input: one fused matrix (dense weights)
/// or each on its own (quantized).
enum Split {
    Fused(Proj, Vec<usize>),
    Separate(Vec<Proj>),
}

impl Split {
    fn new(projs: Vec<Proj>, widths: Vec<usize>) -> candle_core::Result<Split> {
        let refs: Vec<&Proj> = projs.iter().collect();
        Ok(match Proj::fuse(&refs)? {
            Some(f) => Split::Fused(f.packed()?, widths),
            None => Split::Separate(
                projs
                    .into_iter()
                    .map(Proj::packed)
                    .collect::<candle_core::Result<_>>()?,
            ),
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Split::Separate(ps) => ps.iter().map(|p| p.forward(x)).collect(),
            Split::Fused(p, widths) => {
                let y = p.forward(x)?;
                let mut start = 0;
                widths
                    .iter()
                    .map(|&w| {
                        let part = y.narrow(D::Minus1, start, w);
                        start += w;
                        part
                    })
                    .collect()
            }
        }
    }
}

struct Attention {
    qkv: Split,
    o: Proj,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &Config, w: &dyn Weights, p: &str) -> candle_core::Result<Self> {
        let (h, kvh, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim(),
        );
        let bias = cfg.qkv_bias();
        let hs = cfg.hidden_size;
        let eps = cfg.rms_norm_eps;
        let norm = |name: &str| -> candle_core::Result<Option<RmsNorm>> {
            if cfg.is_qwen3() {
                Ok(Some(RmsNorm::new(d, eps, w, &format!("{p}.{name}"))?))
            } else {
                Ok(None)
            }
        };
        Ok(Attention {
            qkv: Split::new(
                vec![
                    w.proj(&format!("{p}.q_proj"), hs, h * d, bias)?,
                    w.proj(&format!("{p}.k_proj"), hs, kvh * d, bias)?,
                    w.proj(&format!("{p}.v_proj"), hs, kvh * d, bias)?,
                ],
                vec![h * d, kvh * d, kvh * d],
            )?,
            o: w.proj(&format!("{p}.o_proj"), h * d, hs, false)?.packed()?,
            q_norm: norm("q_norm")?,
            k_norm: norm("k_norm")?,
            heads: h,
            kv_heads: kvh,
            head_dim: d,
        })
    }

    /// `x` is (b, t, hidden); `cache` holds this layer's earlier keys/values;
    /// `valid` is (b, keys) — which keys are real tokens (not padding).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut Option<KvSlot>,
        kv: KvType,
        valid: &[Vec<bool>],
        past: usize,
        budget: usize,
        reserve: usize,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        let (q, k, v) = if x.device().is_cpu() {
            self.heads_cpu(x, cos, sin)?
        } else {
            let qkv = self.qkv.forward(x)?;
            let q = qkv[0].reshape((b, t, h, d))?;
            let k = qkv[1].reshape((b, t, kvh, d))?;
            let v = qkv[2].reshape((b, t, kvh, d))?;
            let q = match &self.q_norm {
                Some(n) => n.forward(&q)?,
                None => q,
            };
            let k = match &self.k_norm {
                Some(n) => n.forward(&k)?,
                None => k,
            };
            let q = candle_nn::rotary_emb::rope(&q.transpose(1, 2)?.contiguous()?, cos, sin)?;
            let k = candle_nn::rotary_emb::rope(&k.transpose(1, 2)?.contiguous()?, cos, sin)?;
            (q, k, v.transpose(1, 2)?.contiguous()?)
        };
        let float = kv.float_dtype();
        let (k, v) = (k.to_dtype(float)?, v.to_dtype(float)?);
        let scale = 1.0 / (d as f64).sqrt();
        if x.device().is_cpu() {
            KvSlot::append(cache, &k, &v, kv == KvType::Q8, reserve)?;
            let slot = cache.as_ref().expect("appended above");
            let shape = AttnShape {
                batch: b,
                heads: h,
                kv_heads: kvh,
                t,
                dim: d,
                past,
                keys: slot.len,
                cap: slot.k.dim(2)?,
            };
            let q = q.to_dtype(DType::F32)?.contiguous()?;
            let out = match kv {
                KvType::Q8 => cpu_attention_q8(&q, slot, valid, shape, scale as f32)?,
                KvType::Float(DType::F32) => {
                    cpu_attention::<f32>(&q, slot, valid, shape, scale as f32)?
                }
                KvType::Float(DType::BF16) => {
                    cpu_attention::<bf16>(&q, slot, valid, shape, scale as f32)?
                }
                KvType::Float(DType::F16) => {
                    cpu_attention::<f16>(&q, slot, valid, shape, scale as f32)?
                }
                other => candle_core::bail!("KV cache type {other:?} is not f32, bf16, f16 or q8"),
            };
            let out = Tensor::from_vec(out, (b, t, h * d), x.device())?.to_dtype(x.dtype())?;
            return self.o.forward(&out);
        }
        if kv == KvType::Q8 {
            candle_core::bail!("the int8 KV cache runs on the CPU only; use f16 or bf16 on a GPU");
        }
        let (k_all, v_all) = KvSlot::append(cache, &k, &v, false, reserve)?;
        let keys = k_all.dim(2)?;
        // Views into the cache buffers: an f32 cache is read in place.
        let k32 = k_all.to_dtype(DType::F32)?.t()?; // (b, kvh, d, keys)
        let v32 = v_all.to_dtype(DType::F32)?;
        let q32 = q.to_dtype(DType::F32)?;
        let rep = h / kvh;
        // Query rows per block, so scores stay within the budget.
        let block = (budget / (4 * b * h * keys.max(1))).clamp(1, 512);
        let mut outs = Vec::new();
        let mut start = 0;
        while start < t {
            let len = block.min(t - start);
            // (b, h, len, d) -> (b, kvh, rep * len, d): grouped heads share keys.
            let qb = q32.narrow(2, start, len)?.reshape((b, kvh, rep * len, d))?;
            let scores = (qb.matmul(&k32)? * scale)?.reshape((b, kvh, rep, len, keys))?;
            let mut mask = Vec::with_capacity(b * len * keys);
            for row in valid {
                for r in 0..len {
                    let me = past + start + r;
                    for (j, &ok) in row.iter().enumerate().take(keys) {
                        let allowed = j == me || (j < me && ok);
                        mask.push(if allowed { 0f32 } else { f32::NEG_INFINITY });
                    }
                }
            }
            let mask = Tensor::from_vec(mask, (b, 1, 1, len, keys), x.device())?;
            let probs = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask)?)?;
            let ob = probs
                .reshape((b, kvh, rep * len, keys))?
                .matmul(&v32)?
                .reshape((b, h, len, d))?;
            outs.push(ob);
            start += len;
        }
        let out = Tensor::cat(&outs, 2)?
            .to_dtype(x.dtype())?
            .transpose(1, 2)?
            .reshape((b, t, h * d))?;
        self.o.forward(&out)
    }

    /// The q/k/v projection cut into head-major q, k (normed and rotated)
    /// and v, (b, heads, t, d) f32, by the CPU kernel in one pass.
    fn heads_cpu(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        let qkv = match &self.qkv {
            Split::Fused(p, _) => p.forward(x)?,
            Split::Separate(ps) => {
                let parts = ps
                    .iter()
                    .map(|p| p.forward(x))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&parts, D::Minus1)?
            }
        };
        let qkv = qkv.to_dtype(DType::F32)?.contiguous()?;
        let (cos, sin) = (cos.to_dtype(DType::F32)?, sin.to_dtype(DType::F32)?);
        let (q, k, v) = with_cpu_slice::<f32, _>(&qkv, |qkv| {
            with_cpu_slice::<f32, _>(&cos, |cos| {
                with_cpu_slice::<f32, _>(&sin, |sin| {
                    let split = kernels::HeadSplit {
                        batch: b,
                        t,
                        heads: h,
                        kv_heads: kvh,
                        dim: d,
                        q_norm: self.q_norm.as_ref().map(|n| &n.host[..]),
                        k_norm: self.k_norm.as_ref().map(|n| &n.host[..]),
                        // One epsilon for both norms, as in the config.
                        eps: self.q_norm.as_ref().map_or(0.0, |n| n.eps),
                        cos,
                        sin,
                    };
                    kernels::split_heads(qkv, &split)
                })
            })
        })???;
        let dev = x.device();
        Ok((
            Tensor::from_vec(q, (b, h, t, d), dev)?,
            Tensor::from_vec(k, (b, kvh, t, d), dev)?,
            Tensor::from_vec(v, (b, kvh, t, d), dev)?,
        ))
    }
}

/// Attention over a layer's cache with the CPU kernel, reading the cache
/// buffers in place.
fn cpu_attention<K: Elem + WithDType>(
    q: &Tensor,
    slot: &KvSlot,
    valid: &[Vec<bool>],
    shape: AttnShape,
    scale: f32,
) -> candle_core::Result<Vec<f32>> {
    with_cpu_slice::<f32, _>(q, |qs| {
        with_cpu_slice::<K, _>(&slot.k, |ks| {
            with_cpu_slice::<K, _>(&slot.v, |vs| {
                kernels::attention(qs, ks, vs, valid, shape, scale)
            })
        })
    })??
}

/// [`cpu_attention`] over the int8 cache: rows stored as int8 bits in
/// `u8` tensors, with their scales beside them.
fn cpu_attention_q8(
    q: &Tensor,
    slot: &KvSlot,
    valid: &[Vec<bool>],
    shape: AttnShape,
    scale: f32,
) -> candle_core::Result<Vec<f32>> {
    let Some((ks, vs)) = &slot.scales else {
        candle_core::bail!("an int8 KV cache without its scales")
    };
    with_cpu_slice::<f32, _>(q, |qs| {
        with_cpu_slice::<u8, _>(&slot.k, |k8| {
            with_cpu_slice::<u8, _>(&slot.v, |v8| {
                with_cpu_slice::<f32, _>(ks, |ksc| {
                    with_cpu_slice::<f32, _>(vs, |vsc| {
                        kernels::attention_scaled(
                            qs,
                            as_i8(k8),
                            as_i8(v8),
                            Some((ksc, vsc)),
                            valid,
                            shape,
                            scale,
                        )
                    })
                })
            })
        })
    })????
}

struct Mlp {
    gate_up: Split,
    down: Proj,
}

impl Mlp {
    fn new(cfg: &Config, w: &dyn Weights, p: &str) -> candle_core::Result<Self> {
        let (hs, is) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate_up: Split::new(
                vec![
                    w.proj(&format!("{p}.gate_proj"), hs, is, false)?,
                    w.proj(&format!("{p}.up_proj"), hs, is, false)?,
                ],
                vec![is, is],
            )?,
            down: w.proj(&format!("{p}.down_proj"), is, hs, false)?.packed()?,
        })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // On the CPU, the fused projection's [gate | up] rows go through one
        // vectorised SwiGLU kernel.
        if let Split::Fused(p, widths) = &self.gate_up {
            if x.device().is_cpu() {
                let y = p.forward(x)?.to_dtype(DType::F32)?.contiguous()?;
                let width = widths[0];
                let h = with_cpu_slice::<f32, _>(&y, |ys| kernels::silu_mul(ys, width))?;
                let mut dims = y.dims().to_vec();
                *dims.last_mut().expect("a last dimension") = width;
                let h = Tensor::from_vec(h, dims, x.device())?.to_dtype(x.dtype())?;
                return self.down.forward(&h);
            }
        }
        let gu = self.gate_up.forward(x)?;
        let g = candle_nn::ops::silu(&gu[0])?;
        self.down.forward(&(g * &gu[1])?)
    }
}

struct Layer {
    attn: Attention,
    mlp: Mlp,
    ln1: RmsNorm,
    ln2: RmsNorm,
}

/// One layer's cached keys and values: buffers with room to grow (doubling),
/// written in place, so a decode step copies only its own new row.
#[derive(Clone)]
pub struct KvSlot {
    /// (b, kv_heads, cap, d): floats, or int8 bits in a `u8` tensor.
    k: Tensor,
    v: Tensor,
    /// For int8 rows: the scales of each key's and value's blocks of
    /// [`kernels::kv_block`] elements, (b, kv_heads, cap, blocks).
    scales: Option<(Tensor, Tensor)>,
    len: usize,
}

impl KvSlot {
    /// Appends `k`/`v` (b, kv_heads, t, d) and returns views of all
    /// keys/values. With `int8`, `k` and `v` (f32) are stored as int8 rows
    /// with a scale per block (the views are then of the int8 bits).
    fn append(
        slot: &mut Option<KvSlot>,
        k: &Tensor,
        v: &Tensor,
        int8: bool,
        reserve: usize,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let t = k.dim(2)?;
        let (k, v, scales) = if int8 {
            let (k8, ks) = quantize(k)?;
            let (v8, vs) = quantize(v)?;
            (k8, v8, Some((ks, vs)))
        } else {
            (k.contiguous()?, v.contiguous()?, None)
        };
        let len = slot.as_ref().map_or(0, |s| s.len);
        let cap = slot.as_ref().map_or(0, |s| s.k.dim(2).unwrap_or(0));
        if len + t > cap {
            let new_cap = (2 * cap).max(len + t).max(256).max(reserve);
            let grow = |old: Option<&Tensor>, like: &Tensor| -> candle_core::Result<Tensor> {
                let mut dims = like.dims().to_vec();
                dims[2] = new_cap;
                let new = Tensor::zeros(dims, like.dtype(), like.device())?;
                if let Some(old) = old.filter(|_| len > 0) {
                    new.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                }
                Ok(new)
            };
            let old = slot.as_ref();
            let new_scales = match &scales {
                Some((ks, vs)) => {
                    let olds = old.and_then(|o| o.scales.as_ref());
                    Some((grow(olds.map(|s| &s.0), ks)?, grow(olds.map(|s| &s.1), vs)?))
                }
                None => None,
            };
            let nk = grow(old.map(|o| &o.k), &k)?;
            let nv = grow(old.map(|o| &o.v), &v)?;
            *slot = Some(KvSlot {
                k: nk,
                v: nv,
                scales: new_scales,
                len,
            });
        }
        let s = slot.as_mut().expect("allocated above");
        if s.scales.is_some() != scales.is_some() {
            candle_core::bail!("a KV cache cannot mix int8 and float rows");
        }
        s.k.slice_set(&k, 2, len)?;
        s.v.slice_set(&v, 2, len)?;
        if let (Some((ks, vs)), Some((nks, nvs))) = (&s.scales, &scales) {
            ks.slice_set(nks, 2, len)?;
            vs.slice_set(nvs, 2, len)?;
        }
        s.len = len + t;
        Ok((s.k.narrow(2, 0, s.len)?, s.v.narrow(2, 0, s.len)?))
    }
}

/// int8 values stored in a `u8` tensor (candle has no i8 dtype).
fn as_i8(b: &[u8]) -> &[i8] {
    // SAFETY: u8 and i8 have the same size and alignment, and every bit
    // pattern is a valid i8.
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const i8, b.len()) }
}

/// [`as_i8`], writable.
fn as_i8_mut(b: &mut [u8]) -> &mut [i8] {
    // SAFETY: as for `as_i8`; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut i8, b.len()) }
}

/// Rows of `x` (b, kv_heads, t, d) as int8 bits in a `u8` tensor and the
/// scales of their blocks (b, kv_heads, t, d / [`kernels::kv_block`]), by
/// [`kernels::quantize_rows`].
fn quantize(x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let (b, kvh, t, d) = x.dims4()?;
    let block = kernels::kv_block(d);
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    let (bits, sc) = with_cpu_slice::<f32, _>(&x, |xs| {
        let mut bits = vec![0u8; xs.len()];
        let mut sc = vec![0f32; xs.len() / block];
        if d > 0 {
            kernels::quantize_rows(xs, block, as_i8_mut(&mut bits), &mut sc);
        }
        (bits, sc)
    })?;
    Ok((
        Tensor::from_vec(bits, (b, kvh, t, d), x.device())?,
        Tensor::from_vec(sc, (b, kvh, t, d / block), x.device())?,
    ))
}

/// How a KV cache stores keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    /// Floating point, as this dtype (f32, bf16 or f16).
    Float(DType),
    /// int8 rows with an f32 scale per block of 32 (CPU only; llama.cpp's
    /// q8_0 cache): 56% of the memory and the reads of f16, at a rounding
    /// error of 1/254 of each block's largest element.
    Q8,
}

impl From<DType> for KvType {
    fn from(d: DType) -> KvType {
        KvType::Float(d)
    }
}

impl KvType {
    /// The dtype keys and values are computed in before they are stored.
    pub fn float_dtype(self) -> DType {
        match self {
            KvType::Float(d) => d,
            KvType::Q8 => DType::F32,
        }
    }
    /// Bytes per cached element of a head of `head_dim` (with the scale).
    pub fn bytes_per_element(self, head_dim: usize) -> f64 {
        match self {
            KvType::Float(d) => d.size_in_bytes() as f64,
            KvType::Q8 => 1.0 + 4.0 / kernels::kv_block(head_dim) as f64,
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvType::Float(d) => write!(f, "{}", d.as_str()),
            KvType::Q8 => f.write_str("q8"),
        }
    }
}

/// Keys and values of earlier tokens, per layer. Owned by the caller, so a
/// conversation can keep it and a new prompt can [`Cache::reset`] it.
pub struct Cache {
    layers: Vec<Option<KvSlot>>,
    /// Per batch row: which cached positions are real tokens.
    valid: Vec<Vec<bool>>,
    kind: KvType,
    /// Positions the buffers are sized for at least ([`Cache::reserve`]).
    reserved: usize,
}

impl Cache {
    /// An empty cache storing keys/values as `kind` (a float dtype, or
    /// [`KvType::Q8`]).
    pub fn new(model: &Model, kind: impl Into<KvType>) -> Cache {
        Cache {
            layers: vec![None; model.layers.len()],
            valid: Vec::new(),
            kind: kind.into(),
            reserved: 0,
        }
    }
    /// Sizes the buffers for at least `positions` tokens when they are
    /// next allocated or grown (a prompt plus the most tokens to
    /// generate). The buffers otherwise double as they fill, and each
    /// doubling copies the whole cache: after a 2,048-token prompt the
    /// first generated token copied 235 MB (Qwen3-0.6B, bf16) and waited
    /// for twice that to be zeroed — 5 ms per token over 48 tokens.
    pub fn reserve(&mut self, positions: usize) {
        self.reserved = self.reserved.max(positions);
    }
    /// Forgets everything, the reservation too.
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.valid.clear();
        self.reserved = 0;
    }
    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }
    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// How keys and values are stored.
    pub fn kind(&self) -> KvType {
        self.kind
    }
    /// Keeps the first `n` positions only (what a new prompt shares with
    /// the one this cache read); the buffers keep their room.
    pub fn truncate(&mut self, n: usize) {
        for slot in self.layers.iter_mut().flatten() {
            slot.len = slot.len.min(n);
        }
        for row in &mut self.valid {
            row.truncate(n);
        }
        if self.is_empty() {
            self.reset();
        }
    }
    /// Bytes the buffers hold (their whole room, not only the rows used).
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        self.layers
            .iter()
            .flatten()
            .map(|s| {
                size(&s.k) + size(&s.v) + s.scales.as_ref().map_or(0, |(a, b)| size(a) + size(b))
            })
            .sum()
    }
    /// Each layer's first `upto` cached rows (at most all) of a one-row
    /// batch, contiguous: keys, values and the int8 rows' scales. `None`
    /// for a batch or an empty cache.
    pub fn rows(&self, upto: usize) -> Option<Vec<LayerRows>> {
        let n = upto.min(self.len());
        if self.valid.len() != 1 || n == 0 || !self.valid[0][..n].iter().all(|&v| v) {
            return None;
        }
        self.layers
            .iter()
            .map(|slot| {
                let s = slot.as_ref().filter(|s| s.len >= n)?;
                let cut = |t: &Tensor| t.narrow(2, 0, n).and_then(|t| t.contiguous()).ok();
                Some(LayerRows {
                    k: cut(&s.k)?,
                    v: cut(&s.v)?,
                    scales: match &s.scales {
                        Some((a, b)) => Some((cut(a)?, cut(b)?)),
                        None => None,
                    },
                })
            })
            .collect()
    }
    /// A cache holding `rows` (one per layer, of one sequence, as
    /// [`Cache::rows`] gave them), with room for `reserve` positions.
    pub fn from_rows(
        model: &Model,
        kind: KvType,
        rows: Vec<LayerRows>,
        reserve: usize,
    ) -> Result<Cache> {
        if rows.len() != model.layers.len() {
            return Err(Error::Model(format!(
                "a KV cache of {} layers for a model of {}",
                rows.len(),
                model.layers.len()
            )));
        }
        let n = rows.first().map_or(0, |r| r.k.dim(2).unwrap_or(0));
        let mut layers = Vec::with_capacity(rows.len());
        for r in rows {
            let grow = |t: &Tensor| -> candle_core::Result<Tensor> {
                let mut dims = t.dims().to_vec();
                dims[2] = reserve.max(n);
                let new = Tensor::zeros(dims, t.dtype(), t.device())?;
                new.slice_set(t, 2, 0)?;
                Ok(new)
            };
            let build = || -> candle_core::Result<KvSlot> {
                if r.k.dim(2)? != n || r.v.dim(2)? != n {
                    candle_core::bail!("layers of a KV cache hold different lengths");
                }
                Ok(KvSlot {
                    k: grow(&r.k)?,
                    v: grow(&r.v)?,
                    scales: match &r.scales {
                        Some((a, b)) => Some((grow(a)?, grow(b)?)),
                        None => None,
                    },
                    len: n,
                })
            };
            layers.push(Some(build().map_err(err)?));
        }
        Ok(Cache {
            layers,
            valid: vec![vec![true; n]],
            kind,
            reserved: reserve,
        })
    }
}

/// One layer's cached rows of one sequence ([`Cache::rows`]): keys and
/// values (1, kv_heads, positions, head_dim), as floats or int8 bits, and
/// for int8 rows their blocks' scales.
pub struct LayerRows {
    /// Keys.
    pub k: Tensor,
    /// Values.
    pub v: Tensor,
    /// Scales of the keys' and values' blocks (int8 rows only).
    pub scales: Option<(Tensor, Tensor)>,
}

/// A loaded Qwen decoder.
pub struct Model {
    /// The embedding table; `None` when the packed tied head holds it.
    embed: Option<Embedding>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Option<Proj>,
    rotary: Rotary,
    cfg: Config,
    dtype: DType,
    cache_dtype: KvType,
    device: Device,
    score_budget: usize,
}

impl Model {
    /// Caps the memory of one block of attention scores (bytes): smaller
    /// blocks for long prompts on small machines.
    pub fn set_attention_budget(&mut self, bytes: usize) {
        self.score_budget = bytes.max(1);
    }

    /// Builds the model from `weights`, whose names follow the Hugging Face
    /// checkpoint without the `model.` prefix (the [`Weights`] source maps
    /// them to its own layout).
    pub fn new(cfg: &Config, w: &dyn Weights) -> Result<Model> {
        let build = || -> candle_core::Result<Model> {
            // Read when needed: a quantized table tied to a packed head is
            // never dequantized (~0.9 GB of f32 for Qwen2.5's vocabulary).
            let embed_w = || w.tensor("embed_tokens.weight", &[cfg.vocab_size, cfg.hidden_size]);
            let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
            let eps = cfg.rms_norm_eps;
            for i in 0..cfg.num_hidden_layers {
                let p = format!("layers.{i}");
                layers.push(Layer {
                    attn: Attention::new(cfg, w, &format!("{p}.self_attn"))?,
                    mlp: Mlp::new(cfg, w, &format!("{p}.mlp"))?,
                    ln1: RmsNorm::new(cfg.hidden_size, eps, w, &format!("{p}.input_layernorm"))?,
                    ln2: RmsNorm::new(
                        cfg.hidden_size,
                        eps,
                        w,
                        &format!("{p}.post_attention_layernorm"),
                    )?,
                });
            }
            let lm_head = if w.contains("lm_head.weight") {
                Some(
                    w.proj("lm_head", cfg.hidden_size, cfg.vocab_size, false)?
                        .packed()?,
                )
            } else if cfg.tie_word_embeddings && w.quantized() {
                // The table stays quantized as the head (GGUF files tie it
                // too); packed, it also serves the lookups.
                Some(
                    w.proj("embed_tokens", cfg.hidden_size, cfg.vocab_size, false)?
                        .packed()?,
                )
            } else if cfg.tie_word_embeddings {
                Some(Proj::Dense(Linear::new(embed_w()?, None)).packed()?)
            } else {
                None
            };
            // A head tied to the table and packed serves the lookups too,
            // so the table is not held twice.
            let embed = match &lm_head {
                Some(Proj::Packed(..) | Proj::KTiles(..))
                    if cfg.tie_word_embeddings && !w.contains("lm_head.weight") =>
                {
                    None
                }
                _ => Some(Embedding::new(embed_w()?, cfg.hidden_size)),
            };
            Ok(Model {
                embed,
                layers,
                norm: RmsNorm::new(cfg.hidden_size, eps, w, "norm")?,
                lm_head,
                rotary: Rotary::new(cfg),
                cfg: cfg.clone(),
                dtype: activation_dtype(w),
                // Quantized weights keep an int8 cache (blocks of 32, as
                // their own) where the CPU runs its AVX-512 or AVX2
                // kernels; f16 elsewhere.
                cache_dtype: match w.dtype() {
                    _ if w.quantized() && w.device().is_cpu() && kernels::fast_int8_cache() => {
                        KvType::Q8
                    }
                    _ if w.quantized() => KvType::Float(DType::F16),
                    DType::BF16 => KvType::Float(DType::BF16),
                    DType::F16 => KvType::Float(DType::F16),
                    _ => KvType::Float(DType::F32),
                },
                device: w.device().clone(),
                score_budget: SCORE_BUDGET_BYTES,
            })
        };
        build().map_err(Error::model("loading weights"))
    }

    /// Parameters in the decoder (the tied head counted once).
    pub fn parameter_count(&self) -> usize {
        let c = &self.cfg;
        let (h, kv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let attn = c.hidden_size * d * (2 * h + 2 * kv);
        let mlp = 3 * c.hidden_size * c.intermediate_size;
        let head = if c.tie_word_embeddings {
            0
        } else {
            c.vocab_size * c.hidden_size
        };
        c.vocab_size * c.hidden_size + c.num_hidden_layers * (attn + mlp) + head
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The KV cache type that matches the weights: bf16 or f16 for such
    /// weights (half the memory of f32, and the bf16 attention kernels),
    /// for quantized ones int8 in blocks of 32 where the CPU has the
    /// AVX-512 kernels for it (f16 elsewhere, as llama.cpp keeps it), f32
    /// for f32.
    pub fn cache_dtype(&self) -> KvType {
        self.cache_dtype
    }

    /// [`Model::cache_dtype`] in floating point: for one-pass work
    /// (embedding, reranking), whose cache is dropped after each batch,
    /// so int8 would only round the keys and values.
    pub fn float_cache_dtype(&self) -> KvType {
        match self.cache_dtype {
            KvType::Q8 => KvType::Float(DType::F16),
            float => float,
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs `ids` (one row per sequence, all the same length) after what
    /// `cache` holds. `valid[b][i]` says whether token i of row b is real
    /// (false for left padding); positions count real tokens only, so a
    /// padded row computes exactly what it would alone. Returns the final
    /// normalised hidden states, (b, t, hidden).
    ///
    /// Long inputs run as consecutive blocks of positions through the cache
    /// (at most [`FORWARD_ROWS`] rows of activations at a time), which gives
    /// the same result: every intermediate then stays in cache instead of
    /// streaming through memory ten times per layer.
    pub fn forward(
        &self,
        ids: &[Vec<u32>],
        valid: &[Vec<bool>],
        cache: &mut Cache,
    ) -> Result<Tensor> {
        let b = ids.len();
        let t = ids.first().map_or(0, Vec::len);
        if b == 0 || t == 0 || ids.iter().any(|r| r.len() != t) || valid.len() != b {
            return Err(Error::Model(
                "forward needs rows of equal, non-zero length".into(),
            ));
        }
        if valid.iter().any(|r| r.len() != t) {
            return Err(Error::Model("one validity flag per token".into()));
        }
        // Checked before any block touches the cache.
        if let Some(&bad) = ids
            .iter()
            .flatten()
            .find(|&&id| id as usize >= self.cfg.vocab_size)
        {
            return Err(Error::Model(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        if !cache.valid.is_empty() && cache.valid.len() != b {
            return Err(Error::Model(
                "the cache holds another batch size; reset it first".into(),
            ));
        }
        let block = (FORWARD_ROWS / b).max(1);
        if t <= block {
            return self.forward_block(ids, valid, cache);
        }
        let mut outs = Vec::with_capacity(t.div_ceil(block));
        for s in (0..t).step_by(block) {
            let e = (s + block).min(t);
            let ids: Vec<Vec<u32>> = ids.iter().map(|r| r[s..e].to_vec()).collect();
            let valid: Vec<Vec<bool>> = valid.iter().map(|r| r[s..e].to_vec()).collect();
            outs.push(self.forward_block(&ids, &valid, cache)?);
        }
        Tensor::cat(&outs, 1).map_err(err)
    }

    /// [`Model::forward`] in one pass.
    fn forward_block(
        &self,
        ids: &[Vec<u32>],
        valid: &[Vec<bool>],
        cache: &mut Cache,
    ) -> Result<Tensor> {
        let b = ids.len();
        let t = ids.first().map_or(0, Vec::len);
        let past = cache.len();
        if cache.valid.is_empty() {
            cache.valid = vec![Vec::new(); b];
        }
        // Positions: real tokens seen before this one.
        let mut positions = Vec::with_capacity(b);
        for (row, v) in cache.valid.iter_mut().zip(valid) {
            let mut p = row.iter().filter(|&&x| x).count() as u32;
            let mut pos = Vec::with_capacity(t);
            for &ok in v {
                pos.push(p);
                if ok {
                    p += 1;
                }
            }
            row.extend_from_slice(v);
            positions.push(pos);
        }
        let run = || -> candle_core::Result<Tensor> {
            let flat: Vec<u32> = ids.iter().flatten().copied().collect();
            let (cos, sin) = self.rotary.cos_sin(&positions, &self.device, self.dtype)?;
            let mut x = match (&self.embed, &self.lm_head) {
                (Some(e), _) => e
                    .forward(&Tensor::from_vec(flat, (b, t), &self.device)?)?
                    .to_dtype(self.dtype)?,
                (None, Some(head @ (Proj::Packed(..) | Proj::KTiles(..)))) => {
                    let k = self.cfg.hidden_size;
                    let mut rows = Vec::with_capacity(flat.len() * k);
                    for &id in &flat {
                        rows.extend(head.row(id as usize)?);
                    }
                    Tensor::from_vec(rows, (b, t, k), &self.device)?.to_dtype(self.dtype)?
                }
                _ => candle_core::bail!("the model has no embedding table"),
            };
            for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
                let h = layer.attn.forward(
                    &layer.ln1.forward(&x)?,
                    &cos,
                    &sin,
                    slot,
                    cache.kind,
                    &cache.valid,
                    past,
                    self.score_budget,
                    cache.reserved,
                )?;
                x = (x + h)?;
                let h = layer.mlp.forward(&layer.ln2.forward(&x)?)?;
                x = (x + h)?;
            }
            self.norm.forward(&x)
        };
        // Decode (a few rows) is hundreds of short parallel loops: the
        // pool's workers poll for them throughout.
        kernels::on_pool(b * t <= kernels::GEMV_MAX_ROWS, run).map_err(err)
    }

    /// Logits (f32) of hidden states (…, hidden).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let head = self.lm_head.as_ref().ok_or_else(|| {
            Error::Model("this checkpoint has no lm_head (an embedding model?)".into())
        })?;
        let run = || {
            hidden
                .to_dtype(self.dtype)
                .and_then(|h| head.forward(&h))
                .and_then(|l| l.to_dtype(DType::F32))
        };
        kernels::on_pool(false, run).map_err(err)
    }

    /// Hidden state of the last position of every row, (b, hidden), as f32.
    pub fn last_hidden(hidden: &Tensor) -> Result<Tensor> {
        let t = hidden.dim(1).map_err(err)?;
        hidden
            .narrow(1, t - 1, 1)
            .and_then(|h| h.squeeze(1))
            .and_then(|h| h.to_dtype(DType::F32))
            .map_err(err)
    }
}

/// The rows `group` of `ids`, left-padded to one width, with the mask that
/// marks real tokens (what [`Model::forward`] takes for a batch).
pub fn left_padded(ids: &[Vec<u32>], group: &[usize]) -> (Vec<Vec<u32>>, Vec<Vec<bool>>) {
    let width = group.iter().map(|&i| ids[i].len()).max().unwrap_or(0);
    group
        .iter()
        .map(|&i| {
            let pad = width - ids[i].len();
            let mut row = vec![0u32; pad];
            row.extend_from_slice(&ids[i]);
            let mut valid = vec![false; pad];
            valid.extend(std::iter::repeat_n(true, ids[i].len()));
            (row, valid)
        })
        .unzip()
}

/// L2-normalises the rows of a (b, n) tensor.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()
        .and_then(|s| s.sum_keepdim(D::Minus1))
        .and_then(|s| s.sqrt())
        .and_then(|s| s.clamp(1e-12, f64::MAX))
        .map_err(err)?;
    x.broadcast_div(&norm).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};

    #[test]
    fn q8_0_projections_pack_fuse_and_match_the_dequantized_weights() {
        // Q4_0 and Q5_0 take the same path, re-encoded as Q8_0.
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0, GgmlDType::Q4_0] {
            packed_projection_matches(dtype);
        }
    }

    fn packed_projection_matches(dtype: GgmlDType) {
        let dev = Device::Cpu;
        let (k, n) = (96, 37);
        let quant = |seed: f64| {
            let w = (Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap() * seed).unwrap();
            let qt = QTensor::quantize(&w, dtype).unwrap();
            let dense = qt.dequantize(&dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
            let proj = Proj::Quant(
                QMatMul::QTensor(std::sync::Arc::new(qt)),
                Some(bias.clone()),
            );
            (proj, dense, bias)
        };
        let (a, wa, ba) = quant(1.0);
        let (b, wb, bb) = quant(0.5);
        let fused = Proj::fuse(&[&a, &b]).unwrap().expect("Q8_0 parts fuse");
        let single = a.packed().unwrap();
        assert!(matches!(fused, Proj::Packed(..)) && matches!(single, Proj::Packed(..)));
        let w = Tensor::cat(&[&wa, &wb], 0).unwrap();
        let bias = Tensor::cat(&[&ba, &bb], 0).unwrap();
        // Few rows (int8 activations) and many (bf16 or f32 panels).
        for m in [1usize, 3, 7] {
            let x = Tensor::randn(0f32, 1.0, (1, m, k), &dev).unwrap();
            for (proj, w, bias) in [(&fused, &w, &bias), (&single, &wa, &ba)] {
                let got = proj.forward(&x).unwrap();
                let want = x
                    .broadcast_matmul(&w.t().unwrap())
                    .unwrap()
                    .broadcast_add(bias)
                    .unwrap();
                assert_eq!(got.dims(), want.dims());
                let scale = want
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let diff = max_diff(&got, &want);
                assert!(diff < 2e-2 * scale, "{dtype:?} m={m}: {diff} of {scale}");
            }
        }
    }
    use crate::models::testing::{tiny_config, write_tiny};
    use crate::models::ModelFiles;

    fn tiny(model_type: &str, yarn: Option<f64>) -> Model {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path(), &tiny_config(model_type, yarn), true).unwrap();
        ModelFiles::from_dir(dir.path())
            .unwrap()
            .load(DType::F32, &Device::Cpu)
            .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    const PROMPT: [u32; 12] = [3, 17, 42, 8, 8, 61, 5, 30, 12, 9, 44, 2];

    #[test]
    fn incremental_decode_matches_full_forward() {
        for kind in ["qwen3", "qwen2"] {
            let m = tiny(kind, None);
            let mut cache = Cache::new(&m, DType::F32);
            let full = m
                .forward(&[PROMPT.to_vec()], &[vec![true; 12]], &mut cache)
                .unwrap();
            let full = m.logits(&full).unwrap();
            let mut cache = Cache::new(&m, DType::F32);
            let mut steps = Vec::new();
            for &id in &PROMPT {
                let h = m.forward(&[vec![id]], &[vec![true]], &mut cache).unwrap();
                steps.push(m.logits(&h).unwrap());
            }
            let steps = Tensor::cat(&steps, 1).unwrap();
            assert!(
                max_diff(&full, &steps) < 1e-4,
                "{kind}: {}",
                max_diff(&full, &steps)
            );
            assert_eq!(cache.len(), 12);
            cache.reset();
            assert!(cache.is_empty());
        }
    }

    #[test]
    fn cache_growth_keeps_earlier_keys() {
        // 300 tokens one at a time: the cache buffer grows past its first 256 rows.
        let m = tiny("qwen3", None);
        let ids: Vec<u32> = (0..300u32).map(|i| (i * 7 + 3) % 64).collect();
        let mut cache = Cache::new(&m, DType::F32);
        let full = m
            .forward(std::slice::from_ref(&ids), &[vec![true; 300]], &mut cache)
            .unwrap();
        let mut cache = Cache::new(&m, DType::F32);
        let last = one_at_a_time(&m, &ids, &mut cache);
        assert!(max_diff(&full.narrow(1, 299, 1).unwrap(), &last) < 1e-4);
        assert_eq!(cache.len(), 300);
        // Reserved room: allocated once, at the size asked for, and the
        // same results.
        let mut cache = Cache::new(&m, DType::F32);
        cache.reserve(1000);
        let last = one_at_a_time(&m, &ids, &mut cache);
        assert!(max_diff(&full.narrow(1, 299, 1).unwrap(), &last) < 1e-4);
        let caps: Vec<usize> = cache
            .layers
            .iter()
            .map(|l| l.as_ref().unwrap().k.dim(2).unwrap())
            .collect();
        assert!(caps.iter().all(|&c| c == 1000), "{caps:?}");
    }

    /// `ids` decoded one token at a time through `cache`: the last hidden
    /// state.
    fn one_at_a_time(m: &Model, ids: &[u32], cache: &mut Cache) -> Tensor {
        let mut last = None;
        for &id in ids {
            last = Some(m.forward(&[vec![id]], &[vec![true]], cache).unwrap());
        }
        last.expect("at least one token")
    }

    #[test]
    fn chunked_prefill_matches_one_shot() {
        let mut m = tiny("qwen3", None);
        let mut cache = Cache::new(&m, DType::F32);
        let one = m
            .forward(&[PROMPT.to_vec()], &[vec![true; 12]], &mut cache)
            .unwrap();
        // Prompt in pieces through the cache.
        let mut cache = Cache::new(&m, DType::F32);
        let mut parts = Vec::new();
        for piece in PROMPT.chunks(5) {
            parts.push(
                m.forward(&[piece.to_vec()], &[vec![true; piece.len()]], &mut cache)
                    .unwrap(),
            );
        }
        assert!(max_diff(&one, &Tensor::cat(&parts, 1).unwrap()) < 1e-4);
        // Attention one query row at a time (a tiny score budget).
        m.set_attention_budget(1);
        let mut cache = Cache::new(&m, DType::F32);
        let blocked = m
            .forward(&[PROMPT.to_vec()], &[vec![true; 12]], &mut cache)
            .unwrap();
        assert!(max_diff(&one, &blocked) < 1e-4);
    }

    #[test]
    fn bf16_weights_run_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path(), &tiny_config("qwen3", None), true).unwrap();
        let m = ModelFiles::from_dir(dir.path())
            .unwrap()
            .load(DType::BF16, &Device::Cpu)
            .unwrap();
        let mut cache = Cache::new(&m, DType::BF16);
        let h = m
            .forward(&[PROMPT.to_vec()], &[vec![true; 12]], &mut cache)
            .unwrap();
        // Pooled (f32) hidden states go through the bf16 head.
        let logits = m.logits(&Model::last_hidden(&h).unwrap()).unwrap();
        assert_eq!(logits.dims(), &[1, 64]);
    }

    #[test]
    fn bf16_cache_stays_close() {
        let m = tiny("qwen3", None);
        let mut c32 = Cache::new(&m, DType::F32);
        let mut c16 = Cache::new(&m, DType::BF16);
        let a = m
            .forward(&[PROMPT.to_vec()], &[vec![true; 12]], &mut c32)
            .unwrap();
        let b = m
            .forward(&[PROMPT.to_vec()], &[vec![true; 12]], &mut c16)
            .unwrap();
        assert!(max_diff(&a, &b) < 0.1);
    }

    /// The int8 cache: close to the f32 one, the same whether the prompt
    /// goes in at once or a token at a time (rows are quantized one by
    /// one, so both paths store the same cache), across a buffer growth.
    #[test]
    fn int8_cache_tracks_f32_and_decodes_consistently() {
        let m = tiny("qwen3", None);
        let ids: Vec<u32> = (0..300u32).map(|i| (i * 7 + 3) % 64).collect();
        let valid = [vec![true; 300]];
        let mut c32 = Cache::new(&m, DType::F32);
        let a = m
            .forward(std::slice::from_ref(&ids), &valid, &mut c32)
            .unwrap();
        let mut c8 = Cache::new(&m, KvType::Q8);
        let b = m
            .forward(std::slice::from_ref(&ids), &valid, &mut c8)
            .unwrap();
        let diff = max_diff(&a, &b);
        assert!(diff > 0.0 && diff < 0.05, "int8 against f32: {diff}");
        let mut c8 = Cache::new(&m, KvType::Q8);
        let last = one_at_a_time(&m, &ids, &mut c8);
        assert!(max_diff(&b.narrow(1, 299, 1).unwrap(), &last) < 1e-4);
        assert_eq!(c8.len(), 300);
        use clap::ValueEnum;
        assert_eq!(KvType::from_str("q8_0", true), Ok(KvType::Q8));
        assert_eq!(
            KvType::from_str("BF16", true),
            Ok(KvType::Float(DType::BF16))
        );
        assert!(KvType::from_str("q4", true).is_err());
    }

    /// The int8 cache scales blocks of 32: an outlier channel coarsens
    /// its own block only.
    #[test]
    fn int8_rows_keep_an_outlier_to_its_block() {
        let mut vals: Vec<f32> = (0..128)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        vals[3] = 50.0;
        let x = Tensor::from_vec(vals.clone(), (1, 1, 2, 64), &Device::Cpu).unwrap();
        let (bits, scales) = quantize(&x).unwrap();
        assert_eq!(scales.dims(), &[1, 1, 2, 2]);
        let bits: Vec<u8> = bits.flatten_all().unwrap().to_vec1().unwrap();
        let scales: Vec<f32> = scales.flatten_all().unwrap().to_vec1().unwrap();
        for (block, chunk) in vals.chunks(32).enumerate() {
            let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (i, &v) in chunk.iter().enumerate() {
                let back = f32::from(bits[block * 32 + i] as i8) * scales[block];
                assert!((back - v).abs() <= amax / 254.0 + 1e-6, "block {block}");
            }
            // Only the outlier's block has its coarse scale.
            assert_eq!(scales[block] > 0.1, block == 0, "block {block}");
        }
    }

    #[test]
    fn yarn_positions_past_32k_are_finite_and_distinct() {
        let m = tiny("qwen3", Some(256.0)); // 256 trained positions x 256
        let rot = &m.rotary;
        assert!(rot.mscale > 1.0);
        let (cos, _) = rot
            .cos_sin(&[vec![5, 40_000, 65_000]], &Device::Cpu, DType::F32)
            .unwrap();
        let v: Vec<Vec<f32>> = cos.squeeze(0).unwrap().to_vec2().unwrap();
        assert!(v.iter().flatten().all(|x| x.is_finite()));
        assert_ne!(v[1], v[2]);
        // A token far into a long context still gives finite hidden states.
        let mut cache = Cache::new(&m, DType::F32);
        cache.valid = vec![vec![true; 40_000]];
        let fake_past = Tensor::zeros((1, 2, 40_000, 8), DType::F32, &Device::Cpu).unwrap();
        for slot in cache.layers.iter_mut() {
            KvSlot::append(slot, &fake_past, &fake_past, false, 0).unwrap();
        }
        let h = m.forward(&[vec![7]], &[vec![true]], &mut cache).unwrap();
        let h: Vec<f32> = h.flatten_all().unwrap().to_vec1().unwrap();
        assert!(h.iter().all(|x| x.is_finite()));
    }

    /// Logits against Hugging Face transformers on the same tiny random
    /// weights (tests/fixtures/qwen, made by gen_reference.py).
    #[test]
    fn matches_transformers() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen");
        for name in ["qwen3", "qwen2", "qwen3-yarn"] {
            let dir = root.join(name);
            let m = ModelFiles::from_dir(&dir)
                .unwrap()
                .load(DType::F32, &Device::Cpu)
                .unwrap();
            let expected: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                    .unwrap();
            let ids: Vec<u32> = expected["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let want: Vec<Vec<f32>> = serde_json::from_value(expected["logits"].clone()).unwrap();
            let mut cache = Cache::new(&m, DType::F32);
            let h = m
                .forward(
                    std::slice::from_ref(&ids),
                    &[vec![true; ids.len()]],
                    &mut cache,
                )
                .unwrap();
            let got: Vec<Vec<f32>> = m.logits(&h).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
            assert_eq!(
                (got.len(), got[0].len()),
                (want.len(), want[0].len()),
                "{name}"
            );
            assert_eq!(got.len(), ids.len());
            let diff = got
                .iter()
                .flatten()
                .zip(want.iter().flatten())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                diff <= 1e-4,
                "{name}: max abs diff {diff} against transformers"
            );
        }
    }

    /// GGUF with quantized matrices gives logits close to the f32 model's.
    #[test]
    fn gguf_quantized_logits_track_f32() {
        use candle_core::quantized::GgmlDType;
        // Width 256 so K-quant blocks (256 values) fit the rows.
        let cfg_text = tiny_config("qwen3", None)
            .replace(r#""hidden_size":32"#, r#""hidden_size":256"#)
            .replace(r#""intermediate_size":64"#, r#""intermediate_size":256"#)
            .replace(r#""head_dim":8"#, r#""head_dim":64"#);
        let dir = tempfile::tempdir().unwrap();
        write_tiny(dir.path(), &cfg_text, true).unwrap();
        let files = ModelFiles::from_dir(dir.path()).unwrap();
        let dense = files.load(DType::F32, &Device::Cpu).unwrap();
        let tensors =
            candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu)
                .unwrap();
        let cfg = files.config().unwrap();
        let run = |m: &Model| {
            let mut cache = Cache::new(m, DType::F32);
            let h = m
                .forward(&[PROMPT.to_vec()], &[vec![true; 12]], &mut cache)
                .unwrap();
            m.logits(&h)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        };
        let want = run(&dense);
        // 4-bit on uniform random weights (the worst case for it) stays near 0.9.
        for (dtype, min_cos) in [(GgmlDType::Q8_0, 0.999), (GgmlDType::Q4K, 0.85)] {
            let path = dir.path().join(format!("tiny-{dtype:?}.gguf"));
            crate::models::weights::write_gguf(&path, &cfg, &tensors, dtype).unwrap();
            let q = crate::models::load_gguf(&path, &Device::Cpu).unwrap();
            assert_eq!(q.config().num_hidden_layers, 2);
            let mut got = run(&q);
            // Decode too: token by token (int8 products) through the
            // default cache (int8 blocks where the CPU has AVX-512).
            let mut cache = Cache::new(&q, q.cache_dtype());
            let last = one_at_a_time(&q, &PROMPT, &mut cache);
            let last: Vec<f32> = q
                .logits(&last)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            got.push(last);
            let mut want = want.clone();
            want.push(want[11].clone());
            for (a, b) in got.iter().zip(&want) {
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
                let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!(
                    dot / (na * nb) >= min_cos,
                    "{dtype:?}: cosine {}",
                    dot / (na * nb)
                );
            }
        }
        // Not a GGUF file: a clear error.
        let err = crate::models::load_gguf(&dir.path().join("model.safetensors"), &Device::Cpu);
        assert!(err.is_err_and(|e| e.to_string().contains("GGUF")));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let m = tiny("qwen3", None);
        let mut cache = Cache::new(&m, DType::F32);
        assert!(m.forward(&[vec![999]], &[vec![true]], &mut cache).is_err());
        assert!(m.forward(&[vec![]], &[vec![]], &mut cache).is_err());
        assert!(m
            .forward(
                &[vec![1, 2], vec![3]],
                &[vec![true; 2], vec![true]],
                &mut cache
            )
            .is_err());
    }
}
