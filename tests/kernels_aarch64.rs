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
use qwenc_codegen::emit::tiled::{pack_parts, part_sizes, token_block_for};
use qwenc_codegen::quant::{quantize_rtn, QuantizedData, QuantizedMatrix, Scheme};
use qwenc_runtime::kernel_support::Q8Acts;

const TOKENS: [usize; 5] = [1, 3, 4, 5, 17];

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Random weights with per-row magnitudes over 4 decades, a zero row, and rows that drive
/// the codes to their extremes (w4: 0 and 15; w8: ±127).
fn weights(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut w = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let row = &mut w[r * cols..][..cols];
        match r % 7 {
            3 => {} // all zero: zero scales
            5 => {
                // One +1 per 32 columns, −0.875 elsewhere: symmetric w4 codes 0 and 15,
                // asymmetric 15 and 0, w8 ±127 and −111.
                for (c, v) in row.iter_mut().enumerate() {
                    *v = if c % 32 == 0 { 1.0 } else { -0.875 };
                }
            }
            6 => {
                // Alternating ±1: w8 ±127 everywhere.
                for (c, v) in row.iter_mut().enumerate() {
                    *v = if c % 2 == 0 { 1.0 } else { -1.0 };
                }
            }
            _ => {
                let magnitude = 10f32.powf(rng.unit() * 2.0);
                for v in row.iter_mut() {
                    *v = rng.unit() * magnitude;
                }
            }
        }
    }
    w
}

/// Random activations, with every kind of block: ordinary, all zero, one huge value among
/// tiny ones, all at ±max (|q| = 127 everywhere), all equal and positive (Σq maximal).
fn activations(n: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut x = vec![0.0f32; n * cols];
    for (i, block) in x.chunks_exact_mut(32).enumerate() {
        match (i + seed as usize) % 6 {
            0 => {}
            1 => {
                for v in block.iter_mut() {
                    *v = rng.unit() * 1e-3;
                }
                block[(rng.next() % 32) as usize] = -1e4;
            }
            2 => {
                for (j, v) in block.iter_mut().enumerate() {
                    *v = if j % 3 == 0 { -5.0 } else { 5.0 };
                }
            }
            3 => block.fill(0.75),
            _ => {
                let magnitude = 10f32.powf(rng.unit() * 3.0);
                for v in block.iter_mut() {
                    *v = rng.unit() * magnitude;
                }
            }
        }
    }
    x
}

/// Packed parts in one byte buffer, each on a 64-byte boundary (as in the weights file).
struct Blob {
    buf: Vec<u8>,
    start: usize,
    at: k::MatrixAt,
}

