//! AWQ: activation-aware per-input-channel scaling (Lin et al., 2023, "AWQ: Activation-aware
//! Weight Quantization"; the search follows AutoAWQ's `auto_scale`).
//!
//! For a linear layer y = W x, channels with large |x| matter most; scaling column c of W by
//! s_c > 1 before quantization (and x_c by 1/s_c) lowers their relative rounding error.
//! With a = mean_t |x_tc| over the calibration tokens:
//!
//! ```text
//! s(α) = a^α / sqrt(max(a^α) · min(a^α))      α ∈ {0, 1/G, …, (G−1)/G}
//! err(α) = Σ_matrices ‖ (Q(W·diag s) · diag(1/s) − W) Xᵀ ‖²_F
//! ```
//!
//! and the α of least error wins; α = 0 is s = 1, plain round-to-nearest, so the chosen
//! scales never do worse than RTN on the search tokens. Matrices that read the same input
//! share one s (q/k/v; gate/up). The division by s is folded exactly into the op before:
//! - q/k/v: the input RMSNorm weight (`input_layernorm /= s`);
//! - gate/up: the post-attention RMSNorm weight;
//! - down_proj: the rows of up_proj (`up[j, :] /= s_j`; silu(gate)·up is linear in up);
//! - o_proj: not scaled. Its input is the attention output, linear in v_proj's rows, but
//!   with grouped-query attention each v head feeds 7 query heads, so an exact fold needs one
//!   scale per (kv head, dim) shared by those 7 heads. AutoAWQ likewise skips o_proj when
//!   v_proj and o_proj shapes differ; we do the same (o_proj is plain RTN).
//!
//! AutoAWQ's second step (clipping search) is not done.

use rayon::prelude::*;

use super::{dequantize, quantize_rtn, Scheme};
use crate::reference::linear;

/// Search settings. The defaults are half of AutoAWQ's grid (20) and far fewer tokens: the
/// search runs on 2 CPU cores, and costs grid × tokens × (weights of the layer) flops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AwqOptions {
    /// Grid points of α in [0, 1).
    pub grid: usize,
    /// Calibration tokens used in the error of the search (the first ones).
    pub search_tokens: usize,
}

impl Default for AwqOptions {
    fn default() -> Self {
        AwqOptions {
            grid: 10,
            search_tokens: 128,
        }
    }
}

/// The outcome of one search.
#[derive(Clone, Debug, PartialEq)]
pub struct AwqSearch {
    /// Per input channel.
    pub scales: Vec<f32>,
    pub alpha: f32,
    /// Output error with the chosen scales and with none (RTN), on the search tokens.
    pub error: f64,
    pub rtn_error: f64,
}

/// `‖(Q(W·diag s)·diag(1/s) − W) Xᵀ‖²` summed over `mats` (`(w [rows, cols], rows)`).
pub fn scaled_error(
    mats: &[(&[f32], usize)],
    cols: usize,
    x: &[f32],
    s: &[f32],
    scheme: Scheme,
) -> f64 {
    mats.iter()
        .map(|&(w, rows)| {
            let scaled: Vec<f32> = w
                .par_chunks(cols)
                .flat_map_iter(|row| row.iter().zip(s).map(|(v, s)| v * s))
                .collect();
            let q = dequantize(&quantize_rtn(&scaled, rows, cols, scheme));
            // ΔW = Q(W s)/s − W: the effective weight seen by the unscaled x.
            let delta: Vec<f32> = q
                .par_chunks(cols)
                .zip(w.par_chunks(cols))
                .flat_map_iter(|(qr, wr)| {
                    qr.iter()
                        .zip(wr)
                        .zip(s)
                        .map(|((q, w), s)| q / s - w)
                        .collect::<Vec<_>>()
                })
                .collect();
            // y: [n, rows]. Its squares are summed over fixed chunks, added in order: rayon's
            // `sum` splits by work stealing, and a float sum that depends on the split made the
            // same search give two different errors now and then.
            let y = linear(x, &delta, None, cols, rows);
            let partial: Vec<f64> = y
                .par_chunks(4096)
                .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
                .collect();
            partial.iter().sum::<f64>()
        })
        .sum()
}

