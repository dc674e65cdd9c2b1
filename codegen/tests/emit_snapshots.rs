//! Snapshots of every scalar kernel on a small shape: a change to the emitter shows up as a
//! reviewable diff (`cargo insta review`).

mod common;

use common::{pretty, shape};
use qwenc_codegen::compile::emit::scalar;

#[test]
fn scalar_kernels() {
    for scheme in ["f32", "bf16", "w8", "w4g32", "w4g64a", "w3g32", "w2g64a"] {
        let shape = shape(scheme);
        insta::assert_snapshot!(format!("matmul_{scheme}"), pretty(scalar::matmul(&shape)));
        insta::assert_snapshot!(
            format!("embed_row_{scheme}"),
            pretty(scalar::embed_row(&shape))
        );
    }
}
