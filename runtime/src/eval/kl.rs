//! KL divergence of a model's next-token distributions from reference logits, as llama.cpp's
//! `perplexity --kl-divergence-base` / `--kl-divergence`.
//!
//! `qwenc reference-logits` runs the f32 reference over the text and writes, per scored
//! position, the top-K logits, the logsumexp and the logit of the true next token (the file
//! and its chunks of tokens: [`crate::reference_logits`]); `qwen kl FILE` runs the compiled
//! model over the same tokens (stored in the file) and compares ([`run_kl`]).
//!
//! **The top-K approximation.** The reference distribution P is known exactly on its K most
//! likely tokens (p_i = exp(l_i − lse)); the rest of the vocabulary is kept as one bucket,
//! P_tail = 1 − Σ_K p_i. The model's Q is merged the same way (Q_tail = Σ of q over the
//! tokens outside the reference's top K, summed exactly from the full logits), and
//!
//! ```text
//! KL ≈ Σ_{i ∈ top-K} p_i ln(p_i / q_i) + P_tail ln(P_tail / Q_tail)
//! ```
//!
//! By the log-sum inequality this never exceeds the true KL: the error is P_tail times the
//! KL between P and Q restricted to the tail (renormalised), which is small when P_tail is
//! (with K = 32 it is typically a few percent of the mass). llama.cpp keeps the whole
//! distribution as 16-bit log-probabilities (~300 KB per position for this vocabulary);
//! K = 32 costs 268 bytes per position. Top-1 agreement is exact (the reference's top-1 is
//! stored), and so are both perplexities (the true token's logit is stored).

use crate::model::{ForwardError, KvCache, LogitsFor, Model};
use crate::reference_logits::{
    logsumexp, ChunkPlan, ReferenceError, ReferenceLogits, ReferenceRecord,
};

/// Rows of logits asked for per forward call (bounds memory: rows × vocabulary × 4 bytes).
const SCORE_CHUNK: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum KlError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the reference was made with a vocabulary of {reference} tokens, the model has {model}"
    )]
    VocabMismatch { reference: usize, model: usize },
    #[error("the model cannot run a chunk of {context} tokens (its context is {max})")]
    ContextTooLarge { context: usize, max: usize },
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PositionKl {
    /// KL(P_ref ‖ Q_model) with the tail as one bucket, nats.
    pub kl: f64,
    /// The model's argmax is the reference's.
    pub top1_same: bool,
    /// ln P_ref(next token).
    pub ref_logprob: f64,
    /// ln Q_model(next token).
    pub model_logprob: f64,
    /// Reference probability mass outside the top K.
    pub ref_tail: f64,
}

/// Compare one row of model logits with the reference record; `target` is the next token.
pub fn compare(r: &ReferenceRecord, row: &[f32], target: u32) -> PositionKl {
    let lse_q = logsumexp(row);
    let lse_p = r.logsumexp;
    let mut kl = 0.0f64;
    let mut p_top = 0.0f64;
    for (&id, &l) in r.ids.iter().zip(&r.logits) {
        let lp = l as f64 - lse_p;
        let lq = row[id as usize] as f64 - lse_q;
        let p = lp.exp();
        kl += p * (lp - lq);
        p_top += p;
    }
    // The tail bucket. Q_tail is summed directly rather than as 1 − Σ_K q, which would
    // lose all precision when the model puts almost everything in the top K.
    let p_tail = (1.0 - p_top).max(0.0);
    if p_tail > 1e-9 && r.ids.len() < row.len() {
        let mut in_top = vec![false; row.len()];
        for &id in &r.ids {
            in_top[id as usize] = true;
        }
        let q_tail: f64 = row
            .iter()
            .zip(&in_top)
            .filter(|(_, &t)| !t)
            .map(|(&v, _)| (v as f64 - lse_q).exp())
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        kl += p_tail * (p_tail.ln() - q_tail.ln());
    }
    PositionKl {
        // Rounding can make an exact match come out a hair below 0.
        kl: kl.max(0.0),
        top1_same: argmax(row) == r.ids[0],
        ref_logprob: r.target_logit as f64 - lse_p,
        model_logprob: row[target as usize] as f64 - lse_q,
        ref_tail: p_tail,
    }
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// The summary `qwen kl` prints.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KlReport {
    pub positions: usize,
    pub chunks: usize,
    pub context: usize,
    pub top_k: usize,
    pub mean_kl: f64,
    /// Standard error of the mean KL.
    pub mean_kl_stderr: f64,
    pub median_kl: f64,
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Fraction of positions where the model's argmax is the reference's.
    pub top1_agreement: f64,
    pub ppl_reference: f64,
    pub ppl_model: f64,
    /// Mean reference mass outside the top K (what the tail bucket approximates).
    pub mean_ref_tail: f64,
    pub seconds: f64,
}

