//! Where a model's weights come from: the loader seam.
//!
//! [`Weights`] hands the model tensors by their Hugging Face names (without
//! the `model.` prefix). [`Safetensors`] reads checkpoints as published
//! (with or without the prefix); [`Gguf`] reads llama.cpp's GGUF files,
//! mapping names (`blk.0.attn_q.weight`, …), keeping matrices quantized
//! (Q8_0, Q4_K, …) for [`QMatMul`] and dequantizing the rest.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::config::Config;
use super::proj::Proj;
use crate::{Error, Result};

/// A source of named weights.
pub trait Weights {
    /// A dense tensor of the given shape.
    fn tensor(&self, name: &str, shape: &[usize]) -> candle_core::Result<Tensor>;
    /// A projection `{name}.weight` (out × in), with `{name}.bias` if `bias`.
    fn proj(&self, name: &str, inp: usize, out: usize, bias: bool) -> candle_core::Result<Proj>;
    /// Whether a tensor exists.
    fn contains(&self, name: &str) -> bool;
    /// Activation dtype.
    fn dtype(&self) -> DType;
    /// Whether projections come quantized (a tied head is then built with
    /// [`Weights::proj`] on the embedding table, kept quantized too).
    fn quantized(&self) -> bool {
        false
    }
    /// Device.
    fn device(&self) -> &Device;
}

/// Safetensors checkpoints through candle's `VarBuilder`.
pub struct Safetensors<'a> {
    vb: VarBuilder<'a>,
}

impl<'a> Safetensors<'a> {
    /// Wraps a var builder over the checkpoint, finding the body prefix.
    pub fn new(vb: VarBuilder<'a>) -> Result<Safetensors<'a>> {
        if vb.contains_tensor("model.embed_tokens.weight")
            || vb.contains_tensor("embed_tokens.weight")
        {
            Ok(Safetensors { vb })
        } else {
            Err(Error::Model(
                "the weights have no embed_tokens.weight (with or without the model. prefix): not a Qwen checkpoint".into(),
            ))
        }
    }

    fn path(&self, name: &str) -> String {
        let prefixed = self.vb.contains_tensor("model.embed_tokens.weight");
        if prefixed && !name.starts_with("lm_head") {
            format!("model.{name}")
        } else {
            name.to_string()
        }
    }
}

impl Weights for Safetensors<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> candle_core::Result<Tensor> {
        self.vb.get(shape, &self.path(name))
    }
    fn proj(&self, name: &str, inp: usize, out: usize, bias: bool) -> candle_core::Result<Proj> {
        let w = self
            .vb
            .get((out, inp), &self.path(&format!("{name}.weight")))?;
        let b = if bias {
            Some(self.vb.get(out, &self.path(&format!("{name}.bias")))?)
        } else {
            None
        };
        Ok(Proj::Dense(Linear::new(w, b)))
    }
    fn contains(&self, name: &str) -> bool {
        self.vb.contains_tensor(&self.path(name))
    }
    fn dtype(&self) -> DType {
        self.vb.dtype()
    }
    fn device(&self) -> &Device {
        self.vb.device()
    }
}

/// Qwen2's (and Qwen3's) pre-tokenizer split, as its tokenizer.json has it.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A GGUF file (llama.cpp layout) for Qwen2/Qwen3.
pub struct Gguf {
    content: gguf_file::Content,
    file: std::cell::RefCell<File>,
    device: Device,
}

/// Hugging Face name -> GGUF name.
fn gguf_name(name: &str) -> String {
    const MAP: [(&str, &str); 14] = [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("embed_tokens", "token_embd"),
        ("lm_head", "output"),
        ("norm", "output_norm"),
    ];
    let mut n = name.replacen("layers.", "blk.", 1);
    for (hf, gg) in MAP {
        if n.contains(hf) {
            n = n.replacen(hf, gg, 1);
            break;
        }
    }
    n
}

