//! Hugging Face checkpoint directories: `config.json`, `tokenizer.json` and one or more
//! `*.safetensors` files (sharded through `model.safetensors.index.json`), memory-mapped.
//!
//! The safetensors header is validated by `safetensors_header` rather than by the
//! `safetensors` crate so that every problem names the file and the tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value;

use crate::model_io::safetensors_header;

use crate::model_io::error::{LoadError, Result};
use crate::model_io::tensor::{TensorMeta, TensorSource};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    fn parse(name: &str) -> Option<Dtype> {
        match name {
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            _ => None,
        }
    }
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }
}

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the mapped file.
    start: usize,
    end: usize,
}

/// All safetensors files of one checkpoint directory, mapped and indexed by tensor name.
pub struct SafetensorsDir {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name → entry; BTreeMap so that listings are deterministic.
    entries: BTreeMap<String, Entry>,
}

impl SafetensorsDir {
    /// Map every safetensors file of `dir`: the shards named by `model.safetensors.index.json`
    /// if present, else every `*.safetensors` file in name order.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            shard_files(&index)?
                .into_iter()
                .map(|f| dir.join(f))
                .collect()
        } else {
            let mut found = Vec::new();
            let listing = std::fs::read_dir(dir).map_err(|e| LoadError::io(dir, e))?;
            for entry in listing {
                let path = entry.map_err(|e| LoadError::io(dir, e))?.path();
                if path.extension().is_some_and(|e| e == "safetensors") {
                    found.push(path);
                }
            }
            found.sort();
            found
        };
        if files.is_empty() {
            return Err(LoadError::format(
                dir,
                "no *.safetensors files in the directory",
            ));
        }
        let mut this = SafetensorsDir {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            entries: BTreeMap::new(),
        };
        for path in files {
            let file = File::open(&path).map_err(|e| LoadError::io(&path, e))?;
            // SAFETY: the map is read-only; a checkpoint modified while we run is the user's problem
            // and can only give wrong numbers, which every later check would catch, not UB in safe code
            // that bounds-checks every slice.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| LoadError::io(&path, e))?;
            let parsed = parse_header(&path, &map)?;
            let file_index = this.files.len();
            for (name, mut entry) in parsed {
                entry.file = file_index;
                if this.entries.contains_key(&name) {
                    return Err(LoadError::tensor(
                        &path,
                        &name,
                        "appears in more than one shard",
                    ));
                }
                this.entries.insert(name, entry);
            }
            this.files.push((path, map));
        }
        Ok(this)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

impl TensorSource for SafetensorsDir {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn tensors(&self) -> Vec<TensorMeta> {
        self.entries
            .iter()
            .map(|(name, e)| TensorMeta {
                name: name.clone(),
                shape: e.shape.clone(),
                dtype: e.dtype.name().to_string(),
                n_bytes: (e.end - e.start) as u64,
            })
            .collect()
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        let entry = self.entries.get(name).ok_or_else(|| {
            LoadError::tensor(&self.dir, name, "no such tensor in the checkpoint")
        })?;
        let bytes = &self.files[entry.file].1[entry.start..entry.end];
        Ok(match entry.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        })
    }
}

/// The distinct shard file names of a `model.safetensors.index.json`, in first-use order.
fn shard_files(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| LoadError::io(index, e))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| LoadError::format(index, format!("invalid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| LoadError::format(index, "missing object `weight_map`"))?;
    let mut files: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| LoadError::tensor(index, tensor, "shard name is not a string"))?;
        if file.contains('/') || file.contains("..") {
            return Err(LoadError::tensor(
                index,
                tensor,
                format!("shard `{file}` is not a plain file name"),
            ));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    files.sort();
    Ok(files)
}

/// The checked header of one file, as entries with absolute ranges.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Entry)>> {
    let parse = |name: &str| Dtype::parse(name).map(|d| (d, d.size()));
    let (entries, _) =
        safetensors_header::parse_header(path, bytes, parse, "qwenc reads F32, F16 and BF16")?;
    Ok(entries
        .into_iter()
        .map(|e| {
            (
                e.name,
                Entry {
                    file: 0,
                    dtype: e.dtype,
                    shape: e.shape,
                    start: e.start,
                    end: e.end,
                },
            )
        })
        .collect())
}
