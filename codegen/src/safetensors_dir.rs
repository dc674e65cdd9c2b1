//! Hugging Face checkpoint directories: `config.json`, `tokenizer.json` and one or more
//! `*.safetensors` files (sharded through `model.safetensors.index.json`), memory-mapped.
//!
//! The safetensors header is validated here rather than by the `safetensors` crate so that
//! every problem names the file and the tensor (the crate's errors often name neither).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value;

use crate::checkpoint::{TensorMeta, TensorSource};
use crate::error::{LoadError, Result};

/// Headers larger than this are refused (the format's own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

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
            shard_files(&index)?.into_iter().map(|f| dir.join(f)).collect()
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
            return Err(LoadError::format(dir, "no *.safetensors files in the directory"));
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
                    return Err(LoadError::tensor(&path, &name, "appears in more than one shard"));
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
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| LoadError::tensor(&self.dir, name, "no such tensor in the checkpoint"))?;
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
            return Err(LoadError::tensor(index, tensor, format!("shard `{file}` is not a plain file name")));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    files.sort();
    Ok(files)
}

/// Validate a safetensors header against the file's size; returns entries with absolute ranges.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Entry)>> {
    if bytes.len() < 8 {
        return Err(LoadError::format(
            path,
            format!("file is {} bytes, too short for a safetensors header", bytes.len()),
        ));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    if header_len > MAX_HEADER_BYTES {
        return Err(LoadError::format(path, format!("header length {header_len} exceeds the 100 MB limit")));
    }
    let data_start = 8 + header_len as usize;
    if data_start > bytes.len() {
        return Err(LoadError::format(
            path,
            format!("header length {header_len} runs past the end of the {}-byte file (truncated?)", bytes.len()),
        ));
    }
    let header = std::str::from_utf8(&bytes[8..data_start])
        .map_err(|_| LoadError::format(path, "header is not UTF-8"))?;
    let json: Value = serde_json::from_str(header.trim_end_matches(' '))
        .map_err(|e| LoadError::format(path, format!("header is not valid JSON: {e}")))?;
    let object = json
        .as_object()
        .ok_or_else(|| LoadError::format(path, "header is not a JSON object"))?;
    let data_len = bytes.len() - data_start;

    let mut entries = Vec::new();
    for (name, info) in object {
        if name == "__metadata__" {
            continue;
        }
        let bad = |problem: String| LoadError::tensor(path, name, problem);
        let dtype_name = info
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing `dtype`".into()))?;
        let dtype = Dtype::parse(dtype_name).ok_or_else(|| {
            bad(format!("unsupported dtype `{dtype_name}` (qwenc reads F32, F16 and BF16)"))
        })?;
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("missing `shape`".into()))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape has a non-integer dimension".into()))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .and_then(|a| a.iter().map(Value::as_u64).collect())
            .ok_or_else(|| bad("`data_offsets` must be two integers".into()))?;
        let (begin, end) = (offsets[0], offsets[1]);
        if begin > end || end > data_len as u64 {
            return Err(bad(format!(
                "data offsets [{begin}, {end}) lie outside the {data_len}-byte data section (truncated file?)"
            )));
        }
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
        if (end - begin) as usize != expected {
            return Err(bad(format!(
                "shape {shape:?} of {dtype_name} needs {expected} bytes but data_offsets span {}",
                end - begin
            )));
        }
        entries.push((
            name.clone(),
            Entry {
                file: 0,
                dtype,
                shape,
                start: data_start + begin as usize,
                end: data_start + end as usize,
            },
        ));
    }
    Ok(entries)
}
