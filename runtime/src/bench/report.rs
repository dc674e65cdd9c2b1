//! The report of a benchmark: JSON shaped like optimum-benchmark's `benchmark.json`
//! (`{"config": {...}, "report": {"prefill": {"latency", "throughput", "memory"}, ...}}`),
//! and a one-line human summary.
//!
//! `report` holds optimum-benchmark's targets for both profiles (`prefill`, `decode`,
//! `generate`, `per_token`, and `first_generate` for the `optimum` profile), each measured
//! with optimum-benchmark's definitions on the runs the profile made; the `aicas` profile
//! adds an `aicas` section with the challenge's own figures.
//!
//! Latencies are in seconds, throughputs in tokens/s (optimum-benchmark's `value` =
//! `volume / mean latency`; `p50`, `min`, `max` are the same volume over the median, largest
//! and smallest latency), memory in MB of 10^6 bytes.

use super::memory::to_mb;
use super::stats::{rate, Summary};
use super::{AicasOptions, AicasResult, OptimumOptions, OptimumResult};
use crate::model::ModelInfo;

/// Latencies of the runs of one target and their summary.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Latency {
    /// `"s"`.
    pub unit: &'static str,
    pub values: Vec<f64>,
    #[serde(flatten)]
    pub summary: Summary,
    /// The standard deviation in percent of the mean (optimum-benchmark's `stdev_`).
    pub stdev_: f64,
}

impl Latency {
    pub fn from_values(values: Vec<f64>) -> Latency {
        let summary = Summary::of(&values);
        let stdev_ = if summary.mean > 0.0 {
            summary.stdev / summary.mean * 100.0
        } else {
            0.0
        };
        Latency {
            unit: "s",
            values,
            summary,
            stdev_,
        }
    }
}

/// Tokens per second of a target: `volume` tokens per run over its latencies.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Throughput {
    /// `"tokens/s"`.
    pub unit: &'static str,
    /// `volume / mean latency` (optimum-benchmark's value).
    pub value: f64,
    /// `volume / median latency`.
    pub p50: f64,
    /// `volume / largest latency`.
    pub min: f64,
    /// `volume / smallest latency`.
    pub max: f64,
}

impl Throughput {
    pub fn from_latency(latency: &Latency, volume: usize) -> Throughput {
        let v = volume as f64;
        let s = &latency.summary;
        Throughput {
            unit: "tokens/s",
            value: rate(v, s.mean),
            p50: rate(v, s.p50),
            min: rate(v, s.max),
            max: rate(v, s.min),
        }
    }
}

/// Peak resident memory at the end of a target.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Memory {
    /// `"MB"` (10^6 bytes).
    pub unit: &'static str,
    /// Peak RSS of the process (`VmHWM`); `null` where it cannot be read.
    pub max_ram: Option<f64>,
}

impl Memory {
    pub fn from_bytes(peak: Option<u64>) -> Memory {
        Memory {
            unit: "MB",
            max_ram: peak.map(to_mb),
        }
    }
}

/// One target of the report.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Target {
    pub latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

impl Target {
    fn new(values: Vec<f64>, volume: Option<usize>, peak: Option<Option<u64>>) -> Target {
        let latency = Latency::from_values(values);
        Target {
            throughput: volume.map(|v| Throughput::from_latency(&latency, v)),
            memory: peak.map(Memory::from_bytes),
            latency,
        }
    }
}

/// The challenge's figures (the `aicas` profile).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AicasSection {
    pub prompt_tokens: usize,
    pub runs: usize,
    pub new_tokens: usize,
    /// `runs × prompt_tokens / Σ forward_seconds`.
    pub prefill_tok_s: f64,
    /// `runs × new_tokens / Σ generate_seconds`: the challenge's decode, prefill included.
    pub decode_tok_s: f64,
    /// `runs × (new_tokens − 1) / Σ (generate_seconds − first_token_seconds)`.
    pub decode_excl_prefill_tok_s: f64,
    pub forward_seconds: Vec<f64>,
    pub generate_seconds: Vec<f64>,
    pub first_token_seconds: Vec<f64>,
    /// Peak RSS at the end, MB.
    pub peak_rss_mb: Option<f64>,
    /// The definitions above, in words.
    pub definitions: AicasDefinitions,
}

