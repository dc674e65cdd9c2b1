//! What codegen's integration tests share (each takes it with `mod common;`): the paths of
//! the dev checkpoint and ../shared, and the snapshot tests' shape and formatting.
#![allow(dead_code)]

use std::path::PathBuf;

use qwenc_codegen::compile::plan::MatmulShape;

/// `../shared` beside the checkout, or `QWENC_SHARED`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("QWENC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

pub fn fixture(name: &str) -> PathBuf {
    let path = shared_dir().join("fixtures").join(name);
    assert!(
        path.is_file(),
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
        path.is_file(),
        "dev checkpoint {} is missing: run scripts/fetch-dev-model.sh (or set QWENC_DEV_GGUF)",
        path.display()
    );
    path
}

/// The small matmul shape of the kernel snapshots: 8 rows, 64 columns, `scheme`.
pub fn shape(scheme: &str) -> MatmulShape {
    MatmulShape {
        rows: 8,
        cols: 64,
        scheme: scheme.parse().unwrap(),
    }
}

/// Generated tokens as the formatted file a snapshot holds.
pub fn pretty(tokens: proc_macro2::TokenStream) -> String {
    qwenc_codegen::compile::emit::format::format_file(tokens)
}
