//! GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
//! Pre-trained Transformers", Algorithm 1): quantize a matrix one input column at a time and
//! push each column's rounding error onto the columns not yet quantized, weighted by the
//! inverse Hessian of the layer's squared output error, H = 2 XᵀX / n.
//!
//! ```text
//! H += λ I,  λ = damp · mean(diag H)            (damp = 0.01)
//! U = upper Cholesky factor of H⁻¹             (H⁻¹ = UᵀU)
//! for each column i (in blocks of B, the rest updated once per block: "lazy batch"):
//!     q_i = Q(w_i)                             (group grid fitted when its first column comes up)
//!     e_i = (w_i − q_i) / U_ii
//!     w_j −= e_i · U_ij    for j > i
//! ```
//!
//! Differences from the reference implementation, and why:
//! - Rows are independent given U, so rows are processed in parallel chunks (the block
//!   update reuses each row of U for a chunk of rows).
//! - With act-order (columns in decreasing diag H), the scheme's groups must stay contiguous
//!   in the original column order, so group grids are fitted up front on the original
//!   weights ("static groups", as AutoGPTQ's `static_groups`).
//! - A column the calibration never excited (diag H = 0) gets H_ii = 1 but keeps its weight
//!   (the reference zeroes it), so unseen inputs still see the original weight.
//! - The grid of a group is exactly round-to-nearest's ([`quantize_rtn`] of the group), so a
//!   GPTQ matrix is stored and dequantized like any other.
//!
//! U is computed as J·inv(chol(J H J))·J with J the reversal permutation: if J H J = L̃L̃ᵀ
//! then H = R Rᵀ with R = J L̃ J upper, and H⁻¹ = (R⁻¹)ᵀ R⁻¹, so U = R⁻¹.

use half::f16;
use rayon::prelude::*;

use super::rtn::pack_codes;
use super::{quantize_rtn, QuantizedData, QuantizedMatrix, Scheme};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GptqOptions {
    /// Damping as a fraction of the mean diagonal of H.
    pub damp: f64,
    /// Quantize columns in decreasing order of diag H.
    pub act_order: bool,
    /// Columns per lazy-batch block.
    pub block: usize,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damp: 0.01,
            act_order: false,
            block: 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GptqError {
    #[error("the Hessian is not positive definite even with damping {0}")]
    NotPositiveDefinite(f64),
    #[error("scheme {0} has no integer grid for GPTQ")]
    Scheme(Scheme),
    #[error("{0}")]
    Shape(String),
}

/// H = 2 XᵀX / n for activations `x` (`[n, cols]`), f64, row-major `[cols, cols]`.
pub fn hessian(x: &[f32], cols: usize) -> Vec<f64> {
    let n = x.len() / cols;
    // Xᵀ [cols, n], so each entry is a contiguous dot product.
    let mut xt = vec![0.0f32; cols * n];
    for t in 0..n {
        for c in 0..cols {
            xt[c * n + t] = x[t * cols + c];
        }
    }
    let scale = 2.0 / n.max(1) as f64;
    let mut h = vec![0.0f64; cols * cols];
    h.par_chunks_mut(cols).enumerate().for_each(|(i, row)| {
        let a = &xt[i * n..][..n];
        for (j, v) in row.iter_mut().enumerate().skip(i) {
            *v = crate::reference::dot(a, &xt[j * n..][..n]) as f64 * scale;
        }
    });
    for i in 0..cols {
        for j in 0..i {
            h[i * cols + j] = h[j * cols + i];
        }
    }
    h
}

/// Lower Cholesky factor of the symmetric `a` (`[n, n]`), or `None` if not positive definite.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for j in 0..n {
        let (done, rest) = l.split_at_mut((j + 1) * n);
        let lj = &done[j * n..][..j];
        let d = a[j * n + j] - lj.iter().map(|v| v * v).sum::<f64>();
        if !d.is_finite() || d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        done[j * n + j] = d;
        let lj = &done[j * n..][..j];
        rest.par_chunks_mut(n).enumerate().for_each(|(k, li)| {
            let i = j + 1 + k;
            let s = a[i * n + j] - dot64(&li[..j], lj);
            li[j] = s / d;
        });
    }
    Some(l)
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for k in 0..4 {
            acc[k] += a[i * 4 + k] * b[i * 4 + k];
        }
    }
    let mut s = acc.iter().sum::<f64>();
    for i in chunks * 4..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// Inverse of the lower-triangular `l`, by forward substitution on column blocks in
