//! Throughput and memory benchmarks of a compiled model, measured the way its users measure
//! it (`qwen bench`).
//!
//! Two profiles at batch 1 with greedy decoding and the stop tokens suppressed (every
//! generation produces exactly the tokens asked for), and a third on realistic answers,
//! [`decode_sets`] (decode with and without speculation on fixed prompt sets):
//!
//! - [`aicas`](run_aicas): the IEEE AICAS 2025 challenge's throughput script. No warm-up.
//!   *Prefill* = `runs × n_prompt / Σ time of one forward pass over the prompt` (a fresh
//!   cache each time, logits of the last position only). *Decode* =
//!   `runs × new / Σ time of one generation of new tokens`: the challenge's figure, each
//!   generation's prefill included. Beside it, *decode excl. prefill* =
//!   `runs × (new − 1) / Σ (time of a generation − time to its first token)`: optimum-benchmark's
//!   definition, measured on the same generations.
//! - [`optimum`](run_optimum): optimum-benchmark's inference scenario. A synthetic prompt of
//!   a fixed length ([`synthetic_prompt`]); warm-up: one full generation (reported as
//!   `first_generate`) and `warmup_runs` generations of 2 tokens; then prefill latency =
//!   latency of a generation of 1 token, repeated at least `iterations` times and for at least
//!   `duration`; then the same for generations of `new` tokens; decode latency of each =
//!   `its latency − mean prefill latency`. Throughputs are optimum-benchmark's:
//!   `volume / mean latency` (prefill volume = prompt tokens, decode volume = `new − 1`); the
//!   summary line gives the median and the range.
//!
//! Memory is the process's peak resident set (`VmHWM`, see [`memory`]), read after each
//! phase. Time comes from a [`Clock`] and memory from a function, both passed in
//! [`Instruments`], so that tests can drive them.
//!
//! Each cache is allocated before its timing starts (the allocation is lazy: its pages are
//! touched, and counted, during the forward passes).

pub mod clock;
pub mod decode_sets;
pub mod memory;
pub mod report;
pub mod stats;

use std::ops::ControlFlow;
use std::time::Duration;

pub use clock::{Clock, ManualClock, SystemClock};
pub use report::{BenchReport, ReportConfig};

use crate::generate::{check_fits, generate, GenerateError, GenerateOptions};
use crate::model::{LogitsFor, Model};
use crate::sampler::SamplerConfig;
use stats::{rate, Summary};

/// Where a benchmark reads the time and the peak memory.
#[derive(Clone, Copy)]
pub struct Instruments<'a> {
    pub clock: &'a dyn Clock,
    /// The process's peak resident set so far, in bytes (`None`: unknown).
    pub peak_rss: &'a dyn Fn() -> Option<u64>,
}

impl Instruments<'static> {
    /// The system's monotonic clock and `VmHWM` of `/proc/self/status`.
    pub fn system() -> Instruments<'static> {
        Instruments {
            clock: &SystemClock,
            peak_rss: &memory::peak_rss_bytes,
        }
    }
}

/// Seconds between two readings of a clock.
fn seconds(from: Duration, to: Duration) -> f64 {
    to.saturating_sub(from).as_secs_f64()
}

/// The timings of one generation, in seconds from its start.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationTiming {
    /// From the start of the call to its return.
    pub total: f64,
    /// When each generated token was handed out; the first is the time to first token.
    pub token_times: Vec<f64>,
}

impl GenerationTiming {
    /// Time to the first token (prefill and its sampling).
    pub fn first_token(&self) -> f64 {
        self.token_times.first().copied().unwrap_or(self.total)
    }

    /// Time after the first token: the decode.
    pub fn after_first_token(&self) -> f64 {
        (self.total - self.first_token()).max(0.0)
    }

