//! The tiled x86 kernels (AVX2, AVX-512 VNNI) against their plain-Rust twins, and the twins
//! against the scalar kernels and an f64 reference, on random and extreme weights and
//! activations (kernels: OUT_DIR/kernel_tests.rs, emitted by `emit::kernel_tests`).
//!
//! - SIMD vs twin: bit-identical outputs (the twin performs the same integer dot products and
//!   the same float operations in the same order, see `emit::tiled`).
//! - twin vs f64 `Σ dequant(w)·dequant(x)` and vs the scalar kernel on the scalar layout:
//!   within 1e-5 of `Σ |dequant(w)·dequant(x)|` (relative error measured against the sum of
//!   magnitudes, so that outputs near zero after cancellation are judged fairly; for
//!   asymmetric w4 against `Σ (|d·q| + |m|)·|x|`, the terms its kernels add, see `dequant_f64`).
//!
//! A CPU without an ISA's features skips that ISA's test with a message, and the test does
//! not claim anything (it returns before asserting).
#![cfg(qwenc_tiny)]

/// The kernels under test, emitted by build.rs into OUT_DIR (only into this test, so that
/// the library and the `qwen` executable do not carry them).
#[allow(clippy::all, dead_code, unused_imports)]
mod k {
    include!(concat!(env!("OUT_DIR"), "/kernel_tests.rs"));
}
use qwenc_codegen::compile::emit::tiled::token_block;
use qwenc_codegen::compile::emit::x86::X86Isa;
use qwenc_codegen::compile::layout::{pack_parts, part_sizes};
use qwenc_codegen::quant::{quantize_rtn, QuantizedData, QuantizedMatrix};
use qwenc_runtime::kernel_support::Q8Acts;

include!("common/kernel_harness.rs");

#[test]
fn twins_match_the_scalar_kernels_and_the_f64_reference() {
    let mut worst_twin = 0.0f64;
    let mut worst_scalar = 0.0f64;
    for case in cases() {
        let (r, c, s) = (case.rows, case.cols, case.scheme);
        let scalar = k::kernel("scalar", r, c, s).unwrap();
        let twins: Vec<(usize, &str, Blob)> =
            [(k::AVX2_NR, k::AVX2_TWIN), (k::AVX512_NR, k::AVX512_TWIN)]
                .into_iter()
                .map(|(nr, module)| (nr, module, tiled_blob(&case, nr)))
                .collect();
        for (i, n) in TOKENS.into_iter().enumerate() {
            let x = Q8Acts::quantize(&activations(n, c, 7 + i as u64), c);
            let (want, magnitude) = reference(&case, &x);
            let ys = run(scalar, &case.scalar, &x, r);
            let e = worst(&ys, &want, &magnitude);
            assert!(e <= 1e-5, "scalar {s} {r}x{c} n={n}: {e:e}");
            worst_scalar = worst_scalar.max(e);
            let mut first: Option<Vec<f32>> = None;
            for (nr, module, blob) in &twins {
                let yt = run(k::kernel(module, r, c, s).unwrap(), blob, &x, r);
                let e = worst(&yt, &want, &magnitude);
                assert!(e <= 1e-5, "{module} {s} {r}x{c} n={n}: {e:e} from f64");
                worst_twin = worst_twin.max(e);
                let vs_scalar: Vec<f64> = ys.iter().map(|&v| v as f64).collect();
                let e = worst(&yt, &vs_scalar, &magnitude);
                assert!(e <= 1e-5, "{module} {s} {r}x{c} n={n}: {e:e} from scalar");
                // The twins differ only in layout (nr): same operations, same bits.
                match &first {
                    None => first = Some(yt),
                    Some(y0) => assert!(
                        y0.iter().zip(&yt).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "twin{nr} differs from the other twin: {s} {r}x{c} n={n}"
                    ),
                }
            }
        }
    }
    eprintln!(
        "worst error / magnitude: twins {worst_twin:.2e}, scalar {worst_scalar:.2e} (bar 1e-5)"
    );
}

