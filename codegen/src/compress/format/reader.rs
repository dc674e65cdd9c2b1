//! Reading a compressed model directory back: everything is validated when the directory is
//! opened (manifest against config, safetensors header against file size, every stored tensor's
//! dtype and shape against its scheme), so that later accessors cannot fail on bad data and a
//! broken directory is a named [`LoadError`], never a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use half::{bf16, f16};
use memmap2::Mmap;
use qwenc_runtime::tokenizer::TokenizerSpec;
use sha2::{Digest, Sha256};

use super::{
    entry_parts, hex, Manifest, PartSpec, StoredDtype, TensorClass, CONFIG_FILE, MANIFEST_FILE,
    SAFETENSORS_FILE, TOKENIZER_FILE,
};
use crate::model_io::checkpoint::{EMBED, LM_HEAD};
use crate::model_io::config::QwenConfig;
use crate::model_io::error::{LoadError, Result};
use crate::quant::{QuantizedData, QuantizedMatrix, Scheme};
use crate::reference::ReferenceWeights;

/// One tensor of the safetensors file, with its absolute byte range in the map.
#[derive(Clone, Debug)]
struct StoredPart {
    dtype: StoredDtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A compressed model directory, opened and validated.
pub struct CompressedModel {
    pub config: QwenConfig,
    pub tokenizer: TokenizerSpec,
    pub manifest: Manifest,
    dir: PathBuf,
    safetensors_path: PathBuf,
    map: Mmap,
    parts: BTreeMap<String, StoredPart>,
    /// The small files' bytes as read, for the digest.
    manifest_bytes: Vec<u8>,
    config_bytes: Vec<u8>,
    tokenizer_bytes: Vec<u8>,
    digest: OnceLock<String>,
}

impl CompressedModel {
    /// Open and validate `dir` (see the module documentation of [`crate::compress::format`]).
    pub fn open(dir: &Path) -> Result<CompressedModel> {
        let read = |name: &str| -> Result<(PathBuf, Vec<u8>)> {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| LoadError::io(&path, e))?;
            Ok((path, bytes))
        };
        let text = |path: &Path, bytes: &[u8]| -> Result<String> {
            String::from_utf8(bytes.to_vec()).map_err(|_| LoadError::format(path, "not UTF-8"))
        };

        let (manifest_path, manifest_bytes) = read(MANIFEST_FILE)?;
        let manifest =
            Manifest::from_json(&manifest_path, &text(&manifest_path, &manifest_bytes)?)?;
        let (config_path, config_bytes) = read(CONFIG_FILE)?;
        let config = QwenConfig::from_json_str(&config_path, &text(&config_path, &config_bytes)?)?;
        let (tokenizer_path, tokenizer_bytes) = read(TOKENIZER_FILE)?;
        let tokenizer =
            TokenizerSpec::from_tokenizer_json(&text(&tokenizer_path, &tokenizer_bytes)?)
                .map_err(|e| LoadError::format(&tokenizer_path, e.to_string()))?;
        check_manifest(&manifest_path, &manifest, &config)?;

        let safetensors_path = dir.join(SAFETENSORS_FILE);
        let file =
            File::open(&safetensors_path).map_err(|e| LoadError::io(&safetensors_path, e))?;
        let len = file
            .metadata()
            .map_err(|e| LoadError::io(&safetensors_path, e))?
            .len();
        if len < 8 {
            return Err(LoadError::format(
                &safetensors_path,
                format!("file is {len} bytes, too short for a safetensors header"),
            ));
        }
        // SAFETY: read-only map; every slice taken from it is bounds-checked against the header,
        // which was checked against the file's size. A file changed under us can only give wrong
        // numbers, not undefined behaviour in safe code.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| LoadError::io(&safetensors_path, e))?;
        let (parts, data_len) = parse_header(&safetensors_path, &map)?;
        check_parts(&safetensors_path, &manifest, &parts)?;
        if data_len as u64 != manifest.totals.bytes {
            return Err(LoadError::format(
                &safetensors_path,
                format!(
                    "data section is {data_len} bytes but the manifest's totals say {}",
                    manifest.totals.bytes
                ),
            ));
        }

        Ok(CompressedModel {
            config,
            tokenizer,
            manifest,
            dir: dir.to_path_buf(),
            safetensors_path,
            map,
            parts,
            manifest_bytes,
            config_bytes,
            tokenizer_bytes,
            digest: OnceLock::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn safetensors_path(&self) -> &Path {
        &self.safetensors_path
    }

    /// Whether `lm_head` is the embedding (stored once, under `model.embed_tokens.weight`).
    pub fn tied_embeddings(&self) -> bool {
        self.manifest.tied_embeddings
    }

    /// The manifest name that holds `name`: `lm_head.weight` of a tied model is the embedding.
    fn resolve<'a>(&self, name: &'a str) -> &'a str {
        if name == LM_HEAD && self.manifest.tied_embeddings {
            EMBED
        } else {
            name
        }
    }

