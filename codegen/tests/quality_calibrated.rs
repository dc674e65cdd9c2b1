//! AWQ and GPTQ on the tiny model through the compressor's quantizer: the AWQ fold is exact
//! (without quantization the transformed model computes the same logits), and the compressed
//! directories of both methods open and record the method.

use qwenc_codegen::compress::calibrate::{
    capture, search_awq, CalibratedQuantizer, Method, Methods,
};
use qwenc_codegen::compress::format::CompressedModel;
use qwenc_codegen::compress::{CompressOptions, CompressPlan, SchemeArgs};
use qwenc_codegen::model_io::synthetic::{write_tiny_model, SyntheticOptions};
use qwenc_codegen::quant::awq::AwqOptions;
use qwenc_codegen::quant::gptq::GptqOptions;
use qwenc_codegen::quant::{Quantizer, Scheme};
use qwenc_codegen::reference::{KvCache, ReferenceWeights};
use qwenc_codegen::Checkpoint;
use qwenc_runtime::model::LogitsFor;

fn tokens() -> Vec<u32> {
    (0..96u32).map(|i| (i * 53 + 7) % 300).collect()
}

#[test]
fn awq_fold_is_exact_and_the_search_never_loses_to_rtn() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &SyntheticOptions::default()).unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let w = ReferenceWeights::load(&ckpt, &mut |_, _, _| {}).unwrap();
    let calib = capture(&w, &tokens(), 96, 48, &mut |_, _| {}).unwrap();
    assert_eq!(calib.layers.len(), 3);
    assert_eq!(calib.layers[0].down.len(), 96 * 192);
    let methods: Methods = "awq".parse().unwrap();
    let plan = CompressPlan::for_checkpoint(
        Checkpoint::open(dir.path()).unwrap(),
        dir.path(),
        &dir.path().join("out"),
        &SchemeArgs::default(),
    )
    .unwrap();
    let opts = AwqOptions {
        grid: 10,
        search_tokens: 96,
    };
    let scales = search_awq(&w, &calib, &methods, &plan.schemes, &opts, &mut |_, _| {});
    for s in &scales {
        for x in [&s.attn, &s.mlp, &s.down] {
            let x = x.as_ref().unwrap();
            assert!(x.error <= x.rtn_error, "{} > {}", x.error, x.rtn_error);
        }
    }
    // Apply only the fold (no quantization) to every tensor by name.
    let q = CalibratedQuantizer::new(methods, scales, None, 96, GptqOptions::default());
    let mut t = ReferenceWeights::load(&ckpt, &mut |_, _, _| {}).unwrap();
    for (l, layer) in t.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{l}");
        q.transform(
            &format!("{p}.input_layernorm.weight"),
            &mut layer.input_norm,
        );
        q.transform(
            &format!("{p}.post_attention_layernorm.weight"),
            &mut layer.post_norm,
        );
        for (n, m) in [
            ("self_attn.q_proj", &mut layer.q_proj),
            ("self_attn.k_proj", &mut layer.k_proj),
            ("self_attn.v_proj", &mut layer.v_proj),
            ("self_attn.o_proj", &mut layer.o_proj),
            ("mlp.gate_proj", &mut layer.gate_proj),
            ("mlp.up_proj", &mut layer.up_proj),
            ("mlp.down_proj", &mut layer.down_proj),
        ] {
            q.transform(&format!("{p}.{n}.weight"), m);
        }
    }
    assert_ne!(
        t.layers[0].q_proj, w.layers[0].q_proj,
        "the fold changed the weights"
    );
    let a = w
        .forward(&tokens()[..20], &mut KvCache::new(3), LogitsFor::All)
        .unwrap();
    let b = t
        .forward(&tokens()[..20], &mut KvCache::new(3), LogitsFor::All)
        .unwrap();
    let scale = a.iter().flatten().fold(0.0f32, |m, x| m.max(x.abs()));
    let worst = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "folded model differs by {worst} (scale {scale})"
    );
}

