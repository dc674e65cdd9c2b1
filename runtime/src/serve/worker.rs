//! The model worker: one thread owns the model, the KV caches and the queue.
//!
//! Requests arrive as [`Job`]s on a channel. Up to `parallel` of them are *active* (each with
//! its own KV cache sized to its prompt plus `max_tokens`); the others wait in arrival order.
//!
//! Each step is one forward pass over every active sequence ([`Model::forward_segments`]):
//! the next token of each decoding sequence, and chunks of the prompts being prefilled, up
//! to `prefill_chunk` prompt tokens per step shared in admission order. The weights are read
//! once per step for all of them, so the aggregate decode rate grows with the number of
//! streams, and a long prompt joins without stalling the streams already running. Each
//! sequence's logits are bit-identical to running it alone (the multi-sequence forward's
//! contract), so batching never changes an answer.
//!
//! A job whose receiver is gone (the client disconnected, or the handler saw a stop string)
//! is dropped at the next step, waiting or active, and its slot and cache are freed.

use std::collections::VecDeque;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::error::ApiError;
use super::metrics::{Metrics, TokenClock};
use super::prefix_cache::PrefixCache;
use crate::eval::scoring::token_logprob;
use crate::model::{KvCache, LogitsFor, Model, Segment};
use crate::penalties::{Penalties, TokenCounts};
use crate::sampler::{Sampler, SamplerConfig};
use crate::speculate::{self, Controller, PromptLookup};
use crate::structured::{Constraint, GrammarError};

/// The log-probability of one token and, if asked, the most likely alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f64,
    /// `(id, logprob)`, most likely first; ties to the lower id.
    pub top: Vec<(u32, f64)>,
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// A stop token was generated (it is the last token sent).
    Stop,
    /// `max_tokens` were generated.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// What the worker sends back for a job, in order: `PromptLogprobs` (if asked), `Token`s,
/// then `Done` or `Error`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Logprobs of prompt tokens `1..` (token 0 has none).
    PromptLogprobs(Vec<TokenLogprob>),
    Token {
        id: u32,
        logprob: Option<TokenLogprob>,
    },
    Done {
        finish: Finish,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Error(ApiError),
}

/// Counts the jobs admitted (waiting or active); the count drops when the job is dropped.
pub struct Permit(Arc<AtomicUsize>);

impl Permit {
    /// Takes one of `limit` places, or `None` if all are taken.
    pub fn try_acquire(count: &Arc<AtomicUsize>, limit: usize) -> Option<Permit> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(count.clone()))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One sequence to run.
pub struct Job {
    pub prompt: Vec<u32>,
    /// Tokens to generate at most (0: only the prompt, for its logprobs).
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Applied to the logits before sampling (and before the logprobs are taken).
    pub penalties: Penalties,
    /// Generation ends after any of these.
    pub stop_ids: Vec<u32>,
    /// Report logprobs of generated tokens with this many alternatives.
    pub logprobs: Option<usize>,
    /// Also report the prompt's logprobs (`echo` with `logprobs`).
    pub prompt_logprobs: bool,
    /// The grammar the output follows: forbidden tokens are masked before sampling.
    pub constraint: Option<Constraint>,
    pub events: UnboundedSender<Event>,
    pub permit: Permit,
    /// Times its tokens for `/metrics` (from its submission).
    pub clock: TokenClock,
}

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Sequences stepped together.
    pub parallel: usize,
    /// Prompt tokens per prefill step (a long prompt does not stall the others).
    pub prefill_chunk: usize,
    /// Bytes of KV cache kept for prefix reuse (0: none).
    pub prefix_cache_bytes: usize,
    /// Speculative decoding by prompt lookup, per sequence ([`crate::speculate`]).
    pub speculate: bool,
    /// What `/metrics` reports of the worker: its load, prompt tokens, and (as the prefix
    /// cache's counters) whatever else only the worker sees.
    pub metrics: Arc<Metrics>,
}