/// Every kernel of `isa` against its twin, bit for bit; false if the CPU cannot run it. With
/// `amx`, the AVX-512 kernels take their 16-token passes on AMX (else they never do).
fn simd_matches_twin(isa: &str, nr: usize, twin: &str, has_features: bool, amx: bool) -> bool {
    if !has_features {
        eprintln!(
            "SKIPPED: the {isa} kernel tests: this CPU lacks a required feature; nothing about {isa} was checked"
        );
        return false;
    }
    if !qwenc_runtime::amx::force(Some(amx)) {
        eprintln!(
            "SKIPPED: the {isa} AMX kernel tests: this CPU or OS has no AMX-INT8; the AMX passes were not checked"
        );
        return false;
    }
    let mut checked = 0;
    for case in cases() {
        let (r, c, s) = (case.rows, case.cols, case.scheme);
        let simd =
            k::kernel(isa, r, c, s).unwrap_or_else(|| panic!("no {isa} kernel for {s} {r}x{c}"));
        let twin_kernel = k::kernel(twin, r, c, s).unwrap();
        let blob = tiled_blob(&case, nr);
        // Every pass size (1..=MR, MR = 8 for AVX-512) on the small shapes, and past the
        // token block (several sweeps over the tiles) on the widest shape.
        let isa_enum = if isa == "avx2" {
            X86Isa::Avx2
        } else {
            X86Isa::Avx512Vnni
        };
        let sweeps = 2 * token_block(isa_enum.prims(), c) + 3;
        let extra = (c == 4864).then_some(sweeps);
        // AMX passes take 16 tokens: one, one and a rest, two and a rest.
        let tokens: Vec<usize> = if r * c <= 13 * 96 {
            (1..=9).chain([16, 17, 35]).collect()
        } else if amx {
            vec![16, 19, 33]
        } else {
            TOKENS.to_vec()
        };
        for (i, n) in tokens.into_iter().chain(extra).enumerate() {
            let x = Q8Acts::quantize(&activations(n, c, 7 + i as u64), c);
            let want = run(twin_kernel, &blob, &x, r);
            let got = run(simd, &blob, &x, r);
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits(),
                    "{isa} {s} {r}x{c} n={n}: output (token {}, row {}) is {g:e}, twin {w:e}",
                    j / r,
                    j % r
                );
            }
            checked += got.len();
        }
    }
    let passes = if amx { " (AMX passes)" } else { "" };
    eprintln!("{isa}{passes}: {checked} outputs bit-identical to {twin}");
    qwenc_runtime::amx::force(None);
    true
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_kernels_match_their_twin_bit_for_bit() {
    let has = runs_here(X86Isa::Avx2);
    simd_matches_twin("avx2", k::AVX2_NR, k::AVX2_TWIN, has, false);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_kernels_match_their_twin_bit_for_bit() {
    let has = runs_here(X86Isa::Avx512Vnni);
    simd_matches_twin("avx512", k::AVX512_NR, k::AVX512_TWIN, has, false);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_amx_passes_match_the_twin_bit_for_bit() {
    let has = runs_here(X86Isa::Avx512Vnni);
    simd_matches_twin("avx512", k::AVX512_NR, k::AVX512_TWIN, has, true);
}

/// Whether this CPU has every target feature that `isa`'s kernels enable.
#[cfg(target_arch = "x86_64")]
fn runs_here(isa: X86Isa) -> bool {
    isa.target_features().iter().all(|f| feature(f))
}

#[cfg(target_arch = "x86_64")]
fn feature(name: &str) -> bool {
    match name {
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        "f16c" => std::arch::is_x86_feature_detected!("f16c"),
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
        other => panic!("unknown feature {other}"),
    }
}

/// The f32 FMA kernels (`emit::x86_float`) against the scalar f32 kernel and an f64
/// reference: within 1e-6 of `Σ |w·x|` (their sums run in another order, so not bit for bit),
/// on every pass size, a padded row block, and several token sweeps on the widest shape.
#[cfg(target_arch = "x86_64")]
#[test]
fn f32_kernels_match_the_scalar_kernel() {
    for (isa, has) in [
        ("avx2", runs_here(X86Isa::Avx2)),
        ("avx512", runs_here(X86Isa::Avx512Vnni)),
    ] {
        if !has {
            eprintln!("SKIPPED: the {isa} f32 kernel tests: this CPU lacks a required feature");
            continue;
        }
        let mut worst_seen = 0.0f64;
        for (i, &(rows, cols)) in k::FLOAT_SHAPES.iter().enumerate() {
            let w = weights(rows, cols, 2000 + i as u64);
            let blob = Blob::new(&[("w", w.iter().flat_map(|v| v.to_le_bytes()).collect())]);
            let scalar = k::float_kernel("scalar", rows, cols).unwrap();
            let simd = k::float_kernel(isa, rows, cols)
                .unwrap_or_else(|| panic!("no {isa} f32 kernel for {rows}x{cols}"));
            // 256 KiB of activations per sweep: 2 sweeps and a rest at 4864 columns.
            let tokens: Vec<usize> = if cols == 4864 {
                vec![1, 4, 31]
            } else {
                vec![1, 2, 3, 4, 5, 7, 17]
            };
            for n in tokens {
                let x = activations(n, cols, 11 + n as u64);
                let run_f = |kernel: k::FloatKernel| {
                    let mut y = vec![f32::NAN; n * rows + 16];
                    y[n * rows..].fill(-12345.0);
                    kernel(blob.bytes(), &blob.at, &x, &mut y[..n * rows]);
                    assert!(y[n * rows..].iter().all(|&v| v == -12345.0), "wrote past y");
                    y.truncate(n * rows);
                    y
                };
                let (got, want) = (run_f(simd), run_f(scalar));
                for t in 0..n {
                    for r in 0..rows {
                        let (wr, xt) = (&w[r * cols..][..cols], &x[t * cols..][..cols]);
                        let exact: f64 =
                            wr.iter().zip(xt).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let size: f64 = wr
                            .iter()
                            .zip(xt)
                            .map(|(&a, &b)| (a as f64 * b as f64).abs())
                            .sum();
                        let (g, s) = (got[t * rows + r] as f64, want[t * rows + r] as f64);
                        for (what, v) in [("f64", exact), ("scalar", s)] {
                            let e = if size == 0.0 {
                                (g - v).abs()
                            } else {
                                (g - v).abs() / size
                            };
                            assert!(
                                e <= 1e-6,
                                "{isa} f32 {rows}x{cols} n={n} (token {t}, row {r}): {g:e} vs {what} {v:e}"
                            );
                            worst_seen = worst_seen.max(e);
                        }
                    }
                }
            }
        }
        eprintln!("{isa} f32: worst |Δ| / Σ|w·x| = {worst_seen:.2e} (bar 1e-6)");
    }
}
