//! `generated/` is the code the compiler emits for the Qwen2.5-0.5B shapes, checked in for
//! review. This test regenerates it and fails on any difference; `QWENC_BLESS=1` rewrites it.
//! Generation runs twice to prove it is deterministic.

use std::path::PathBuf;

use qwenc_codegen::build_model::review_files;

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