/// Mean |x| per channel of `x` (`[n, cols]`).
pub fn mean_abs(x: &[f32], cols: usize) -> Vec<f32> {
    let n = (x.len() / cols).max(1);
    let mut acc = vec![0.0f64; cols];
    for row in x.chunks(cols) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v.abs() as f64;
        }
    }
    acc.iter().map(|a| (a / n as f64) as f32).collect()
}

/// AutoAWQ's scales for one α: a^α clamped at 1e-4, over sqrt(max · min).
pub fn scales_for(a: &[f32], alpha: f32) -> Vec<f32> {
    let s: Vec<f32> = a.iter().map(|&v| v.powf(alpha).max(1e-4)).collect();
    let max = s.iter().copied().fold(f32::MIN, f32::max);
    let min = s.iter().copied().fold(f32::MAX, f32::min);
    let norm = (max * min).sqrt();
    s.iter().map(|v| v / norm).collect()
}

/// Search the scale of the matrices `mats` that all read `x` (`[n, cols]`).
pub fn search(
    mats: &[(&[f32], usize)],
    cols: usize,
    x: &[f32],
    scheme: Scheme,
    opts: &AwqOptions,
) -> AwqSearch {
    let n = (x.len() / cols).min(opts.search_tokens.max(1));
    let xs = &x[..n * cols];
    let a = mean_abs(x, cols);
    let ones = vec![1.0f32; cols];
    let rtn_error = scaled_error(mats, cols, xs, &ones, scheme);
    let mut best = AwqSearch {
        scales: ones,
        alpha: 0.0,
        error: rtn_error,
        rtn_error,
    };
    for g in 1..opts.grid.max(1) {
        let alpha = g as f32 / opts.grid as f32;
        let s = scales_for(&a, alpha);
        let error = scaled_error(mats, cols, xs, &s, scheme);
        if error < best.error {
            best = AwqSearch {
                scales: s,
                alpha,
                error,
                rtn_error,
            };
        }
    }
    best
}

/// Multiply column c of `w` (`[rows, cols]`) by `s[c]`.
pub fn scale_columns(w: &mut [f32], s: &[f32]) {
    for row in w.chunks_mut(s.len()) {
        for (v, s) in row.iter_mut().zip(s) {
            *v *= s;
        }
    }
}

/// Divide row r of `w` (`[rows, cols]`) by `s[r]`.
pub fn unscale_rows(w: &mut [f32], s: &[f32]) {
    let cols = w.len() / s.len();
    for (row, s) in w.chunks_mut(cols).zip(s) {
        for v in row {
            *v /= s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qwenc_runtime::testing::lcg_noise as noise;

    #[test]
    fn the_search_never_loses_to_rtn_and_wins_with_outlier_channels() {
        let (rows, cols, n) = (48, 64, 96);
        let w = noise(1, rows * cols);
        // Activations with a few channels 20x larger, as in real LLMs.
        let mut x = noise(2, n * cols);
        for t in 0..n {
            for c in [3, 17, 40] {
                x[t * cols + c] *= 20.0;
            }
        }
        let scheme = Scheme::W4 {
            group: 32,
            asymmetric: false,
        };
        let r = search(&[(&w, rows)], cols, &x, scheme, &AwqOptions::default());
        assert!(r.error <= r.rtn_error);
        assert!(r.alpha > 0.0 && r.error < 0.8 * r.rtn_error, "{r:?}");
        // The error is what it says: recompute it by hand for the chosen scales.
        let again = scaled_error(&[(&w, rows)], cols, &x[..96 * cols], &r.scales, scheme);
        assert_eq!(again, r.error);
    }

    #[test]
    fn folding_is_exact_before_quantization() {
        // norm·(x) through W equals (norm/s)·x through W·diag(s).
        let (rows, cols) = (5, 8);
        let w = noise(3, rows * cols);
        let x = noise(4, cols);
        let s: Vec<f32> = noise(5, cols).iter().map(|v| 1.5 + v).collect();
        let mut ws = w.clone();
        scale_columns(&mut ws, &s);
        let xs: Vec<f32> = x.iter().zip(&s).map(|(x, s)| x / s).collect();
        let y = linear(&x, &w, None, cols, rows);
        let ys = linear(&xs, &ws, None, cols, rows);
        for (a, b) in y.iter().zip(&ys) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
        let mut back = ws.clone();
        unscale_rows(&mut back, &vec![2.0; rows]);
        assert_eq!(back[0], ws[0] / 2.0);
    }
}
