//! qwenc host side: the compiler's pipeline, one folder per stage, in order:
//!
//! 1. [`model_io`]: read a Qwen2 checkpoint (Hugging Face safetensors or GGUF) as one model
//!    ([`Checkpoint`]: config, tokenizer, tensors in Hugging Face names), and write the tiny
//!    synthetic one;
//! 2. [`reference`](mod@reference): the f32 reference forward, the oracle of every later stage;
//! 3. [`quant`]: the quantization schemes and their exact numbers (round to nearest, AWQ,
//!    GPTQ) and the per-tensor [`Quantizer`](quant::Quantizer);
//! 4. [`compress`]: `qwenc compress` ([`compress::pipeline::run`]): calibrate, choose schemes
//!    (under a budget), quantize, and write the compressed model directory
//!    ([`compress::format`]), the compiler's input;
//! 5. [`compile`]: plan the kernels, lay out and pack the weights, generate the code, all
//!    driven by [`compile::build_model`] from `build.rs`.

pub mod compile;
pub mod compress;
pub mod model_io;
pub mod quant;
pub mod reference;

pub use model_io::checkpoint::Checkpoint;
pub use model_io::config::QwenConfig;
pub use model_io::error::{LoadError, Result};
pub use model_io::tensor::{TensorMeta, TensorSource};
