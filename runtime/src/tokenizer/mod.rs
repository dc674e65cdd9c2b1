//! Byte-level BPE tokenizer with the Qwen2 pre-tokenizer.
//!
//! Reproduces Hugging Face tokenizers running a Qwen2 `tokenizer.json`:
//!
//! 1. added tokens written literally in the text (`<|im_start|>`, `<|endoftext|>`, ...) are
//!    split out first (leftmost, then longest match) and become their ids;
//! 2. each remaining piece is NFC-normalized (when the spec asks for it) with Hugging Face's
//!    Unicode 9.0 view of NFC (see `normalize.rs`);
//! 3. the piece is split into words by the Qwen2 regex (hand-written scanner, see
//!    [`pre_tokenize`]);
//! 4. each word's UTF-8 bytes start as one byte-level symbol each and are merged by rank;
//! 5. the merged symbols are the ids.
//!
//! Decoding joins the bytes of the tokens and replaces invalid UTF-8 with U+FFFD the way
//! `String::from_utf8_lossy` (and so Hugging Face) does.

mod added;
mod bpe;
mod bytelevel;
mod error;
mod fxhash;
mod json;
mod normalize;
mod pretokenize;
mod spec;
mod stream;
mod unicode_tables;

use std::borrow::{Borrow, Cow};
use std::sync::Mutex;

pub use bytelevel::{byte_to_char, bytes_to_token, char_to_byte, token_to_bytes};
pub use error::TokenizerError;
pub use json::QWEN2_SPLIT_PATTERN;
pub use pretokenize::pre_tokenize;
pub use spec::{byte_level_alphabet, AddedToken, PreTokenizer, TokenizerSpec};
pub use stream::StreamDecoder;

use added::AddedMatcher;
use bpe::Merges;
use fxhash::FxHashMap;

/// Ids at or above this are refused (a corrupt vocabulary, not a real one).
pub const MAX_TOKEN_ID: u32 = 1 << 24;

/// Words up to this many bytes are cached.
const CACHE_MAX_WORD: usize = 128;
/// The cache is emptied when it holds this many words.
const CACHE_CAPACITY: usize = 1 << 16;

type WordCache = FxHashMap<Box<str>, Box<[u32]>>;

/// A byte-level BPE tokenizer built from a [`TokenizerSpec`].
///
/// `Tokenizer` is `Send + Sync`; encoding from several threads at once works (a thread that
/// finds the word cache busy encodes without it).
pub struct Tokenizer {
    /// Token text (byte-level form for the vocabulary, content for added tokens) -> id.
    token_ids: FxHashMap<Box<str>, u32>,
    /// id -> token text; `None` for ids that are not assigned.
    tokens: Vec<Option<Box<str>>>,
    /// Bytes each id decodes to: `decoded[offsets[id]..offsets[id + 1]]`.
    decoded: Vec<u8>,
    offsets: Vec<u32>,
    /// Per id: 1 = added token, 2 = special added token.
    kinds: Vec<u8>,
    /// Id of the single-byte token for each byte.
    byte_ids: [u32; 256],
    merges: Merges,
    added: AddedMatcher,
    nfc: bool,
    cache: Mutex<WordCache>,
}

const KIND_ADDED: u8 = 1;
const KIND_SPECIAL: u8 = 2;

impl Clone for Tokenizer {
    fn clone(&self) -> Self {
        Tokenizer {
            token_ids: self.token_ids.clone(),
            tokens: self.tokens.clone(),
            decoded: self.decoded.clone(),
            offsets: self.offsets.clone(),
            kinds: self.kinds.clone(),
            byte_ids: self.byte_ids,
            merges: self.merges.clone(),
            added: self.added.clone(),
            nfc: self.nfc,
            cache: Mutex::new(WordCache::default()),
        }
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field(
                "added_tokens",
                &self.kinds.iter().filter(|&&k| k != 0).count(),
            )
            .field("nfc", &self.nfc)
            .finish_non_exhaustive()
    }
}

fn check_id(id: u32) -> Result<(), TokenizerError> {
    if id >= MAX_TOKEN_ID {
        Err(TokenizerError::IdTooLarge {
            id,
            limit: MAX_TOKEN_ID,
        })
    } else {
        Ok(())
    }
}

