//! KL divergence from top-K reference logits (`qwen kl`): the per-position formula against
//! the full KL, the file format and its checks, and a run on the fake model.

mod common;

use common::{qwen, TempDir};
use qwenc_runtime::eval::kl::{compare, compare_all, model_chunk_logits, run_kl};
use qwenc_runtime::model::Model;
use qwenc_runtime::reference_logits::{
    parse_reference, read_reference, write_reference, ChunkPlan, ReferenceHeader, ReferenceLogits,
    ReferenceRecord, MAGIC,
};
use qwenc_runtime::testing::{lcg_noise, lcg_step, FakeModel, VOCAB_SIZE};

/// Deterministic pseudo-random logits in [-scale, scale).
fn noise(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let values = lcg_noise(lcg_step(seed), n);
    values.into_iter().map(|v| v * scale).collect()
}

fn full_kl(p: &[f32], q: &[f32]) -> f64 {
    let lse = |x: &[f32]| {
        let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    p.iter()
        .zip(q)
        .map(|(&a, &b)| (a as f64 - lp).exp() * ((a as f64 - lp) - (b as f64 - lq)))
        .sum()
}

#[test]
fn identical_logits_give_zero_and_the_top_k_bucket_bounds_the_full_kl_from_below() {
    let vocab = 500;
    let p = noise(1, vocab, 6.0);
    let r = ReferenceRecord::from_logits(&p, 17, 32);
    assert_eq!(r.ids.len(), 32);
    assert!(
        r.logits.windows(2).all(|w| w[0] >= w[1]),
        "sorted by decreasing logit"
    );
    let same = compare(&r, &p, 17);
    assert!(same.kl.abs() < 1e-9, "{}", same.kl);
    assert!(same.top1_same);
    assert!((same.ref_logprob - same.model_logprob).abs() < 1e-6);

    for seed in 2..6 {
        let q: Vec<f32> = p
            .iter()
            .zip(noise(seed, vocab, 1.0))
            .map(|(a, b)| a + b)
            .collect();
        let exact = full_kl(&p, &q);
        let approx = compare(&r, &q, 17).kl;
        assert!(approx > 0.0);
        assert!(
            approx <= exact + 1e-9,
            "merging the tail can only lower KL: {approx} > {exact}"
        );
        // With K = vocabulary there is no tail: the formula is the exact KL.
        let all = ReferenceRecord::from_logits(&p, 17, vocab);
        let full = compare(&all, &q, 17).kl;
        assert!(
            (full - exact).abs() < 1e-6 * exact.max(1.0),
            "{full} vs {exact}"
        );
    }
}

/// A reference file made from the fake model itself.
fn fake_reference(
    model: &FakeModel,
    n_tokens: usize,
    context: usize,
    top_k: usize,
) -> ReferenceLogits {
    let tokens: Vec<u32> = model
        .tokenizer()
        .encode(&"the quick brown fox jumps over the lazy dog. ".repeat(20))[..n_tokens]
        .to_vec();
    let header = ReferenceHeader {
        model: "fake".into(),
        text: "inline".into(),
        vocab_size: VOCAB_SIZE,
        context,
        top_k,
        tokens: tokens[..(n_tokens / context) * context].to_vec(),
    };
    let plan = header.plan().unwrap();
    let mut cache = model.new_cache(context);
    let mut records = Vec::new();
    for c in 0..plan.chunks {
        let chunk = &header.tokens[c * context..][..context];
        let logits = model_chunk_logits(model, &mut cache, chunk, plan.first).unwrap();
        for (i, row) in logits.chunks(VOCAB_SIZE).enumerate() {
            records.push(ReferenceRecord::from_logits(
                row,
                chunk[plan.first + i + 1],
                top_k,
            ));
        }
    }
    ReferenceLogits {
        header,
        plan,
        records,
    }
}

#[test]
fn chunk_plan_scores_the_second_half_of_each_chunk() {
    let p = ChunkPlan::new(1000, 100).unwrap();
    assert_eq!(
        (p.chunks, p.first, p.scored_per_chunk(), p.positions()),
        (10, 50, 49, 490)
    );
    assert!(ChunkPlan::new(99, 100).is_err());
    assert!(ChunkPlan::new(100, 2).is_err());
}

#[test]
fn the_model_against_itself_has_zero_kl_and_a_perturbed_model_does_not() {
    let model = FakeModel::new();
    let reference = fake_reference(&model, 200, 64, 16);
    let mut p = |_: usize, _: usize| {};
    let report = run_kl(&model, &reference, &mut p).unwrap();
    assert_eq!(report.positions, 3 * 31);
    assert!(report.mean_kl < 1e-9, "{}", report.mean_kl);
    assert_eq!(report.top1_agreement, 1.0);
    assert!((report.ppl_model / report.ppl_reference - 1.0).abs() < 1e-6);

    // Another "model": the same logits plus noise.
    let mut cache = model.new_cache(64);
    let perturbed = compare_all(
        &reference,
        VOCAB_SIZE,
        &mut |chunk, first| {
            let mut l = model_chunk_logits(&model, &mut cache, chunk, first)?;
            for (x, n) in l.iter_mut().zip(noise(9, 1 << 20, 2.0).into_iter().cycle()) {
                *x += n;
            }
            Ok(l)
        },
        &mut p,
    )
    .unwrap();
    assert!(perturbed.mean_kl > 1e-3, "{}", perturbed.mean_kl);
    assert!(perturbed.p99_kl >= perturbed.median_kl && perturbed.max_kl >= perturbed.p99_kl);
    assert!((perturbed.ppl_reference - report.ppl_reference).abs() < 1e-9);

    // A model with another vocabulary is refused.
    let err = compare_all(&reference, VOCAB_SIZE + 1, &mut |_, _| Ok(vec![]), &mut p).unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
}

#[test]
fn the_file_round_trips_and_bad_files_are_named() {
    let model = FakeModel::new();
    let reference = fake_reference(&model, 130, 64, 8);
    let dir = TempDir::new("kl");
    let path = dir.join("reference.bin");
    write_reference(&path, &reference.header, &reference.records).unwrap();
    assert_eq!(read_reference(&path).unwrap(), reference);
    let bytes = std::fs::read(&path).unwrap();

    let err = |b: &[u8]| parse_reference(b).unwrap_err();
    assert!(err(b"nonsense").contains("QWENKL01"));
    assert!(err(&bytes[..bytes.len() - 1]).contains("bytes of records"));
    let mut bad = bytes.clone();
    bad[15] = 0x7f; // header length beyond the file
    assert!(err(&bad).contains("header of"));
    // The first record's first id set outside the vocabulary.
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    let mut bad = bytes.clone();
    bad[16 + hlen + 12..][..4].copy_from_slice(&(VOCAB_SIZE as u32).to_le_bytes());
    assert!(
        err(&bad).contains("outside the vocabulary"),
        "{}",
        err(&bad)
    );
    let mut bad = bytes.clone();
    bad[16 + hlen..][..8].copy_from_slice(&f64::NAN.to_le_bytes());
    assert!(err(&bad).contains("not finite"));
    assert_eq!(&bytes[..8], MAGIC);

    // Through the command line.
    let out = qwen(&model, &["kl", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["positions"], 2 * 31);
    assert!(v["mean_kl"].as_f64().unwrap() < 1e-9);
    std::fs::remove_file(&path).unwrap();
    let out = qwen(&model, &["kl", path.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains(path.to_str().unwrap()));
}