#[test]
fn compressed_awq_and_gptq_directories_open_and_name_their_method() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &SyntheticOptions::default()).unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let w = ReferenceWeights::load(&ckpt, &mut |_, _, _| {}).unwrap();
    let calib = capture(&w, &tokens(), 96, 96, &mut |_, _| {}).unwrap();
    for spec in ["awq", "gptq", "attn=gptq,mlp=awq"] {
        let methods: Methods = spec.parse().unwrap();
        let out = dir.path().join(format!("out-{spec}"));
        let options = CompressOptions {
            schemes: SchemeArgs {
                scheme: Some(Scheme::W4 {
                    group: 32,
                    asymmetric: false,
                }),
                ..Default::default()
            },
            force: false,
            ..Default::default()
        };
        let plan = CompressPlan::new(dir.path(), &out, &options).unwrap();
        let scales = if methods.attn == Method::Awq || methods.mlp == Method::Awq {
            search_awq(
                &w,
                &calib,
                &methods,
                &plan.schemes,
                &AwqOptions::default(),
                &mut |_, _| {},
            )
        } else {
            Vec::new()
        };
        let q = CalibratedQuantizer::new(
            methods,
            scales,
            Some(calib.clone()),
            96,
            GptqOptions::default(),
        );
        let report = plan.write(&q, &mut |_, _, _| {}).unwrap();
        assert!(
            report.manifest.quantizer.starts_with(spec),
            "{}",
            report.manifest.quantizer
        );
        assert!(
            report.manifest.quantizer.contains("96 tokens"),
            "{}",
            report.manifest.quantizer
        );
        CompressedModel::open(&out).unwrap();
    }
    assert!("awq,attn=bogus".parse::<Methods>().is_err());
    assert!("emb=awq"
        .parse::<Methods>()
        .unwrap_err()
        .contains("unknown class"));
}

#[test]
fn lm_head_gptq_lowers_the_logits_error_on_the_calibration_inputs() {
    use qwenc_codegen::model_io::checkpoint::LM_HEAD;
    use qwenc_codegen::quant::{dequantize, quantize_rtn};
    let dir = tempfile::tempdir().unwrap();
    let opts = SyntheticOptions {
        tie_word_embeddings: false,
        ..Default::default()
    };
    write_tiny_model(dir.path(), &opts).unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let w = ReferenceWeights::load(&ckpt, &mut |_, _, _| {}).unwrap();
    let calib = capture(&w, &tokens(), 96, 48, &mut |_, _| {}).unwrap();
    let (hidden, vocab) = (w.config.hidden_size, w.config.vocab_size);
    // The final norm's output at every calibration position.
    assert_eq!(calib.head.len(), 96 * hidden);
    assert_eq!(calib.inputs_of(LM_HEAD), Some(&calib.head[..]));

    let methods: Methods = "rtn,lm_head=gptq".parse().unwrap();
    assert_eq!(methods.to_string(), "rtn,lm_head=gptq");
    assert!(methods.needs_calibration() && methods.uses_gptq());
    let q = CalibratedQuantizer::new(
        methods,
        Vec::new(),
        Some(calib.clone()),
        96,
        GptqOptions::default(),
    );
    let head = w.lm_head.as_ref().unwrap();
    // Output error Σ_t |(W − Q(W)) x_t|² over the calibration inputs.
    let error = |m: &[f32]| -> f64 {
        calib
            .head
            .chunks(hidden)
            .map(|x| {
                (0..vocab)
                    .map(|r| {
                        let d: f64 = (0..hidden)
                            .map(|c| ((head[r * hidden + c] - m[r * hidden + c]) * x[c]) as f64)
                            .sum();
                        d * d
                    })
                    .sum::<f64>()
            })
            .sum()
    };
    for scheme in ["w4g32", "w3g32a", "w2g32a"] {
        let scheme: Scheme = scheme.parse().unwrap();
        let gptq = dequantize(&q.quantize(LM_HEAD, head, vocab, hidden, scheme));
        let rtn = dequantize(&quantize_rtn(head, vocab, hidden, scheme));
        let (e_gptq, e_rtn) = (error(&gptq), error(&rtn));
        assert!(
            e_gptq < 0.9 * e_rtn,
            "{scheme}: GPTQ {e_gptq} vs RTN {e_rtn}"
        );
        // The embedding stays RTN.
        let embed =
            dequantize(&q.quantize("model.embed_tokens.weight", &w.embed, vocab, hidden, scheme));
        assert_eq!(
            embed,
            dequantize(&quantize_rtn(&w.embed, vocab, hidden, scheme))
        );
    }
    assert!("lm_head=awq"
        .parse::<Methods>()
        .unwrap_err()
        .contains("rtn or gptq"));
}
