//! A checkpoint is a config, a tokenizer and a set of named tensors, whatever the file format.
//! Tensor names and shapes are always the Hugging Face ones (`model.layers.0.self_attn.q_proj.weight`,
//! shape `[out, in]`, row-major), so that everything downstream sees one model.

use std::path::Path;

use qwenc_runtime::tokenizer::TokenizerSpec;

use crate::model_io::config::QwenConfig;
use crate::model_io::error::{LoadError, Result};
use crate::model_io::gguf::GgufFile;
use crate::model_io::safetensors_dir::SafetensorsDir;
use crate::model_io::tensor::{TensorMeta, TensorSource};

/// A whole checkpoint: configuration, tokenizer, tensors.
pub struct Checkpoint {
    pub config: QwenConfig,
    pub tokenizer: TokenizerSpec,
    pub tensors: Box<dyn TensorSource>,
    /// `hf` or `gguf`, for messages.
    pub format: &'static str,
}

impl Checkpoint {
    /// Open a Hugging Face directory (`config.json`, `tokenizer.json`, `*.safetensors`)
    /// or a GGUF file.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let meta = std::fs::metadata(path).map_err(|e| LoadError::io(path, e))?;
        if meta.is_dir() {
            let config = QwenConfig::from_file(&path.join("config.json"))?;
            let tok_path = path.join("tokenizer.json");
            let text =
                std::fs::read_to_string(&tok_path).map_err(|e| LoadError::io(&tok_path, e))?;
            let tokenizer = TokenizerSpec::from_tokenizer_json(&text)
                .map_err(|e| LoadError::format(&tok_path, e.to_string()))?;
            let tensors = SafetensorsDir::open(path)?;
            Ok(Checkpoint {
                config,
                tokenizer,
                tensors: Box::new(tensors),
                format: "hf",
            })
        } else {
            let gguf = GgufFile::open(path)?;
            Ok(Checkpoint {
                config: gguf.config()?,
                tokenizer: gguf.tokenizer_spec()?,
                tensors: Box::new(gguf),
                format: "gguf",
            })
        }
    }

    /// Load one tensor as f32, checking its shape; `lm_head.weight` falls back to the
    /// embedding when the model ties them.
    pub fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let path = self.tensors.path();
        let metas = self.tensors.tensors();
        let meta = match metas.iter().find(|m| m.name == name) {
            Some(m) => m,
            None if name == LM_HEAD && self.config.tie_word_embeddings => {
                return self.load(EMBED, shape);
            }
            None => return Err(LoadError::tensor(path, name, "missing from the checkpoint")),
        };
        if meta.shape != shape {
            return Err(LoadError::tensor(
                path,
                name,
                format!(
                    "shape {:?} does not match the config, which implies {:?}",
                    meta.shape, shape
                ),
            ));
        }
        self.tensors.load_f32(name)
    }

    /// Turn an untied checkpoint into a tied one whose single matrix is its `lm_head.weight`
    /// (`qwenc compress --tie-embeddings`): the embedding is then gathered from the lm_head.
    /// Worth it when the two are copies of one matrix, as in the dev GGUF, whose embedding is a
    /// Q5_0 and whose lm_head a Q8_0 copy of Qwen2.5's tied matrix. The lm_head is kept because
    /// its errors reach the logits undamped. Returns the relative Frobenius distance
    /// ‖E − L‖ / ‖L‖ of the replaced embedding E from the lm_head L, so that the caller can say
    /// how much the model changes.
    pub fn tie_embedding_to_lm_head(mut self) -> Result<(Checkpoint, f64)> {
        let path = self.tensors.path().to_path_buf();
        if self.config.tie_word_embeddings {
            return Err(LoadError::format(
                &path,
                "the model already ties lm_head to the embedding: nothing to share",
            ));
        }
        if !self.has_separate_lm_head() {
            return Err(LoadError::tensor(
                &path,
                LM_HEAD,
                "missing from the checkpoint, so there is no lm_head to share",
            ));
        }
        let distance = self.embedding_distance_from_lm_head()?;
        self.config.tie_word_embeddings = true;
        self.tensors = Box::new(LmHeadAsEmbedding {
            inner: self.tensors,
        });
        Ok((self, distance))
    }

    /// ‖E − L‖ / ‖L‖ (Frobenius) of the embedding E from the lm_head L: about 1.4 for unrelated
    /// matrices, the rounding error for two copies of one. Loads both matrices.
    pub fn embedding_distance_from_lm_head(&self) -> Result<f64> {
        let shape = [self.config.vocab_size, self.config.hidden_size];
        let embed = self.load(EMBED, &shape)?;
        let head = self.load(LM_HEAD, &shape)?;
        Ok(relative_distance(&embed, &head))
    }

    /// Whether the checkpoint stores its own `lm_head.weight` (the dev checkpoint does,
    /// Qwen2.5-0.5B ties it to the embedding).
    pub fn has_separate_lm_head(&self) -> bool {
        self.tensors.tensors().iter().any(|m| m.name == LM_HEAD)
    }
}

