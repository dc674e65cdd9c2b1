//! Choosing the next token from a row of logits.
//!
//! Greedy decoding by default; with `temperature > 0` the sampler draws from
//! `softmax(logits / temperature)` restricted, in this order (transformers' order of logits
//! warpers), to the `top_k` largest logits and then to the nucleus of probability `top_p`.
//! The random numbers come from a small seeded generator ([`Rng`]): the same seed and the
//! same logits give the same tokens, on every platform.
//!
//! Ordering is total and deterministic: a larger logit first, and among equal logits the
//! lower id first. So greedy picks the lowest id among tied maxima (as `torch.argmax`), and
//! `top_k = 1` or a tiny `top_p` pick the same token as greedy.
//!
//! NaN logits are never chosen (they are treated as `-inf`). If no id is eligible at all
//! (every logit NaN or `-inf`, or every id suppressed) the sampler returns the lowest id that
//! is not suppressed (0 if all are), as `argmax` of an all `-inf` row gives 0.

use std::cmp::Ordering;

/// How to choose tokens. The default is greedy.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Divides the logits before the softmax; `0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `0` means no limit.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`;
    /// `1` means no limit. Must be in `(0, 1]`.
    pub top_p: f32,
    /// Seed of the random numbers (sampling only).
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// A sampler configuration that cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SamplerError {
    #[error("temperature must be a finite number >= 0, got {0}")]
    Temperature(f32),
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
}

impl SamplerConfig {
    /// Greedy decoding (the default).
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Sampling at `temperature` with the given seed, no top-k / top-p limit.
    pub fn sampling(temperature: f32, seed: u64) -> Self {
        SamplerConfig {
            temperature,
            seed,
            ..Self::default()
        }
    }

    /// True when the choice is the argmax: `temperature == 0` or `top_k == 1`.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    pub fn validate(&self) -> Result<(), SamplerError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplerError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplerError::TopP(self.top_p));
        }
        Ok(())
    }
}

/// xorshift64* seeded through splitmix64: small, fast, and the same everywhere.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed: nearby seeds give unrelated streams, and the state is never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Index of the largest logit; the lowest index among ties; NaN never wins. 0 for a row with
/// no number above `-inf`.
pub fn argmax(logits: &[f32]) -> u32 {
    argmax_suppressed(logits, &[])
}

/// [`argmax`] over the ids not in `suppress` (as if their logits were `-inf`).
pub fn argmax_suppressed(logits: &[f32], suppress: &[u32]) -> u32 {
    let mut best: Option<(u32, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        // `>` keeps the first of equal maxima and is false for NaN.
        if best.is_none_or(|(_, b)| l > b) && l > f32::NEG_INFINITY {
            if suppress.contains(&(i as u32)) {
                continue;
            }
            best = Some((i as u32, l));
        }
    }
    best.map_or_else(|| first_allowed(logits.len(), suppress), |(i, _)| i)
}

/// The lowest id below `n` that is not suppressed (0 if there is none).
fn first_allowed(n: usize, suppress: &[u32]) -> u32 {
    (0..n as u32).find(|id| !suppress.contains(id)).unwrap_or(0)
}

/// A candidate: (logit, id).
type Cand = (f32, u32);

/// Larger logit first, then lower id first (logits are never NaN here).
fn better(a: &Cand, b: &Cand) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Moves the `m` best candidates of `cands[from..]` to `cands[from..from + m]`, sorted.
fn select_sorted(cands: &mut [Cand], from: usize, m: usize) {
    let rest = &mut cands[from..];
    if m == 0 {
        return;
    }
    if m < rest.len() {
        rest.select_nth_unstable_by(m - 1, better);
    }
    let m = m.min(rest.len());
    rest[..m].sort_unstable_by(better);
}

