//! The tiny model compressed under a memory budget (`qwenc compress --budget-mb`, built by
//! build.rs): its matrices use several schemes, chosen per layer, and the compiled forward
//! (one kernel per distinct shape and scheme, picked per layer from a kernel table) matches
//! the f32 reference run on the same quantized weights, within the integer schemes' tolerance
//! of tests/compiled_tiny.rs.

#![cfg(qwenc_tiny)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{runnable, tiny_reference, PROMPT};
use qwenc_codegen::compress::format::CompressedModel;
use qwenc_codegen::quant::dequantize;
use qwenc_codegen::reference::{argmax, KvCache as RefCache, ReferenceWeights};
use qwenc_runtime::model::{KvCache, LogitsFor};

/// The reference with every matrix replaced by the compressed directory's dequantized one.
fn reference_for(dir: &Path) -> ReferenceWeights {
    let mut w = tiny_reference(false);
    let model = CompressedModel::open(dir).unwrap();
    let get = |name: String| dequantize(&model.matrix(&name).unwrap());
    for (l, layer) in w.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{l}");
        layer.q_proj = get(format!("{p}.self_attn.q_proj.weight"));
        layer.k_proj = get(format!("{p}.self_attn.k_proj.weight"));
        layer.v_proj = get(format!("{p}.self_attn.v_proj.weight"));
        layer.o_proj = get(format!("{p}.self_attn.o_proj.weight"));
        layer.gate_proj = get(format!("{p}.mlp.gate_proj.weight"));
        layer.up_proj = get(format!("{p}.mlp.up_proj.weight"));
        layer.down_proj = get(format!("{p}.mlp.down_proj.weight"));
    }
    w.embed = get("model.embed_tokens.weight".into());
    w.lm_head = Some(get("lm_head.weight".into()));
    w
}

#[test]
fn the_mixed_build_uses_several_schemes_per_kind() {
    let dir = Path::new(qwenc::variants::MIXED_DIR);
    let model = CompressedModel::open(dir).unwrap();
    let m = &model.manifest;
    assert!(m.budget.is_some(), "built with a budget");
    let layer_schemes: BTreeSet<String> = m
        .tensors
        .iter()
        .filter(|(n, e)| e.is_matrix() && n.starts_with("model.layers."))
        .map(|(_, e)| e.scheme.to_string())
        .collect();
    assert!(layer_schemes.len() >= 2, "{layer_schemes:?}");
    assert_eq!(qwenc::variants::MIXED.len(), 2);
    for v in qwenc::variants::MIXED {
        assert!(v.schemes.starts_with("mixed: "), "{}", v.schemes);
    }
}

#[test]
fn the_mixed_build_matches_the_reference_on_its_own_weights() {
    let reference = reference_for(Path::new(qwenc::variants::MIXED_DIR));
    let layers = reference.config.num_hidden_layers;
    let want = reference
        .forward(&PROMPT, &mut RefCache::new(layers), LogitsFor::All)
        .unwrap();
    let mut ran = 0;
    for (v, weights) in runnable(qwenc::variants::MIXED) {
        let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
        let got = (v.forward)(weights.bytes(), &mut cache, &PROMPT, LogitsFor::All).unwrap();
        let vocab = v.vocab;
        let (mut worst, mut top1) = (0.0f32, 0);
        for (t, want) in want.iter().enumerate() {
            let got = &got[t * vocab..][..vocab];
            let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            for (a, b) in got.iter().zip(want) {
                worst = worst.max((a - b).abs() / scale);
            }
            top1 += (argmax(got) == argmax(want)) as usize;
        }
        eprintln!(
            "{} ({}): worst |Δlogit| / max|logit| = {worst:.2e}, top-1 {top1}/{}",
            v.schemes,
            v.backend,
            PROMPT.len()
        );
        // The integer schemes' tolerance (int8 activations), as in tests/compiled_tiny.rs.
        assert!(worst <= 0.05, "{}: {worst}", v.backend);
        // Token by token equals one batch.
        let mut step_cache = KvCache::new(v.layers, 64, v.kv_dim);
        for (t, &id) in PROMPT.iter().enumerate() {
            let step =
                (v.forward)(weights.bytes(), &mut step_cache, &[id], LogitsFor::Last).unwrap();
            for (a, b) in step.iter().zip(&got[t * vocab..][..vocab]) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{} position {t}: {a} vs {b}",
                    v.backend
                );
            }
        }
        ran += 1;
    }
    assert!(ran >= 1, "the scalar mixed variant always runs");
}
