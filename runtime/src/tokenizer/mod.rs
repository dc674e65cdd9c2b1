//! Byte-level BPE tokenizer with the Qwen2 pre-tokenizer.

mod spec;

pub use spec::{AddedToken, PreTokenizer, TokenizerSpec};
