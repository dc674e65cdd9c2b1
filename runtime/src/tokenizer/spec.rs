//! The data a tokenizer is built from, independent of where it came from
//! (`tokenizer.json` of a Hugging Face directory, or the metadata of a GGUF file).
//! The code generator serializes it into the per-model executable.

use serde::{Deserialize, Serialize};

/// How text is split into words before BPE runs on each word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreTokenizer {
    /// The Qwen2 split regex (GPT-4 style, single digits) followed by byte-level mapping.
    Qwen2,
}

/// A token matched in raw text before pre-tokenization (`<|im_start|>`, `<|endoftext|>`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    /// Special tokens are what `skip_special_tokens` would drop; all added tokens are matched in text.
    pub special: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerSpec {
    /// Regular BPE vocabulary: (token in byte-level "GPT-2 unicode" form, id).
    pub vocab: Vec<(String, u32)>,
    /// Merge rules in priority order (earlier = merged first).
    pub merges: Vec<(String, String)>,
    /// Tokens matched verbatim in text before pre-tokenization.
    pub added: Vec<AddedToken>,
    pub pre_tokenizer: PreTokenizer,
    /// Apply Unicode NFC normalization to text (outside added tokens) before splitting.
    pub nfc: bool,
}

/// GPT-2's byte-level alphabet: byte `b` is written as the char `byte_level_alphabet()[b]`.
/// Printable Latin-1 bytes stand for themselves; the others are shifted to U+0100.. in order
/// (so space is `Ġ`, newline `Ċ`).
pub fn byte_level_alphabet() -> [char; 256] {
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    let mut table = ['\0'; 256];
    let mut shifted = 0;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).expect("Latin-1 is valid")
        } else {
            shifted += 1;
            char::from_u32(0xFF + shifted).expect("U+0100.. is valid")
        };
    }
    table
}

impl TokenizerSpec {
    /// A byte-level BPE vocabulary: the 256 byte symbols (ids 0..256), `merges` (ids 256.. in
    /// this order), and the ChatML special tokens `<|endoftext|>`, `<|im_start|>` and
    /// `<|im_end|>` at `endoftext`, `endoftext + 1` and `endoftext + 2`. The fake model's
    /// tokenizer (`testing`), and that of codegen's tiny synthetic checkpoint (with its own
    /// merges and ids).
    pub fn byte_level_chatml(merges: &[(&str, &str)], endoftext: u32) -> TokenizerSpec {
        let mut vocab: Vec<(String, u32)> = byte_level_alphabet()
            .iter()
            .enumerate()
            .map(|(b, c)| (c.to_string(), b as u32))
            .collect();
        let mut merge_list = Vec::new();
        for &(a, b) in merges {
            vocab.push((format!("{a}{b}"), vocab.len() as u32));
            merge_list.push((a.to_string(), b.to_string()));
        }
        let added = [
            (endoftext, "<|endoftext|>"),
            (endoftext + 1, "<|im_start|>"),
            (endoftext + 2, "<|im_end|>"),
        ]
        .into_iter()
        .map(|(id, content)| AddedToken {
            id,
            content: content.to_string(),
            special: true,
        })
        .collect();
        TokenizerSpec {
            vocab,
            merges: merge_list,
            added,
            pre_tokenizer: PreTokenizer::Qwen2,
            nfc: true,
        }
    }

    /// A Hugging Face `tokenizer.json` for this spec (Qwen2 layout), so that a compressed model
    /// directory built from a GGUF file is a regular Hugging Face directory.
    pub fn to_tokenizer_json(&self) -> String {
        const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        let vocab: serde_json::Map<String, serde_json::Value> = self
            .vocab
            .iter()
            .map(|(t, id)| (t.clone(), (*id).into()))
            .collect();
        let merges: Vec<String> = self
            .merges
            .iter()
            .map(|(a, b)| format!("{a} {b}"))
            .collect();
        let added: Vec<serde_json::Value> = self
            .added
            .iter()
            .map(|t| {
                serde_json::json!({
                    "id": t.id, "content": t.content, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": t.special,
                })
            })
            .collect();
        let byte_level = serde_json::json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false
        });
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": if self.nfc { serde_json::json!({"type": "NFC"}) } else { serde_json::Value::Null },
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
                    byte_level,
                ]
            },
            "post_processor": byte_level,
            "decoder": byte_level,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": false, "vocab": vocab, "merges": merges,
            }
        });
        serde_json::to_string(&json).expect("a JSON value always serializes")
    }
}