impl Blob {
    fn new(parts: &[(&str, Vec<u8>)]) -> Blob {
        let total: usize = parts
            .iter()
            .map(|(_, b)| b.len().next_multiple_of(64))
            .sum();
        let mut buf = vec![0u8; total + 64];
        let start = (64 - buf.as_ptr() as usize % 64) % 64;
        let mut at = k::MatrixAt::default();
        let mut offset = 0;
        for (name, bytes) in parts {
            buf[start + offset..][..bytes.len()].copy_from_slice(bytes);
            match *name {
                "w" => at.w = offset,
                "q" => at.q = offset,
                "scale" => at.scale = offset,
                "min" => at.min = offset,
                other => panic!("unknown part {other}"),
            }
            offset += bytes.len().next_multiple_of(64);
        }
        Blob { buf, start, at }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// The scalar layout (see `pack.rs`).
fn scalar_parts(m: &QuantizedMatrix) -> Vec<(&'static str, Vec<u8>)> {
    match &m.data {
        QuantizedData::W8 { q, scales } => vec![
            ("q", q.iter().map(|&v| v as u8).collect()),
            (
                "scale",
                scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            ),
        ],
        QuantizedData::W4 {
            packed,
            scales,
            mins,
        } => {
            let mut parts = vec![
                ("q", packed.clone()),
                (
                    "scale",
                    scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
                ),
            ];
            if let Some(mins) = mins {
                parts.push(("min", mins.iter().flat_map(|s| s.to_le_bytes()).collect()));
            }
            parts
        }
        _ => unreachable!("integer schemes only"),
    }
}

/// Dequantized weights, exactly, in f64, and the magnitude each weight contributes to the
/// kernels' sums: `|w|`, except for asymmetric w4 where every kernel computes `d·Σq·x + m·Σx`
/// and so rounds terms of size `|d·q| + |m|` (they cancel when a weight is near 0 and the
/// group's minimum is not: a property of the scheme, shared with the scalar kernel).
fn dequant_f64(m: &QuantizedMatrix) -> (Vec<f64>, Vec<f64>) {
    match &m.data {
        QuantizedData::W8 { q, scales } => {
            let w: Vec<f64> = q
                .iter()
                .enumerate()
                .map(|(i, &v)| scales[i / m.cols] as f64 * v as f64)
                .collect();
            let size = w.iter().map(|v| v.abs()).collect();
            (w, size)
        }
        QuantizedData::W4 {
            packed,
            scales,
            mins,
        } => {
            let Scheme::W4 { group, .. } = m.scheme else {
                unreachable!()
            };
            (0..m.rows * m.cols)
                .map(|i| {
                    let code = (packed[i / 2] >> (4 * (i % 2))) & 15;
                    let (d, g) = (scales[i / group].to_f64(), i / group);
                    match mins {
                        Some(mins) => {
                            let min = mins[g].to_f64();
                            (d * code as f64 + min, (d * code as f64).abs() + min.abs())
                        }
                        None => (d * (code as f64 - 8.0), (d * (code as f64 - 8.0)).abs()),
                    }
                })
                .unzip()
        }
        _ => unreachable!(),
    }
}

/// Run `kernel` on `x` into a fresh NaN-filled `y` with guard values after it.
fn run(kernel: k::Kernel, blob: &Blob, x: &Q8Acts, rows: usize) -> Vec<f32> {
    let n = x.tokens();
    let mut y = vec![f32::NAN; n * rows + 16];
    y[n * rows..].fill(-12345.0);
    kernel(blob.bytes(), &blob.at, x, &mut y[..n * rows]);
    assert!(
        y[n * rows..].iter().all(|&v| v == -12345.0),
        "wrote past the outputs"
    );
    y.truncate(n * rows);
    assert!(
        y.iter().all(|v| v.is_finite()),
        "an output was not written (or is not finite)"
    );
    y
}

/// One (shape, scheme) case: the quantized matrix and its packings.
struct Case {
    rows: usize,
    cols: usize,
    scheme: &'static str,
    m: QuantizedMatrix,
    w64: Vec<f64>,
    /// Per weight: the magnitude it contributes to the kernels' sums (see `dequant_f64`).
    size64: Vec<f64>,
    scalar: Blob,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, &(rows, cols, scheme)) in k::SHAPES.iter().enumerate() {
        let w = weights(rows, cols, 1000 + i as u64);
        let m = quantize_rtn(&w, rows, cols, scheme.parse().unwrap());
        let (w64, size64) = dequant_f64(&m);
        let scalar = Blob::new(&scalar_parts(&m));
        cases.push(Case {
            rows,
            cols,
            scheme,
            m,
            w64,
            size64,
            scalar,
        });
    }
    assert!(
        cases.len() >= 15,
        "the kernel module covers every scheme on every shape it can"
    );
    cases
}

fn tiled_blob(case: &Case, nr: usize) -> Blob {
    let parts = pack_parts(&case.m, nr);
    let sizes: Vec<_> = parts
        .iter()
        .map(|(name, bytes)| (*name, bytes.len()))
        .collect();
    assert_eq!(
        sizes,
        part_sizes(case.rows, case.cols, case.m.scheme, nr),
        "pack_parts vs part_sizes"
    );
    Blob::new(&parts)
}

/// `Σ w·x` and `Σ size(w)·|x|` in f64 for every output.
fn reference(case: &Case, x: &Q8Acts) -> (Vec<f64>, Vec<f64>) {
    let (rows, cols, n) = (case.rows, case.cols, x.tokens());
    let x64: Vec<f64> =
        x.q.iter()
            .enumerate()
            .map(|(i, &q)| x.scale[i / 32] as f64 * q as f64)
            .collect();
    let mut value = vec![0.0; n * rows];
    let mut magnitude = vec![0.0; n * rows];
    for t in 0..n {
        let xt = &x64[t * cols..][..cols];
        for r in 0..rows {
            let wr = &case.w64[r * cols..][..cols];
            let sr = &case.size64[r * cols..][..cols];
            let (mut v, mut a) = (0.0f64, 0.0f64);
            for ((w, size), x) in wr.iter().zip(sr).zip(xt) {
                v += w * x;
                a += size * x.abs();
            }
            value[t * rows + r] = v;
            magnitude[t * rows + r] = a;
        }
    }
    (value, magnitude)
}

/// Largest `|got − want| / magnitude` (0 where both are exactly 0).
fn worst(got: &[f32], want: &[f64], magnitude: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .zip(magnitude)
        .map(|((&g, &w), &m)| {
            let err = (g as f64 - w).abs();
            if err == 0.0 {
                0.0
            } else {
                err / m.max(f64::MIN_POSITIVE)
            }
        })
        .fold(0.0, f64::max)
}

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
            return Err(format!("SVE vectors are {} bits here, the kernels need {}", bytes * 8, set.sve_bytes * 8));
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
        let simd = k::kernel(module, r, c, s).unwrap_or_else(|| panic!("no {module} kernel for {s} {r}x{c}"));
        let twin = k::kernel(set.twin, r, c, s).unwrap();
        let blob = tiled_blob(&case, set.nr);
        // Every pass size (1..=8 covers i8mm's odd and even pairs), and past the token block
        // (several sweeps over the tiles) on the widest shape.
        let sweeps = 2 * token_block_for(8, c) + 3;
        let extra = (c == 4864).then_some(sweeps);
        let small = (r * c) <= 13 * 96;
        let tokens: Vec<usize> = if small { (1..=9).chain([17]).collect() } else { TOKENS.to_vec() };
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