/// The nearest-rank percentile `q` (0..=1) of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Summarize per-position comparisons.
pub fn summarize(plan: &ChunkPlan, top_k: usize, per: &[PositionKl], seconds: f64) -> KlReport {
    let n = per.len().max(1) as f64;
    let mean = per.iter().map(|p| p.kl).sum::<f64>() / n;
    let var = per.iter().map(|p| (p.kl - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let mut sorted: Vec<f64> = per.iter().map(|p| p.kl).collect();
    sorted.sort_by(f64::total_cmp);
    let pick = |q| {
        if sorted.is_empty() {
            0.0
        } else {
            percentile(&sorted, q)
        }
    };
    KlReport {
        positions: per.len(),
        chunks: plan.chunks,
        context: plan.context,
        top_k,
        mean_kl: mean,
        mean_kl_stderr: (var / n).sqrt(),
        median_kl: pick(0.5),
        p99_kl: pick(0.99),
        max_kl: sorted.last().copied().unwrap_or(0.0),
        top1_agreement: per.iter().filter(|p| p.top1_same).count() as f64 / n,
        ppl_reference: (-per.iter().map(|p| p.ref_logprob).sum::<f64>() / n).exp(),
        ppl_model: (-per.iter().map(|p| p.model_logprob).sum::<f64>() / n).exp(),
        mean_ref_tail: per.iter().map(|p| p.ref_tail).sum::<f64>() / n,
        seconds,
    }
}

/// The model's logits of one chunk's tokens from position `first` on.
pub type ChunkLogits<'a> = dyn FnMut(&[u32], usize) -> Result<Vec<f32>, KlError> + 'a;

/// Compare a model with the reference. `logits(chunk_tokens, first)` must return the logits
/// `[context − 1 − first, vocab]` of positions `first .. context − 1` of a chunk run from an
/// empty cache; `progress(done, total)` is called after each chunk.
pub fn compare_all(
    reference: &ReferenceLogits,
    vocab: usize,
    logits: &mut ChunkLogits<'_>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<KlReport, KlError> {
    let h = &reference.header;
    if h.vocab_size != vocab {
        return Err(KlError::VocabMismatch {
            reference: h.vocab_size,
            model: vocab,
        });
    }
    let plan = reference.plan;
    let start = std::time::Instant::now();
    let per_chunk = plan.scored_per_chunk();
    let mut per = Vec::with_capacity(plan.positions());
    for c in 0..plan.chunks {
        let chunk = &h.tokens[c * plan.context..][..plan.context];
        let rows = logits(chunk, plan.first)?;
        if rows.len() != per_chunk * vocab {
            return Err(KlError::Invalid(format!(
                "the model returned {} logits for {per_chunk} positions of {vocab}",
                rows.len()
            )));
        }
        for (i, row) in rows.chunks_exact(vocab).enumerate() {
            let pos = plan.first + i;
            per.push(compare(
                &reference.records[c * per_chunk + i],
                row,
                chunk[pos + 1],
            ));
        }
        progress(c + 1, plan.chunks);
    }
    Ok(summarize(
        &plan,
        h.top_k,
        &per,
        start.elapsed().as_secs_f64(),
    ))
}

/// The logits of positions `first .. context − 1` of `chunk` on a compiled model, from an
/// empty cache.
pub fn model_chunk_logits(
    model: &dyn Model,
    cache: &mut KvCache,
    chunk: &[u32],
    first: usize,
) -> Result<Vec<f32>, KlError> {
    cache.truncate(0);
    model.forward(cache, &chunk[..first], LogitsFor::Last)?;
    let last = chunk.len() - 1;
    let mut out = Vec::new();
    let mut pos = first;
    while pos < last {
        let upto = (pos + SCORE_CHUNK).min(last);
        out.extend(model.forward(cache, &chunk[pos..upto], LogitsFor::All)?);
        pos = upto;
    }
    Ok(out)
}

/// `qwen kl`: the compiled model against a reference-logits file.
pub fn run_kl(
    model: &dyn Model,
    reference: &ReferenceLogits,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<KlReport, KlError> {
    let context = reference.plan.context;
    let max = model.info().max_context;
    if context > max {
        return Err(KlError::ContextTooLarge { context, max });
    }
    let mut cache = model.new_cache(context);
    compare_all(
        reference,
        model.info().vocab_size,
        &mut |chunk, first| model_chunk_logits(model, &mut cache, chunk, first),
        progress,
    )
}
