//! `manifest.json`: what every stored tensor is. Struct fields are declared in alphabetical
//! order and maps are `BTreeMap`s, so the JSON has sorted keys and the same model always gives
//! the same bytes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{entry_parts, ClassSchemes, PartSpec, TensorClass, FORMAT};
use crate::model_io::error::{LoadError, Result};
use crate::quant::Scheme;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Set by `qwenc compress --budget-mb`: the budget and the selection's prediction (each
    /// tensor's `predicted_cost` is its share). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetInfo>,
    /// Always [`FORMAT`].
    pub format: String,
    /// The quantizer that produced the matrices (`rtn`).
    pub quantizer: String,
    /// The scheme of each class of matrix. With `--budget-mb` schemes are chosen per tensor
    /// (each entry's `scheme` decides); this then names each class's most common scheme (by
    /// parameters).
    pub schemes: ClassSchemes,
    pub source: SourceInfo,
    /// Every stored tensor by Hugging Face name: the matrices and the norms and biases
    /// (1-d shape, scheme `f32`). A tied model has `model.embed_tokens.weight` and no
    /// `lm_head.weight`.
    pub tensors: BTreeMap<String, TensorEntry>,
    pub tied_embeddings: bool,
    pub totals: Totals,
}

/// What `--budget-mb` asked for and what the selection predicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetInfo {
    /// The budget for `model.safetensors` (header included), bytes.
    pub budget_bytes: u64,
    /// Calibration tokens the input moments came from.
    pub calibration_tokens: usize,
    /// The schemes the selection chose from.
    pub candidates: Vec<String>,
    /// `model.safetensors` with every matrix in its cheapest candidate, bytes.
    pub minimum_bytes: u64,
    /// Sum of the groups' predicted costs.
    pub predicted_cost: f64,
    /// Predicted cost of the cheapest assignment, for comparison.
    pub predicted_cost_minimum: f64,
    /// How the cost is measured.
    pub proxy: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Set by `--tie-embeddings`: the source's embedding was replaced by its lm_head, which is
    /// stored once for both; the relative Frobenius distance ‖E − L‖ / ‖L‖ between the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_from_lm_head: Option<f64>,
    /// `gguf` or `hf`.
    pub format: String,
    /// The checkpoint path as given to `qwenc compress`.
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// Stored bits per weight, scales and minimums included.
    pub bits_per_weight: f64,
    /// Stored bytes (all of the tensor's parts).
    pub bytes: u64,
    /// `--budget-mb` only: the tensor's predicted cost in its scheme (its share of its fused
    /// group's output noise-to-signal ratio, see `crate::compress::budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_cost: Option<f64>,
    #[serde(with = "super::scheme_name")]
    pub scheme: Scheme,
    /// Hugging Face shape: `[rows, cols]` for a matrix, `[len]` for a norm or bias.
    pub shape: Vec<usize>,
    /// Storage type in the source checkpoint (`BF16`, `Q5_0`, `Q8_0`, ...).
    pub source_dtype: String,
    /// SHA-256 (hex) of the source tensor as f32 little-endian bytes.
    pub source_sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// `bytes * 8 / params`.
    pub bits_per_weight: f64,
    /// Sum of the tensors' `bytes`: the data section of `model.safetensors`.
    pub bytes: u64,
    pub params: u64,
}

/// Tensors, parameters and bytes of one [`TensorClass`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClassTotals {
    pub class: TensorClass,
    pub tensors: usize,
    pub params: u64,
    pub bytes: u64,
    /// The class's scheme, `None` for norms and biases.
    pub scheme: Option<Scheme>,
}

impl ClassTotals {
    pub fn bits_per_weight(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.params as f64
    }
}

impl TensorEntry {
    pub fn params(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64
    }
    pub fn is_matrix(&self) -> bool {
        self.shape.len() == 2
    }
}

impl Manifest {
    /// The stored tensors of an entry.
    pub fn parts(&self, name: &str) -> Option<Vec<PartSpec>> {
        self.tensors
            .get(name)
            .map(|e| entry_parts(name, &e.shape, e.scheme))
    }

    /// Recompute `totals` from the entries.
    pub fn totals_of(tensors: &BTreeMap<String, TensorEntry>) -> Totals {
        let bytes: u64 = tensors.values().map(|e| e.bytes).sum();
        let params: u64 = tensors.values().map(TensorEntry::params).sum();
        Totals {
            bits_per_weight: bytes as f64 * 8.0 / params.max(1) as f64,
            bytes,
            params,
        }
    }