pub const EMBED: &str = "model.embed_tokens.weight";
pub const LM_HEAD: &str = "lm_head.weight";
pub const FINAL_NORM: &str = "model.norm.weight";

/// The weight matrices of a decoder layer: the one place their Hugging Face names
/// (`model.layers.{l}.self_attn.q_proj.weight`, ...) are built and parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerTensor {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl LayerTensor {
    pub const ALL: [LayerTensor; 7] = [
        LayerTensor::QProj,
        LayerTensor::KProj,
        LayerTensor::VProj,
        LayerTensor::OProj,
        LayerTensor::GateProj,
        LayerTensor::UpProj,
        LayerTensor::DownProj,
    ];

    /// The name inside `model.layers.{l}.`.
    fn suffix(self) -> &'static str {
        match self {
            LayerTensor::QProj => "self_attn.q_proj.weight",
            LayerTensor::KProj => "self_attn.k_proj.weight",
            LayerTensor::VProj => "self_attn.v_proj.weight",
            LayerTensor::OProj => "self_attn.o_proj.weight",
            LayerTensor::GateProj => "mlp.gate_proj.weight",
            LayerTensor::UpProj => "mlp.up_proj.weight",
            LayerTensor::DownProj => "mlp.down_proj.weight",
        }
    }

    /// Its Hugging Face name in layer `layer`.
    pub fn name(self, layer: usize) -> String {
        format!("model.layers.{layer}.{}", self.suffix())
    }

    /// The layer and matrix a Hugging Face name stands for, if it is a layer's matrix.
    pub fn parse(name: &str) -> Option<(usize, LayerTensor)> {
        let (layer, rest) = name.strip_prefix("model.layers.")?.split_once('.')?;
        let layer = layer.parse().ok()?;
        let t = LayerTensor::ALL.into_iter().find(|t| t.suffix() == rest)?;
        Some((layer, t))
    }
}

/// ‖a − b‖ / ‖b‖ (Frobenius), summed in f64.
pub fn relative_distance(a: &[f32], b: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        diff += (x as f64 - y as f64).powi(2);
        norm += (y as f64).powi(2);
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// A source whose `model.embed_tokens.weight` is the inner source's `lm_head.weight`, and
/// which has no lm_head of its own (see [`Checkpoint::tie_embedding_to_lm_head`]).
struct LmHeadAsEmbedding {
    inner: Box<dyn TensorSource>,
}

impl TensorSource for LmHeadAsEmbedding {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn tensors(&self) -> Vec<TensorMeta> {
        let metas = self.inner.tensors();
        let head = metas.iter().find(|m| m.name == LM_HEAD).cloned();
        metas
            .into_iter()
            .filter(|m| m.name != LM_HEAD)
            .map(|m| match &head {
                Some(head) if m.name == EMBED => TensorMeta {
                    name: EMBED.to_string(),
                    ..head.clone()
                },
                _ => m,
            })
            .collect()
    }

    fn load_f32(&self, name: &str) -> Result<Vec<f32>> {
        match name {
            EMBED => self.inner.load_f32(LM_HEAD),
            LM_HEAD => Err(LoadError::tensor(
                self.path(),
                name,
                "stored once, as the embedding (--tie-embeddings)",
            )),
            _ => self.inner.load_f32(name),
        }
    }
}

#[cfg(test)]
mod layer_tensor_tests {
    use super::LayerTensor;

    #[test]
    fn names_round_trip() {
        for t in LayerTensor::ALL {
            assert_eq!(LayerTensor::parse(&t.name(17)), Some((17, t)));
        }
        assert_eq!(
            LayerTensor::QProj.name(0),
            "model.layers.0.self_attn.q_proj.weight"
        );
        assert_eq!(
            LayerTensor::parse("model.layers.0.self_attn.q_proj.bias"),
            None
        );
        assert_eq!(
            LayerTensor::parse("model.layers.x.mlp.up_proj.weight"),
            None
        );
        assert_eq!(LayerTensor::parse("model.embed_tokens.weight"), None);
    }
}
