//! Compile one model into the `qwen` executable.
//!
//! `QWENC_MODEL=PATH` (a directory from `qwenc compress`, an HF directory or a GGUF file)
//! selects the model; without it the tiny
//! synthetic model is built, so `cargo build` and `cargo test` always work. `QWENC_SCHEME`
//! (default `w4g32`, with w8 embedding and lm_head) and `QWENC_TARGET` (default `native`)
//! choose the scheme and the kernel backend. Outputs: `$OUT_DIR/model.rs` (included by
//! src/model.rs), `$OUT_DIR/tokenizer.json`, and the packed weights next to the binary as
//! `qwen.weights`.

use std::path::PathBuf;

use qwenc_codegen::compile::build_model::{
    artifact_dir, compile_checkpoint, compile_model, parse_schemes, parse_variant, variant_ident,
    write_if_changed,
};
use qwenc_codegen::compile::emit::Backend;
use qwenc_codegen::model_io::synthetic::{write_tiny_model, SyntheticOptions};

fn main() {
    if let Err(e) = run() {
        // A build script's panic output is hard to read; print the cause plainly and fail.
        eprintln!("error: {e}");
        println!("cargo:warning=qwenc build failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    for var in ["QWENC_MODEL", "QWENC_SCHEME", "QWENC_TARGET"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let model = match std::env::var_os("QWENC_MODEL") {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            if path.is_dir() {
                for entry in std::fs::read_dir(&path)? {
                    println!("cargo:rerun-if-changed={}", entry?.path().display());
                }
            }
            path
        }
        None => {
            let dir = out_dir.join("tiny-model");
            write_tiny_model(&dir, &SyntheticOptions::default())?;
            dir
        }
    };
    let schemes = match std::env::var("QWENC_SCHEME") {
        Ok(text) => Some(parse_schemes(&text).map_err(|e| format!("QWENC_SCHEME: {e}"))?),
        Err(_) => None,
    };
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH")?;
    let backend = Backend::parse(
        &std::env::var("QWENC_TARGET").unwrap_or_else(|_| "native".into()),
        &target_arch,
    )?;

    let compiled = compile_model(&model, schemes, backend, &mut |_, _, _| {})?;
    for (name, code) in &compiled.files {
        write_if_changed(&out_dir.join(name), code.as_bytes())?;
    }
    write_if_changed(
        &out_dir.join("tokenizer.json"),
        compiled.tokenizer_json.as_bytes(),
    )?;
    write_if_changed(
        &artifact_dir(&out_dir).join("qwen.weights"),
        &compiled.packed.bytes,
    )?;

    // Variants: the same model compiled in other schemes, for tests that run every kernel
    // through a whole forward pass (`QWENC_VARIANTS="f32;w8;w4g32"`; the tiny model always
    // gets a set). Each becomes a module of `variants.rs` with its own weights file.
    println!("cargo::rustc-check-cfg=cfg(qwenc_tiny)");
    let tiny = std::env::var_os("QWENC_MODEL").is_none();
    if tiny {
        println!("cargo:rustc-cfg=qwenc_tiny");
        // x86 kernel tests (tests/kernels_x86.rs): the tiled AVX2 / AVX-512 kernels, their
        // plain-Rust twins and the scalar kernels on a few shapes, included by that test alone.
        let kernels = qwenc_codegen::compile::emit::kernel_tests::kernel_test_module();
        write_if_changed(&out_dir.join("kernel_tests.rs"), kernels.as_bytes())?;
    }
    let variants: Vec<String> = match std::env::var("QWENC_VARIANTS") {
        Ok(list) => list
            .split(';')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
            .collect(),
        Err(_) if tiny => tiny_variants(&target_arch).map(String::from).collect(),
        Err(_) => Vec::new(),
    };
    println!("cargo:rerun-if-env-changed=QWENC_VARIANTS");
    let mut modules = String::new();
    let mut registry = String::new();
    for variant in &variants {
        let spec =
            parse_variant(variant).map_err(|e| format!("QWENC_VARIANTS `{variant}`: {e}"))?;
        let variant_backend = match &spec.backend {
            Some(name) => Backend::parse(name, &target_arch)?,
            None => backend,
        };
        let source = if spec.tied {
            if !tiny {
                return Err(format!(
                    "QWENC_VARIANTS `{variant}`: +tied is for the tiny model only"
                )
                .into());
            }
            let dir = out_dir.join("tiny-model-tied");
            write_tiny_model(
                &dir,
                &SyntheticOptions {
                    tie_word_embeddings: true,
                    ..Default::default()
                },
            )?;
            dir
        } else {
            model.clone()
        };
        let compiled =
            compile_checkpoint(&source, spec.schemes, variant_backend, &mut |_, _, _| {})?;
        let ident = variant_ident(variant);
        let doc = format!("The model with schemes `{variant}`.");
        modules += &write_variant(&out_dir, &ident, &doc, &compiled)?;
        registry += &registry_entry(&ident, &format!("{variant:?}"));
    }
    modules += &format!("\n/// Every variant compiled into this build.\npub const ALL: &[Variant] = &[\n{registry}];\n");

    // Mixed precision (tests/compiled_mixed.rs): the tiny model compressed with
    // `--budget-mb` a fifth of the way from its smallest to its best assignment, compiled for
    // this backend and for scalar. A fifth: there the choice varies within the MLP and o_proj
    // kinds and includes 2- and 3-bit codes (at a third, each kind was uniform).
    let mut mixed = String::new();
    if tiny {
        use qwenc_codegen::compress::pipeline::{self, Budget, CalibrationInput};
        use qwenc_codegen::compress::CompressOptions;
        use qwenc_codegen::model_io::synthetic::synthetic_calibration_ids;
        let calibration = CalibrationInput::ids(synthetic_calibration_ids(96, 300), 32);
        let budget = pipeline::budget_between(&model, &calibration, 0.2)
            .map_err(|e| format!("tiny budget: {e}"))?;
        let dir = out_dir.join("tiny-mixed");
        let options = pipeline::Options {
            plan: CompressOptions {
                force: true,
                ..Default::default()
            },
            budget: Some(Budget::Bytes(budget)),
            calibration,
            ..Default::default()
        };
        pipeline::run(&model, &dir, &options, &mut |_| {})
            .map_err(|e| format!("tiny --budget-mb: {e}"))?;
        for (ident, b) in [("mixed", backend), ("mixed_scalar", Backend::Scalar)] {
            let compiled = compile_model(&dir, None, b, &mut |_, _, _| {})?;
            let doc = "The tiny model compressed under a budget (mixed schemes).";
            modules += &write_variant(&out_dir, ident, doc, &compiled)?;
            mixed += &registry_entry(ident, &format!("{ident}::SCHEMES"));
        }
        modules += &format!("\n/// The compressed directory the mixed variants were built from.\npub const MIXED_DIR: &str = {:?};\n", dir.display().to_string());
    } else {
        modules +=
            "\n/// No mixed build outside the tiny model.\npub const MIXED_DIR: &str = \"\";\n";
    }
    modules += &format!("\n/// The tiny model under a memory budget (mixed schemes), per backend.\npub const MIXED: &[Variant] = &[\n{mixed}];\n");
    write_if_changed(&out_dir.join("variants.rs"), modules.as_bytes())?;
    Ok(())
}

