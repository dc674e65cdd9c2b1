//! The f32 reference forward on the synthetic tiny model: batched and incremental passes
//! agree, tied and untied heads work, bad input is refused with a named error.

use qwenc_codegen::model_io::synthetic::{write_tiny_model, SyntheticOptions};
use qwenc_codegen::reference::{argmax, Eos, KvCache, ReferenceWeights};
use qwenc_codegen::Checkpoint;
use qwenc_runtime::model::{ForwardError, LogitsFor};

fn tiny_weights(tied: bool) -> ReferenceWeights {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(
        dir.path(),
        &SyntheticOptions {
            tie_word_embeddings: tied,
            ..Default::default()
        },
    )
    .unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    ReferenceWeights::load(&ckpt, &mut |_, _, _| {}).unwrap()
}

const PROMPT: [u32; 9] = [72, 101, 108, 108, 111, 256, 300, 7, 311];

#[test]
fn one_batch_equals_token_by_token() {
    for tied in [false, true] {
        let w = tiny_weights(tied);
        let mut cache = KvCache::new(w.config.num_hidden_layers);
        let batched = w.forward(&PROMPT, &mut cache, LogitsFor::All).unwrap();
        assert_eq!(cache.len(), PROMPT.len());

        let mut cache = KvCache::new(w.config.num_hidden_layers);
        for (t, &id) in PROMPT.iter().enumerate() {
            let step = w.forward(&[id], &mut cache, LogitsFor::Last).unwrap();
            for (a, b) in step[0].iter().zip(&batched[t]) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "tied={tied} position {t}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn logits_depend_on_context_and_position() {
    // A reference that ignored the cache or RoPE would give the same logits here.
    let w = tiny_weights(false);
    let mut a = KvCache::new(3);
    let mut b = KvCache::new(3);
    let la = w.forward(&[5, 9, 42], &mut a, LogitsFor::Last).unwrap();
    let lb = w.forward(&[9, 5, 42], &mut b, LogitsFor::Last).unwrap();
    let diff: f32 = la[0].iter().zip(&lb[0]).map(|(x, y)| (x - y).abs()).sum();
    assert!(diff > 1e-3, "order of context changed nothing: {diff}");
    let mut c = KvCache::new(3);
    // (Two equal tokens alone would attend to equal values: a third token makes them differ.)
    let lc = w.forward(&[42, 7, 42], &mut c, LogitsFor::All).unwrap();
    let diff: f32 = lc[0].iter().zip(&lc[2]).map(|(x, y)| (x - y).abs()).sum();
    assert!(
        diff > 1e-3,
        "same token at two positions gave the same logits"
    );
}

#[test]
fn tied_head_reads_the_embedding() {
    let w = tiny_weights(true);
    assert!(w.lm_head.is_none());
    assert_eq!(
        w.lm_head().as_ptr(),
        w.embed.as_ptr(),
        "no second copy of the embedding"
    );
}

#[test]
fn cache_truncation_rescoring_matches_a_fresh_pass() {
    let w = tiny_weights(false);
    let mut cache = KvCache::new(3);
    w.forward(&PROMPT[..5], &mut cache, LogitsFor::Last)
        .unwrap();
    w.forward(&[1, 2, 3], &mut cache, LogitsFor::Last).unwrap();
    cache.truncate(5, w.config.kv_dim());
    let reused = w
        .forward(&PROMPT[5..], &mut cache, LogitsFor::Last)
        .unwrap();
    let fresh = w
        .forward(&PROMPT, &mut KvCache::new(3), LogitsFor::Last)
        .unwrap();
    for (a, b) in reused[0].iter().zip(&fresh[0]) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()));
    }
}

#[test]
fn bad_input_is_refused() {
    let w = tiny_weights(false);
    let mut cache = KvCache::new(3);
    assert_eq!(
        w.forward(&[1, 320], &mut cache, LogitsFor::Last)
            .unwrap_err(),
        ForwardError::TokenOutOfRange {
            id: 320,
            pos: 1,
            vocab: 320
        }
    );
    let long = vec![1u32; 257];
    assert_eq!(
        w.forward(&long, &mut cache, LogitsFor::Last).unwrap_err(),
        ForwardError::ContextOverflow {
            needed: 257,
            max: 256
        }
    );
    assert!(
        cache.is_empty(),
        "a refused pass leaves the cache untouched"
    );
}

#[test]
fn greedy_generation_is_deterministic_and_stops() {
    let w = tiny_weights(false);
    let mut seen = Vec::new();
    let none = Eos::StopAt(vec![]);
    let a = w
        .generate_greedy(&PROMPT, 12, &none, &mut |t| seen.push(t))
        .unwrap();
    assert_eq!(a.len(), 12);
    assert_eq!(a, seen);
    assert_eq!(
        a,
        w.generate_greedy(&PROMPT, 12, &none, &mut |_| {}).unwrap()
    );
    // Stopping at the first generated token.
    let first = a[0];
    assert_eq!(
        w.generate_greedy(&PROMPT, 12, &Eos::StopAt(vec![first]), &mut |_| {})
            .unwrap(),
        vec![first]
    );
    // Suppressing it: it never appears and exactly 12 tokens come out.
    let b = w
        .generate_greedy(&PROMPT, 12, &Eos::Suppress(vec![first]), &mut |_| {})
        .unwrap();
    assert_eq!(b.len(), 12);
    assert!(!b.contains(&first));
    let logits = w
        .forward(&PROMPT, &mut KvCache::new(3), LogitsFor::Last)
        .unwrap();
    assert_eq!(argmax(&logits[0]), first);
}
