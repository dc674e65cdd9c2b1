//! Reused KV prefixes. A finished sequence leaves its cache here (its prompt and the reply
//! tokens that ran through the model); a new request starts from the longest cached prefix of
//! its prompt, at token granularity, so a chat's next turn prefills only the new message and
//! lm-eval's choices of one question prefill their question once.
//!
//! Bounded by bytes of KV cache (least recently used first out). Prompt logprobs (`echo` with
//! `logprobs`) are kept with the prefix, so that scoring requests reuse it too.

use super::worker::TokenLogprob;
use crate::generate::common_prefix;
use crate::model::{KvCache, Model};

/// A cached sequence.
struct Entry {
    /// The ids whose keys and values `cache` holds (`cache.len == tokens.len()`).
    tokens: Vec<u32>,
    cache: KvCache,
    /// `logprobs[j]`: the logprob of `tokens[j + 1]`, with `top_n` alternatives; may cover
    /// fewer positions than `tokens` (only the prompt's, and only when they were asked for).
    logprobs: Vec<TokenLogprob>,
    top_n: usize,
    last_use: u64,
}

impl Entry {
    fn bytes(&self) -> usize {
        (self.cache.keys.len() + self.cache.values.len()) * std::mem::size_of::<f32>()
            + self.tokens.len() * std::mem::size_of::<u32>()
    }
}

/// What a lookup reused.
#[derive(Debug, Default)]
pub struct Hit {
    /// Positions copied into the new cache.
    pub positions: usize,
    /// Logprobs of prompt tokens `1..=positions` when they were asked for.
    pub logprobs: Vec<TokenLogprob>,
}

/// Counts since start (for `/metrics` and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixStats {
    pub lookups: u64,
    pub hits: u64,
    /// Prompt positions that did not have to be prefilled.
    pub reused_positions: u64,
    /// Bytes held now.
    pub bytes: usize,
    pub entries: usize,
}

/// The cache of prefixes; at most `limit_bytes` of them.
pub struct PrefixCache {
    entries: Vec<Entry>,
    limit_bytes: usize,
    clock: u64,
    stats: PrefixStats,
}

impl PrefixCache {
    /// A cache of at most `limit_bytes` (0: nothing is kept, every lookup misses).
    pub fn new(limit_bytes: usize) -> PrefixCache {
        PrefixCache {
            entries: Vec::new(),
            limit_bytes,
            clock: 0,
            stats: PrefixStats::default(),
        }
    }

    pub fn stats(&self) -> PrefixStats {
        PrefixStats {
            bytes: self.entries.iter().map(Entry::bytes).sum(),
            entries: self.entries.len(),
            ..self.stats
        }
    }

