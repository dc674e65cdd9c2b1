//! Round-to-nearest quantization and the exact dequantization every kernel must match.

use half::{bf16, f16};
use rayon::prelude::*;

use super::Scheme;

/// A `[rows, cols]` matrix in one scheme (row-major, rows = outputs).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedMatrix {
    pub rows: usize,
    pub cols: usize,
    pub scheme: Scheme,
    pub data: QuantizedData,
}

#[derive(Clone, Debug, PartialEq)]
pub enum QuantizedData {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    /// `q[rows * cols]`, `scales[rows]`.
    W8 {
        q: Vec<i8>,
        scales: Vec<f32>,
    },
    /// The group-wise schemes (`w4`, `w3`, `w2`): `b`-bit codes as one little-endian bit
    /// stream (column `c` of the matrix at bits `b·c .. b·c + b`; for `w4` the low nibble of
    /// byte `i` is column `2i`), `scales[rows * cols / group]`, `mins` likewise when
    /// asymmetric. A group's codes start on a byte (`group · b` is a multiple of 8).
    Grouped {
        packed: Vec<u8>,
        scales: Vec<f16>,
        mins: Option<Vec<f16>>,
    },
}

/// Quantize `w` (`[rows, cols]`, row-major) by rounding to nearest. Panics only on a caller
/// bug (length mismatch, or cols not divisible by the group: check with `Scheme::check_cols`).
pub fn quantize_rtn(w: &[f32], rows: usize, cols: usize, scheme: Scheme) -> QuantizedMatrix {
    assert_eq!(w.len(), rows * cols, "matrix length");
    let data = match scheme {
        Scheme::F32 => QuantizedData::F32(w.to_vec()),
        Scheme::Bf16 => QuantizedData::Bf16(w.iter().map(|&x| bf16::from_f32(x)).collect()),
        Scheme::W8 => {
            let mut q = vec![0i8; rows * cols];
            let scales: Vec<f32> = q
                .par_chunks_mut(cols)
                .zip(w.par_chunks(cols))
                .map(|(q, row)| {
                    let absmax = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    let scale = absmax / 127.0;
                    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                    for (qi, &x) in q.iter_mut().zip(row) {
                        *qi = (x * inv).round().clamp(-127.0, 127.0) as i8;
                    }
                    scale
                })
                .collect();
            QuantizedData::W8 { q, scales }
        }
        Scheme::W4 { .. } | Scheme::W8Grouped { .. } | Scheme::Narrow { .. } => {
            scheme
                .check_cols(cols)
                .expect("caller checked the group size");
            let (group, asymmetric) = (scheme.group().expect("grouped"), scheme.asymmetric());
            let bits = scheme.code_bits().expect("a group-wise scheme") as usize;
            let groups = rows * cols / group;
            let mut packed = vec![0u8; rows * cols * bits / 8];
            let mut scales = vec![f16::ZERO; groups];
            // Minimums are computed for every group and dropped for the symmetric scheme.
            let mut mins = vec![f16::ZERO; groups];
            packed
                .par_chunks_mut(group * bits / 8)
                .zip(w.par_chunks(group))
                .zip(scales.par_iter_mut())
                .zip(mins.par_iter_mut())
                .for_each(|(((out, values), scale), min)| {
                    let q = if asymmetric {
                        let (d, m, q) = search_asymmetric(values, bits);
                        *scale = d;
                        *min = m;
                        q
                    } else {
                        let (d, q) = search_symmetric(values, bits);
                        *scale = d;
                        q
                    };
                    pack_codes(&q, bits, out);
                });
            QuantizedData::Grouped {
                packed,
                scales,
                mins: asymmetric.then_some(mins),
            }
        }
    };
    QuantizedMatrix {
        rows,
        cols,
        scheme,
        data,
    }
}

/// `codes` (each below 2^bits) into `out` as a little-endian bit stream.
pub(crate) fn pack_codes(codes: &[u8], bits: usize, out: &mut [u8]) {
    out.fill(0);
    for (i, &c) in codes.iter().enumerate() {
        let bit = i * bits;
        let v = (c as u16) << (bit % 8);
        out[bit / 8] |= v as u8;
        if bit % 8 + bits > 8 {
            out[bit / 8 + 1] |= (v >> 8) as u8;
        }
    }
}

pub use qwenc_runtime::weights::code_at;

fn quantize_group(values: &[f32], bits: usize, code: impl Fn(f32) -> f32) -> Vec<u8> {
    let top = ((1 << bits) - 1) as f32;
    values
        .iter()
        .map(|&x| code(x).round().clamp(0.0, top) as u8)
        .collect()
}

