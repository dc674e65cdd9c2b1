//! The generation loop, and a chat session that keeps its KV cache across turns.
//!
//! [`generate`] runs the prompt through the model in one forward pass (the *prefill*), then
//! produces tokens one at a time (the *decode*): sample a token from the last logits, hand
//! it to the callback, run it through the model to get the next logits. The last sampled
//! token is never run through the model, so after a call the cache holds the prompt and all
//! generated tokens but the last.
//!
//! With [`GenerateOptions::speculate`] the decode drafts tokens by prompt lookup and checks
//! them in one forward pass ([`crate::speculate`]): the pass runs the pending token and the
//! `K` drafts with the logits of every position, the drafts are accepted while they are what
//! the sampler chooses, and the cache is truncated back past the rejected ones. Tokens still
//! reach the callback one at a time, and the invariant above holds.

use std::ops::ControlFlow;
use std::time::Instant;

use crate::chat::{render, ChatMessage, IM_END};
use crate::model::{ForwardError, KvCache, LogitsFor, Model};
use crate::sampler::{Sampler, SamplerConfig, SamplerError};
use crate::speculate::{self, Controller, PromptLookup, MAX_DRAFT};

/// What [`generate`] does besides the prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate (at least 1). The stop token, when one ends the generation,
    /// counts as generated.
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Never produce the stop tokens (the model's eos ids and `extra_stop_ids`): their
    /// logits count as `-inf` (transformers' `min_new_tokens`), so exactly `max_tokens`
    /// tokens come out.
    pub ignore_eos: bool,
    /// Tokens that end the generation besides [`ModelInfo::eos_token_ids`](crate::model::ModelInfo::eos_token_ids)
    /// (e.g. `<|im_end|>` for a chat answer of a base model).
    pub extra_stop_ids: Vec<u32>,
    /// Speculative decoding by prompt lookup (on by default): lossless — greedy decoding
    /// gives the same tokens, sampling the same distribution (not the same draws for a seed)
    /// — and it turns itself off while its drafts keep failing.
    pub speculate: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            sampler: SamplerConfig::default(),
            ignore_eos: false,
            extra_stop_ids: Vec::new(),
            speculate: true,
        }
    }
}

/// Why the generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token (eos or extra stop id) was generated; it is the last generated token.
    Eos(u32),
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The callback returned `ControlFlow::Break` (for a token that is not a stop token).
    Callback,
}

impl StopReason {
    /// `"eos"`, `"max_tokens"` or `"callback"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::Eos(_) => "eos",
            StopReason::MaxTokens => "max_tokens",
            StopReason::Callback => "callback",
        }
    }
}

/// Counts and timings of one [`generate`] call.
///
/// - *Prefill* is the single forward pass over the prompt, up to its logits.
/// - *Decode* is everything after it that is model, sampler or drafting work: every
///   sampling (the first token's too), drafting, and the forward passes after the prefill
///   (one per generated token but the last without speculation; fewer with it). The time
///   spent in the callback (printing) is not counted.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateStats {
    /// Tokens of the prompt (the prefill's forward pass).
    pub prompt_tokens: usize,
    /// Tokens sampled, the stop token included.
    pub generated_tokens: usize,
    /// Tokens generated after the first: `generated_tokens - 1` (the first comes from the
    /// prefill's logits). Without speculation this is also the number of decode passes.
    pub decode_tokens: usize,
    /// Forward passes of the decode, plain and verification ones: `decode_tokens` without
    /// speculation, fewer when drafts are accepted.
    pub decode_passes: usize,
    /// Decode passes that verified drafted tokens.
    pub verify_passes: usize,
    /// Tokens drafted into verification passes.
    pub drafted_tokens: usize,
    /// Drafted tokens that were accepted and generated (each one a decode pass saved).
    pub accepted_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// `prompt_tokens / prefill_seconds` (0 if no time was measured).
    pub prefill_tok_s: f64,
    /// `decode_tokens / decode_seconds`: tokens after the first per second of decode, what a
    /// reader sees, with or without speculation (0 if there were none).
    pub decode_tok_s: f64,
    pub stop: StopReason,
}

