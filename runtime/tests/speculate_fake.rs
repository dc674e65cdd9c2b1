//! Speculative decoding on the fake model: greedy output identical to plain decoding and the
//! cache invariant at every way a generation ends; sampled output with plain sampling's
//! distribution (chi-square against the exact distribution); the chat session drafting from
//! earlier turns.
//!
//! The fake model's peaks spell a reply after `<|im_start|>assistant\n`; a prompt that
//! already contains most of the reply makes prompt lookup draft it, so drafts are accepted,
//! and rejected where the reply differs from what the prompt quotes.

mod common;

use std::ops::ControlFlow;
use std::sync::Mutex;

use common::Hooked;
use qwenc_runtime::chat::{render, ChatMessage};
use qwenc_runtime::generate::{generate, ChatSession, GenerateOptions, GenerateStats, StopReason};
use qwenc_runtime::model::Model;
use qwenc_runtime::sampler::{Sampler, SamplerConfig};
use qwenc_runtime::testing::{chi_square, chi_square_p_value, FakeModel, ENDOFTEXT, VOCAB_SIZE};

const REPLY: &str = "the world in the world, and the world is in a world of the world";

fn model() -> FakeModel {
    FakeModel::new().with_reply_text(REPLY)
}

/// A chat prompt whose user message quotes most of the reply with other words in it.
fn prompt(model: &FakeModel) -> Vec<u32> {
    let user = "the world in the world, or the world is in a world";
    model
        .tokenizer()
        .encode(&render(&[ChatMessage::user(user)], true))
}

fn opts(max_tokens: usize, speculate: bool) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        speculate,
        ..GenerateOptions::default()
    }
}

struct Run {
    ids: Vec<u32>,
    stats: GenerateStats,
    /// The cache's tokens after the call.
    cached: Vec<u32>,
    /// For each id: the number of tokens of the forward pass its logits came from (0 for
    /// the prefill) and its row in that pass.
    rows: Vec<(usize, usize)>,
}

/// Generates on a fresh cache of exactly `prompt + max_tokens` positions (speculation must
/// not draft past it); `flow(n)` answers the n-th id (1-based).
fn run(prompt: &[u32], o: &GenerateOptions, mut flow: impl FnMut(usize) -> ControlFlow<()>) -> Run {
    let passes = Mutex::new(Vec::new());
    let hooked = Hooked {
        inner: model(),
        before: |n: usize| passes.lock().unwrap().push(n),
    };
    let mut cache = hooked.new_cache(prompt.len() + o.max_tokens);
    let mut ids = Vec::new();
    // The number of passes run when each id came out.
    let mut seen = Vec::new();
    let stats = generate(&hooked, &mut cache, prompt, o, &mut |id| {
        seen.push(passes.lock().unwrap().len());
        ids.push(id);
        flow(ids.len())
    })
    .unwrap();
    let passes = passes.into_inner().unwrap();
    let rows = seen
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let size = if count <= 1 { 0 } else { passes[count - 1] };
            let row = seen[..i].iter().rev().take_while(|&&c| c == count).count();
            (size, row)
        })
        .collect();
    Run {
        ids,
        stats,
        cached: FakeModel::cached_tokens(&cache),
        rows,
    }
}

fn go(_: usize) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// The cache holds the prompt and every generated token but the last.
fn assert_invariant(prompt: &[u32], r: &Run, what: &str) {
    assert_eq!(
        r.cached,
        [prompt, &r.ids[..r.ids.len() - 1]].concat(),
        "{what}"
    );
}

