//! `generated/` is the code the compiler emits for the Qwen2.5-0.5B shapes, checked in for
//! review. This test regenerates it and fails on any difference; `QWENC_BLESS=1` rewrites it.
//! Generation runs twice to prove it is deterministic.

use std::path::PathBuf;

use qwenc_codegen::compile::build_model::review_files;

#[test]
fn generated_dir_is_up_to_date_and_deterministic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../generated");
    let config = root.join("qwen2.5-0.5b.config.json");
    let files = review_files(&config).unwrap();
    assert_eq!(
        files,
        review_files(&config).unwrap(),
        "two generations differ"
    );
    let bless = std::env::var_os("QWENC_BLESS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, code) in &files {
        let path = root.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(code.as_str()) {
            if bless {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, code).unwrap();
            } else {
                stale.push(name.clone());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated/ is stale ({stale:?}): run `QWENC_BLESS=1 cargo test -p qwenc-codegen --test generated` and review the diff"
    );
}

/// Every review file is commented for a reader: the forward pass's numbered steps, and a
/// `// SAFETY:` note right before each `unsafe` block.
#[test]
fn generated_code_keeps_its_comments() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../generated");
    let files = review_files(&root.join("qwen2.5-0.5b.config.json")).unwrap();
    assert_eq!(files.len(), 6, "one file per backend: {:?}", files.keys());
    for (name, code) in &files {
        for step in [
            "// ---- Attention block",
            "// 1. Pre-attention RMSNorm.",
            "// 4. Causal attention over the cache.",
            "// 8. Down projection and residual.",
        ] {
            assert!(
                code.contains(step),
                "{name} lacks the step comment {step:?}"
            );
        }
        let lines: Vec<&str> = code.lines().collect();
        let mut blocks = 0;
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            // An `unsafe` block (not an `unsafe fn`), alone or as an expression.
            let block = t.contains("unsafe {") && !t.starts_with("//");
            if !block {
                continue;
            }
            blocks += 1;
            // The note is the comment run right above (a statement may open on the same line).
            let mut j = i;
            let mut noted = false;
            while j > 0 && lines[j - 1].trim_start().starts_with("//") {
                j -= 1;
                noted |= lines[j].trim_start().starts_with("// SAFETY:");
            }
            assert!(
                noted,
                "{name}:{}: `unsafe` block without a SAFETY note: {t}",
                i + 1
            );
        }
        assert!(
            blocks > 0,
            "{name} has no unsafe block: the check would be vacuous"
        );
    }
}
