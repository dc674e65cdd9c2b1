//! Reference-logits files: what `qwenc reference-logits` writes ([`write_reference`]) and
//! `qwen kl` reads ([`read_reference`]) to compare a compiled model with the f32 reference.
//! Apart from that comparison (`eval::kl`) because the `qwenc` tool writes these files and
//! uses nothing else of the evaluation code.
//!
//! **Windows** (llama.cpp's `perplexity --kl-divergence-base`): the tokens are cut into
//! consecutive chunks of `context` tokens (a shorter tail is dropped); each chunk starts from
//! an empty cache, and only the positions `context/2 .. context-1` of a chunk are scored, so
//! every scored position sees at least `context/2` tokens of context. Position `i` predicts
//! token `i + 1` ([`ChunkPlan`]).
//!
//! **Records.** Per scored position, the K most likely tokens' logits, the logsumexp over
//! the whole vocabulary and the logit of the true next token ([`ReferenceRecord`]).
//!
//! **File format** (little-endian): `QWENKL01`, a u64 header length, a JSON header
//! ([`ReferenceHeader`], which holds the tokens), then one record per scored position in
//! chunk order: f64 logsumexp, f32 logit of the next token, K u32 ids (by decreasing logit,
//! lowest id first on ties), K f32 logits.

use std::io::Write;
use std::path::Path;

/// The first 8 bytes of a reference-logits file.
pub const MAGIC: &[u8; 8] = b"QWENKL01";
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
    pub fn plan(&self) -> Result<ChunkPlan, ReferenceError> {
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
    pub fn new(n_tokens: usize, context: usize) -> Result<ChunkPlan, ReferenceError> {
        if context < 4 {
            return Err(ReferenceError::Invalid(format!(
                "the context must be at least 4 tokens, not {context}"
            )));
        }
        let chunks = n_tokens / context;
        if chunks == 0 {
            return Err(ReferenceError::Invalid(format!(
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

/// A reference-logits file that cannot be read or written, or a plan that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
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
) -> Result<(), ReferenceError> {
    let want = header.plan()?.positions();
    if records.len() != want {
        return Err(ReferenceError::Invalid(format!(
            "{} records for {want} scored positions",
            records.len()
        )));
    }
    if let Some(r) = records
        .iter()
        .find(|r| r.ids.len() != header.top_k || r.logits.len() != header.top_k)
    {
        return Err(ReferenceError::Invalid(format!(
            "a record has {} ids for top-k {}",
            r.ids.len(),
            header.top_k
        )));
    }
    let io = |source| ReferenceError::Io {
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
pub fn read_reference(path: &Path) -> Result<ReferenceLogits, ReferenceError> {
    let bytes = std::fs::read(path).map_err(|source| ReferenceError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_reference(&bytes).map_err(|problem| ReferenceError::Format {
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
