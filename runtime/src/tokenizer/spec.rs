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
