//! The `decode-sets` profile: decode speed on realistic work, with and without speculative
//! decoding, on fixed prompt sets (`bench/decode-sets/*.jsonl`, written by its
//! `make_sets.py`, embedded here when the runtime is compiled).
//!
//! Sets: `code` (8 functions of this repository with an edit to make), `extract` (8
//! WikiText-2 passages to extract from or summarize), `aicas` (the challenge prompt, read
//! from the data directory, continued as plain text) and `chat` (8 open questions). Chat
//! entries are one user message rendered with the ChatML template ([`crate::chat::render`],
//! default system prompt) and stop at `<|im_end|>` as well as the model's eos ids.
//!
//! Each prompt is generated greedily in a fresh cache: a chat answer ends where the model ends
//! it (or at `max_tokens`); the plain AICAS prompt is continued to `max_tokens` with its stop
//! tokens suppressed, as the challenge's script does (an instruct model ends a bare text at
//! once). Once plain and once speculative per *pair*: pairs
//! 1, 3, ... run plain first, pairs 2, 4, ... speculative first, so neither always runs second.
//! No warm-up: decode speeds exclude the prefill, and the prefill has read every weight by
//! then. Every output of a prompt must be token-identical to its first plain output
//! (speculation is lossless, greedy decode deterministic); the first that is not stops the
//! run with [`DecodeSetsError::Mismatch`].
//!
//! Figures per set (see [`DEFINITIONS`]):
//! - *decode tok/s* of one pair: `Σ decode_tokens / Σ decode_seconds` over the set's prompts
//!   ([`GenerateStats::decode_tok_s`]'s definition, pooled): tokens after the first per
//!   second of decode, the prefill excluded; the median over pairs and the range.
//! - *ratio*: speculative / plain decode tok/s of each pair; the median and the range.
//! - *acceptance rate*: accepted / drafted tokens, over all speculative runs.
//! - *tokens per pass*: decode tokens / decode forward passes (1 for plain decoding).
//! - *bytes per token*: `ModelInfo::weight_bytes / tokens per pass`, the weight bytes a
//!   decode pass reads (every packed weight once) shared by the tokens it yields. An upper
//!   bound: the embedding table counts whole though a pass reads one row of it per token;
//!   KV-cache reads are ignored (Qwen2.5-0.5B's f32 cache is 24.6 kB per position, ~20 MB a
//!   pass at these lengths: under a tenth of its weights).

use std::ops::ControlFlow;
use std::path::Path;

use serde::Deserialize;

use super::stats::{rate, Summary};
use crate::chat::{render, ChatMessage, IM_END};
use crate::generate::{check_fits, generate, GenerateError, GenerateOptions, GenerateStats};
use crate::model::{Model, ModelInfo};
use crate::sampler::SamplerConfig;

/// One of the prompt sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SetName {
    Code,
    Extract,
    Aicas,
    Chat,
}

impl SetName {
    /// Every set, in the order the profile runs them.
    pub const ALL: [SetName; 4] = [
        SetName::Code,
        SetName::Extract,
        SetName::Aicas,
        SetName::Chat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SetName::Code => "code",
            SetName::Extract => "extract",
            SetName::Aicas => "aicas",
            SetName::Chat => "chat",
        }
    }

    /// The set's JSONL file as committed (`bench/decode-sets/<name>.jsonl`).
    pub fn jsonl(self) -> &'static str {
        match self {
            SetName::Code => include_str!("../../../bench/decode-sets/code.jsonl"),
            SetName::Extract => include_str!("../../../bench/decode-sets/extract.jsonl"),
            SetName::Aicas => include_str!("../../../bench/decode-sets/aicas.jsonl"),
            SetName::Chat => include_str!("../../../bench/decode-sets/chat.jsonl"),
        }
    }

    /// Pairs when none are asked for: 5 for the chat set (short answers vary most; the
    /// median of 5 steadies its ratio), 1 for the others.
    pub fn default_pairs(self) -> usize {
        match self {
            SetName::Chat => 5,
            _ => 1,
        }
    }
}