    /// Per-class totals in [`TensorClass::ALL`] order, classes without tensors left out.
    pub fn class_totals(&self) -> Vec<ClassTotals> {
        TensorClass::ALL
            .iter()
            .filter_map(|&class| {
                let members: Vec<&TensorEntry> = self
                    .tensors
                    .iter()
                    .filter(|(name, _)| TensorClass::of(name) == class)
                    .map(|(_, e)| e)
                    .collect();
                (!members.is_empty()).then(|| ClassTotals {
                    class,
                    tensors: members.len(),
                    params: members.iter().map(|e| e.params()).sum(),
                    bytes: members.iter().map(|e| e.bytes).sum(),
                    scheme: (class != TensorClass::Vector).then(|| self.schemes.for_class(class)),
                })
            })
            .collect()
    }

    /// Pretty JSON with sorted keys and a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest always serializes");
        text.push('\n');
        text
    }

    /// Parse `manifest.json` (`path` names it in errors). The format version is checked first
    /// and scheme names are checked one by one, so those errors name the problem and the tensor
    /// rather than a JSON position.
    pub fn from_json(path: &Path, text: &str) -> Result<Manifest> {
        let json: Value = serde_json::from_str(text)
            .map_err(|e| LoadError::format(path, format!("invalid JSON: {e}")))?;
        match json.get("format").and_then(Value::as_str) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(LoadError::format(
                    path,
                    format!("format `{other}` is not `{FORMAT}`, the one this qwenc reads: compress the model again"),
                ))
            }
            None => return Err(LoadError::format(path, format!("missing string field `format` (`{FORMAT}`)"))),
        }
        if let Some(schemes) = json.get("schemes").and_then(Value::as_object) {
            for (class, name) in schemes {
                if let Some(Err(e)) = name.as_str().map(str::parse::<Scheme>) {
                    return Err(LoadError::format(path, format!("schemes.{class}: {e}")));
                }
            }
        }
        if let Some(tensors) = json.get("tensors").and_then(Value::as_object) {
            for (tensor, entry) in tensors {
                if let Some(Err(e)) = entry
                    .get("scheme")
                    .and_then(Value::as_str)
                    .map(str::parse::<Scheme>)
                {
                    return Err(LoadError::tensor(path, tensor, e.to_string()));
                }
            }
        }
        serde_json::from_value(json)
            .map_err(|e| LoadError::format(path, format!("malformed manifest: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let w4: Scheme = "w4g32".parse().unwrap();
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "model.layers.0.self_attn.q_proj.weight".to_string(),
            TensorEntry {
                bits_per_weight: 4.5,
                bytes: 36,
                predicted_cost: None,
                scheme: w4,
                shape: vec![2, 32],
                source_dtype: "Q5_0".into(),
                source_sha256: "00".repeat(32),
            },
        );
        tensors.insert(
            "model.norm.weight".to_string(),
            TensorEntry {
                bits_per_weight: 32.0,
                bytes: 128,
                predicted_cost: None,
                scheme: Scheme::F32,
                shape: vec![32],
                source_dtype: "F32".into(),
                source_sha256: "11".repeat(32),
            },
        );
        let totals = Manifest::totals_of(&tensors);
        Manifest {
            budget: None,
            format: FORMAT.into(),
            quantizer: "rtn".into(),
            schemes: ClassSchemes {
                attn: w4,
                embed: Scheme::W8,
                lm_head: Scheme::W8,
                mlp: w4,
            },
            source: SourceInfo {
                embedding_from_lm_head: None,
                format: "gguf".into(),
                path: "m.gguf".into(),
            },
            tensors,
            tied_embeddings: true,
            totals,
        }
    }

    #[test]
    fn round_trips_with_sorted_keys() {
        let m = sample();
        let text = m.to_json();
        assert_eq!(
            Manifest::from_json(Path::new("manifest.json"), &text).unwrap(),
            m
        );
        // Top-level keys in sorted order.
        let keys = [
            "\"format\"",
            "\"quantizer\"",
            "\"schemes\"",
            "\"source\"",
            "\"tensors\"",
            "\"tied_embeddings\"",
            "\"totals\"",
        ];
        let positions: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(m.totals.params, 96);
        assert_eq!(m.totals.bytes, 164);
    }

    #[test]
    fn named_errors() {
        let path = Path::new("dir/manifest.json");
        let text = sample().to_json();
        let err =
            Manifest::from_json(path, &text.replace(FORMAT, "qwenc-compressed/0")).unwrap_err();
        assert!(err.to_string().contains("qwenc-compressed/0"), "{err}");
        let err = Manifest::from_json(
            path,
            &text.replace("\"scheme\": \"w4g32\"", "\"scheme\": \"w5g32\""),
        )
        .unwrap_err();
        assert!(
            matches!(&err, LoadError::Tensor { tensor, .. } if tensor == "model.layers.0.self_attn.q_proj.weight"),
            "{err}"
        );
        let err = Manifest::from_json(path, &text[..text.len() / 2]).unwrap_err();
        assert!(matches!(err, LoadError::Format { .. }), "{err}");
        let err = Manifest::from_json(path, &text.replace("\"tied_embeddings\"", "\"tied\""))
            .unwrap_err();
        assert!(err.to_string().contains("tied_embeddings"), "{err}");
    }
}