    /// The time each token after the first took (differences of successive token times).
    pub fn inter_token(&self) -> Vec<f64> {
        self.token_times.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// Greedy, stop tokens suppressed: exactly `max_tokens` tokens. No speculation: the
/// challenge measures plain token-by-token decoding.
fn bench_options(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampler: SamplerConfig::default(),
        ignore_eos: true,
        extra_stop_ids: Vec::new(),
        speculate: false,
    }
}

/// One timed generation of exactly `new_tokens` tokens after `prompt`, in a fresh cache.
pub fn timed_generation(
    model: &dyn Model,
    prompt: &[u32],
    new_tokens: usize,
    clock: &dyn Clock,
) -> Result<GenerationTiming, GenerateError> {
    let opts = bench_options(new_tokens);
    let mut cache = model.new_cache(prompt.len() + new_tokens);
    let mut token_times = Vec::with_capacity(new_tokens);
    let start = clock.now();
    generate(model, &mut cache, prompt, &opts, &mut |_| {
        token_times.push(seconds(start, clock.now()));
        ControlFlow::Continue(())
    })?;
    let total = seconds(start, clock.now());
    Ok(GenerationTiming { total, token_times })
}

/// One timed forward pass over `prompt` in a fresh cache (logits of the last position).
pub fn timed_forward(
    model: &dyn Model,
    prompt: &[u32],
    clock: &dyn Clock,
) -> Result<f64, GenerateError> {
    let mut cache = model.new_cache(prompt.len());
    let start = clock.now();
    let logits = model.forward(&mut cache, prompt, LogitsFor::Last)?;
    let elapsed = seconds(start, clock.now());
    let vocab = model.info().vocab_size;
    if logits.len() != vocab {
        return Err(GenerateError::BadLogits {
            got: logits.len(),
            expected: vocab,
        });
    }
    Ok(elapsed)
}

/// Why a benchmark refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BenchError {
    #[error(
        "{0} new tokens: a benchmark needs at least 2 (decode is what comes after the first token)"
    )]
    TooFewNewTokens(usize),
    #[error("nothing to time: {0}")]
    NothingToTime(&'static str),
    #[error(transparent)]
    Generate(#[from] GenerateError),
}

/// Refuses what cannot run: an empty prompt, fewer than 2 new tokens (the decode needs a
/// token after the first), a prompt id outside the vocabulary, or a prompt and generation
/// beyond the model's context.
fn check(model: &dyn Model, prompt: &[u32], new_tokens: usize) -> Result<(), BenchError> {
    if new_tokens < 2 {
        return Err(BenchError::TooFewNewTokens(new_tokens));
    }
    check_fits(0, prompt.len(), new_tokens, model.info().max_context)?;
    let vocab = model.info().vocab_size;
    if let Some((index, &id)) = prompt
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= vocab)
    {
        return Err(GenerateError::TokenOutOfRange { index, id, vocab }.into());
    }
    Ok(())
}

/// Settings of the `aicas` profile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AicasOptions {
    /// Forward passes, and generations (default 10).
    pub runs: usize,
    /// Tokens per generation (default 50).
    pub new_tokens: usize,
}

impl Default for AicasOptions {
    fn default() -> Self {
        AicasOptions {
            runs: 10,
            new_tokens: 50,
        }
    }
}

/// What the `aicas` profile measured.
#[derive(Clone, Debug, PartialEq)]
pub struct AicasResult {
    pub prompt_tokens: usize,
    pub runs: usize,
    pub new_tokens: usize,
    /// Seconds of each forward pass over the prompt.
    pub forward_seconds: Vec<f64>,
    /// Each generation of `new_tokens` tokens (prefill included).
    pub generations: Vec<GenerationTiming>,
    /// Peak RSS (bytes) after the forward passes, and after the generations.
    pub peak_rss_prefill: Option<u64>,
    pub peak_rss_decode: Option<u64>,
}

impl AicasResult {
    /// The challenge's prefill: `runs × n_prompt / Σ forward seconds`.
    pub fn prefill_tok_s(&self) -> f64 {
        let total: f64 = self.forward_seconds.iter().sum();
        rate(
            (self.forward_seconds.len() * self.prompt_tokens) as f64,
            total,
        )
    }

    /// Seconds of each generation, prefill included.
    pub fn generate_seconds(&self) -> Vec<f64> {
        self.generations.iter().map(|g| g.total).collect()
    }

    /// Seconds of each generation after its first token.
    pub fn decode_seconds(&self) -> Vec<f64> {
        self.generations
            .iter()
            .map(GenerationTiming::after_first_token)
            .collect()
    }