impl std::str::FromStr for SetName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SetName::ALL
            .into_iter()
            .find(|n| n.as_str() == s.trim())
            .ok_or_else(|| format!("unknown set `{s}` (sets: code, extract, aicas, chat)"))
    }
}

impl std::fmt::Display for SetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a set file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetEntry {
    pub id: String,
    /// `text` is a user message for the chat template; otherwise a plain prompt.
    pub chat: bool,
    /// The prompt (exactly one of `text` and `file`).
    #[serde(default)]
    pub text: Option<String>,
    /// A file of the data directory holding the prompt, read as it is.
    #[serde(default)]
    pub file: Option<String>,
    /// Where the prompt came from.
    pub source: String,
}

/// Parses a set file: one [`SetEntry`] a line (blank lines skipped), ids unique, each with
/// exactly one of `text` and `file`, at least one entry.
pub fn parse_set(jsonl: &str) -> Result<Vec<SetEntry>, String> {
    let mut entries: Vec<SetEntry> = Vec::new();
    for (i, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: SetEntry =
            serde_json::from_str(line).map_err(|err| format!("line {}: {err}", i + 1))?;
        if e.text.is_some() == e.file.is_some() {
            return Err(format!(
                "line {} ({}): give exactly one of `text` and `file`",
                i + 1,
                e.id
            ));
        }
        if entries.iter().any(|other| other.id == e.id) {
            return Err(format!("line {}: the id `{}` is used twice", i + 1, e.id));
        }
        entries.push(e);
    }
    if entries.is_empty() {
        return Err("no prompts".to_string());
    }
    Ok(entries)
}

/// The entries of a built-in set.
pub fn builtin_set(name: SetName) -> Result<Vec<SetEntry>, String> {
    parse_set(name.jsonl()).map_err(|e| format!("bench/decode-sets/{name}.jsonl: {e}"))
}

/// A prompt ready to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    pub id: String,
    pub source: String,
    pub ids: Vec<u32>,
    /// Stop ids besides the model's eos ids: `<|im_end|>` for chat prompts.
    pub extra_stop_ids: Vec<u32>,
    /// A plain (non-chat) prompt is continued as the challenge's script does, its stop tokens
    /// suppressed: an instruct model ends a bare text at once.
    pub ignore_eos: bool,
}

/// The prompts of a set: chat entries rendered with the template, files read from
/// `data_dir`, everything tokenized by the model's tokenizer.
pub fn load_prompts(
    model: &dyn Model,
    entries: &[SetEntry],
    data_dir: &Path,
) -> std::io::Result<Vec<Prompt>> {
    let tokenizer = model.tokenizer();
    let im_end: Vec<u32> = tokenizer.token_to_id(IM_END).into_iter().collect();
    entries
        .iter()
        .map(|e| {
            let text = match (&e.text, &e.file) {
                (Some(text), _) => text.clone(),
                (None, Some(file)) => {
                    let path = data_dir.join(file);
                    std::fs::read_to_string(&path).map_err(|err| {
                        std::io::Error::new(
                            err.kind(),
                            format!(
                                "cannot read {} (prompt {}): {err} (give the data directory with --data-dir DIR)",
                                path.display(),
                                e.id
                            ),
                        )
                    })?
                }
                (None, None) => unreachable!("parse_set refuses entries without a prompt"),
            };
            let (text, extra_stop_ids) = if e.chat {
                (render(&[ChatMessage::user(text)], true), im_end.clone())
            } else {
                (text, Vec::new())
            };
            Ok(Prompt {
                id: e.id.clone(),
                source: e.source.clone(),
                ids: tokenizer.encode(&text),
                extra_stop_ids,
                ignore_eos: !e.chat,
            })
        })
        .collect()
}