impl Tokenizer {
    /// Builds the tokenizer, checking the spec: ids unique per text and text unique per id,
    /// every merge made of vocabulary tokens and giving a vocabulary token, no merge listed
    /// twice, a token for each of the 256 bytes, no empty added token.
    ///
    /// Added tokens may also be listed in the vocabulary (as a GGUF file does) if they have
    /// the same id there.
    ///
    /// Takes the spec by value or by reference.
    pub fn from_spec(spec: impl Borrow<TokenizerSpec>) -> Result<Tokenizer, TokenizerError> {
        let spec: &TokenizerSpec = spec.borrow();
        match spec.pre_tokenizer {
            PreTokenizer::Qwen2 => {}
        }
        let max_id = spec
            .vocab
            .iter()
            .map(|(_, id)| *id)
            .chain(spec.added.iter().map(|a| a.id))
            .max();
        if let Some(id) = max_id {
            check_id(id)?;
        }
        let n_ids = max_id.map_or(0, |id| id as usize + 1);
        let mut tokens: Vec<Option<Box<str>>> = vec![None; n_ids];
        let mut token_ids: FxHashMap<Box<str>, u32> = FxHashMap::default();
        token_ids.reserve(spec.vocab.len() + spec.added.len());

        let assign = |tokens: &mut Vec<Option<Box<str>>>,
                      token_ids: &mut FxHashMap<Box<str>, u32>,
                      text: &str,
                      id: u32|
         -> Result<(), TokenizerError> {
            if let Some(existing) = &tokens[id as usize] {
                if &**existing != text {
                    return Err(TokenizerError::DuplicateId {
                        id,
                        first: existing.to_string(),
                        second: text.to_string(),
                    });
                }
            }
            match token_ids.get(text) {
                Some(&other) if other != id => {
                    return Err(TokenizerError::DuplicateToken {
                        token: text.to_string(),
                        first: other,
                        second: id,
                    })
                }
                Some(_) => {}
                None => {
                    token_ids.insert(text.into(), id);
                }
            }
            tokens[id as usize] = Some(text.into());
            Ok(())
        };
        for (text, id) in &spec.vocab {
            assign(&mut tokens, &mut token_ids, text, *id)?;
        }

        // Merges and byte symbols see the vocabulary only (as the BPE model does).
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let token = byte_to_char(b as u8).to_string();
            *slot = *token_ids
                .get(token.as_str())
                .ok_or(TokenizerError::MissingByteToken {
                    byte: b as u8,
                    token,
                })?;
        }
        let mut merges = Merges::with_capacity(spec.merges.len());
        let mut joined = String::new();
        for (rank, (left, right)) in spec.merges.iter().enumerate() {
            let unknown = |token: &str| TokenizerError::MergeUnknownToken {
                rank,
                left: left.clone(),
                right: right.clone(),
                token: token.to_string(),
            };
            let a = *token_ids.get(left.as_str()).ok_or_else(|| unknown(left))?;
            let b = *token_ids
                .get(right.as_str())
                .ok_or_else(|| unknown(right))?;
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let merged = *token_ids
                .get(joined.as_str())
                .ok_or_else(|| unknown(&joined))?;
            if let Some(first_rank) = merges.insert(a, b, rank as u32, merged) {
                return Err(TokenizerError::DuplicateMerge {
                    rank,
                    first_rank: first_rank as usize,
                    left: left.clone(),
                    right: right.clone(),
                });
            }
        }

        let mut kinds = vec![0u8; n_ids];
        for a in &spec.added {
            if a.content.is_empty() {
                return Err(TokenizerError::EmptyAddedToken { id: a.id });
            }
            assign(&mut tokens, &mut token_ids, &a.content, a.id)?;
            kinds[a.id as usize] = if a.special { KIND_SPECIAL } else { KIND_ADDED };
        }
        let added = AddedMatcher::new(spec.added.iter().map(|a| (a.content.clone(), a.id)));

        let mut decoded = Vec::new();
        let mut offsets = Vec::with_capacity(n_ids + 1);
        offsets.push(0u32);
        for token in &tokens {
            if let Some(t) = token {
                decoded.extend_from_slice(&token_to_bytes(t));
            }
            offsets.push(decoded.len() as u32);
        }

