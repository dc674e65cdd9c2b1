//! The f32 reference on the real dev checkpoint against Hugging Face transformers' logits
//! (`shared/fixtures/reference_logits.json`): top-1 everywhere, top-10 logits and logsumexp
//! within 1e-2, greedy 32-token continuation identical.

mod common;

use std::sync::OnceLock;

use qwenc_codegen::reference::{argmax, logsumexp, Eos, KvCache, ReferenceWeights};
use qwenc_codegen::Checkpoint;
use qwenc_runtime::model::LogitsFor;
use qwenc_runtime::tokenizer::{Tokenizer, TokenizerSpec};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}
#[derive(Deserialize)]
struct Case {
    prompt: String,
    ids: Vec<u32>,
    positions: Vec<Position>,
    greedy_32: Vec<u32>,
}
#[derive(Deserialize)]
struct Position {
    logsumexp: f64,
    top_ids: Vec<u32>,
    top_logits: Vec<f32>,
}

fn model() -> &'static (ReferenceWeights, TokenizerSpec) {
    static MODEL: OnceLock<(ReferenceWeights, TokenizerSpec)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let ckpt = Checkpoint::open(&common::dev_gguf()).unwrap();
        let weights = ReferenceWeights::load(&ckpt, &mut |_, _, _| {}).unwrap();
        (weights, ckpt.tokenizer)
    })
}

fn fixture() -> Fixture {
    serde_json::from_str(
        &std::fs::read_to_string(common::fixture("reference_logits.json")).unwrap(),
    )
    .unwrap()
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn logits_match_transformers_at_every_position() {
    let (w, spec) = model();
    let tokenizer = Tokenizer::from_spec(spec.clone()).unwrap();
    let mut worst_top = 0.0f32;
    let mut worst_lse = 0.0f64;
    for case in fixture().cases {
        assert_eq!(
            tokenizer.encode(&case.prompt),
            case.ids,
            "tokenization of {:?}",
            case.prompt
        );
        let logits = w
            .forward(
                &case.ids,
                &mut KvCache::new(w.config.num_hidden_layers),
                LogitsFor::All,
            )
            .unwrap();
        for (t, (row, want)) in logits.iter().zip(&case.positions).enumerate() {
            assert_eq!(
                argmax(row),
                want.top_ids[0],
                "top-1 of {:?} at position {t}",
                case.prompt
            );
            for (&id, &value) in want.top_ids.iter().zip(&want.top_logits) {
                let err = (row[id as usize] - value).abs();
                worst_top = worst_top.max(err);
                assert!(
                    err <= 1e-2,
                    "{:?} position {t} id {id}: {} vs {value}",
                    case.prompt,
                    row[id as usize]
                );
            }
            let err = (logsumexp(row) - want.logsumexp).abs();
            worst_lse = worst_lse.max(err);
            assert!(
                err <= 1e-2,
                "{:?} position {t}: logsumexp off by {err}",
                case.prompt
            );
        }
    }
    eprintln!("worst top-10 logit error {worst_top:.2e}, worst logsumexp error {worst_lse:.2e}");
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn greedy_continuations_match_transformers() {
    let (w, _) = model();
    // The fixtures were generated with min_new_tokens = 32: end-of-sequence is suppressed.
    let eos = Eos::Suppress(w.config.eos_token_ids.clone());
    for case in fixture().cases {
        let ids = w.generate_greedy(&case.ids, 32, &eos, &mut |_| {}).unwrap();
        assert_eq!(
            ids, case.greedy_32,
            "greedy continuation of {:?}",
            case.prompt
        );
    }
}
