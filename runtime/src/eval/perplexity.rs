//! Windowed (strided) perplexity over a token stream, as in the Hugging Face
//! "perplexity of fixed-length models" recipe.
//!
//! Windows of `context` tokens start every `stride` tokens (`stride <= context`); each
//! window starts from an empty KV cache. The first window scores all its tokens but the
//! first (nothing predicts it); every later window scores only the tokens after the end
//! of the previous window, that is its last `stride` tokens (fewer for the last window,
//! which ends at the end of the stream). So every token but the first is scored exactly
//! once, with at least `context - stride` tokens of context outside the first window.
//! (With `stride == context` the windows do not overlap and the first token of each is
//! not scored.) Perplexity = `exp(-mean log P(token | window tokens before it))`.

use std::time::Instant;

use super::scoring::{rows, token_logprob, ScoreError};
use crate::model::{ForwardError, LogitsFor, Model};

/// Rows of logits asked for per forward call (bounds memory: rows x vocabulary x 4 bytes).
const SCORE_CHUNK: usize = 64;

/// One window: the model sees `tokens[begin..end]` and scores `tokens[score_from..end]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub begin: usize,
    pub end: usize,
    pub score_from: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PerplexityError {
    #[error("the stride must be between 1 and the context ({context}), not {stride}")]
    BadStride { context: usize, stride: usize },
    #[error("the context must be at least 2 tokens, not {0}")]
    ContextTooSmall(usize),
    #[error("the context of {context} tokens exceeds the model's {max}")]
    ContextTooLarge { context: usize, max: usize },
    #[error("{0} token(s): at least 2 are needed to score anything")]
    TooFewTokens(usize),
    #[error(transparent)]
    Score(#[from] ScoreError),
}

impl From<ForwardError> for PerplexityError {
    fn from(e: ForwardError) -> Self {
        PerplexityError::Score(ScoreError::Forward(e))
    }
}

/// The windows over `n_tokens` tokens (see the module documentation).
pub fn windows(
    n_tokens: usize,
    context: usize,
    stride: usize,
) -> Result<Vec<Window>, PerplexityError> {
    if context < 2 {
        return Err(PerplexityError::ContextTooSmall(context));
    }
    if stride == 0 || stride > context {
        return Err(PerplexityError::BadStride { context, stride });
    }
    if n_tokens < 2 {
        return Err(PerplexityError::TooFewTokens(n_tokens));
    }
    let mut out = Vec::new();
    let mut begin = 0;
    let mut prev_end = 0;
    loop {
        let end = (begin + context).min(n_tokens);
        let score_from = prev_end.max(begin + 1);
        // (A last window of one token, possible only when stride == context, scores
        // nothing: it is left out.)
        if score_from < end {
            out.push(Window {
                begin,
                end,
                score_from,
            });
        }
        if end == n_tokens {
            return Ok(out);
        }
        prev_end = end;
        begin += stride;
    }
}

/// What [`perplexity`] measured.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PerplexityReport {
    pub perplexity: f64,
    /// Sum of `-log P` over the scored tokens (natural log).
    pub nll_sum: f64,
    pub tokens_scored: usize,
    /// Tokens the stream had.
    pub tokens: usize,
    pub windows: usize,
    pub context: usize,
    pub stride: usize,
    /// Tokens run through the model (windows overlap, and the last token of a window
    /// needs no run).
    pub tokens_forwarded: usize,
    pub seconds: f64,
    /// Scored tokens per second.
    pub tokens_per_second: f64,
}

/// Perplexity of `tokens` with windows of `context` tokens every `stride` tokens;
/// `progress(done, total)` is called after each window.
pub fn perplexity(
    model: &dyn Model,
    tokens: &[u32],
    context: usize,
    stride: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PerplexityReport, PerplexityError> {
    let max = model.info().max_context;
    if context > max {
        return Err(PerplexityError::ContextTooLarge { context, max });
    }
    let plan = windows(tokens.len(), context, stride)?;
    let vocab = model.info().vocab_size;
    let start = Instant::now();
    let mut cache = model.new_cache(context);
    let mut nll_sum = 0.0f64;
    let mut scored = 0;
    let mut forwarded = 0;
    for (w, window) in plan.iter().enumerate() {
        cache.truncate(0);
        let seq = &tokens[window.begin..window.end];
        // Position i of the window predicts seq[i + 1]; the first scored token is
        // seq[first], predicted by position first - 1.
        let first = window.score_from - window.begin;
        let last_input = seq.len() - 1;
        if first > 1 {
            model.forward(&mut cache, &seq[..first - 1], LogitsFor::Last)?;
            forwarded += first - 1;
        }
        let mut pos = first - 1;
        while pos < last_input {
            let upto = (pos + SCORE_CHUNK).min(last_input);
            let logits = model.forward(&mut cache, &seq[pos..upto], LogitsFor::All)?;
            for (row, &target) in rows(&logits, upto - pos, vocab)?.zip(&seq[pos + 1..=upto]) {
                nll_sum -= token_logprob(row, target).0;
                scored += 1;
            }
            forwarded += upto - pos;
            pos = upto;
        }
        progress(w + 1, plan.len());
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(PerplexityReport {
        perplexity: (nll_sum / scored as f64).exp(),
        nll_sum,
        tokens_scored: scored,
        tokens: tokens.len(),
        windows: plan.len(),
        context,
        stride,
        tokens_forwarded: forwarded,
        seconds,
        tokens_per_second: if seconds > 0.0 {
            scored as f64 / seconds
        } else {
            0.0
        },
    })
}
