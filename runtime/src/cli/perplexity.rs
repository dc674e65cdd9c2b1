//! `qwen perplexity`: windowed perplexity of a text file (see [`crate::eval::perplexity`]).

use std::path::PathBuf;

use clap::Args;

use super::{parse_positive, CliError, Io};
use crate::eval::perplexity::{perplexity, windows};
use crate::eval::progress::Progress;
use crate::model::Model;

#[derive(Debug, Clone, Args)]
pub struct PerplexityArgs {
    /// The text file; it is tokenized whole, as is (no BOS).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "../shared/data/wikitext2_test.txt"
    )]
    pub file: PathBuf,
    /// Tokens per window.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = parse_positive, allow_negative_numbers = true)]
    pub context: usize,
    /// Tokens between window starts: each window scores only its last STRIDE tokens
    /// (the first window scores all its tokens but the first) [default: half the context].
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub stride: Option<usize>,
    /// Use only the first N tokens of the file.
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub limit_tokens: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Io(std::io::Error::other(e.to_string()))
}

pub(super) fn run(
    args: &PerplexityArgs,
    model: &dyn Model,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    let max = model.info().max_context;
    if args.context > max {
        return Err(other(format!(
            "--context {} exceeds the model's context of {max} tokens",
            args.context
        )));
    }
    let stride = args.stride.unwrap_or((args.context / 2).max(1));
    if stride > args.context {
        return Err(other(format!(
            "--stride {stride} is larger than --context {}",
            args.context
        )));
    }
    let bytes = std::fs::read(&args.file)
        .map_err(|e| other(format!("cannot read {}: {e}", args.file.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        other(format!(
            "{} is not UTF-8 (byte {})",
            args.file.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    let mut tokens = model.tokenizer().encode(&text);
    let tokens_in_file = tokens.len();
    if let Some(n) = args.limit_tokens {
        tokens.truncate(n);
    }
    writeln!(
        io.stderr,
        "perplexity: {} of {tokens_in_file} tokens of {}, windows of {} every {}",
        tokens.len(),
        args.file.display(),
        args.context,
        stride
    )?;
    let total = windows(tokens.len(), args.context, stride)
        .map_err(other)?
        .len();
    let mut progress = Progress::new("perplexity", "windows", total);
    let report = {
        let stderr = &mut *io.stderr;
        perplexity(model, &tokens, args.context, stride, &mut |done, _| {
            progress.update(done, stderr)
        })
        .map_err(other)?
    };
    if args.json {
        let mut value = serde_json::to_value(&report).expect("the report serializes");
        value["file"] = args.file.display().to_string().into();
        value["tokens_in_file"] = tokens_in_file.into();
        value["model"] = model.info().name.clone().into();
        writeln!(io.stdout, "{value}")?;
    } else {
        writeln!(
            io.stdout,
            "perplexity: {:.4}\ntokens scored: {} (of {}; {} windows of {}, stride {})\nspeed: {:.1} tokens scored/s ({} tokens run in {:.1} s)",
            report.perplexity,
            report.tokens_scored,
            report.tokens,
            report.windows,
            report.context,
            report.stride,
            report.tokens_per_second,
            report.tokens_forwarded,
            report.seconds
        )?;
    }
    io.stdout.flush()?;
    Ok(())
}
