//! `qwenc compress` and the compressed model directory on the tiny synthetic model (tied and
//! untied, f32 and bf16 sources, every scheme): exact round trips, error bounds, determinism,
//! class overrides, named errors on broken directories; and one ignored test on the dev GGUF.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::dev_gguf;
use qwenc_codegen::compress::format::{
    CompressedModel, TensorClass, FORMAT, MANIFEST_FILE, SAFETENSORS_FILE,
};
use qwenc_codegen::compress::pipeline;
use qwenc_codegen::compress::{
    sha256_f32, CompressError, CompressOptions, CompressPlan, CompressReport, SchemeArgs,
};
use qwenc_codegen::model_io::checkpoint::{EMBED, LM_HEAD};
use qwenc_codegen::model_io::synthetic::{
    tiny_config, write_tiny_model, StoreAs, SyntheticOptions,
};
use qwenc_codegen::quant::{dequantize, quantize_rtn, QuantizedData, QuantizedMatrix, Rtn, Scheme};
use qwenc_codegen::reference::ReferenceWeights;
use qwenc_codegen::{Checkpoint, LoadError};

fn s(name: &str) -> Scheme {
    name.parse().unwrap()
}

fn tiny(dir: &Path, tied: bool, store_as: StoreAs) -> PathBuf {
    let src = dir.join(format!("src-{tied}-{store_as:?}"));
    write_tiny_model(
        &src,
        &SyntheticOptions {
            tie_word_embeddings: tied,
            store_as,
            ..Default::default()
        },
    )
    .unwrap();
    src
}

/// `qwenc compress` with round-to-nearest and no budget.
fn compress(
    src: &Path,
    out: &Path,
    options: &CompressOptions,
) -> Result<CompressReport, CompressError> {
    let options = pipeline::Options {
        plan: options.clone(),
        ..Default::default()
    };
    pipeline::run(src, out, &options, &mut |_| {})
}

