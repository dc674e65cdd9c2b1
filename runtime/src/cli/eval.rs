//! `qwen eval`: lm-evaluation-harness 0-shot multiple choice (arc_challenge, hellaswag,
//! piqa) on the compiled model.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{parse_positive, CliError, Io};
use crate::eval::harness::{evaluate_task, results_json, summary_table};
use crate::eval::progress::Progress;
use crate::eval::tasks::{load_task, Selection, Task};
use crate::model::Model;

#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Tasks to run, comma-separated: arc_challenge, hellaswag, piqa.
    #[arg(
        long,
        value_name = "TASKS",
        value_delimiter = ',',
        default_value = "arc_challenge,hellaswag,piqa",
        value_parser = parse_task
    )]
    pub tasks: Vec<Task>,
    /// Directory of arc_challenge_test.jsonl, hellaswag_val.jsonl and piqa_val.jsonl.
    #[arg(long, value_name = "DIR", default_value = "../shared/data")]
    pub data_dir: PathBuf,
    /// Evaluate only the first N documents of each task, in file order (after
    /// --hellaswag-exact).
    #[arg(long, value_name = "N", value_parser = parse_positive, allow_negative_numbers = true)]
    pub limit: Option<usize>,
    /// HellaSwag: only the 1000 rows marked `exact_lmeval` (text identical to lm-eval's).
    #[arg(long)]
    pub hellaswag_exact: bool,
    /// Write the results JSON (lm-eval's shape, with per-document samples) to this file.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

fn parse_task(s: &str) -> Result<Task, String> {
    s.parse()
}

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Io(std::io::Error::other(e.to_string()))
}

pub(super) fn run(args: &EvalArgs, model: &dyn Model, io: &mut Io<'_>) -> Result<(), CliError> {
    let start = std::time::Instant::now();
    let mut tasks: Vec<Task> = Vec::new();
    for &t in &args.tasks {
        if !tasks.contains(&t) {
            tasks.push(t);
        }
    }
    let selection = Selection {
        hellaswag_exact: args.hellaswag_exact,
        limit: args.limit,
    };
    // Read every file first: a bad file fails before hours of scoring.
    let mut loaded = Vec::with_capacity(tasks.len());
    for &task in &tasks {
        loaded.push(load_task(task, &args.data_dir, selection).map_err(other)?);
    }
    let mut reports = Vec::with_capacity(loaded.len());
    for docs in &loaded {
        writeln!(
            io.stderr,
            "{}: {} of {} documents from {}",
            docs.task,
            docs.docs.len(),
            docs.in_file,
            docs.path.display()
        )?;
        let mut progress = Progress::new(docs.task.name(), "docs", docs.docs.len());
        let stderr = &mut *io.stderr;
        let report =
            evaluate_task(model, docs, &mut |done| progress.update(done, stderr)).map_err(other)?;
        reports.push(report);
    }

    io.stdout.write_all(summary_table(&reports).as_bytes())?;
    io.stdout.flush()?;

    if let Some(path) = &args.output {
        let config = json!({
            "model": model.info().name,
            "model_info": model.info(),
            "tasks": tasks.iter().map(|t| t.name()).collect::<Vec<_>>(),
            "num_fewshot": 0,
            "batch_size": 1,
            "limit": args.limit,
            "hellaswag_exact": args.hellaswag_exact,
            "data_dir": args.data_dir.display().to_string(),
            "threads": rayon::current_num_threads(),
        });
        let mut value = results_json(&reports, config);
        value["total_evaluation_time_seconds"] = json!(start.elapsed().as_secs_f64());
        let text = serde_json::to_string_pretty(&value).expect("the results serialize");
        std::fs::write(path, text + "\n")
            .map_err(|e| other(format!("cannot write {}: {e}", path.display())))?;
        writeln!(io.stderr, "results written to {}", path.display())?;
    }
    Ok(())
}
