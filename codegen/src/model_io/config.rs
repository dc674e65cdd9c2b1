//! The Qwen2 model configuration, read from `config.json` in either layout that transformers
//! writes (4.x: `rope_theta`, `torch_dtype`; 5.x: `rope_parameters`, `dtype`) or rebuilt from
//! GGUF metadata, and validated so that every later stage can trust its shapes.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model_io::error::{LoadError, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QwenConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// Generation stops at any of these (the instruct models add `<|im_end|>`).
    pub eos_token_ids: Vec<u32>,
}

impl QwenConfig {
    /// Read and validate a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
        Self::from_json_str(path, &text)
    }

    /// `path` is only used to name the source in errors.
    pub fn from_json_str(path: &Path, text: &str) -> Result<Self> {
        let json: Value = serde_json::from_str(text)
            .map_err(|e| LoadError::config(path, format!("invalid JSON: {e}")))?;
        let obj = json
            .as_object()
            .ok_or_else(|| LoadError::config(path, "expected a JSON object"))?;
        let err = |p: String| LoadError::config(path, p);

        let model_type = obj.get("model_type").and_then(Value::as_str);
        match model_type {
            Some("qwen2") => {}
            Some(other) => {
                return Err(err(format!(
                    "unsupported model_type `{other}` (qwenc compiles `qwen2` models)"
                )))
            }
            None => return Err(err("missing field `model_type`".into())),
        }

        let usize_field = |key: &str| -> Result<usize> {
            match obj.get(key) {
                None | Some(Value::Null) => Err(err(format!("missing field `{key}`"))),
                Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                    err(format!(
                        "field `{key}` must be a non-negative integer, got {v}"
                    ))
                }),
            }
        };
        let hidden_size = usize_field("hidden_size")?;
        let num_attention_heads = usize_field("num_attention_heads")?;
        let head_dim = match obj.get("head_dim") {
            None | Some(Value::Null) => {
                if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
                    return Err(err(format!(
                        "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"
                    )));
                }
                hidden_size / num_attention_heads
            }
            Some(_) => usize_field("head_dim")?,
        };

        // transformers 5 moved rope_theta into rope_parameters; a missing theta must not
        // silently become some default (transformers 4 reads it as 10000, which is wrong here).
        let rope = obj
            .get("rope_parameters")
            .or_else(|| obj.get("rope_scaling"));
        if let Some(Value::Object(rope)) = rope {
            let kind = rope
                .get("rope_type")
                .or_else(|| rope.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("default");
            if kind != "default" {
                return Err(err(format!(
                    "unsupported rope_type `{kind}` (only `default` RoPE)"
                )));
            }
        }
        let rope_theta = obj
            .get("rope_theta")
            .or_else(|| rope.and_then(|r| r.get("rope_theta")))
            .and_then(Value::as_f64)
            .ok_or_else(
                || err("missing `rope_theta` (top level or in `rope_parameters`)".into()),
            )?;

        let rms_norm_eps = obj
            .get("rms_norm_eps")
            .and_then(Value::as_f64)
            .ok_or_else(|| err("missing field `rms_norm_eps`".into()))?;
        if let Some(act) = obj.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(err(format!(
                    "unsupported hidden_act `{act}` (Qwen2 uses silu)"
                )));
            }
        }
        if obj.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
            return Err(err("use_sliding_window=true is not supported".into()));
        }

        let token_id = |v: &Value| v.as_u64().map(|n| n as u32);
        let eos_token_ids = match obj.get("eos_token_id") {
            Some(Value::Array(ids)) => ids.iter().filter_map(token_id).collect(),
            Some(v) => token_id(v).into_iter().collect(),
            None => Vec::new(),
        };

        let config = QwenConfig {
            hidden_size,
            intermediate_size: usize_field("intermediate_size")?,
            num_hidden_layers: usize_field("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: match obj.get("num_key_value_heads") {
                None | Some(Value::Null) => num_attention_heads,
                Some(_) => usize_field("num_key_value_heads")?,
            },
            head_dim,
            vocab_size: usize_field("vocab_size")?,
            max_position_embeddings: usize_field("max_position_embeddings")?,
            rms_norm_eps: rms_norm_eps as f32,
            rope_theta: rope_theta as f32,
            tie_word_embeddings: obj
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            bos_token_id: obj.get("bos_token_id").and_then(token_id),
            eos_token_ids,
        };
        config.validate().map_err(err)?;
        Ok(config)
    }

    /// Shape consistency checks shared by every source of a config.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let c = self;
        for (name, v) in [
            ("hidden_size", c.hidden_size),
            ("intermediate_size", c.intermediate_size),
            ("num_hidden_layers", c.num_hidden_layers),
            ("num_attention_heads", c.num_attention_heads),
            ("num_key_value_heads", c.num_key_value_heads),
            ("head_dim", c.head_dim),
            ("vocab_size", c.vocab_size),
            ("max_position_embeddings", c.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                c.num_attention_heads, c.num_key_value_heads
            ));
        }
        if !c.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {} must be even for RoPE", c.head_dim));
        }
        let positive = |x: f32| !x.is_nan() && x > 0.0;
        if !positive(c.rms_norm_eps) || !positive(c.rope_theta) {
            return Err("rms_norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }

    /// Query heads that share one key/value head (7 for Qwen2.5-0.5B).
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// The classic transformers 4.x `config.json` layout, which every loader reads.
    pub fn to_hf_json(&self) -> Value {
        serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids,
            "use_sliding_window": false,
        })
    }
}
