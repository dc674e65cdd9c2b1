//! `qwen bench`: throughput and memory as the challenge's script (`--profile aicas`) or
//! optimum-benchmark (`--profile optimum`) measure them; see [`crate::bench`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{parse_number, parse_positive, CliError, Io};
use crate::bench::{
    run_aicas, run_optimum, synthetic_prompt, AicasOptions, BenchError, BenchReport, Instruments,
    OptimumOptions, SYNTHETIC_TEXT,
};
use crate::model::Model;

/// The challenge prompt, relative to the working directory (a checkout's `shared/` sits
/// beside the repository).
pub const DEFAULT_PROMPT_FILE: &str = "../shared/data/aicas2025_prompt.txt";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// The AICAS 2025 challenge's throughput script.
    Aicas,
    /// optimum-benchmark's inference scenario.
    Optimum,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure: the challenge's script, or optimum-benchmark's inference scenario.
    #[arg(long, value_enum, default_value_t = Profile::Aicas)]
    pub profile: Profile,
    /// The prompt, read as it is [aicas default: ../shared/data/aicas2025_prompt.txt;
    /// optimum default: a built-in English text], tokenized; optimum repeats it to
    /// --prompt-tokens.
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Tokens per generation, at least 2 [aicas: 50; optimum: 64].
    #[arg(long, value_name = "N", value_parser = parse_at_least_2, allow_negative_numbers = true)]
    pub new_tokens: Option<usize>,
    /// aicas: forward passes over the prompt, and generations [default: 10].
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub runs: Option<usize>,
    /// optimum: length of the synthetic prompt in tokens [default: 256].
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub prompt_tokens: Option<usize>,
    /// optimum: least timed runs of each kind [default: 10].
    #[arg(long, value_name = "N", value_parser = parse_number::<usize>, allow_negative_numbers = true)]
    pub iterations: Option<usize>,
    /// optimum: least seconds of timed runs of each kind [default: 10].
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// optimum: generations of 2 tokens after the first full one, untimed [default: 2].
    #[arg(long, value_name = "N", value_parser = parse_number::<usize>, allow_negative_numbers = true)]
    pub warmup: Option<usize>,
    /// Also write the report as JSON (optimum-benchmark's shape) to FILE, or to stdout with
    /// "-" (the summary line then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<String>,
}

fn parse_at_least_2(s: &str) -> Result<usize, String> {
    match parse_number::<usize>(s)? {
        n if n < 2 => {
            Err("must be at least 2 (decode is what comes after the first token)".to_string())
        }
        n => Ok(n),
    }
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = parse_number(s)?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("must be a finite number of seconds >= 0".to_string())
    }
}

fn invalid(message: String) -> CliError {
    CliError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        message,
    ))
}

impl From<BenchError> for CliError {
    fn from(e: BenchError) -> Self {
        match e {
            BenchError::Generate(e) => CliError::Generate(e),
            other => invalid(other.to_string()),
        }
    }
}

/// Reads a prompt file as it is (no trimming, no unescaping), with a clear error.
pub fn read_prompt_file(path: &std::path::Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot read the prompt file {}: {e} (give another one with --prompt-file FILE)",
                path.display()
            ),
        )
    })
}

/// Refuses the flags of the other profile.
fn check_flags(args: &BenchArgs) -> Result<(), CliError> {
    let (profile, other): (&str, Vec<(&str, bool)>) = match args.profile {
        Profile::Aicas => (
            "optimum",
            vec![
                ("--prompt-tokens", args.prompt_tokens.is_some()),
                ("--iterations", args.iterations.is_some()),
                ("--duration", args.duration.is_some()),
                ("--warmup", args.warmup.is_some()),
            ],
        ),
        Profile::Optimum => ("aicas", vec![("--runs", args.runs.is_some())]),
    };
    match other.iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(invalid(format!(
            "{flag} applies to --profile {profile} only"
        ))),
        None => Ok(()),
    }
}

pub(super) fn run(args: &BenchArgs, model: &dyn Model, io: &mut Io<'_>) -> Result<(), CliError> {
    check_flags(args)?;
    let tokenizer = model.tokenizer();
    let info = model.info();
    let threads = rayon::current_num_threads();
    let stderr = &mut *io.stderr;
    let mut progress = |line: &str| {
        let _ = writeln!(stderr, "{line}");
        let _ = stderr.flush();
    };
    let inst = Instruments::system();

    let report = match args.profile {
        Profile::Aicas => {
            let path = args
                .prompt_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PROMPT_FILE));
            let text = read_prompt_file(&path)?;
            let prompt = tokenizer.encode(&text);
            let opts = AicasOptions {
                runs: args.runs.unwrap_or(10),
                new_tokens: args.new_tokens.unwrap_or(50),
            };
            let result = run_aicas(model, &prompt, &opts, inst, &mut progress)?;
            BenchReport::aicas(&result, &opts, info, threads, &path.display().to_string())
        }
        Profile::Optimum => {
            let (text, source) = match &args.prompt_file {
                Some(path) => (read_prompt_file(path)?, path.display().to_string()),
                None => (SYNTHETIC_TEXT.to_string(), "built-in text".to_string()),
            };
            let source_ids = tokenizer.encode(&text);
            if source_ids.is_empty() {
                return Err(invalid(format!("the prompt ({source}) has no tokens")));
            }
            let prompt = synthetic_prompt(&source_ids, args.prompt_tokens.unwrap_or(256));
            let opts = OptimumOptions {
                warmup_runs: args.warmup.unwrap_or(2),
                iterations: args.iterations.unwrap_or(10),
                duration: Duration::from_secs_f64(args.duration.unwrap_or(10.0)),
                new_tokens: args.new_tokens.unwrap_or(64),
            };
            let result = run_optimum(model, &prompt, &opts, inst, &mut progress)?;
            let source = format!("{source}, repeated to {} tokens", prompt.len());
            BenchReport::optimum(&result, &opts, info, threads, &source)
        }
    };

    let summary = report.summary_line();
    let json = || serde_json::to_string_pretty(&report).expect("the report serializes");
    match args.json.as_deref() {
        Some("-") => {
            writeln!(io.stdout, "{}", json())?;
            writeln!(io.stderr, "{summary}")?;
        }
        Some(path) => {
            std::fs::write(path, json() + "\n")
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {path}: {e}")))?;
            writeln!(io.stdout, "{summary}")?;
        }
        None => writeln!(io.stdout, "{summary}")?,
    }
    io.stdout.flush()?;
    io.stderr.flush()?;
    Ok(())
}