    /// The scheme a matrix is stored in (`lm_head.weight` of a tied model: the embedding's).
    pub fn scheme(&self, name: &str) -> Option<Scheme> {
        self.manifest
            .tensors
            .get(self.resolve(name))
            .map(|e| e.scheme)
    }

    /// A matrix rebuilt exactly as it was quantized. `lm_head.weight` of a tied model gives
    /// the embedding.
    pub fn matrix(&self, name: &str) -> Result<QuantizedMatrix> {
        let stored = self.resolve(name);
        let entry = self.manifest.tensors.get(stored).ok_or_else(|| {
            LoadError::tensor(&self.safetensors_path, name, "not in the compressed model")
        })?;
        let [rows, cols] = entry.shape[..] else {
            return Err(LoadError::tensor(
                &self.safetensors_path,
                name,
                format!(
                    "shape {:?} is not a matrix (norms and biases are read with `vector`)",
                    entry.shape
                ),
            ));
        };
        let bytes = |part: &PartSpec| -> Result<&[u8]> { self.part_bytes(&part.name) };
        let parts = entry_parts(stored, &entry.shape, entry.scheme);
        let data = match entry.scheme {
            Scheme::F32 => QuantizedData::F32(decode_f32(bytes(&parts[0])?)),
            Scheme::Bf16 => QuantizedData::Bf16(decode(bytes(&parts[0])?, |b| {
                bf16::from_le_bytes([b[0], b[1]])
            })),
            Scheme::W8 => QuantizedData::W8 {
                q: bytes(&parts[0])?.iter().map(|&b| b as i8).collect(),
                scales: decode_f32(bytes(&parts[1])?),
            },
            Scheme::W4 { .. } | Scheme::W8Grouped { .. } | Scheme::Narrow { .. } => {
                let asymmetric = entry.scheme.asymmetric();
                QuantizedData::Grouped {
                    packed: bytes(&parts[0])?.to_vec(),
                    scales: decode(bytes(&parts[1])?, |b| f16::from_le_bytes([b[0], b[1]])),
                    mins: if asymmetric {
                        Some(decode(bytes(&parts[2])?, |b| {
                            f16::from_le_bytes([b[0], b[1]])
                        }))
                    } else {
                        None
                    },
                }
            }
        };
        Ok(QuantizedMatrix {
            rows,
            cols,
            scheme: entry.scheme,
            data,
        })
    }

    /// A norm weight or a bias.
    pub fn vector(&self, name: &str) -> Result<Vec<f32>> {
        let entry = self.manifest.tensors.get(name).ok_or_else(|| {
            LoadError::tensor(&self.safetensors_path, name, "not in the compressed model")
        })?;
        if entry.shape.len() != 1 {
            return Err(LoadError::tensor(
                &self.safetensors_path,
                name,
                format!(
                    "shape {:?} is not a vector (matrices are read with `matrix`)",
                    entry.shape
                ),
            ));
        }
        Ok(decode_f32(self.part_bytes(name)?))
    }

    /// The raw little-endian bytes of one stored tensor (`…q_proj.weight.q`, `model.norm.weight`).
    pub fn part_bytes(&self, part: &str) -> Result<&[u8]> {
        let p = self.parts.get(part).ok_or_else(|| {
            LoadError::tensor(&self.safetensors_path, part, "no such stored tensor")
        })?;
        Ok(&self.map[p.start..p.end])
    }

