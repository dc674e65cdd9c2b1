//! Writing a planned compression: stream tensor by tensor (load f32 → hash → quantize →
//! write) into the [compressed model directory](crate::compress::format), so that peak memory
//! stays near one f32 copy of the largest tensor plus its quantized form.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::compress::error::CompressError;
use crate::compress::format::{
    hex, matrix_data, matrix_parts, Manifest, PartData, SafetensorsWriter, SourceInfo, TensorEntry,
    CONFIG_FILE, FORMAT, MANIFEST_FILE, SAFETENSORS_FILE, TOKENIZER_FILE,
};
use crate::compress::plan::{safetensors_metadata, CompressPlan};
use crate::quant::{QuantizedMatrix, Quantizer, Scheme};

/// What was written.
#[derive(Clone, Debug)]
pub struct CompressReport {
    pub out_dir: PathBuf,
    pub manifest: Manifest,
    pub warnings: Vec<String>,
    /// Size of `model.safetensors` (header included).
    pub safetensors_bytes: u64,
    /// Size of the four files together.
    pub dir_bytes: u64,
}

impl CompressPlan {
    /// Write the directory; `progress(done, total, name)` is called before each tensor and
    /// once at the end with `done == total`.
    pub fn write(
        self,
        quantizer: &dyn Quantizer,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<CompressReport, CompressError> {
        let out = &self.out_dir;
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CompressError::Write { path, source }
        };
        std::fs::create_dir_all(out).map_err(werr(out))?;
        let write_file = |name: &str, text: &str| {
            let path = out.join(name);
            std::fs::write(&path, text).map_err(werr(&path))
        };
        // The manifest goes last: a directory without one is visibly incomplete.
        let manifest_path = out.join(MANIFEST_FILE);
        if manifest_path.exists() {
            std::fs::remove_file(&manifest_path).map_err(werr(&manifest_path))?;
        }
        let mut config_json = serde_json::to_string_pretty(&self.checkpoint.config.to_hf_json())
            .expect("JSON values serialize");
        config_json.push('\n');
        write_file(CONFIG_FILE, &config_json)?;
        write_file(
            TOKENIZER_FILE,
            &self.checkpoint.tokenizer.to_tokenizer_json(),
        )?;

        let final_path = out.join(SAFETENSORS_FILE);
        let partial_path = out.join(format!("{SAFETENSORS_FILE}.partial"));
        let result = self.write_tensors(&partial_path, quantizer, progress);
        let tensors = match result {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_file(&partial_path);
                return Err(e);
            }
        };
        std::fs::rename(&partial_path, &final_path).map_err(werr(&final_path))?;

        let manifest = Manifest {
            budget: self.budget.clone(),
            format: FORMAT.to_string(),
            quantizer: quantizer.name().to_string(),
            schemes: self.schemes,
            source: SourceInfo {
                embedding_from_lm_head: self.embedding_from_lm_head,
                format: self.checkpoint.format.to_string(),
                path: self.source.to_string_lossy().into_owned(),
            },
            totals: Manifest::totals_of(&tensors),
            tensors,
            tied_embeddings: self.tied,
        };
        write_file(MANIFEST_FILE, &manifest.to_json())?;