/// Squared error of a group against its dequantized codes.
fn group_error(values: &[f32], q: &[u8], value: impl Fn(u8) -> f32) -> f32 {
    values
        .iter()
        .zip(q)
        .map(|(&x, &c)| (value(c) - x).powi(2))
        .sum()
}

/// Symmetric group of `bits`-bit codes: the value of largest magnitude maps to code 0
/// (= −2^(bits−1), −8 for 4 bits), so all levels are used. (A least-squares scale search
/// was tried and raised the KL divergence on the dev checkpoint from 0.10 to 0.12–0.24: its
/// weights come from a 5-bit grid that this plain choice keeps aligned.)
fn search_symmetric(values: &[f32], bits: usize) -> (f16, Vec<u8>) {
    let half = (1 << (bits - 1)) as f32;
    let extreme = values
        .iter()
        .fold(0.0f32, |e, &x| if x.abs() > e.abs() { x } else { e });
    let d = f16::from_f32(extreme / -half);
    let inv = if d.to_f32() != 0.0 {
        1.0 / d.to_f32()
    } else {
        0.0
    };
    (d, quantize_group(values, bits, |x| x * inv + half))
}

/// Asymmetric group of `bits`-bit codes: start from min/max, shrink the range a little at a
/// time, refit scale and minimum by least squares for each rounding, keep the smallest
/// squared error.
fn search_asymmetric(values: &[f32], bits: usize) -> (f16, f16, Vec<u8>) {
    let top = ((1 << bits) - 1) as f32;
    let (lo, hi) = values
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let plain = |lo: f32, hi: f32| {
        let d = f16::from_f32((hi - lo) / top);
        let m = f16::from_f32(lo);
        let inv = if d.to_f32() > 0.0 {
            1.0 / d.to_f32()
        } else {
            0.0
        };
        let q = quantize_group(values, bits, |x| (x - m.to_f32()) * inv);
        (d, m, q)
    };
    let error =
        |d: f16, m: f16, q: &[u8]| group_error(values, q, |c| d.to_f32() * c as f32 + m.to_f32());
    let (d, m, q) = plain(lo, hi);
    let mut best = (error(d, m, &q), d, m, q);
    if hi <= lo {
        return (best.1, best.2, best.3);
    }
    for step in 0..=12 {
        let shrink = 0.02 * step as f32 * (hi - lo);
        for (a, b) in [
            (lo + shrink, hi),
            (lo, hi - shrink),
            (lo + shrink / 2.0, hi - shrink / 2.0),
        ] {
            let (_, _, q) = plain(a, b);
            // Least squares for value = d·q + m over the group.
            let n = values.len() as f32;
            let (sq, sx, sqq, sqx) = values.iter().zip(&q).fold(
                (0.0f32, 0.0, 0.0, 0.0),
                |(sq, sx, sqq, sqx), (&x, &c)| {
                    let c = c as f32;
                    (sq + c, sx + x, sqq + c * c, sqx + c * x)
                },
            );
            let det = n * sqq - sq * sq;
            if det.abs() < 1e-12 {
                continue;
            }
            let d = f16::from_f32((n * sqx - sq * sx) / det);
            let m = f16::from_f32((sx * sqq - sq * sqx) / det);
            let err = error(d, m, &q);
            if err < best.0 {
                best = (err, d, m, q);
            }
        }
    }
    (best.1, best.2, best.3)
}

