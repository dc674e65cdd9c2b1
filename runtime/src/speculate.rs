//! Lossless speculative decoding by prompt lookup: drafting, when to draft, and the
//! acceptance rule. [`generate`](crate::generate) runs the verification passes.
//!
//! There is no draft model: the draft is what followed the most recent earlier occurrence
//! of the sequence's last few tokens ([`PromptLookup`]). Text that quotes its prompt, code,
//! lists and chat answers repeat n-grams often, and a pass of `K + 1` positions costs little
//! more than a pass of one (decode reads every weight once either way), so each accepted
//! draft is a decode step saved.
//!
//! Lossless: a pass of up to 16 positions gives the same logits, bit for bit, as one-token
//! decode ([`MAX_DRAFT`] keeps `K + 1` within that), and [`choose`] keeps the output's
//! distribution that of plain decoding: greedy gives the same tokens, sampling the same
//! distribution (not the same draws for a seed).

use std::collections::HashMap;

use crate::sampler::Sampler;

/// Most tokens drafted per verification pass: the pass runs the last token and the drafts,
/// `MAX_DRAFT + 1 = 16` positions, the most for which a pass equals one-token decode bit for
/// bit in every compiled variant (tests/forward_segments.rs).
pub const MAX_DRAFT: usize = 15;

/// Longest n-gram matched; shorter ones are tried when it has no earlier occurrence.
pub const MAX_NGRAM: usize = 3;

/// An n-gram of up to [`MAX_NGRAM`] tokens: its length and its tokens, zero-padded.
type Key = (u8, [u32; MAX_NGRAM]);

fn key(ngram: &[u32]) -> Key {
    let mut k = [0u32; MAX_NGRAM];
    k[..ngram.len()].copy_from_slice(ngram);
    (ngram.len() as u8, k)
}

/// The sequence so far and an index from each n-gram (n = 1..=[`MAX_NGRAM`]) to the position
/// that followed its most recent occurrence.
///
/// An index rather than a backwards scan: drafting runs before every decode step, and a
/// scan costs a pass over the whole sequence (a chat fills contexts of thousands of tokens)
/// each time, while the index costs [`MAX_NGRAM`] map updates per token and one look-up per
/// n. Overwriting on insert is what keeps the most recent occurrence. An n-gram enters the
/// index only once a token follows it, so the sequence's own suffix never matches itself.
#[derive(Clone, Debug, Default)]
pub struct PromptLookup {
    seq: Vec<u32>,
    next: HashMap<Key, u32>,
}

impl PromptLookup {
    pub fn new() -> Self {
        Self::default()
    }

    /// The sequence the drafts are taken from.
    pub fn tokens(&self) -> &[u32] {
        &self.seq
    }

    pub fn extend(&mut self, tokens: &[u32]) {
        for &t in tokens {
            self.push(t);
        }
    }

    /// Appends `token`: the n-grams that end just before it now have a continuation.
    pub fn push(&mut self, token: u32) {
        let len = self.seq.len();
        for n in 1..=MAX_NGRAM.min(len) {
            self.next.insert(key(&self.seq[len - n..]), len as u32);
        }
        self.seq.push(token);
    }

    /// Replaces `out` with up to `k` tokens that followed the most recent earlier occurrence
    /// of the longest suffix (at most [`MAX_NGRAM`] tokens) that occurred before; empty when
    /// even the last token is new. A draft never goes past the end of the sequence.
    pub fn draft(&self, k: usize, out: &mut Vec<u32>) {
        out.clear();
        let len = self.seq.len();
        if k == 0 {
            return;
        }
        for n in (1..=MAX_NGRAM.min(len)).rev() {
            if let Some(&at) = self.next.get(&key(&self.seq[len - n..])) {
                let at = at as usize;
                out.extend_from_slice(&self.seq[at..(at + k).min(len)]);
                return;
            }
        }
    }
}

