//! Errors of building a tokenizer, reading a `tokenizer.json`, and streaming decode.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TokenizerError {
    /// Two vocabulary entries (or an entry and an added token) share an id with different text.
    #[error("token id {id} is given twice: {first:?} and {second:?}")]
    DuplicateId {
        id: u32,
        first: String,
        second: String,
    },
    /// The same token text appears twice with different ids.
    #[error("token {token:?} is given twice: ids {first} and {second}")]
    DuplicateToken {
        token: String,
        first: u32,
        second: u32,
    },
    /// A merge rule names a token that is not in the vocabulary.
    #[error("merge #{rank} ({left:?} {right:?}): token {token:?} is not in the vocabulary")]
    MergeUnknownToken {
        rank: usize,
        left: String,
        right: String,
        token: String,
    },
    /// The same pair is listed twice among the merges.
    #[error("merge #{rank} ({left:?} {right:?}) repeats merge #{first_rank}")]
    DuplicateMerge {
        rank: usize,
        first_rank: usize,
        left: String,
        right: String,
    },
    /// A byte has no single-character token in the byte-level vocabulary, so some text
    /// could not be encoded.
    #[error("byte 0x{byte:02X} has no token (expected {token:?} in the vocabulary)")]
    MissingByteToken { byte: u8, token: String },
    /// An added token with empty text (it would match everywhere).
    #[error("added token id {id} has empty content")]
    EmptyAddedToken { id: u32 },
    /// An id too large to index a table (a corrupt vocabulary).
    #[error("token id {id} is too large (limit {limit})")]
    IdTooLarge { id: u32, limit: u32 },
    /// An id that is neither in the vocabulary nor an added token.
    #[error("unknown token id {0}")]
    UnknownId(u32),
    /// `tokenizer.json` is not JSON, or lacks / mistypes a field.
    #[error("tokenizer.json: {0}")]
    Json(String),
    /// The model is not a BPE model, or uses BPE options this tokenizer does not implement.
    #[error("unsupported tokenizer model: {0}")]
    UnsupportedModel(String),
    /// The pre-tokenizer is not the Qwen2 split regex followed by ByteLevel.
    #[error("unsupported pre-tokenizer: {0}")]
    UnsupportedPreTokenizer(String),
    /// A normalizer other than NFC (or none).
    #[error("unsupported normalizer: {0}")]
    UnsupportedNormalizer(String),
    /// A decoder other than ByteLevel.
    #[error("unsupported decoder: {0}")]
    UnsupportedDecoder(String),
    /// An added token option (lstrip, rstrip, single_word) that is not implemented.
    #[error("unsupported added token {content:?}: {option}")]
    UnsupportedAddedToken { content: String, option: String },
}
