//! A fake [`Model`] for tests of the generation loop, the sampler and the CLI, without a
//! compiled model; and what the workspace's tests share besides: the byte-level ChatML
//! tokenizer builder ([`byte_level_chatml`], also that of codegen's tiny synthetic
//! checkpoint) and deterministic noise ([`lcg_noise`]).
//!
//! The tokenizer is real: a byte-level vocabulary (256 byte tokens, a few merges) and the
//! three ChatML special tokens. The "model" has one layer with `kv_dim = 1`, and it stores
//! each token id in the key slot of its position, so the cache holds the sequence and the
//! logits can depend on all of it ([`FakeModel::cached_tokens`] reads it back). It honours
//! the cache length, the cache capacity and `max_context` as a compiled model does.
//!
//! Logits for the token after a sequence whose last token is `t` at position `p`:
//! deterministic noise in `[-1, 1)` from `(t, p, id)`, plus a peak of +8 on one printable
//! token chosen from `(t, p)`; so greedy decoding follows a fixed table. Options:
//! - [`with_eos_at`](FakeModel::with_eos_at): once the sequence has `len` tokens the peak
//!   moves to `<|endoftext|>` (the eos);
//! - [`with_reply`](FakeModel::with_reply): after `<|im_start|>assistant\n` the peaks spell
//!   the given ids, then `<|im_end|>`.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::{ForwardError, KvCache, LogitsFor, Model, ModelInfo};
use crate::tokenizer::{Tokenizer, TokenizerSpec};

/// Merges of the fake vocabulary (ids 256.. in this order).
const MERGES: [(&str, &str); 14] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("e", "r"),
    ("a", "n"),
    ("o", "n"),
    ("Ġ", "a"),
    ("Ġ", "s"),
    ("r", "e"),
    ("l", "l"),
    ("Ġ", "w"),
    ("o", "r"),
    ("Ġw", "or"),
];

/// `<|endoftext|>`: the fake model's eos.
pub const ENDOFTEXT: u32 = 256 + MERGES.len() as u32;
/// `<|im_start|>`.
pub const IM_START: u32 = ENDOFTEXT + 1;
/// `<|im_end|>`.
pub const IM_END: u32 = ENDOFTEXT + 2;
/// Size of the fake vocabulary.
pub const VOCAB_SIZE: usize = IM_END as usize + 1;

/// The fake model's tokenizer: bytes, a few merges, and the three ChatML special tokens.
pub fn tokenizer_spec() -> TokenizerSpec {
    TokenizerSpec::byte_level_chatml(&MERGES, ENDOFTEXT)
}

/// One step of the 64-bit linear congruential generator behind [`lcg_noise`] (Knuth's MMIX
/// constants).
pub fn lcg_step(s: u64) -> u64 {
    s.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}

/// `n` deterministic pseudo-random values uniform in `[-1, 1)`: the top 24 bits of the
/// successive [`lcg_step`] states after `seed`. Test data for the quantizers and the KL tests.
pub fn lcg_noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = lcg_step(s);
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A deterministic stand-in for a compiled model (see the module documentation).
pub struct FakeModel {
    info: ModelInfo,
    tokenizer: Tokenizer,
    /// Ids the table peaks on: printable ASCII bytes and the merges.
    printable: Vec<u32>,
    eos_at: Option<usize>,
    reply: Option<Vec<u32>>,
    /// `<|im_start|>assistant\n` as ids.
    assistant_marker: Vec<u32>,
    forward_calls: AtomicUsize,
    forwarded_tokens: AtomicUsize,
}

impl Default for FakeModel {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeModel {
    /// A fake model with a context of 256 tokens and `<|endoftext|>` as its eos.
    pub fn new() -> FakeModel {
        let tokenizer = Tokenizer::from_spec(tokenizer_spec()).expect("the fake spec is valid");
        let assistant_marker = tokenizer.encode("<|im_start|>assistant\n");
        let printable = (b' ' as u32..=b'~' as u32).chain(256..ENDOFTEXT).collect();
        FakeModel {
            info: ModelInfo {
                name: "fake".to_string(),
                scheme: "f32".to_string(),
                backend: "fake".to_string(),
                weight_bytes: 0,
                vocab_size: VOCAB_SIZE,
                hidden_size: 8,
                num_layers: 1,
                num_kv_heads: 1,
                head_dim: 1,
                max_context: 256,
                eos_token_ids: vec![ENDOFTEXT],
            },
            tokenizer,
            printable,
            eos_at: None,
            reply: None,
            assistant_marker,
            forward_calls: AtomicUsize::new(0),
            forwarded_tokens: AtomicUsize::new(0),
        }
    }

    pub fn with_max_context(mut self, max_context: usize) -> Self {
        self.info.max_context = max_context;
        self
    }

