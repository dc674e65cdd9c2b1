//! The compiled model: the code generated for one model (see build.rs) behind the runtime's
//! [`Model`] interface.

use qwenc_runtime::model::{ForwardError, KvCache, LogitsFor, Model, ModelInfo, Segment};
use qwenc_runtime::tokenizer::{Tokenizer, TokenizerSpec};
use qwenc_runtime::weights::Weights;

/// The generated code: constants, packed-weight offsets, kernels and `forward`.
#[allow(clippy::all, dead_code, unused_imports)]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/model.rs"));
}

/// The same model compiled in other schemes, for tests (`QWENC_VARIANTS`; the tiny model
/// always has a set): see build.rs.
#[allow(clippy::all, dead_code, unused_imports)]
pub mod variants {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/variants.rs"));
}

/// One compiled variant: its generated `forward` and the weights file it needs.
pub struct Variant {
    pub schemes: &'static str,
    /// File name next to the executable.
    pub weights_file: &'static str,
    pub model_name: &'static str,
    pub weights_len: u64,
    pub weights_hash: u64,
    pub layers: usize,
    pub kv_dim: usize,
    pub vocab: usize,
    /// The kernel backend it was compiled for.
    pub backend: &'static str,
    /// Whether this CPU runs that backend (Err says what is missing).
    pub check_cpu: fn() -> Result<(), String>,
    pub forward: Forward,
    pub forward_segments: ForwardSegments,
    pub copy_kv_prefix: CopyKvPrefix,
}

/// The generated `forward`: one sequence's tokens on its cache.
pub type Forward = fn(&[u8], &mut KvCache, &[u32], LogitsFor) -> Result<Vec<f32>, ForwardError>;

/// The generated `forward_segments`: several sequences in one pass over the weights.
pub type ForwardSegments =
    fn(&[u8], &mut [Segment<'_>], &mut [Vec<f32>]) -> Result<(), ForwardError>;

/// The generated `copy_kv_prefix`: positions `0..len` of one cache into another.
pub type CopyKvPrefix = fn(&KvCache, &mut KvCache, usize);

impl Variant {
    /// The variant with exactly these schemes, if this build has it.
    pub fn find(schemes: &str) -> Option<&'static Variant> {
        variants::ALL.iter().find(|v| v.schemes == schemes)
    }

    /// Open its weights file next to `executable` (e.g. `env!("CARGO_BIN_EXE_qwen")`).
    pub fn open_weights(
        &self,
        executable: &std::path::Path,
    ) -> Result<Weights, qwenc_runtime::weights::WeightsError> {
        Weights::open(
            &executable.with_file_name(self.weights_file),
            self.weights_len,
            self.weights_hash,
        )
    }
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
        generated::check_cpu()?;
        let weights = Weights::open_default(generated::WEIGHTS_LEN, generated::WEIGHTS_HASH)?;
        Self::with_weights(weights)
    }

    pub fn with_weights(weights: Weights) -> Result<CompiledModel, Box<dyn std::error::Error>> {
        use generated as g;
        g::check_cpu()?;
        let tokenizer = Tokenizer::from_spec(TokenizerSpec::from_tokenizer_json(TOKENIZER_JSON)?)?;
        let info = ModelInfo {
            name: g::MODEL_NAME.to_string(),
            scheme: g::SCHEMES.to_string(),
            backend: match g::matrix_unit_status() {
                Some(status) => format!("{} (AMX prefill: {status})", g::BACKEND),
                None => g::BACKEND.to_string(),
            },
            weight_bytes: g::WEIGHTS_LEN,
            vocab_size: g::VOCAB,
            hidden_size: g::HIDDEN,
            num_layers: g::LAYERS,
            num_kv_heads: g::N_KV_HEADS,
            head_dim: g::HEAD_DIM,
            max_context: g::MAX_CONTEXT,
            eos_token_ids: g::EOS_TOKEN_IDS.to_vec(),
        };
        Ok(CompiledModel {
            weights,
            tokenizer,
            info,
        })
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
        KvCache::new(
            generated::LAYERS,
            capacity.min(generated::MAX_CONTEXT),
            generated::KV_DIM,
        )
    }
    fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
    ) -> Result<Vec<f32>, ForwardError> {
        generated::forward(self.weights.bytes(), cache, tokens, logits)
    }
    fn forward_into(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
        out: &mut Vec<f32>,
    ) -> Result<(), ForwardError> {
        generated::forward_into(self.weights.bytes(), cache, tokens, logits, out)
    }
    fn forward_segments(
        &self,
        segments: &mut [Segment<'_>],
        logits: &mut [Vec<f32>],
    ) -> Result<(), ForwardError> {
        generated::forward_segments(self.weights.bytes(), segments, logits)
    }
    fn copy_kv_prefix(&self, src: &KvCache, dst: &mut KvCache, len: usize) {
        generated::copy_kv_prefix(src, dst, len)
    }
}