fn run(src: &Path, out: &Path, schemes: SchemeArgs) -> CompressReport {
    compress(
        src,
        out,
        &CompressOptions {
            schemes,
            force: false,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("compressing {}: {e}", src.display()))
}

/// Every matrix in `scheme`.
fn all(scheme: Scheme) -> SchemeArgs {
    SchemeArgs {
        scheme: Some(scheme),
        embed: Some(scheme),
        lm_head: Some(scheme),
        ..Default::default()
    }
}

/// `w4g64a` for the MLP unless the tiny model's ffn width is not a multiple of 64.
fn w4g64a_mlp() -> Option<Scheme> {
    (tiny_config(false).intermediate_size & 63 != 0).then(|| s("w4g32a"))
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `dequantize(m)` is within the scheme's rounding error of `w`.
fn check_error_bound(name: &str, w: &[f32], m: &QuantizedMatrix) {
    let back = dequantize(m);
    assert_eq!(back.len(), w.len());
    let cols = m.cols;
    match (&m.data, m.scheme) {
        (QuantizedData::F32(_), _) => assert_eq!(back, w, "{name}"),
        (QuantizedData::Bf16(_), _) => {
            for (x, y) in w.iter().zip(&back) {
                assert!((x - y).abs() <= x.abs() / 256.0, "{name}: {x} -> {y}");
            }
        }
        (QuantizedData::W8 { scales, .. }, _) => {
            for (r, scale) in scales.iter().enumerate() {
                let row = &w[r * cols..][..cols];
                assert_eq!(*scale, max_abs(row) / 127.0, "{name} row {r}");
                for (x, y) in row.iter().zip(&back[r * cols..][..cols]) {
                    assert!(
                        (x - y).abs() <= scale * 0.5001,
                        "{name} row {r}: {x} -> {y} (scale {scale})"
                    );
                }
            }
        }
        (QuantizedData::Grouped { scales, mins, .. }, Scheme::W4 { group, .. }) => {
            for (g, d) in scales.iter().enumerate() {
                let d = d.to_f32().abs();
                let bound = match mins {
                    // The least-squares fit may clip an outlier at either end to lower the
                    // group's total error (quant::rtn tests that it never raises it): a few
                    // steps at most.
                    Some(mins) => 4.0 * d + mins[g].to_f32().abs() * 1e-3 + 1e-6,
                    // Codes span [-8d, 7d]: up to one step for the opposite extreme.
                    None => d + 8.0 * d * 1e-3 + 1e-7,
                };
                for (x, y) in w[g * group..][..group]
                    .iter()
                    .zip(&back[g * group..][..group])
                {
                    assert!(
                        (x - y).abs() <= bound,
                        "{name} group {g}: {x} -> {y} (step {d})"
                    );
                }
            }
        }
        other => panic!("{name}: unexpected data for {:?}", other.1),
    }
}

/// The directory's files agree with the manifest and the safetensors crate can read it.
fn check_sizes(out: &Path, model: &CompressedModel) {
    let bytes = std::fs::read(out.join(SAFETENSORS_FILE)).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let m = &model.manifest;
    assert_eq!(bytes.len() as u64, 8 + header_len + m.totals.bytes);
    assert_eq!(
        m.totals.bytes,
        m.tensors.values().map(|e| e.bytes).sum::<u64>()
    );
    assert_eq!(
        m.totals.params,
        m.tensors.values().map(|e| e.params()).sum::<u64>()
    );
    assert_eq!(
        m.totals.bits_per_weight,
        m.totals.bytes as f64 * 8.0 / m.totals.params as f64
    );
    for (name, e) in &m.tensors {
        assert_eq!(
            e.bits_per_weight,
            e.bytes as f64 * 8.0 / e.params() as f64,
            "{name}"
        );
        if let [_, cols] = e.shape[..] {
            assert!(
                (e.bits_per_weight - e.scheme.bits_per_weight(cols)).abs() < 1e-12,
                "{name}"
            );
        }
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("a valid safetensors file");
    let stored: usize = st.tensors().iter().map(|(_, t)| t.data().len()).sum();
    assert_eq!(stored as u64, m.totals.bytes);
}

#[test]
fn every_scheme_round_trips_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for tied in [false, true] {
        for store_as in [StoreAs::F32, StoreAs::BF16] {
            let src = tiny(tmp.path(), tied, store_as);
            let ckpt = Checkpoint::open(&src).unwrap();
            let plan = ReferenceWeights::tensor_plan(&ckpt.config, !tied);
            for (label, args) in [
                ("f32", all(s("f32"))),
                ("bf16", all(s("bf16"))),
                ("w8", all(s("w8"))),
                ("w4g32", all(s("w4g32"))),
                // All of it when the tiny model's ffn width allows groups of 64.
                (
                    "w4g64a",
                    SchemeArgs {
                        mlp: w4g64a_mlp(),
                        ..all(s("w4g64a"))
                    },
                ),
            ] {
                let out = tmp.path().join(format!("out-{tied}-{store_as:?}-{label}"));
                let report = run(&src, &out, args);
                let model = CompressedModel::open(&out).unwrap();
                assert_eq!(model.manifest, report.manifest);
                assert_eq!(model.config, ckpt.config);
                assert_eq!(model.tokenizer, ckpt.tokenizer);
                assert_eq!(model.manifest.format, FORMAT);
                assert_eq!(model.manifest.tied_embeddings, tied);
                assert_eq!(model.manifest.source.format, "hf");
                assert_eq!(model.manifest.tensors.len(), plan.len());
                let expected_dtype = if store_as == StoreAs::F32 {
                    "F32"
                } else {
                    "BF16"
                };
                for (name, shape) in &plan {
                    let w = ckpt.load(name, shape).unwrap();
                    let entry = &model.manifest.tensors[name];
                    assert_eq!(entry.source_sha256, sha256_f32(&w), "{name}");
                    assert_eq!(entry.source_dtype, expected_dtype, "{name}");
                    assert_eq!(&entry.shape, shape);
                    match shape[..] {
                        [rows, cols] => {
                            let m = model.matrix(name).unwrap();
                            let scheme = match TensorClass::of(name) {
                                TensorClass::Mlp => args.mlp.or(args.scheme).unwrap(),
                                _ => args.scheme.unwrap(),
                            };
                            assert_eq!(m.scheme, scheme, "{name}");
                            assert_eq!(m, quantize_rtn(&w, rows, cols, scheme), "{label} {name}");
                            check_error_bound(name, &w, &m);
                            assert!(model.vector(name).is_err());
                        }
                        _ => {
                            assert_eq!(model.vector(name).unwrap(), w, "{name}");
                            assert_eq!(entry.scheme, Scheme::F32);
                            assert!(model.matrix(name).is_err());
                        }
                    }
                }
                if tied {
                    assert_eq!(model.matrix(LM_HEAD).unwrap(), model.matrix(EMBED).unwrap());
                    assert!(!model.manifest.tensors.contains_key(LM_HEAD));
                }
                check_sizes(&out, &model);
                assert_eq!(model.digest().len(), 64);
            }
        }
    }
}

fn dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn compressing_twice_gives_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny(tmp.path(), false, StoreAs::BF16);
    let args = SchemeArgs {
        attn: Some(s("w4g32a")),
        ..Default::default()
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run(&src, &a, args);
    run(&src, &b, args);
    let (fa, fb) = (dir_files(&a), dir_files(&b));
    let names: Vec<&str> = fa.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "config.json",
            "manifest.json",
            "model.safetensors",
            "tokenizer.json"
        ]
    );
    assert_eq!(fa, fb);
    let (ma, mb) = (
        CompressedModel::open(&a).unwrap(),
        CompressedModel::open(&b).unwrap(),
    );
    assert_eq!(ma.digest(), mb.digest());
    // The digest covers the data: a different scheme gives a different digest.
    let c = tmp.path().join("c");
    run(&src, &c, SchemeArgs::default());
    assert_ne!(CompressedModel::open(&c).unwrap().digest(), ma.digest());
}