/// Why the profile refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeSetsError {
    #[error("set {set}, prompt {id}: {error}")]
    Prompt {
        set: SetName,
        id: String,
        error: GenerateError,
    },
    #[error(
        "set {set}, prompt {id}: the {run} output differs from the first plain one at generated \
         token {at} ({}; {} vs {} tokens): {}",
        token_pair(*expected, *got),
        expected_len,
        got_len,
        if run.starts_with("speculative") { "speculative decoding changed a greedy output" }
        else { "greedy decoding is not deterministic here" }
    )]
    Mismatch {
        set: SetName,
        id: String,
        /// `"speculative (pair 2)"`, `"plain (pair 3)"`.
        run: String,
        /// Index of the first generated token that differs.
        at: usize,
        expected: Option<u32>,
        got: Option<u32>,
        expected_len: usize,
        got_len: usize,
    },
    #[error("0 pairs: nothing to run")]
    NoPairs,
}

fn token_pair(expected: Option<u32>, got: Option<u32>) -> String {
    let show = |t: Option<u32>| t.map_or("end".to_string(), |t| format!("id {t}"));
    format!("first plain {}, this one {}", show(expected), show(got))
}

/// The index of the first position where `a` and `b` differ (a length counts), or `None`
/// when they are equal.
pub fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    (common < a.len().max(b.len())).then_some(common)
}

/// Checks `got` (the output of `run`) against `expected` (the prompt's first plain output).
pub fn check_identical(
    set: SetName,
    id: &str,
    run: &str,
    expected: &[u32],
    got: &[u32],
) -> Result<(), DecodeSetsError> {
    match first_difference(expected, got) {
        None => Ok(()),
        Some(at) => Err(DecodeSetsError::Mismatch {
            set,
            id: id.to_string(),
            run: run.to_string(),
            at,
            expected: expected.get(at).copied(),
            got: got.get(at).copied(),
            expected_len: expected.len(),
            got_len: got.len(),
        }),
    }
}

/// Settings of the `decode-sets` profile.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeSetsOptions {
    /// Most tokens per answer (default 256).
    pub max_tokens: usize,
    /// Plain/speculative pairs of every set; `None`: [`SetName::default_pairs`].
    pub pairs: Option<usize>,
}

impl Default for DecodeSetsOptions {
    fn default() -> Self {
        DecodeSetsOptions {
            max_tokens: 256,
            pairs: None,
        }
    }
}

impl DecodeSetsOptions {
    pub fn pairs_for(&self, set: SetName) -> usize {
        self.pairs.unwrap_or_else(|| set.default_pairs())
    }
}

/// What one prompt of a set gave.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptRuns {
    pub id: String,
    pub source: String,
    pub prompt_tokens: usize,
    /// The greedy output (every run's, checked), the stop token included.
    pub output: Vec<u32>,
    /// One run per pair, in pair order.
    pub plain: Vec<GenerateStats>,
    pub speculative: Vec<GenerateStats>,
}

/// What one set gave.
#[derive(Clone, Debug, PartialEq)]
pub struct SetRuns {
    pub name: SetName,
    pub pairs: usize,
    pub prompts: Vec<PromptRuns>,
}

/// `Σ decode_tokens / Σ decode_seconds` of `runs`.
fn pooled_tok_s<'a>(runs: impl Iterator<Item = &'a GenerateStats>) -> f64 {
    let (tokens, seconds) = runs.fold((0usize, 0.0f64), |(t, s), r| {
        (t + r.decode_tokens, s + r.decode_seconds)
    });
    rate(tokens as f64, seconds)
}

impl SetRuns {
    fn runs(&self, speculative: bool) -> impl Iterator<Item = &GenerateStats> {
        self.prompts.iter().flat_map(move |p| {
            if speculative {
                p.speculative.iter()
            } else {
                p.plain.iter()
            }
        })
    }