/// Where a sequence is.
enum Phase {
    /// `done` prompt tokens are in the cache.
    Prefill { done: usize },
    /// `Active::logits` predict the next token.
    Decode,
}

/// What a sequence runs in this step's forward pass.
enum Work {
    /// Nothing (its prefill waits for the step's prompt-token budget).
    Idle,
    /// These prompt tokens.
    Prompt(Range<usize>),
    /// [`Active::input`]: the token it just sampled, then the drafts to verify.
    Decode,
}

/// A sequence's prompt-lookup speculation: where drafts come from, how long they are, and
/// the drafts its last pass verified.
struct Speculation {
    lookup: PromptLookup,
    control: Controller,
    /// The drafts of the last pass: its logits have one row more than these.
    drafts: Vec<u32>,
    /// Scratch for the sampler's distribution.
    dist: Vec<(u32, f64)>,
}

struct Active {
    job: Job,
    cache: KvCache,
    sampler: Sampler,
    phase: Phase,
    work: Work,
    /// The logits of its last pass, as that pass's [`LogitsFor`] asked; while decoding, the
    /// row that predicts the next token, and one more per draft. One buffer per sequence,
    /// reused every step.
    logits: Vec<f32>,
    /// What a decode step runs: the sampled token, then the drafts.
    input: Vec<u32>,
    /// `None` with speculation off.
    speculation: Option<Speculation>,
    generated: usize,
    /// The generated ids that ran through the model (all but the last): with the prompt,
    /// what the cache holds when the sequence ends.
    ran: Vec<u32>,
    /// The ids generated so far, for the penalties.
    counts: TokenCounts,
    prompt_logprobs: Vec<TokenLogprob>,
    /// The prompt's logprobs once sent, kept for the prefix cache.
    kept_logprobs: Vec<TokenLogprob>,
}

fn grammar_error(e: GrammarError) -> ApiError {
    ApiError::internal(format!("the output left its grammar: {e}"))
}

/// `(logprob of token, top n alternatives)` of one row of logits. Every value is
/// `x - max - ln(sum)`, the formula of [`token_logprob`], so a token that is the most likely
/// has exactly the first alternative's logprob: lm-eval's `is_greedy` compares them with `==`.
pub fn logprob_with_top(row: &[f32], token: u32, n: usize) -> TokenLogprob {
    let (logprob, _) = token_logprob(row, token);
    let top = if n == 0 {
        Vec::new()
    } else {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let ln_sum = row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
        let mut ids: Vec<u32> = (0..row.len() as u32).collect();
        let better =
            |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
        let n = n.min(ids.len());
        if n < ids.len() {
            ids.select_nth_unstable_by(n - 1, better);
            ids.truncate(n);
        }
        ids.sort_unstable_by(better);
        ids.into_iter()
            .map(|id| (id, row[id as usize] as f64 - max - ln_sum))
            .collect()
    };
    TokenLogprob { logprob, top }
}

/// Whether a sequence goes on after a step.
enum Step {
    Continue,
    Finished,
}

impl Active {
    /// A sequence for `job`, starting from the longest prefix of its prompt in `prefixes`.
    fn new(
        model: &dyn Model,
        job: Job,
        sampler: Sampler,
        prefixes: &mut PrefixCache,
        speculate: bool,
    ) -> Active {
        let mut cache = model.new_cache(job.prompt.len() + job.max_tokens);
        let wants = job.prompt_logprobs.then(|| job.logprobs.unwrap_or(0));
        let hit = prefixes.lookup(model, &job.prompt, &mut cache, wants);
        let speculation = speculate.then(|| {
            let mut lookup = PromptLookup::new();
            lookup.extend(&job.prompt);
            Speculation {
                lookup,
                control: Controller::new(),
                drafts: Vec::new(),
                dist: Vec::new(),
            }
        });
        Active {
            job,
            cache,
            sampler,
            phase: Phase::Prefill {
                done: hit.positions,
            },
            work: Work::Idle,
            logits: Vec::new(),
            input: Vec::new(),
            speculation,
            generated: 0,
            ran: Vec::new(),
            counts: TokenCounts::default(),
            prompt_logprobs: hit.logprobs,
            kept_logprobs: Vec::new(),
        }
    }