/// Names of the tensors stored in the safetensors file.
fn stored_names(out: &Path) -> BTreeMap<String, (String, Vec<usize>)> {
    let bytes = std::fs::read(out.join(SAFETENSORS_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, t)| (n, (format!("{:?}", t.dtype()), t.shape().to_vec())))
        .collect()
}

#[test]
fn class_overrides_land_on_the_right_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny(tmp.path(), false, StoreAs::F32);
    let out = tmp.path().join("out");
    let args = SchemeArgs {
        scheme: Some(s("w4g32")),
        attn: Some(s("w8")),
        mlp: Some(s("bf16")),
        embed: Some(s("f32")),
        lm_head: Some(s("w4g32a")),
    };
    let report = run(&src, &out, args);
    assert!(report.warnings.is_empty());
    let m = &report.manifest;
    assert_eq!(
        (
            m.schemes.attn,
            m.schemes.mlp,
            m.schemes.embed,
            m.schemes.lm_head
        ),
        (s("w8"), s("bf16"), s("f32"), s("w4g32a"))
    );
    for (name, entry) in &m.tensors {
        let want = match TensorClass::of(name) {
            TensorClass::Attn => s("w8"),
            TensorClass::Mlp => s("bf16"),
            TensorClass::Embed => s("f32"),
            TensorClass::LmHead => s("w4g32a"),
            TensorClass::Vector => s("f32"),
        };
        assert_eq!(entry.scheme, want, "{name}");
    }
    let stored = stored_names(&out);
    let p = "model.layers.1";
    let ffn = tiny_config(false).intermediate_size;
    let expect = [
        (format!("{p}.self_attn.q_proj.weight.q"), "I8", vec![64, 64]),
        (
            format!("{p}.self_attn.q_proj.weight.scale"),
            "F32",
            vec![64],
        ),
        (format!("{p}.self_attn.k_proj.weight.q"), "I8", vec![32, 64]),
        (format!("{p}.self_attn.q_proj.bias"), "F32", vec![64]),
        (format!("{p}.mlp.down_proj.weight"), "BF16", vec![64, ffn]),
        (format!("{p}.input_layernorm.weight"), "F32", vec![64]),
        (EMBED.to_string(), "F32", vec![320, 64]),
        ("lm_head.weight.q".to_string(), "U8", vec![320, 32]),
        ("lm_head.weight.scale".to_string(), "F16", vec![320, 2]),
        ("lm_head.weight.min".to_string(), "F16", vec![320, 2]),
    ];
    for (name, dtype, shape) in expect {
        assert_eq!(
            stored.get(&name),
            Some(&(dtype.to_string(), shape)),
            "{name}"
        );
    }
    assert!(!stored.contains_key(&format!("{p}.self_attn.q_proj.weight")));
    // 3 layers × (7 matrices + 3 biases + 2 norms) + final norm, plus parts.
    let parts: usize = m.tensors.keys().map(|n| m.parts(n).unwrap().len()).sum();
    assert_eq!(stored.len(), parts);

    // Defaults: w4g32 for the layers, w8 for embed and lm_head.
    let out = tmp.path().join("defaults");
    let m = run(&src, &out, SchemeArgs::default()).manifest;
    assert_eq!(m.tensors[EMBED].scheme, s("w8"));
    assert_eq!(m.tensors[LM_HEAD].scheme, s("w8"));
    assert_eq!(
        m.tensors[&format!("{p}.mlp.up_proj.weight")].scheme,
        s("w4g32")
    );
    assert_eq!(
        m.tensors[&format!("{p}.self_attn.o_proj.weight")].bits_per_weight,
        4.5
    );
}