/// What each figure of [`AicasSection`] means.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AicasDefinitions {
    pub prefill_tok_s: &'static str,
    pub decode_tok_s: &'static str,
    pub decode_excl_prefill_tok_s: &'static str,
}

const AICAS_DEFINITIONS: AicasDefinitions = AicasDefinitions {
    prefill_tok_s: "runs x prompt_tokens / total time of runs forward passes over the prompt \
                    (fresh cache each, last-position logits; no warm-up)",
    decode_tok_s: "runs x new_tokens / total time of runs generations of exactly new_tokens \
                   tokens, each including its prefill (the challenge's definition)",
    decode_excl_prefill_tok_s: "runs x (new_tokens - 1) / total time of the same generations \
                                after their first token (optimum-benchmark's definition)",
};

/// optimum-benchmark's targets, plus the challenge's section for the `aicas` profile.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Report {
    /// The first full generation, cold (`optimum` profile only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_generate: Option<Target>,
    /// `aicas`: each forward pass over the prompt; `optimum`: each generation of 1 token.
    pub prefill: Target,
    /// `aicas`: each generation after its first token; `optimum`: each generation minus the
    /// mean prefill latency. Volume `new_tokens − 1`.
    pub decode: Target,
    /// Each whole generation of `new_tokens` tokens. Volume `new_tokens`.
    pub generate: Target,
    /// The time of each token after the first, over all timed generations (latency only).
    pub per_token: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aicas: Option<AicasSection>,
}

/// What was measured, on what, and how.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReportConfig {
    /// `"qwen bench"`.
    pub name: &'static str,
    /// `"aicas"` or `"optimum"`.
    pub profile: &'static str,
    pub model: ModelInfo,
    /// Worker threads of the kernels (rayon's pool).
    pub threads: usize,
    pub batch_size: usize,
    /// Where the prompt came from: a file's path, or a description.
    pub prompt: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// `"greedy, stop tokens suppressed"`.
    pub decoding: &'static str,
    /// `aicas`: forward passes and generations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<usize>,
    /// `optimum`: generations of 2 tokens after the first full one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_runs: Option<usize>,
    /// `optimum`: least timed runs of each kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    /// `optimum`: least seconds of timed runs of each kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

impl ReportConfig {
    fn new(
        profile: &'static str,
        model: &ModelInfo,
        threads: usize,
        prompt: &str,
        prompt_tokens: usize,
        new_tokens: usize,
    ) -> ReportConfig {
        ReportConfig {
            name: "qwen bench",
            profile,
            model: model.clone(),
            threads,
            batch_size: 1,
            prompt: prompt.to_string(),
            prompt_tokens,
            new_tokens,
            decoding: "greedy, stop tokens suppressed",
            runs: None,
            warmup_runs: None,
            iterations: None,
            duration: None,
        }
    }
}

/// A whole benchmark report (what `--json` writes).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchReport {
    pub config: ReportConfig,
    pub report: Report,
}

/// `123 MB`, or `n/a`.
fn mb(peak: Option<f64>) -> String {
    peak.map_or("n/a".to_string(), |v| format!("{v:.0} MB"))
}

impl BenchReport {
    /// The report of an `aicas` run; `prompt` says where the prompt came from.
    pub fn aicas(
        result: &AicasResult,
        opts: &AicasOptions,
        model: &ModelInfo,
        threads: usize,
        prompt: &str,
    ) -> BenchReport {
        let mut config = ReportConfig::new(
            "aicas",
            model,
            threads,
            prompt,
            result.prompt_tokens,
            opts.new_tokens,
        );
        config.runs = Some(opts.runs);
        let per_token = result
            .generations
            .iter()
            .flat_map(|g| g.inter_token())
            .collect();
        let report = Report {
            first_generate: None,
            prefill: Target::new(
                result.forward_seconds.clone(),
                Some(result.prompt_tokens),
                Some(result.peak_rss_prefill),
            ),
            decode: Target::new(
                result.decode_seconds(),
                Some(result.new_tokens - 1),
                Some(result.peak_rss_decode),
            ),
            generate: Target::new(
                result.generate_seconds(),
                Some(result.new_tokens),
                Some(result.peak_rss_decode),
            ),
            per_token: Target::new(per_token, None, None),
            aicas: Some(AicasSection {
                prompt_tokens: result.prompt_tokens,
                runs: result.runs,
                new_tokens: result.new_tokens,
                prefill_tok_s: result.prefill_tok_s(),
                decode_tok_s: result.decode_tok_s(),
                decode_excl_prefill_tok_s: result.decode_excl_prefill_tok_s(),
                forward_seconds: result.forward_seconds.clone(),
                generate_seconds: result.generate_seconds(),
                first_token_seconds: result.generations.iter().map(|g| g.first_token()).collect(),
                peak_rss_mb: result.peak_rss_decode.map(to_mb),
                definitions: AICAS_DEFINITIONS,
            }),
        };
        BenchReport { config, report }
    }

