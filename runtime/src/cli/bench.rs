//! `qwen bench`: throughput and memory as the challenge's script (`--profile aicas`) or
//! optimum-benchmark (`--profile optimum`) measure them, and decode with and without
//! speculation on fixed prompt sets (`--profile decode-sets`); see [`crate::bench`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{parse_number, parse_positive, CliError, Io};
use crate::bench::decode_sets::{
    builtin_set, load_prompts, run_decode_sets, DecodeSetsError, DecodeSetsOptions,
    DecodeSetsReport, SetName,
};
use crate::bench::{
    run_aicas, run_optimum, synthetic_prompt, AicasOptions, BenchError, BenchReport, Instruments,
    OptimumOptions, SYNTHETIC_TEXT,
};
use crate::model::Model;

/// The challenge prompt, relative to the working directory (a checkout's `shared/` sits
/// beside the repository).
pub const DEFAULT_PROMPT_FILE: &str = "../shared/data/aicas2025_prompt.txt";

/// Where `decode-sets` reads the prompts its sets name by file (the AICAS prompt).
pub const DEFAULT_DATA_DIR: &str = "../shared/data";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// The AICAS 2025 challenge's throughput script.
    Aicas,
    /// optimum-benchmark's inference scenario.
    Optimum,
    /// Decode tok/s with and without speculation on fixed prompt sets (code edits,
    /// extraction, the AICAS prompt, chat), answers ending where the model ends them.
    DecodeSets,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Aicas => "aicas",
            Profile::Optimum => "optimum",
            Profile::DecodeSets => "decode-sets",
        }
    }
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
    /// decode-sets: the sets to run, comma-separated: code, extract, aicas, chat
    /// [default: all four].
    #[arg(long, value_name = "SETS", value_delimiter = ',', value_parser = parse_set)]
    pub sets: Option<Vec<SetName>>,
    /// decode-sets: most tokens per answer (answers end at the model's stop token or here),
    /// at least 2 [default: 256].
    #[arg(long, value_name = "N", value_parser = parse_at_least_2, allow_negative_numbers = true)]
    pub max_tokens: Option<usize>,
    /// decode-sets: plain/speculative pairs per prompt, for every set; the ratio is the
    /// median over pairs [default: 5 for chat, 1 for the other sets].
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub pairs: Option<usize>,
    /// decode-sets: the directory of the prompt files the sets name
    /// (aicas2025_prompt.txt) [default: ../shared/data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Also write the report as JSON (optimum-benchmark's shape; decode-sets: its own) to
    /// FILE, or to stdout with "-" (the summary line or table then goes to stderr).
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

fn parse_set(s: &str) -> Result<SetName, String> {
    s.parse()
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

/// Refuses the flags of the other profiles.
fn check_flags(args: &BenchArgs) -> Result<(), CliError> {
    use Profile::{Aicas, DecodeSets, Optimum};
    // Each flag and the profiles it applies to.
    let flags: [(&str, bool, &[Profile]); 11] = [
        (
            "--prompt-file",
            args.prompt_file.is_some(),
            &[Aicas, Optimum],
        ),
        ("--new-tokens", args.new_tokens.is_some(), &[Aicas, Optimum]),
        ("--runs", args.runs.is_some(), &[Aicas]),
        ("--prompt-tokens", args.prompt_tokens.is_some(), &[Optimum]),
        ("--iterations", args.iterations.is_some(), &[Optimum]),
        ("--duration", args.duration.is_some(), &[Optimum]),
        ("--warmup", args.warmup.is_some(), &[Optimum]),
        ("--sets", args.sets.is_some(), &[DecodeSets]),
        ("--max-tokens", args.max_tokens.is_some(), &[DecodeSets]),
        ("--pairs", args.pairs.is_some(), &[DecodeSets]),
        ("--data-dir", args.data_dir.is_some(), &[DecodeSets]),
    ];
    match flags
        .iter()
        .find(|(_, given, profiles)| *given && !profiles.contains(&args.profile))
    {
        Some((flag, _, profiles)) => {
            let names: Vec<&str> = profiles.iter().map(|p| p.name()).collect();
            Err(invalid(format!(
                "{flag} applies to --profile {} only",
                names.join(" or ")
            )))
        }
        None => Ok(()),
    }
}

impl From<DecodeSetsError> for CliError {
    fn from(e: DecodeSetsError) -> Self {
        invalid(e.to_string())
    }
}

/// Writes the report: JSON to `--json`'s file or stdout, `human` to stdout (stderr when the
/// JSON takes stdout).
fn write_report(
    json_to: Option<&str>,
    json: impl Fn() -> String,
    human: &str,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let human = human.trim_end();
    match json_to {
        Some("-") => {
            writeln!(io.stdout, "{}", json())?;
            writeln!(io.stderr, "{human}")?;
        }
        Some(path) => {
            std::fs::write(path, json() + "\n")
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {path}: {e}")))?;
            writeln!(io.stdout, "{human}")?;
        }
        None => writeln!(io.stdout, "{human}")?,
    }
    io.stdout.flush()?;
    io.stderr.flush()?;
    Ok(())
}

/// `qwen bench --profile decode-sets`.
fn run_sets(args: &BenchArgs, model: &dyn Model, io: &mut Io<'_>) -> Result<(), CliError> {
    let names = args.sets.clone().unwrap_or_else(|| SetName::ALL.to_vec());
    let mut unique: Vec<SetName> = Vec::new();
    for n in names {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    // Every prompt is read and tokenized before the first generation.
    let mut sets = Vec::with_capacity(unique.len());
    for name in unique {
        let entries = builtin_set(name).map_err(invalid)?;
        sets.push((name, load_prompts(model, &entries, &data_dir)?));
    }
    let opts = DecodeSetsOptions {
        max_tokens: args.max_tokens.unwrap_or(256),
        pairs: args.pairs,
    };
    let stderr = &mut *io.stderr;
    let mut progress = |line: &str| {
        let _ = writeln!(stderr, "{line}");
        let _ = stderr.flush();
    };
    let runs = run_decode_sets(model, &sets, &opts, &mut progress)?;
    let report = DecodeSetsReport::new(
        &runs,
        &opts,
        model.info(),
        rayon::current_num_threads(),
        &data_dir.display().to_string(),
        crate::bench::memory::peak_rss_bytes(),
    );
    let json = || serde_json::to_string_pretty(&report).expect("the report serializes");
    write_report(args.json.as_deref(), json, &report.table(), io)
}

pub(super) fn run(args: &BenchArgs, model: &dyn Model, io: &mut Io<'_>) -> Result<(), CliError> {
    check_flags(args)?;
    if args.profile == Profile::DecodeSets {
        return run_sets(args, model, io);
    }
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
        Profile::DecodeSets => unreachable!("run_sets runs it"),
    };

    let json = || serde_json::to_string_pretty(&report).expect("the report serializes");
    write_report(args.json.as_deref(), json, &report.summary_line(), io)
}
