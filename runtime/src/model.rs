//! The interface between the runtime and a compiled model: the generated code implements
//! [`Model`]; the CLI, generation loop, bench and server use only this.

use crate::tokenizer::Tokenizer;

/// What `info` prints and what every JSON report carries.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    /// Where the model came from (the compressed directory's name).
    pub name: String,
    /// Quantization scheme per tensor class, e.g. `attn=w4g32 mlp=w4g32 embed=w8 lm_head=w8`.
    pub scheme: String,
    /// Kernel backend compiled in: `scalar`, `x86-avx2`, `x86-avx512`, `aarch64-neon`, ...
    pub backend: String,
    /// Bytes of packed weights the model reads.
    pub weight_bytes: u64,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Longest sequence (prompt + generated) the model accepts.
    pub max_context: usize,
    /// Generation stops after any of these.
    pub eos_token_ids: Vec<u32>,
}

/// Tokens per forward pass when a long input is split (prefill, scoring). Each pass holds
/// activations for its tokens (~110 kB each on Qwen2.5-0.5B) and reads every weight once.
/// Measured on the 560-token AICAS prompt (w4g32, AVX-512 + AMX, 2 threads, back to back):
/// 128 gave prefill 648–696 tok/s and peak RSS 496 MB, one pass 567–600 tok/s and 549 MB;
/// 64 and 96 were no faster (the activations of a pass stay in cache either way).
pub const DEFAULT_PREFILL_CHUNK: usize = 128;

/// [`DEFAULT_PREFILL_CHUNK`], or `QWENC_PREFILL_CHUNK` when set to a positive integer (a
/// malformed value is reported once and ignored).
pub fn prefill_chunk() -> usize {
    static CHUNK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CHUNK.get_or_init(|| match std::env::var("QWENC_PREFILL_CHUNK") {
        Err(_) => DEFAULT_PREFILL_CHUNK,
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!(
                    "warning: QWENC_PREFILL_CHUNK={v:?} is not a positive integer; using {DEFAULT_PREFILL_CHUNK}"
                );
                DEFAULT_PREFILL_CHUNK
            }
        },
    })
}

/// Which positions of a forward pass need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsFor {
    /// None (a prompt prefilled for later tokens, a chunk of a longer input).
    None,
    /// Only the last position (generation: the lm_head runs once).
    Last,
    /// Every position (scoring, verifying drafted tokens).
    All,
}

/// One sequence's share of a multi-sequence forward pass ([`Model::forward_segments`]): its
/// `tokens` run at positions `cache.len..` of its own `cache`.
pub struct Segment<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub logits_for: LogitsFor,
}

/// Whether `tokens` may run at positions `cache.len..`: every id inside a vocabulary of
/// `vocab`, and the positions within the cache's capacity and `max_context`.
pub fn check_tokens(
    cache: &KvCache,
    tokens: &[u32],
    vocab: usize,
    max_context: usize,
) -> Result<(), ForwardError> {
    let (start, n) = (cache.len, tokens.len());
    let max = cache.capacity.min(max_context);
    if start + n > max {
        return Err(ForwardError::ContextOverflow {
            needed: start + n,
            max,
        });
    }
    match tokens.iter().position(|&id| id as usize >= vocab) {
        Some(i) => Err(ForwardError::TokenOutOfRange {
            id: tokens[i],
            pos: start + i,
            vocab,
        }),
        None => Ok(()),
    }
}

/// Why a forward pass was refused; the session is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("token id {id} at position {pos} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, pos: usize, vocab: usize },
    #[error("{needed} positions exceed the context of {max} tokens")]
    ContextOverflow { needed: usize, max: usize },
}

/// Keys and values of every layer, f32. Each layer owns `layer_stride` floats of each: room
/// for `capacity` positions rounded up to a multiple of [`KV_TILE`], so that a model may lay
/// its keys out in tiles of [`KV_TILE`] positions. [`KvCache::layer_keys`] and
/// [`KvCache::layer_values`] describe the plain `[position][kv_dim]` layout of models that
/// keep it (the generated code documents its own).
pub struct KvCache {
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
    /// Positions filled.
    pub len: usize,
    pub capacity: usize,
    pub layer_stride: usize,
    pub kv_dim: usize,
}

