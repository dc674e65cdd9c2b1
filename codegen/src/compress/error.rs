//! Everything `qwenc compress` (the [pipeline](super::pipeline)) can fail with.

use std::path::PathBuf;

use qwenc_runtime::tokenizer::TokenizerError;

use crate::compress::budget::BudgetError;
use crate::compress::calibrate::CalibrateError;
use crate::model_io::error::LoadError;
use crate::quant::Scheme;

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{}: output directory exists and is not empty (pass --force to overwrite it)", path.display())]
    OutputExists { path: PathBuf },
    #[error("{}: exists and is not a directory", path.display())]
    OutputNotDir { path: PathBuf },
    #[error("{}: the output directory is the source checkpoint; choose another one", path.display())]
    OutputIsSource { path: PathBuf },
    /// A scheme cannot store a tensor (group size not dividing the columns).
    #[error("{}: tensor `{tensor}`: scheme {scheme}: {problem}", source_path.display())]
    Scheme {
        source_path: PathBuf,
        tensor: String,
        scheme: Scheme,
        problem: String,
    },
    /// `--budget-mb` is not a positive number.
    #[error("--budget-mb {0}: expected a positive number of MB")]
    BudgetMb(f64),
    /// `--budget-mb`: the budget cannot be met (or a group has no usable scheme).
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// The calibration text cannot be read.
    #[error("--calib-file {}: {source}", path.display())]
    CalibrationText {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint's tokenizer (which tokenizes the calibration text) is unusable.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Capturing the calibration activations failed (too few tokens, forward error).
    #[error(transparent)]
    Calibrate(#[from] CalibrateError),
    #[error("tensor `{tensor}`: quantizer `{quantizer}` returned {problem}")]
    Quantizer {
        tensor: String,
        quantizer: String,
        problem: String,
    },
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
