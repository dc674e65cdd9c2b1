//! Reading a Hugging Face `tokenizer.json` into a [`TokenizerSpec`].

use serde_json::Value;

use super::{AddedToken, PreTokenizer, TokenizerError, TokenizerSpec};

/// The split regex of Qwen2 tokenizers (`tokenizer.json`, pre_tokenizer Split pattern).
pub const QWEN2_SPLIT_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn json_err(msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Json(msg.into())
}

fn type_of(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

fn as_u32(v: &Value, what: &str) -> Result<u32, TokenizerError> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            json_err(format!(
                "{what}: expected a token id, found {}",
                describe(v)
            ))
        })
}

fn flag(v: &Value, name: &str) -> bool {
    v.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// NFC or nothing (possibly inside a Sequence).
fn read_normalizer(v: &Value) -> Result<bool, TokenizerError> {
    match v {
        Value::Null => Ok(false),
        _ => match type_of(v) {
            Some("NFC") => Ok(true),
            Some("Sequence") => {
                let items = v
                    .get("normalizers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| json_err("normalizer Sequence without normalizers"))?;
                let mut nfc = false;
                for item in items {
                    nfc |= read_normalizer(item)?;
                }
                if items.len() > 1 {
                    return Err(TokenizerError::UnsupportedNormalizer(describe(v)));
                }
                Ok(nfc)
            }
            _ => Err(TokenizerError::UnsupportedNormalizer(describe(v))),
        },
    }
}

/// Sequence [Split(Qwen2 regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)].
fn read_pre_tokenizer(v: &Value) -> Result<PreTokenizer, TokenizerError> {
    let unsupported = || TokenizerError::UnsupportedPreTokenizer(describe(v));
    if type_of(v) != Some("Sequence") {
        return Err(unsupported());
    }
    let items = v
        .get("pretokenizers")
        .and_then(Value::as_array)
        .ok_or_else(unsupported)?;
    let [split, byte_level] = items.as_slice() else {
        return Err(unsupported());
    };
    let pattern = split
        .get("pattern")
        .and_then(|p| p.get("Regex"))
        .and_then(Value::as_str);
    let split_ok = type_of(split) == Some("Split")
        && pattern == Some(QWEN2_SPLIT_PATTERN)
        && split.get("behavior").and_then(Value::as_str) == Some("Isolated")
        && !flag(split, "invert");
    let byte_level_ok = type_of(byte_level) == Some("ByteLevel")
        && !flag(byte_level, "add_prefix_space")
        && !flag(byte_level, "use_regex");
    if split_ok && byte_level_ok {
        Ok(PreTokenizer::Qwen2)
    } else {
        Err(unsupported())
    }
}

fn read_merge(v: &Value, rank: usize) -> Result<(String, String), TokenizerError> {
    let bad = || {
        json_err(format!(
            "merge #{rank}: expected \"a b\" or [a, b], found {}",
            describe(v)
        ))
    };
    match v {
        Value::String(s) => {
            let mut parts = s.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                _ => Err(bad()),
            }
        }
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(a), Value::String(b)] => Ok((a.clone(), b.clone())),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

impl TokenizerSpec {
    /// Reads a Hugging Face `tokenizer.json` of the Qwen2 kind: a BPE model (no byte
    /// fallback, dropout, subword prefix/suffix or `ignore_merges`), the Qwen2 split +
    /// ByteLevel pre-tokenizer, an NFC or no normalizer, a ByteLevel decoder. Anything else
    /// is refused with a named error rather than tokenized differently.
    ///
    /// Added tokens are always matched in the raw text, before normalization (Qwen2's are
    /// all `normalized: false`); `lstrip`, `rstrip` and `single_word` are refused.
    pub fn from_tokenizer_json(text: &str) -> Result<TokenizerSpec, TokenizerError> {
        let root: Value = serde_json::from_str(text).map_err(|e| json_err(e.to_string()))?;
        let model = root
            .get("model")
            .filter(|m| m.is_object())
            .ok_or_else(|| json_err("no \"model\" object"))?;
        match type_of(model) {
            Some("BPE") | None => {}
            Some(other) => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        }
        if flag(model, "byte_fallback") {
            return Err(TokenizerError::UnsupportedModel("byte_fallback".into()));
        }
        if flag(model, "ignore_merges") {
            return Err(TokenizerError::UnsupportedModel("ignore_merges".into()));
        }
        if model.get("dropout").is_some_and(|d| !d.is_null()) {
            return Err(TokenizerError::UnsupportedModel("dropout".into()));
        }
        for field in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let Some(v) = model.get(field) {
                if !(v.is_null() || v.as_str() == Some("")) {
                    return Err(TokenizerError::UnsupportedModel(format!("{field} {v}")));
                }
            }
        }

        let vocab_map = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| json_err("model.vocab is not an object"))?;
        let mut vocab = Vec::with_capacity(vocab_map.len());
        for (token, id) in vocab_map {
            vocab.push((
                token.clone(),
                as_u32(id, &format!("model.vocab[{token:?}]"))?,
            ));
        }
        vocab.sort_by_key(|(_, id)| *id);

        let merges = match model.get("merges") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(rank, m)| read_merge(m, rank))
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(json_err(format!(
                    "model.merges is not an array: {}",
                    describe(other)
                )))
            }
        };

        let mut added = Vec::new();
        match root.get("added_tokens") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let content = item.get("content").and_then(Value::as_str).ok_or_else(|| {
                        json_err(format!("added token without content: {}", describe(item)))
                    })?;
                    let id = as_u32(
                        item.get("id").unwrap_or(&Value::Null),
                        &format!("added token {content:?} id"),
                    )?;
                    for option in ["lstrip", "rstrip", "single_word"] {
                        if flag(item, option) {
                            return Err(TokenizerError::UnsupportedAddedToken {
                                content: content.to_string(),
                                option: option.to_string(),
                            });
                        }
                    }
                    added.push(AddedToken {
                        id,
                        content: content.to_string(),
                        special: flag(item, "special"),
                    });
                }
            }
            Some(other) => {
                return Err(json_err(format!(
                    "added_tokens is not an array: {}",
                    describe(other)
                )))
            }
        }

        let nfc = read_normalizer(root.get("normalizer").unwrap_or(&Value::Null))?;
        let pre_tokenizer = read_pre_tokenizer(root.get("pre_tokenizer").unwrap_or(&Value::Null))?;
        match root.get("decoder") {
            Some(d) if type_of(d) == Some("ByteLevel") => {}
            other => {
                return Err(TokenizerError::UnsupportedDecoder(describe(
                    other.unwrap_or(&Value::Null),
                )))
            }
        }

        Ok(TokenizerSpec {
            vocab,
            merges,
            added,
            pre_tokenizer,
            nfc,
        })
    }
}
