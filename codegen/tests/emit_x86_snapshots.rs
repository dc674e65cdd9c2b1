//! Snapshots of the tiled x86 kernels and their twin on a small shape: a change to the body,
//! a primitive set or the layout shows up as a reviewable diff (`cargo insta review`).

mod common;

use common::{pretty, shape};
use qwenc_codegen::compile::emit::tiled;
use qwenc_codegen::compile::emit::x86::X86Isa;

#[test]
fn x86_kernels() {
    // One kernel per ISA, plus w8 on AVX2 (the sign trick), the asymmetric twin, and 3-bit
    // codes expanded per tile, and grouped w8 (w8 steps, w4's per-group float steps).
    insta::assert_snapshot!(
        "avx512_w4g32",
        pretty(X86Isa::Avx512Vnni.matmul(&shape("w4g32")))
    );
    insta::assert_snapshot!("avx2_w4g32", pretty(X86Isa::Avx2.matmul(&shape("w4g32"))));
    insta::assert_snapshot!("avx2_w8", pretty(X86Isa::Avx2.matmul(&shape("w8"))));
    insta::assert_snapshot!(
        "twin16_w4g32a",
        pretty(tiled::matmul_twin(16, &shape("w4g32a")))
    );
    insta::assert_snapshot!(
        "avx512_w3g32a",
        pretty(X86Isa::Avx512Vnni.matmul(&shape("w3g32a")))
    );
    insta::assert_snapshot!(
        "avx512_w8g32",
        pretty(X86Isa::Avx512Vnni.matmul(&shape("w8g32")))
    );
    insta::assert_snapshot!(
        "avx2_f32",
        pretty(qwenc_codegen::compile::emit::x86_float::matmul_f32(
            X86Isa::Avx2,
            &shape("f32")
        ))
    );
}

#[test]
fn backend_names_and_features() {
    assert_eq!(X86Isa::Avx2.name(), "x86-avx2");
    assert_eq!(X86Isa::Avx512Vnni.name(), "x86-avx512");
    assert_eq!((X86Isa::Avx2.nr(), X86Isa::Avx512Vnni.nr()), (8, 16));
    assert!(X86Isa::Avx512Vnni.target_features().contains(&"avx512vnni"));
    let name =
        qwenc_codegen::compile::emit::kernel_name(X86Isa::Avx512Vnni.name(), &shape("w4g32"));
    assert_eq!(name.to_string(), "x86_avx512_matmul_w4g32_8x64");
    assert!(pretty(X86Isa::Avx2.matmul(&shape("w8"))).contains("pub fn x86_avx2_matmul_w8_8x64("));
}
