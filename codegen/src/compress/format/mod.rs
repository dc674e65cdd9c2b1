//! The compressed model directory: the compiler's input, written by `qwenc compress`
//! ([`crate::compress`]) and read by `build.rs` through [`CompressedModel`].
//!
//! ```text
//! DIR/config.json        QwenConfig::to_hf_json()
//! DIR/tokenizer.json     TokenizerSpec::to_tokenizer_json()
//! DIR/manifest.json      what every tensor is (scheme, shape, source dtype and hash), totals
//! DIR/model.safetensors  the stored tensors
//! ```
//!
//! Tensors in `model.safetensors`, by the scheme of the matrix they belong to (norms and biases
//! are always `F32` under their Hugging Face name):
//!
//! | scheme     | tensors                                                                         |
//! |------------|---------------------------------------------------------------------------------|
//! | `f32`      | `{name}` F32 `[rows, cols]`                                                     |
//! | `bf16`     | `{name}` BF16 `[rows, cols]`                                                    |
//! | `w8`       | `{name}.q` I8 `[rows, cols]`, `{name}.scale` F32 `[rows]`                       |
//! | `w4g{G}`   | `{name}.q` U8 `[rows, cols/2]`, `{name}.scale` F16 `[rows, cols/G]`             |
//! | `w4g{G}a`  | as `w4g{G}`, plus `{name}.min` F16 `[rows, cols/G]`                             |
//!
//! The numbers are exactly those of [`crate::quant::QuantizedData`] (see the table in
//! [`crate::quant`]); `.q` of `w4` is `QuantizedData::Grouped::packed` byte for byte (low nibble =
//! even column). A tied model stores the embedding once (in the `lm_head` scheme) and no
//! `lm_head.*` tensor. The data section is laid out by decreasing element size, then name (as
//! the `safetensors` crate does), so every tensor is aligned to its element size.

mod manifest;
mod reader;
mod writer;

use serde::{Deserialize, Serialize};

use crate::model_io::checkpoint::{LayerTensor, EMBED, LM_HEAD};
use crate::quant::{QuantizedData, QuantizedMatrix, Scheme};

pub use manifest::{BudgetInfo, ClassTotals, Manifest, SourceInfo, TensorEntry, Totals};
pub use reader::CompressedModel;
pub use writer::{file_len, PartData, SafetensorsWriter};

/// `manifest.json`'s `format`: bumped whenever the directory layout changes.
pub const FORMAT: &str = "qwenc-compressed/1";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const SAFETENSORS_FILE: &str = "model.safetensors";

/// The element types the compressed safetensors file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoredDtype {
    F32,
    F16,
    BF16,
    I8,
    U8,
}

impl StoredDtype {
    pub fn parse(name: &str) -> Option<StoredDtype> {
        Some(match name {
            "F32" => StoredDtype::F32,
            "F16" => StoredDtype::F16,
            "BF16" => StoredDtype::BF16,
            "I8" => StoredDtype::I8,
            "U8" => StoredDtype::U8,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            StoredDtype::F32 => "F32",
            StoredDtype::F16 => "F16",
            StoredDtype::BF16 => "BF16",
            StoredDtype::I8 => "I8",
            StoredDtype::U8 => "U8",
        }
    }
    pub fn size(self) -> usize {
        match self {
            StoredDtype::F32 => 4,
            StoredDtype::F16 | StoredDtype::BF16 => 2,
            StoredDtype::I8 | StoredDtype::U8 => 1,
        }
    }
}

/// One tensor of the safetensors file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartSpec {
    pub name: String,
    pub dtype: StoredDtype,
    pub shape: Vec<usize>,
}

impl PartSpec {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn n_bytes(&self) -> usize {
        self.n_elements() * self.dtype.size()
    }
}

/// The stored tensors of a `[rows, cols]` matrix named `name` in `scheme`, in the order
/// [`matrix_data`] yields their data. The caller checks `scheme.check_cols(cols)` first.
pub fn matrix_parts(name: &str, rows: usize, cols: usize, scheme: Scheme) -> Vec<PartSpec> {
    let part = |suffix: &str, dtype, shape: Vec<usize>| PartSpec {
        name: format!("{name}{suffix}"),
        dtype,
        shape,
    };
    match scheme {
        Scheme::F32 => vec![part("", StoredDtype::F32, vec![rows, cols])],
        Scheme::Bf16 => vec![part("", StoredDtype::BF16, vec![rows, cols])],
        Scheme::W8 => vec![
            part(".q", StoredDtype::I8, vec![rows, cols]),
            part(".scale", StoredDtype::F32, vec![rows]),
        ],
        Scheme::W4 { .. } | Scheme::W8Grouped { .. } | Scheme::Narrow { .. } => {
            let (group, asymmetric) = (scheme.group().expect("grouped"), scheme.asymmetric());
            let bits = scheme.code_bits().expect("a group-wise scheme") as usize;
            let mut parts = vec![
                part(".q", StoredDtype::U8, vec![rows, cols * bits / 8]),
                part(".scale", StoredDtype::F16, vec![rows, cols / group]),
            ];
            if asymmetric {
                parts.push(part(".min", StoredDtype::F16, vec![rows, cols / group]));
            }
            parts
        }
    }
}

/// The stored tensor of a norm or bias.
pub fn vector_part(name: &str, len: usize) -> PartSpec {
    PartSpec {
        name: name.to_string(),
        dtype: StoredDtype::F32,
        shape: vec![len],
    }
}

