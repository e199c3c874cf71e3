//! Tiny random-weight Qwen checkpoints with the real tensor names, written
//! by the tests themselves (public so integration tests can use it too).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::rng::Rng;

/// A tiny config.json: 2 layers, 4 query heads over 2 key/value heads.
pub fn tiny_config(model_type: &str, yarn_factor: Option<f64>) -> String {
    tiny_config_with_vocab(model_type, yarn_factor, 64)
}

/// [`tiny_config`] with a vocabulary of `vocab` tokens (151,936 for Qwen's tokenizer).
pub fn tiny_config_with_vocab(model_type: &str, yarn_factor: Option<f64>, vocab: usize) -> String {
    let qwen3 = model_type == "qwen3";
    let scaling = match yarn_factor {
        Some(f) => {
            format!(r#"{{"rope_type":"yarn","factor":{f},"original_max_position_embeddings":256}}"#)
        }
        None => "null".into(),
    };
    format!(
        r#"{{"model_type":"{model_type}","vocab_size":{vocab},"hidden_size":32,"intermediate_size":64,
        "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,{}
        "max_position_embeddings":256,"rope_theta":10000.0,"rms_norm_eps":1e-6,
        "tie_word_embeddings":{},"rope_scaling":{scaling},"hidden_act":"silu","eos_token_id":[1,2]}}"#,
        if qwen3 {
            r#""head_dim":8,"attention_bias":false,"#
        } else {
            ""
        },
        qwen3,
    )
}

/// A tensor of `shape` with values uniform around `offset`, `scale` wide.
fn random_tensor(rng: &mut Rng, shape: &[usize], scale: f32, offset: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| offset + scale * (rng.uniform() - 0.5))
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).expect("shape")
}

/// Writes `config.json` and `model.safetensors` with seeded random weights.
/// `prefixed` puts the body under `model.` as causal-LM checkpoints do;
/// embedding checkpoints have no prefix.
pub fn write_tiny(dir: &Path, config: &str, prefixed: bool) -> crate::Result<()> {
    let cfg = super::config::Config::from_json(config)?;
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    std::fs::write(dir.join("config.json"), config).map_err(|e| crate::Error::io(dir, e))?;
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let (h, kv, d) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim(),
    );
    let (hs, is, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let p = if prefixed { "model." } else { "" };
    let mut t: HashMap<String, Tensor> = HashMap::new();
    t.insert(
        format!("{p}embed_tokens.weight"),
        random_tensor(&mut rng, &[v, hs], 1.0, 0.0),
    );
    for i in 0..cfg.num_hidden_layers {
        let l = format!("{p}layers.{i}.");
        t.insert(
            format!("{l}self_attn.q_proj.weight"),
            random_tensor(&mut rng, &[h * d, hs], 0.4, 0.0),
        );
        t.insert(
            format!("{l}self_attn.k_proj.weight"),
            random_tensor(&mut rng, &[kv * d, hs], 0.4, 0.0),
        );
        t.insert(
            format!("{l}self_attn.v_proj.weight"),
            random_tensor(&mut rng, &[kv * d, hs], 0.4, 0.0),
        );
        t.insert(
            format!("{l}self_attn.o_proj.weight"),
            random_tensor(&mut rng, &[hs, h * d], 0.4, 0.0),
        );
        if cfg.qkv_bias() {
            t.insert(
                format!("{l}self_attn.q_proj.bias"),
                random_tensor(&mut rng, &[h * d], 0.2, 0.0),
            );
            t.insert(
                format!("{l}self_attn.k_proj.bias"),
                random_tensor(&mut rng, &[kv * d], 0.2, 0.0),
            );
            t.insert(
                format!("{l}self_attn.v_proj.bias"),
                random_tensor(&mut rng, &[kv * d], 0.2, 0.0),
            );
        }
        if cfg.is_qwen3() {
            t.insert(
                format!("{l}self_attn.q_norm.weight"),
                random_tensor(&mut rng, &[d], 0.2, 1.0),
            );
            t.insert(
                format!("{l}self_attn.k_norm.weight"),
                random_tensor(&mut rng, &[d], 0.2, 1.0),
            );
        }
        t.insert(
            format!("{l}mlp.gate_proj.weight"),
            random_tensor(&mut rng, &[is, hs], 0.4, 0.0),
        );
        t.insert(
            format!("{l}mlp.up_proj.weight"),
            random_tensor(&mut rng, &[is, hs], 0.4, 0.0),
        );
        t.insert(
            format!("{l}mlp.down_proj.weight"),
            random_tensor(&mut rng, &[hs, is], 0.4, 0.0),
        );
        t.insert(
            format!("{l}input_layernorm.weight"),
            random_tensor(&mut rng, &[hs], 0.2, 1.0),
        );
        t.insert(
            format!("{l}post_attention_layernorm.weight"),
            random_tensor(&mut rng, &[hs], 0.2, 1.0),
        );
    }
    t.insert(
        format!("{p}norm.weight"),
        random_tensor(&mut rng, &[hs], 0.2, 1.0),
    );
    if !cfg.tie_word_embeddings {
        t.insert(
            "lm_head.weight".into(),
            random_tensor(&mut rng, &[v, hs], 0.4, 0.0),
        );
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))
        .map_err(crate::Error::model_lib)
}

