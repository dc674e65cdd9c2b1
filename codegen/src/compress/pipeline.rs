//! All of `qwenc compress` as one call, [`run`]: plan → (calibrate → measure and select under
//! a budget → search AWQ scales) → write. Every step returns what the next one needs; the
//! caller sees the steps through [`Event`]s (progress, and what is worth printing).
//!
//! The `qwenc` binary, the root `build.rs` (the tiny model's mixed build, with
//! [`budget_between`]) and the tests all compress through here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qwenc_runtime::tokenizer::Tokenizer;

use crate::compress::budget::{self, BudgetError};
use crate::compress::calibrate::{
    self, capture, search_awq_per_layer, CalibratedQuantizer, Calibration, LayerScales, Method,
    Methods,
};
use crate::compress::error::CompressError;
use crate::compress::plan::{BudgetChoice, CompressOptions, CompressPlan, SchemeArgs};
use crate::compress::write::CompressReport;
use crate::model_io::checkpoint::{relative_distance, Checkpoint};
use crate::quant::awq::AwqOptions;
use crate::quant::gptq::GptqOptions;
use crate::quant::Scheme;
use crate::reference::{ReferenceWeights, Tap};

/// Above this relative distance the embedding and the lm_head are not two roundings of one
/// matrix (the dev GGUF's Q5_0 and Q8_0 copies are 4.4% apart; unrelated matrices about 141%).
pub const TIE_DISTANCE_WARNING: f64 = 0.15;

/// The most `model.safetensors` may weigh (`--budget-mb`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    Bytes(u64),
    /// MB (10^6 bytes) as given on the command line: must be positive; rounded down to bytes.
    Megabytes(f64),
}

impl Budget {
    pub fn bytes(self) -> Result<u64, CompressError> {
        match self {
            Budget::Bytes(b) => Ok(b),
            Budget::Megabytes(mb) if !(mb > 0.0 && mb.is_finite()) => {
                Err(CompressError::BudgetMb(mb))
            }
            Budget::Megabytes(mb) => Ok((mb * 1e6).floor() as u64),
        }
    }
}

/// Where the calibration tokens come from.
#[derive(Clone, Debug, PartialEq)]
pub enum CalibrationText {
    /// A text file (`--calib-file`), tokenized whole with the checkpoint's tokenizer.
    File(PathBuf),
    /// Token ids.
    Ids(Vec<u32>),
}

impl Default for CalibrationText {
    fn default() -> Self {
        CalibrationText::Ids(Vec::new())
    }
}

/// The calibration of AWQ, GPTQ and the budget's measurements (unused otherwise).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CalibrationInput {
    pub text: CalibrationText,
    /// Tokens used, from the start of the text (`--calib-tokens`).
    pub tokens: usize,
    /// Tokens per sequence, each from an empty cache (`--calib-seq-len`).
    pub seq_len: usize,
}

impl CalibrationInput {
    /// All of `ids`, in sequences of `seq_len`.
    pub fn ids(ids: Vec<u32>, seq_len: usize) -> Self {
        CalibrationInput {
            tokens: ids.len(),
            text: CalibrationText::Ids(ids),
            seq_len,
        }
    }
}

/// What `qwenc compress` was asked for. The default: the default schemes, round to nearest,
/// no budget (so no calibration).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Schemes, `--force`, `--tie-embeddings`.
    pub plan: CompressOptions,
    /// `--budget-mb`: choose each matrix's scheme (incompatible with explicit schemes).
    pub budget: Option<Budget>,
    /// `--method` per class.
    pub methods: Methods,
    pub awq: AwqOptions,
    pub gptq: GptqOptions,
    pub calibration: CalibrationInput,
}

/// A step of [`run`] that reports progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Loading the f32 weights for calibration (items: tensors).
    Load,
    /// Capturing activations (items: sequences).
    Calibrate,
    /// Measuring every matrix in every candidate scheme (items: groups of matrices).
    Measure,
    /// Searching the AWQ scales (items: layers).
    AwqSearch,
    /// Writing the directory (items: tensors; a last call with `done == total`).
    Write,
}

