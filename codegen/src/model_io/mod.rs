//! Model I/O: read a Qwen2 checkpoint, whatever its format, as one model (Hugging Face names
//! and shapes), and write the tiny synthetic one that tests and the default build use.
//!
//! - [`config`]: [`QwenConfig`](config::QwenConfig), from `config.json` or GGUF metadata;
//! - [`tensor`]: [`TensorMeta`](tensor::TensorMeta) and [`TensorSource`](tensor::TensorSource),
//!   what every loader provides;
//! - the loaders: [`safetensors_dir`] (Hugging Face directories, headers checked by
//!   [`safetensors_header`]) and [`gguf`];
//! - [`checkpoint`]: [`Checkpoint`](checkpoint::Checkpoint), which opens either and holds
//!   config, tokenizer and tensors;
//! - [`error`]: [`LoadError`](error::LoadError), which names the file and the tensor;
//! - [`synthetic`]: the tiny random checkpoint.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod gguf;
pub mod safetensors_dir;
pub mod safetensors_header;
pub mod synthetic;
pub mod tensor;
