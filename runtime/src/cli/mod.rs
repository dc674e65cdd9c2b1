//! The command line of the per-model executable `qwen`.
//!
//! ```text
//! qwen generate "PROMPT" [--max-tokens N] [--temperature T --top-k K --top-p P --seed S]
//!                        [--chat [--system "..."]] [--ignore-eos] [--no-speculate] [--json]
//! qwen chat [--system "..."] [--context N] [--max-tokens N] [sampling flags] [--no-speculate]
//!           [--stats]
//! qwen info [--json]
//! qwen --threads N ...    (any subcommand; default: the number of cores)
//! ```
//!
//! [`main_with`] is what the executable's `main` calls; [`run`] is the same with the
//! arguments, the standard streams and the exit code in the caller's hands (for tests).
//! Every error prints `error: ...` on stderr and gives exit code 1; help and version print
//! on stdout with exit code 0.

mod bench;
mod chat;
mod eval;
mod generate;
mod info;
mod kl;
mod perplexity;
mod score;
mod serve;

pub use serve::ServeArgs;

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::generate::{GenerateError, GenerateStats};
use crate::model::Model;
use crate::sampler::SamplerConfig;

/// Run a compiled Qwen2.5 model.
#[derive(Debug, Parser)]
#[command(name = "qwen", version)]
pub struct Cli {
    /// Worker threads for the kernels [default: the number of cores].
    #[arg(long, global = true, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Continue a prompt, printing the text as it is generated.
    Generate(GenerateArgs),
    /// Chat on stdin/stdout; the conversation stays in the KV cache between turns.
    Chat(ChatArgs),
    /// Show what was compiled: model, quantization, backend and shapes.
    Info(InfoArgs),
    /// lm-evaluation-harness 0-shot multiple choice: arc_challenge, hellaswag, piqa.
    Eval(eval::EvalArgs),
    /// Windowed perplexity of a text file.
    Perplexity(perplexity::PerplexityArgs),
    /// Throughput and peak memory, as the AICAS 2025 challenge or optimum-benchmark measure them;
    /// decode with and without speculation on fixed prompt sets (--profile decode-sets).
    Bench(bench::BenchArgs),
    /// The AICAS challenge score from an eval JSON, a bench JSON and the baseline's figures.
    Score(score::ScoreArgs),
    /// KL divergence from reference logits (`qwenc reference-logits`), as llama.cpp's
    /// --kl-divergence.
    Kl(kl::KlArgs),
    /// An OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions).
    Serve(serve::ServeArgs),
}

/// Sampling flags; greedy unless `--temperature` is above 0.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, value_name = "T", default_value_t = 0.0, value_parser = parse_temperature, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample among the K most likely tokens only (0: no limit).
    #[arg(long, value_name = "K", default_value_t = 0, value_parser = parse_number::<usize>, allow_negative_numbers = true)]
    pub top_k: usize,
    /// Sample among the most likely tokens whose probability adds up to P, in (0, 1].
    #[arg(long, value_name = "P", default_value_t = 1.0, value_parser = parse_top_p, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Seed of the random numbers [default: a random one].
    #[arg(long, value_name = "S", value_parser = parse_number::<u64>, allow_negative_numbers = true)]
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// The prompt ("-" reads it from stdin).
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = parse_positive, allow_negative_numbers = true)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Wrap the prompt in the chat template as a user message, and stop at <|im_end|>.
    #[arg(long)]
    pub chat: bool,
    /// The system message (with --chat) [default: the template's].
    #[arg(long, value_name = "TEXT", requires = "chat")]
    pub system: Option<String>,
    /// Never stop at an end-of-sequence token: generate exactly --max-tokens tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Decode token by token, without speculative decoding (prompt-lookup drafts checked in
    /// one pass; it never changes greedy output).
    #[arg(long)]
    pub no_speculate: bool,
    /// Print one JSON object (ids, text, speeds) at the end instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// The system message [default: the template's].
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Positions of the KV cache: the conversation is reset when it is full
    /// [default: the model's context].
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub context: Option<usize>,
    /// Tokens per answer at most [default: until the context is full].
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub max_tokens: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Decode token by token, without speculative decoding (prompt-lookup drafts checked in
    /// one pass; it never changes greedy output).
    #[arg(long)]
    pub no_speculate: bool,
    /// Print token counts and speeds on stderr after each answer.
    #[arg(long)]
    pub stats: bool,
}

#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a valid number here"))
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match parse_number::<usize>(s)? {
        0 => Err("must be at least 1".to_string()),
        n => Ok(n),
    }
}

fn parse_temperature(s: &str) -> Result<f32, String> {
    let t: f32 = parse_number(s)?;
    if t.is_finite() && t >= 0.0 {
        Ok(t)
    } else {
        Err("must be a finite number >= 0".to_string())
    }
}