/// Write variant `ident`'s generated code and weights file; returns its module declaration.
fn write_variant(
    out_dir: &std::path::Path,
    ident: &str,
    doc: &str,
    compiled: &qwenc_codegen::compile::build_model::Compiled,
) -> Result<String, Box<dyn std::error::Error>> {
    let file = format!("model_{ident}.rs");
    write_if_changed(&out_dir.join(&file), compiled.files["model.rs"].as_bytes())?;
    write_if_changed(
        &artifact_dir(out_dir).join(format!("qwen-{ident}.weights")),
        &compiled.packed.bytes,
    )?;
    Ok(format!(
        "/// {doc}\npub mod {ident} {{\n    include!(concat!(env!(\"OUT_DIR\"), \"/{file}\"));\n}}\n"
    ))
}

/// The `Variant` of module `ident` (src/lib.rs), its schemes given by the expression `schemes`.
fn registry_entry(ident: &str, schemes: &str) -> String {
    format!(
        "    Variant {{ schemes: {schemes}, weights_file: \"qwen-{ident}.weights\", model_name: {ident}::MODEL_NAME, \
         weights_len: {ident}::WEIGHTS_LEN, weights_hash: {ident}::WEIGHTS_HASH, layers: {ident}::LAYERS, \
         kv_dim: {ident}::KV_DIM, vocab: {ident}::VOCAB, backend: {ident}::BACKEND, \
         check_cpu: {ident}::check_cpu, forward: {ident}::forward, forward_segments: {ident}::forward_segments, copy_kv_prefix: {ident}::copy_kv_prefix }},\n"
    )
}

/// Variants the tiny model is compiled with for tests: every scheme on the native backend,
/// tied embeddings (the lm_head layout serves the lookup), and the other backends of the
/// target arch (`TINY_X86_64`, `TINY_AARCH64`).
fn tiny_variants(target_arch: &str) -> impl Iterator<Item = &'static str> {
    let arch: &[&str] = match target_arch {
        "x86_64" => &TINY_X86_64,
        "aarch64" => &TINY_AARCH64,
        _ => &[],
    };
    TINY_VARIANTS.into_iter().chain(arch.iter().copied())
}

const TINY_X86_64: [&str; 3] = ["w8@x86-avx2", "w4g32a+tied@x86-avx2", "w3g64@x86-avx2"];

/// Every aarch64 backend once; the SVE ones run where the CPU has that vector length.
const TINY_AARCH64: [&str; 8] = [
    "w8@aarch64-neon",
    "w8g32@aarch64-i8mm",
    "w3g32@aarch64-neon",
    "w2g64a@aarch64-i8mm",
    "w4g32a+tied@aarch64-i8mm",
    "w4g32@aarch64-sve2",
    "w8@aarch64-sve2-256",
    "w4g64a@aarch64-sve2-512",
];

const TINY_VARIANTS: [&str; 16] = [
    "f32",
    "bf16",
    "w8",
    "w4g32",
    "w4g64a",
    "w4g32,embed=w4g32a,lm_head=bf16",
    "w4g32+tied",
    "w8+tied",
    "w4g32a+tied@scalar",
    "w4g32@scalar",
    // 2- and 3-bit codes: a gathered-only embedding (codes that straddle bytes, both grids),
    // multiplied matrices, and a tied matrix gathered from its tiled layout.
    "w4g32,embed=w3g64",
    "w8,embed=w2g32a",
    "w3g32a,embed=w2g64a",
    "w2g32+tied",
    // Grouped int8: tiled (and gathered when tied) and scalar.
    "w8g32+tied",
    "w8g64@scalar",
];