/// Chooses tokens according to a [`SamplerConfig`]; keeps its random state and scratch
/// buffers between calls.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
    cands: Vec<Cand>,
    weights: Vec<f32>,
    suppress: Vec<u32>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Sampler, SamplerError> {
        config.validate()?;
        Ok(Sampler {
            rng: Rng::new(config.seed),
            config,
            cands: Vec::new(),
            weights: Vec::new(),
            suppress: Vec::new(),
        })
    }

    pub fn greedy() -> Sampler {
        Sampler::new(SamplerConfig::greedy()).expect("the greedy config is valid")
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Chooses a token from one row of logits (`logits.len()` is the vocabulary size).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        self.sample_suppressed(logits, &[])
    }

    /// Like [`sample`](Self::sample), never choosing an id of `suppress` (their logits count
    /// as `-inf`, as transformers' `min_new_tokens` does to EOS).
    pub fn sample_suppressed(&mut self, logits: &[f32], suppress: &[u32]) -> u32 {
        if self.config.is_greedy() {
            return argmax_suppressed(logits, suppress);
        }
        let keep = self.weigh(logits, suppress);
        if keep == 0 {
            return first_allowed(logits.len(), suppress);
        }
        let total: f64 = self.weights[..keep].iter().map(|&w| w as f64).sum();
        let target = self.rng.next_f64() * total;
        let mut cum = 0.0f64;
        for (c, &w) in self.cands[..keep].iter().zip(&self.weights) {
            cum += w as f64;
            if target < cum {
                return c.1;
            }
        }
        // Rounding: the last candidate with a weight.
        self.cands[..keep]
            .iter()
            .zip(&self.weights)
            .rev()
            .find(|(_, &w)| w > 0.0)
            .map_or(self.cands[0].1, |(c, _)| c.1)
    }

    /// The distribution [`sample_suppressed`](Self::sample_suppressed) draws from, sparse:
    /// `out` (replaced) gets `(id, probability)` for every id it can return, probabilities
    /// summing to 1 (ids of probability 0 may appear; no particular order). Greedy gives the
    /// argmax with probability 1. Speculative sampling needs the very distribution the sampler
    /// draws from, so this goes through the same candidate selection; it uses no random number.
    pub fn distribution(&mut self, logits: &[f32], suppress: &[u32], out: &mut Vec<(u32, f64)>) {
        out.clear();
        if self.config.is_greedy() {
            out.push((argmax_suppressed(logits, suppress), 1.0));
            return;
        }
        let keep = self.weigh(logits, suppress);
        let total: f64 = self.weights[..keep].iter().map(|&w| w as f64).sum();
        if keep == 0 || total <= 0.0 {
            // What `sample_suppressed` returns then, always.
            let id = if keep == 0 {
                first_allowed(logits.len(), suppress)
            } else {
                self.cands[0].1
            };
            out.push((id, 1.0));
            return;
        }
        out.extend(
            self.cands[..keep]
                .iter()
                .zip(&self.weights)
                .map(|(c, &w)| (c.1, w as f64 / total)),
        );
    }

    /// The random numbers of this sampler (speculative sampling draws its acceptance tests
    /// from the same stream, so one seed still fixes a whole generation).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// The candidates a sampling draw is made from: `cands[..keep]` with weights
    /// `weights[..keep]` (exp((logit - max) / t), not normalized); returns `keep` (0 when no
    /// id is eligible). Not for greedy configs.
    fn weigh(&mut self, logits: &[f32], suppress: &[u32]) -> usize {
        self.collect(logits, suppress, self.config.top_k);
        let n = self.cands.len();
        self.weights.clear();
        if n == 0 {
            return 0;
        }
        let t = self.config.temperature;
        let top_k = if self.config.top_k == 0 {
            n
        } else {
            self.config.top_k.min(n)
        };
        let top_p = self.config.top_p;

        // `cands[..sorted]` is in order.
        let mut sorted = 0;
        if top_k < n {
            select_sorted(&mut self.cands, 0, top_k);
            self.cands.truncate(top_k);
            sorted = top_k;
        }
        let n = self.cands.len();
        // The largest logit (the first one once sorted).
        let max = self.cands.iter().map(|c| c.0).fold(f32::MIN, f32::max);
        if top_p >= 1.0 {
            // No nucleus: every remaining candidate, in any order.
            self.weights
                .extend(self.cands.iter().map(|c| ((c.0 - max) / t).exp()));
            n
        } else {
            let total: f64 = self
                .cands
                .iter()
                .map(|c| ((c.0 - max) / t).exp() as f64)
                .sum();
            let threshold = top_p as f64 * total;
            // Sort a growing prefix until the nucleus is inside it: the nucleus is usually
            // small, so this avoids sorting the whole vocabulary.
            let mut cum = 0.0f64;
            let mut i = 0;
            loop {
                if i == sorted {
                    let more = if sorted == 0 { 64 } else { sorted * 8 };
                    let m = more.min(n);
                    select_sorted(&mut self.cands, sorted, m - sorted);
                    sorted = m;
                }
                // Token i is kept: the probability of the tokens before it is below top_p.
                let w = ((self.cands[i].0 - max) / t).exp();
                self.weights.push(w);
                cum += w as f64;
                i += 1;
                if cum >= threshold || i == n {
                    break i;
                }
            }
        }
    }

    /// Fills `cands` with the eligible (logit, id): not NaN, not `-inf`, not suppressed.
    /// With `top_k > 0` it may leave out ids that cannot be among the `top_k` best: when
    /// `top_k` is small next to the vocabulary the buffer is cut back to the best `top_k`
    /// whenever it fills, and ids not above the `top_k`-th logit so far are skipped, so the
    /// pass costs one comparison per id.
    fn collect(&mut self, logits: &[f32], suppress: &[u32], top_k: usize) {
        self.suppress.clear();
        self.suppress.extend_from_slice(suppress);
        self.suppress.sort_unstable();
        self.suppress.dedup();
        self.cands.clear();
        let bounded = top_k > 0 && top_k.saturating_mul(8) < logits.len();
        let cap = if bounded {
            (top_k * 4).max(1024)
        } else {
            usize::MAX
        };
        // Only logits above this are kept: an id with an equal logit comes after (a larger
        // id) the kept one, so it ranks lower.
        let mut threshold = f32::NEG_INFINITY;
        let mut start = 0usize;
        let ends = self
            .suppress
            .iter()
            .map(|&s| s as usize)
            .chain(std::iter::once(logits.len()));
        for end in ends {
            let end = end.min(logits.len());
            if end > start {
                for (i, &l) in logits[start..end].iter().enumerate() {
                    if l > threshold {
                        self.cands.push((l.min(f32::MAX), (start + i) as u32));
                        if self.cands.len() >= cap {
                            self.cands.select_nth_unstable_by(top_k - 1, better);
                            self.cands.truncate(top_k);
                            threshold = self.cands[top_k - 1].0;
                        }
                    }
                }
            }
            start = start.max(end + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_and_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax_suppressed(&[5.0, 3.0, 3.0], &[0]), 1);
        assert_eq!(argmax_suppressed(&[f32::NEG_INFINITY; 3], &[0]), 1);
    }

    #[test]
    fn collect_skips_suppressed_and_nonfinite() {
        let mut s = Sampler::new(SamplerConfig::sampling(1.0, 1)).unwrap();
        let logits = [0.0, f32::NAN, 1.0, f32::NEG_INFINITY, 2.0, f32::INFINITY];
        s.collect(&logits, &[4, 0, 4, 99], 0);
        let ids: Vec<u32> = s.cands.iter().map(|c| c.1).collect();
        assert_eq!(ids, [2, 5]);
        assert_eq!(s.cands[1].0, f32::MAX);
    }

    /// The distribution written out directly: suppress, sort, cut to top_k, softmax at the
    /// temperature, cut to the nucleus, renormalize.
    fn direct_distribution(logits: &[f32], suppress: &[u32], c: &SamplerConfig) -> Vec<f64> {
        let mut cands: Vec<(f32, u32)> = logits
            .iter()
            .enumerate()
            .filter(|(i, l)| **l > f32::NEG_INFINITY && !suppress.contains(&(*i as u32)))
            .map(|(i, &l)| (l, i as u32))
            .collect();
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        if c.top_k > 0 {
            cands.truncate(c.top_k);
        }
        let w: Vec<f64> = cands
            .iter()
            .map(|x| ((x.0 - cands[0].0) as f64 / c.temperature as f64).exp())
            .collect();
        let total: f64 = w.iter().sum();
        let mut keep = w.len();
        let mut cum = 0.0;
        for (i, x) in w.iter().enumerate() {
            cum += x;
            if cum >= c.top_p as f64 * total {
                keep = i + 1;
                break;
            }
        }
        let kept: f64 = w[..keep].iter().sum();
        let mut p = vec![0.0; logits.len()];
        for (x, cand) in w[..keep].iter().zip(&cands) {
            p[cand.1 as usize] = x / kept;
        }
        p
    }

    fn dense(sparse: &[(u32, f64)], n: usize) -> Vec<f64> {
        let mut p = vec![0.0; n];
        for &(id, q) in sparse {
            assert_eq!(p[id as usize], 0.0, "id {id} listed twice");
            p[id as usize] += q;
        }
        p
    }

    #[test]
    fn distribution_is_what_sample_draws_from() {
        let logits: Vec<f32> = (0..40u32)
            .map(|i| ((i * 37 + 11) % 23) as f32 * 0.25 - 2.0)
            .collect();
        let configs = [
            SamplerConfig::sampling(1.0, 3),
            SamplerConfig::sampling(0.6, 4),
            SamplerConfig {
                temperature: 1.3,
                top_k: 7,
                top_p: 1.0,
                seed: 5,
            },
            SamplerConfig {
                temperature: 0.8,
                top_k: 0,
                top_p: 0.7,
                seed: 6,
            },
            SamplerConfig {
                temperature: 2.0,
                top_k: 12,
                top_p: 0.9,
                seed: 7,
            },
        ];
        let suppress = [3u32, 17, 30];
        let mut out = Vec::new();
        for c in configs {
            let mut s = Sampler::new(c.clone()).unwrap();
            s.distribution(&logits, &suppress, &mut out);
            let got = dense(&out, logits.len());
            let want = direct_distribution(&logits, &suppress, &c);
            for (id, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-6, "{c:?}: id {id}: {g} vs {w}");
            }
            assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-9);

            // The empirical frequencies of `sample_suppressed` agree: a chi-square test at
            // a significance of 0.001 (ids expected fewer than 5 times pooled).
            let draws = 40_000;
            let mut counts = vec![0usize; logits.len()];
            for _ in 0..draws {
                counts[s.sample_suppressed(&logits, &suppress) as usize] += 1;
            }
            let (stat, df) = crate::testing::chi_square(&counts, &want);
            let p = crate::testing::chi_square_p_value(stat, df);
            assert!(
                p > 0.001,
                "{c:?}: chi-square {stat:.1} with {df} df, p = {p:.2e}"
            );
        }

        // Greedy, and no eligible id: one certain token, the one `sample` returns.
        let mut s = Sampler::greedy();
        s.distribution(&logits, &suppress, &mut out);
        assert_eq!(out, [(s.sample_suppressed(&logits, &suppress), 1.0)]);
        let mut s = Sampler::new(SamplerConfig::sampling(1.0, 1)).unwrap();
        let none = [f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY];
        s.distribution(&none, &[0], &mut out);
        assert_eq!(out, [(1, 1.0)]);
        assert_eq!(s.sample_suppressed(&none, &[0]), 1);
    }

    #[test]
    fn rng_is_reproducible_and_uniform() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..10).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..10).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
        let mut r = Rng::new(0);
        let mean = (0..10_000).map(|_| r.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