/// Draft length of the first verification pass, and after a back-off.
const START_DRAFT: usize = 4;
/// Verification passes in a row that accept nothing before speculation turns off.
const MISSES_TO_BACK_OFF: u32 = 2;
/// Plain decode steps of the first back-off; each back-off without an accepted draft since
/// the previous one doubles it, up to [`MAX_BACK_OFF`].
const MIN_BACK_OFF: u32 = 4;
const MAX_BACK_OFF: u32 = 64;

/// Chooses each step's draft length from the acceptance so far; deterministic.
///
/// - All drafts accepted: the next draft may be twice as long (up to [`MAX_DRAFT`]); some
///   accepted: the next one is one longer than what was accepted (the text diverges from
///   the match about there); none: half as long.
/// - [`MISSES_TO_BACK_OFF`] passes in a row with nothing accepted turn speculation off for a
///   back-off of plain steps, after which one short draft probes again. The back-off doubles
///   while the probes keep failing, so text without repeats pays one failed pass of two
///   positions per [`MAX_BACK_OFF`] steps: an extra row of compute, not an extra step (a
///   failed pass still yields its token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    k: usize,
    misses: u32,
    /// Plain steps left before drafting again.
    cooling: u32,
    next_back_off: u32,
}

impl Default for Controller {
    fn default() -> Self {
        Controller {
            k: START_DRAFT,
            misses: 0,
            cooling: 0,
            next_back_off: MIN_BACK_OFF,
        }
    }
}

impl Controller {
    pub fn new() -> Self {
        Self::default()
    }

    /// The draft length for this step (1..=[`MAX_DRAFT`]), or 0 for a plain step during a
    /// back-off (each such call counts one step of it).
    pub fn draft_len(&mut self) -> usize {
        if self.cooling > 0 {
            self.cooling -= 1;
            return 0;
        }
        self.k
    }

    /// Whether the controller is backing off (the next [`draft_len`](Self::draft_len) is 0).
    pub fn backing_off(&self) -> bool {
        self.cooling > 0
    }

    /// What a verification pass of `drafted` tokens (at least 1) accepted.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        debug_assert!(drafted > 0 && accepted <= drafted);
        if accepted > 0 {
            self.misses = 0;
            self.next_back_off = MIN_BACK_OFF;
            self.k = if accepted == drafted {
                (self.k.max(drafted) * 2).min(MAX_DRAFT)
            } else {
                (accepted + 1).min(MAX_DRAFT)
            };
            return;
        }
        self.k = (self.k / 2).max(1);
        self.misses += 1;
        if self.misses >= MISSES_TO_BACK_OFF {
            self.misses = 0;
            self.cooling = self.next_back_off;
            self.next_back_off = (self.next_back_off * 2).min(MAX_BACK_OFF);
            // Probe with a short draft: a failed probe costs one extra row.
            self.k = 1;
        }
    }
}

