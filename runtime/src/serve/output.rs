//! Turning the worker's tokens into response text: incremental UTF-8 decoding, stop strings
//! (text is held back while it could be the start of one), and OpenAI's completion
//! `logprobs` object.

use serde_json::{json, Map, Value};

use super::worker::TokenLogprob;
use crate::tokenizer::Tokenizer;

/// Text released by one [`TextAssembler::push`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    pub text: String,
    /// A stop string was found: the text ends before it, and nothing more comes.
    pub stopped: bool,
}

/// Builds the generated text token by token.
pub struct TextAssembler {
    stops: Vec<String>,
    /// Ids whose text is left out (the stop ids; special tokens are left out too).
    hidden: Vec<u32>,
    /// Bytes not yet decoded (an incomplete UTF-8 sequence).
    pending: Vec<u8>,
    text: String,
    /// `text[..released]` has been handed out.
    released: usize,
    stopped: bool,
}

/// Where in `text` the earliest stop string starts, searching from `from`.
pub fn find_stop(text: &str, stops: &[String], from: usize) -> Option<usize> {
    stops
        .iter()
        .filter_map(|s| {
            text.get(from..)
                .and_then(|t| t.find(s.as_str()))
                .map(|p| p + from)
        })
        .min()
}

/// The first char boundary `i >= from` such that `text[i..]` is a proper prefix of a stop
/// string: text from there on must wait for the next token.
pub fn hold_back_from(text: &str, stops: &[String], from: usize) -> usize {
    for (i, _) in text.char_indices().filter(|&(i, _)| i >= from) {
        let tail = &text[i..];
        if stops
            .iter()
            .any(|s| s.len() > tail.len() && s.starts_with(tail))
        {
            return i;
        }
    }
    text.len()
}

impl TextAssembler {
    pub fn new(stops: Vec<String>, hidden: Vec<u32>) -> Self {
        TextAssembler {
            stops,
            hidden,
            pending: Vec::new(),
            text: String::new(),
            released: 0,
            stopped: false,
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The id's text is left out of the response (a stop id).
    pub fn is_hidden(&self, id: u32) -> bool {
        self.hidden.contains(&id)
    }

    /// Adds one generated token; returns the text that can be released now.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Delta {
        if self.stopped {
            return Delta {
                text: String::new(),
                stopped: true,
            };
        }
        if !self.hidden.contains(&id) && !tokenizer.is_special(id) {
            if let Some(bytes) = tokenizer.token_bytes(id) {
                self.pending.extend_from_slice(bytes);
            }
        }
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_some() => {
                // Invalid, not merely incomplete: decode it lossily now.
                let s = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                self.text.push_str(&s);
                0
            }
            Err(e) => e.valid_up_to(),
        };
        if valid > 0 {
            let s = std::str::from_utf8(&self.pending[..valid])
                .expect("checked")
                .to_string();
            self.pending.drain(..valid);
            self.text.push_str(&s);
        }
        self.release(false)
    }

    /// Ends the text: releases what was held back (an incomplete UTF-8 tail lossily).
    pub fn finish(&mut self) -> Delta {
        if !self.stopped && !self.pending.is_empty() {
            let s = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            self.text.push_str(&s);
        }
        self.release(true)
    }

    fn release(&mut self, all: bool) -> Delta {
        if self.stopped {
            return Delta {
                text: String::new(),
                stopped: true,
            };
        }
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        // A stop string may start in text already released but held back: search from
        // `longest` bytes before the release point (on a char boundary).
        let mut from = self.released.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        if let Some(at) = find_stop(&self.text, &self.stops, from) {
            let at = at.max(self.released);
            let text = self.text[self.released..at].to_string();
            self.text.truncate(at);
            self.released = at;
            self.stopped = true;
            return Delta {
                text,
                stopped: true,
            };
        }
        let upto = if all {
            self.text.len()
        } else {
            hold_back_from(&self.text, &self.stops, self.released)
        };
        let text = self.text[self.released..upto].to_string();
        self.released = upto;
        Delta {
            text,
            stopped: false,
        }
    }

