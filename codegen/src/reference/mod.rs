//! The f32 reference model: weights loaded by name, a readable forward pass, greedy decoding,
//! and the logits `qwen kl` compares a compiled model with ([`kl`]).

mod forward;
pub mod kl;
mod weights;

pub use forward::{dot, linear, rms_norm, rope, silu, softmax, KvCache, Observer, Tap};
pub use weights::{LayerWeights, ReferenceWeights};

use qwenc_runtime::model::{ForwardError, LogitsFor};

/// Index of the largest value (the first one on ties, as `torch.argmax`).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// log Σ exp(x), in f64 for accuracy (the runtime's, which the reference-logits files use).
pub use qwenc_runtime::reference_logits::logsumexp;

/// What greedy decoding does with end-of-sequence tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Eos {
    /// Stop after generating any of these.
    StopAt(Vec<u32>),
    /// Never pick these, so exactly `max_new` tokens come out (transformers'
    /// `min_new_tokens = max_new_tokens`, which the fixtures were made with).
    Suppress(Vec<u32>),
}

impl ReferenceWeights {
    /// Greedy continuation of `prompt`: up to `max_new` tokens. `on_token` sees each new token
    /// as it is chosen.
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        max_new: usize,
        eos: &Eos,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Vec<u32>, ForwardError> {
        let mut cache = KvCache::new(self.config.num_hidden_layers);
        let mut out = Vec::new();
        if max_new == 0 {
            return Ok(out);
        }
        let mut logits = self.forward(prompt, &mut cache, LogitsFor::Last)?;
        loop {
            if let Eos::Suppress(ids) = eos {
                for &id in ids {
                    if let Some(l) = logits[0].get_mut(id as usize) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
            let next = argmax(&logits[0]);
            out.push(next);
            on_token(next);
            let stop = matches!(eos, Eos::StopAt(ids) if ids.contains(&next));
            if out.len() >= max_new || stop {
                return Ok(out);
            }
            logits = self.forward(&[next], &mut cache, LogitsFor::Last)?;
        }
    }
}
