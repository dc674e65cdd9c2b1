//! The compiled tiny model, in every scheme, against the f32 reference forward pass run on
//! the same weights after quantization (dequantized back to f32). For `f32` and `bf16` the
//! only difference is summation order; the integer schemes also quantize activations to int8
//! in blocks of 32, which the tolerance below accounts for.

mod common;

use std::path::PathBuf;

use common::{runnable, tiny_reference, PROMPT};
use qwenc_codegen::compile::build_model::parse_variant;
use qwenc_codegen::quant::{dequantize, quantize_rtn, Scheme};
use qwenc_codegen::reference::{argmax, KvCache as RefCache, ReferenceWeights};
use qwenc_runtime::model::{ForwardError, KvCache, LogitsFor};
use qwenc_runtime::weights::Weights;

struct Variant {
    schemes: &'static str,
    backend: &'static str,
    forward: qwenc::Forward,
    weights: Weights,
    layers: usize,
    kv_dim: usize,
}

fn variants() -> Vec<Variant> {
    let all = qwenc::variants::ALL;
    // build.rs: TINY_VARIANTS plus the target arch's other backends.
    let expected = if cfg!(target_arch = "x86_64") {
        19
    } else if cfg!(target_arch = "aarch64") {
        24
    } else {
        16
    };
    assert_eq!(
        all.len(),
        expected,
        "the tiny build compiles {expected} variants (build.rs tiny_variants)"
    );
    runnable(all)
        .into_iter()
        .map(|(v, weights)| Variant {
            schemes: v.schemes,
            backend: v.backend,
            forward: v.forward,
            weights,
            layers: v.layers,
            kv_dim: v.kv_dim,
        })
        .collect()
}

/// The reference model with every matrix replaced by its quantized-then-dequantized value.
fn reference_for(variant: &str) -> ReferenceWeights {
    let spec = parse_variant(variant).unwrap();
    let mut w = tiny_reference(spec.tied);
    let s = spec.schemes;
    let c = w.config.clone();
    let round = |m: &mut Vec<f32>, rows: usize, cols: usize, scheme: Scheme| {
        *m = dequantize(&quantize_rtn(m, rows, cols, scheme));
    };
    for layer in &mut w.layers {
        round(&mut layer.q_proj, c.q_dim(), c.hidden_size, s.attn);
        round(&mut layer.k_proj, c.kv_dim(), c.hidden_size, s.attn);
        round(&mut layer.v_proj, c.kv_dim(), c.hidden_size, s.attn);
        round(&mut layer.o_proj, c.hidden_size, c.q_dim(), s.attn);
        round(
            &mut layer.gate_proj,
            c.intermediate_size,
            c.hidden_size,
            s.mlp,
        );
        round(
            &mut layer.up_proj,
            c.intermediate_size,
            c.hidden_size,
            s.mlp,
        );
        round(
            &mut layer.down_proj,
            c.hidden_size,
            c.intermediate_size,
            s.mlp,
        );
    }
    match w.lm_head.as_mut() {
        Some(head) => {
            round(&mut w.embed, c.vocab_size, c.hidden_size, s.embed);
            round(head, c.vocab_size, c.hidden_size, s.lm_head);
        }
        // Tied: one matrix, in the lm_head's scheme.
        None => round(&mut w.embed, c.vocab_size, c.hidden_size, s.lm_head),
    }
    w
}

fn integer_scheme(variant: &str) -> bool {
    let s = parse_variant(variant).unwrap().schemes;
    [s.attn, s.mlp, s.lm_head]
        .iter()
        .any(|x| !matches!(x, Scheme::F32 | Scheme::Bf16))
}

#[test]
fn every_scheme_matches_the_reference_on_its_own_weights() {
    for v in variants() {
        let reference = reference_for(v.schemes);
        let want = reference
            .forward(&PROMPT, &mut RefCache::new(v.layers), LogitsFor::All)
            .unwrap();
        let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
        let got = (v.forward)(v.weights.bytes(), &mut cache, &PROMPT, LogitsFor::All).unwrap();
        assert_eq!(cache.len, PROMPT.len());
        let vocab = want[0].len();
        // f32/bf16: summation order only. Integer schemes: int8 activations (half a step of
        // max|x|/127 per block of 32) on top, measured at ~1% of the logit scale here.
        let tolerance = if integer_scheme(v.schemes) {
            0.05
        } else {
            1e-4
        };
        let mut worst = 0.0f32;
        let mut top1_same = 0;
        for (t, want) in want.iter().enumerate() {
            let got = &got[t * vocab..][..vocab];
            let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            for (a, b) in got.iter().zip(want) {
                worst = worst.max((a - b).abs() / scale);
            }
            top1_same += (argmax(got) == argmax(want)) as usize;
        }
        eprintln!(
            "{:<28} {:<11} worst |Δlogit| / max|logit| = {worst:.2e}, top-1 {top1_same}/{}",
            v.schemes,
            v.backend,
            PROMPT.len()
        );
        assert!(worst <= tolerance, "{}: {worst} > {tolerance}", v.schemes);
        if !integer_scheme(v.schemes) {
            assert_eq!(top1_same, PROMPT.len(), "{}", v.schemes);
        }
    }
}

#[test]
fn token_by_token_equals_one_batch() {
    for v in variants() {
        let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
        let batch = (v.forward)(v.weights.bytes(), &mut cache, &PROMPT, LogitsFor::All).unwrap();
        let vocab = batch.len() / PROMPT.len();
        let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
        for (t, &id) in PROMPT.iter().enumerate() {
            let step = (v.forward)(v.weights.bytes(), &mut cache, &[id], LogitsFor::Last).unwrap();
            for (a, b) in step.iter().zip(&batch[t * vocab..][..vocab]) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{} position {t}: {a} vs {b}",
                    v.schemes
                );
            }
        }
    }
}