/// parallel.
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    const BW: usize = 64;
    let blocks: Vec<(usize, Vec<f64>)> = (0..n)
        .step_by(BW)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|j0| {
            let bw = BW.min(n - j0);
            // x[i][c] = (L⁻¹)[i][j0 + c], rows i >= j0.
            let mut x = vec![0.0f64; n * bw];
            for i in j0..n {
                let (before, row) = x.split_at_mut(i * bw);
                let row = &mut row[..bw];
                if i < j0 + bw {
                    row[i - j0] = 1.0;
                }
                for k in j0..i {
                    let lik = l[i * n + k];
                    if lik != 0.0 {
                        for (r, xk) in row.iter_mut().zip(&before[k * bw..][..bw]) {
                            *r -= lik * xk;
                        }
                    }
                }
                let inv = 1.0 / l[i * n + i];
                for r in row.iter_mut() {
                    *r *= inv;
                }
            }
            (j0, x)
        })
        .collect();
    let mut out = vec![0.0f64; n * n];
    for (j0, x) in blocks {
        let bw = x.len() / n;
        for i in j0..n {
            out[i * n + j0..][..bw].copy_from_slice(&x[i * bw..][..bw]);
        }
    }
    out
}

/// U, upper triangular with H⁻¹ = UᵀU (see the module documentation); f32 row-major.
pub fn inverse_cholesky_upper(h: &[f64], n: usize) -> Option<Vec<f32>> {
    let mut rev = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            rev[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
        }
    }
    let l = cholesky(&rev, n)?;
    let m = invert_lower(&l, n);
    let mut u = vec![0.0f32; n * n];
    for i in 0..n {
        for j in i..n {
            u[i * n + j] = m[(n - 1 - i) * n + (n - 1 - j)] as f32;
        }
    }
    Some(u)
}

/// One group's grid: code ↔ value, exactly as [`quantize_rtn`] stores it.
#[derive(Clone, Copy, Debug)]
enum Grid {
    /// w8: value = s·q, q ∈ [−127, 127].
    W8(f32),
    /// `bits`-bit symmetric (w4, w3, w2): value = d·(q − 2^(bits−1)).
    Sym(f16, u8),
    /// `bits`-bit asymmetric: value = d·q + m.
    Asym(f16, f16, u8),
}

impl Grid {
    fn fit(values: &[f32], scheme: Scheme) -> Grid {
        let m = quantize_rtn(values, 1, values.len(), scheme);
        let bits = scheme.code_bits().unwrap_or(8);
        match m.data {
            QuantizedData::W8 { scales, .. } => Grid::W8(scales[0]),
            QuantizedData::Grouped {
                scales, mins: None, ..
            } => Grid::Sym(scales[0], bits),
            QuantizedData::Grouped {
                scales,
                mins: Some(mins),
                ..
            } => Grid::Asym(scales[0], mins[0], bits),
            _ => unreachable!("only integer schemes reach GPTQ"),
        }
    }
    /// The code of `x` and the value it stands for.
    fn quantize(self, x: f32) -> (i32, f32) {
        match self {
            Grid::W8(s) => {
                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                let q = (x * inv).round().clamp(-127.0, 127.0);
                (q as i32, s * q)
            }
            Grid::Sym(d, bits) => {
                let (half, top) = ((1 << (bits - 1)) as f32, ((1 << bits) - 1) as f32);
                let d = d.to_f32();
                let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q = (x * inv + half).round().clamp(0.0, top);
                (q as i32, d * (q - half))
            }
            Grid::Asym(d, m, bits) => {
                let top = ((1 << bits) - 1) as f32;
                let (d, m) = (d.to_f32(), m.to_f32());
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                let q = ((x - m) * inv).round().clamp(0.0, top);
                (q as i32, d * q + m)
            }
        }
    }
}

