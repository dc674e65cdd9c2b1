// The shared half of tests/kernels_x86.rs and tests/kernels_aarch64.rs, `include!`d by both:
// random and extreme weights and activations, the scalar and tiled weight blobs, the f64
// reference and the error measure. It expects the kernels module `k` and the
// imports of those files in scope.

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
        QuantizedData::Grouped {
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
/// kernels' sums: `|w|`, except for asymmetric group-wise codes where every kernel computes `d·Σq·x + m·Σx`
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
        QuantizedData::Grouped {
            packed,
            scales,
            mins,
        } => {
            let group = m.scheme.group().expect("grouped data, a group-wise scheme");
            let bits = m.scheme.code_bits().unwrap() as usize;
            let half = (1u32 << (bits - 1)) as f64;
            (0..m.rows * m.cols)
                .map(|i| {
                    let code = qwenc_runtime::weights::code_at(packed, bits, i);
                    let (d, g) = (scales[i / group].to_f64(), i / group);
                    match mins {
                        Some(mins) => {
                            let min = mins[g].to_f64();
                            (d * code as f64 + min, (d * code as f64).abs() + min.abs())
                        }
                        None => (d * (code as f64 - half), (d * (code as f64 - half)).abs()),
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

