//! The GGUF reader against the development checkpoint (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M mix)
//! and the oracle that Hugging Face transformers computed from the same file
//! (`shared/fixtures/tensor_stats.json`, `dev_model_config_transformers5.json`).
//!
//! These tests are ignored by default: run them with
//! `cargo test -p qwenc-codegen --test gguf_dev_model -- --include-ignored`.
//! Without the checkpoint they fail (they never pass vacuously).
//! `QWENC_DEV_GGUF` overrides the checkpoint path, `QWENC_SHARED` the shared directory.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{dev_gguf, fixture};
use qwenc_codegen::model_io::gguf::{GgmlType, GgufFile};
use qwenc_codegen::{QwenConfig, TensorSource};
use serde_json::Value;

fn open_dev() -> GgufFile {
    let path = dev_gguf();
    GgufFile::open(&path).unwrap_or_else(|e| panic!("opening the dev checkpoint: {e}"))
}

fn read_json(name: &str) -> Value {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn tensor_directory_matches_transformers() {
    let gguf = open_dev();
    assert_eq!(gguf.version(), 3);
    let stats = read_json("tensor_stats.json");
    let stats = stats.as_object().unwrap();

    let metas = gguf.tensors();
    assert_eq!(metas.len(), 291);
    let ours: BTreeMap<&str, &Vec<usize>> =
        metas.iter().map(|m| (m.name.as_str(), &m.shape)).collect();
    let theirs: BTreeMap<&str, Vec<usize>> = stats
        .iter()
        .map(|(k, v)| {
            let shape = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.as_str(), shape)
        })
        .collect();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, shape) in &theirs {
        assert_eq!(ours[name], shape, "{name}");
    }

    let types: BTreeSet<&str> = gguf
        .tensor_infos()
        .iter()
        .map(|t| t.ggml_type.name())
        .collect();
    assert_eq!(
        types,
        ["F32", "Q4_K", "Q5_0", "Q6_K", "Q8_0"]
            .into_iter()
            .collect()
    );
    let embd = gguf.tensor_info("token_embd.weight").unwrap();
    assert_eq!(embd.dims, vec![896, 151936]);
    assert_eq!(embd.hf_name, "model.embed_tokens.weight");
    assert_eq!(
        gguf.tensor_info("output.weight").unwrap().ggml_type,
        GgmlType::Q8_0
    );
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn every_tensor_matches_transformers_dequantization() {
    let gguf = open_dev();
    let stats = read_json("tensor_stats.json");
    let stats = stats.as_object().unwrap();
    assert_eq!(stats.len(), 291);

    let mut failures = Vec::new();
    let mut worst_rel_sum = 0f64;
    let mut worst_abs_value = 0f64;
    let mut checked = 0;
    for meta in gguf.tensors() {
        let name = &meta.name;
        let Some(want) = stats.get(name) else {
            failures.push(format!("{name}: not in tensor_stats.json"));
            continue;
        };
        let values = match gguf.load_f32(name) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if values.len() != meta.n_elements() {
            failures.push(format!(
                "{name}: {} values for shape {:?}",
                values.len(),
                meta.shape
            ));
            continue;
        }
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let sum_sq: f64 = values.iter().map(|&v| (v as f64) * (v as f64)).sum();
        for (what, got, exp) in [
            ("sum", sum, want["sum"].as_f64().unwrap()),
            ("sum_sq", sum_sq, want["sum_sq"].as_f64().unwrap()),
        ] {
            let rel = (got - exp).abs() / exp.abs().max(1e-12);
            worst_rel_sum = worst_rel_sum.max(rel);
            if rel > 1e-6 {
                failures.push(format!(
                    "{name}: {what} {got} vs {exp} (relative error {rel:e})"
                ));
            }
        }
        let n = values.len();
        for (what, got, exp) in [
            ("first8", &values[..8.min(n)], f64s(&want["first8"])),
            (
                "last8",
                &values[n.saturating_sub(8)..],
                f64s(&want["last8"]),
            ),
        ] {
            if got.len() != exp.len() {
                failures.push(format!("{name}: {what} has {} values", exp.len()));
                continue;
            }
            for (i, (&g, &e)) in got.iter().zip(&exp).enumerate() {
                let err = (g as f64 - e).abs();
                worst_abs_value = worst_abs_value.max(err);
                if err > 1e-6 {
                    failures.push(format!("{name}: {what}[{i}] {g} vs {e}"));
                }
            }
        }
        checked += 1;
    }
    eprintln!(
        "checked {checked} tensors: worst relative error of sum/sum_sq {worst_rel_sum:e}, \
         worst absolute error of first8/last8 {worst_abs_value:e}"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, 291);
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn config_matches_transformers() {
    let gguf = open_dev();
    let ours = gguf.config().unwrap();
    let theirs = QwenConfig::from_file(&fixture("dev_model_config_transformers5.json")).unwrap();

    // transformers keeps the one `tokenizer.ggml.eos_token_id` (151645 `<|im_end|>`); we also
    // stop at `<|endoftext|>` (151643), as Qwen2.5's generation_config.json does.
    assert_eq!(theirs.eos_token_ids, vec![151645]);
    assert_eq!(ours.eos_token_ids, vec![151645, 151643]);
    assert_eq!(
        QwenConfig {
            eos_token_ids: theirs.eos_token_ids.clone(),
            ..ours.clone()
        },
        theirs
    );
    assert_eq!(ours.vocab_size, 151936);
    assert!(!ours.tie_word_embeddings);
    assert_eq!(ours.bos_token_id, Some(151643));
    assert_eq!(ours.rms_norm_eps, 1e-6);
    assert_eq!(ours.rope_theta, 1e6);
    assert_eq!(ours.head_dim, 64);
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn tokenizer_spec_from_metadata() {
    use qwenc_runtime::tokenizer::PreTokenizer;

    let gguf = open_dev();
    let spec = gguf.tokenizer_spec().unwrap();
    // 151936 ids: 151643 BPE tokens, 22 added tokens, 271 `[PAD{id}]` fillers left out.
    assert_eq!(spec.vocab.len(), 151643);
    assert_eq!(spec.added.len(), 22);
    assert_eq!(spec.merges.len(), 151387);
    assert_eq!(spec.merges[0], ("Ġ".to_string(), "Ġ".to_string()));
    assert_eq!(spec.pre_tokenizer, PreTokenizer::Qwen2);
    assert!(spec.nfc);

    let vocab: BTreeMap<&str, u32> = spec.vocab.iter().map(|(t, id)| (t.as_str(), *id)).collect();
    assert_eq!(vocab.len(), spec.vocab.len(), "token texts are unique");
    assert_eq!(vocab["!"], 0);
    assert_eq!(vocab["Hello"], 9707);
    assert_eq!(vocab["Ġ"], 220);
    assert!(spec
        .vocab
        .iter()
        .all(|(t, id)| *id < 151643 && !t.starts_with("[PAD")));

    let added: BTreeMap<&str, (u32, bool)> = spec
        .added
        .iter()
        .map(|a| (a.content.as_str(), (a.id, a.special)))
        .collect();
    assert_eq!(added["<|endoftext|>"], (151643, true));
    assert_eq!(added["<|im_start|>"], (151644, true));
    assert_eq!(added["<|im_end|>"], (151645, true));
    assert_eq!(added["<|file_sep|>"], (151664, true));
    assert_eq!(added["<tool_call>"], (151657, false));
    assert_eq!(added["</tool_call>"], (151658, false));
    assert!(spec.added.iter().all(|a| !a.content.starts_with("[PAD")));

    // Every id in the tokenizer oracle names a token we know.
    let cases = std::fs::read_to_string(fixture("tokenizer_cases.jsonl")).unwrap();
    let known: BTreeSet<u32> = spec
        .vocab
        .iter()
        .map(|(_, id)| *id)
        .chain(spec.added.iter().map(|a| a.id))
        .collect();
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        for id in case["ids"].as_array().unwrap() {
            let id = id.as_u64().unwrap() as u32;
            assert!(known.contains(&id), "id {id} of {:?}", case["text"]);
        }
    }
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn metadata_accessors() {
    let gguf = open_dev();
    assert_eq!(
        gguf.get("general.architecture").and_then(|v| v.as_str()),
        Some("qwen2")
    );
    assert_eq!(
        gguf.get("qwen2.block_count").and_then(|v| v.as_u64()),
        Some(24)
    );
    assert_eq!(
        gguf.get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map(|a| a.len()),
        Some(151936)
    );
    assert_eq!(gguf.alignment(), 32);
    assert_eq!(gguf.data_start() % 32, 0);
    let err = gguf
        .load_f32("model.layers.99.mlp.up_proj.weight")
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("model.layers.99.mlp.up_proj.weight"),
        "{err}"
    );
}