        let size = |name: &str| {
            let path = out.join(name);
            std::fs::metadata(&path)
                .map(|m| m.len())
                .map_err(werr(&path))
        };
        let safetensors_bytes = size(SAFETENSORS_FILE)?;
        let dir_bytes =
            safetensors_bytes + size(MANIFEST_FILE)? + size(CONFIG_FILE)? + size(TOKENIZER_FILE)?;
        Ok(CompressReport {
            out_dir: self.out_dir.clone(),
            manifest,
            warnings: self.warnings,
            safetensors_bytes,
            dir_bytes,
        })
    }

    /// Stream every tensor into `path`; returns the manifest entries.
    fn write_tensors(
        &self,
        path: &Path,
        quantizer: &dyn Quantizer,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<BTreeMap<String, TensorEntry>, CompressError> {
        let werr = |source| CompressError::Write {
            path: path.to_path_buf(),
            source,
        };
        let parts = self.parts();
        let sizes: BTreeMap<&str, usize> = parts
            .iter()
            .map(|p| (p.name.as_str(), p.n_bytes()))
            .collect();
        let metadata = safetensors_metadata();
        let mut writer = SafetensorsWriter::create(path, &parts, &metadata).map_err(werr)?;

        let total = self.tensors.len();
        let mut entries = BTreeMap::new();
        for (i, t) in self.tensors.iter().enumerate() {
            progress(i, total, &t.name);
            let mut w = self.checkpoint.load(&t.name, &t.shape)?;
            // The manifest's hash is of the source tensor, before any transform.
            let source_sha = sha256_f32(&w);
            quantizer.transform(&t.name, &mut w);
            let (bytes, sha) = match t.shape[..] {
                [rows, cols] => {
                    let (sha, m) = (
                        source_sha,
                        quantizer.quantize(&t.name, &w, rows, cols, t.scheme),
                    );
                    drop(w);
                    check_quantized(&m, rows, cols, t.scheme).map_err(|problem| {
                        CompressError::Quantizer {
                            tensor: t.name.clone(),
                            quantizer: quantizer.name().to_string(),
                            problem,
                        }
                    })?;
                    let mut bytes = 0;
                    for (spec, data) in matrix_parts(&t.name, rows, cols, t.scheme)
                        .iter()
                        .zip(matrix_data(&m))
                    {
                        writer.write(&spec.name, data).map_err(werr)?;
                        bytes += sizes[spec.name.as_str()];
                    }
                    (bytes, sha)
                }
                _ => {
                    writer.write(&t.name, PartData::F32(&w)).map_err(werr)?;
                    (sizes[t.name.as_str()], source_sha)
                }
            };
            let params: usize = t.shape.iter().product();
            entries.insert(
                t.name.clone(),
                TensorEntry {
                    bits_per_weight: bytes as f64 * 8.0 / params as f64,
                    bytes: bytes as u64,
                    predicted_cost: t.predicted_cost,
                    scheme: t.scheme,
                    shape: t.shape.clone(),
                    source_dtype: t.source_dtype.clone(),
                    source_sha256: sha,
                },
            );
        }
        writer.finish().map_err(werr)?;
        progress(total, total, "");
        Ok(entries)
    }
}

fn check_quantized(
    m: &QuantizedMatrix,
    rows: usize,
    cols: usize,
    scheme: Scheme,
) -> Result<(), String> {
    if (m.rows, m.cols, m.scheme) != (rows, cols, scheme) {
        return Err(format!(
            "a {}×{} {} matrix for a {rows}×{cols} {scheme} request",
            m.rows, m.cols, m.scheme
        ));
    }
    let (specs, data) = (matrix_parts("", rows, cols, scheme), matrix_data(m));
    if specs.len() != data.len() {
        return Err(format!("data of the wrong kind for scheme {scheme}"));
    }
    for (spec, data) in specs.iter().zip(data) {
        if spec.dtype != data.dtype() || spec.n_elements() != data.len() {
            return Err(format!(
                "{} {} elements for `{}`, the scheme needs {} {}",
                data.len(),
                data.dtype().name(),
                spec.name,
                spec.n_elements(),
                spec.dtype.name()
            ));
        }
    }
    Ok(())
}

/// SHA-256 (hex) of `values` as f32 little-endian bytes, hashed in chunks without a copy of
/// the whole tensor.
pub fn sha256_f32(values: &[f32]) -> String {
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(4 << 14);
    for chunk in values.chunks(1 << 14) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
        h.update(&buf);
    }
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_little_endian_f32() {
        // sha256 of the 4 bytes 00 00 80 3f (1.0f32).
        let mut h = Sha256::new();
        h.update([0u8, 0, 0x80, 0x3f]);
        assert_eq!(sha256_f32(&[1.0]), hex(&h.finalize()));
    }
}
