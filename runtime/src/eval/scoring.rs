//! Log-likelihood of continuations given a context, with the context's KV cache shared
//! by all continuations.
//!
//! The logits that predict token `i` of a sequence come from position `i - 1`. So for a
//! context `c` (length `C`) and a continuation `x` (length `N`), the rows that score `x`
//! are those of positions `C - 1 .. C + N - 1`: the last context token, then every
//! continuation token but the last. [`score_continuations`] runs the context once
//! (`LogitsFor::Last` gives the row that predicts `x[0]`, shared by all continuations),
//! then for each continuation truncates the cache back to `C` and runs `x[..N - 1]` with
//! `LogitsFor::All` (nothing at all when `N == 1`). That is exactly the sequence
//! lm-evaluation-harness feeds (`context_enc + continuation_enc`, minus the last token),
//! with the context computed once.

use crate::model::{ForwardError, LogitsFor, Model};

/// The score of one continuation.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ContinuationScore {
    /// `log P(continuation | context)`: the sum of [`token_logprobs`](Self::token_logprobs)
    /// (0 for an empty continuation).
    pub logprob_sum: f64,
    /// Every continuation token is the most likely token of its row (lm-eval's
    /// `is_greedy`; ties go to the lowest id, as `torch.argmax`). True when empty.
    pub is_greedy: bool,
    /// Natural-log probability of each continuation token given everything before it.
    pub token_logprobs: Vec<f64>,
}

/// Why scoring failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// Nothing predicts the first continuation token (lm-eval puts its prefix token, the
    /// eos, in front of an empty context: callers who want that must do it themselves).
    #[error("the context is empty: nothing predicts the first continuation token")]
    EmptyContext,
    #[error("the model returned {got} logits for {rows} rows of a vocabulary of {vocab}")]
    LogitsShape {
        got: usize,
        rows: usize,
        vocab: usize,
    },
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// `(log_softmax(row)[token], token is the first maximum of row)`, computed in f64.
///
/// Panics if `token` is outside `row`.
pub fn token_logprob(row: &[f32], token: u32) -> (f64, bool) {
    let mut argmax = 0;
    let mut max = f32::NEG_INFINITY;
    for (i, &x) in row.iter().enumerate() {
        if x > max {
            max = x;
            argmax = i;
        }
    }
    let max64 = max as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max64).exp()).sum();
    let t = token as usize;
    (row[t] as f64 - max64 - sum.ln(), argmax == t)
}

/// Splits `logits` into rows of the model's vocabulary, checking the shape.
pub(crate) fn rows(
    logits: &[f32],
    rows: usize,
    vocab: usize,
) -> Result<std::slice::Chunks<'_, f32>, ScoreError> {
    if vocab == 0 || logits.len() != rows * vocab {
        return Err(ScoreError::LogitsShape {
            got: logits.len(),
            rows,
            vocab,
        });
    }
    Ok(logits.chunks(vocab))
}

/// Scores each continuation after `context` (token ids, no BOS added).
///
/// The context runs once; each continuation runs only its own tokens but the last (see
/// the module documentation). The cache needs `context.len() + longest - 1` positions; a
/// context and continuation longer than the model's `max_context` give
/// [`ForwardError::ContextOverflow`] (nothing is truncated).
pub fn score_continuations(
    model: &dyn Model,
    context: &[u32],
    continuations: &[Vec<u32>],
) -> Result<Vec<ContinuationScore>, ScoreError> {
    if context.is_empty() {
        return Err(ScoreError::EmptyContext);
    }
    let vocab = model.info().vocab_size;
    let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
    let mut cache = model.new_cache(context.len() + longest.saturating_sub(1));
    let first = model.forward(&mut cache, context, LogitsFor::Last)?;
    let first_row = rows(&first, 1, vocab)?.next().expect("one row");
    let ctx_len = cache.len;

    let mut scores = Vec::with_capacity(continuations.len());
    for cont in continuations {
        let mut token_logprobs = Vec::with_capacity(cont.len());
        let mut is_greedy = true;
        if let Some((&head, _)) = cont.split_first() {
            let (lp, greedy) = token_logprob(first_row, head);
            token_logprobs.push(lp);
            is_greedy &= greedy;
            if cont.len() > 1 {
                cache.truncate(ctx_len);
                let inputs = &cont[..cont.len() - 1];
                let logits = model.forward(&mut cache, inputs, LogitsFor::All)?;
                for (row, &target) in rows(&logits, inputs.len(), vocab)?.zip(&cont[1..]) {
                    let (lp, greedy) = token_logprob(row, target);
                    token_logprobs.push(lp);
                    is_greedy &= greedy;
                }
            }
        }
        scores.push(ContinuationScore {
            logprob_sum: token_logprobs.iter().sum(),
            is_greedy,
            token_logprobs,
        });
    }
    Ok(scores)
}