#[test]
fn greedy_is_identical_and_drafts_are_accepted_and_rejected() {
    let m = model();
    let prompt = prompt(&m);
    let plain = run(&prompt, &opts(80, false), go);
    let spec = run(&prompt, &opts(80, true), go);
    assert_eq!(spec.ids, plain.ids);
    assert_eq!(spec.stats.stop, plain.stats.stop);
    assert_eq!(spec.stats.stop, StopReason::MaxTokens);
    assert_invariant(&prompt, &spec, "speculative");
    assert_invariant(&prompt, &plain, "plain");
    let (p, s) = (&plain.stats, &spec.stats);
    assert_eq!(
        (p.decode_passes, p.verify_passes, p.drafted_tokens),
        (p.decode_tokens, 0, 0)
    );
    assert!(plain.rows.iter().all(|&(size, row)| size <= 1 && row == 0));
    assert!(
        s.accepted_tokens > 0 && s.drafted_tokens > s.accepted_tokens,
        "{s:?}"
    );
    assert_eq!(s.decode_tokens, s.generated_tokens - 1);
    // Each accepted draft is a pass saved.
    assert_eq!(s.decode_passes, s.decode_tokens - s.accepted_tokens);
    assert!(s.verify_passes > 0 && s.verify_passes <= s.decode_passes);
    assert!(
        (s.acceptance_rate() - s.accepted_tokens as f64 / s.drafted_tokens as f64).abs() < 1e-12
    );
    let rel = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    assert!(rel(
        s.decode_tok_s,
        s.decode_tokens as f64 / s.decode_seconds
    ));
    // Some pass yielded several tokens, and no pass ran more than 16 positions.
    assert!(
        spec.rows.iter().any(|&(_, row)| row >= 2),
        "{:?}",
        spec.rows
    );
    assert!(spec.rows.iter().all(|&(size, _)| size <= 16));
}