impl GenerateStats {
    /// `accepted_tokens / drafted_tokens` (0 when nothing was drafted).
    pub fn acceptance_rate(&self) -> f64 {
        rate(self.accepted_tokens, self.drafted_tokens as f64)
    }
}

fn rate(count: usize, seconds: f64) -> f64 {
    if count == 0 || seconds <= 0.0 {
        0.0
    } else {
        count as f64 / seconds
    }
}

/// Why [`generate`] refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty: at least one token is needed")]
    EmptyPrompt,
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    #[error("{}", context_overflow_message(*cached, *prompt, *max_tokens, *context))]
    ContextOverflow {
        /// Positions already in the cache.
        cached: usize,
        prompt: usize,
        max_tokens: usize,
        /// The limit: the smaller of the cache capacity and the model's context.
        context: usize,
    },
    #[error("prompt token {index} is id {id}, outside the vocabulary (size {vocab})")]
    TokenOutOfRange { index: usize, id: u32, vocab: usize },
    #[error(
        "the model returned {got} logits for one position, expected the vocabulary size {expected}"
    )]
    BadLogits { got: usize, expected: usize },
    #[error("invalid sampler settings: {0}")]
    Sampler(String),
    #[error("forward pass failed: {0}")]
    Forward(#[from] ForwardError),
}

impl From<SamplerError> for GenerateError {
    fn from(e: SamplerError) -> Self {
        GenerateError::Sampler(e.to_string())
    }
}

fn context_overflow_message(
    cached: usize,
    prompt: usize,
    max_tokens: usize,
    context: usize,
) -> String {
    let total = cached.saturating_add(prompt).saturating_add(max_tokens);
    let cached = if cached > 0 {
        format!("{cached} tokens already in the cache + ")
    } else {
        String::new()
    };
    format!(
        "{cached}a prompt of {prompt} tokens + {max_tokens} tokens to generate = {total} tokens, \
         more than the context of {context} tokens"
    )
}

/// Checks that `prompt_len + max_tokens` more positions fit after `cached` in `context`.
pub fn check_fits(
    cached: usize,
    prompt_len: usize,
    max_tokens: usize,
    context: usize,
) -> Result<(), GenerateError> {
    if prompt_len == 0 {
        return Err(GenerateError::EmptyPrompt);
    }
    if max_tokens == 0 {
        return Err(GenerateError::ZeroMaxTokens);
    }
    if cached.saturating_add(prompt_len).saturating_add(max_tokens) > context {
        return Err(GenerateError::ContextOverflow {
            cached,
            prompt: prompt_len,
            max_tokens,
            context,
        });
    }
    Ok(())
}

/// The positions a cache can hold for `model`: its capacity, at most the model's context.
pub fn cache_limit(model: &dyn Model, cache: &KvCache) -> usize {
    cache.capacity.min(model.info().max_context)
}

/// Generates after `prompt`, which is run at positions `cache.len..` (an empty cache for a
/// fresh sequence; a filled one continues it). Each generated token is passed to `on_token`
/// as soon as it is chosen; `ControlFlow::Break` stops the generation after that token.
///
/// Stops at `opts.max_tokens` tokens, at a stop token (the model's eos ids and
/// `opts.extra_stop_ids`, unless `opts.ignore_eos`), or when the callback breaks.
///
/// Refused before any forward pass: an empty prompt, `max_tokens == 0`, a prompt id outside
/// the vocabulary, invalid sampler settings, and `cache.len + prompt.len() + max_tokens`
/// beyond the cache capacity or the model's context.
pub fn generate(
    model: &dyn Model,
    cache: &mut KvCache,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
) -> Result<GenerateStats, GenerateError> {
    let mut sampler = Sampler::new(opts.sampler.clone())?;
    generate_with_sampler(model, cache, prompt, opts, &mut sampler, on_token)
}

/// [`generate`] with a sampler that lives across calls (its random stream continues);
/// `opts.sampler` is not used.
pub fn generate_with_sampler(
    model: &dyn Model,
    cache: &mut KvCache,
    prompt: &[u32],
    opts: &GenerateOptions,
    sampler: &mut Sampler,
    on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
) -> Result<GenerateStats, GenerateError> {
    generate_after(model, cache, &[], prompt, opts, sampler, on_token)
}

