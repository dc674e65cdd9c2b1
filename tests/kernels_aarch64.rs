//! The aarch64 kernels (NEON dotprod, i8mm, SVE at 128/256/512 bits) against their plain-Rust
//! twins, bit for bit, and the twin4 layout (NEON, i8mm, SVE-128) against the scalar kernels
//! and an f64 reference within 1e-5 (kernels: OUT_DIR/kernel_tests.rs, emitted by
//! `emit::kernel_tests`). Built for aarch64 and run under qemu by `scripts/test-aarch64.sh`,
//! once per emulated CPU (`-cpu max,sve=off`, `max,sve128=on`, `max,sve256=on`,
//! `max,sve512=on`).
//!
//! A kernel set the emulated CPU cannot run (a missing feature, or another SVE vector length)
//! prints SKIPPED and asserts nothing. The helpers are those of `tests/kernels_x86.rs`.
#![cfg(qwenc_tiny)]

#[allow(clippy::all, dead_code, unused_imports)]
mod k {
    include!(concat!(env!("OUT_DIR"), "/kernel_tests.rs"));
}
#[cfg(target_arch = "aarch64")]
use qwenc_codegen::compile::emit::tiled::token_block_for;
use qwenc_codegen::compile::layout::{pack_parts, part_sizes};
use qwenc_codegen::quant::{quantize_rtn, QuantizedData, QuantizedMatrix};
use qwenc_runtime::kernel_support::Q8Acts;

include!("common/kernel_harness.rs");

/// The twin4 layout (read by NEON, i8mm and SVE-128) against the scalar kernels and f64.
#[test]
fn twin4_matches_the_scalar_kernels_and_the_f64_reference() {
    let mut worst_twin = 0.0f64;
    for case in cases() {
        let (r, c, s) = (case.rows, case.cols, case.scheme);
        let scalar = k::kernel("scalar", r, c, s).unwrap();
        let blob = tiled_blob(&case, 4);
        for (i, n) in TOKENS.into_iter().enumerate() {
            let x = Q8Acts::quantize(&activations(n, c, 7 + i as u64), c);
            let (want, magnitude) = reference(&case, &x);
            let ys = run(scalar, &case.scalar, &x, r);
            let yt = run(k::kernel("twin4", r, c, s).unwrap(), &blob, &x, r);
            let e = worst(&yt, &want, &magnitude);
            assert!(e <= 1e-5, "twin4 {s} {r}x{c} n={n}: {e:e} from f64");
            let vs_scalar: Vec<f64> = ys.iter().map(|&v| v as f64).collect();
            let e2 = worst(&yt, &vs_scalar, &magnitude);
            assert!(e2 <= 1e-5, "twin4 {s} {r}x{c} n={n}: {e2:e} from scalar");
            worst_twin = worst_twin.max(e);
        }
    }
    eprintln!("twin4: worst error / magnitude {worst_twin:.2e} (bar 1e-5)");
}

/// Whether the running CPU can run `set` (features, and the SVE vector length).
#[cfg(target_arch = "aarch64")]
fn runnable(set: &k::ArmKernels) -> Result<(), String> {
    for f in set.features {
        let has = match *f {
            "neon" => std::arch::is_aarch64_feature_detected!("neon"),
            "dotprod" => std::arch::is_aarch64_feature_detected!("dotprod"),
            "i8mm" => std::arch::is_aarch64_feature_detected!("i8mm"),
            "sve" => std::arch::is_aarch64_feature_detected!("sve"),
            "sve2" => std::arch::is_aarch64_feature_detected!("sve2"),
            other => panic!("unknown feature {other}"),
        };
        if !has {
            return Err(format!("this CPU lacks {f}"));
        }
    }
    if set.sve_bytes != 0 {
        let bytes = sve_bytes();
        if bytes != set.sve_bytes {
            return Err(format!(
                "SVE vectors are {} bits here, the kernels need {}",
                bytes * 8,
                set.sve_bytes * 8
            ));
        }
    }
    Ok(())
}

#[cfg(target_arch = "aarch64")]
fn sve_bytes() -> usize {
    #[target_feature(enable = "sve")]
    unsafe fn cntb() -> usize {
        let n: usize;
        unsafe { std::arch::asm!("cntb {n}", n = out(reg) n, options(pure, nomem, nostack)) };
        n
    }
    // SAFETY: called only once SVE is detected.
    unsafe { cntb() }
}

/// Every kernel of `module` against its twin, bit for bit; false (and SKIPPED) if the CPU
/// cannot run it.
#[cfg(target_arch = "aarch64")]
fn arm_matches_twin(module: &str) -> bool {
    let set = *k::ARM.iter().find(|s| s.module == module).unwrap();
    // scripts/test-aarch64.sh runs each kernel set on one emulated CPU only (qemu is slow).
    if let Ok(list) = std::env::var("QWENC_ARM_KERNELS") {
        if !list.split(',').any(|m| m == module) {
            eprintln!("SKIPPED: the {module} kernel tests: not selected by QWENC_ARM_KERNELS={list}; nothing about {module} was checked");
            return false;
        }
    }
    if let Err(why) = runnable(&set) {
        eprintln!("SKIPPED: the {module} kernel tests: {why}; nothing about {module} was checked");
        return false;
    }
    let mut checked = 0;
    for case in cases() {
        let (r, c, s) = (case.rows, case.cols, case.scheme);
        let simd = k::kernel(module, r, c, s)
            .unwrap_or_else(|| panic!("no {module} kernel for {s} {r}x{c}"));
        let twin = k::kernel(set.twin, r, c, s).unwrap();
        let blob = tiled_blob(&case, set.nr);
        // Every pass size (1..=8 covers i8mm's odd and even pairs), and past the token block
        // (several sweeps over the tiles) on the widest shape.
        let sweeps = 2 * token_block_for(8, c) + 3;
        let extra = (c == 4864).then_some(sweeps);
        let small = (r * c) <= 13 * 96;
        let tokens: Vec<usize> = if small {
            (1..=9).chain([17]).collect()
        } else {
            TOKENS.to_vec()
        };
        for (i, n) in tokens.into_iter().chain(extra).enumerate() {
            let x = Q8Acts::quantize(&activations(n, c, 7 + i as u64), c);
            let want = run(twin, &blob, &x, r);
            let got = run(simd, &blob, &x, r);
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits(),
                    "{module} {s} {r}x{c} n={n}: output (token {}, row {}) is {g:e}, {} {w:e}",
                    j / r,
                    j % r,
                    set.twin
                );
            }
            checked += got.len();
        }
    }
    eprintln!("{module}: {checked} outputs bit-identical to {}", set.twin);
    true
}

#[cfg(target_arch = "aarch64")]
#[test]
fn neon_kernels_match_their_twin_bit_for_bit() {
    arm_matches_twin("neon");
}

#[cfg(target_arch = "aarch64")]
#[test]
fn i8mm_kernels_match_their_twin_bit_for_bit() {
    arm_matches_twin("i8mm");
}

#[cfg(target_arch = "aarch64")]
#[test]
fn sve128_kernels_match_their_twin_bit_for_bit() {
    arm_matches_twin("sve128");
}

#[cfg(target_arch = "aarch64")]
#[test]
fn sve256_kernels_match_their_twin_bit_for_bit() {
    arm_matches_twin("sve256");
}

#[cfg(target_arch = "aarch64")]
#[test]
fn sve512_kernels_match_their_twin_bit_for_bit() {
    arm_matches_twin("sve512");
}
