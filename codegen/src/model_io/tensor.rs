//! What every loader provides: named tensors in Hugging Face names and shapes, read lazily.
//! The loaders ([`safetensors_dir`](super::safetensors_dir), [`gguf`](super::gguf)) implement
//! [`TensorSource`]; the [`Checkpoint`](super::checkpoint::Checkpoint) dispatcher holds one.

use std::path::Path;

use crate::model_io::error::Result;

/// What a loader knows about one tensor without reading its data.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMeta {
    /// Hugging Face name.
    pub name: String,
    /// Hugging Face shape (row-major, last dimension contiguous).
    pub shape: Vec<usize>,
    /// Storage type in the file: `F32`, `BF16`, `F16`, `Q4_K`, ...
    pub dtype: String,
    /// Bytes the tensor occupies in the file.
    pub n_bytes: u64,
}

impl TensorMeta {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A source of named tensors, read lazily (files are memory-mapped).
pub trait TensorSource: Send + Sync {
    /// The file (or directory) tensors come from, for messages.
    fn path(&self) -> &Path;
    /// Every tensor in file order, with Hugging Face names.
    fn tensors(&self) -> Vec<TensorMeta>;
    /// The tensor converted (dequantized) to f32, row-major in the Hugging Face shape.
    fn load_f32(&self, name: &str) -> Result<Vec<f32>>;
}