        Ok(Tokenizer {
            token_ids,
            tokens,
            decoded,
            offsets,
            kinds,
            byte_ids,
            merges,
            added,
            nfc: spec.nfc,
            cache: Mutex::new(WordCache::default()),
        })
    }

    /// One more than the largest assigned id. (A GGUF vocabulary pads the embedding matrix
    /// with `[PAD…]` entries that are not tokens: the model's `vocab_size` can be larger.)
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The token's text: byte-level form (`"Ġhello"`) for vocabulary tokens, the content for
    /// added tokens. `None` for an unassigned id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize)?.as_deref()
    }

    /// The id of a token given in byte-level form, or of an added token's content.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.token_ids.get(token).copied()
    }

    /// Whether `id` is a special added token (what `skip_special_tokens` drops).
    pub fn is_special(&self, id: u32) -> bool {
        self.kinds.get(id as usize) == Some(&KIND_SPECIAL)
    }

    /// Whether `id` is an added token (special or not), matched verbatim in text.
    pub fn is_added(&self, id: u32) -> bool {
        self.kinds.get(id as usize).is_some_and(|&k| k != 0)
    }

    /// Whether `id` is assigned.
    pub fn contains_id(&self, id: u32) -> bool {
        self.id_to_token(id).is_some()
    }

    /// The bytes `id` decodes to; `None` for an unassigned id.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize)?.as_ref()?;
        let i = id as usize;
        Some(&self.decoded[self.offsets[i] as usize..self.offsets[i + 1] as usize])
    }

    /// Encodes `text` (no BOS/EOS are added: Qwen2 adds none).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, &mut out);
        out
    }

    /// Encodes `text`, appending the ids to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        let mut guard = self.cache.try_lock().ok();
        let mut cache = guard.as_deref_mut();
        let mut scratch = Vec::new();
        let mut pos = 0;
        while let Some(found) = self.added.find(text, pos) {
            self.encode_piece(&text[pos..found.start], out, &mut cache, &mut scratch);
            out.push(found.id);
            pos = found.end;
        }
        self.encode_piece(&text[pos..], out, &mut cache, &mut scratch);
    }

    /// Encodes `text` without looking for added tokens: `<|im_end|>` written in the text is
    /// encoded as ordinary characters (for untrusted text placed inside a prompt).
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut guard = self.cache.try_lock().ok();
        let mut cache = guard.as_deref_mut();
        self.encode_piece(text, &mut out, &mut cache, &mut Vec::new());
        out
    }

    fn encode_piece(
        &self,
        piece: &str,
        out: &mut Vec<u32>,
        cache: &mut Option<&mut WordCache>,
        scratch: &mut Vec<u32>,
    ) {
        if piece.is_empty() {
            return;
        }
        let normalized: Cow<str> = if self.nfc {
            normalize::nfc(piece)
        } else {
            Cow::Borrowed(piece)
        };
        for word in pretokenize::words(&normalized) {
            self.encode_word(word, out, cache, scratch);
        }
    }

    #[inline]
    fn encode_word(
        &self,
        word: &str,
        out: &mut Vec<u32>,
        cache: &mut Option<&mut WordCache>,
        scratch: &mut Vec<u32>,
    ) {
        let bytes = word.as_bytes();
        if bytes.len() == 1 {
            out.push(self.byte_ids[bytes[0] as usize]);
            return;
        }
        let cacheable = bytes.len() <= CACHE_MAX_WORD;
        if cacheable {
            if let Some(cache) = cache.as_deref() {
                if let Some(ids) = cache.get(word) {
                    out.extend_from_slice(ids);
                    return;
                }
            }
        }
        scratch.clear();
        scratch.extend(bytes.iter().map(|&b| self.byte_ids[b as usize]));
        self.merges.apply(scratch);
        out.extend_from_slice(scratch);
        if cacheable {
            if let Some(cache) = cache.as_deref_mut() {
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(word.into(), scratch.as_slice().into());
            }
        }
    }

    /// Decodes ids to text. Ids that are not assigned are skipped (as Hugging Face does);
    /// invalid UTF-8 becomes U+FFFD. Special tokens are kept (`skip_special_tokens=False`).
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids, false)).into_owned()
    }

    /// Like [`decode`](Self::decode), leaving out special tokens (`skip_special_tokens=True`).
    pub fn decode_skip_special(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids, true)).into_owned()
    }

    /// Like [`decode`](Self::decode), but an unassigned id is an error.
    pub fn try_decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if let Some(&bad) = ids.iter().find(|&&id| !self.contains_id(id)) {
            return Err(TokenizerError::UnknownId(bad));
        }
        Ok(self.decode(ids))
    }

    /// The raw bytes of the ids (unassigned ids skipped).
    pub fn decode_bytes(&self, ids: &[u32], skip_special: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if skip_special && self.is_special(id) {
                continue;
            }
            if let Some(b) = self.token_bytes(id) {
                out.extend_from_slice(b);
            }
        }
        out
    }

    /// A streaming decoder over this tokenizer.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }
}

#[cfg(test)]
mod tests;
