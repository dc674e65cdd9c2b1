//! [`TokenizerSpec`] rebuilt from `tokenizer.ggml.*` metadata.
//!
//! llama.cpp stores a byte-level BPE tokenizer as `tokenizer.ggml.model = "gpt2"`, the
//! pre-tokenizer name in `tokenizer.ggml.pre`, every token by id in `tokenizer.ggml.tokens`, a
//! type per token in `tokenizer.ggml.token_type` and the merges as `"left right"` strings.
//! Token types (llama.cpp's `llama_token_type`): 1 normal, 2 unknown, 3 control, 4 user-defined,
//! 5 unused, 6 byte. Control tokens (`<|im_start|>`, ...) and user-defined ones (`<tool_call>`)
//! are the Hugging Face added tokens (special = control). Unused tokens are the `[PAD{id}]`
//! fillers llama.cpp's converter writes where the embedding matrix has more rows than the
//! tokenizer has tokens: they are neither added tokens nor BPE vocabulary, so that text such as
//! "[PAD151700]" tokenizes as ordinary text, as it does with the Hugging Face tokenizer.

use qwenc_runtime::tokenizer::{AddedToken, PreTokenizer, TokenizerSpec};

use crate::model_io::error::{LoadError, Result};

use super::config::{required, required_str, wrong_type};
use super::GgufFile;

const NORMAL: i64 = 1;
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const UNUSED: i64 = 5;
const BYTE: i64 = 6;

fn string_array<'a>(file: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let v = required(file, key)?;
    let items = v
        .as_array()
        .ok_or_else(|| wrong_type(file, key, "an array of strings", v))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str().ok_or_else(|| {
                LoadError::config(
                    file.path(),
                    format!(
                        "metadata `{key}`[{i}] must be a string, got a {} value",
                        item.type_name()
                    ),
                )
            })
        })
        .collect()
}

pub(super) fn build(file: &GgufFile) -> Result<TokenizerSpec> {
    let err = |p: String| LoadError::config(file.path(), p);

    let model = required_str(file, "tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(err(format!(
            "unsupported tokenizer model `{model}` in `tokenizer.ggml.model` \
             (qwenc reads byte-level BPE tokenizers, `gpt2`)"
        )));
    }
    let pre = required_str(file, "tokenizer.ggml.pre")?;
    if pre != "qwen2" {
        return Err(err(format!(
            "unsupported pre-tokenizer `{pre}` in `tokenizer.ggml.pre` (qwenc implements `qwen2`)"
        )));
    }

    let tokens = string_array(file, "tokenizer.ggml.tokens")?;
    if u32::try_from(tokens.len()).is_err() {
        return Err(err(format!("{} tokens are too many", tokens.len())));
    }
    let types_key = "tokenizer.ggml.token_type";
    let types_value = required(file, types_key)?;
    let types = types_value
        .as_array()
        .ok_or_else(|| wrong_type(file, types_key, "an array of integers", types_value))?;
    if types.len() != tokens.len() {
        return Err(err(format!(
            "`{types_key}` has {} entries but `tokenizer.ggml.tokens` has {}",
            types.len(),
            tokens.len()
        )));
    }

    let mut vocab = Vec::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, (&text, ty)) in tokens.iter().zip(types).enumerate() {
        let id = id as u32;
        let ty = ty.as_i64().ok_or_else(|| {
            err(format!(
                "`{types_key}`[{id}] must be an integer, got a {} value",
                ty.type_name()
            ))
        })?;
        match ty {
            NORMAL | UNKNOWN | BYTE => vocab.push((text.to_string(), id)),
            CONTROL | USER_DEFINED => added.push(AddedToken {
                id,
                content: text.to_string(),
                special: ty == CONTROL,
            }),
            UNUSED => {}
            other => {
                return Err(err(format!(
                    "token {id} `{text}` has unknown type {other} in `{types_key}`"
                )))
            }
        }
    }
    check_unique(file, &vocab, &added)?;

    let merges = string_array(file, "tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            // Byte-level BPE spells a space as 'Ġ', so neither side of a merge has one.
            match m.split_once(' ') {
                Some((l, r)) if !l.is_empty() && !r.is_empty() && !r.contains(' ') => {
                    Ok((l.to_string(), r.to_string()))
                }
                _ => Err(err(format!(
                    "merge #{i} `{m}` in `tokenizer.ggml.merges` is not two tokens separated by one space"
                ))),
            }
        })
        .collect::<Result<Vec<_>>>()?;

    Ok(TokenizerSpec {
        vocab,
        merges,
        added,
        pre_tokenizer: PreTokenizer::Qwen2,
        // Qwen2's tokenizer.json normalizes with NFC (GGUF has no field for it).
        nfc: true,
    })
}

/// Every token text must name one id, or encoding would be ambiguous.
fn check_unique(file: &GgufFile, vocab: &[(String, u32)], added: &[AddedToken]) -> Result<()> {
    let mut seen = std::collections::HashMap::with_capacity(vocab.len() + added.len());
    let all = vocab
        .iter()
        .map(|(t, id)| (t.as_str(), *id))
        .chain(added.iter().map(|a| (a.content.as_str(), a.id)));
    for (text, id) in all {
        if let Some(prev) = seen.insert(text, id) {
            return Err(LoadError::config(
                file.path(),
                format!(
                    "token `{text}` appears twice in `tokenizer.ggml.tokens` (ids {prev} and {id})"
                ),
            ));
        }
    }
    Ok(())
}