/// A word-level tokenizer whose words `w0`..`w{vocab-1}` are the token ids.
pub fn tiny_tokenizer(vocab: usize) -> tokenizers::Tokenizer {
    let words: Vec<String> = (0..vocab).map(|i| format!("\"w{i}\":{i}")).collect();
    let json = format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
        "pre_tokenizer":{{"type":"Whitespace"}},"post_processor":null,"decoder":null,
        "model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"w0"}}}}"#,
        words.join(",")
    );
    tokenizers::Tokenizer::from_bytes(json.as_bytes()).expect("valid tokenizer json")
}

/// Writes a tiny random BERT in the sentence-transformers layout (2 layers,
/// hidden size 32, the real tensor names) with the given pooling (`mean`,
/// `cls`, `max` or `sqrt`), and a character-level WordPiece tokenizer so
/// that different English texts get different tokens.
pub fn write_tiny_bert(dir: &Path, pooling: &str) {
    use candle_core::{DType, Device, Tensor};
    use std::collections::HashMap;
    let special = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"];
    let chars = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-/%";
    let vocab = special.len() + 2 * chars.chars().count();
    let (hidden, inter, layers) = (32usize, 64usize, 2usize);
    let config = serde_json::json!({
        "model_type": "bert", "architectures": ["BertModel"],
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": 4, "intermediate_size": inter, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512, "type_vocab_size": 2, "initializer_range": 0.02,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("tiny BERT");
    std::fs::create_dir_all(dir.join("1_Pooling")).expect("tiny BERT");
    let flag = |m: &str| pooling == m;
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        serde_json::json!({
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": flag("cls"),
            "pooling_mode_mean_tokens": flag("mean"),
            "pooling_mode_max_tokens": flag("max"),
            "pooling_mode_mean_sqrt_len_tokens": flag("sqrt"),
        })
        .to_string(),
    )
    .expect("tiny BERT");
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 512}"#,
    )
    .expect("tiny BERT");
    let mut rng = Rng::new(7);
    let mut rand = |shape: &[usize]| random_tensor(&mut rng, shape, 0.2, 0.0);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let ones = |n: usize| Tensor::ones(n, DType::F32, &Device::Cpu).expect("tiny BERT");
    t.insert(
        "embeddings.word_embeddings.weight".into(),
        rand(&[vocab, hidden]),
    );
    t.insert(
        "embeddings.position_embeddings.weight".into(),
        rand(&[512, hidden]),
    );
    t.insert(
        "embeddings.token_type_embeddings.weight".into(),
        rand(&[2, hidden]),
    );
    t.insert("embeddings.LayerNorm.weight".into(), ones(hidden));
    t.insert("embeddings.LayerNorm.bias".into(), rand(&[hidden]));
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for (name, o, i) in [
            ("attention.self.query", hidden, hidden),
            ("attention.self.key", hidden, hidden),
            ("attention.self.value", hidden, hidden),
            ("attention.output.dense", hidden, hidden),
            ("intermediate.dense", inter, hidden),
            ("output.dense", hidden, inter),
        ] {
            t.insert(format!("{p}.{name}.weight"), rand(&[o, i]));
            t.insert(format!("{p}.{name}.bias"), rand(&[o]));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            t.insert(format!("{p}.{ln}.weight"), ones(hidden));
            t.insert(format!("{p}.{ln}.bias"), rand(&[hidden]));
        }
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).expect("tiny BERT");
    // Character-level WordPiece: "osaka" is o ##s ##a ##k ##a.
    let mut vocab_map = serde_json::Map::new();
    for tok in special {
        let id = vocab_map.len();
        vocab_map.insert(tok.to_string(), id.into());
    }
    for c in chars.chars() {
        for piece in [c.to_string(), format!("##{c}")] {
            let id = vocab_map.len();
            vocab_map.insert(piece, id.into());
        }
    }
    assert_eq!(vocab_map.len(), vocab);
    let tok = serde_json::json!({
        "version": "1.0",
        "model": {"type": "WordPiece", "vocab": vocab_map, "unk_token": "[UNK]",
                  "continuing_subword_prefix": "##", "max_input_chars_per_word": 100},
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}
            }
        },
        "added_tokens": [], "decoder": null, "truncation": null, "padding": null
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).expect("tiny BERT");
}