    /// The challenge's decode: `runs × new / Σ generation seconds` (prefill included).
    pub fn decode_tok_s(&self) -> f64 {
        rate(
            (self.generations.len() * self.new_tokens) as f64,
            self.generate_seconds().iter().sum(),
        )
    }

    /// Decode without the prefill (optimum-benchmark's definition):
    /// `runs × (new − 1) / Σ (generation seconds − time to first token)`.
    pub fn decode_excl_prefill_tok_s(&self) -> f64 {
        rate(
            (self.generations.len() * (self.new_tokens - 1)) as f64,
            self.decode_seconds().iter().sum(),
        )
    }
}

/// Runs the `aicas` profile on `prompt`: `runs` forward passes over it, then `runs`
/// generations of `new_tokens` tokens. `progress` gets a line after each run.
pub fn run_aicas(
    model: &dyn Model,
    prompt: &[u32],
    opts: &AicasOptions,
    inst: Instruments<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<AicasResult, BenchError> {
    check(model, prompt, opts.new_tokens)?;
    if opts.runs == 0 {
        return Err(BenchError::NothingToTime("0 runs"));
    }
    let n = prompt.len();
    let mut forward_seconds = Vec::with_capacity(opts.runs);
    for i in 0..opts.runs {
        let s = timed_forward(model, prompt, inst.clock)?;
        progress(&format!(
            "aicas prefill {}/{}: {n} tokens in {s:.3} s ({:.1} tok/s)",
            i + 1,
            opts.runs,
            rate(n as f64, s)
        ));
        forward_seconds.push(s);
    }
    let peak_rss_prefill = (inst.peak_rss)();
    let mut generations = Vec::with_capacity(opts.runs);
    for i in 0..opts.runs {
        let g = timed_generation(model, prompt, opts.new_tokens, inst.clock)?;
        progress(&format!(
            "aicas decode {}/{}: {} tokens in {:.3} s, first after {:.3} s",
            i + 1,
            opts.runs,
            opts.new_tokens,
            g.total,
            g.first_token()
        ));
        generations.push(g);
    }
    let peak_rss_decode = (inst.peak_rss)();
    Ok(AicasResult {
        prompt_tokens: n,
        runs: opts.runs,
        new_tokens: opts.new_tokens,
        forward_seconds,
        generations,
        peak_rss_prefill,
        peak_rss_decode,
    })
}

/// Settings of the `optimum` profile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimumOptions {
    /// Generations of 2 tokens after the first full generation, untimed (default 2).
    pub warmup_runs: usize,
    /// Least number of timed runs of each kind (default 10).
    pub iterations: usize,
    /// Least time spent on the timed runs of each kind (default 10 s).
    pub duration: Duration,
    /// Tokens per generation (default 64).
    pub new_tokens: usize,
}

impl Default for OptimumOptions {
    fn default() -> Self {
        OptimumOptions {
            warmup_runs: 2,
            iterations: 10,
            duration: Duration::from_secs(10),
            new_tokens: 64,
        }
    }
}

/// What the `optimum` profile measured.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimumResult {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub warmup_runs: usize,
    /// The first full generation (cold start), part of the warm-up.
    pub first_generate: GenerationTiming,
    /// Seconds of each generation of 1 token: the prefill latencies.
    pub prefill_seconds: Vec<f64>,
    /// Each generation of `new_tokens` tokens.
    pub generations: Vec<GenerationTiming>,
    pub peak_rss_prefill: Option<u64>,
    pub peak_rss_decode: Option<u64>,
}

impl OptimumResult {
    /// Seconds of each generation of `new_tokens` tokens.
    pub fn generate_seconds(&self) -> Vec<f64> {
        self.generations.iter().map(|g| g.total).collect()
    }

    /// Decode latencies: each generation's seconds minus the mean prefill latency.
    pub fn decode_seconds(&self) -> Vec<f64> {
        let prefill = Summary::of(&self.prefill_seconds).mean;
        self.generations.iter().map(|g| g.total - prefill).collect()
    }

    /// Seconds of each token after the first, over all timed generations.
    pub fn per_token_seconds(&self) -> Vec<f64> {
        self.generations
            .iter()
            .flat_map(GenerationTiming::inter_token)
            .collect()
    }