    /// Leaves this sequence's cache (its prompt and the reply tokens that ran) to later
    /// requests, with the prompt's logprobs if they were computed.
    fn into_prefix(self, prefixes: &mut PrefixCache) {
        let mut tokens = self.job.prompt;
        tokens.extend_from_slice(&self.ran);
        let top_n = self.job.logprobs.unwrap_or(0);
        prefixes.insert(tokens, self.cache, self.kept_logprobs, top_n);
    }

    fn send(&self, e: Event) {
        // A closed receiver is noticed at the next step.
        let _ = self.job.events.send(e);
    }

    fn finish(&self, finish: Finish) -> Step {
        self.send(Event::Done {
            finish,
            prompt_tokens: self.job.prompt.len(),
            completion_tokens: self.generated,
        });
        Step::Finished
    }

    /// A decoding sequence chooses its next tokens from its logits and sends them: one, or,
    /// after a pass that verified drafts, the accepted drafts and the token after them
    /// ([`speculate::choose`]: the same tokens as plain greedy decoding, the same
    /// distribution when sampling). Unless that ends the sequence, the last token runs in
    /// this step's pass with the next drafts.
    fn sample_next(&mut self, vocab: usize) -> Result<Step, ApiError> {
        let drafts = self
            .speculation
            .as_mut()
            .map_or(Vec::new(), |s| std::mem::take(&mut s.drafts));
        // The cache holds the last pass's input; `base + row` positions stay when row `row`'s
        // token is the last generated (it has not run).
        let base = self.cache.len - drafts.len();
        let mut last_row = 0;
        for row in 0..=drafts.len() {
            let logits = &mut self.logits[row * vocab..(row + 1) * vocab];
            if let Some(c) = self.job.constraint.as_mut() {
                c.mask(logits, &self.job.stop_ids).map_err(grammar_error)?;
            }
            if !self.job.penalties.is_none() {
                self.job.penalties.apply(logits, &self.counts);
            }
            let (token, is_draft) = match self.speculation.as_mut() {
                Some(s) => speculate::choose(
                    &mut self.sampler,
                    logits,
                    &[],
                    drafts.get(row).copied(),
                    &mut s.dist,
                ),
                None => (self.sampler.sample(logits), false),
            };
            let logprob = self
                .job
                .logprobs
                .map(|n| logprob_with_top(logits, token, n));
            if let Some(c) = self.job.constraint.as_mut() {
                c.accept(token, &self.job.stop_ids).map_err(grammar_error)?;
            }
            self.generated += 1;
            self.counts.add(token);
            self.send(Event::Token { id: token, logprob });
            self.job.clock.token_sent();
            let finish = if self.job.stop_ids.contains(&token) {
                Some(Finish::Stop)
            } else if self.generated >= self.job.max_tokens {
                Some(Finish::Length)
            } else {
                None
            };
            if let Some(finish) = finish {
                self.keep_cached(base + row);
                return Ok(self.finish(finish));
            }
            if let Some(s) = self.speculation.as_mut() {
                s.lookup.push(token);
            }
            self.input.clear();
            self.input.push(token);
            last_row = row;
            if !is_draft {
                break;
            }
        }
        self.keep_cached(base + last_row);
        if let Some(s) = self.speculation.as_mut() {
            if !drafts.is_empty() {
                s.control.record(drafts.len(), last_row);
            }
            // Never past max_tokens: a pass yields up to one token more than its drafts (the
            // cache has room for max_tokens, so that bound is the tighter one).
            let room = self.job.max_tokens - self.generated - 1;
            if room > 0 {
                let k = s.control.draft_len().min(room);
                s.lookup.draft(k, &mut s.drafts);
            }
            self.input.extend_from_slice(&s.drafts);
        }
        self.ran.extend_from_slice(&self.input);
        self.work = Work::Decode;
        Ok(Step::Continue)
    }

