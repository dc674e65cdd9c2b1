//! The compiler: one model (a compressed directory, or a checkpoint quantized on the fly) and
//! a backend in, Rust source and a packed weights file out.
//!
//! - [`plan`]: the model as fused operations with constant shapes and typed matrices;
//! - [`layout`]: the tiled layout of packed integer matrices and its packer;
//! - [`pack`]: where every part goes in the weights file, and the packing;
//! - [`emit`]: the code generator, one kernel family per backend and scheme;
//! - [`build_model`]: what `build.rs` and `qwenc build` run.

pub mod build_model;
pub mod emit;
pub mod layout;
pub mod pack;
pub mod plan;