#[test]
fn tied_models_store_the_embedding_once_in_the_lm_head_scheme() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny(tmp.path(), true, StoreAs::F32);
    let out = tmp.path().join("out");
    let args = SchemeArgs {
        embed: Some(s("w4g32")),
        lm_head: Some(s("bf16")),
        ..Default::default()
    };
    let report = run(&src, &out, args);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("bf16") && report.warnings[0].contains("--embed w4g32"));
    let m = &report.manifest;
    assert!(m.tied_embeddings);
    assert_eq!((m.schemes.embed, m.schemes.lm_head), (s("bf16"), s("bf16")));
    assert_eq!(m.tensors[EMBED].scheme, s("bf16"));
    assert!(m.tensors.keys().all(|n| !n.starts_with("lm_head")));
    let stored = stored_names(&out);
    assert!(
        stored.keys().all(|n| !n.starts_with("lm_head")),
        "{stored:?}"
    );
    assert_eq!(stored[EMBED].0, "BF16");
    let model = CompressedModel::open(&out).unwrap();
    assert_eq!(model.scheme(LM_HEAD), Some(s("bf16")));

    // What the packer sees: the stored matrix in the stored scheme, or a named error.
    use qwenc_codegen::compile::pack::WeightSource;
    let source: &dyn WeightSource = &model;
    let head = source.matrix(LM_HEAD, 320, 64, s("bf16")).unwrap();
    assert_eq!(head, model.matrix(EMBED).unwrap());
    let err = source.matrix(LM_HEAD, 320, 64, s("w8")).unwrap_err();
    assert!(err.to_string().contains("stored in bf16"), "{err}");
    assert!(source.matrix(LM_HEAD, 64, 320, s("bf16")).is_err());
    assert_eq!(source.vector("model.norm.weight", 64).unwrap().len(), 64);
    assert!(source.vector("model.norm.weight", 65).is_err());
}

