//! `qwenc compress --budget-mb` on the tiny synthetic model: a middle budget gives mixed
//! schemes that fit, the compiler plans and generates them (one kernel per distinct shape and
//! scheme, a kernel table per matrix kind), a budget below the cheapest assignment is a named
//! error, and the output is deterministic. The compiled mixed model's logits are checked
//! against the reference in `tests/compiled_mixed.rs` (the workspace's tests).

use std::collections::BTreeSet;
use std::path::Path;

use qwenc_codegen::compile::build_model::compile_model;
use qwenc_codegen::compile::emit::Backend;
use qwenc_codegen::compress::budget::BudgetError;
use qwenc_codegen::compress::format::{MANIFEST_FILE, SAFETENSORS_FILE};
use qwenc_codegen::compress::pipeline::{self, Budget, CalibrationInput};
use qwenc_codegen::compress::{CompressError, CompressOptions, CompressReport};
use qwenc_codegen::model_io::synthetic::{
    synthetic_calibration_ids, write_tiny_model, SyntheticOptions,
};

/// `qwenc compress SRC -o OUT --budget-mb` (in bytes) with round-to-nearest, calibrated on
/// 96 [`synthetic_calibration_ids`] of the tiny vocabulary (300 byte-level tokens and
/// merges) in sequences of 32.
fn run(src: &Path, out: &Path, budget: u64) -> Result<CompressReport, CompressError> {
    let options = pipeline::Options {
        plan: CompressOptions {
            force: true,
            ..Default::default()
        },
        budget: Some(Budget::Bytes(budget)),
        calibration: CalibrationInput::ids(synthetic_calibration_ids(96, 300), 32),
        ..Default::default()
    };
    pipeline::run(src, out, &options, &mut |_| {})
}

/// The smallest file any assignment gives, read from the error of a 1-byte budget.
fn minimum(src: &Path, out: &Path) -> u64 {
    match run(src, out, 1) {
        Err(CompressError::Budget(BudgetError::TooSmall {
            minimum, budget: 1, ..
        })) => minimum,
        other => panic!(
            "expected a TooSmall budget error, got {:?}",
            other.map(|r| r.safetensors_bytes)
        ),
    }
}

#[test]
fn a_middle_budget_mixes_schemes_fits_and_compiles() {
    for tied in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        write_tiny_model(
            &src,
            &SyntheticOptions {
                tie_word_embeddings: tied,
                ..Default::default()
            },
        )
        .unwrap();
        let min = minimum(&src, &dir.path().join("min"));
        let max = run(&src, &dir.path().join("max"), u64::MAX / 2)
            .unwrap()
            .safetensors_bytes;
        assert!(max > min, "{max} {min}");
        let budget = min + (max - min) / 3;
        let out = dir.path().join("mixed");
        let report = run(&src, &out, budget).unwrap();
        assert!(
            report.safetensors_bytes <= budget,
            "{} > {budget}",
            report.safetensors_bytes
        );
        let m = &report.manifest;
        let b = m.budget.as_ref().expect("a budget manifest records it");
        assert_eq!(b.budget_bytes, budget);
        assert!(b.predicted_cost < b.predicted_cost_minimum, "{b:?}");
        let schemes: BTreeSet<String> = m
            .tensors
            .values()
            .filter(|e| e.is_matrix())
            .map(|e| e.scheme.to_string())
            .collect();
        assert!(schemes.len() >= 2, "one scheme only: {schemes:?}");
        // Every matrix has a predicted cost, vectors none; fused parts share a scheme.
        for (name, e) in &m.tensors {
            assert_eq!(e.predicted_cost.is_some(), e.is_matrix(), "{name}");
        }
        for l in 0..3 {
            let p = format!("model.layers.{l}");
            let sch = |n: &str| m.tensors[&format!("{p}.{n}.weight")].scheme;
            assert_eq!(sch("self_attn.q_proj"), sch("self_attn.k_proj"));
            assert_eq!(sch("self_attn.q_proj"), sch("self_attn.v_proj"));
            assert_eq!(sch("mlp.gate_proj"), sch("mlp.up_proj"));
        }
        // More budget never predicts more loss.
        let more = run(&src, &dir.path().join("more"), budget + (max - min) / 3).unwrap();
        assert!(more.manifest.budget.unwrap().predicted_cost <= b.predicted_cost);

        for backend in [Backend::Scalar, Backend::native(std::env::consts::ARCH)] {
            let compiled = compile_model(&out, None, backend, &mut |_, _, _| {}).unwrap();
            let code = &compiled.files["model.rs"];
            let kinds = [
                "QKV_KERNEL",
                "O_PROJ_KERNEL",
                "GATE_UP_KERNEL",
                "DOWN_KERNEL",
            ];
            assert_eq!(
                compiled.plan.is_mixed(),
                kinds.iter().any(|k| code.contains(&format!("const {k}"))),
                "{}",
                backend.name()
            );
            // One kernel per distinct (shape, scheme).
            for shape in compiled.plan.matmul_shapes() {
                let name = format!("_matmul_{}_{}x{}(", shape.scheme, shape.rows, shape.cols);
                assert!(code.contains(&name), "{} lacks {name}", backend.name());
            }
        }
    }
}

#[test]
fn a_budget_below_the_cheapest_assignment_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_tiny_model(&src, &SyntheticOptions::default()).unwrap();
    let min = minimum(&src, &dir.path().join("a"));
    let out = dir.path().join("b");
    let err = run(&src, &out, min - 1).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, CompressError::Budget(BudgetError::TooSmall { .. })),
        "{text}"
    );
    assert!(
        text.contains("below the smallest assignment") && text.contains("--budget-mb"),
        "{text}"
    );
    assert!(
        !out.join(MANIFEST_FILE).exists(),
        "nothing is written when the budget fails"
    );
    // Exactly the minimum fits: every matrix in 2-bit codes.
    let report = run(&src, &out, min).unwrap();
    assert!(report.safetensors_bytes <= min);
    for (name, e) in report
        .manifest
        .tensors
        .iter()
        .filter(|(_, e)| e.is_matrix())
    {
        assert_eq!(e.scheme.code_bits(), Some(2), "{name}: {}", e.scheme);
    }
}

#[test]
fn the_budget_manifest_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_tiny_model(&src, &SyntheticOptions::default()).unwrap();
    let min = minimum(&src, &dir.path().join("m"));
    let budget = min + min / 10;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run(&src, &a, budget).unwrap();
    run(&src, &b, budget).unwrap();
    for file in [MANIFEST_FILE, SAFETENSORS_FILE] {
        assert_eq!(
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
            "{file}"
        );
    }
}
