//! qwenc runtime: what every per-model executable links besides its generated kernels.
//!
//! The core, always built, is what generated code and the `qwenc` tool use: the [`model`]
//! trait and KV cache, [`weights`], [`kernel_support`], [`amx`], [`threads`],
//! [`narrow_codes`], the [`tokenizer`] and the [`reference_logits`] files. The `app` feature
//! (on by default) adds the executable around a model: generation (with speculative
//! decoding), sampling, chat, scoring, evaluation, benchmarks, the CLI and the
//! OpenAI-compatible server (tokio, axum, clap).
//! The compiler's build script uses the core alone.

pub mod amx;
pub mod kernel_support;
pub mod model;
pub mod narrow_codes;
pub mod reference_logits;
pub mod threads;
pub mod tokenizer;
pub mod weights;

#[cfg(feature = "app")]
pub mod bench;
#[cfg(feature = "app")]
pub mod chat;
#[cfg(feature = "app")]
pub mod cli;
#[cfg(feature = "app")]
pub mod eval;
#[cfg(feature = "app")]
pub mod generate;
#[cfg(feature = "app")]
pub mod penalties;
#[cfg(feature = "app")]
pub mod sampler;
#[cfg(feature = "app")]
pub mod score;
#[cfg(feature = "app")]
pub mod serve;
#[cfg(feature = "app")]
pub mod speculate;
#[cfg(feature = "app")]
pub mod structured;
#[cfg(feature = "app")]
pub mod testing;

/// Re-exported so generated code needs no dependency of its own.
pub use rayon;