    /// Replaces the eos ids of [`ModelInfo`] (the logits still peak on `<|endoftext|>`).
    pub fn with_eos_ids(mut self, ids: Vec<u32>) -> Self {
        self.info.eos_token_ids = ids;
        self
    }

    /// Once the sequence holds `len` tokens, the most likely next token is `<|endoftext|>`.
    pub fn with_eos_at(mut self, len: usize) -> Self {
        self.eos_at = Some(len);
        self
    }

    /// After each `<|im_start|>assistant\n`, the most likely tokens are `ids`, then `<|im_end|>`.
    pub fn with_reply(mut self, ids: Vec<u32>) -> Self {
        self.reply = Some(ids);
        self
    }

    /// [`with_reply`](Self::with_reply) with the tokens of `text`.
    pub fn with_reply_text(self, text: &str) -> Self {
        let ids = self.tokenizer.encode(text);
        self.with_reply(ids)
    }

    /// Number of `forward` calls that did work (refused calls are not counted).
    pub fn forward_calls(&self) -> usize {
        self.forward_calls.load(Ordering::Relaxed)
    }

    /// Number of tokens run through `forward` in all.
    pub fn forwarded_tokens(&self) -> usize {
        self.forwarded_tokens.load(Ordering::Relaxed)
    }

    /// The token ids a cache made by this model holds, positions `0..cache.len`.
    pub fn cached_tokens(cache: &KvCache) -> Vec<u32> {
        cache.keys[..cache.len].iter().map(|&k| k as u32).collect()
    }