    /// SHA-256 (hex) identifying the compressed model: over `manifest.json`, `config.json`,
    /// `tokenizer.json` and `model.safetensors`, in that order, each as its file name, a zero
    /// byte, its length (u64 little-endian) and its bytes. Computed once.
    pub fn digest(&self) -> &str {
        self.digest.get_or_init(|| {
            let mut h = Sha256::new();
            for (name, bytes) in [
                (MANIFEST_FILE, &self.manifest_bytes[..]),
                (CONFIG_FILE, &self.config_bytes[..]),
                (TOKENIZER_FILE, &self.tokenizer_bytes[..]),
                (SAFETENSORS_FILE, &self.map[..]),
            ] {
                h.update(name.as_bytes());
                h.update([0]);
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(bytes);
            }
            hex(&h.finalize())
        })
    }
}

/// The compiler's view: the plan asks for a matrix in a scheme and shape, and gets exactly the
/// stored one, or a named error when the directory was compressed differently.
impl crate::compile::pack::WeightSource for CompressedModel {
    fn matrix(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        scheme: Scheme,
    ) -> Result<QuantizedMatrix> {
        let m = CompressedModel::matrix(self, name)?;
        if (m.rows, m.cols) != (rows, cols) {
            return Err(LoadError::tensor(
                &self.safetensors_path,
                name,
                format!(
                    "stored as [{}, {}], the model plan needs [{rows}, {cols}]",
                    m.rows, m.cols
                ),
            ));
        }
        if m.scheme != scheme {
            return Err(LoadError::tensor(
                &self.safetensors_path,
                name,
                format!("stored in {}, the build asks for {scheme} (compress the model again with that scheme)", m.scheme),
            ));
        }
        Ok(m)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let v = CompressedModel::vector(self, name)?;
        if v.len() != len {
            return Err(LoadError::tensor(
                &self.safetensors_path,
                name,
                format!("stored with {} values, the model plan needs {len}", v.len()),
            ));
        }
        Ok(v)
    }
}

fn decode<T>(bytes: &[u8], f: impl Fn(&[u8]) -> T) -> Vec<T> {
    bytes.chunks_exact(2).map(f).collect()
}

fn decode_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The manifest describes exactly the tensors the config implies, with matching shapes,
/// usable schemes, byte counts that add up.
fn check_manifest(path: &Path, m: &Manifest, config: &QwenConfig) -> Result<()> {
    if m.tied_embeddings != config.tie_word_embeddings {
        return Err(LoadError::config(
            path,
            format!(
                "tied_embeddings is {} but config.json's tie_word_embeddings is {}",
                m.tied_embeddings, config.tie_word_embeddings
            ),
        ));
    }
    let plan = ReferenceWeights::tensor_plan(config, !m.tied_embeddings);
    let planned: BTreeSet<&str> = plan.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(extra) = m.tensors.keys().find(|n| !planned.contains(n.as_str())) {
        return Err(LoadError::tensor(
            path,
            extra,
            "is not a tensor of this model (per config.json)",
        ));
    }
    for (name, shape) in &plan {
        let entry = m
            .tensors
            .get(name)
            .ok_or_else(|| LoadError::tensor(path, name, "missing from the manifest"))?;
        let bad = |p: String| LoadError::tensor(path, name, p);
        if &entry.shape != shape {
            return Err(bad(format!(
                "shape {:?}, but config.json implies {shape:?}",
                entry.shape
            )));
        }
        match shape[..] {
            [_, cols] => entry
                .scheme
                .check_cols(cols)
                .map_err(|p| bad(format!("scheme {}: {p}", entry.scheme)))?,
            _ if entry.scheme != Scheme::F32 => {
                return Err(bad(format!(
                    "norms and biases are stored as f32, not {}",
                    entry.scheme
                )))
            }
            _ => {}
        }
        debug_assert!(shape.len() == 2 || TensorClass::of(name) == TensorClass::Vector);
        let bytes: usize = entry_parts(name, shape, entry.scheme)
            .iter()
            .map(PartSpec::n_bytes)
            .sum();
        if entry.bytes != bytes as u64 {
            return Err(bad(format!(
                "{} bytes in the manifest, but {} needs {bytes}",
                entry.bytes, entry.scheme
            )));
        }
    }
    let totals = Manifest::totals_of(&m.tensors);
    if (totals.bytes, totals.params) != (m.totals.bytes, m.totals.params) {
        return Err(LoadError::format(
            path,
            format!(
                "totals say {} bytes for {} params, the tensors add up to {} bytes for {}",
                m.totals.bytes, m.totals.params, totals.bytes, totals.params
            ),
        ));
    }
    Ok(())
}

/// Every tensor the manifest implies is stored with the right dtype and shape, and nothing else.
fn check_parts(path: &Path, m: &Manifest, parts: &BTreeMap<String, StoredPart>) -> Result<()> {
    let mut expected = BTreeSet::new();
    for (name, entry) in &m.tensors {
        for spec in entry_parts(name, &entry.shape, entry.scheme) {
            let bad = |p: String| LoadError::tensor(path, &spec.name, p);
            let stored = parts.get(&spec.name).ok_or_else(|| {
                bad(format!(
                    "missing (scheme {} of `{name}` stores it)",
                    entry.scheme
                ))
            })?;
            if stored.dtype != spec.dtype || stored.shape != spec.shape {
                return Err(bad(format!(
                    "stored as {} {:?}, but scheme {} of `{name}` needs {} {:?}",
                    stored.dtype.name(),
                    stored.shape,
                    entry.scheme,
                    spec.dtype.name(),
                    spec.shape
                )));
            }
            expected.insert(spec.name);
        }
    }
    if let Some(extra) = parts.keys().find(|n| !expected.contains(*n)) {
        return Err(LoadError::tensor(
            path,
            extra,
            "stored but not described by the manifest",
        ));
    }
    Ok(())
}

/// The checked header: the tensors with absolute ranges and the data section's length.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<(BTreeMap<String, StoredPart>, usize)> {
    let parse = |name: &str| StoredDtype::parse(name).map(|d| (d, d.size()));
    let supported = "compressed models use F32, F16, BF16, I8 and U8";
    let (entries, data_len) =
        crate::model_io::safetensors_header::parse_header(path, bytes, parse, supported)?;
    let parts = entries
        .into_iter()
        .map(|e| {
            (
                e.name,
                StoredPart {
                    dtype: e.dtype,
                    shape: e.shape,
                    start: e.start,
                    end: e.end,
                },
            )
        })
        .collect();
    Ok((parts, data_len))
}
