//! `qwen kl FILE`: KL divergence, top-1 agreement and perplexity against reference logits
//! written by `qwenc reference-logits` (see [`crate::eval::kl`]).

use std::path::PathBuf;

use clap::Args;

use super::{CliError, Io};
use crate::eval::kl::run_kl;
use crate::eval::progress::Progress;
use crate::model::Model;
use crate::reference_logits::read_reference;

#[derive(Debug, Clone, Args)]
pub struct KlArgs {
    /// The reference-logits file (`qwenc reference-logits MODEL -o FILE`).
    pub file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Io(std::io::Error::other(e.to_string()))
}

pub(super) fn run(args: &KlArgs, model: &dyn Model, io: &mut Io<'_>) -> Result<(), CliError> {
    let reference = read_reference(&args.file).map_err(other)?;
    let h = &reference.header;
    let plan = reference.plan;
    writeln!(
        io.stderr,
        "kl: {} positions in {} chunks of {} tokens of {} (reference {}, top-{})",
        plan.positions(),
        plan.chunks,
        plan.context,
        h.text,
        h.model,
        h.top_k
    )?;
    let mut progress = Progress::new("kl", "chunks", plan.chunks);
    let report = {
        let stderr = &mut *io.stderr;
        run_kl(model, &reference, &mut |done, _| {
            progress.update(done, stderr)
        })
        .map_err(other)?
    };
    if args.json {
        let mut value = serde_json::to_value(&report).expect("the report serializes");
        value["file"] = args.file.display().to_string().into();
        value["reference_model"] = h.model.clone().into();
        value["model"] = model.info().name.clone().into();
        value["scheme"] = model.info().scheme.clone().into();
        writeln!(io.stdout, "{value}")?;
    } else {
        writeln!(
            io.stdout,
            "mean KL:        {:.6} ± {:.6} nats\nmedian KL:      {:.6}\n99th pct KL:    {:.6}\nmax KL:         {:.6}\ntop-1 agreement: {:.2}% ({} positions)\nperplexity:     model {:.4}, reference {:.4}\nreference mass outside top-{}: {:.4} (mean; kept as one bucket)\ntime:           {:.1} s",
            report.mean_kl,
            report.mean_kl_stderr,
            report.median_kl,
            report.p99_kl,
            report.max_kl,
            report.top1_agreement * 100.0,
            report.positions,
            report.ppl_model,
            report.ppl_reference,
            report.top_k,
            report.mean_ref_tail,
            report.seconds
        )?;
    }
    io.stdout.flush()?;
    Ok(())
}