    /// Decode tok/s of each pair over the set's prompts.
    pub fn decode_tok_s(&self, speculative: bool) -> Vec<f64> {
        (0..self.pairs)
            .map(|k| {
                pooled_tok_s(self.prompts.iter().map(|p| {
                    if speculative {
                        &p.speculative[k]
                    } else {
                        &p.plain[k]
                    }
                }))
            })
            .collect()
    }

    /// Speculative / plain decode tok/s of each pair (0 where plain measured nothing).
    pub fn ratios(&self) -> Vec<f64> {
        self.decode_tok_s(true)
            .iter()
            .zip(self.decode_tok_s(false))
            .map(|(s, p)| if p > 0.0 { s / p } else { 0.0 })
            .collect()
    }

    /// Sum of `f` over the runs of one kind.
    pub fn total(&self, speculative: bool, f: impl Fn(&GenerateStats) -> usize) -> usize {
        self.runs(speculative).map(f).sum()
    }

    /// Accepted / drafted tokens over the speculative runs (0 when nothing was drafted).
    pub fn acceptance_rate(&self) -> f64 {
        rate(
            self.total(true, |r| r.accepted_tokens) as f64,
            self.total(true, |r| r.drafted_tokens) as f64,
        )
    }

    /// Decode tokens / decode passes over the runs of one kind (0 without decode passes).
    pub fn tokens_per_pass(&self, speculative: bool) -> f64 {
        rate(
            self.total(speculative, |r| r.decode_tokens) as f64,
            self.total(speculative, |r| r.decode_passes) as f64,
        )
    }

    /// Generated tokens of one pass over the set (every output once).
    pub fn output_tokens(&self) -> usize {
        self.prompts.iter().map(|p| p.output.len()).sum()
    }
}

/// `weight_bytes / tokens_per_pass` (0 without passes).
pub fn bytes_per_token(weight_bytes: u64, tokens_per_pass: f64) -> f64 {
    if tokens_per_pass > 0.0 {
        weight_bytes as f64 / tokens_per_pass
    } else {
        0.0
    }
}

/// One greedy generation of `prompt` in a fresh cache: its output and statistics.
fn generation(
    model: &dyn Model,
    prompt: &Prompt,
    max_tokens: usize,
    speculate: bool,
) -> Result<(Vec<u32>, GenerateStats), GenerateError> {
    let opts = GenerateOptions {
        max_tokens,
        sampler: SamplerConfig::default(),
        ignore_eos: prompt.ignore_eos,
        extra_stop_ids: prompt.extra_stop_ids.clone(),
        speculate,
    };
    let mut cache = model.new_cache(prompt.ids.len() + max_tokens);
    let mut output = Vec::with_capacity(max_tokens);
    let stats = generate(model, &mut cache, &prompt.ids, &opts, &mut |t| {
        output.push(t);
        ControlFlow::Continue(())
    })?;
    Ok((output, stats))
}

