//! Shape-independent helpers that generated kernels call: parallel output loops and int8
//! activation quantization. The shapes themselves are constants in the generated code.

use crate::threads::{current_num_threads, for_each_chunk_mut};

/// Fill `y` (`[n, rows]`, row-major by token) with `f(row, token)`, splitting rows across the
/// thread pool. Each weight row is visited once for all `n` tokens (prefill reuses it).
pub fn par_outputs(y: &mut [f32], n: usize, rows: usize, f: impl Fn(usize, usize) -> f32 + Sync) {
    debug_assert_eq!(y.len(), n * rows);
    // Enough chunks for load balance, few enough that scheduling stays cheap.
    let chunk = (rows / (4 * current_num_threads())).clamp(8, 1024);
    if n == 1 {
        for_each_chunk_mut(y, chunk, |c, out| {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f(c * chunk + i, 0);
            }
        });
        return;
    }
    // Column-major scratch [rows, n], then one transpose.
    let mut cols = vec![0.0f32; rows * n];
    for_each_chunk_mut(&mut cols, chunk * n, |c, out| {
        for (i, col) in out.chunks_mut(n).enumerate() {
            let r = c * chunk + i;
            for (t, o) in col.iter_mut().enumerate() {
                *o = f(r, t);
            }
        }
    });
    for r in 0..rows {
        for t in 0..n {
            y[t * rows + r] = cols[r * n + t];
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of scratch whose contents are unspecified (the caller writes
/// before it reads). The buffer is kept per thread and only grows, so that prefill's kernels
/// neither page-fault nor zero a fresh 20 MB buffer per call (3% of a 560-token prefill);
/// a nested call gets a fresh buffer.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Copies a tiled kernel's outputs, `tiled` = `[tiles][n][nr]`, into `y` = `[n][rows]`
/// (dropping the rows that pad the last tile), the tokens spread over the threads.
pub fn untile(tiled: &[f32], y: &mut [f32], n: usize, rows: usize, nr: usize) {
    let tiles = rows.div_ceil(nr);
    assert!(
        tiled.len() >= tiles * n * nr && y.len() == n * rows,
        "untile: shape mismatch"
    );
    let per = n.div_ceil(4 * current_num_threads()).max(1);
    for_each_chunk_mut(y, per * rows, |c, ys| {
        for (i, yt) in ys.chunks_exact_mut(rows).enumerate() {
            let t = c * per + i;
            for tile in 0..tiles {
                let live = nr.min(rows - tile * nr);
                yt[tile * nr..][..live].copy_from_slice(&tiled[(tile * n + t) * nr..][..live]);
            }
        }
    });
}

/// Activations quantized to int8 in blocks of [`Q8_BLOCK`] values per token: the input of
/// the `w8` and `w4` kernels. value ≈ scale[block] · q.
pub struct Q8Acts {
    pub q: Vec<i8>,
    /// One per block: max |x| / 127.
    pub scale: Vec<f32>,
    /// One per block: Σ q (for zero-point and offset corrections).
    pub sum: Vec<i32>,
    pub cols: usize,
}

pub const Q8_BLOCK: usize = 32;

/// One block of 32 values into `q`; returns (scale, Σ q).
#[inline]
fn quantize_block(block: &[f32], q: &mut [i8]) -> (f32, i32) {
    // Lane-wise max and magic-number rounding: both vectorize on baseline x86_64 (f32::round
    // is a libm call there, and f32::max keeps NaN rules that block it).
    let mut lanes = [0.0f32; 8];
    for chunk in block.chunks_exact(8) {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let amax = lanes.iter().fold(0.0f32, |m, &v| if v > m { v } else { m });
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(block) {
        // |v·inv| ≤ 127 < 2^22: adding and removing 1.5·2^23 rounds to the nearest integer.
        const MAGIC: f32 = 12_582_912.0;
        *q = ((v * inv + MAGIC) - MAGIC) as i8;
        sum += *q as i32;
    }
    (amax / 127.0, sum)
}

/// Blocks of `x` into `q`, `scale` and `sum`, [`quantize_block`] each. (An AVX-512 build of
/// this loop measured slower than the baseline SSE2 one: 8.6% of a prefill against 5.9%.)
fn quantize_blocks(x: &[f32], q: &mut [i8], scale: &mut [f32], sum: &mut [i32]) {
    for (((block, q), scale), sum) in x
        .chunks(Q8_BLOCK)
        .zip(q.chunks_mut(Q8_BLOCK))
        .zip(scale.iter_mut())
        .zip(sum.iter_mut())
    {
        (*scale, *sum) = quantize_block(block, q);
    }
}

impl Q8Acts {
    /// Quantize `x` (`[n, cols]`, cols a multiple of 32) block by block, rounding to nearest
    /// (ties to even). Many tokens (prefill) are split over the threads.
    pub fn quantize(x: &[f32], cols: usize) -> Q8Acts {
        debug_assert_eq!(cols % Q8_BLOCK, 0);
        let blocks = x.len() / Q8_BLOCK;
        let mut acts = Q8Acts {
            q: vec![0; x.len()],
            scale: vec![0.0; blocks],
            sum: vec![0; blocks],
            cols,
        };
        let (q, scale, sum) = (&mut acts.q, &mut acts.scale, &mut acts.sum);
        // Below a few thousand values the fork-join would cost more than it saves.
        if x.len() >= 8 * 1024 {
            // Parts of 64 blocks, one work item each.
            const PART: usize = 64;
            let mut parts: Vec<_> = q
                .chunks_mut(PART * Q8_BLOCK)
                .zip(scale.chunks_mut(PART))
                .zip(sum.chunks_mut(PART))
                .map(|((q, scale), sum)| (q, scale, sum))
                .collect();
            for_each_chunk_mut(&mut parts, 1, |p, part| {
                let (q, scale, sum) = &mut part[0];
                quantize_blocks(&x[p * PART * Q8_BLOCK..][..q.len()], q, scale, sum);
            });
        } else {
            quantize_blocks(x, q, scale, sum);
        }
        acts
    }

    pub fn tokens(&self) -> usize {
        self.q.len() / self.cols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_outputs_fills_row_major_by_token() {
        for n in [1, 3] {
            let rows = 100;
            let mut y = vec![0.0; n * rows];
            par_outputs(&mut y, n, rows, |r, t| (r * 1000 + t) as f32);
            for t in 0..n {
                for r in 0..rows {
                    assert_eq!(y[t * rows + r], (r * 1000 + t) as f32);
                }
            }
        }
    }

    /// The parallel path against one block at a time.
    #[test]
    fn the_parallel_path_equals_block_by_block() {
        let x: Vec<f32> = (0..40 * 896)
            .map(|i| ((i * 2654435761usize) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let all = Q8Acts::quantize(&x, 896);
        for (b, block) in x.chunks(32).enumerate() {
            let mut q = [0i8; 32];
            let (scale, sum) = quantize_block(block, &mut q);
            assert_eq!(
                (&all.q[b * 32..][..32], all.scale[b], all.sum[b]),
                (&q[..], scale, sum)
            );
        }
    }

    #[test]
    fn untile_drops_padding_and_orders_by_token() {
        let (n, rows, nr) = (5usize, 13usize, 4usize);
        let tiles = rows.div_ceil(nr);
        let tiled: Vec<f32> = (0..tiles * n * nr).map(|i| i as f32).collect();
        let mut y = vec![-1.0; n * rows];
        untile(&tiled, &mut y, n, rows, nr);
        for t in 0..n {
            for r in 0..rows {
                let (tile, lane) = (r / nr, r % nr);
                assert_eq!(y[t * rows + r], ((tile * n + t) * nr + lane) as f32);
            }
        }
    }

    #[test]
    fn nested_scratch_is_a_separate_buffer() {
        with_scratch(8, |outer| {
            outer.fill(1.0);
            with_scratch(8, |inner| inner.fill(2.0));
            assert!(outer.iter().all(|&v| v == 1.0));
        });
    }

    #[test]
    fn quantization_error_is_half_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| (i as f32 * 0.37).sin() * (1 + i / 32) as f32)
            .collect();
        let a = Q8Acts::quantize(&x, 64);
        for (i, &v) in x.iter().enumerate() {
            let b = i / 32;
            assert!((a.scale[b] * a.q[i] as f32 - v).abs() <= a.scale[b] / 2.0 + 1e-6);
        }
        assert_eq!(a.sum[0], a.q[..32].iter().map(|&q| q as i32).sum::<i32>());
        // The magic-number rounding is round-half-to-even, extremes included.
        let x: Vec<f32> = (0..96)
            .map(|i| ((i * 7919) % 255) as f32 - 127.0 + if i % 3 == 0 { 0.5 } else { 0.25 })
            .collect();
        let a = Q8Acts::quantize(&x, 32);
        for (i, &v) in x.iter().enumerate() {
            let inv = 127.0
                / x[i / 32 * 32..][..32]
                    .iter()
                    .fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(a.q[i], (v * inv).round_ties_even() as i8, "value {v}");
        }
        assert!(a.q.contains(&127) || a.q.contains(&-127));
        let zero = Q8Acts::quantize(&[0.0; 32], 32);
        assert_eq!((zero.scale[0], zero.sum[0]), (0.0, 0));
    }
}
