//! The Hugging Face directory loader on the synthetic tiny model (f32/f16/bf16, tied and
//! untied, single file and sharded), and its named errors on broken files.

use std::path::Path;

use qwenc_codegen::model_io::checkpoint::{EMBED, LM_HEAD};
use qwenc_codegen::model_io::synthetic::{
    tiny_config, tiny_tensors, write_tiny_model, StoreAs, SyntheticOptions,
};
use qwenc_codegen::{Checkpoint, LoadError};

fn tiny(dir: &Path, options: SyntheticOptions) -> Checkpoint {
    write_tiny_model(dir, &options).unwrap();
    Checkpoint::open(dir).unwrap()
}

#[test]
fn loads_exactly_what_was_written_in_every_storage_type() {
    for (store_as, round) in [
        (StoreAs::F32, (|x: f32| x) as fn(f32) -> f32),
        (StoreAs::F16, |x| half::f16::from_f32(x).to_f32()),
        (StoreAs::BF16, |x| half::bf16::from_f32(x).to_f32()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = tiny(
            dir.path(),
            SyntheticOptions {
                store_as,
                ..Default::default()
            },
        );
        let expected = tiny_tensors(&tiny_config(false), 1);
        assert_eq!(ckpt.tensors.tensors().len(), expected.len());
        for (name, (shape, values)) in &expected {
            let got = ckpt.load(name, shape).unwrap();
            let want: Vec<f32> = values.iter().map(|&v| round(v)).collect();
            assert_eq!(got, want, "{name} as {store_as:?}");
        }
    }
}

#[test]
fn tied_lm_head_is_the_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = tiny(
        dir.path(),
        SyntheticOptions {
            tie_word_embeddings: true,
            ..Default::default()
        },
    );
    assert!(!ckpt.has_separate_lm_head());
    let shape = [320, 64];
    assert_eq!(
        ckpt.load(LM_HEAD, &shape).unwrap(),
        ckpt.load(EMBED, &shape).unwrap()
    );
}

#[test]
fn untied_model_without_lm_head_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(
        dir.path(),
        &SyntheticOptions {
            tie_word_embeddings: true,
            ..Default::default()
        },
    )
    .unwrap();
    // Claim the model is untied although the file has no lm_head.
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "\"tie_word_embeddings\": true",
        "\"tie_word_embeddings\": false",
    );
    std::fs::write(&config, text).unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let err = qwenc_codegen::reference::ReferenceWeights::load(&ckpt, &mut |_, _, _| {})
        .err()
        .unwrap();
    assert!(
        matches!(&err, LoadError::Tensor { tensor, .. } if tensor == LM_HEAD),
        "{err}"
    );
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    let single = tempfile::tempdir().unwrap();
    let sharded = tempfile::tempdir().unwrap();
    let a = tiny(single.path(), SyntheticOptions::default());
    let b = tiny(
        sharded.path(),
        SyntheticOptions {
            sharded: true,
            ..Default::default()
        },
    );
    assert!(sharded.path().join("model.safetensors.index.json").exists());
    let (ta, tb) = (a.tensors.tensors(), b.tensors.tensors());
    assert_eq!(ta.len(), tb.len());
    for meta in ta {
        assert_eq!(
            a.tensors.load_f32(&meta.name).unwrap(),
            b.tensors.load_f32(&meta.name).unwrap()
        );
    }
}

#[test]
fn wrong_shape_names_the_tensor_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = tiny(dir.path(), SyntheticOptions::default());
    let err = ckpt
        .load("model.layers.0.self_attn.q_proj.weight", &[64, 32])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.layers.0.self_attn.q_proj.weight")
            && err.contains("[64, 64]")
            && err.contains("[64, 32]"),
        "{err}"
    );
}

/// Rewrite model.safetensors with `edit` applied to (header JSON, data bytes).
fn corrupt(edit: impl Fn(&mut serde_json::Value, &mut Vec<u8>)) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &SyntheticOptions::default()).unwrap();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut data = bytes[8 + n..].to_vec();
    edit(&mut header, &mut data);
    let h = header.to_string();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    std::fs::write(&path, out).unwrap();
    let err = match Checkpoint::open(dir.path()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("corrupted file was accepted"),
    };
    (dir, err)
}

#[test]
fn malformed_files_give_named_errors() {
    let q = "model.layers.1.mlp.up_proj.weight";
    let (_d, e) = corrupt(|h, _| h[q]["dtype"] = "I64".into());
    assert!(
        e.contains(q) && e.contains("unsupported dtype `I64`"),
        "{e}"
    );

    let (_d, e) = corrupt(|h, _| h[q]["shape"] = serde_json::json!([160, 63]));
    assert!(
        e.contains(q) && e.contains("needs") && e.contains("bytes"),
        "{e}"
    );

    let (_d, e) = corrupt(|h, _| h[q]["data_offsets"] = serde_json::json!([0, 1u64 << 40]));
    assert!(e.contains(q) && e.contains("outside"), "{e}");

    let (_d, e) = corrupt(|h, _| h[q]["data_offsets"] = serde_json::json!("x"));
    assert!(e.contains(q) && e.contains("data_offsets"), "{e}");

    // Truncated data section: some tensor's range now runs past the end.
    let (_d, e) = corrupt(|_, data| data.truncate(data.len() / 2));
    assert!(
        e.contains("model.safetensors") && e.contains("outside") && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn truncated_header_and_garbage_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), &SyntheticOptions::default()).unwrap();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();

    std::fs::write(&path, &bytes[..100]).unwrap();
    let e = Checkpoint::open(dir.path()).err().unwrap();
    assert!(
        matches!(e, LoadError::Format { .. }) && e.to_string().contains("past the end"),
        "{e}"
    );

    std::fs::write(&path, &bytes[..5]).unwrap();
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("too short"), "{e}");

    let junk = b"{\"a\": [1, 2,, nope}";
    let mut garbage = (junk.len() as u64).to_le_bytes().to_vec();
    garbage.extend_from_slice(junk);
    std::fs::write(&path, &garbage).unwrap();
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("not valid JSON"), "{e}");

    std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("exceeds the 100 MB limit"), "{e}");

    // Every truncation point gives an error, never a panic.
    for cut in (0..bytes.len()).step_by(97) {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(
            Checkpoint::open(dir.path()).is_err(),
            "cut at {cut} was accepted"
        );
    }
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = Checkpoint::open(&dir.path().join("nope"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nope"), "{e}");
    write_tiny_model(dir.path(), &SyntheticOptions::default()).unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("no *.safetensors files"), "{e}");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = Checkpoint::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}