/// Positions per key tile: the cache has room for a whole number of them per layer.
pub const KV_TILE: usize = 16;

impl KvCache {
    pub fn new(num_layers: usize, capacity: usize, kv_dim: usize) -> Self {
        let layer_stride = capacity.div_ceil(KV_TILE) * KV_TILE * kv_dim;
        KvCache {
            keys: vec![0.0; num_layers * layer_stride],
            values: vec![0.0; num_layers * layer_stride],
            len: 0,
            capacity,
            layer_stride,
            kv_dim,
        }
    }

    /// Keep the first `len` positions (to reuse a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Keys of `layer` for positions `0..upto`: `[upto, kv_dim]`.
    pub fn layer_keys(&self, layer: usize, upto: usize) -> &[f32] {
        &self.keys[layer * self.layer_stride..][..upto * self.kv_dim]
    }
    pub fn layer_values(&self, layer: usize, upto: usize) -> &[f32] {
        &self.values[layer * self.layer_stride..][..upto * self.kv_dim]
    }
}

/// A compiled model: weights, kernels and tokenizer.
pub trait Model: Sync {
    fn info(&self) -> &ModelInfo;
    fn tokenizer(&self) -> &Tokenizer;
    /// A KV cache for sequences of up to `capacity` positions (at most `max_context`).
    fn new_cache(&self, capacity: usize) -> KvCache;
    /// Run `tokens` at positions `cache.len..`, extend the cache, and return the logits
    /// `[rows, vocab]` of the requested positions.
    fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
    ) -> Result<Vec<f32>, ForwardError>;
    /// [`Model::forward`] into `out` (its contents replaced), so that a decode loop reuses one
    /// buffer.
    fn forward_into(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
        out: &mut Vec<f32>,
    ) -> Result<(), ForwardError> {
        *out = self.forward(cache, tokens, logits)?;
        Ok(())
    }
    /// Copies positions `0..len` of `src` (a cache of this model holding at least `len`)
    /// into `dst` (one with room for them) and sets `dst.len = len`: a cached prefix reused by
    /// another sequence. Caches of different capacities may lay positions out differently,
    /// so the model does it; this default is for the plain `[position][kv_dim]` layout of
    /// [`KvCache::layer_keys`].
    fn copy_kv_prefix(&self, src: &KvCache, dst: &mut KvCache, len: usize) {
        assert!(
            len <= src.len && len <= dst.capacity,
            "copy_kv_prefix: {len} positions"
        );
        let layers = src.keys.len() / src.layer_stride.max(1);
        for l in 0..layers {
            let n = len * src.kv_dim;
            let at = l * dst.layer_stride;
            dst.keys[at..][..n].copy_from_slice(src.layer_keys(l, len));
            dst.values[at..][..n].copy_from_slice(src.layer_values(l, len));
        }
        dst.len = len;
    }
    /// Several sequences at once: segment `i`'s tokens run on its own cache, and `logits[i]`
    /// (replaced) receives its logits as its `logits_for` asks. Each segment's logits are
    /// bit-identical to running it alone with [`Model::forward`]. When a segment is refused,
    /// no cache changes. The compiled model runs every segment's rows in one pass over the
    /// weights; this default (for models without one) runs them one after another.
    fn forward_segments(
        &self,
        segments: &mut [Segment<'_>],
        logits: &mut [Vec<f32>],
    ) -> Result<(), ForwardError> {
        assert_eq!(
            segments.len(),
            logits.len(),
            "one logits buffer per segment"
        );
        let (vocab, max) = (self.info().vocab_size, self.info().max_context);
        for s in segments.iter() {
            check_tokens(s.cache, s.tokens, vocab, max)?;
        }
        for (s, out) in segments.iter_mut().zip(logits) {
            self.forward_into(s.cache, s.tokens, s.logits_for, out)?;
        }
        Ok(())
    }
}