/// What [`run`] reports, in this order (the steps that do not run report nothing).
pub enum Event<'a> {
    /// The plan is made: its warnings and [`CompressPlan::embedding_from_lm_head`] are worth
    /// showing.
    Planned(&'a CompressPlan),
    /// `done` of `total` items of `step` (`done == 0` first); `item` names the tensor of
    /// [`Step::Load`] and [`Step::Write`], and is empty otherwise.
    Progress {
        step: Step,
        done: usize,
        total: usize,
        item: &'a str,
    },
    /// Under a budget, the untied embedding and lm_head are two roundings of one matrix
    /// (`distance` ≤ [`TIE_DISTANCE_WARNING`]): `--tie-embeddings` would free `lm_head_weights`.
    SeparateCopies {
        distance: f64,
        lm_head_weights: usize,
    },
    /// The activations are captured; `elapsed` since the calibration began (text read,
    /// weights loaded).
    Calibrated {
        calibration: &'a Calibration,
        elapsed: Duration,
    },
    /// The budget's choice, measured and selected in `elapsed`.
    Budgeted {
        choice: &'a BudgetChoice,
        elapsed: Duration,
    },
    /// The AWQ scales of every layer.
    AwqSearched {
        scales: &'a [LayerScales],
        elapsed: Duration,
    },
}