/// [`generate_with_sampler`] where `history` is what the cache already holds (or a suffix
/// of it): speculation drafts from it as well as from the prompt and the generated tokens.
fn generate_after(
    model: &dyn Model,
    cache: &mut KvCache,
    history: &[u32],
    prompt: &[u32],
    opts: &GenerateOptions,
    sampler: &mut Sampler,
    on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
) -> Result<GenerateStats, GenerateError> {
    let info = model.info();
    let limit = cache_limit(model, cache);
    check_fits(cache.len, prompt.len(), opts.max_tokens, limit)?;
    let vocab = info.vocab_size;
    if let Some((index, &id)) = prompt
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= vocab)
    {
        return Err(GenerateError::TokenOutOfRange { index, id, vocab });
    }
    let mut stop_ids: Vec<u32> = info.eos_token_ids.clone();
    stop_ids.extend(&opts.extra_stop_ids);
    let suppress: &[u32] = if opts.ignore_eos { &stop_ids } else { &[] };
    let check_logits = |logits: &[f32], rows: usize| {
        if logits.len() == rows * vocab {
            Ok(())
        } else {
            Err(GenerateError::BadLogits {
                got: logits.len() / rows.max(1),
                expected: vocab,
            })
        }
    };

    let start = Instant::now();
    let mut logits = model.forward(cache, prompt, LogitsFor::Last)?;
    let prefill = start.elapsed();
    check_logits(&logits, 1)?;

    let t = Instant::now();
    let mut lookup = opts.speculate.then(|| {
        let mut l = PromptLookup::new();
        l.extend(history);
        l.extend(prompt);
        l
    });
    let mut decode = t.elapsed();
    let mut control = Controller::new();
    // The drafts the logits were computed with: `logits` has `draft.len() + 1` rows, row i
    // for the position after the pending token and `draft[..i]`.
    let mut draft: Vec<u32> = Vec::with_capacity(MAX_DRAFT);
    let mut input: Vec<u32> = Vec::with_capacity(MAX_DRAFT + 1);
    let mut dist = Vec::new();
    // Positions cached before row 0's token: the cache keeps `base + i` positions when the
    // token of row i is the last generated.
    let mut base = cache.len;
    let mut generated = 0usize;
    let (mut decode_passes, mut verify_passes) = (0usize, 0usize);
    let (mut drafted, mut accepted) = (0usize, 0usize);
    let stop = 'decode: loop {
        // The last generated token, and its row.
        let (mut pending, mut last_row) = (0u32, 0usize);
        for row in 0..=draft.len() {
            let t = Instant::now();
            let (token, is_draft) = speculate::choose(
                sampler,
                &logits[row * vocab..(row + 1) * vocab],
                suppress,
                draft.get(row).copied(),
                &mut dist,
            );
            decode += t.elapsed();
            generated += 1;
            accepted += usize::from(is_draft);
            let flow = on_token(token);
            let stop = if !opts.ignore_eos && stop_ids.contains(&token) {
                Some(StopReason::Eos(token))
            } else if flow.is_break() {
                Some(StopReason::Callback)
            } else if generated >= opts.max_tokens {
                Some(StopReason::MaxTokens)
            } else {
                None
            };
            if let Some(stop) = stop {
                // Drop the drafts after this token (and any this token rejected).
                cache.truncate(base + row);
                break 'decode stop;
            }
            let t = Instant::now();
            if let Some(l) = lookup.as_mut() {
                l.push(token);
            }
            decode += t.elapsed();
            (pending, last_row) = (token, row);
            if !is_draft {
                break;
            }
        }
        let t = Instant::now();
        cache.truncate(base + last_row);
        if !draft.is_empty() {
            control.record(draft.len(), last_row);
        }
        draft.clear();
        if let Some(l) = &lookup {
            // Never past max_tokens (a pass yields up to K + 1 tokens) nor the context.
            let room = (opts.max_tokens - generated - 1).min(limit.saturating_sub(cache.len + 1));
            if room > 0 {
                let k = control.draft_len().min(room);
                l.draft(k, &mut draft);
            }
        }
        input.clear();
        input.push(pending);
        input.extend_from_slice(&draft);
        let rows = if draft.is_empty() {
            model.forward_into(cache, &input, LogitsFor::Last, &mut logits)?;
            1
        } else {
            model.forward_into(cache, &input, LogitsFor::All, &mut logits)?;
            verify_passes += 1;
            drafted += draft.len();
            input.len()
        };
        decode += t.elapsed();
        decode_passes += 1;
        base = cache.len - draft.len();
        check_logits(&logits, rows)?;
    };

    let prefill_seconds = prefill.as_secs_f64();
    let decode_seconds = decode.as_secs_f64();
    let decode_tokens = generated - 1;
    Ok(GenerateStats {
        prompt_tokens: prompt.len(),
        generated_tokens: generated,
        decode_tokens,
        decode_passes,
        verify_passes,
        drafted_tokens: drafted,
        accepted_tokens: accepted,
        prefill_seconds,
        decode_seconds,
        prefill_tok_s: rate(prompt.len(), prefill_seconds),
        decode_tok_s: rate(decode_tokens, decode_seconds),
        stop,
    })
}

