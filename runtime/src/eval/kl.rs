//! KL divergence of a model's next-token distributions from reference logits, as llama.cpp's
//! `perplexity --kl-divergence-base` / `--kl-divergence`.
//!
//! `qwenc reference-logits` runs the f32 reference over the text and writes, per scored
//! position, the top-K logits, the logsumexp and the logit of the true next token
//! ([`write_reference`]); `qwen kl FILE` runs the compiled model over the same tokens
//! (stored in the file) and compares ([`run_kl`]).
//!
//! **Windows** (llama.cpp's): the tokens are cut into consecutive chunks of `context`
//! tokens (a shorter tail is dropped); each chunk starts from an empty cache, and only the
//! positions `context/2 .. context-1` of a chunk are scored, so every scored position sees
//! at least `context/2` tokens of context. Position `i` predicts token `i + 1`.
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
//!
//! **File format** (little-endian): `QWENKL01`, a u64 header length, a JSON header
//! ([`ReferenceHeader`], which holds the tokens), then one record per scored position in
//! chunk order: f64 logsumexp, f32 logit of the next token, K u32 ids (by decreasing logit,
//! lowest id first on ties), K f32 logits.

use std::io::Write;
use std::path::Path;

use crate::model::{ForwardError, KvCache, LogitsFor, Model};

/// The first 8 bytes of a reference-logits file.
pub const MAGIC: &[u8; 8] = b"QWENKL01";
/// Rows of logits asked for per forward call (bounds memory: rows × vocabulary × 4 bytes).
const SCORE_CHUNK: usize = 64;

/// Where a reference-logits file came from and how it cuts the tokens.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReferenceHeader {
    /// The model the logits came from.
    pub model: String,
    /// The text file the tokens came from.
    pub text: String,
    pub vocab_size: usize,
    /// Tokens per chunk.
    pub context: usize,
    /// Logits kept per position.
    pub top_k: usize,
    /// The tokens (the first `chunks × context` of the text).
    pub tokens: Vec<u32>,
}

impl ReferenceHeader {
    pub fn plan(&self) -> Result<ChunkPlan, KlError> {
        ChunkPlan::new(self.tokens.len(), self.context)
    }
}

/// The chunks over a token stream (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    pub context: usize,
    pub chunks: usize,
    /// First scored position within a chunk (`context / 2`).
    pub first: usize,
}

impl ChunkPlan {
    /// Chunks of `context` tokens over `n_tokens` tokens.
    pub fn new(n_tokens: usize, context: usize) -> Result<ChunkPlan, KlError> {
        if context < 4 {
            return Err(KlError::Invalid(format!(
                "the context must be at least 4 tokens, not {context}"
            )));
        }
        let chunks = n_tokens / context;
        if chunks == 0 {
            return Err(KlError::Invalid(format!(
                "{n_tokens} tokens do not fill one chunk of {context}"
            )));
        }
        Ok(ChunkPlan {
            context,
            chunks,
            first: context / 2,
        })
    }
    /// Scored positions per chunk.
    pub fn scored_per_chunk(&self) -> usize {
        self.context - 1 - self.first
    }
    pub fn positions(&self) -> usize {
        self.chunks * self.scored_per_chunk()
    }
}

/// The reference at one scored position.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceRecord {
    /// log Σ exp(logits) over the whole vocabulary (f64: an f32 would put ~1e-6 of noise on
    /// every probability, and so on the tail bucket).
    pub logsumexp: f64,
    /// The logit of the token that follows.
    pub target_logit: f32,
    /// The K most likely ids, by decreasing logit.
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