    /// All text released so far.
    pub fn text(&self) -> &str {
        &self.text[..self.released]
    }
}

/// Characters (Unicode code points) that start in `bytes`: the `text_offset` unit.
fn chars_in(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count()
}

/// OpenAI's completion `logprobs`: `tokens`, `token_logprobs`, `top_logprobs`, `text_offset`.
pub struct LogprobsBuilder {
    tokens: Vec<Value>,
    token_logprobs: Vec<Value>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<Value>,
    /// Characters of the response text before the next token.
    offset: usize,
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// The token's text as the `tokens` entry and `top_logprobs` key (invalid UTF-8 lossily).
pub fn token_text(tokenizer: &Tokenizer, id: u32) -> String {
    String::from_utf8_lossy(tokenizer.token_bytes(id).unwrap_or_default()).into_owned()
}

fn top_map(tokenizer: &Tokenizer, lp: &TokenLogprob) -> Value {
    let mut map = Map::new();
    for &(id, l) in &lp.top {
        // Two ids with the same text keep the more likely one (listed first).
        map.entry(token_text(tokenizer, id))
            .or_insert_with(|| float(l));
    }
    Value::Object(map)
}

impl LogprobsBuilder {
    pub fn new() -> Self {
        LogprobsBuilder {
            tokens: Vec::new(),
            token_logprobs: Vec::new(),
            top_logprobs: Vec::new(),
            text_offset: Vec::new(),
            offset: 0,
        }
    }

    /// The echoed prompt: `logprobs[i]` is for `ids[i + 1]`; the first token has none.
    pub fn prompt(&mut self, tokenizer: &Tokenizer, ids: &[u32], logprobs: &[TokenLogprob]) {
        for (i, &id) in ids.iter().enumerate() {
            let lp = if i == 0 { None } else { logprobs.get(i - 1) };
            self.push(tokenizer, id, lp, true);
        }
    }

    /// One token; `in_text` says whether its text is part of the response text.
    pub fn push(
        &mut self,
        tokenizer: &Tokenizer,
        id: u32,
        lp: Option<&TokenLogprob>,
        in_text: bool,
    ) {
        self.tokens.push(Value::String(token_text(tokenizer, id)));
        self.token_logprobs
            .push(lp.map_or(Value::Null, |l| float(l.logprob)));
        self.top_logprobs
            .push(lp.map_or(Value::Null, |l| top_map(tokenizer, l)));
        self.text_offset.push(json!(self.offset));
        if in_text {
            self.offset += chars_in(tokenizer.token_bytes(id).unwrap_or_default());
        }
    }