/// Length of the common prefix of `a` and `b`.
pub(crate) fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// One answer of a [`ChatSession`].
#[derive(Clone, Debug, PartialEq)]
pub struct ChatTurn {
    /// Every generated id, the stop token included.
    pub ids: Vec<u32>,
    /// The answer as it is kept in the conversation: the ids without the stop token, decoded.
    pub text: String,
    pub stats: GenerateStats,
    /// The conversation did not fit with this message: it was reset, and this message
    /// started a new one.
    pub reset_before: bool,
    /// The context is full after this answer (it may be cut short): the conversation was
    /// reset.
    pub reset_after: bool,
}

/// A conversation with a model in the ChatML format whose KV cache is kept across turns.
///
/// The invariant: after every turn, the cache holds exactly the tokens of the whole
/// conversation rendered by [`chat::render`](crate::chat::render) (without generation prompt)
/// and encoded by the tokenizer — the same as re-rendering and re-encoding it from scratch.
/// Each turn reuses the longest common prefix of what is cached and what the re-rendered
/// conversation encodes to, and runs only the rest: normally the new
/// `<|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\n`; more if the generated ids of
/// an answer are not how its text re-encodes.
pub struct ChatSession<'m> {
    model: &'m dyn Model,
    cache: KvCache,
    sampler: Sampler,
    options: GenerateOptions,
    system: Option<String>,
    messages: Vec<ChatMessage>,
    /// The ids in the cache: `cached.len() == cache.len`.
    cached: Vec<u32>,
}

impl<'m> ChatSession<'m> {
    /// A session whose cache holds `capacity` positions (at most the model's context).
    /// `options.max_tokens` limits each answer (answers also end when the context is full);
    /// `<|im_end|>` is added to the stop ids when the tokenizer has it.
    pub fn new(
        model: &'m dyn Model,
        capacity: usize,
        system: Option<String>,
        mut options: GenerateOptions,
    ) -> Result<Self, GenerateError> {
        let sampler = Sampler::new(options.sampler.clone())?;
        if let Some(id) = model.tokenizer().token_to_id(IM_END) {
            if !options.extra_stop_ids.contains(&id) {
                options.extra_stop_ids.push(id);
            }
        }
        let mut session = ChatSession {
            model,
            cache: model.new_cache(capacity.min(model.info().max_context)),
            sampler,
            options,
            system,
            messages: Vec::new(),
            cached: Vec::new(),
        };
        session.reset();
        Ok(session)
    }

    /// The positions the conversation may fill.
    pub fn context(&self) -> usize {
        cache_limit(self.model, &self.cache)
    }

    /// The conversation: the system message (if one was given) and the turns.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// The ids whose keys and values are in the cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Forgets the conversation (the system message stays).
    pub fn reset(&mut self) {
        self.messages.clear();
        if let Some(system) = &self.system {
            self.messages.push(ChatMessage::system(system.clone()));
        }
        self.cache.truncate(0);
        self.cached.clear();
    }