    /// Keeps the first `len` positions of the cache (rejected drafts go) and the generated
    /// tokens among them.
    fn keep_cached(&mut self, len: usize) {
        self.cache.truncate(len);
        self.ran.truncate(len - self.job.prompt.len());
    }

    /// The logits this step's pass must return: every prompt row when the prompt's logprobs
    /// are asked for, the last row of the prompt's last chunk, each decoded token's row.
    fn logits_for(&self) -> LogitsFor {
        match &self.work {
            Work::Idle => LogitsFor::None,
            Work::Decode if self.input.len() > 1 => LogitsFor::All,
            Work::Decode => LogitsFor::Last,
            Work::Prompt(_) if self.job.prompt_logprobs => LogitsFor::All,
            Work::Prompt(r) if r.end == self.job.prompt.len() => LogitsFor::Last,
            Work::Prompt(_) => LogitsFor::None,
        }
    }

    /// Takes in the logits of this step's pass.
    fn absorb(&mut self, vocab: usize) -> Result<Step, ApiError> {
        let rows = match (&self.work, self.logits_for()) {
            (Work::Prompt(r), LogitsFor::All) => r.len(),
            (Work::Decode, LogitsFor::All) => self.input.len(),
            (_, LogitsFor::Last) => 1,
            _ => 0,
        };
        if self.logits.len() != rows * vocab {
            return Err(ApiError::internal(format!(
                "the model returned {} logits for {rows} rows of {vocab}",
                self.logits.len()
            )));
        }
        let work = std::mem::replace(&mut self.work, Work::Idle);
        let Work::Prompt(range) = work else {
            return Ok(Step::Continue);
        };
        if self.job.prompt_logprobs {
            // Row i predicts prompt token range.start + i + 1.
            let n = self.job.logprobs.unwrap_or(0);
            for (i, row) in self.logits.chunks(vocab).enumerate() {
                if let Some(&next) = self.job.prompt.get(range.start + i + 1) {
                    self.prompt_logprobs.push(logprob_with_top(row, next, n));
                }
            }
        }
        if range.end < self.job.prompt.len() {
            self.phase = Phase::Prefill { done: range.end };
            return Ok(Step::Continue);
        }
        if self.job.prompt_logprobs {
            let lps = std::mem::take(&mut self.prompt_logprobs);
            self.send(Event::PromptLogprobs(lps.clone()));
            self.kept_logprobs = lps;
            // Keep only the last row: it predicts the first generated token.
            self.logits.drain(..self.logits.len() - vocab);
        }
        if self.job.max_tokens == 0 {
            return Ok(self.finish(Finish::Length));
        }
        self.phase = Phase::Decode;
        Ok(Step::Continue)
    }
}