#[test]
fn bad_input_is_refused_and_leaves_the_cache_alone() {
    let v = variants()
        .into_iter()
        .find(|v| v.schemes == "w4g32")
        .unwrap();
    let mut cache = KvCache::new(v.layers, 8, v.kv_dim);
    let err =
        (v.forward)(v.weights.bytes(), &mut cache, &[1, 2, 320], LogitsFor::Last).unwrap_err();
    assert_eq!(
        err,
        ForwardError::TokenOutOfRange {
            id: 320,
            pos: 2,
            vocab: 320
        }
    );
    let err = (v.forward)(v.weights.bytes(), &mut cache, &[1; 9], LogitsFor::Last).unwrap_err();
    assert_eq!(err, ForwardError::ContextOverflow { needed: 9, max: 8 });
    assert_eq!(cache.len, 0);
    assert!(
        (v.forward)(v.weights.bytes(), &mut cache, &[], LogitsFor::Last)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_foreign_weights_file_is_refused() {
    let m = qwenc::Variant::find("w8").unwrap();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_qwen"));
    // The f32 variant's file, claimed to be the w8 one: wrong size.
    let f32_file = exe.with_file_name(qwenc::Variant::find("f32").unwrap().weights_file);
    let err = Weights::open(&f32_file, m.weights_len, m.weights_hash)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("bytes, this executable was built for"),
        "{err}"
    );
    // Same size, different content.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.weights");
    let mut bytes = std::fs::read(exe.with_file_name(m.weights_file)).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = Weights::open(&path, m.weights_len, m.weights_hash)
        .err()
        .unwrap();
    assert!(err.to_string().contains("content hash"), "{err}");
}

/// `qwen kl` on the tiny model: reference logits from the unquantized f32 reference, then
/// the compiled f32 variant (KL ≈ 0: summation order only) and a quantized one (KL > 0).
#[test]
fn kl_divergence_is_zero_for_f32_and_positive_for_w4() {
    use qwenc_codegen::reference::kl::reference_records;
    use qwenc_runtime::eval::kl::compare_all;
    use qwenc_runtime::reference_logits::{ReferenceHeader, ReferenceLogits};
    let reference = reference_for("f32");
    let context = 32;
    let tokens: Vec<u32> = (0..3 * context as u32)
        .map(|i| (i * 37 + 11) % 300)
        .collect();
    let vocab = reference.config.vocab_size;
    let header = ReferenceHeader {
        model: "tiny".into(),
        text: "ids".into(),
        vocab_size: vocab,
        context,
        top_k: 16,
        tokens,
    };
    let plan = header.plan().unwrap();
    let mut chunks_done = 0;
    let records =
        reference_records(&reference, &header, &mut |done, _| chunks_done = done).unwrap();
    assert_eq!((chunks_done, records.len()), (3, plan.positions()));
    let file = ReferenceLogits {
        header,
        plan,
        records,
    };
    let kl_of = |schemes: &str| {
        let v = variants()
            .into_iter()
            .find(|v| v.schemes == schemes)
            .unwrap();
        let mut cache = KvCache::new(v.layers, context, v.kv_dim);
        compare_all(
            &file,
            vocab,
            &mut |chunk, first| {
                cache.truncate(0);
                (v.forward)(
                    v.weights.bytes(),
                    &mut cache,
                    &chunk[..first],
                    LogitsFor::Last,
                )?;
                Ok((v.forward)(
                    v.weights.bytes(),
                    &mut cache,
                    &chunk[first..context - 1],
                    LogitsFor::All,
                )?)
            },
            &mut |_, _| {},
        )
        .unwrap()
    };
    let f32 = kl_of("f32");
    let w4 = kl_of("w4g32");
    eprintln!(
        "tiny KL: f32 {:.3e} (top-1 {:.3}), w4g32 {:.3e} (top-1 {:.3})",
        f32.mean_kl, f32.top1_agreement, w4.mean_kl, w4.top1_agreement
    );
    assert_eq!(f32.positions, 3 * 15);
    assert!(f32.mean_kl < 1e-9, "{}", f32.mean_kl);
    assert_eq!(f32.top1_agreement, 1.0);
    assert!((f32.ppl_model / f32.ppl_reference - 1.0).abs() < 1e-5);
    assert!(
        w4.mean_kl > 1e-6 && w4.mean_kl > 1000.0 * f32.mean_kl.max(1e-12),
        "{}",
        w4.mean_kl
    );
}

#[test]
fn forward_into_replaces_what_the_buffer_held() {
    use qwenc::generated as g;
    use qwenc_runtime::model::Model;
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_qwen"));
    let weights = Weights::open(
        &exe.with_file_name("qwen.weights"),
        g::WEIGHTS_LEN,
        g::WEIGHTS_HASH,
    )
    .unwrap();
    let model = qwenc::CompiledModel::with_weights(weights).unwrap();
    let mut cache = model.new_cache(64);
    let want = model.forward(&mut cache, &PROMPT, LogitsFor::All).unwrap();
    // A buffer holding more and other values than the result: decode reuses one like it.
    let mut out = vec![f32::NAN; want.len() + 7];
    let mut cache = model.new_cache(64);
    model
        .forward_into(&mut cache, &PROMPT[..5], LogitsFor::Last, &mut out)
        .unwrap();
    assert_eq!(out.len(), g::VOCAB);
    model
        .forward_into(&mut cache, &PROMPT[5..], LogitsFor::All, &mut out)
        .unwrap();
    assert_eq!(out.len(), want.len() - 5 * g::VOCAB);
    for (a, b) in out.iter().zip(&want[5 * g::VOCAB..]) {
        // Other pass sizes: as token_by_token_equals_one_batch.
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
}
