//! Paths shared by the integration tests: the dev checkpoint and ../shared.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` beside the checkout, or `QWENC_SHARED`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("QWENC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

pub fn fixture(name: &str) -> PathBuf {
    let path = shared_dir().join("fixtures").join(name);
    assert!(
        path.exists(),
        "fixture {} not found (set QWENC_SHARED to the shared/ folder)",
        path.display()
    );
    path
}

/// The dev GGUF checkpoint; panics with the command that fetches it when it is missing, so a
/// test that needs it fails instead of passing vacuously.
pub fn dev_gguf() -> PathBuf {
    let path = std::env::var_os("QWENC_DEV_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../models/qwen2.5-coder-0.5b-instruct.gguf")
        });
    assert!(
        path.exists(),
        "dev checkpoint {} is missing: run scripts/fetch-dev-model.sh (or set QWENC_DEV_GGUF)",
        path.display()
    );
    path
}
