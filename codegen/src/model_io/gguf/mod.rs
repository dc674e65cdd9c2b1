//! GGUF reader (versions 2 and 3, as written by llama.cpp): metadata, tensor directory,
//! dequantization to f32, and the Qwen2 view of the file (Hugging Face tensor names and shapes,
//! [`QwenConfig`], [`TokenizerSpec`]).
//!
//! - [`reader`]: the binary layout, parsed with every read and count checked;
//! - [`types`]: metadata values and ggml tensor types;
//! - [`dequant`]: ggml's block formats decoded to f32;
//! - [`names`]: GGUF tensor names to Hugging Face names;
//! - `config` / `tokenizer`: the model configuration and tokenizer rebuilt from metadata.

mod config;
pub mod dequant;
pub mod names;
pub mod reader;
mod tokenizer;
pub mod types;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use qwenc_runtime::tokenizer::TokenizerSpec;

use crate::model_io::config::QwenConfig;
use crate::model_io::error::{LoadError, Result};
use crate::model_io::tensor::{TensorMeta, TensorSource};

pub use reader::GgufTensorInfo;
pub use types::{GgmlType, GgufValue};

enum Backing {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// An open GGUF file: its header parsed and checked, its data memory-mapped.
pub struct GgufFile {
    path: PathBuf,
    backing: Backing,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    /// Hugging Face name -> index in `tensors`.
    by_hf_name: HashMap<String, usize>,
    alignment: u64,
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_start", &self.data_start)
            .finish()
    }
}

impl GgufFile {
    /// Open and memory-map `path`, and check its header and tensor directory.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
        let len = file.metadata().map_err(|e| LoadError::io(path, e))?.len();
        let backing = if len == 0 {
            // Mapping an empty file fails on some platforms; the parser reports it as too short.
            Backing::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and every access is bounds-checked against its
            // length. If another process truncates or rewrites the file while it is mapped,
            // reads may fault or see changed bytes; like every mmap-based model loader, we
            // accept that (model files are not modified in place).
            Backing::Mmap(unsafe { Mmap::map(&file) }.map_err(|e| LoadError::io(path, e))?)
        };
        Self::from_backing(path, backing)
    }

    /// Parse a GGUF file held in memory; `path` only names it in messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<GgufFile> {
        Self::from_backing(path, Backing::Owned(bytes))
    }

    fn from_backing(path: &Path, backing: Backing) -> Result<GgufFile> {
        let header = reader::parse(path, backing.bytes())?;
        let by_hf_name = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.hf_name.clone(), i))
            .collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            backing,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            by_hf_name,
            alignment: header.alignment,
            data_start: header.data_start,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// Every tensor in file order: GGUF names, ggml dimension order, type, offset.
    pub fn tensor_infos(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The tensor with this GGUF name.
    pub fn tensor_info(&self, gguf_name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == gguf_name)
    }

    /// The tensor with this Hugging Face name.
    pub fn tensor_info_hf(&self, hf_name: &str) -> Option<&GgufTensorInfo> {
        self.by_hf_name.get(hf_name).map(|&i| &self.tensors[i])
    }

    /// `general.alignment` (32 when absent).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the tensor data section.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The raw bytes of a tensor (checked to lie inside the file when it was opened).
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let start = self.data_start.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.n_bytes));
        match (start, end) {
            (Some(s), Some(e)) => self
                .backing
                .bytes()
                .get(s as usize..e as usize)
                .ok_or_else(|| LoadError::tensor(&self.path, &info.name, "data out of range")),
            _ => Err(LoadError::tensor(
                &self.path,
                &info.name,
                "data out of range",
            )),
        }
    }

    /// Dequantize a tensor to f32, row-major in the Hugging Face shape (which is the ggml data
    /// order: ggml's `dims[0]` is the contiguous one).
    pub fn dequantize(&self, info: &GgufTensorInfo) -> Result<Vec<f32>> {
        let terr = |p: String| LoadError::tensor(&self.path, &info.hf_name, p);
        if !info.ggml_type.can_dequantize() {
            return Err(terr(format!(
                "GGUF tensor `{}` has type {} (id {}), which qwenc cannot dequantize \
                 (supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K)",
                info.name,
                info.ggml_type.name(),
                info.ggml_type.id()
            )));
        }
        let n = usize::try_from(info.n_elements)
            .map_err(|_| terr(format!("{} elements do not fit in memory", info.n_elements)))?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let src = self.tensor_bytes(info)?;
        let mut out = vec![0f32; n];
        dequant::dequantize(info.ggml_type, src, &mut out, info.dims[0] as usize)
            .map_err(|p| terr(format!("GGUF tensor `{}`: {p}", info.name)))?;
        Ok(out)
    }

    /// The model configuration rebuilt from `qwen2.*` and `tokenizer.ggml.*` metadata, validated.
    pub fn config(&self) -> Result<QwenConfig> {
        config::build(self)
    }

    /// The byte-level BPE tokenizer described by `tokenizer.ggml.*` metadata.
    pub fn tokenizer_spec(&self) -> Result<TokenizerSpec> {
        tokenizer::build(self)
    }
}

impl TensorSource for GgufFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn tensors(&self) -> Vec<TensorMeta> {
        self.tensors
            .iter()
            .map(|t| TensorMeta {
                name: t.hf_name.clone(),
                shape: t.hf_shape(),
                dtype: t.ggml_type.name().to_string(),
                n_bytes: t.n_bytes,
            })
            .collect()
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor_info_hf(name).ok_or_else(|| {
            LoadError::tensor(&self.path, name, "no such tensor in the GGUF file")
        })?;
        self.dequantize(info)
    }
}
