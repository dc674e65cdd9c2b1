//! OpenAI's logit adjustments, applied to a row of logits before the sampler sees it:
//! `logit_bias` adds a fixed amount to chosen ids, and `frequency_penalty` / `presence_penalty`
//! push down the ids already generated, with OpenAI's formula
//! `logit[j] -= count[j] · frequency_penalty + (count[j] > 0) · presence_penalty`
//! (the counts are over the generated tokens, not the prompt, as in OpenAI's and vLLM's
//! definition).

use std::collections::HashMap;

/// The adjustments of one request; the default changes nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Penalties {
    pub frequency: f32,
    pub presence: f32,
    /// `(id, bias)`, each id once.
    pub logit_bias: Vec<(u32, f32)>,
}

/// How many times each id was generated.
#[derive(Clone, Debug, Default)]
pub struct TokenCounts(HashMap<u32, u32>);

impl TokenCounts {
    pub fn add(&mut self, id: u32) {
        *self.0.entry(id).or_insert(0) += 1;
    }
}

impl Penalties {
    /// True when [`Penalties::apply`] would change nothing.
    pub fn is_none(&self) -> bool {
        self.frequency == 0.0 && self.presence == 0.0 && self.logit_bias.is_empty()
    }

    /// Adjusts `logits` (one row over the vocabulary) given the ids generated so far.
    pub fn apply(&self, logits: &mut [f32], generated: &TokenCounts) {
        for &(id, bias) in &self.logit_bias {
            if let Some(x) = logits.get_mut(id as usize) {
                *x += bias;
            }
        }
        if self.frequency == 0.0 && self.presence == 0.0 {
            return;
        }
        for (&id, &count) in &generated.0 {
            if let Some(x) = logits.get_mut(id as usize) {
                *x -= count as f32 * self.frequency + self.presence;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_formula() {
        let p = Penalties {
            frequency: 0.5,
            presence: 1.0,
            logit_bias: vec![(0, 100.0), (3, -2.0)],
        };
        let mut counts = TokenCounts::default();
        for id in [1, 1, 1, 3] {
            counts.add(id);
        }
        let mut row = vec![0.0f32; 5];
        p.apply(&mut row, &counts);
        // id 1: 3 × 0.5 + 1; id 3: bias −2, then 1 × 0.5 + 1.
        assert_eq!(row, vec![100.0, -2.5, 0.0, -3.5, 0.0]);
        assert!(Penalties::default().is_none());
        assert!(!p.is_none());
    }
}
