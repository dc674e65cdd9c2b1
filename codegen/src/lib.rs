//! qwenc host side: read a Qwen2 checkpoint (Hugging Face safetensors or GGUF), run the f32
//! reference forward, and (later stages) compress and generate the per-model kernels.

pub mod budget;
pub mod build_model;
pub mod calibrate;
pub mod checkpoint;
pub mod compress;
pub mod compressed;
pub mod config;
pub mod emit;
pub mod error;
pub mod gguf;
pub mod layout;
pub mod pack;
pub mod plan;
pub mod quant;
pub mod reference;
pub mod safetensors_dir;
pub mod safetensors_header;
pub mod synthetic;

pub use checkpoint::{Checkpoint, TensorMeta, TensorSource};
pub use config::QwenConfig;
pub use error::{LoadError, Result};
