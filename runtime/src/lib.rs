//! qwenc runtime: what every per-model executable links besides its generated kernels.

pub mod amx;
pub mod bench;
pub mod chat;
pub mod cli;
pub mod eval;
pub mod generate;
pub mod kernel_support;
pub mod model;
pub mod narrow_codes;
pub mod reference_logits;
pub mod sampler;
pub mod score;
pub mod serve;
pub mod testing;
pub mod threads;
pub mod tokenizer;
pub mod weights;

/// Re-exported so generated code needs no dependency of its own.
pub use rayon;
