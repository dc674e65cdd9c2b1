//! config.json in both transformers layouts, and the named errors for bad ones.

mod common;

use std::path::Path;

use qwenc_codegen::{LoadError, QwenConfig};

#[test]
fn reads_the_classic_layout_of_qwen2_5_0_5b() {
    let c = QwenConfig::from_file(&common::fixture("qwen2.5-0.5b_config.json")).unwrap();
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (896, 4864, 24)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (14, 2, 64)
    );
    assert_eq!((c.vocab_size, c.max_position_embeddings), (151936, 32768));
    assert_eq!(c.rope_theta, 1_000_000.0);
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.eos_token_ids, vec![151643]);
    assert_eq!(c.group_size(), 7);
}

#[test]
fn reads_the_transformers5_layout_of_the_dev_checkpoint() {
    let c = QwenConfig::from_file(&common::fixture("dev_model_config_transformers5.json")).unwrap();
    assert_eq!(
        c.rope_theta, 1_000_000.0,
        "rope_theta lives in rope_parameters here"
    );
    assert!(!c.tie_word_embeddings);
    assert_eq!(c.eos_token_ids, vec![151645]);
    assert_eq!(c.bos_token_id, Some(151643));
    assert_eq!(c.head_dim, 64);
}

#[test]
fn round_trips_through_its_own_json() {
    let c = QwenConfig::from_file(&common::fixture("dev_model_config_transformers5.json")).unwrap();
    let again = QwenConfig::from_json_str(Path::new("x"), &c.to_hf_json().to_string()).unwrap();
    assert_eq!(c, again);
}

fn error_for(edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let text = std::fs::read_to_string(common::fixture("qwen2.5-0.5b_config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(json.as_object_mut().unwrap());
    match QwenConfig::from_json_str(Path::new("bad/config.json"), &json.to_string()) {
        Err(e @ LoadError::Config { .. }) => e.to_string(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn names_each_problem() {
    let e = error_for(|o| {
        o.insert("model_type".into(), "llama".into());
    });
    assert!(
        e.contains("bad/config.json") && e.contains("unsupported model_type `llama`"),
        "{e}"
    );

    let e = error_for(|o| {
        o.remove("hidden_size");
    });
    assert!(e.contains("missing field `hidden_size`"), "{e}");

    let e = error_for(|o| {
        o.insert("num_key_value_heads".into(), 3.into());
    });
    assert!(e.contains("not a multiple of num_key_value_heads 3"), "{e}");

    let e = error_for(|o| {
        o.insert("num_attention_heads".into(), 13.into());
    });
    assert!(
        e.contains("not a multiple of num_attention_heads 13"),
        "{e}"
    );

    let e = error_for(|o| {
        o.remove("rope_theta");
    });
    assert!(e.contains("missing `rope_theta`"), "{e}");

    let e = error_for(|o| {
        o.insert("hidden_size".into(), "896".into());
    });
    assert!(
        e.contains("`hidden_size` must be a non-negative integer"),
        "{e}"
    );

    let e = error_for(|o| {
        o.insert(
            "rope_scaling".into(),
            serde_json::json!({"type": "yarn", "factor": 4.0}),
        );
    });
    assert!(e.contains("unsupported rope_type `yarn`"), "{e}");

    let e = QwenConfig::from_json_str(Path::new("c.json"), "{ not json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.json") && e.contains("invalid JSON"), "{e}");
}
