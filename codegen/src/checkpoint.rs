//! A checkpoint is a config, a tokenizer and a set of named tensors, whatever the file format.
//! Tensor names and shapes are always the Hugging Face ones (`model.layers.0.self_attn.q_proj.weight`,
//! shape `[out, in]`, row-major), so that everything downstream sees one model.

use std::path::Path;

use crate::error::Result;

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