fn parse_top_p(s: &str) -> Result<f32, String> {
    let p: f32 = parse_number(s)?;
    if p > 0.0 && p <= 1.0 {
        Ok(p)
    } else {
        Err("must be in (0, 1]".to_string())
    }
}

fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    std::collections::hash_map::RandomState::new().hash_one(nanos)
}

impl SamplingArgs {
    /// The sampler settings; a random seed when none was given.
    pub fn config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed.unwrap_or_else(random_seed),
        }
    }

    /// A note when top-k / top-p were given but decoding is greedy.
    fn note_unused(&self, stderr: &mut dyn Write) {
        if self.temperature == 0.0 && (self.top_k > 1 || self.top_p < 1.0) {
            let _ = writeln!(
                stderr,
                "note: --top-k / --top-p have no effect without --temperature above 0 (greedy decoding)"
            );
        }
    }
}

/// The standard streams of a [`run`].
pub struct Io<'a> {
    pub stdin: &'a mut dyn BufRead,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
    /// stdin is a terminal: `chat` shows a prompt and a greeting.
    pub interactive: bool,
}

/// Why a command failed.
#[derive(Debug)]
enum CliError {
    Generate(GenerateError),
    Io(std::io::Error),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Generate(e) => e.fmt(f),
            CliError::Io(e) => e.fmt(f),
        }
    }
}

impl From<GenerateError> for CliError {
    fn from(e: GenerateError) -> Self {
        CliError::Generate(e)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Io(e)
    }
}

/// `[N prompt tokens, M generated; prefill X tok/s, decode Y tok/s]`, with
/// `; A of D drafted tokens accepted in P passes` before the `]` when drafts were verified.
pub fn summary_line(stats: &GenerateStats) -> String {
    let speculation = if stats.verify_passes > 0 {
        format!(
            "; {} of {} drafted tokens accepted in {} passes",
            stats.accepted_tokens, stats.drafted_tokens, stats.verify_passes
        )
    } else {
        String::new()
    };
    format!(
        "[{} prompt tokens, {} generated; prefill {:.1} tok/s, decode {:.1} tok/s{speculation}]",
        stats.prompt_tokens, stats.generated_tokens, stats.prefill_tok_s, stats.decode_tok_s
    )
}

/// Parses `args` (the first one is the program name) and runs the command on `model`.
/// Returns the exit code: 0 on success (and for `--help` / `--version`), 1 on any error,
/// after `error: ...` on stderr.
pub fn run<I, T>(args: I, model: &dyn Model, io: &mut Io<'_>) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let text = e.render().to_string();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = io.stdout.write_all(text.as_bytes());
                    let _ = io.stdout.flush();
                    0
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = write!(
                        io.stderr,
                        "error: a subcommand is needed: generate, chat or info\n\n{text}"
                    );
                    let _ = io.stderr.flush();
                    1
                }
                _ => {
                    let _ = io.stderr.write_all(text.as_bytes());
                    let _ = io.stderr.flush();
                    1
                }
            };
        }
    };
    let result = match &cli.command {
        Command::Generate(args) => {
            crate::threads::configure(cli.threads);
            generate::run(args, model, io)
        }
        Command::Chat(args) => {
            crate::threads::configure(cli.threads);
            chat::run(args, model, io)
        }
        Command::Info(args) => info::run(args, model, io),
        Command::Eval(args) => {
            crate::threads::configure(cli.threads);
            eval::run(args, model, io)
        }
        Command::Perplexity(args) => {
            crate::threads::configure(cli.threads);
            perplexity::run(args, model, io)
        }
        Command::Bench(args) => {
            crate::threads::configure(cli.threads);
            bench::run(args, model, io)
        }
        Command::Score(args) => score::run(args, io),
        Command::Kl(args) => {
            crate::threads::configure(cli.threads);
            kl::run(args, model, io)
        }
        Command::Serve(args) => {
            crate::threads::configure(cli.threads);
            serve::run(args, model, io)
        }
    };
    match result {
        Ok(()) => 0,
        // The reader of stdout went away (`qwen generate ... | head`): nothing more to say.
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            let _ = writeln!(io.stderr, "error: {e}");
            let _ = io.stderr.flush();
            1
        }
    }
}

/// The `main` of a per-model executable: runs the command line on `model` with the
/// process's arguments and standard streams.
pub fn main_with(model: &dyn Model) -> ExitCode {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut stdin = stdin.lock();
    // Unlocked handles: the kernels' threads may still print.
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let code = run(
        std::env::args_os(),
        model,
        &mut Io {
            stdin: &mut stdin,
            stdout: &mut stdout,
            stderr: &mut stderr,
            interactive,
        },
    );
    ExitCode::from(code)
}