/// The stored tensors of a manifest entry: [`matrix_parts`] for 2-d shapes, [`vector_part`]
/// for 1-d ones.
pub fn entry_parts(name: &str, shape: &[usize], scheme: Scheme) -> Vec<PartSpec> {
    match *shape {
        [rows, cols] => matrix_parts(name, rows, cols, scheme),
        _ => vec![vector_part(name, shape.iter().product())],
    }
}

/// The data of `m`, in the order of [`matrix_parts`].
pub fn matrix_data(m: &QuantizedMatrix) -> Vec<PartData<'_>> {
    match &m.data {
        QuantizedData::F32(v) => vec![PartData::F32(v)],
        QuantizedData::Bf16(v) => vec![PartData::BF16(v)],
        QuantizedData::W8 { q, scales } => vec![PartData::I8(q), PartData::F32(scales)],
        QuantizedData::Grouped {
            packed,
            scales,
            mins,
        } => {
            let mut parts = vec![PartData::U8(packed), PartData::F16(scales)];
            if let Some(mins) = mins {
                parts.push(PartData::F16(mins));
            }
            parts
        }
    }
}

/// Lower-case hex of `bytes` (for SHA-256 digests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a tensor is, for choosing its scheme and for summaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TensorClass {
    Embed,
    Attn,
    Mlp,
    LmHead,
    /// Norm weights and biases: always f32.
    Vector,
}

impl TensorClass {
    /// Classify a Hugging Face tensor name.
    pub fn of(name: &str) -> TensorClass {
        if name == EMBED {
            TensorClass::Embed
        } else if name == LM_HEAD {
            TensorClass::LmHead
        } else {
            match LayerTensor::parse(name) {
                Some((_, LayerTensor::GateProj | LayerTensor::UpProj | LayerTensor::DownProj)) => {
                    TensorClass::Mlp
                }
                Some(_) => TensorClass::Attn,
                None => TensorClass::Vector,
            }
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            TensorClass::Embed => "embed",
            TensorClass::Attn => "attn",
            TensorClass::Mlp => "mlp",
            TensorClass::LmHead => "lm_head",
            TensorClass::Vector => "norms+biases",
        }
    }

    pub const ALL: [TensorClass; 5] = [
        TensorClass::Embed,
        TensorClass::Attn,
        TensorClass::Mlp,
        TensorClass::LmHead,
        TensorClass::Vector,
    ];
}

/// The scheme of each class of matrix. For a tied model `embed` equals `lm_head` (the one
/// stored matrix serves both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassSchemes {
    #[serde(with = "scheme_name")]
    pub attn: Scheme,
    #[serde(with = "scheme_name")]
    pub embed: Scheme,
    #[serde(with = "scheme_name")]
    pub lm_head: Scheme,
    #[serde(with = "scheme_name")]
    pub mlp: Scheme,
}

impl ClassSchemes {
    /// The scheme of a tensor of `class`: norms and biases are f32.
    pub fn for_class(&self, class: TensorClass) -> Scheme {
        match class {
            TensorClass::Embed => self.embed,
            TensorClass::Attn => self.attn,
            TensorClass::Mlp => self.mlp,
            TensorClass::LmHead => self.lm_head,
            TensorClass::Vector => Scheme::F32,
        }
    }
}

impl std::fmt::Display for ClassSchemes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "attn={} mlp={} embed={} lm_head={}",
            self.attn, self.mlp, self.embed, self.lm_head
        )
    }
}

/// Serde for [`Scheme`] as its name (`"w4g32"`).
pub(crate) mod scheme_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::quant::Scheme;

    pub fn serialize<S: Serializer>(scheme: &Scheme, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(scheme)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Scheme, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_rtn;

    #[test]
    fn parts_match_the_quantized_data() {
        let w: Vec<f32> = (0..4 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        for name in ["f32", "bf16", "w8", "w4g32", "w4g64a"] {
            let scheme: Scheme = name.parse().unwrap();
            let m = quantize_rtn(&w, 4, 64, scheme);
            let parts = matrix_parts("x", 4, 64, scheme);
            let data = matrix_data(&m);
            assert_eq!(parts.len(), data.len(), "{name}");
            for (p, d) in parts.iter().zip(&data) {
                assert_eq!(p.dtype, d.dtype(), "{name} {}", p.name);
                assert_eq!(p.n_elements(), d.len(), "{name} {}", p.name);
            }
            // Stored bits per weight is what the scheme promises.
            let bytes: usize = parts.iter().map(PartSpec::n_bytes).sum();
            assert_eq!(
                bytes as f64 * 8.0 / 256.0,
                scheme.bits_per_weight(64),
                "{name}"
            );
        }
    }

    #[test]
    fn classes() {
        assert_eq!(TensorClass::of(EMBED), TensorClass::Embed);
        assert_eq!(TensorClass::of(LM_HEAD), TensorClass::LmHead);
        assert_eq!(
            TensorClass::of("model.layers.3.self_attn.o_proj.weight"),
            TensorClass::Attn
        );
        assert_eq!(
            TensorClass::of("model.layers.3.self_attn.q_proj.bias"),
            TensorClass::Vector
        );
        assert_eq!(
            TensorClass::of("model.layers.0.mlp.down_proj.weight"),
            TensorClass::Mlp
        );
        assert_eq!(
            TensorClass::of("model.layers.0.input_layernorm.weight"),
            TensorClass::Vector
        );
        assert_eq!(TensorClass::of("model.norm.weight"), TensorClass::Vector);
    }
}