impl Gguf {
    /// Opens a GGUF file and reads its header.
    pub fn open(path: &Path, device: &Device) -> Result<Gguf> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| {
            Error::model(format!("{}: not a readable GGUF file", path.display()))(e)
        })?;
        Ok(Gguf {
            content,
            file: std::cell::RefCell::new(file),
            device: device.clone(),
        })
    }

    fn qtensor(&self, name: &str) -> candle_core::Result<candle_core::quantized::QTensor> {
        self.content
            .tensor(&mut *self.file.borrow_mut(), &gguf_name(name), &self.device)
    }

    /// The tokenizer llama.cpp embeds in the file (`tokenizer.ggml.*`), as
    /// a Hugging Face tokenizer: byte-level BPE with Qwen2's pre-tokenizer,
    /// NFC, and the control and user-defined tokens as added tokens.
    /// `None` when the file has no tokenizer or one of another kind.
    pub fn tokenizer(&self) -> Result<Option<tokenizers::Tokenizer>> {
        use gguf_file::Value;
        let md = &self.content.metadata;
        let text = |k: &str| {
            md.get(k)
                .and_then(|v| v.to_string().ok())
                .map(String::as_str)
        };
        if text("tokenizer.ggml.model") != Some("gpt2")
            || !matches!(text("tokenizer.ggml.pre"), None | Some("qwen2"))
        {
            return Ok(None);
        }
        let strings = |k: &str| -> Vec<&str> {
            match md.get(k) {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.to_string().ok().map(String::as_str))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let tokens = strings("tokenizer.ggml.tokens");
        let merges: Vec<[&str; 2]> = strings("tokenizer.ggml.merges")
            .into_iter()
            .filter_map(|m| m.split_once(' ').map(|(a, b)| [a, b]))
            .collect();
        if tokens.is_empty() || merges.is_empty() {
            return Ok(None);
        }
        let types: Vec<i64> = match md.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.to_i32().map(i64::from).unwrap_or(1))
                .collect(),
            _ => Vec::new(),
        };
        // 3 = control (<|im_end|>), 4 = user-defined (<think>).
        let added: Vec<serde_json::Value> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(types.get(*i), Some(3 | 4)))
            .map(|(i, t)| {
                serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": types[i] == 3})
            })
            .collect();
        let vocab: serde_json::Map<String, serde_json::Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), serde_json::json!(i)))
            .collect();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            ]},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges},
        });
        let tok: tokenizers::Tokenizer = json
            .to_string()
            .parse()
            .map_err(Error::tokenizer("GGUF tokenizer"))?;
        Ok(Some(tok))
    }

    /// The model configuration from the GGUF metadata.
    pub fn config(&self) -> Result<Config> {
        let md = &self.content.metadata;
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .ok_or_else(|| Error::Model("GGUF: no general.architecture".into()))?;
        let get = |k: &str| md.get(&format!("{arch}.{k}"));
        let num = |k: &str| -> Result<usize> {
            get(k)
                .and_then(|v| v.to_u64().ok())
                .map(|v| v as usize)
                .ok_or_else(|| Error::Model(format!("GGUF: no {arch}.{k}")))
        };
        let float = |k: &str| get(k).and_then(|v| v.to_f32().ok()).map(f64::from);
        let vocab = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or_else(|| Error::Model("GGUF: no token_embd.weight".into()))?;
        let heads = num("attention.head_count")?;
        let hidden = num("embedding_length")?;
        let mut json = serde_json::json!({
            "model_type": arch,
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": num("feed_forward_length")?,
            "num_hidden_layers": num("block_count")?,
            "num_attention_heads": heads,
            "num_key_value_heads": num("attention.head_count_kv").unwrap_or(heads),
            "head_dim": num("attention.key_length").unwrap_or(hidden / heads.max(1)),
            "max_position_embeddings": num("context_length").unwrap_or(32_768),
            "rope_theta": float("rope.freq_base").unwrap_or(1_000_000.0),
            "rms_norm_eps": float("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            "tie_word_embeddings": !self.content.tensor_infos.contains_key("output.weight"),
            "eos_token_id": md.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok()),
        });
        if get("rope.scaling.type")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            == Some("yarn")
        {
            json["rope_scaling"] = serde_json::json!({
                "rope_type": "yarn",
                "factor": float("rope.scaling.factor").unwrap_or(1.0),
                "original_max_position_embeddings": num("rope.scaling.original_context_length").ok(),
            });
        }
        Config::from_json(&json.to_string())
    }
}