impl ReferenceRecord {
    /// The record of one row of logits whose next token is `target`.
    pub fn from_logits(row: &[f32], target: u32, top_k: usize) -> ReferenceRecord {
        let k = top_k.min(row.len());
        let mut order: Vec<u32> = (0..row.len() as u32).collect();
        // Decreasing logit, lowest id first on ties (argmax's choice first). Logits are
        // finite, so partial_cmp never fails; NaN would sort as equal.
        let by = |a: &u32, b: &u32| {
            row[*b as usize]
                .partial_cmp(&row[*a as usize])
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(b))
        };
        if k < order.len() {
            order.select_nth_unstable_by(k, by);
            order.truncate(k);
        }
        order.sort_by(by);
        ReferenceRecord {
            logsumexp: logsumexp(row),
            target_logit: row[target as usize],
            logits: order.iter().map(|&i| row[i as usize]).collect(),
            ids: order,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KlError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a reference-logits file: {problem}")]
    Format { path: String, problem: String },
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

/// log Σ exp(x), in f64.
pub fn logsumexp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

/// Write a reference-logits file. `records` must have `header.plan().positions()` entries
/// of `header.top_k` ids each.
pub fn write_reference(
    path: &Path,
    header: &ReferenceHeader,
    records: &[ReferenceRecord],
) -> Result<(), KlError> {
    let want = header.plan()?.positions();
    if records.len() != want {
        return Err(KlError::Invalid(format!(
            "{} records for {want} scored positions",
            records.len()
        )));
    }
    if let Some(r) = records
        .iter()
        .find(|r| r.ids.len() != header.top_k || r.logits.len() != header.top_k)
    {
        return Err(KlError::Invalid(format!(
            "a record has {} ids for top-k {}",
            r.ids.len(),
            header.top_k
        )));
    }
    let io = |source| KlError::Io {
        path: path.display().to_string(),
        source,
    };
    let json = serde_json::to_vec(header).expect("the header serializes");
    let mut out = Vec::with_capacity(16 + json.len() + records.len() * record_bytes(header.top_k));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for r in records {
        out.extend_from_slice(&r.logsumexp.to_le_bytes()); // f64
        out.extend_from_slice(&r.target_logit.to_le_bytes());
        for id in &r.ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for l in &r.logits {
            out.extend_from_slice(&l.to_le_bytes());
        }
    }
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(&out).map_err(io)?;
    Ok(())
}

fn record_bytes(k: usize) -> usize {
    12 + 8 * k
}

/// A reference-logits file, read and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceLogits {
    pub header: ReferenceHeader,
    pub plan: ChunkPlan,
    pub records: Vec<ReferenceRecord>,
}

/// Read and check a reference-logits file: magic, sizes, ids within the vocabulary,
/// finite values.
pub fn read_reference(path: &Path) -> Result<ReferenceLogits, KlError> {
    let bytes = std::fs::read(path).map_err(|source| KlError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_reference(&bytes).map_err(|problem| KlError::Format {
        path: path.display().to_string(),
        problem,
    })
}

/// [`read_reference`] on bytes already in memory; the error says what is wrong.
pub fn parse_reference(bytes: &[u8]) -> Result<ReferenceLogits, String> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(format!(
            "it does not start with {:?}",
            std::str::from_utf8(MAGIC).unwrap()
        ));
    }
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let body = bytes.len() as u64 - 16;
    if hlen > body {
        return Err(format!("header of {hlen} bytes but only {body} follow"));
    }
    let hlen = hlen as usize;
    let header: ReferenceHeader =
        serde_json::from_slice(&bytes[16..16 + hlen]).map_err(|e| format!("bad header: {e}"))?;
    if header.top_k == 0 || header.top_k > header.vocab_size {
        return Err(format!(
            "top_k {} for a vocabulary of {}",
            header.top_k, header.vocab_size
        ));
    }
    if let Some(&id) = header
        .tokens
        .iter()
        .find(|&&t| t as usize >= header.vocab_size)
    {
        return Err(format!(
            "token {id} is outside the vocabulary of {}",
            header.vocab_size
        ));
    }
    let plan = header.plan().map_err(|e| e.to_string())?;
    if header.tokens.len() != plan.chunks * plan.context {
        return Err(format!(
            "{} tokens is not a whole number of chunks of {}",
            header.tokens.len(),
            plan.context
        ));
    }
    let k = header.top_k;
    let data = &bytes[16 + hlen..];
    let want = plan.positions() * record_bytes(k);
    if data.len() != want {
        return Err(format!(
            "{} bytes of records, expected {want} ({} positions × {} bytes)",
            data.len(),
            plan.positions(),
            record_bytes(k)
        ));
    }
    let f32_at = |b: &[u8], i: usize| f32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
    let mut records = Vec::with_capacity(plan.positions());
    for (p, rec) in data.chunks_exact(record_bytes(k)).enumerate() {
        // f64 logsumexp, then 4-byte fields: [target, ids.., logits..].
        let lse = f64::from_le_bytes(rec[..8].try_into().unwrap());
        let rec = &rec[8..];
        let ids: Vec<u32> = (0..k).map(|i| u32_at(rec, 1 + i)).collect();
        let logits: Vec<f32> = (0..k).map(|i| f32_at(rec, 1 + k + i)).collect();
        let r = ReferenceRecord {
            logsumexp: lse,
            target_logit: f32_at(rec, 0),
            ids,
            logits,
        };
        if let Some(&id) = r.ids.iter().find(|&&id| id as usize >= header.vocab_size) {
            return Err(format!("record {p}: id {id} is outside the vocabulary"));
        }
        let finite = r.logsumexp.is_finite()
            && r.target_logit.is_finite()
            && r.logits.iter().all(|l| l.is_finite());
        if !finite {
            return Err(format!("record {p}: a value is not finite"));
        }
        records.push(r);
    }
    Ok(ReferenceLogits {
        header,
        plan,
        records,
    })
}

/// The comparison at one position.
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
    let lse_p = r.logsumexp as f64;
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

/// Compare a model with the reference. `logits(chunk_tokens, first)` must return the logits
/// `[context − 1 − first, vocab]` of positions `first .. context − 1` of a chunk run from an
/// empty cache; `progress(done, total)` is called after each chunk.
pub fn compare_all(
    reference: &ReferenceLogits,
    vocab: usize,
    logits: &mut dyn FnMut(&[u32], usize) -> Result<Vec<f32>, KlError>,
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