    /// Moves the offset past `chars` characters of text that have no tokens here.
    pub fn skip_chars(&mut self, chars: usize) {
        self.offset += chars;
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Takes the entries so far (a streamed chunk's), keeping the offset.
    pub fn take(&mut self) -> Value {
        json!({
            "tokens": std::mem::take(&mut self.tokens),
            "token_logprobs": std::mem::take(&mut self.token_logprobs),
            "top_logprobs": std::mem::take(&mut self.top_logprobs),
            "text_offset": std::mem::take(&mut self.text_offset),
        })
    }
}

impl Default for LogprobsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Chat logprobs in OpenAI's shape: `{"content": [{"token", "logprob", "bytes",
/// "top_logprobs": [{"token", "logprob", "bytes"}, ...]}, ...]}`, one entry per token of the
/// answer's text (the stop token and hidden tokens have none).
#[derive(Default)]
pub struct ChatLogprobsBuilder {
    content: Vec<Value>,
}

fn chat_entry(tokenizer: &Tokenizer, id: u32, logprob: f64) -> Value {
    let bytes = tokenizer.token_bytes(id).unwrap_or_default();
    json!({"token": token_text(tokenizer, id), "logprob": float(logprob), "bytes": bytes})
}

impl ChatLogprobsBuilder {
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32, lp: &TokenLogprob) {
        let mut entry = chat_entry(tokenizer, id, lp.logprob);
        entry["top_logprobs"] = lp
            .top
            .iter()
            .map(|&(id, l)| chat_entry(tokenizer, id, l))
            .collect();
        self.content.push(entry);
    }

    pub fn is_empty(&self) -> bool {
        self.content.is_empty()
    }

    /// Takes the entries so far (a streamed chunk's).
    pub fn take(&mut self) -> Value {
        json!({"content": std::mem::take(&mut self.content)})
    }
}

/// The logprobs a choice reports, in its endpoint's shape.
pub enum Logprobs {
    /// `/v1/completions`: `tokens`, `token_logprobs`, `top_logprobs`, `text_offset`.
    Completion(LogprobsBuilder),
    /// `/v1/chat/completions`: `content`.
    Chat(ChatLogprobsBuilder),
}

impl Logprobs {
    /// One generated token; `in_text` says whether its text is part of the answer.
    pub fn push(
        &mut self,
        tokenizer: &Tokenizer,
        id: u32,
        lp: Option<&TokenLogprob>,
        in_text: bool,
    ) {
        match self {
            Logprobs::Completion(b) => b.push(tokenizer, id, lp, in_text),
            Logprobs::Chat(b) => {
                if let (Some(lp), true) = (lp, in_text) {
                    b.push(tokenizer, id, lp);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Logprobs::Completion(b) => b.is_empty(),
            Logprobs::Chat(b) => b.is_empty(),
        }
    }

    pub fn take(&mut self) -> Value {
        match self {
            Logprobs::Completion(b) => b.take(),
            Logprobs::Chat(b) => b.take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;
    use crate::testing::{FakeModel, ENDOFTEXT};

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn stop_search_and_hold_back() {
        let st = stops(&["END", "xy"]);
        assert_eq!(find_stop("abcENDxy", &st, 0), Some(3));
        assert_eq!(find_stop("abcENDxy", &st, 4), Some(6));
        assert_eq!(hold_back_from("abcEN", &st, 0), 3);
        assert_eq!(hold_back_from("abcx", &st, 0), 3);
        assert_eq!(hold_back_from("abc", &st, 0), 3);
        assert_eq!(hold_back_from("héE", &st, 0), "hé".len());
    }

    /// Pushing the tokens of a text one by one releases exactly the text up to the first
    /// stop string, whatever the token boundaries.
    #[test]
    fn assembler_cuts_at_stop_strings_across_tokens() {
        let m = FakeModel::new();
        let tok = m.tokenizer();
        let text = "the world is here, the end; and more text after the end";
        let ids = tok.encode(text);
        for stop in ["the end", "e, t", ";", "not present", "after the end"] {
            let mut asm = TextAssembler::new(stops(&[stop, "zzz"]), vec![ENDOFTEXT]);
            let mut out = String::new();
            let mut stopped = false;
            for &id in &ids {
                let d = asm.push(tok, id);
                out += &d.text;
                if d.stopped {
                    stopped = true;
                    break;
                }
            }
            if !stopped {
                let d = asm.finish();
                out += &d.text;
                stopped = d.stopped;
            }
            let expected = text.find(stop).map_or(text, |p| &text[..p]);
            assert_eq!(out, expected, "stop {stop:?}");
            assert_eq!(stopped, text.contains(stop));
        }
    }

    #[test]
    fn assembler_waits_for_whole_characters_and_hides_stop_ids() {
        let m = FakeModel::new();
        let tok = m.tokenizer();
        let mut asm = TextAssembler::new(vec![], vec![ENDOFTEXT]);
        // "é" is two byte tokens in the fake vocabulary.
        let ids = tok.encode("é");
        assert_eq!(ids.len(), 2);
        assert_eq!(asm.push(tok, ids[0]).text, "");
        assert_eq!(asm.push(tok, ids[1]).text, "é");
        assert_eq!(asm.push(tok, ENDOFTEXT).text, "");
        // A lone first byte at the end comes out lossily.
        assert_eq!(asm.push(tok, ids[0]).text, "");
        assert_eq!(asm.finish().text, "\u{fffd}");
    }
}
