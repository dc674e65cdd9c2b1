//! The multi-sequence forward pass (`forward_segments`) of every compiled tiny-model variant:
//! several sequences run in one pass give each one the logits it gets alone, bit for bit, and
//! a refused segment leaves every cache as it was.
//!
//! A prefill pass equals one-token decode of the same tokens, bit for bit, in every variant:
//! the passes of several tokens (8 or 16 per tile pass, AMX's 16), the f32 kernels' register
//! blocks and attention over several rows compute each row as decode does. So a segment's
//! logits equal running its tokens one at a time.

#![cfg(qwenc_tiny)]

mod common;

use common::{runnable, PROMPT};
use qwenc::Variant;
use qwenc_runtime::model::{ForwardError, KvCache, LogitsFor, Segment};

fn variants() -> Vec<(&'static Variant, qwenc_runtime::weights::Weights)> {
    runnable(qwenc::variants::ALL.iter().chain(qwenc::variants::MIXED))
}

/// 20 tokens that are not the prompt.
fn other_tokens(vocab: usize) -> Vec<u32> {
    (0..20u32).map(|i| (i * 53 + 17) % vocab as u32).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn segments_together_equal_each_alone() {
    for (v, weights) in variants() {
        let w = weights.bytes();
        let cache = || KvCache::new(v.layers, 64, v.kv_dim);
        let other = other_tokens(v.vocab);
        // B already holds 5 tokens and decodes one; C prefills 20 without wanting logits
        // first, then its last logits; D has nothing to run.
        let mut b_cache = cache();
        (v.forward)(w, &mut b_cache, &PROMPT[..5], LogitsFor::None).unwrap();
        let (mut a, mut b, mut c, mut d) = (cache(), b_cache, cache(), cache());
        let mut segments = [
            Segment {
                cache: &mut a,
                tokens: &PROMPT,
                logits_for: LogitsFor::All,
            },
            Segment {
                cache: &mut b,
                tokens: &PROMPT[5..6],
                logits_for: LogitsFor::Last,
            },
            Segment {
                cache: &mut c,
                tokens: &other,
                logits_for: LogitsFor::Last,
            },
            Segment {
                cache: &mut d,
                tokens: &[],
                logits_for: LogitsFor::All,
            },
        ];
        let mut logits = vec![Vec::new(); 4];
        (v.forward_segments)(w, &mut segments, &mut logits).unwrap();
        assert_eq!(
            (a.len, b.len, c.len, d.len),
            (12, 6, 20, 0),
            "{}",
            v.schemes
        );

        let mut alone_a = cache();
        let want_a = (v.forward)(w, &mut alone_a, &PROMPT, LogitsFor::All).unwrap();
        let mut alone_b = cache();
        (v.forward)(w, &mut alone_b, &PROMPT[..5], LogitsFor::None).unwrap();
        let want_b = (v.forward)(w, &mut alone_b, &PROMPT[5..6], LogitsFor::Last).unwrap();
        let mut alone_c = cache();
        let want_c = (v.forward)(w, &mut alone_c, &other, LogitsFor::Last).unwrap();
        for (got, want, name) in [
            (&logits[0], &want_a, "A"),
            (&logits[1], &want_b, "B"),
            (&logits[2], &want_c, "C"),
        ] {
            assert_eq!(got.len(), want.len(), "{} segment {name}", v.schemes);
            assert!(
                bits(got) == bits(want),
                "{} ({}): segment {name} differs from running it alone",
                v.schemes,
                v.backend
            );
        }
        assert!(logits[3].is_empty());
        // The caches hold the same keys and values as alone.
        for (together, alone) in [(&a, &alone_a), (&b, &alone_b), (&c, &alone_c)] {
            for l in 0..v.layers {
                assert!(
                    bits(together.layer_values(l, together.len))
                        == bits(alone.layer_values(l, alone.len)),
                    "{}: values of layer {l}",
                    v.schemes
                );
            }
        }
    }
}

/// A 20-token prefill against one-token decode of the same tokens: bit for bit.
#[test]
fn prefill_equals_one_token_decode() {
    for (v, weights) in variants() {
        let w = weights.bytes();
        let other = other_tokens(v.vocab);
        let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
        let batch = (v.forward)(w, &mut cache, &other, LogitsFor::All).unwrap();
        let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
        let mut steps = Vec::new();
        for &t in &other {
            steps.extend((v.forward)(w, &mut cache, &[t], LogitsFor::Last).unwrap());
        }
        let worst = batch
            .iter()
            .zip(&steps)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0.0f32, f32::max);
        assert!(
            bits(&batch) == bits(&steps),
            "{} ({}): prefill differs from one-token decode by up to {worst:.1e}",
            v.schemes,
            v.backend
        );
    }
}

#[test]
fn a_refused_segment_changes_no_cache() {
    for (v, weights) in variants() {
        let w = weights.bytes();
        let (mut a, mut b) = (
            KvCache::new(v.layers, 64, v.kv_dim),
            KvCache::new(v.layers, 64, v.kv_dim),
        );
        let bad = [1, v.vocab as u32];
        let mut segments = [
            Segment {
                cache: &mut a,
                tokens: &PROMPT,
                logits_for: LogitsFor::Last,
            },
            Segment {
                cache: &mut b,
                tokens: &bad,
                logits_for: LogitsFor::Last,
            },
        ];
        let mut logits = vec![Vec::new(); 2];
        let err = (v.forward_segments)(w, &mut segments, &mut logits).unwrap_err();
        assert_eq!(
            err,
            ForwardError::TokenOutOfRange {
                id: v.vocab as u32,
                pos: 1,
                vocab: v.vocab
            }
        );
        assert_eq!((a.len, b.len), (0, 0), "{}", v.schemes);
    }
}

/// A prefix copied into a cache of another capacity (`copy_kv_prefix`, prefix reuse) and
/// continued gives the logits of the sequence run from scratch, bit for bit.
#[test]
fn a_copied_prefix_continues_as_the_original() {
    for (v, weights) in variants() {
        let w = weights.bytes();
        let n = PROMPT.len();
        let mut whole = KvCache::new(v.layers, 64, v.kv_dim);
        let want = (v.forward)(w, &mut whole, &PROMPT, LogitsFor::All).unwrap();
        // Capacities around the tile size and far from the source's.
        for (keep, capacity) in [(7, n), (1, 200), (n - 1, 17), (n, n + 1)] {
            let mut copy = KvCache::new(v.layers, capacity, v.kv_dim);
            (v.copy_kv_prefix)(&whole, &mut copy, keep);
            assert_eq!(copy.len, keep);
            if keep == n {
                continue;
            }
            let got = (v.forward)(w, &mut copy, &PROMPT[keep..], LogitsFor::All).unwrap();
            assert_eq!(
                bits(&got),
                bits(&want[keep * v.vocab..]),
                "{}: {keep} positions copied into a cache of {capacity}",
                v.schemes
            );
        }
    }
}
