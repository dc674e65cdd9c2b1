//! `qwen score`: the challenge score (see [`crate::score`]) from an eval JSON, a bench JSON
//! and the baseline's figures. Runs no model.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};

use super::{parse_number, CliError, Io};
use crate::score::{measured_from_reports, score, Baseline, Best, Ratio, WEIGHTS};

#[derive(Debug, Clone, Args)]
pub struct ScoreArgs {
    /// The results of `qwen eval --output FILE` (arc_challenge, hellaswag and piqa).
    #[arg(long, value_name = "FILE")]
    pub eval: PathBuf,
    /// The report of `qwen bench --json FILE` (`aicas` profile preferred).
    #[arg(long, value_name = "FILE")]
    pub bench: PathBuf,
    /// P_max: the original model's accuracy average (a fraction, e.g. 0.45).
    #[arg(long, value_name = "P", value_parser = parse_number::<f64>, allow_negative_numbers = true)]
    pub p_max: f64,
    /// P_min: the accuracy average of Qwen2.5-0.5B-Instruct-GPTQ-Int4.
    #[arg(long, value_name = "P", value_parser = parse_number::<f64>, allow_negative_numbers = true)]
    pub p_min: f64,
    /// M_ori: the original model's peak memory, MB.
    #[arg(long, value_name = "MB", value_parser = parse_number::<f64>, allow_negative_numbers = true)]
    pub mem_ori: f64,
    /// T_ori for prefill: the original model's prefill throughput, tokens/s.
    #[arg(long, value_name = "TOK_S", value_parser = parse_number::<f64>, allow_negative_numbers = true)]
    pub prefill_ori: f64,
    /// T_ori for decode: the original model's decode throughput, tokens/s.
    #[arg(long, value_name = "TOK_S", value_parser = parse_number::<f64>, allow_negative_numbers = true)]
    pub decode_ori: f64,
    /// The best team's accuracy ratio (normalisation).
    #[arg(long, value_name = "R", default_value_t = 1.0, value_parser = parse_number::<f64>, allow_negative_numbers = true)]
    pub best_acc: f64,
    /// The best team's memory ratio.
    #[arg(long, value_name = "R", default_value_t = 1.0, value_parser = parse_number::<f64>, allow_negative_numbers = true)]
    pub best_mem: f64,
    /// The best team's prefill ratio.
    #[arg(long, value_name = "R", default_value_t = 1.0, value_parser = parse_number::<f64>, allow_negative_numbers = true)]
    pub best_prefill: f64,
    /// The best team's decode ratio.
    #[arg(long, value_name = "R", default_value_t = 1.0, value_parser = parse_number::<f64>, allow_negative_numbers = true)]
    pub best_decode: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Io(std::io::Error::other(e.to_string()))
}

fn read_json(path: &Path, what: &str) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| other(format!("cannot read the {what} {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        other(format!(
            "the {what} {} is not valid JSON: {e}",
            path.display()
        ))
    })
}

pub(super) fn run(args: &ScoreArgs, io: &mut Io<'_>) -> Result<(), CliError> {
    let eval = read_json(&args.eval, "eval JSON")?;
    let bench = read_json(&args.bench, "bench JSON")?;
    let measured = measured_from_reports(&eval, &bench).map_err(|e| {
        other(format!(
            "{e} ({} / {})",
            args.eval.display(),
            args.bench.display()
        ))
    })?;
    let baseline = Baseline {
        p_max: args.p_max,
        p_min: args.p_min,
        mem_mb: args.mem_ori,
        prefill_tok_s: args.prefill_ori,
        decode_tok_s: args.decode_ori,
    };
    let best = Best {
        acc: args.best_acc,
        mem: args.best_mem,
        prefill: args.best_prefill,
        decode: args.best_decode,
    };
    let s = score(&measured, &baseline, &best).map_err(other)?;
    if args.json {
        let value = json!({
            "measured": measured,
            "baseline": baseline,
            "best": best,
            "weights": WEIGHTS,
            "score": s,
        });
        writeln!(io.stdout, "{value}")?;
    } else {
        let tasks: Vec<String> = measured
            .task_metrics
            .iter()
            .map(|(t, v)| format!("{t} {v:.4}"))
            .collect();
        let line = |name: &str, detail: String, r: &Ratio, w: f64| {
            format!(
                "{name:<8} {:>8.4} {:>11.4} {:>9.4}   {w} x  {detail}",
                r.raw, r.normalised, r.weighted
            )
        };
        writeln!(
            io.stdout,
            "ratio       raw  normalised  weighted   weight, inputs"
        )?;
        writeln!(
            io.stdout,
            "{}",
            line(
                "acc",
                format!(
                    "P {:.4} ({}); P_max {}, P_min {}",
                    measured.accuracy,
                    tasks.join(", "),
                    baseline.p_max,
                    baseline.p_min
                ),
                &s.acc,
                WEIGHTS.acc
            )
        )?;
        writeln!(
            io.stdout,
            "{}",
            line(
                "mem",
                format!(
                    "M_opt {:.1} MB; M_ori {} MB",
                    measured.mem_mb, baseline.mem_mb
                ),
                &s.mem,
                WEIGHTS.mem
            )
        )?;
        writeln!(
            io.stdout,
            "{}",
            line(
                "prefill",
                format!(
                    "T_opt {:.2} tok/s; T_ori {} tok/s ({} profile)",
                    measured.prefill_tok_s, baseline.prefill_tok_s, measured.bench_profile
                ),
                &s.prefill,
                WEIGHTS.prefill
            )
        )?;
        writeln!(
            io.stdout,
            "{}",
            line(
                "decode",
                format!(
                    "T_opt {:.2} tok/s; T_ori {} tok/s",
                    measured.decode_tok_s, baseline.decode_tok_s
                ),
                &s.decode,
                WEIGHTS.decode
            )
        )?;
        writeln!(io.stdout, "total    {:.4}", s.total)?;
    }
    io.stdout.flush()?;
    Ok(())
}
