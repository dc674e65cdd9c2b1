//! Incremental decoding: ids go in one at a time, complete UTF-8 text comes out.

use super::{Tokenizer, TokenizerError};

/// Decodes ids one at a time, yielding only complete characters: the bytes of a character
/// split across tokens (a Chinese character, an emoji) are held back until it is whole, and
/// it comes out once. Invalid bytes become U+FFFD exactly where [`Tokenizer::decode`] puts
/// them, so the concatenation of everything `push` and `finish` return equals `decode` of
/// all the ids.
///
/// ```
/// # use qwenc_runtime::tokenizer::{StreamDecoder, Tokenizer};
/// # fn show(tokenizer: &Tokenizer, ids: &[u32]) -> Result<(), Box<dyn std::error::Error>> {
/// let mut stream = StreamDecoder::new(tokenizer);
/// for &id in ids {
///     print!("{}", stream.push(id)?);
/// }
/// print!("{}", stream.finish().unwrap_or_default());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
    skip_special: bool,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
            skip_special: false,
        }
    }

    /// Leave out special tokens (`skip_special_tokens=True`).
    pub fn skip_special_tokens(mut self, skip: bool) -> Self {
        self.skip_special = skip;
        self
    }

    /// Adds one id. Returns the text completed by it: empty while a character is incomplete
    /// (or for a skipped special token). An unassigned id is an error and leaves the
    /// decoder unchanged.
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        let bytes = self
            .tokenizer
            .token_bytes(id)
            .ok_or(TokenizerError::UnknownId(id))?;
        if self.skip_special && self.tokenizer.is_special(id) {
            return Ok(String::new());
        }
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix is valid UTF-8 by construction.
                    out.push_str(&String::from_utf8_lossy(
                        &self.pending[start..start + valid],
                    ));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += valid + n;
                        }
                        None => {
                            // An incomplete character at the end: wait for more bytes.
                            start += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// Number of bytes held back (the start of an incomplete character).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Ends the stream: held-back bytes of an incomplete character come out as one U+FFFD
    /// (as `decode` shows them). The decoder is empty afterwards and can be reused.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(s)
    }
}