#[test]
fn tie_embeddings_stores_the_lm_head_once_for_both() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny(tmp.path(), false, StoreAs::F32);
    let out = tmp.path().join("out");
    let options = CompressOptions {
        schemes: SchemeArgs {
            lm_head: Some(s("w4g32a")),
            ..Default::default()
        },
        tie_embeddings: true,
        ..Default::default()
    };
    let report = compress(&src, &out, &options).unwrap();
    let m = &report.manifest;
    assert!(m.tied_embeddings);
    assert!(m.tensors.keys().all(|n| !n.starts_with("lm_head")));
    assert_eq!(m.tensors[EMBED].scheme, s("w4g32a"));

    // The stored matrix is the source's lm_head, quantized; not its embedding.
    let ckpt = Checkpoint::open(&src).unwrap();
    let shape = [ckpt.config.vocab_size, ckpt.config.hidden_size];
    let head = ckpt.load(LM_HEAD, &shape).unwrap();
    let embed = ckpt.load(EMBED, &shape).unwrap();
    assert_eq!(m.tensors[EMBED].source_sha256, sha256_f32(&head));
    let model = CompressedModel::open(&out).unwrap();
    let expected = quantize_rtn(&head, shape[0], shape[1], s("w4g32a"));
    assert_eq!(model.matrix(EMBED).unwrap(), expected);
    assert!(model.config.tie_word_embeddings);

    // The recorded distance is ‖E − L‖ / ‖L‖ of the source (independent random matrices here).
    let d = m.source.embedding_from_lm_head.expect("recorded");
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let diff: Vec<f64> = embed
        .iter()
        .zip(&head)
        .map(|(&e, &l)| (e - l) as f64)
        .collect();
    let head64: Vec<f64> = head.iter().map(|&l| l as f64).collect();
    assert!((d - norm(&diff) / norm(&head64)).abs() < 1e-9, "{d}");
    assert!(d > 0.5, "the tiny model's matrices are unrelated: {d}");

    // A model that already ties has nothing to share: a named error, nothing written.
    let tied_src = tiny(tmp.path(), true, StoreAs::F32);
    let out2 = tmp.path().join("out2");
    let err = compress(&tied_src, &out2, &options).unwrap_err();
    assert!(err.to_string().contains("already ties"), "{err}");
    assert!(!out2.exists());
}

#[test]
fn existing_output_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny(tmp.path(), false, StoreAs::F32);
    let out = tmp.path().join("out");
    // An empty directory is fine.
    std::fs::create_dir(&out).unwrap();
    run(&src, &out, SchemeArgs::default());
    let before = dir_files(&out);
    let err = compress(&src, &out, &CompressOptions::default()).unwrap_err();
    assert!(
        matches!(&err, CompressError::OutputExists { path } if path == &out),
        "{err}"
    );
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(dir_files(&out), before, "nothing touched");
    let options = CompressOptions {
        schemes: all(s("bf16")),
        force: true,
        ..Default::default()
    };
    compress(&src, &out, &options).unwrap();
    let model = CompressedModel::open(&out).unwrap();
    assert_eq!(model.manifest.tensors[EMBED].scheme, s("bf16"));
    assert!(!out.join("model.safetensors.partial").exists());
    // Never over the source.
    let err = compress(&src, &src, &options).unwrap_err();
    assert!(matches!(err, CompressError::OutputIsSource { .. }), "{err}");
    // A file where the directory should be.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = compress(&src, &file, &options).unwrap_err();
    assert!(matches!(err, CompressError::OutputNotDir { .. }), "{err}");
}

#[test]
fn a_group_that_does_not_divide_the_columns_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny(tmp.path(), false, StoreAs::F32);
    let out = tmp.path().join("out");
    // Every matrix of the tiny model has 64 inputs (hidden) or 3 × 64 (ffn).
    assert_eq!(tiny_config(false).hidden_size, 64);
    for (args, tensor) in [
        (
            SchemeArgs {
                scheme: Some(s("w4g128")),
                ..Default::default()
            },
            "model.layers.0.self_attn.q_proj.weight",
        ),
        (
            SchemeArgs {
                mlp: Some(s("w4g128")),
                ..Default::default()
            },
            "model.layers.0.mlp.gate_proj.weight",
        ),
        (
            SchemeArgs {
                embed: Some(s("w4g128")),
                ..Default::default()
            },
            EMBED,
        ),
        (
            SchemeArgs {
                lm_head: Some(s("w4g256a")),
                ..Default::default()
            },
            "lm_head.weight",
        ),
    ] {
        let err = compress(
            &src,
            &out,
            &CompressOptions {
                schemes: args,
                force: false,
                ..Default::default()
            },
        )
        .unwrap_err();
        match &err {
            CompressError::Scheme { tensor: t, .. } => assert_eq!(t, tensor),
            other => panic!("expected a scheme error, got {other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(tensor) && text.contains("not a multiple of the group size"),
            "{text}"
        );
        assert!(!out.exists(), "nothing is written when the plan fails");
    }
}