#[test]
fn max_tokens_callback_and_stop_tokens_inside_a_block() {
    let m = model();
    let prompt = prompt(&m);
    let full = run(&prompt, &opts(60, false), go).ids;

    for n in 1..=full.len() {
        let r = run(&prompt, &opts(n, true), go);
        assert_eq!(r.ids, full[..n], "max_tokens {n}");
        assert_eq!(r.stats.stop, StopReason::MaxTokens);
        assert_invariant(&prompt, &r, &format!("max_tokens {n}"));
    }

    // The callback breaks after the n-th token: where a pass has more rows, the rest are
    // dropped.
    let mut broke_inside = 0;
    for n in 1..full.len() {
        let r = run(&prompt, &opts(60, true), |k| {
            if k == n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(r.ids, full[..n], "break at {n}");
        assert_eq!(r.stats.stop, StopReason::Callback);
        assert_invariant(&prompt, &r, &format!("break at {n}"));
        let (size, row) = r.rows[n - 1];
        broke_inside += usize::from(row + 1 < size);
    }
    assert!(broke_inside > 0);

    // A stop token: the generation ends at it, even when it is an accepted draft with more
    // drafts after it.
    let mut stopped_inside = 0;
    for (n, &stop) in full.iter().enumerate() {
        if full[..n].contains(&stop) {
            continue;
        }
        let o = GenerateOptions {
            extra_stop_ids: vec![stop],
            ..opts(60, true)
        };
        let r = run(&prompt, &o, go);
        assert_eq!(r.ids, full[..=n], "stop {stop} at {n}");
        assert_eq!(r.stats.stop, StopReason::Eos(stop));
        assert_invariant(&prompt, &r, &format!("stop at {n}"));
        let (size, row) = r.rows[n];
        stopped_inside += usize::from(row >= 1 && row + 1 < size);
    }
    assert!(stopped_inside > 0);

    // ignore_eos suppresses the stop token in verification as in plain decoding.
    let stop = full[5];
    let o = |speculate| GenerateOptions {
        extra_stop_ids: vec![stop],
        ignore_eos: true,
        ..opts(40, speculate)
    };
    let plain = run(&prompt, &o(false), go);
    let spec = run(&prompt, &o(true), go);
    assert_eq!(spec.ids, plain.ids);
    assert!(!spec.ids.contains(&stop) && spec.ids.len() == 40);
    assert!(spec.stats.accepted_tokens > 0);
}

#[test]
fn chat_drafts_from_earlier_turns() {
    let m = model().with_max_context(1024);
    let turns = |speculate| {
        let mut session = ChatSession::new(&m, 1024, None, opts(200, speculate)).unwrap();
        (0..3)
            .map(|i| {
                let turn = session
                    .send(&format!("Say it again {i}"), &mut |_| {
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                assert!(!turn.reset_after, "turn {i}: {turn:?}");
                assert_eq!(
                    session.cached_tokens(),
                    m.tokenizer().encode(&render(session.messages(), false))
                );
                assert_eq!(
                    FakeModel::cached_tokens(session.cache()),
                    session.cached_tokens()
                );
                turn
            })
            .collect::<Vec<_>>()
    };
    let plain = turns(false);
    let spec = turns(true);
    for (p, s) in plain.iter().zip(&spec) {
        assert_eq!(p.ids, s.ids);
        assert_eq!(p.text, REPLY);
    }
    // The first answer has nothing to draft from but itself; the next ones repeat it.
    let later = &spec[2].stats;
    assert!(
        later.accepted_tokens * 2 > later.generated_tokens,
        "{later:?}"
    );
    assert!(later.decode_passes < plain[2].stats.decode_passes);
}

/// Exact speculative sampling: the marginal distribution of each generated position equals
/// plain sampling's.
///
/// The fake model's logits depend only on the last token and the position (after the
/// assistant marker the peak follows the reply by position alone), so the generated tokens
/// form a Markov chain whose marginals are computed exactly from the sampler's own
/// distribution (`Sampler::distribution`, checked against its draws in the sampler's tests).
/// For each position, the frequencies over 20 000 seeds, with and without speculation, go
/// through a chi-square goodness-of-fit test at a significance of 0.001 (ids expected fewer
/// than 5 times pooled; the p-value from the chi-square distribution with the resulting
/// degrees of freedom, about 50 to 270 here). The seeds are fixed, so the outcome is
/// deterministic; a correct implementation passes each check with probability 0.999.
#[test]
fn sampling_keeps_the_distribution() {
    let m = model();
    let prompt = prompt(&m);
    let positions = 5;
    let seeds = 20_000u64;
    let filler = m.tokenizer().encode(REPLY);
    let configs = [
        SamplerConfig::sampling(1.0, 0),
        SamplerConfig {
            temperature: 1.5,
            top_k: 40,
            top_p: 0.97,
            seed: 0,
        },
    ];
    for config in configs {
        let o = |speculate, seed| GenerateOptions {
            sampler: SamplerConfig {
                seed,
                ..config.clone()
            },
            // ENDOFTEXT suppressed: the suppress list applies to verification too.
            ignore_eos: true,
            ..opts(positions, speculate)
        };
        let suppress = [ENDOFTEXT];

        // Exact marginals: marginal[i][y] = P(token i = y).
        let mut sampler = Sampler::new(config.clone()).unwrap();
        let mut dist = Vec::new();
        let mut row = |seq: &[u32]| {
            sampler.distribution(&m.logits_after(seq), &suppress, &mut dist);
            let mut p = vec![0.0; VOCAB_SIZE];
            for &(id, q) in &dist {
                p[id as usize] = q;
            }
            p
        };
        let mut marginals = vec![row(&prompt)];
        for i in 1..positions {
            let prev = &marginals[i - 1];
            let mut next = vec![0.0; VOCAB_SIZE];
            for (t, &pt) in prev.iter().enumerate() {
                if pt == 0.0 {
                    continue;
                }
                // Any sequence of this length ending in t has these logits.
                let seq = [&prompt[..], &filler[..i - 1], &[t as u32]].concat();
                for (y, q) in row(&seq).into_iter().enumerate() {
                    next[y] += pt * q;
                }
            }
            marginals.push(next);
        }

        for speculate in [false, true] {
            let mut counts = vec![vec![0usize; VOCAB_SIZE]; positions];
            let (mut drafted, mut accepted) = (0, 0);
            for seed in 0..seeds {
                let r = run(&prompt, &o(speculate, seed), go);
                assert_eq!(r.ids.len(), positions);
                for (i, &id) in r.ids.iter().enumerate() {
                    counts[i][id as usize] += 1;
                }
                drafted += r.stats.drafted_tokens;
                accepted += r.stats.accepted_tokens;
            }
            if speculate {
                assert!(
                    accepted > 0 && drafted > accepted,
                    "{accepted} of {drafted}"
                );
            } else {
                assert_eq!(drafted, 0);
            }
            for i in 0..positions {
                let (stat, df) = chi_square(&counts[i], &marginals[i]);
                let p = chi_square_p_value(stat, df);
                assert!(
                    p > 0.001,
                    "{config:?}, speculate {speculate}, position {i}: chi-square {stat:.1}, \
                     {df} df, p = {p:.1e}"
                );
            }
        }
    }
}