/// Chooses the token at a position whose logits are `row`, where `draft` was drafted (if
/// anything was). Returns the token and whether it is the accepted draft.
///
/// - No draft: a plain [`Sampler::sample_suppressed`].
/// - Greedy: the argmax (with the same suppression); the draft is accepted when it equals it.
/// - Sampling: speculative sampling for a draft that is certain (q = 1 on `draft`). With p the
///   sampler's distribution ([`Sampler::distribution`]): accept with probability
///   min(1, p(draft) / q(draft)) = p(draft); otherwise draw from the residual
///   max(p − q, 0), normalized, which is p without `draft`, renormalized. Each token so
///   comes out with probability p: P(draft) = p(draft), and any other y has
///   (1 − p(draft)) · p(y) / (1 − p(draft)) = p(y).
///
/// `dist` is scratch space.
pub fn choose(
    sampler: &mut Sampler,
    row: &[f32],
    suppress: &[u32],
    draft: Option<u32>,
    dist: &mut Vec<(u32, f64)>,
) -> (u32, bool) {
    let Some(draft) = draft else {
        return (sampler.sample_suppressed(row, suppress), false);
    };
    if sampler.config().is_greedy() {
        let token = sampler.sample_suppressed(row, suppress);
        return (token, token == draft);
    }
    sampler.distribution(row, suppress, dist);
    let p_draft: f64 = dist
        .iter()
        .filter(|&&(id, _)| id == draft)
        .map(|&(_, p)| p)
        .sum();
    if sampler.rng().next_f64() < p_draft {
        return (draft, true);
    }
    // The rest's own total rather than 1 − p(draft): no cancellation when p(draft) is near 1.
    let rest: f64 = dist
        .iter()
        .filter(|&&(id, _)| id != draft)
        .map(|&(_, p)| p)
        .sum();
    let target = sampler.rng().next_f64() * rest;
    let mut cum = 0.0f64;
    let mut last = None;
    for &(id, p) in dist.iter() {
        if id == draft || p <= 0.0 {
            continue;
        }
        cum += p;
        last = Some(id);
        if target < cum {
            return (id, false);
        }
    }
    // Rounding: the last other id with a probability; or, if the draft was the only
    // possible token (then rejection had probability 0), the draft.
    match last {
        Some(id) => (id, false),
        None => (draft, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplerConfig;

    fn drafted(seq: &[u32], k: usize) -> Vec<u32> {
        let mut l = PromptLookup::new();
        l.extend(seq);
        let mut out = vec![99];
        l.draft(k, &mut out);
        out
    }

    #[test]
    fn drafts_follow_the_most_recent_longest_match() {
        // "1 2 3" occurred twice; the most recent occurrence (followed by 7 8) wins.
        assert_eq!(
            drafted(&[1, 2, 3, 4, 5, 1, 2, 3, 7, 8, 9, 1, 2, 3], 2),
            [7, 8]
        );
        // The 3-gram "5 1 2" is new, "1 2" is not: followed first by 3 4, more recently by 9.
        assert_eq!(drafted(&[1, 2, 3, 4, 6, 1, 2, 9, 5, 1, 2], 3), [9, 5, 1]);
        // A longer match beats a more recent shorter one: "0 1 2" (followed by 3) against
        // "2" (most recently followed by 6).
        assert_eq!(drafted(&[0, 1, 2, 3, 2, 6, 0, 1, 2], 1), [3]);
        // Only the last token matches.
        assert_eq!(drafted(&[4, 7, 5, 4], 4), [7, 5, 4]);
        // k limits the draft, and a draft stops at the end of the sequence.
        assert_eq!(
            drafted(&[1, 2, 3, 4, 5, 6, 7, 1, 2, 3], 15),
            [4, 5, 6, 7, 1, 2, 3]
        );
        assert_eq!(drafted(&[1, 2, 3, 4, 5, 6, 7, 1, 2, 3], 2), [4, 5]);
        // A repeat of one token drafts more of it.
        assert_eq!(drafted(&[5, 5, 5, 5], 3), [5]);
    }

    #[test]
    fn no_draft_without_an_earlier_occurrence() {
        assert!(drafted(&[], 4).is_empty());
        assert!(drafted(&[1], 4).is_empty());
        assert!(drafted(&[1, 2, 3, 4], 4).is_empty());
        assert!(drafted(&[1, 2, 1, 2], 0).is_empty());
    }

    #[test]
    fn the_index_follows_pushes() {
        let mut l = PromptLookup::new();
        let mut out = Vec::new();
        l.extend(&[10, 11, 12]);
        l.push(10);
        l.draft(5, &mut out);
        assert_eq!(out, [11, 12, 10]);
        l.push(13);
        l.draft(5, &mut out);
        assert!(out.is_empty(), "{out:?}");
        l.push(11);
        l.draft(5, &mut out);
        assert_eq!(out, [12, 10, 13, 11]);
        assert_eq!(l.tokens(), [10, 11, 12, 10, 13, 11]);
    }

    #[test]
    fn the_controller_grows_shrinks_and_backs_off() {
        let mut c = Controller::new();
        assert_eq!(c.draft_len(), START_DRAFT);
        c.record(4, 4);
        assert_eq!(c.draft_len(), 8);
        c.record(8, 8);
        assert_eq!(c.draft_len(), MAX_DRAFT);
        c.record(MAX_DRAFT, MAX_DRAFT);
        assert_eq!(c.draft_len(), MAX_DRAFT);
        c.record(MAX_DRAFT, 3);
        assert_eq!(c.draft_len(), 4);
        // A draft shorter than asked, all accepted: grows from the longer of the two.
        c.record(2, 2);
        assert_eq!(c.draft_len(), 8);

        // Two misses in a row: a back-off of MIN_BACK_OFF plain steps, then a probe of 1.
        c.record(8, 0);
        assert_eq!(c.draft_len(), 4);
        assert!(!c.backing_off());
        c.record(4, 0);
        assert!(c.backing_off());
        for _ in 0..MIN_BACK_OFF {
            assert_eq!(c.draft_len(), 0);
        }
        assert_eq!(c.draft_len(), 1);
        // Failing probes double the back-off up to MAX_BACK_OFF.
        let mut back_offs = Vec::new();
        for _ in 0..6 {
            c.record(1, 0);
            c.record(1, 0);
            let mut plain = 0;
            while c.draft_len() == 0 {
                plain += 1;
            }
            back_offs.push(plain);
        }
        assert_eq!(back_offs, [8, 16, 32, 64, 64, 64]);
        // An accepted probe ends it: speculation is back, and the back-off starts over.
        c.record(1, 1);
        assert_eq!(c.draft_len(), 2);
        c.record(2, 0);
        c.record(1, 0);
        let mut plain = 0;
        while c.draft_len() == 0 {
            plain += 1;
        }
        assert_eq!(plain, MIN_BACK_OFF);
    }

    #[test]
    fn a_miss_between_hits_does_not_back_off() {
        let mut c = Controller::new();
        for _ in 0..10 {
            let k = c.draft_len();
            assert!(k > 0);
            c.record(k, 0);
            let k = c.draft_len();
            assert!(k > 0);
            c.record(k, 1);
        }
        assert!(!c.backing_off());
    }

    #[test]
    fn greedy_acceptance_is_the_argmax() {
        let mut s = Sampler::greedy();
        let mut dist = Vec::new();
        let row = [0.0, 3.0, 3.0, 1.0];
        assert_eq!(choose(&mut s, &row, &[], Some(1), &mut dist), (1, true));
        assert_eq!(choose(&mut s, &row, &[], Some(2), &mut dist), (1, false));
        assert_eq!(choose(&mut s, &row, &[], None, &mut dist), (1, false));
        // The suppress list applies as in plain decoding.
        assert_eq!(choose(&mut s, &row, &[1], Some(1), &mut dist), (2, false));
        assert_eq!(choose(&mut s, &row, &[1], Some(2), &mut dist), (2, true));
    }

    #[test]
    fn sampled_acceptance_never_returns_an_impossible_token() {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_k: 2,
            ..SamplerConfig::default()
        })
        .unwrap();
        let mut dist = Vec::new();
        let row = [5.0, 4.0, 0.0, -1.0];
        for _ in 0..500 {
            // A draft outside the top 2 has p = 0: always rejected.
            let (t, ok) = choose(&mut s, &row, &[], Some(3), &mut dist);
            assert!(!ok && t < 2);
            let (t, _) = choose(&mut s, &row, &[0], Some(1), &mut dist);
            // With 0 suppressed, the top 2 are 1 and 2.
            assert!(t == 1 || t == 2);
        }
        // The only possible token is always accepted.
        let row = [f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY];
        for _ in 0..100 {
            assert_eq!(choose(&mut s, &row, &[], Some(1), &mut dist), (1, true));
        }
    }
}