    /// Copies the longest cached prefix of `prompt` into `dst` (an empty cache with room for
    /// the prompt) and returns what was reused. At least the last prompt token is left to
    /// run, for its logits. With `logprobs = Some(n)` (the prompt's logprobs are wanted, `n`
    /// alternatives each), only a prefix whose logprobs were kept with at least `n`
    /// alternatives counts, and one position fewer is reused: the logprob of the first token
    /// that runs comes from the row before it.
    pub fn lookup(
        &mut self,
        model: &dyn Model,
        prompt: &[u32],
        dst: &mut KvCache,
        logprobs: Option<usize>,
    ) -> Hit {
        self.stats.lookups += 1;
        let usable = |e: &Entry| -> usize {
            let shared = common_prefix(&e.tokens, prompt);
            let common = shared.min(prompt.len().saturating_sub(1));
            match logprobs {
                None => common,
                Some(n) if e.top_n >= n => {
                    // Tokens 1..=r need logprobs, and token r + 1 must match for row r's.
                    common.min(shared.saturating_sub(1)).min(e.logprobs.len())
                }
                Some(_) => 0,
            }
        };
        let best = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (usable(e), i))
            .max_by_key(|&(n, i)| (n, std::cmp::Reverse(i)));
        let Some((positions, i)) = best.filter(|&(n, _)| n > 0) else {
            return Hit::default();
        };
        self.clock += 1;
        let e = &mut self.entries[i];
        e.last_use = self.clock;
        model.copy_kv_prefix(&e.cache, dst, positions);
        self.stats.hits += 1;
        self.stats.reused_positions += positions as u64;
        let logprobs = match logprobs {
            None => Vec::new(),
            Some(n) => e.logprobs[..positions]
                .iter()
                .map(|lp| TokenLogprob {
                    logprob: lp.logprob,
                    top: lp.top[..n.min(lp.top.len())].to_vec(),
                })
                .collect(),
        };
        Hit {
            positions,
            logprobs,
        }
    }

    /// Keeps `cache`, which holds `tokens`, with the logprobs of `tokens[1..]` that are known
    /// (`top_n` alternatives each). A prefix of it that is cached is dropped (this one
    /// covers it); if it is itself a prefix of a cached one, nothing changes. The least
    /// recently used entries leave to make room.
    pub fn insert(
        &mut self,
        tokens: Vec<u32>,
        cache: KvCache,
        logprobs: Vec<TokenLogprob>,
        top_n: usize,
    ) {
        if tokens.is_empty() || cache.len != tokens.len() {
            return;
        }
        self.clock += 1;
        let entry = Entry {
            tokens,
            cache,
            logprobs,
            top_n,
            last_use: self.clock,
        };
        let size = entry.bytes();
        if size > self.limit_bytes {
            return;
        }
        // `a` covers `b`: `b`'s tokens are a prefix of `a`'s, and so are its logprobs.
        let covers = |a: &Entry, b: &Entry| {
            b.tokens.len() <= a.tokens.len()
                && a.tokens[..b.tokens.len()] == b.tokens[..]
                && (b.logprobs.is_empty()
                    || (a.logprobs.len() >= b.logprobs.len() && a.top_n >= b.top_n))
        };
        if let Some(e) = self.entries.iter_mut().find(|e| covers(e, &entry)) {
            e.last_use = self.clock;
            return;
        }
        self.entries.retain(|e| !covers(&entry, e));
        let mut held: usize = self.entries.iter().map(Entry::bytes).sum();
        while held + size > self.limit_bytes {
            let Some(oldest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].last_use)
            else {
                break;
            };
            held -= self.entries.swap_remove(oldest).bytes();
        }
        self.entries.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeModel;

    /// A fake-model cache holding `tokens` (its keys are the ids).
    fn filled(model: &FakeModel, tokens: &[u32]) -> KvCache {
        let mut c = model.new_cache(tokens.len() + 4);
        model
            .forward(&mut c, tokens, crate::model::LogitsFor::None)
            .unwrap();
        c
    }

    fn lp(x: f64) -> TokenLogprob {
        TokenLogprob {
            logprob: x,
            top: vec![(1, x), (2, x - 1.0)],
        }
    }

    #[test]
    fn longest_prefix_wins_and_the_last_prompt_token_always_runs() {
        let m = FakeModel::new();
        let mut pc = PrefixCache::new(1 << 20);
        pc.insert(vec![1, 2, 3], filled(&m, &[1, 2, 3]), vec![], 0);
        pc.insert(vec![1, 2, 9, 9, 9], filled(&m, &[1, 2, 9, 9, 9]), vec![], 0);
        let mut dst = m.new_cache(10);
        let hit = pc.lookup(&m, &[1, 2, 9, 9, 7], &mut dst, None);
        assert_eq!(hit.positions, 4);
        assert_eq!(FakeModel::cached_tokens(&dst), vec![1, 2, 9, 9]);
        // The whole prompt is cached: one position is left to run.
        let mut dst = m.new_cache(10);
        assert_eq!(pc.lookup(&m, &[1, 2, 3], &mut dst, None).positions, 2);
        // Nothing in common.
        let mut dst = m.new_cache(10);
        assert_eq!(pc.lookup(&m, &[5, 2, 3], &mut dst, None).positions, 0);
        assert_eq!(dst.len, 0);
        let s = pc.stats();
        assert_eq!(
            (s.lookups, s.hits, s.reused_positions, s.entries),
            (3, 2, 6, 2)
        );
    }

    #[test]
    fn logprobs_are_reused_only_where_they_were_kept() {
        let m = FakeModel::new();
        let mut pc = PrefixCache::new(1 << 20);
        // Logprobs of tokens 1..=4 of [1, 2, 3, 4, 5].
        let lps: Vec<TokenLogprob> = (0..4).map(|i| lp(-(i as f64))).collect();
        pc.insert(vec![1, 2, 3, 4, 5], filled(&m, &[1, 2, 3, 4, 5]), lps, 2);
        let mut dst = m.new_cache(10);
        // Common prefix 4: reuse 3 positions and the logprobs of tokens 1..=3.
        let hit = pc.lookup(&m, &[1, 2, 3, 4, 8, 8], &mut dst, Some(1));
        assert_eq!(hit.positions, 3);
        assert_eq!(hit.logprobs.len(), 3);
        assert_eq!(hit.logprobs[2].logprob, -2.0);
        assert_eq!(hit.logprobs[0].top.len(), 1);
        // More alternatives than were kept: no reuse.
        let mut dst = m.new_cache(10);
        assert_eq!(
            pc.lookup(&m, &[1, 2, 3, 4, 8], &mut dst, Some(5)).positions,
            0
        );
        // An entry without logprobs does not serve a scoring request.
        let mut pc = PrefixCache::new(1 << 20);
        pc.insert(vec![1, 2, 3, 4], filled(&m, &[1, 2, 3, 4]), vec![], 0);
        let mut dst = m.new_cache(10);
        assert_eq!(
            pc.lookup(&m, &[1, 2, 3, 4, 8], &mut dst, Some(0)).positions,
            0
        );
    }

    #[test]
    fn bounded_least_recently_used_and_covered_prefixes_dropped() {
        let m = FakeModel::new();
        let one = Entry {
            tokens: vec![0; 3],
            cache: filled(&m, &[0, 0, 0]),
            logprobs: vec![],
            top_n: 0,
            last_use: 0,
        }
        .bytes();
        let mut pc = PrefixCache::new(2 * one);
        pc.insert(vec![1, 1, 1], filled(&m, &[1, 1, 1]), vec![], 0);
        pc.insert(vec![2, 2, 2], filled(&m, &[2, 2, 2]), vec![], 0);
        // Touch [1, 1, 1]; the next insert evicts [2, 2, 2].
        let mut dst = m.new_cache(10);
        assert_eq!(pc.lookup(&m, &[1, 1, 1, 4], &mut dst, None).positions, 3);
        pc.insert(vec![3, 3, 3], filled(&m, &[3, 3, 3]), vec![], 0);
        let mut dst = m.new_cache(10);
        assert_eq!(pc.lookup(&m, &[2, 2, 2, 4], &mut dst, None).positions, 0);
        let mut dst = m.new_cache(10);
        assert_eq!(pc.lookup(&m, &[1, 1, 1, 4], &mut dst, None).positions, 3);
        assert!(pc.stats().bytes <= 2 * one);
        // [3, 3] is covered by [3, 3, 3]: not added.
        pc.insert(vec![3, 3], filled(&m, &[3, 3]), vec![], 0);
        assert_eq!(pc.stats().entries, 2);
        // Too large for the whole cache: not kept.
        let mut small = PrefixCache::new(one - 1);
        small.insert(vec![1, 1, 1], filled(&m, &[1, 1, 1]), vec![], 0);
        assert_eq!(small.stats().entries, 0);
    }
}
