//! The model worker: one thread owns the model, the KV caches and the queue.
//!
//! Requests arrive as [`Job`]s on a channel. Up to `parallel` of them are *active* (each with
//! its own KV cache sized to its prompt plus `max_tokens`); the others wait in arrival order.
//! The worker goes round the active sequences doing one step of each: a prefill chunk, or one
//! decoded token. So several requests progress together and none waits for another to end.
//!
//! A job whose receiver is gone (the client disconnected, or the handler saw a stop string)
//! is dropped at the next step, waiting or active, and its slot and cache are freed.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::error::ApiError;
use crate::eval::scoring::token_logprob;
use crate::model::{KvCache, LogitsFor, Model};
use crate::sampler::{Sampler, SamplerConfig};

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
    /// Generation ends after any of these.
    pub stop_ids: Vec<u32>,
    /// Report logprobs of generated tokens with this many alternatives.
    pub logprobs: Option<usize>,
    /// Also report the prompt's logprobs (`echo` with `logprobs`).
    pub prompt_logprobs: bool,
    pub events: UnboundedSender<Event>,
    pub permit: Permit,
}

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Sequences stepped together.
    pub parallel: usize,
    /// Prompt tokens per prefill step (a long prompt does not stall the others).
    pub prefill_chunk: usize,
}

enum Phase {
    /// `done` prompt tokens are in the cache.
    Prefill { done: usize },
    /// `logits` predict the next token.
    Decode { logits: Vec<f32> },
}

struct Active {
    job: Job,
    cache: KvCache,
    sampler: Sampler,
    phase: Phase,
    generated: usize,
    prompt_logprobs: Vec<TokenLogprob>,
}

/// `(logprob of token, top n alternatives)` of one row of logits.
pub fn logprob_with_top(row: &[f32], token: u32, n: usize) -> TokenLogprob {
    let (logprob, _) = token_logprob(row, token);
    let top = if n == 0 {
        Vec::new()
    } else {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
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
            .map(|id| (id, row[id as usize] as f64 - lse))
            .collect()
    };
    TokenLogprob { logprob, top }
}

enum Step {
    Continue,
    Finished,
}

impl Active {
    fn new(model: &dyn Model, job: Job, sampler: Sampler) -> Active {
        let cache = model.new_cache(job.prompt.len() + job.max_tokens);
        Active {
            job,
            cache,
            sampler,
            phase: Phase::Prefill { done: 0 },
            generated: 0,
            prompt_logprobs: Vec::new(),
        }
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

    fn step(&mut self, model: &dyn Model, chunk: usize) -> Result<Step, ApiError> {
        let vocab = model.info().vocab_size;
        let forward_error = |e| ApiError::internal(format!("forward pass failed: {e}"));
        match &mut self.phase {
            Phase::Prefill { done } => {
                let start = *done;
                let end = (start + chunk.max(1)).min(self.job.prompt.len());
                let tokens = &self.job.prompt[start..end];
                let want_all = self.job.prompt_logprobs;
                let which = if want_all {
                    LogitsFor::All
                } else {
                    LogitsFor::Last
                };
                let logits = model
                    .forward(&mut self.cache, tokens, which)
                    .map_err(forward_error)?;
                let rows = if want_all { tokens.len() } else { 1 };
                if logits.len() != rows * vocab {
                    return Err(ApiError::internal(format!(
                        "the model returned {} logits for {rows} rows of {vocab}",
                        logits.len()
                    )));
                }
                if want_all {
                    // Row i predicts prompt token start + i + 1.
                    let n = self.job.logprobs.unwrap_or(0);
                    for (i, row) in logits.chunks(vocab).enumerate() {
                        if let Some(&next) = self.job.prompt.get(start + i + 1) {
                            self.prompt_logprobs.push(logprob_with_top(row, next, n));
                        }
                    }
                }
                if end < self.job.prompt.len() {
                    *done = end;
                    return Ok(Step::Continue);
                }
                if want_all {
                    let lps = std::mem::take(&mut self.prompt_logprobs);
                    self.send(Event::PromptLogprobs(lps));
                }
                if self.job.max_tokens == 0 {
                    return Ok(self.finish(Finish::Length));
                }
                let last = logits[logits.len() - vocab..].to_vec();
                self.phase = Phase::Decode { logits: last };
                self.emit(model)
            }
            Phase::Decode { .. } => self.emit(model),
        }
    }

    /// Samples a token from the current logits, sends it, and runs it unless the sequence ends.
    fn emit(&mut self, model: &dyn Model) -> Result<Step, ApiError> {
        let Phase::Decode { logits } = &self.phase else {
            unreachable!("emit runs after the prefill")
        };
        let token = self.sampler.sample(logits);
        let logprob = self
            .job
            .logprobs
            .map(|n| logprob_with_top(logits, token, n));
        self.generated += 1;
        self.send(Event::Token { id: token, logprob });
        if self.job.stop_ids.contains(&token) {
            return Ok(self.finish(Finish::Stop));
        }
        if self.generated >= self.job.max_tokens {
            return Ok(self.finish(Finish::Length));
        }
        // The next logits replace these in place: one buffer per sequence, not one per token.
        let Phase::Decode { logits } = &mut self.phase else {
            unreachable!("still decoding")
        };
        model
            .forward_into(&mut self.cache, &[token], LogitsFor::Last, logits)
            .map_err(|e| ApiError::internal(format!("forward pass failed: {e}")))?;
        Ok(Step::Continue)
    }
}

/// Runs jobs until every sender of `jobs` is gone.
pub fn run(model: &dyn Model, jobs: Receiver<Job>, config: &WorkerConfig) {
    let parallel = config.parallel.max(1);
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut active: Vec<Active> = Vec::new();
    let mut next = 0usize;
    let mut open = true;
    while open || !active.is_empty() || !waiting.is_empty() {
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
                Ok(sampler) => active.push(Active::new(model, job, sampler)),
                Err(e) => {
                    let _ = job
                        .events
                        .send(Event::Error(ApiError::internal(e.to_string())));
                }
            }
        }
        if active.is_empty() {
            continue;
        }
        // One step of one sequence, round robin.
        next %= active.len();
        let a = &mut active[next];
        let outcome = catch_unwind(AssertUnwindSafe(|| a.step(model, config.prefill_chunk)))
            .unwrap_or_else(|_| Err(ApiError::internal("the model panicked on this request")));
        match outcome {
            Ok(Step::Continue) => next += 1,
            Ok(Step::Finished) => {
                active.remove(next);
            }
            Err(e) => {
                a.send(Event::Error(e));
                active.remove(next);
            }
        }
    }
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
