//! What the root package's tests of the compiled tiny model share (each takes it with
//! `mod common;`): their 12-token prompt, the variants this CPU runs with their weights, and
//! the tiny synthetic checkpoint's f32 reference. (`kernel_harness.rs` beside it is the shared
//! half of the kernel tests, which `include!` it.)
#![allow(dead_code)]

use std::path::PathBuf;

use qwenc::Variant;
use qwenc_codegen::model_io::synthetic::{write_tiny_model, SyntheticOptions};
use qwenc_codegen::reference::ReferenceWeights;
use qwenc_codegen::Checkpoint;
use qwenc_runtime::weights::Weights;

/// The prompt the tests run: 12 ids of the tiny model's vocabulary (320).
pub const PROMPT: [u32; 12] = [72, 101, 108, 108, 111, 256, 300, 7, 311, 44, 44, 2];

/// The variants of `set` that this CPU runs, each with its weights file (beside the `qwen`
/// executable) open; the others are named on stderr as SKIPPED.
pub fn runnable<'a>(set: impl IntoIterator<Item = &'a Variant>) -> Vec<(&'a Variant, Weights)> {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_qwen"));
    set.into_iter()
        .filter(|v| match (v.check_cpu)() {
            Ok(()) => true,
            Err(why) => {
                eprintln!("SKIPPED {} ({}): {why}", v.schemes, v.backend);
                false
            }
        })
        .map(|v| (v, v.open_weights(&exe).unwrap()))
        .collect()
}

/// The f32 reference on the tiny synthetic checkpoint that build.rs compiles (tied or not).
pub fn tiny_reference(tied: bool) -> ReferenceWeights {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(
        dir.path(),
        &SyntheticOptions {
            tie_word_embeddings: tied,
            ..Default::default()
        },
    )
    .unwrap();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    ReferenceWeights::load(&ckpt, &mut |_, _, _| {}).unwrap()
}
