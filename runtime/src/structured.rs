//! Constrained decoding: the output follows a JSON schema because, at every position, the
//! tokens the schema forbids get logit `-inf` before the sampler sees them.
//!
//! The masks come from `llguidance` (the structured-output engine of llama.cpp and vLLM,
//! maintained by the Guidance team): an Earley parser over a lexer of regex derivatives,
//! walked against a trie of the vocabulary. A hand-written JSON-schema compiler would cover
//! less of JSON Schema, and be slower and less tested. Unsupported schema features are
//! reported when the grammar is built, so a request naming one is refused before it runs.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::tokenizer::Tokenizer;

/// Builds constraints for one model's vocabulary (the trie is built once: ~150k tokens).
pub struct Grammars {
    factory: ParserFactory,
}

/// Why a grammar could not be built or followed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GrammarError(pub String);

impl Grammars {
    /// For a model with `vocab` logits per position whose tokenizer is `tokenizer`. `eos` is
    /// the token that ends a finished grammar's output (each constraint also allows its own
    /// stop ids there, see [`Constraint::mask`]).
    pub fn new(tokenizer: &Tokenizer, vocab: usize, eos: u32) -> Result<Grammars, GrammarError> {
        let words: Vec<Vec<u8>> = (0..vocab as u32)
            .map(|id| match tokenizer.token_bytes(id) {
                // Added tokens are special to the trie: never produced from text bytes.
                Some(_) if tokenizer.is_added(id) => {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(tokenizer.id_to_token(id).unwrap_or("").as_bytes());
                    w
                }
                Some(b) => b.to_vec(),
                // Padding ids of the embedding matrix: no bytes, never allowed.
                None => Vec::new(),
            })
            .collect();
        let trie = TokTrie::from(&TokRxInfo::new(vocab as u32, eos), &words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GrammarError(e.to_string()))?;
        factory.quiet();
        Ok(Grammars { factory })
    }

    /// Output that is one JSON value valid against `schema`, written as Python's
    /// `json.dumps` writes it (`", "` between items, `": "` after keys, no other
    /// whitespace). Free whitespace would let a model loop on blank lines without end; a
    /// schema's own `x-guidance` options win.
    pub fn json_schema(&self, schema: &Value) -> Result<Constraint, GrammarError> {
        let mut schema = match schema {
            Value::Bool(true) => serde_json::json!({}),
            s => s.clone(),
        };
        if let Value::Object(o) = &mut schema {
            o.entry("x-guidance").or_insert_with(|| {
                serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
            });
        }
        let grammar = TopLevelGrammar::from_json_schema(schema);
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| GrammarError(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(GrammarError(e));
        }
        Ok(Constraint { matcher })
    }

    /// Output that is one JSON object (OpenAI's `json_object` mode).
    pub fn json_object(&self) -> Result<Constraint, GrammarError> {
        self.json_schema(&serde_json::json!({"type": "object"}))
    }
}

/// One sequence's grammar state.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
}

impl Constraint {
    /// Sets the logits of the tokens the grammar forbids at this position to `-inf`. Where
    /// the grammar may end, each of `stop_ids` is allowed (and once it has ended, only they).
    pub fn mask(&mut self, logits: &mut [f32], stop_ids: &[u32]) -> Result<(), GrammarError> {
        let ended = self.matcher.is_stopped();
        let allowed = if ended {
            None
        } else {
            Some(
                self.matcher
                    .compute_mask()
                    .map_err(|e| GrammarError(e.to_string()))?,
            )
        };
        let may_end = ended || self.matcher.is_accepting().unwrap_or(false);
        for (id, x) in logits.iter_mut().enumerate() {
            let id = id as u32;
            let ok = if stop_ids.contains(&id) {
                may_end
            } else {
                allowed.as_ref().is_some_and(|m| m.is_allowed(id))
            };
            if !ok {
                *x = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances past `token` (a stop token ends the grammar and needs no advance).
    pub fn accept(&mut self, token: u32, stop_ids: &[u32]) -> Result<(), GrammarError> {
        if stop_ids.contains(&token) || self.matcher.is_stopped() {
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| GrammarError(e.to_string()))
    }
}