/// Runs the profile on `sets` (each with its prompts, see [`load_prompts`]). Every prompt
/// is checked to fit the context first. `progress` gets a line after each pair of a prompt.
pub fn run_decode_sets(
    model: &dyn Model,
    sets: &[(SetName, Vec<Prompt>)],
    opts: &DecodeSetsOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<SetRuns>, DecodeSetsError> {
    let context = model.info().max_context;
    for (set, prompts) in sets {
        if opts.pairs_for(*set) == 0 {
            return Err(DecodeSetsError::NoPairs);
        }
        for p in prompts {
            check_fits(0, p.ids.len(), opts.max_tokens, context).map_err(|error| {
                DecodeSetsError::Prompt {
                    set: *set,
                    id: p.id.clone(),
                    error,
                }
            })?;
        }
    }
    let mut out = Vec::with_capacity(sets.len());
    for (set, prompts) in sets {
        let (set, pairs) = (*set, opts.pairs_for(*set));
        let mut runs: Vec<PromptRuns> = prompts
            .iter()
            .map(|p| PromptRuns {
                id: p.id.clone(),
                source: p.source.clone(),
                prompt_tokens: p.ids.len(),
                output: Vec::new(),
                plain: Vec::with_capacity(pairs),
                speculative: Vec::with_capacity(pairs),
            })
            .collect();
        // Pair by pair over the whole set, so that a slow stretch of the machine shows as
        // one pair's outlier rather than one prompt's.
        for k in 0..pairs {
            for (i, (p, r)) in prompts.iter().zip(runs.iter_mut()).enumerate() {
                let order = if k % 2 == 0 {
                    [false, true]
                } else {
                    [true, false]
                };
                for speculate in order {
                    let (output, stats) = generation(model, p, opts.max_tokens, speculate)
                        .map_err(|error| DecodeSetsError::Prompt {
                            set,
                            id: p.id.clone(),
                            error,
                        })?;
                    if r.plain.is_empty() && r.speculative.is_empty() {
                        // The first run (plain: pair 1 runs plain first) is the reference.
                        r.output = output;
                    } else {
                        let kind = if speculate { "speculative" } else { "plain" };
                        let run = format!("{kind} (pair {})", k + 1);
                        check_identical(set, &p.id, &run, &r.output, &output)?;
                    }
                    if speculate {
                        r.speculative.push(stats);
                    } else {
                        r.plain.push(stats);
                    }
                }
                let (plain, spec) = (&r.plain[k], &r.speculative[k]);
                progress(&format!(
                    "decode-sets {set} {}/{} {} pair {}/{pairs}: {} tokens, plain {:.1} tok/s, \
                     speculative {:.1} tok/s ({} of {} drafted accepted)",
                    i + 1,
                    prompts.len(),
                    p.id,
                    k + 1,
                    r.output.len(),
                    plain.decode_tok_s,
                    spec.decode_tok_s,
                    spec.accepted_tokens,
                    spec.drafted_tokens
                ));
            }
        }
        out.push(SetRuns {
            name: set,
            pairs,
            prompts: runs,
        });
    }
    Ok(out)
}

/// Values of a figure over the pairs, their median and range.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Spread {
    pub values: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: Vec<f64>) -> Spread {
        let s = Summary::of(&values);
        Spread {
            median: s.p50,
            min: s.min,
            max: s.max,
            values,
        }
    }
}

/// Plain or speculative decoding of a set.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DecodeFigures {
    /// tok/s of each pair (decode tokens / decode seconds over the set's prompts).
    pub decode_tok_s: Spread,
    /// Over all runs of this kind.
    pub decode_tokens: usize,
    pub decode_passes: usize,
    pub tokens_per_pass: f64,
    /// `model.weight_bytes / tokens_per_pass`.
    pub bytes_per_token: f64,
}

/// One prompt of a set in the report.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PromptReport {
    pub id: String,
    pub source: String,
    pub prompt_tokens: usize,
    /// Tokens of the output, the stop token included.
    pub generated_tokens: usize,
    /// `"eos"` (a stop token) or `"max_tokens"`.
    pub stop: &'static str,
    /// decode tok/s of each run, in pair order.
    pub plain_decode_tok_s: Vec<f64>,
    pub speculative_decode_tok_s: Vec<f64>,
    /// Of its first speculative run (speculation is deterministic: every run drafts alike).
    pub drafted_tokens: usize,
    pub accepted_tokens: usize,
    pub verify_passes: usize,
    pub decode_passes: usize,
}

/// One set in the report.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SetReport {
    pub name: SetName,
    pub prompts: usize,
    pub pairs: usize,
    /// Generated tokens of one pass over the set.
    pub output_tokens: usize,
    pub plain: DecodeFigures,
    pub speculative: DecodeFigures,
    /// Speculative / plain decode tok/s of each pair.
    pub ratio: Spread,
    /// Over all speculative runs.
    pub drafted_tokens: usize,
    pub accepted_tokens: usize,
    pub verify_passes: usize,
    /// `accepted_tokens / drafted_tokens`.
    pub acceptance_rate: f64,
    /// Every output equalled its prompt's first plain output (the run fails otherwise).
    pub identical: bool,
    pub per_prompt: Vec<PromptReport>,
}