/// Rows quantized together (each row of U is reused across them).
const ROW_CHUNK: usize = 16;

/// GPTQ of `w` (`[rows, cols]`) with Hessian `h` (`[cols, cols]`, from [`hessian`]).
pub fn quantize_gptq(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    scheme: Scheme,
    opts: &GptqOptions,
) -> Result<QuantizedMatrix, GptqError> {
    if w.len() != rows * cols || h.len() != cols * cols {
        return Err(GptqError::Shape(format!(
            "{} weights and {} Hessian entries for [{rows}, {cols}]",
            w.len(),
            h.len()
        )));
    }
    let group = match scheme {
        Scheme::W8 => cols,
        Scheme::W4 { .. } | Scheme::W8Grouped { .. } | Scheme::Narrow { .. } => {
            scheme.group().expect("a group-wise scheme")
        }
        _ => return Err(GptqError::Scheme(scheme)),
    };
    scheme.check_cols(cols).map_err(GptqError::Shape)?;

    // Dead inputs and damping.
    let mut h = h.to_vec();
    for i in 0..cols {
        if h[i * cols + i] == 0.0 {
            h[i * cols + i] = 1.0;
        }
    }
    let mean_diag = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols as f64;
    // Column order: identity, or decreasing diag H.
    let mut perm: Vec<usize> = (0..cols).collect();
    if opts.act_order {
        perm.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]).then(a.cmp(&b)));
    }
    let mut hp = vec![0.0f64; cols * cols];
    for (i, &pi) in perm.iter().enumerate() {
        for (j, &pj) in perm.iter().enumerate() {
            hp[i * cols + j] = h[pi * cols + pj];
        }
    }
    // Raise the damping until H is numerically positive definite.
    let mut damp = opts.damp;
    let u = loop {
        let mut hd = hp.clone();
        for i in 0..cols {
            hd[i * cols + i] += damp * mean_diag;
        }
        if let Some(u) = inverse_cholesky_upper(&hd, cols) {
            break u;
        }
        if damp >= 1.0 {
            return Err(GptqError::NotPositiveDefinite(damp));
        }
        damp *= 10.0;
    };

    let groups_per_row = cols / group;
    // codes[r * cols + original column], grids[r * groups_per_row + g].
    let mut codes = vec![0i32; rows * cols];
    let mut grids = vec![Grid::W8(0.0); rows * groups_per_row];
    // A group must not straddle a lazy-batch boundary when its grid is fitted as the
    // algorithm goes (its columns must have all earlier errors applied).
    let static_grids = opts.act_order || group == cols;
    let block = if static_grids {
        opts.block.max(1)
    } else {
        opts.block.max(1).div_ceil(group) * group
    };
    codes
        .par_chunks_mut(ROW_CHUNK * cols)
        .zip(grids.par_chunks_mut(ROW_CHUNK * groups_per_row))
        .enumerate()
        .for_each(|(chunk, (codes, grids))| {
            let r0 = chunk * ROW_CHUNK;
            let nr = codes.len() / cols;
            // Working copy in the processing order.
            let mut wp: Vec<f32> = (0..nr)
                .flat_map(|r| perm.iter().map(move |&c| w[(r0 + r) * cols + c]))
                .collect();
            let mut fitted = vec![false; nr * groups_per_row];
            if static_grids {
                // Static grids on the original weights.
                for r in 0..nr {
                    for g in 0..groups_per_row {
                        let row = &w[(r0 + r) * cols + g * group..][..group];
                        grids[r * groups_per_row + g] = Grid::fit(row, scheme);
                        fitted[r * groups_per_row + g] = true;
                    }
                }
            }
            let mut err = vec![0.0f32; nr * block];
            for b0 in (0..cols).step_by(block) {
                let b1 = (b0 + block).min(cols);
                for i in b0..b1 {
                    let orig = perm[i];
                    let g = orig / group;
                    let uii = u[i * cols + i];
                    let urow = &u[i * cols..][..cols];
                    for r in 0..nr {
                        let wr = &mut wp[r * cols..][..cols];
                        if !fitted[r * groups_per_row + g] {
                            // Without act-order the group's columns are i..i+group here.
                            grids[r * groups_per_row + g] = Grid::fit(&wr[i..i + group], scheme);
                            fitted[r * groups_per_row + g] = true;
                        }
                        let (q, value) = grids[r * groups_per_row + g].quantize(wr[i]);
                        codes[r * cols + orig] = q;
                        let e = (wr[i] - value) / uii;
                        err[r * block + (i - b0)] = e;
                        // Within the block only; the rest waits for the block update.
                        for (wj, uj) in wr[i + 1..b1].iter_mut().zip(&urow[i + 1..b1]) {
                            *wj -= e * uj;
                        }
                    }
                }
                // Lazy batch: W[:, b1..] -= Err[:, b0..b1] · U[b0..b1, b1..].
                for r in 0..nr {
                    let wr = &mut wp[r * cols..][..cols];
                    for i in b0..b1 {
                        let e = err[r * block + (i - b0)];
                        for (wj, uj) in wr[b1..].iter_mut().zip(&u[i * cols + b1..][..cols - b1]) {
                            *wj -= e * uj;
                        }
                    }
                }
            }
        });
    Ok(assemble(rows, cols, scheme, &codes, &grids))
}