/// The f32 values a quantized matrix stands for; the definition kernels are tested against.
pub fn dequantize(m: &QuantizedMatrix) -> Vec<f32> {
    let cols = m.cols;
    match &m.data {
        QuantizedData::F32(v) => v.clone(),
        QuantizedData::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
        QuantizedData::W8 { q, scales } => q
            .chunks(cols)
            .zip(scales)
            .flat_map(|(row, &s)| row.iter().map(move |&qi| s * qi as f32))
            .collect(),
        QuantizedData::Grouped {
            packed,
            scales,
            mins,
        } => {
            let group = m
                .scheme
                .group()
                .expect("grouped data always carries a group-wise scheme");
            let bits = m.scheme.code_bits().expect("a group-wise scheme") as usize;
            let half = (1 << (bits - 1)) as f32;
            (0..m.rows * cols)
                .into_par_iter()
                .map(|i| {
                    let (g, q) = (i / group, code_at(packed, bits, i) as f32);
                    let d = scales[g].to_f32();
                    match mins {
                        Some(mins) => d * q + mins[g].to_f32(),
                        None => d * (q - half),
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0 + (i % 3) as f32 * 0.01)
            .collect()
    }

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn w8_error_is_at_most_half_a_step() {
        let w = sample(8, 64);
        let m = quantize_rtn(&w, 8, 64, Scheme::W8);
        let QuantizedData::W8 { scales, .. } = &m.data else {
            panic!()
        };
        let back = dequantize(&m);
        for (r, s) in scales.iter().enumerate() {
            assert!(max_err(&w[r * 64..][..64], &back[r * 64..][..64]) <= s / 2.0 + 1e-6);
        }
    }

    #[test]
    fn w4_symmetric_uses_the_full_range_and_bounds_the_error() {
        let w = sample(4, 64);
        let m = quantize_rtn(
            &w,
            4,
            64,
            Scheme::W4 {
                group: 32,
                asymmetric: false,
            },
        );
        let QuantizedData::Grouped {
            packed,
            scales,
            mins,
        } = &m.data
        else {
            panic!()
        };
        assert!(mins.is_none());
        assert_eq!((packed.len(), scales.len()), (128, 8));
        let back = dequantize(&m);
        for g in 0..8 {
            let d = scales[g].to_f32().abs();
            let err = max_err(&w[g * 32..][..32], &back[g * 32..][..32]);
            // Codes span [-8d, 7d]: half a step inside, at most one step for values of the
            // opposite sign beyond 7d; plus the f16 rounding of the scale.
            assert!(err <= d + 8.0 * d * 1e-3, "group {g}: {err} vs step {d}");
            let inside = w[g * 32..][..32]
                .iter()
                .zip(&back[g * 32..][..32])
                .filter(|(x, _)| x.abs() <= 7.0 * d);
            for (x, y) in inside {
                assert!(
                    (x - y).abs() <= d / 2.0 + 8.0 * d * 1e-3,
                    "group {g}: {x} -> {y}"
                );
            }
        }
        // The extreme value of each group is exactly code 0 or reproduced within f16 precision.
        assert!(packed.iter().any(|b| b & 15 == 0 || b >> 4 == 0));
    }

    #[test]
    fn w4_asymmetric_search_beats_plain_min_max() {
        let w: Vec<f32> = sample(2, 128)
            .iter()
            .enumerate()
            .map(|(i, x)| x + 0.7 + if i % 37 == 0 { 1.5 } else { 0.0 })
            .collect();
        let m = quantize_rtn(
            &w,
            2,
            128,
            Scheme::W4 {
                group: 64,
                asymmetric: true,
            },
        );
        let QuantizedData::Grouped { scales, .. } = &m.data else {
            panic!()
        };
        let back = dequantize(&m);
        for g in 0..4 {
            let values = &w[g * 64..][..64];
            // The plain grid: min at code 0, max at code 15.
            let (lo, hi) = values
                .iter()
                .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            let d = f16::from_f32((hi - lo) / 15.0).to_f32();
            let m0 = f16::from_f32(lo).to_f32();
            let plain: f32 = values
                .iter()
                .map(|&x| (d * ((x - m0) / d).round().clamp(0.0, 15.0) + m0 - x).powi(2))
                .sum();
            let searched: f32 = values
                .iter()
                .zip(&back[g * 64..][..64])
                .map(|(x, y)| (x - y).powi(2))
                .sum();
            assert!(
                searched <= plain * (1.0 + 1e-3),
                "group {g}: {searched} > {plain}"
            );
            let step = scales[g].to_f32();
            assert!(
                max_err(values, &back[g * 64..][..64]) <= 2.0 * step.max(d),
                "group {g}"
            );
        }
    }

    #[test]
    fn nibble_order_is_low_then_high() {
        // Column 0 = -1 (extreme) and column 1 = 0 in a group scaled so codes are exact.
        let mut w = vec![0.0f32; 32];
        w[0] = -1.0;
        w[3] = 0.5;
        let m = quantize_rtn(
            &w,
            1,
            32,
            Scheme::W4 {
                group: 32,
                asymmetric: false,
            },
        );
        let QuantizedData::Grouped { packed, scales, .. } = &m.data else {
            panic!()
        };
        assert_eq!(scales[0].to_f32(), 0.125); // -1 / -8
        assert_eq!(packed[0], 8 << 4); // col 0 code 0, col 1 code 8 (zero)
        assert_eq!(packed[1], 8 | (12 << 4)); // col 2 zero, col 3 = 0.5 / 0.125 + 8
        assert_eq!(dequantize(&m), w);
    }

    #[test]
    // The bytes are grouped by the 3-bit codes they hold, not in equal groups.
    #[allow(clippy::unusual_byte_groupings)]
    fn bit_streams_round_trip_across_bytes() {
        for bits in [2usize, 3, 4] {
            let codes: Vec<u8> = (0..64)
                .map(|i| ((i * 5 + i / 7) % (1 << bits)) as u8)
                .collect();
            let mut out = vec![0u8; 64 * bits / 8];
            pack_codes(&codes, bits, &mut out);
            let back: Vec<u8> = (0..64).map(|i| code_at(&out, bits, i)).collect();
            assert_eq!(back, codes, "{bits} bits");
        }
        // 3-bit codes 1..=8 (mod 8): column 2 straddles bytes 0 and 1.
        let mut out = [0u8; 3];
        pack_codes(&[1, 2, 3, 4, 5, 6, 7, 0], 3, &mut out);
        assert_eq!(out, [0b11_010_001, 0b0_101_100_0, 0b000_111_11]);
    }

    #[test]
    fn narrow_schemes_use_their_levels_and_bound_the_error() {
        let w = sample(4, 128);
        for (bits, group, asymmetric) in [
            (2u8, 32, true),
            (2, 64, false),
            (3, 64, true),
            (3, 128, false),
        ] {
            let scheme = Scheme::Narrow {
                bits,
                group,
                asymmetric,
            };
            let m = quantize_rtn(&w, 4, 128, scheme);
            let QuantizedData::Grouped {
                packed,
                scales,
                mins,
            } = &m.data
            else {
                panic!()
            };
            assert_eq!(packed.len(), 4 * 128 * bits as usize / 8, "{scheme}");
            assert_eq!(scales.len(), 4 * 128 / group, "{scheme}");
            assert_eq!(mins.is_some(), asymmetric, "{scheme}");
            let back = dequantize(&m);
            let levels = (1usize << bits) as f32;
            for g in 0..4 * 128 / group {
                let values = &w[g * group..][..group];
                let (lo, hi) = values
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                // At most one step of the plain grid over the group's range (symmetric grids
                // span twice the largest magnitude).
                let span = if asymmetric {
                    hi - lo
                } else {
                    2.0 * lo.abs().max(hi.abs())
                };
                let err = max_err(values, &back[g * group..][..group]);
                assert!(
                    err <= span / (levels - 1.0) * 1.01,
                    "{scheme} group {g}: {err} vs {span}"
                );
                // Every stored value is on the group's grid.
                let d = scales[g].to_f32();
                let base = mins.as_ref().map_or(-levels / 2.0 * d, |m| m[g].to_f32());
                for &v in &back[g * group..][..group] {
                    let q = (v - base) / d;
                    assert!((q - q.round()).abs() < 1e-3 && q.round() >= 0.0 && q.round() < levels);
                }
            }
            let bpw = scheme.bits_per_weight(128);
            let stored =
                packed.len() * 8 + scales.len() * 16 + mins.as_ref().map_or(0, |m| m.len() * 16);
            assert_eq!(bpw * (4.0 * 128.0), stored as f64, "{scheme}");
        }
    }

    #[test]
    fn grouped_int8_follows_each_group_where_per_row_int8_cannot() {
        // One large weight per row: a per-row scale spends its 255 levels on it, a per-group
        // scale only in the group that holds it.
        let mut w = sample(2, 128);
        for r in 0..2 {
            w[r * 128 + 100] = 50.0;
        }
        let scheme = Scheme::W8Grouped { group: 32 };
        let m = quantize_rtn(&w, 2, 128, scheme);
        let QuantizedData::Grouped { scales, mins, .. } = &m.data else {
            panic!("grouped data")
        };
        assert_eq!((scales.len(), mins.is_none()), (8, true));
        let grouped = dequantize(&m);
        let per_row = dequantize(&quantize_rtn(&w, 2, 128, Scheme::W8));
        let first_groups =
            |b: &[f32]| max_err(&w[..32], &b[..32]).max(max_err(&w[128..160], &b[128..160]));
        assert!(
            first_groups(&grouped) * 10.0 < first_groups(&per_row),
            "{} vs {}",
            first_groups(&grouped),
            first_groups(&per_row)
        );
        // Within one step of each group's grid (d = largest magnitude / 128).
        for g in 0..8 {
            let values = &w[g * 32..][..32];
            let step = scales[g].to_f32().abs();
            assert!(
                max_err(values, &grouped[g * 32..][..32]) <= step * 1.01,
                "group {g}"
            );
        }
    }

    #[test]
    fn zero_rows_stay_zero() {
        let w = vec![0.0f32; 64];
        for scheme in [
            Scheme::W8,
            Scheme::W8Grouped { group: 32 },
            Scheme::W4 {
                group: 32,
                asymmetric: false,
            },
            Scheme::W4 {
                group: 32,
                asymmetric: true,
            },
            Scheme::Narrow {
                bits: 3,
                group: 32,
                asymmetric: false,
            },
            Scheme::Narrow {
                bits: 2,
                group: 64,
                asymmetric: true,
            },
        ] {
            assert_eq!(dequantize(&quantize_rtn(&w, 1, 64, scheme)), w, "{scheme}");
        }
    }
}
