//! The model configuration, mirroring the fields of a Qwen `config.json`.

use serde::Deserialize;

use crate::{Error, Result};

/// `rope_scaling` of `config.json`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RopeScaling {
    /// `"yarn"` (also accepted under the older key `type`).
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Context extension factor (4.0 takes Qwen3 from 32,768 to 131,072).
    pub factor: f64,
    /// The context the model was trained at.
    pub original_max_position_embeddings: Option<usize>,
    /// YaRN: rotations above which dimensions are extrapolated.
    pub beta_fast: Option<f64>,
    /// YaRN: rotations below which dimensions are interpolated.
    pub beta_slow: Option<f64>,
    /// Attention temperature; default 0.1 ln(factor) + 1.
    pub attention_factor: Option<f64>,
}

/// `rope_parameters` of `config.json`, as transformers 5 writes it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RopeParameters {
    /// RoPE base.
    pub rope_theta: Option<f64>,
    /// `"default"` or `"yarn"`.
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
    /// As in [`RopeScaling`].
    pub factor: Option<f64>,
    /// As in [`RopeScaling`].
    pub original_max_position_embeddings: Option<usize>,
    /// As in [`RopeScaling`].
    pub beta_fast: Option<f64>,
    /// As in [`RopeScaling`].
    pub beta_slow: Option<f64>,
    /// As in [`RopeScaling`].
    pub attention_factor: Option<f64>,
}

fn default_rope_type() -> String {
    "default".into()
}

/// A Qwen2/Qwen2.5/Qwen3 decoder configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Config {
    /// `"qwen3"` or `"qwen2"`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Per-head width (Qwen3 states it; Qwen2 derives it).
    pub head_dim: Option<usize>,
    /// Longest context the config declares.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Whether the output projection shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (Qwen2 has them; Qwen3 states false).
    pub attention_bias: Option<bool>,
    /// RoPE scaling (YaRN).
    pub rope_scaling: Option<RopeScaling>,
    /// The newer form (transformers 5): theta and scaling in one object.
    pub rope_parameters: Option<RopeParameters>,
    /// Activation; only SiLU is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Token ids that end generation.
    pub eos_token_id: Option<serde_json::Value>,
}