#[test]
fn narrow_schemes_serve_every_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    // 2- and 3-bit codes for an untied embedding, the layers and the lm_head, and for a tied
    // embedding (which is the lm_head): stored exactly as quantize_rtn makes them.
    for (tied, args) in [
        (
            false,
            SchemeArgs {
                embed: Some(s("w2g32a")),
                attn: Some(s("w3g64")),
                mlp: Some(s("w2g64")),
                lm_head: Some(s("w3g32a")),
                ..Default::default()
            },
        ),
        (
            true,
            SchemeArgs {
                lm_head: Some(s("w2g64a")),
                mlp: Some(s("w3g32a")),
                ..Default::default()
            },
        ),
    ] {
        let src = tiny(&tmp.path().join(format!("src-{tied}")), tied, StoreAs::F32);
        let ckpt = Checkpoint::open(&src).unwrap();
        let out = tmp.path().join(format!("out-{tied}"));
        run(&src, &out, args);
        let model = CompressedModel::open(&out).unwrap();
        let c = &ckpt.config;
        let checks = [
            (
                EMBED,
                c.vocab_size,
                c.hidden_size,
                args.embed.or(args.lm_head),
            ),
            (
                "model.layers.0.mlp.down_proj.weight",
                c.hidden_size,
                c.intermediate_size,
                args.mlp,
            ),
        ];
        for (name, rows, cols, scheme) in checks {
            let scheme = scheme.unwrap();
            let m = model.matrix(name).unwrap();
            assert_eq!(m.scheme, scheme, "{name}");
            let w = ckpt.load(name, &[rows, cols]).unwrap();
            assert_eq!(m, quantize_rtn(&w, rows, cols, scheme), "{name}");
        }
        check_sizes(&out, &model);
    }
}

/// A compressed tiny model to break.
fn compressed(tmp: &Path) -> PathBuf {
    let src = tiny(tmp, false, StoreAs::F32);
    let out = tmp.join("out");
    run(&src, &out, SchemeArgs::default());
    CompressedModel::open(&out).unwrap();
    out
}

fn open_err(dir: &Path) -> LoadError {
    match CompressedModel::open(dir) {
        Ok(_) => panic!("{} opened", dir.display()),
        Err(e) => e,
    }
}

fn edit_manifest(dir: &Path, edit: impl Fn(&str) -> String) {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let new = edit(&text);
    assert_ne!(new, text, "the edit changed nothing");
    std::fs::write(&path, new).unwrap();
}