impl SetReport {
    pub fn new(runs: &SetRuns, model: &ModelInfo) -> SetReport {
        let figures = |speculative: bool| {
            let tokens_per_pass = runs.tokens_per_pass(speculative);
            DecodeFigures {
                decode_tok_s: Spread::of(runs.decode_tok_s(speculative)),
                decode_tokens: runs.total(speculative, |r| r.decode_tokens),
                decode_passes: runs.total(speculative, |r| r.decode_passes),
                tokens_per_pass,
                bytes_per_token: bytes_per_token(model.weight_bytes, tokens_per_pass),
            }
        };
        let tok_s = |v: &[GenerateStats]| v.iter().map(|r| r.decode_tok_s).collect();
        SetReport {
            name: runs.name,
            prompts: runs.prompts.len(),
            pairs: runs.pairs,
            output_tokens: runs.output_tokens(),
            plain: figures(false),
            speculative: figures(true),
            ratio: Spread::of(runs.ratios()),
            drafted_tokens: runs.total(true, |r| r.drafted_tokens),
            accepted_tokens: runs.total(true, |r| r.accepted_tokens),
            verify_passes: runs.total(true, |r| r.verify_passes),
            acceptance_rate: runs.acceptance_rate(),
            identical: true,
            per_prompt: runs
                .prompts
                .iter()
                .map(|p| {
                    let first = &p.speculative[0];
                    PromptReport {
                        id: p.id.clone(),
                        source: p.source.clone(),
                        prompt_tokens: p.prompt_tokens,
                        generated_tokens: p.output.len(),
                        stop: p.plain[0].stop.as_str(),
                        plain_decode_tok_s: tok_s(&p.plain),
                        speculative_decode_tok_s: tok_s(&p.speculative),
                        drafted_tokens: first.drafted_tokens,
                        accepted_tokens: first.accepted_tokens,
                        verify_passes: first.verify_passes,
                        decode_passes: first.decode_passes,
                    }
                })
                .collect(),
        }
    }
}

/// What each figure means.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Definitions {
    pub decode_tok_s: &'static str,
    pub ratio: &'static str,
    pub acceptance_rate: &'static str,
    pub tokens_per_pass: &'static str,
    pub bytes_per_token: &'static str,
    pub order: &'static str,
}

pub const DEFINITIONS: Definitions = Definitions {
    decode_tok_s: "per pair: sum of decode tokens (generated tokens after the first) / sum of \
                   decode seconds (after the prefill) over the set's prompts; median and range \
                   over the pairs",
    ratio: "per pair: speculative decode_tok_s / plain decode_tok_s; median and range over the \
            pairs",
    acceptance_rate: "accepted drafted tokens / drafted tokens, over all speculative runs",
    tokens_per_pass: "decode tokens / decode forward passes (plain and verification), over all \
                      runs of the kind; 1 for plain decoding",
    bytes_per_token: "model.weight_bytes / tokens_per_pass: every packed weight is read once \
                      per decode pass (an upper bound: the embedding table counts whole); \
                      KV-cache reads are ignored",
    order: "pair by pair over the set, each prompt plain then speculative in odd pairs (1, 3, \
            ...), speculative then plain in even ones; each run a fresh cache, greedy, stop \
            tokens kept; every output must equal the prompt's first plain output",
};