fn default_model_type() -> String {
    "qwen3".into()
}
fn default_max_pos() -> usize {
    32_768
}
fn default_theta() -> f64 {
    1_000_000.0
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

impl Config {
    /// A Qwen3 model's shapes by name, for random-weight benchmarks:
    /// `qwen3-0.6b` (also `qwen3-embedding-0.6b`), `qwen3-4b`, or `tiny`
    /// (Qwen3's layout at a toy size: its vocabulary and heads of 128, for
    /// checking a benchmark itself in seconds).
    pub fn qwen3_preset(name: &str) -> Result<Config> {
        let (hidden, inter, layers, heads, kv) = match name {
            "qwen3-0.6b" | "qwen3-embedding-0.6b" => (1024, 3072, 28, 16, 8),
            "qwen3-4b" => (2560, 9728, 36, 32, 8),
            "tiny" => (64, 128, 2, 4, 2),
            other => {
                return Err(Error::Config(format!(
                    "unknown preset {other:?} (qwen3-embedding-0.6b, qwen3-0.6b, qwen3-4b, or tiny to check the benchmark)"
                )))
            }
        };
        Config::from_json(&format!(
            r#"{{"model_type":"qwen3","vocab_size":151936,"hidden_size":{hidden},"intermediate_size":{inter},
            "num_hidden_layers":{layers},"num_attention_heads":{heads},"num_key_value_heads":{kv},"head_dim":128,
            "max_position_embeddings":40960,"rope_theta":1000000,"rms_norm_eps":1e-6,"tie_word_embeddings":true}}"#
        ))
    }

    /// Parses and validates `config.json` text; unsupported settings fail
    /// here, not in the middle of a run.
    pub fn from_json(text: &str) -> Result<Config> {
        let mut cfg: Config = serde_json::from_str(text).map_err(Error::model("config.json"))?;
        if let Some(p) = cfg.rope_parameters.take() {
            if let Some(theta) = p.rope_theta {
                cfg.rope_theta = theta;
            }
            match p.rope_type.as_str() {
                "default" => {}
                _ => {
                    cfg.rope_scaling = Some(RopeScaling {
                        rope_type: p.rope_type,
                        factor: p.factor.unwrap_or(1.0),
                        original_max_position_embeddings: p.original_max_position_embeddings,
                        beta_fast: p.beta_fast,
                        beta_slow: p.beta_slow,
                        attention_factor: p.attention_factor,
                    })
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Model(format!("config.json: {m}")));
        if !matches!(self.model_type.as_str(), "qwen3" | "qwen2") {
            return bad(format!(
                "model_type {:?} is not a Qwen2/Qwen3 decoder",
                self.model_type
            ));
        }
        if self.hidden_act != "silu" {
            return bad(format!(
                "hidden_act {:?} is not supported (only silu)",
                self.hidden_act
            ));
        }
        if self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "{} attention heads cannot be grouped over {} key/value heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        if let Some(s) = &self.rope_scaling {
            if s.rope_type != "yarn" {
                return bad(format!(
                    "rope_scaling type {:?} is not supported (only yarn)",
                    s.rope_type
                ));
            }
            if s.factor < 1.0 {
                return bad(format!(
                    "rope_scaling factor {} must be at least 1",
                    s.factor
                ));
            }
        }
        Ok(())
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// True for the Qwen3 layout (q/k RMSNorm, no q/k/v bias by default).
    pub fn is_qwen3(&self) -> bool {
        self.model_type == "qwen3"
    }

    /// Whether q/k/v projections carry biases.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(!self.is_qwen3())
    }

    /// The context length the model supports (with RoPE scaling applied).
    pub fn context_length(&self) -> usize {
        match &self.rope_scaling {
            Some(s) => {
                let orig = s
                    .original_max_position_embeddings
                    .unwrap_or(self.max_position_embeddings);
                ((orig as f64) * s.factor) as usize
            }
            None => self.max_position_embeddings,
        }
    }

    /// Token ids that end generation, from `eos_token_id` (a number or a list).
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN3_0_6B: &str = r#"{"architectures":["Qwen3ForCausalLM"],"attention_bias":false,"bos_token_id":151643,
      "eos_token_id":151645,"head_dim":128,"hidden_act":"silu","hidden_size":1024,"intermediate_size":3072,
      "max_position_embeddings":40960,"model_type":"qwen3","num_attention_heads":16,"num_hidden_layers":28,
      "num_key_value_heads":8,"rms_norm_eps":1e-06,"rope_scaling":null,"rope_theta":1000000,
      "tie_word_embeddings":true,"torch_dtype":"bfloat16","vocab_size":151936}"#;

    #[test]
    fn reads_real_config() {
        let c = Config::from_json(QWEN3_0_6B).unwrap();
        assert_eq!(c.head_dim(), 128);
        assert!(c.is_qwen3() && !c.qkv_bias() && c.tie_word_embeddings);
        assert_eq!(c.eos_ids(), [151645]);
    }

    #[test]
    fn yarn_extends_context() {
        let text = QWEN3_0_6B.replace(
            r#""rope_scaling":null"#,
            r#""rope_scaling":{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}"#,
        );
        assert_eq!(Config::from_json(&text).unwrap().context_length(), 131_072);
    }

    #[test]
    fn unsupported_settings_fail_at_load() {
        let text = QWEN3_0_6B.replace(r#""hidden_act":"silu""#, r#""hidden_act":"gelu""#);
        assert!(Config::from_json(&text)
            .unwrap_err()
            .to_string()
            .contains("gelu"));
        let text = QWEN3_0_6B.replace(r#""num_key_value_heads":8"#, r#""num_key_value_heads":3"#);
        assert!(Config::from_json(&text).is_err());
        assert!(Config::from_json("{").is_err());
    }
}