    /// The logits for the token after `seq` (not empty).
    pub fn logits_after(&self, seq: &[u32]) -> Vec<f32> {
        let p = seq.len() - 1;
        let t = seq[p];
        let key = (t as u64) << 32 | p as u64;
        let mut logits: Vec<f32> = (0..VOCAB_SIZE as u64)
            .map(|v| {
                let h = mix(key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ mix(v + 1));
                (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        let peak = self.peak_after(seq);
        logits[peak as usize] += 8.0;
        logits
    }

    /// The greedy choice after `seq`.
    pub fn peak_after(&self, seq: &[u32]) -> u32 {
        let p = seq.len() - 1;
        if let Some(reply) = &self.reply {
            let m = self.assistant_marker.len();
            if let Some(start) = (0..seq.len().saturating_sub(m - 1))
                .rev()
                .find(|&s| seq[s..s + m] == self.assistant_marker[..])
            {
                let k = p + 1 - (start + m);
                return reply.get(k).copied().unwrap_or(IM_END);
            }
        }
        if self.eos_at.is_some_and(|len| seq.len() >= len) {
            return ENDOFTEXT;
        }
        let key = (seq[p] as u64) << 32 | p as u64;
        self.printable[(mix(key ^ 0x5151) % self.printable.len() as u64) as usize]
    }
}

impl Model for FakeModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(1, capacity.min(self.info.max_context), 1)
    }

    fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
    ) -> Result<Vec<f32>, ForwardError> {
        for (i, &id) in tokens.iter().enumerate() {
            if id as usize >= VOCAB_SIZE {
                return Err(ForwardError::TokenOutOfRange {
                    id,
                    pos: cache.len + i,
                    vocab: VOCAB_SIZE,
                });
            }
        }
        let needed = cache.len + tokens.len();
        let max = cache.capacity.min(self.info.max_context);
        if needed > max {
            return Err(ForwardError::ContextOverflow { needed, max });
        }
        self.forward_calls.fetch_add(1, Ordering::Relaxed);
        self.forwarded_tokens
            .fetch_add(tokens.len(), Ordering::Relaxed);
        let start = cache.len;
        for (i, &id) in tokens.iter().enumerate() {
            cache.keys[start + i] = id as f32;
            cache.values[start + i] = (start + i) as f32;
        }
        cache.len = needed;
        let seq = Self::cached_tokens(cache);
        let rows: Vec<usize> = match logits {
            LogitsFor::None => vec![],
            LogitsFor::Last if tokens.is_empty() => vec![],
            LogitsFor::Last => vec![needed],
            LogitsFor::All => (start + 1..=needed).collect(),
        };
        Ok(rows
            .into_iter()
            .flat_map(|end| self.logits_after(&seq[..end]))
            .collect())
    }
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series where it converges.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum: f64 = G[0] + (1..9).map(|i| G[i] / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The upper regularized incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let prefix = (a * x.ln() - x - ln_gamma(a)).exp();
    if x < a + 1.0 {
        // The series of P(a, x).
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        while term.abs() > sum.abs() * 1e-15 {
            n += 1.0;
            term *= x / n;
            sum += term;
        }
        1.0 - sum * prefix
    } else {
        // Lentz's continued fraction of Q(a, x).
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            d = if d.abs() < tiny { tiny } else { d };
            c = b + an / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        prefix * h
    }
}

/// P(X >= `stat`) for X chi-square distributed with `df` degrees of freedom: the p-value of
/// a chi-square statistic.
pub fn chi_square_p_value(stat: f64, df: usize) -> f64 {
    gamma_q(df as f64 / 2.0, stat / 2.0)
}

/// The chi-square statistic of `observed` counts against `expected` probabilities (summing
/// to 1) and its degrees of freedom. Cells expected fewer than 5 times are pooled into one
/// (the usual validity rule); a cell of probability 0 that was observed panics.
pub fn chi_square(observed: &[usize], expected: &[f64]) -> (f64, usize) {
    assert_eq!(observed.len(), expected.len());
    let n: usize = observed.iter().sum();
    let (mut stat, mut cells, mut pooled_e, mut pooled_o) = (0.0, 0usize, 0.0, 0.0);
    for (i, (&o, &p)) in observed.iter().zip(expected).enumerate() {
        let (o, e) = (o as f64, p * n as f64);
        if p == 0.0 {
            assert!(
                o == 0.0,
                "cell {i} has probability 0 and was observed {o} times"
            );
        } else if e >= 5.0 {
            stat += (o - e) * (o - e) / e;
            cells += 1;
        } else {
            pooled_e += e;
            pooled_o += o;
        }
    }
    if pooled_e > 0.0 {
        stat += (pooled_o - pooled_e) * (pooled_o - pooled_e) / pooled_e;
        cells += 1;
    }
    (stat, cells.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi_square_p_values_match_the_tables() {
        // Critical values at p = 0.001 (and one at 0.05) from the standard tables.
        for (stat, df, p) in [
            (10.828, 1, 0.001),
            (13.816, 2, 0.001),
            (29.588, 10, 0.001),
            (45.315, 20, 0.001),
            (3.841, 1, 0.05),
            (124.342, 100, 0.05),
        ] {
            let got = chi_square_p_value(stat, df);
            assert!((got - p).abs() < p * 1e-3, "df {df}: {got} vs {p}");
        }
        let (stat, df) = chi_square(&[10, 20, 30, 0, 1], &[0.1, 0.2, 0.3, 0.38, 0.02]);
        assert_eq!(df, 4);
        // 61 draws: expected 6.1, 12.2, 18.3, 23.18 and 1.22 (pooled alone: under 5).
        let want: f64 = [
            (10.0, 6.1),
            (20.0, 12.2),
            (30.0, 18.3),
            (0.0, 23.18),
            (1.0, 1.22),
        ]
        .iter()
        .map(|(o, e): &(f64, f64)| (o - e) * (o - e) / e)
        .sum();
        assert!((stat - want).abs() < 1e-9, "{stat} vs {want}");
    }

    #[test]
    fn tokenizer_and_specials() {
        let m = FakeModel::new();
        let t = m.tokenizer();
        assert_eq!(t.token_to_id("<|im_end|>"), Some(IM_END));
        let ids = t.encode("the world<|endoftext|>");
        assert_eq!(t.decode(&ids), "the world<|endoftext|>");
        assert_eq!(*ids.last().unwrap(), ENDOFTEXT);
        assert!(ids.len() < 10, "{ids:?}");
    }

    #[test]
    fn forward_fills_the_cache_and_honours_limits() {
        let m = FakeModel::new().with_max_context(8);
        let mut cache = m.new_cache(100);
        assert_eq!(cache.capacity, 8);
        let all = m.forward(&mut cache, &[1, 2, 3], LogitsFor::All).unwrap();
        assert_eq!(all.len(), 3 * VOCAB_SIZE);
        assert_eq!(all[2 * VOCAB_SIZE..], m.logits_after(&[1, 2, 3])[..]);
        let last = m.forward(&mut cache, &[4], LogitsFor::Last).unwrap();
        assert_eq!(last, m.logits_after(&[1, 2, 3, 4]));
        assert_eq!(FakeModel::cached_tokens(&cache), [1, 2, 3, 4]);
        assert_eq!(
            m.forward(&mut cache, &[1; 5], LogitsFor::Last),
            Err(ForwardError::ContextOverflow { needed: 9, max: 8 })
        );
        assert_eq!(
            m.forward(&mut cache, &[1, 9999], LogitsFor::Last),
            Err(ForwardError::TokenOutOfRange {
                id: 9999,
                pos: 5,
                vocab: VOCAB_SIZE
            })
        );
        assert_eq!(cache.len, 4);
        assert_eq!(m.forward_calls(), 2);
        assert_eq!(crate::sampler::argmax(&last), m.peak_after(&[1, 2, 3, 4]));
    }
}
