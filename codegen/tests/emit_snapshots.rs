//! Snapshots of every scalar kernel on a small shape: a change to the emitter shows up as a
//! reviewable diff (`cargo insta review`).

use qwenc_codegen::emit::scalar;
use qwenc_codegen::plan::MatmulShape;

fn pretty(tokens: proc_macro2::TokenStream) -> String {
    qwenc_codegen::emit::format::format_file(tokens)
}

#[test]
fn scalar_kernels() {
    for scheme in ["f32", "bf16", "w8", "w4g32", "w4g64a", "w3g32", "w2g64a"] {
        let shape = MatmulShape {
            rows: 8,
            cols: 64,
            scheme: scheme.parse().unwrap(),
        };
        insta::assert_snapshot!(format!("matmul_{scheme}"), pretty(scalar::matmul(&shape)));
        insta::assert_snapshot!(
            format!("embed_row_{scheme}"),
            pretty(scalar::embed_row(&shape))
        );
    }
}