/// Pack codes and grids the way [`quantize_rtn`] stores them.
fn assemble(
    rows: usize,
    cols: usize,
    scheme: Scheme,
    codes: &[i32],
    grids: &[Grid],
) -> QuantizedMatrix {
    let data = match scheme {
        Scheme::W8 => QuantizedData::W8 {
            q: codes.iter().map(|&q| q as i8).collect(),
            scales: grids
                .iter()
                .map(|g| match g {
                    Grid::W8(s) => *s,
                    _ => unreachable!(),
                })
                .collect(),
        },
        Scheme::W4 { .. } | Scheme::W8Grouped { .. } | Scheme::Narrow { .. } => {
            let asymmetric = scheme.asymmetric();
            let bits = scheme.code_bits().expect("a group-wise scheme") as usize;
            let codes: Vec<u8> = codes.iter().map(|&q| q as u8).collect();
            let mut packed = vec![0u8; codes.len() * bits / 8];
            pack_codes(&codes, bits, &mut packed);
            QuantizedData::Grouped {
                packed,
                scales: grids
                    .iter()
                    .map(|g| match g {
                        Grid::Sym(d, _) | Grid::Asym(d, _, _) => *d,
                        Grid::W8(_) => unreachable!(),
                    })
                    .collect(),
                mins: asymmetric.then(|| {
                    grids
                        .iter()
                        .map(|g| match g {
                            Grid::Asym(_, m, _) => *m,
                            _ => unreachable!(),
                        })
                        .collect()
                }),
            }
        }
        _ => unreachable!("checked by the caller"),
    };
    QuantizedMatrix {
        rows,
        cols,
        scheme,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize;
    use crate::reference::linear;
    use qwenc_runtime::testing::lcg_noise as noise;

    #[test]
    fn inverse_cholesky_factor_reproduces_the_inverse() {
        let n = 70;
        let x = noise(1, 200 * n);
        let mut h = hessian(&x, n);
        for i in 0..n {
            h[i * n + i] += 0.01;
        }
        let u = inverse_cholesky_upper(&h, n).unwrap();
        // (UᵀU) H = I.
        let mut worst = 0.0f64;
        for i in 0..n {
            for j in 0..n {
                let mut s = 0.0f64;
                for k in 0..n {
                    let utu: f64 = (0..n)
                        .map(|m| u[m * n + i] as f64 * u[m * n + k] as f64)
                        .sum();
                    s += utu * h[k * n + j];
                }
                worst = worst.max((s - if i == j { 1.0 } else { 0.0 }).abs());
            }
        }
        assert!(worst < 1e-4, "{worst}");
        for i in 0..n {
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0);
            }
        }
    }

    fn output_error(w: &[f32], q: &[f32], x: &[f32], rows: usize, cols: usize) -> f64 {
        let d: Vec<f32> = q.iter().zip(w).map(|(a, b)| a - b).collect();
        linear(x, &d, None, cols, rows)
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum()
    }

    #[test]
    fn gptq_beats_rtn_on_its_calibration_inputs() {
        let (rows, cols, n) = (24, 128, 300);
        let w = noise(2, rows * cols);
        // Correlated inputs: a few shared factors plus noise, some channels larger.
        let f = noise(3, n * 8);
        let mix = noise(4, 8 * cols);
        let e = noise(5, n * cols);
        let x: Vec<f32> = (0..n * cols)
            .map(|i| {
                let (t, c) = (i / cols, i % cols);
                let s: f32 = (0..8).map(|k| f[t * 8 + k] * mix[k * cols + c]).sum();
                (s + 0.3 * e[i]) * if c % 16 == 0 { 4.0 } else { 1.0 }
            })
            .collect();
        let h = hessian(&x, cols);
        for scheme in [
            Scheme::W8,
            Scheme::W4 {
                group: 32,
                asymmetric: false,
            },
            Scheme::W4 {
                group: 64,
                asymmetric: true,
            },
            "w3g32".parse().unwrap(),
            "w2g64a".parse().unwrap(),
        ] {
            let rtn = dequantize(&quantize_rtn(&w, rows, cols, scheme));
            let rtn_err = output_error(&w, &rtn, &x, rows, cols);
            for act_order in [false, true] {
                let opts = GptqOptions {
                    act_order,
                    block: 32,
                    ..Default::default()
                };
                let m = quantize_gptq(&w, rows, cols, &h, scheme, &opts).unwrap();
                assert_eq!((m.rows, m.cols, m.scheme), (rows, cols, scheme));
                let err = output_error(&w, &dequantize(&m), &x, rows, cols);
                eprintln!("{scheme} act_order={act_order}: GPTQ {err:.4} RTN {rtn_err:.4}");
                assert!(
                    err < rtn_err * 0.9,
                    "{scheme} act_order={act_order}: {err} vs RTN {rtn_err}"
                );
            }
        }
    }

    #[test]
    fn block_size_changes_only_rounding() {
        let (rows, cols) = (4, 64);
        let w = noise(6, rows * cols);
        let x = noise(7, 100 * cols);
        let h = hessian(&x, cols);
        let s = Scheme::W4 {
            group: 32,
            asymmetric: false,
        };
        let a = dequantize(
            &quantize_gptq(
                &w,
                rows,
                cols,
                &h,
                s,
                &GptqOptions {
                    block: 8,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        let b = dequantize(
            &quantize_gptq(
                &w,
                rows,
                cols,
                &h,
                s,
                &GptqOptions {
                    block: 64,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert!(differ <= 2, "{differ} of {} values differ", a.len());
    }

    #[test]
    fn bad_input_is_an_error() {
        let h = vec![0.0; 64 * 64];
        assert!(matches!(
            quantize_gptq(&[0.0; 10], 1, 64, &h, Scheme::W8, &GptqOptions::default()),
            Err(GptqError::Shape(_))
        ));
        assert!(matches!(
            quantize_gptq(&[0.0; 64], 1, 64, &h, Scheme::Bf16, &GptqOptions::default()),
            Err(GptqError::Scheme(_))
        ));
        // An all-zero Hessian (no calibration signal) is damped to the identity: RTN-like.
        let w = noise(8, 64);
        let m = quantize_gptq(&w, 1, 64, &h, Scheme::W8, &GptqOptions::default()).unwrap();
        assert_eq!(
            dequantize(&m),
            dequantize(&quantize_rtn(&w, 1, 64, Scheme::W8))
        );
    }
}