/// Rewrite the safetensors header (data unchanged).
fn edit_header(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = dir.join(SAFETENSORS_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_string(&header).unwrap();
    while text.len() & 7 != 0 {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
}

#[test]
fn broken_manifests_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compressed(tmp.path());
    let manifest = out.join(MANIFEST_FILE);
    let original = std::fs::read_to_string(&manifest).unwrap();
    let restore = || std::fs::write(&manifest, &original).unwrap();

    std::fs::write(&manifest, &original[..original.len() / 3]).unwrap();
    let err = open_err(&out);
    assert!(
        matches!(&err, LoadError::Format { path, .. } if path == &manifest),
        "{err}"
    );

    restore();
    edit_manifest(&out, |t| t.replace(FORMAT, "qwenc-compressed/2"));
    let err = open_err(&out);
    assert!(
        matches!(&err, LoadError::Format { .. }) && err.to_string().contains("qwenc-compressed/2"),
        "{err}"
    );

    restore();
    let q = "model.layers.2.self_attn.q_proj.weight";
    edit_manifest(&out, |t| {
        let at = t.find(&format!("\"{q}\"")).unwrap();
        let scheme = at + t[at..].find("\"w4g32\"").unwrap();
        format!("{}\"w4g31\"{}", &t[..scheme], &t[scheme + 7..])
    });
    let err = open_err(&out);
    assert!(
        matches!(&err, LoadError::Tensor { tensor, .. } if tensor == q),
        "{err}"
    );
    assert!(err.to_string().contains("unknown scheme `w4g31`"), "{err}");

    // A valid scheme that disagrees with what is stored.
    restore();
    edit_manifest(&out, |t| {
        let at = t.find(&format!("\"{q}\"")).unwrap();
        let scheme = at + t[at..].find("\"w4g32\"").unwrap();
        format!("{}\"w4g32a\"{}", &t[..scheme], &t[scheme + 7..])
    });
    let err = open_err(&out);
    assert!(
        matches!(&err, LoadError::Tensor { tensor, .. } if tensor == q),
        "{err}"
    );

    restore();
    edit_manifest(&out, |t| {
        t.replace("\"tied_embeddings\": false", "\"tied_embeddings\": true")
    });
    assert!(matches!(open_err(&out), LoadError::Config { .. }));

    restore();
    std::fs::remove_file(&manifest).unwrap();
    let err = open_err(&out);
    assert!(
        matches!(&err, LoadError::Io { path, .. } if path == &manifest),
        "{err}"
    );

    restore();
    CompressedModel::open(&out).unwrap();
}

#[test]
fn broken_safetensors_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compressed(tmp.path());
    let path = out.join(SAFETENSORS_FILE);
    let original = std::fs::read(&path).unwrap();
    let restore = || std::fs::write(&path, &original).unwrap();
    let scale = "model.layers.1.mlp.gate_proj.weight.scale";

    // Same size, wrong type: BF16 where the scheme stores F16.
    edit_header(&out, |h| h[scale]["dtype"] = "BF16".into());
    let err = open_err(&out);
    assert!(
        matches!(&err, LoadError::Tensor { tensor, path: p, .. } if tensor == scale && p == &path),
        "{err}"
    );
    assert!(err.to_string().contains("F16"), "{err}");

    // Same bytes, wrong shape.
    restore();
    edit_header(&out, |h| {
        let shape = h[scale]["shape"].as_array().unwrap().clone();
        h[scale]["shape"] = serde_json::json!([shape[1], shape[0]]);
    });
    let err = open_err(&out);
    assert!(
        matches!(&err, LoadError::Tensor { tensor, .. } if tensor == scale),
        "{err}"
    );

    // A w8 scale as F16: the byte count no longer matches the header's offsets.
    restore();
    edit_header(&out, |h| h["lm_head.weight.scale"]["dtype"] = "F16".into());
    let err = open_err(&out);
    assert!(
        matches!(&err, LoadError::Tensor { tensor, .. } if tensor == "lm_head.weight.scale"),
        "{err}"
    );

    // An unsupported dtype.
    restore();
    edit_header(&out, |h| h[scale]["dtype"] = "F64".into());
    assert!(open_err(&out)
        .to_string()
        .contains("unsupported dtype `F64`"));

    // A stored tensor missing from the file.
    restore();
    edit_header(&out, |h| {
        h.as_object_mut().unwrap().remove(scale);
    });
    let err = open_err(&out);
    assert!(
        matches!(&err, LoadError::Tensor { tensor, .. } if tensor == scale),
        "{err}"
    );

    // Truncated: the last tensors run past the end.
    for keep in [original.len() - 100, original.len() / 2, 20, 4, 0] {
        std::fs::write(&path, &original[..keep]).unwrap();
        let err = open_err(&out);
        assert!(
            matches!(&err, LoadError::Tensor { path: p, .. } | LoadError::Format { path: p, .. } if p == &path),
            "{keep}: {err}"
        );
    }

    // A missing file.
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(open_err(&out), LoadError::Io { .. }));
    restore();
    CompressedModel::open(&out).unwrap();
}

#[test]
fn the_plan_reports_schemes_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny(tmp.path(), true, StoreAs::F32);
    let out = tmp.path().join("out");
    let options = CompressOptions {
        schemes: SchemeArgs {
            embed: Some(s("w4g32")),
            ..Default::default()
        },
        force: false,
        ..Default::default()
    };
    let plan = CompressPlan::new(&src, &out, &options).unwrap();
    assert!(plan.tied);
    assert_eq!(plan.warnings.len(), 1);
    assert_eq!(plan.tensors[0].name, EMBED);
    assert_eq!(plan.tensors[0].scheme, s("w8"));
    assert!(!out.exists());
    let mut calls = Vec::new();
    let report = plan
        .write(&Rtn, &mut |done, total, name| {
            calls.push((done, total, name.to_string()))
        })
        .unwrap();
    let n = report.manifest.tensors.len();
    assert_eq!(calls.len(), n + 1);
    assert_eq!(calls[0], (0, n, EMBED.to_string()));
    assert_eq!(calls[n], (n, n, String::new()));
}