/// Compress `source` (a Hugging Face directory or a GGUF file) into `out_dir`.
pub fn run(
    source: &Path,
    out_dir: &Path,
    options: &Options,
    progress: &mut dyn FnMut(Event<'_>),
) -> Result<CompressReport, CompressError> {
    let plan = CompressPlan::new(source, out_dir, &options.plan)?;
    progress(Event::Planned(&plan));
    let budget_bytes = options.budget.map(Budget::bytes).transpose()?;
    if let Some(b) = budget_bytes {
        // From the shapes alone, before the minutes of calibration.
        plan.check_budget(b, &budget::CANDIDATES)?;
    }
    let (plan, quantizer) = prepare(plan, options, budget_bytes, progress)?;
    plan.write(&quantizer, &mut |done, total, item| {
        progress(Event::Progress {
            step: Step::Write,
            done,
            total,
            item,
        })
    })
}

/// The budget a `fraction` of the way from the smallest assignment's file size to the file
/// size when every matrix takes its least-cost option (both as
/// [`CompressPlan::choose_budget`] counts them), for `source` calibrated on `calibration`.
/// Writes nothing. The tiny model's mixed build and its tests use it.
pub fn budget_between(
    source: &Path,
    calibration: &CalibrationInput,
    fraction: f64,
) -> Result<u64, CompressError> {
    let checkpoint = Checkpoint::open(source)?;
    let (weights, calib) = calibrate(&checkpoint, calibration, false, &mut |_| {})?;
    let groups = budget::measure(&weights, &calib, &budget::CANDIDATES, &mut |_, _| {});
    drop(weights);
    let plan = CompressPlan::for_checkpoint(checkpoint, source, source, &SchemeArgs::default())?;
    let min = match plan.choose_budget(&groups, 1, calib.tokens) {
        Err(CompressError::Budget(BudgetError::TooSmall { minimum, .. })) => minimum,
        Err(e) => return Err(e),
        Ok(_) => unreachable!("the vectors and the header alone exceed a 1-byte budget"),
    };
    let max = plan
        .choose_budget(&groups, u64::MAX / 2, calib.tokens)?
        .file_len;
    Ok(min + ((max.saturating_sub(min)) as f64 * fraction) as u64)
}

/// Calibrate, choose the budget's schemes and search the AWQ scales, as `options` ask: the
/// plan to write and its quantizer. The f32 weights (and the activations unless GPTQ needs
/// them) are dropped before the directory is written.
fn prepare(
    plan: CompressPlan,
    options: &Options,
    budget_bytes: Option<u64>,
    progress: &mut dyn FnMut(Event<'_>),
) -> Result<(CompressPlan, CalibratedQuantizer), CompressError> {
    let methods = options.methods;
    let round_to_nearest = || CalibratedQuantizer::new(methods, Vec::new(), None, 0, options.gptq);
    if !methods.needs_calibration() && budget_bytes.is_none() {
        return Ok((plan, round_to_nearest()));
    }
    let (weights, calibration) = calibrate(
        &plan.checkpoint,
        &options.calibration,
        budget_bytes.is_some(),
        progress,
    )?;
    let plan = match budget_bytes {
        Some(budget_bytes) => {
            let started = Instant::now();
            progress(Event::Progress {
                step: Step::Measure,
                done: 0,
                total: 0,
                item: "",
            });
            let groups = budget::measure(
                &weights,
                &calibration,
                &budget::CANDIDATES,
                &mut |done, total| {
                    progress(Event::Progress {
                        step: Step::Measure,
                        done,
                        total,
                        item: "",
                    })
                },
            );
            let choice = plan.choose_budget(&groups, budget_bytes, calibration.tokens)?;
            progress(Event::Budgeted {
                choice: &choice,
                elapsed: started.elapsed(),
            });
            plan.with_budget(choice)
        }
        None => plan,
    };
    if !methods.needs_calibration() {
        return Ok((plan, round_to_nearest()));
    }
    let scales = if methods.attn == Method::Awq || methods.mlp == Method::Awq {
        let started = Instant::now();
        let scales = search_awq(&plan, &weights, &calibration, options, progress);
        progress(Event::AwqSearched {
            scales: &scales,
            elapsed: started.elapsed(),
        });
        scales
    } else {
        Vec::new()
    };
    drop(weights);
    let tokens = calibration.tokens;
    let quantizer = CalibratedQuantizer::new(
        methods,
        scales,
        methods.uses_gptq().then_some(calibration),
        tokens,
        options.gptq,
    );
    Ok((plan, quantizer))
}

/// Load the f32 weights and capture the activations over the calibration tokens. With
/// `hint_copies`, report an untied embedding and lm_head that are copies of one matrix.
fn calibrate(
    checkpoint: &Checkpoint,
    input: &CalibrationInput,
    hint_copies: bool,
    progress: &mut dyn FnMut(Event<'_>),
) -> Result<(ReferenceWeights, Calibration), CompressError> {
    let started = Instant::now();
    let tokens = calibration_ids(checkpoint, &input.text)?;
    let weights = ReferenceWeights::load(checkpoint, &mut |done, total, item| {
        progress(Event::Progress {
            step: Step::Load,
            done,
            total,
            item,
        })
    })?;
    if let (true, Some(head)) = (hint_copies, &weights.lm_head) {
        // Under a budget, a second copy of one matrix is the costliest thing to keep.
        let distance = relative_distance(&weights.embed, head);
        if distance <= TIE_DISTANCE_WARNING {
            progress(Event::SeparateCopies {
                distance,
                lm_head_weights: head.len(),
            });
        }
    }
    progress(Event::Progress {
        step: Step::Calibrate,
        done: 0,
        total: input.tokens.div_ceil(input.seq_len.max(1)),
        item: "",
    });
    let calibration = capture(
        &weights,
        &tokens,
        input.tokens,
        input.seq_len,
        &mut |done, total| {
            progress(Event::Progress {
                step: Step::Calibrate,
                done,
                total,
                item: "",
            })
        },
    )?;
    progress(Event::Calibrated {
        calibration: &calibration,
        elapsed: started.elapsed(),
    });
    Ok((weights, calibration))
}

/// The calibration token ids: a file is tokenized whole with the checkpoint's tokenizer.
fn calibration_ids(
    checkpoint: &Checkpoint,
    text: &CalibrationText,
) -> Result<Vec<u32>, CompressError> {
    match text {
        CalibrationText::File(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| CompressError::CalibrationText {
                    path: path.clone(),
                    source,
                })?;
            let tokenizer = Tokenizer::from_spec(&checkpoint.tokenizer)?;
            Ok(tokenizer.encode(&text))
        }
        CalibrationText::Ids(ids) => Ok(ids.clone()),
    }
}

/// The AWQ scales of every layer, each matrix searched in the scheme the plan gives it.
fn search_awq(
    plan: &CompressPlan,
    weights: &ReferenceWeights,
    calibration: &Calibration,
    options: &Options,
    progress: &mut dyn FnMut(Event<'_>),
) -> Vec<LayerScales> {
    // Per layer, the schemes the plan chose (one per class without a budget).
    let schemes: BTreeMap<&str, Scheme> = plan
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.scheme))
        .collect();
    let scheme_of = |l: usize, tap: Tap| {
        let first = calibrate::first_fed_by(tap).expect("AWQ searches the layers only");
        schemes[first.name(l).as_str()]
    };
    progress(Event::Progress {
        step: Step::AwqSearch,
        done: 0,
        total: weights.layers.len(),
        item: "",
    });
    search_awq_per_layer(
        weights,
        calibration,
        &options.methods,
        &scheme_of,
        &options.awq,
        &mut |done, total| {
            progress(Event::Progress {
                step: Step::AwqSearch,
                done,
                total,
                item: "",
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_megabytes_must_be_positive() {
        assert_eq!(Budget::Megabytes(1.5).bytes().unwrap(), 1_500_000);
        assert_eq!(Budget::Bytes(7).bytes().unwrap(), 7);
        for mb in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = Budget::Megabytes(mb).bytes().unwrap_err();
            assert!(
                err.to_string()
                    .ends_with(": expected a positive number of MB"),
                "{err}"
            );
        }
    }
}
