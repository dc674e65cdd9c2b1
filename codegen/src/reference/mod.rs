//! The f32 reference model: weights loaded by name, a readable forward pass, greedy decoding.

mod forward;
mod weights;

pub use forward::{dot, linear, rms_norm, rope, silu, softmax, ForwardError, KvCache, Logits};
pub use weights::{LayerWeights, ReferenceWeights};

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

/// log Σ exp(x), in f64 for accuracy.
pub fn logsumexp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

impl ReferenceWeights {
    /// Greedy continuation of `prompt`: up to `max_new` tokens, stopping after any of `stop`.
    /// `on_token` sees each new token as it is chosen.
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        max_new: usize,
        stop: &[u32],
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Vec<u32>, ForwardError> {
        let mut cache = KvCache::new(self.config.num_hidden_layers);
        let mut out = Vec::new();
        if max_new == 0 {
            return Ok(out);
        }
        let mut logits = self.forward(prompt, &mut cache, Logits::Last)?;
        loop {
            let next = argmax(&logits[0]);
            out.push(next);
            on_token(next);
            if out.len() >= max_new || stop.contains(&next) {
                return Ok(out);
            }
            logits = self.forward(&[next], &mut cache, Logits::Last)?;
        }
    }
}