    /// `prompt_tokens / mean prefill latency`.
    pub fn prefill_tok_s(&self) -> f64 {
        rate(
            self.prompt_tokens as f64,
            Summary::of(&self.prefill_seconds).mean,
        )
    }

    /// `(new − 1) / mean decode latency`, i.e. `(new − 1) / (mean generate − mean prefill)`.
    pub fn decode_tok_s(&self) -> f64 {
        rate(
            (self.new_tokens - 1) as f64,
            Summary::of(&self.decode_seconds()).mean,
        )
    }
}

/// Runs `run` until it has run at least `iterations` times and for at least `duration`
/// (optimum-benchmark's loop); returns what each run returned.
fn repeat<T>(
    clock: &dyn Clock,
    iterations: usize,
    duration: Duration,
    mut run: impl FnMut(usize) -> Result<T, GenerateError>,
) -> Result<Vec<T>, GenerateError> {
    let start = clock.now();
    let mut out = Vec::new();
    while out.len() < iterations || clock.now().saturating_sub(start) < duration {
        out.push(run(out.len())?);
    }
    Ok(out)
}

/// Runs the `optimum` profile on `prompt` (see the module documentation).
pub fn run_optimum(
    model: &dyn Model,
    prompt: &[u32],
    opts: &OptimumOptions,
    inst: Instruments<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<OptimumResult, BenchError> {
    check(model, prompt, opts.new_tokens)?;
    if opts.iterations == 0 && opts.duration.is_zero() {
        return Err(BenchError::NothingToTime(
            "0 iterations and a duration of 0 s",
        ));
    }
    let n = prompt.len();
    let first_generate = timed_generation(model, prompt, opts.new_tokens, inst.clock)?;
    progress(&format!(
        "optimum warm-up: first generation of {} tokens in {:.3} s",
        opts.new_tokens, first_generate.total
    ));
    for _ in 0..opts.warmup_runs {
        timed_generation(model, prompt, 2, inst.clock)?;
    }
    let prefill_seconds = repeat(inst.clock, opts.iterations, opts.duration, |i| {
        let g = timed_generation(model, prompt, 1, inst.clock)?;
        progress(&format!(
            "optimum prefill {}: {n} tokens in {:.3} s",
            i + 1,
            g.total
        ));
        Ok(g.total)
    })?;
    let peak_rss_prefill = (inst.peak_rss)();
    let generations = repeat(inst.clock, opts.iterations, opts.duration, |i| {
        let g = timed_generation(model, prompt, opts.new_tokens, inst.clock)?;
        progress(&format!(
            "optimum generate {}: {} tokens in {:.3} s",
            i + 1,
            opts.new_tokens,
            g.total
        ));
        Ok(g)
    })?;
    let peak_rss_decode = (inst.peak_rss)();
    Ok(OptimumResult {
        prompt_tokens: n,
        new_tokens: opts.new_tokens,
        warmup_runs: opts.warmup_runs,
        first_generate,
        prefill_seconds,
        generations,
        peak_rss_prefill,
        peak_rss_decode,
    })
}

/// The text the `optimum` profile's prompt is made of when no prompt file is given.
pub const SYNTHETIC_TEXT: &str = "The old lighthouse keeper climbed the narrow stairs every \
evening, carrying a lamp, a notebook and a thermos of tea. From the top he could see the \
harbour, the fishing boats coming home, and the long line of hills behind the town. He wrote \
down the wind, the height of the waves and the names of the ships that passed, as his father \
had done before him. Nobody had read the notebooks for years, but he kept them in order on a \
shelf, one for each year, because a record that stops is worth less than one that goes on.";

/// A prompt of exactly `len` tokens: `source` repeated and cut (`source` must not be empty).
///
/// optimum-benchmark draws random ids; ordinary text tokenized by the model's own tokenizer
/// gives the same work with a realistic sequence. The `optimum` profile uses
/// [`SYNTHETIC_TEXT`] (or the prompt file when one is given), tokenized, as `source`.
pub fn synthetic_prompt(source: &[u32], len: usize) -> Vec<u32> {
    assert!(!source.is_empty(), "no tokens to build a prompt from");
    source.iter().copied().cycle().take(len).collect()
}