/// Runs jobs until every sender of `jobs` is gone.
pub fn run(model: &dyn Model, jobs: Receiver<Job>, config: &WorkerConfig) {
    let parallel = config.parallel.max(1);
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut active: Vec<Active> = Vec::new();
    let mut prefixes = PrefixCache::new(config.prefix_cache_bytes);
    let mut open = true;
    while open || !active.is_empty() || !waiting.is_empty() {
        config.metrics.set_load(waiting.len(), active.len());
        config
            .metrics
            .set_prefix_cache_bytes(prefixes.stats().bytes as u64);
        // Take new jobs; block only when there is nothing to do.
        if active.is_empty() && waiting.is_empty() {
            match jobs.recv_timeout(Duration::from_millis(200)) {
                Ok(job) => waiting.push_back(job),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        loop {
            match jobs.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Drop the jobs nobody listens to any more: their slots free at once.
        waiting.retain(|j| !j.events.is_closed());
        active.retain(|a| !a.job.events.is_closed());
        while active.len() < parallel {
            let Some(job) = waiting.pop_front() else {
                break;
            };
            // The request parser already checked the settings; this is the last guard.
            match Sampler::new(job.sampler.clone()) {
                Ok(sampler) => {
                    config.metrics.prompt_admitted(job.prompt.len());
                    let hits = prefixes.stats().hits;
                    active.push(Active::new(
                        model,
                        job,
                        sampler,
                        &mut prefixes,
                        config.speculate,
                    ));
                    config
                        .metrics
                        .add_prefix_cache_hits(prefixes.stats().hits - hits);
                }
                Err(e) => {
                    let _ = job
                        .events
                        .send(Event::Error(ApiError::internal(e.to_string())));
                }
            }
        }
        if !active.is_empty() {
            step(
                model,
                &mut active,
                config.prefill_chunk.max(1),
                &mut prefixes,
            );
        }
    }
}

/// One step of every active sequence: the decoding ones sample and send a token, then one
/// forward pass runs those tokens and the prompt chunks that fit in `prefill_budget`.
/// Finished and failed sequences leave `active`.
fn step(
    model: &dyn Model,
    active: &mut Vec<Active>,
    prefill_budget: usize,
    prefixes: &mut PrefixCache,
) {
    let vocab = model.info().vocab_size;
    let guarded = |f: &mut dyn FnMut() -> Result<Step, ApiError>| {
        catch_unwind(AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(ApiError::internal("the model panicked on this request")))
    };
    // 1. Sample: each decoding sequence's next token (or its end).
    let mut budget = prefill_budget;
    let mut outcomes: Vec<Result<Step, ApiError>> = Vec::with_capacity(active.len());
    for a in active.iter_mut() {
        outcomes.push(match a.phase {
            Phase::Decode => guarded(&mut || a.sample_next(vocab)),
            // 2. Prefill: prompt chunks in admission order, within the step's budget.
            Phase::Prefill { done } => {
                let take = (a.job.prompt.len() - done).min(budget);
                if take > 0 {
                    a.work = Work::Prompt(done..done + take);
                    budget -= take;
                }
                Ok(Step::Continue)
            }
        });
    }
    retire(active, outcomes, prefixes);

    // 3. One forward pass over every sequence with work.
    let running: Vec<usize> = (0..active.len())
        .filter(|&i| !matches!(active[i].work, Work::Idle))
        .collect();
    if running.is_empty() {
        return;
    }
    let lens: Vec<usize> = running.iter().map(|&i| active[i].cache.len).collect();
    let batch = catch_unwind(AssertUnwindSafe(|| forward_batch(model, active, &running)));
    let mut outcomes: Vec<Result<Step, ApiError>> =
        (0..active.len()).map(|_| Ok(Step::Continue)).collect();
    match batch {
        Ok(Ok(())) => {
            for &i in &running {
                let a = &mut active[i];
                outcomes[i] = guarded(&mut || a.absorb(vocab));
            }
        }
        // A refused or failed pass: run each sequence alone, so that only the one at fault
        // fails. A refused pass changed no cache; a panic may have left some positions
        // filled, so each cache goes back to where the step started.
        _ => {
            for (&i, &len) in running.iter().zip(&lens) {
                let a = &mut active[i];
                a.cache.truncate(len);
                outcomes[i] = guarded(&mut || {
                    forward_batch(model, std::slice::from_mut(a), &[0])
                        .map_err(|e| ApiError::internal(format!("forward pass failed: {e}")))?;
                    a.absorb(vocab)
                });
            }
        }
    }
    retire(active, outcomes, prefixes);
}

/// Runs the work of `active[i]` for every `i` in `running` in one multi-sequence pass; each
/// one's logits land in its own buffer.
fn forward_batch(
    model: &dyn Model,
    active: &mut [Active],
    running: &[usize],
) -> Result<(), crate::model::ForwardError> {
    let mut logits: Vec<Vec<f32>> = running
        .iter()
        .map(|&i| std::mem::take(&mut active[i].logits))
        .collect();
    let mut segments: Vec<Segment<'_>> = Vec::with_capacity(running.len());
    // Each running sequence once, in order: `running` is increasing.
    let mut rest = &mut active[..];
    let mut base = 0;
    for &i in running {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(i - base + 1);
        let a = &mut head[i - base];
        base = i + 1;
        rest = tail;
        let logits_for = a.logits_for();
        let tokens: &[u32] = match &a.work {
            Work::Prompt(r) => &a.job.prompt[r.clone()],
            Work::Decode => &a.input,
            Work::Idle => unreachable!("only sequences with work run"),
        };
        segments.push(Segment {
            cache: &mut a.cache,
            tokens,
            logits_for,
        });
    }
    let result = model.forward_segments(&mut segments, &mut logits);
    drop(segments);
    for (&i, l) in running.iter().zip(logits) {
        active[i].logits = l;
    }
    result
}

/// Sends the errors, and removes the sequences that finished (their caches go to
/// `prefixes`) or failed.
fn retire(
    active: &mut Vec<Active>,
    outcomes: Vec<Result<Step, ApiError>>,
    prefixes: &mut PrefixCache,
) {
    let mut kept = Vec::with_capacity(active.len());
    for (a, outcome) in active.drain(..).zip(outcomes) {
        match outcome {
            Ok(Step::Continue) => kept.push(a),
            Ok(Step::Finished) => a.into_prefix(prefixes),
            Err(e) => a.send(Event::Error(e)),
        }
    }
    *active = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top-n alternatives against a plain sort of the log-softmax.
    #[test]
    fn logprob_with_top_matches_a_full_sort() {
        let row: Vec<f32> = (0..50)
            .map(|i| ((i * 37 % 50) as f32 * 0.3).sin() * 4.0)
            .collect();
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        let mut all: Vec<(u32, f64)> = row
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, x as f64 - lse))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for n in [0, 1, 5, 50, 80] {
            let lp = logprob_with_top(&row, 7, n);
            assert!((lp.logprob - (row[7] as f64 - lse)).abs() < 1e-12);
            let want: Vec<(u32, f64)> = all.iter().take(n).copied().collect();
            assert_eq!(lp.top.len(), want.len());
            for (g, w) in lp.top.iter().zip(&want) {
                assert_eq!(g.0, w.0);
                assert!((g.1 - w.1).abs() < 1e-12);
            }
        }
    }

    /// The most likely token's logprob is its top entry's to the bit, and each top entry is
    /// that token's own logprob: lm-eval's `is_greedy` compares them exactly.
    #[test]
    fn top_logprobs_equal_token_logprobs_exactly() {
        for seed in 0..20u32 {
            let row: Vec<f32> = (0..97u32)
                .map(|i| ((i * 31 + seed * 17) % 97) as f32 * 0.173 - 5.0 + seed as f32 * 0.01)
                .collect();
            let best = (0..row.len() as u32)
                .max_by(|&a, &b| row[a as usize].total_cmp(&row[b as usize]))
                .unwrap();
            for token in [best, 3, 50] {
                let lp = logprob_with_top(&row, token, 5);
                for &(id, l) in &lp.top {
                    assert_eq!(
                        l.to_bits(),
                        token_logprob(&row, id).0.to_bits(),
                        "{seed} {id}"
                    );
                }
                assert_eq!(lp.top[0].0, best);
                if token == best {
                    assert_eq!(lp.logprob.to_bits(), lp.top[0].1.to_bits(), "seed {seed}");
                }
            }
        }
    }

    #[test]
    fn permits_count_and_release() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = Permit::try_acquire(&count, 2).unwrap();
        let b = Permit::try_acquire(&count, 2).unwrap();
        assert!(Permit::try_acquire(&count, 2).is_none());
        drop(a);
        assert_eq!(count.load(Ordering::Relaxed), 1);
        let _c = Permit::try_acquire(&count, 2).unwrap();
        drop(b);
        assert_eq!(count.load(Ordering::Relaxed), 1);
    }
}
