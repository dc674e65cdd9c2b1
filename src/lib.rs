//! The compiled model: the code generated for one model (see build.rs) behind the runtime's
//! [`Model`] interface.

use qwenc_runtime::model::{ForwardError, KvCache, LogitsFor, Model, ModelInfo};
use qwenc_runtime::tokenizer::{Tokenizer, TokenizerSpec};
use qwenc_runtime::weights::Weights;

/// The generated code: constants, packed-weight offsets, kernels and `forward`.
#[allow(clippy::all, dead_code, unused_imports)]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

/// The tiny synthetic model compiled in every scheme (built only without `QWENC_MODEL`).
#[cfg(qwenc_tiny)]
#[allow(clippy::all, dead_code, unused_imports)]
pub mod tiny_variants {
    include!(concat!(env!("OUT_DIR"), "/variants.rs"));
}

const TOKENIZER_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/tokenizer.json"));

pub struct CompiledModel {
    weights: Weights,
    tokenizer: Tokenizer,
    info: ModelInfo,
}

impl CompiledModel {
    /// Open and verify the weights file (`QWEN_WEIGHTS`, else `<executable>.weights`) and
    /// build the tokenizer.
    pub fn load() -> Result<CompiledModel, Box<dyn std::error::Error>> {
        let weights = Weights::open_default(generated::WEIGHTS_LEN, generated::WEIGHTS_HASH)?;
        Self::with_weights(weights)
    }

    pub fn with_weights(weights: Weights) -> Result<CompiledModel, Box<dyn std::error::Error>> {
        use generated as g;
        let tokenizer = Tokenizer::from_spec(TokenizerSpec::from_tokenizer_json(TOKENIZER_JSON)?)?;
        let info = ModelInfo {
            name: g::MODEL_NAME.to_string(),
            scheme: g::SCHEMES.to_string(),
            backend: g::BACKEND.to_string(),
            weight_bytes: g::WEIGHTS_LEN,
            vocab_size: g::VOCAB,
            hidden_size: g::HIDDEN,
            num_layers: g::LAYERS,
            num_kv_heads: g::N_KV_HEADS,
            head_dim: g::HEAD_DIM,
            max_context: g::MAX_CONTEXT,
            eos_token_ids: g::EOS_TOKEN_IDS.to_vec(),
        };
        Ok(CompiledModel { weights, tokenizer, info })
    }
}

impl Model for CompiledModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(generated::LAYERS, capacity.min(generated::MAX_CONTEXT), generated::KV_DIM)
    }
    fn forward(&self, cache: &mut KvCache, tokens: &[u32], logits: LogitsFor) -> Result<Vec<f32>, ForwardError> {
        generated::forward(self.weights.bytes(), cache, tokens, logits)
    }
}