#[test]
fn the_cli_compresses_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny(tmp.path(), true, StoreAs::BF16);
    let out = tmp.path().join("out");
    let qwenc = env!("CARGO_BIN_EXE_qwenc");
    let args = |extra: &[&str]| {
        let mut c = Command::new(qwenc);
        c.arg("compress").arg(&src).arg("-o").arg(&out).args(extra);
        c.output().unwrap()
    };
    let ok = args(&["--scheme", "w4g32", "--embed", "w4g32a"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr),
    );
    assert!(ok.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("--embed w4g32a"),
        "{stderr}"
    );
    for word in [
        "attn",
        "mlp",
        "embed",
        "norms+biases",
        "total",
        "model.safetensors",
    ] {
        assert!(stdout.contains(word), "{word} missing from\n{stdout}");
    }
    let model = CompressedModel::open(&out).unwrap();
    assert_eq!(model.manifest.tensors[EMBED].scheme, s("w8"));

    let again = args(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(args(&["--force", "--mlp", "bf16"]).status.success());
    let bad = args(&["--force", "--attn", "w3"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scheme `w3`"));
    let bad = args(&["--force", "--attn", "w4g128"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("model.layers.0.self_attn.q_proj.weight"));
}

/// `VmHWM` of this process (Linux), 0 elsewhere.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn dev_checkpoint_w4g32_with_w8_embeddings() {
    let src = dev_gguf();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let start = Instant::now();
    let report = compress(&src, &out, &CompressOptions::default()).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let m = &report.manifest;
    eprintln!(
        "dev checkpoint: {} tensors, {} params, model.safetensors {} bytes, {:.3} bits/weight overall, {seconds:.1} s",
        m.tensors.len(),
        m.totals.params,
        report.safetensors_bytes,
        m.totals.bits_per_weight
    );
    eprintln!("peak RSS so far (compress only): {} kB", peak_rss_kb());
    for c in m.class_totals() {
        eprintln!(
            "  {:<13} {:>3} tensors {:>11} bytes {:.4} bits/w",
            c.class.label(),
            c.tensors,
            c.bytes,
            c.bits_per_weight()
        );
    }
    assert_eq!(m.source.format, "gguf");
    let size = std::fs::metadata(out.join(SAFETENSORS_FILE)).unwrap().len();
    assert_eq!(size, report.safetensors_bytes);
    let mut header_len = [0u8; 8];
    std::io::Read::read_exact(
        &mut std::fs::File::open(out.join(SAFETENSORS_FILE)).unwrap(),
        &mut header_len,
    )
    .unwrap();
    assert_eq!(size, 8 + u64::from_le_bytes(header_len) + m.totals.bytes);
    for (name, e) in &m.tensors {
        match TensorClass::of(name) {
            TensorClass::Attn | TensorClass::Mlp => assert_eq!(e.bits_per_weight, 4.5, "{name}"),
            TensorClass::Embed | TensorClass::LmHead => assert_eq!(e.scheme, Scheme::W8, "{name}"),
            TensorClass::Vector => assert_eq!(e.scheme, Scheme::F32),
        }
    }
    for c in m.class_totals() {
        if matches!(c.class, TensorClass::Attn | TensorClass::Mlp) {
            assert_eq!(c.bits_per_weight(), 4.5);
        }
    }
    // One matrix read back equals quantize_rtn of the source.
    let model = CompressedModel::open(&out).unwrap();
    let ckpt = Checkpoint::open(&src).unwrap();
    let name = "model.layers.5.self_attn.k_proj.weight";
    let shape = &m.tensors[name].shape;
    let w = ckpt.load(name, shape).unwrap();
    assert_eq!(m.tensors[name].source_sha256, sha256_f32(&w));
    assert_eq!(
        model.matrix(name).unwrap(),
        quantize_rtn(&w, shape[0], shape[1], s("w4g32"))
    );
    assert_eq!(model.digest().len(), 64);
}