/// The report's settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DecodeSetsConfig {
    /// `"qwen bench"`.
    pub name: &'static str,
    /// `"decode-sets"`.
    pub profile: &'static str,
    pub model: ModelInfo,
    pub threads: usize,
    pub batch_size: usize,
    pub decoding: &'static str,
    pub max_tokens: usize,
    /// `--pairs` when given (`null`: each set's default, see `report.sets[].pairs`).
    pub pairs: Option<usize>,
    pub sets: Vec<SetName>,
    /// Where the `file` prompts were read.
    pub data_dir: String,
}

/// The figures of the whole run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DecodeSetsSection {
    pub sets: Vec<SetReport>,
    /// Peak RSS of the process at the end, MB.
    pub peak_rss_mb: Option<f64>,
    pub definitions: Definitions,
}

/// What `--json` writes for the profile.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DecodeSetsReport {
    pub config: DecodeSetsConfig,
    pub report: DecodeSetsSection,
}

impl DecodeSetsReport {
    pub fn new(
        runs: &[SetRuns],
        opts: &DecodeSetsOptions,
        model: &ModelInfo,
        threads: usize,
        data_dir: &str,
        peak_rss: Option<u64>,
    ) -> DecodeSetsReport {
        DecodeSetsReport {
            config: DecodeSetsConfig {
                name: "qwen bench",
                profile: "decode-sets",
                model: model.clone(),
                threads,
                batch_size: 1,
                decoding: "greedy; chat answers end at a stop token or max_tokens, the plain AICAS prompt is continued to max_tokens (stop tokens suppressed)",
                max_tokens: opts.max_tokens,
                pairs: opts.pairs,
                sets: runs.iter().map(|r| r.name).collect(),
                data_dir: data_dir.to_string(),
            },
            report: DecodeSetsSection {
                sets: runs.iter().map(|r| SetReport::new(r, model)).collect(),
                peak_rss_mb: peak_rss.map(super::memory::to_mb),
                definitions: DEFINITIONS,
            },
        }
    }

    /// The table printed at the end: a heading line, one row per set, a closing line.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "decode-sets: greedy, up to {} tokens (chat answers end at their stop token) · {} thread{} · {} · {}\n",
            c.max_tokens,
            c.threads,
            if c.threads == 1 { "" } else { "s" },
            c.model.backend,
            c.model.scheme
        );
        out.push_str(&format!(
            "{:<8} {:>7} {:>5} {:>7} {:>11} {:>10} {:>21} {:>7} {:>8} {:>15}\n",
            "set",
            "prompts",
            "pairs",
            "tokens",
            "plain tok/s",
            "spec tok/s",
            "ratio (median; range)",
            "accept",
            "tok/pass",
            "MB/token p→s"
        ));
        for s in &self.report.sets {
            let ratio = format!(
                "{:.2} ({:.2}–{:.2})",
                s.ratio.median, s.ratio.min, s.ratio.max
            );
            let mb = format!(
                "{:.1}→{:.1}",
                s.plain.bytes_per_token / 1e6,
                s.speculative.bytes_per_token / 1e6
            );
            out.push_str(&format!(
                "{:<8} {:>7} {:>5} {:>7} {:>11.1} {:>10.1} {:>21} {:>6.1}% {:>8.2} {:>15}\n",
                s.name.as_str(),
                s.prompts,
                s.pairs,
                s.output_tokens,
                s.plain.decode_tok_s.median,
                s.speculative.decode_tok_s.median,
                ratio,
                s.acceptance_rate * 100.0,
                s.speculative.tokens_per_pass,
                mb
            ));
        }
        let prompts: usize = self.report.sets.iter().map(|s| s.prompts).sum();
        let runs: usize = self
            .report
            .sets
            .iter()
            .map(|s| 2 * s.pairs * s.prompts)
            .sum();
        out.push_str(&format!(
            "all outputs token-identical with and without speculation ({prompts} prompts, {runs} \
             generations) · peak RSS {}\n",
            self.report
                .peak_rss_mb
                .map_or("n/a".to_string(), |v| format!("{v:.0} MB"))
        ));
        out
    }
}