    fn encode(&self, add_generation_prompt: bool) -> Vec<u32> {
        self.model
            .tokenizer()
            .encode(&render(&self.messages, add_generation_prompt))
    }

    /// Makes the cache hold `target[..upto]`: keeps the common prefix, runs the rest.
    /// Returns the number of positions kept.
    fn reuse_prefix(&mut self, target: &[u32], upto: usize) -> usize {
        let keep = common_prefix(&self.cached, target).min(upto);
        self.cache.truncate(keep);
        self.cached.truncate(keep);
        keep
    }

    /// Sends a user message and generates the answer, passing each generated id to
    /// `on_token` (the stop token included). The answer ends at a stop token, at
    /// `max_tokens`, when the context is full, or when the callback breaks.
    ///
    /// If the conversation with this message leaves no room for an answer, the conversation
    /// is reset first ([`ChatTurn::reset_before`]); if the message alone leaves no room, the
    /// result is [`GenerateError::ContextOverflow`] and the session is unchanged. After any
    /// other error the conversation is reset.
    pub fn send(
        &mut self,
        user: &str,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<ChatTurn, GenerateError> {
        let context = self.context();
        let mut reset_before = false;
        self.messages.push(ChatMessage::user(user));
        let mut target = self.encode(true);
        if target.len() >= context {
            // No room for an answer: start a new conversation with this message, if it fits.
            self.messages.pop();
            let mut fresh: Vec<ChatMessage> = self.system.iter().map(ChatMessage::system).collect();
            fresh.push(ChatMessage::user(user));
            let alone = self.model.tokenizer().encode(&render(&fresh, true));
            if alone.len() >= context {
                return Err(GenerateError::ContextOverflow {
                    cached: 0,
                    prompt: alone.len(),
                    max_tokens: 1,
                    context,
                });
            }
            self.reset();
            self.messages = fresh;
            target = alone;
            reset_before = true;
        }

        let keep = self.reuse_prefix(&target, target.len() - 1);
        let prompt = &target[keep..];
        let room = context - target.len();
        let max_tokens = self.options.max_tokens.min(room);
        let opts = GenerateOptions {
            max_tokens,
            ..self.options.clone()
        };
        let mut ids = Vec::new();
        let result = generate_after(
            self.model,
            &mut self.cache,
            &self.cached,
            prompt,
            &opts,
            &mut self.sampler,
            &mut |id| {
                ids.push(id);
                on_token(id)
            },
        );
        let stats = match result {
            Ok(stats) => stats,
            Err(e) => {
                self.reset();
                return Err(e);
            }
        };
        self.cached.extend_from_slice(prompt);
        self.cached.extend_from_slice(&ids[..ids.len() - 1]);
        debug_assert_eq!(self.cached.len(), self.cache.len);

        let content = match stats.stop {
            StopReason::Eos(_) => &ids[..ids.len() - 1],
            _ => &ids[..],
        };
        let text = self.model.tokenizer().decode(content);
        self.messages.push(ChatMessage::assistant(text.clone()));

        // Close the turn now (`<|im_end|>\n`, or more if the answer re-encodes otherwise), so
        // that the cache holds the re-rendered conversation while the user types.
        let cut_by_context = stats.stop == StopReason::MaxTokens && max_tokens == room;
        let closed = self.encode(false);
        let mut reset_after = cut_by_context || closed.len() >= context;
        if !reset_after {
            let keep = self.reuse_prefix(&closed, closed.len());
            let rest = &closed[keep..];
            if !rest.is_empty() {
                match self.model.forward(&mut self.cache, rest, LogitsFor::Last) {
                    Ok(_) => self.cached.extend_from_slice(rest),
                    Err(ForwardError::ContextOverflow { .. }) => reset_after = true,
                    Err(e) => {
                        self.reset();
                        return Err(e.into());
                    }
                }
            }
        }
        if reset_after {
            self.reset();
        }
        Ok(ChatTurn {
            ids,
            text,
            stats,
            reset_before,
            reset_after,
        })
    }
}