impl Weights for Gguf {
    fn tensor(&self, name: &str, shape: &[usize]) -> candle_core::Result<Tensor> {
        let t = self.qtensor(name)?.dequantize(&self.device)?;
        if t.dims() != shape {
            candle_core::bail!("{name}: shape {:?}, expected {shape:?}", t.dims());
        }
        Ok(t)
    }
    fn proj(&self, name: &str, inp: usize, out: usize, bias: bool) -> candle_core::Result<Proj> {
        let q = self.qtensor(&format!("{name}.weight"))?;
        if q.shape().dims() != [out, inp] {
            candle_core::bail!(
                "{name}: shape {:?}, expected {:?}",
                q.shape().dims(),
                [out, inp]
            );
        }
        let b = if bias {
            Some(self.tensor(&format!("{name}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Proj::Quant(QMatMul::from_qtensor(q)?, b))
    }
    fn contains(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(&gguf_name(name))
    }
    fn dtype(&self) -> DType {
        DType::F32
    }
    fn quantized(&self) -> bool {
        true
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

/// Writes a GGUF file from Hugging Face-named tensors and a config (for
/// tests and benchmarks): matrices quantized to `dtype`, vectors as f32.
pub fn write_gguf(
    path: &Path,
    cfg: &Config,
    tensors: &HashMap<String, Tensor>,
    dtype: candle_core::quantized::GgmlDType,
) -> Result<()> {
    use candle_core::quantized::{GgmlDType, QTensor};
    use gguf_file::Value;
    let arch = cfg.model_type.clone();
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.clone())),
        (
            format!("{arch}.embedding_length"),
            Value::U32(cfg.hidden_size as u32),
        ),
        (
            format!("{arch}.feed_forward_length"),
            Value::U32(cfg.intermediate_size as u32),
        ),
        (
            format!("{arch}.block_count"),
            Value::U32(cfg.num_hidden_layers as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            Value::U32(cfg.num_attention_heads as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            Value::U32(cfg.num_key_value_heads as u32),
        ),
        (
            format!("{arch}.attention.key_length"),
            Value::U32(cfg.head_dim() as u32),
        ),
        (
            format!("{arch}.context_length"),
            Value::U32(cfg.max_position_embeddings as u32),
        ),
        (
            format!("{arch}.rope.freq_base"),
            Value::F32(cfg.rope_theta as f32),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
    ];
    if let Some(&eos) = cfg.eos_ids().first() {
        md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)));
    }
    let err = |e: candle_core::Error| Error::model_lib(e);
    let mut qs: Vec<(String, QTensor)> = Vec::new();
    for (name, t) in tensors {
        let bare = name.strip_prefix("model.").unwrap_or(name);
        let q = if t.rank() == 2 && t.dim(1).map_err(err)? % dtype.block_size() == 0 {
            QTensor::quantize(t, dtype)
        } else {
            QTensor::quantize(t, GgmlDType::F32)
        }
        .map_err(err)?;
        qs.push((gguf_name(bare), q));
    }
    let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qs.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &md_refs, &t_refs).map_err(err)
}

/// Random weights of any shape, generated on request: for benchmarks in a
/// real model's shapes without its files (speed does not depend on values).
pub struct Random {
    dtype: DType,
    device: Device,
    quant: Option<candle_core::quantized::GgmlDType>,
}

impl Random {
    /// Random weights of `dtype` on `device`.
    pub fn new(dtype: DType, device: &Device) -> Random {
        Random {
            dtype,
            device: device.clone(),
            quant: None,
        }
    }
    /// Random weights with projections quantized to `q` (as a GGUF file
    /// would hold them) and f32 elsewhere.
    pub fn quantized(q: candle_core::quantized::GgmlDType, device: &Device) -> Random {
        Random {
            dtype: DType::F32,
            device: device.clone(),
            quant: Some(q),
        }
    }
}

impl Weights for Random {
    fn tensor(&self, name: &str, shape: &[usize]) -> candle_core::Result<Tensor> {
        let (lo, hi) = if name.ends_with("norm.weight") {
            (0.9f32, 1.1f32)
        } else {
            (-0.05, 0.05)
        };
        Tensor::rand(lo, hi, shape, &self.device)?.to_dtype(self.dtype)
    }
    fn proj(&self, name: &str, inp: usize, out: usize, bias: bool) -> candle_core::Result<Proj> {
        let w = self.tensor(&format!("{name}.weight"), &[out, inp])?;
        let b = if bias {
            Some(self.tensor(&format!("{name}.bias"), &[out])?)
        } else {
            None
        };
        match self.quant {
            Some(q) => {
                let qt = candle_core::quantized::QTensor::quantize(&w, q)?;
                Ok(Proj::Quant(QMatMul::from_qtensor(qt)?, b))
            }
            None => Ok(Proj::Dense(Linear::new(w, b))),
        }
    }
    fn contains(&self, _name: &str) -> bool {
        false
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn quantized(&self) -> bool {
        self.quant.is_some()
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real Qwen3 tokenizer, written into a GGUF file the way llama.cpp
    /// writes it, reads back as the same tokenizer.
    #[test]
    fn gguf_embedded_tokenizer_matches_tokenizer_json() {
        use gguf_file::Value;
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpora/models/qwen3-tokenizer/tokenizer.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "no Qwen3 tokenizer.json at {}: run corpora/fetch-qwen-tokenizer.sh (.ci/run does)",
                path.display()
            )
        });
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut by_id: std::collections::BTreeMap<u64, (String, i32)> = v["model"]["vocab"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(t, id)| (id.as_u64().unwrap(), (t.clone(), 1)))
            .collect();
        for a in v["added_tokens"].as_array().unwrap() {
            let kind = if a["special"].as_bool().unwrap() {
                3
            } else {
                4
            };
            by_id.insert(
                a["id"].as_u64().unwrap(),
                (a["content"].as_str().unwrap().into(), kind),
            );
        }
        let last = *by_id.keys().last().unwrap();
        let (tokens, types): (Vec<Value>, Vec<Value>) = (0..=last)
            .map(|i| {
                let (t, k) = by_id.get(&i).cloned().unwrap_or((format!("[PAD{i}]"), 5));
                (Value::String(t), Value::I32(k))
            })
            .unzip();
        let merges: Vec<Value> = v["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let m = m.as_array().unwrap();
                Value::String(format!(
                    "{} {}",
                    m[0].as_str().unwrap(),
                    m[1].as_str().unwrap()
                ))
            })
            .collect();
        let md = [
            ("general.architecture", Value::String("qwen3".into())),
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("qwen2".into())),
            ("tokenizer.ggml.tokens", Value::Array(tokens)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.merges", Value::Array(merges)),
        ];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.gguf");
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(&mut File::create(&file).unwrap(), &md_refs, &[]).unwrap();
        let from_gguf = Gguf::open(&file, &Device::Cpu)
            .unwrap()
            .tokenizer()
            .unwrap()
            .unwrap();
        let real = tokenizers::Tokenizer::from_file(&path).unwrap();
        for sample in [
            "<|im_start|>user\nWhat did the board decide about the Osaka warehouse?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            "第3回 企画会議 議事録: 予算案は11月に決まる。关于年度报告的通知",
            "  indented\tcode = x[12345] + 'it's  ok'\n\n\n  ",
            "Ｆｕｌｌ-width ｶﾀｶﾅ and ﬁ ligatures: café, naïve",
        ] {
            let a = from_gguf.encode(sample, false).unwrap();
            let b = real.encode(sample, false).unwrap();
            assert_eq!(a.get_ids(), b.get_ids(), "{sample:?}");
            assert_eq!(from_gguf.decode(a.get_ids(), false).unwrap(), real.decode(b.get_ids(), false).unwrap());
        }
        // A file without a tokenizer says so with None.
        let bare = dir.path().join("bare.gguf");
        let md_refs: Vec<(&str, &Value)> = vec![("general.architecture", &md[0].1)];
        gguf_file::write(&mut File::create(&bare).unwrap(), &md_refs, &[]).unwrap();
        assert!(Gguf::open(&bare, &Device::Cpu)
            .unwrap()
            .tokenizer()
            .unwrap()
            .is_none());
    }

    #[test]
    fn names_map_to_llama_cpp_layout() {
        assert_eq!(
            gguf_name("layers.3.self_attn.q_proj.weight"),
            "blk.3.attn_q.weight"
        );
        assert_eq!(
            gguf_name("layers.0.self_attn.q_norm.weight"),
            "blk.0.attn_q_norm.weight"
        );
        assert_eq!(
            gguf_name("layers.1.post_attention_layernorm.weight"),
            "blk.1.ffn_norm.weight"
        );
        assert_eq!(gguf_name("embed_tokens.weight"), "token_embd.weight");
        assert_eq!(gguf_name("norm.weight"), "output_norm.weight");
        assert_eq!(gguf_name("lm_head.weight"), "output.weight");
    }
}
