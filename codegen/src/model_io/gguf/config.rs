//! [`QwenConfig`] rebuilt from GGUF metadata (`general.architecture`, `qwen2.*`,
//! `tokenizer.ggml.*`) and the tensor directory, the way transformers does when it loads a
//! GGUF file.

use crate::model_io::config::QwenConfig;
use crate::model_io::error::{LoadError, Result};

use super::{GgufFile, GgufValue};

/// A required metadata value, or a Config error naming the key.
pub(super) fn required<'a>(file: &'a GgufFile, key: &str) -> Result<&'a GgufValue> {
    file.get(key)
        .ok_or_else(|| LoadError::config(file.path(), format!("missing metadata `{key}`")))
}

pub(super) fn wrong_type(file: &GgufFile, key: &str, want: &str, got: &GgufValue) -> LoadError {
    LoadError::config(
        file.path(),
        format!(
            "metadata `{key}` must be {want}, got a {} value",
            got.type_name()
        ),
    )
}

pub(super) fn required_str<'a>(file: &'a GgufFile, key: &str) -> Result<&'a str> {
    let v = required(file, key)?;
    v.as_str()
        .ok_or_else(|| wrong_type(file, key, "a string", v))
}

fn as_usize(file: &GgufFile, key: &str, v: &GgufValue) -> Result<usize> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| wrong_type(file, key, "a non-negative integer", v))
}

fn required_usize(file: &GgufFile, key: &str) -> Result<usize> {
    as_usize(file, key, required(file, key)?)
}

fn optional_usize(file: &GgufFile, key: &str) -> Result<Option<usize>> {
    file.get(key).map(|v| as_usize(file, key, v)).transpose()
}

fn required_f64(file: &GgufFile, key: &str) -> Result<f64> {
    let v = required(file, key)?;
    v.as_f64()
        .ok_or_else(|| wrong_type(file, key, "a number", v))
}

fn optional_token_id(file: &GgufFile, key: &str) -> Result<Option<u32>> {
    file.get(key)
        .map(|v| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| wrong_type(file, key, "a token id (u32)", v))
        })
        .transpose()
}

/// The id of the token spelled `text` in `tokenizer.ggml.tokens`, if any.
pub(super) fn token_id(file: &GgufFile, text: &str) -> Option<u32> {
    let tokens = file.get("tokenizer.ggml.tokens")?.as_array()?;
    let i = tokens.iter().position(|t| t.as_str() == Some(text))?;
    u32::try_from(i).ok()
}

/// Generation also stops at these when the vocabulary has them: the chat models end a turn
/// with `<|im_end|>`, the base models end a document with `<|endoftext|>`
/// (Qwen2.5's `generation_config.json` lists both).
const EXTRA_EOS: &[&str] = &["<|im_end|>", "<|endoftext|>"];

pub(super) fn build(file: &GgufFile) -> Result<QwenConfig> {
    let err = |p: String| LoadError::config(file.path(), p);

    let arch = required_str(file, "general.architecture")?;
    if arch != "qwen2" {
        return Err(err(format!(
            "unsupported architecture `{arch}` in `general.architecture` (qwenc compiles `qwen2` models)"
        )));
    }
    let key = |k: &str| format!("qwen2.{k}");

    let hidden_size = required_usize(file, &key("embedding_length"))?;
    let intermediate_size = required_usize(file, &key("feed_forward_length"))?;
    let num_hidden_layers = required_usize(file, &key("block_count"))?;
    let num_attention_heads = required_usize(file, &key("attention.head_count"))?;
    let num_key_value_heads =
        optional_usize(file, &key("attention.head_count_kv"))?.unwrap_or(num_attention_heads);
    let max_position_embeddings = required_usize(file, &key("context_length"))?;
    let rope_theta = required_f64(file, &key("rope.freq_base"))?;
    let rms_norm_eps = required_f64(file, &key("attention.layer_norm_rms_epsilon"))?;

    let head_dim = match optional_usize(file, &key("attention.key_length"))? {
        Some(d) => d,
        None => {
            if num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
                return Err(err(format!(
                    "qwen2.embedding_length {hidden_size} is not a multiple of \
                     qwen2.attention.head_count {num_attention_heads}"
                )));
            }
            hidden_size / num_attention_heads
        }
    };
    if let Some(v) = optional_usize(file, &key("attention.value_length"))? {
        if v != head_dim {
            return Err(err(format!(
                "qwen2.attention.value_length {v} differs from the key length {head_dim}"
            )));
        }
    }
    if let Some(kind) = file.get(&key("rope.scaling.type")) {
        match kind.as_str() {
            Some("none") => {}
            Some(other) => {
                return Err(err(format!(
                "unsupported RoPE scaling `{other}` in `qwen2.rope.scaling.type` (only plain RoPE)"
            )))
            }
            None => {
                return Err(wrong_type(
                    file,
                    &key("rope.scaling.type"),
                    "a string",
                    kind,
                ))
            }
        }
    }

    let embd = file.tensor_info("token_embd.weight").ok_or_else(|| {
        err("no `token_embd.weight` tensor: cannot tell the vocabulary size".into())
    })?;
    if embd.dims.len() != 2 || embd.dims[0] != hidden_size as u64 {
        return Err(err(format!(
            "`token_embd.weight` has ggml dims {:?}, expected [{hidden_size}, vocab]",
            embd.dims
        )));
    }
    let vocab_size = embd.dims[1] as usize;
    let tie_word_embeddings = file.tensor_info("output.weight").is_none();

    let bos_token_id = optional_token_id(file, "tokenizer.ggml.bos_token_id")?;
    let mut eos_token_ids = Vec::new();
    if let Some(eos) = optional_token_id(file, "tokenizer.ggml.eos_token_id")? {
        eos_token_ids.push(eos);
    }
    for text in EXTRA_EOS {
        if let Some(id) = token_id(file, text) {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }
    for (what, id) in bos_token_id
        .iter()
        .map(|&id| ("bos", id))
        .chain(eos_token_ids.iter().map(|&id| ("eos", id)))
    {
        if id as usize >= vocab_size {
            return Err(err(format!(
                "{what} token id {id} is outside the vocabulary of {vocab_size} tokens"
            )));
        }
    }

    let config = QwenConfig {
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        vocab_size,
        max_position_embeddings,
        rms_norm_eps: rms_norm_eps as f32,
        rope_theta: rope_theta as f32,
        tie_word_embeddings,
        bos_token_id,
        eos_token_ids,
    };
    config.validate().map_err(err)?;
    Ok(config)
}
