//! One error type for everything that reads a checkpoint: every variant names the file,
//! and where it applies the tensor, so a user can tell what is wrong and where.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file's own structure is broken (bad magic, truncated header, bad JSON, ...).
    #[error("{}: {problem}", path.display())]
    Format { path: PathBuf, problem: String },
    /// One tensor is broken or unusable (offset out of range, unknown dtype, wrong shape, ...).
    #[error("{}: tensor `{tensor}`: {problem}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        problem: String,
    },
    /// The model configuration is missing a field, inconsistent, or not a Qwen2 model.
    #[error("{}: config: {problem}", path.display())]
    Config { path: PathBuf, problem: String },
}

impl LoadError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        LoadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub fn format(path: &Path, problem: impl Into<String>) -> Self {
        LoadError::Format {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
    pub fn tensor(path: &Path, tensor: &str, problem: impl Into<String>) -> Self {
        LoadError::Tensor {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            problem: problem.into(),
        }
    }
    pub fn config(path: &Path, problem: impl Into<String>) -> Self {
        LoadError::Config {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

pub type Result<T, E = LoadError> = std::result::Result<T, E>;
