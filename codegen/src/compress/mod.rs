//! Compression: a checkpoint in, a [compressed model directory](mod@format) out (what the compiler
//! reads). [`pipeline::run`] is all of `qwenc compress`, in order:
//!
//! 1. plan ([`CompressPlan`]): open the checkpoint, check the output directory, every tensor's
//!    presence and shape, and resolve a scheme per matrix ([`SchemeArgs`]);
//! 2. calibrate ([`calibrate`]), for AWQ, GPTQ or a budget: the inputs of every linear layer
//!    from the f32 reference over a calibration text;
//! 3. under a budget ([`budget`]): measure each matrix's loss in each candidate scheme, select
//!    one scheme per matrix ([`CompressPlan::choose_budget`]);
//! 4. search the AWQ scales ([`calibrate::search_awq_per_layer`]);
//! 5. write ([`CompressPlan::write`]): stream tensor by tensor (load f32 → hash → transform →
//!    quantize with a [`Quantizer`](crate::quant::Quantizer) → write).
//!
//! The numerics live in [`crate::quant`].
//!
//! ```no_run
//! # use qwenc_codegen::compress::{pipeline, CompressError};
//! # use std::path::Path;
//! let report = pipeline::run(
//!     Path::new("model.gguf"),
//!     Path::new("out"),
//!     &pipeline::Options::default(),
//!     &mut |_event| {},
//! )?;
//! # Ok::<(), CompressError>(())
//! ```

pub mod budget;
pub mod calibrate;
mod error;
pub mod format;
pub mod pipeline;
mod plan;
mod write;

pub use error::CompressError;
pub use plan::{
    BudgetChoice, CompressOptions, CompressPlan, PlannedTensor, SchemeArgs, DEFAULT_SCHEME,
};
pub use write::{sha256_f32, CompressReport};