    /// The report of an `optimum` run; `prompt` says where the prompt came from.
    pub fn optimum(
        result: &OptimumResult,
        opts: &OptimumOptions,
        model: &ModelInfo,
        threads: usize,
        prompt: &str,
    ) -> BenchReport {
        let mut config = ReportConfig::new(
            "optimum",
            model,
            threads,
            prompt,
            result.prompt_tokens,
            opts.new_tokens,
        );
        config.warmup_runs = Some(opts.warmup_runs);
        config.iterations = Some(opts.iterations);
        config.duration = Some(opts.duration.as_secs_f64());
        let report = Report {
            first_generate: Some(Target::new(
                vec![result.first_generate.total],
                Some(result.new_tokens),
                None,
            )),
            prefill: Target::new(
                result.prefill_seconds.clone(),
                Some(result.prompt_tokens),
                Some(result.peak_rss_prefill),
            ),
            decode: Target::new(
                result.decode_seconds(),
                Some(result.new_tokens - 1),
                Some(result.peak_rss_decode),
            ),
            generate: Target::new(
                result.generate_seconds(),
                Some(result.new_tokens),
                Some(result.peak_rss_decode),
            ),
            per_token: Target::new(result.per_token_seconds(), None, None),
            aicas: None,
        };
        BenchReport { config, report }
    }

    /// The highest peak RSS the report holds, MB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        [
            &self.report.prefill,
            &self.report.decode,
            &self.report.generate,
        ]
        .iter()
        .filter_map(|t| t.memory.as_ref()?.max_ram)
        .reduce(f64::max)
    }

    /// The one-line human summary, e.g.
    /// `aicas: prefill 512.3 tok/s · decode 101.2 tok/s (incl. prefill) · 118.4 tok/s (excl.) · …`
    /// or `optimum: prefill 498.0 tok/s (median; 480.2–530.9) · decode 117.9 tok/s (median; …) · …`.
    pub fn summary_line(&self) -> String {
        let c = &self.config;
        let head = match &self.report.aicas {
            Some(a) => format!(
                "aicas: prefill {:.1} tok/s · decode {:.1} tok/s (incl. prefill) · {:.1} tok/s (excl.) · \
                 {} prompt + {} new tokens, {} run{}",
                a.prefill_tok_s,
                a.decode_tok_s,
                a.decode_excl_prefill_tok_s,
                a.prompt_tokens,
                a.new_tokens,
                a.runs,
                if a.runs == 1 { "" } else { "s" }
            ),
            None => {
                let range = |t: &Target| {
                    let th = t.throughput.as_ref().expect("prefill and decode have throughputs");
                    format!("{:.1} tok/s (median; {:.1}–{:.1})", th.p50, th.min, th.max)
                };
                format!(
                    "optimum: prefill {} · decode {} · {} prompt + {} new tokens, {} + {} iterations",
                    range(&self.report.prefill),
                    range(&self.report.decode),
                    c.prompt_tokens,
                    c.new_tokens,
                    self.report.prefill.latency.summary.count,
                    self.report.generate.latency.summary.count,
                )
            }
        };
        format!(
            "{head} · peak RSS {} (weights {}) · {} thread{} · {} · {}",
            mb(self.peak_rss_mb()),
            mb(Some(to_mb(c.model.weight_bytes))),
            c.threads,
            if c.threads == 1 { "" } else { "s" },
            c.model.backend,
            c.model.scheme
        )
    }
}
