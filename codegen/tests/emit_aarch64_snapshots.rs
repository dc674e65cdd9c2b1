//! Snapshots of the aarch64 kernels on a small shape (an explicit backend each, never the
//! host's): a change to a primitive set, the i8mm pass or the SVE asm shows up as a
//! reviewable diff (`cargo insta review`). Generation runs twice to show it is deterministic.

mod common;

use common::{pretty, shape};
use qwenc_codegen::compile::emit::aarch64::ArmIsa;
use qwenc_codegen::compile::emit::{kernel_name, Backend};

fn kernel(isa: ArmIsa, scheme: &str) -> String {
    let code = pretty(isa.matmul(&shape(scheme)));
    assert_eq!(
        code,
        pretty(isa.matmul(&shape(scheme))),
        "two generations differ"
    );
    code
}

#[test]
fn aarch64_kernels() {
    insta::assert_snapshot!("neon_w4g32", kernel(ArmIsa::Neon, "w4g32"));
    insta::assert_snapshot!("neon_w8", kernel(ArmIsa::Neon, "w8"));
    insta::assert_snapshot!("i8mm_w4g32", kernel(ArmIsa::I8mm, "w4g32"));
    insta::assert_snapshot!("i8mm_w8", kernel(ArmIsa::I8mm, "w8"));
    insta::assert_snapshot!("sve128_w4g32", kernel(ArmIsa::Sve2 { bits: 128 }, "w4g32"));
    insta::assert_snapshot!(
        "sve256_w4g64a",
        kernel(ArmIsa::Sve2 { bits: 256 }, "w4g64a")
    );
    insta::assert_snapshot!("sve512_w8", kernel(ArmIsa::Sve2 { bits: 512 }, "w8"));
    insta::assert_snapshot!("i8mm_w8g32", kernel(ArmIsa::I8mm, "w8g32"));
    insta::assert_snapshot!("sve128_w8g32", kernel(ArmIsa::Sve2 { bits: 128 }, "w8g32"));
}

#[test]
fn names_rows_and_features() {
    let names: Vec<&str> = ArmIsa::ALL.iter().map(|i| i.name()).collect();
    assert_eq!(
        names,
        [
            "aarch64-neon",
            "aarch64-i8mm",
            "aarch64-sve2",
            "aarch64-sve2-256",
            "aarch64-sve2-512"
        ]
    );
    let rows: Vec<usize> = ArmIsa::ALL.iter().map(|i| i.nr()).collect();
    assert_eq!(rows, [4, 4, 4, 8, 16]);
    assert!(ArmIsa::I8mm.target_features().contains(&"i8mm"));
    assert_eq!(
        kernel_name(ArmIsa::I8mm.name(), &shape("w4g32")).to_string(),
        "aarch64_i8mm_matmul_w4g32_8x64"
    );
    assert!(kernel(ArmIsa::Sve2 { bits: 256 }, "w8")
        .contains("pub fn aarch64_sve2_256_matmul_w8_8x64("));
    // The SVE start-up check compares the vector length.
    assert!(ArmIsa::Sve2 { bits: 512 }
        .requirement()
        .contains("512 bits (cntb = 64)"));
}

#[test]
fn backends_are_refused_for_the_other_arch() {
    for isa in ArmIsa::ALL {
        assert_eq!(Backend::parse(isa.name(), "aarch64"), Ok(Backend::Arm(isa)));
        let err = Backend::parse(isa.name(), "x86_64").unwrap_err();
        assert!(
            err.contains("is for aarch64") && err.contains("x86_64"),
            "{err}"
        );
    }
    let err = Backend::parse("x86-avx2", "aarch64").unwrap_err();
    assert!(err.contains("is for x86_64"), "{err}");
    assert!(Backend::parse("aarch64-sve3", "aarch64")
        .unwrap_err()
        .contains("unknown target"));
    assert_eq!(Backend::parse("scalar", "aarch64"), Ok(Backend::Scalar));
    // Cross builds from this host pick the portable backend for `native`.
    if !cfg!(target_arch = "aarch64") {
        assert_eq!(Backend::parse("native", "aarch64"), Ok(Backend::Scalar));
    }
}
