//! The tiled layout of packed integer matrices, which every SIMD backend reads
//! (`nr` = rows per tile: 16 for AVX-512, 8 for AVX2 and SVE-256, 4 for NEON and SVE-128),
//! and its packer. The kernels that read it are emitted by `emit::tiled`.
//!
//! Rows are grouped in `T = ceil(rows / nr)` tiles; the last tile is padded with rows of zero
//! codes and zero scales (their outputs are computed and never stored). Within a tile,
//! columns go in blocks of 32 (the activation block), and each block is a run of *steps*: one
//! vector of `nr` i32 lanes, lane `r` = 4 consecutive bytes of row `r`, so one load feeds one
//! u8×s8 → i32 dot instruction against 4 activation bytes broadcast to every lane.
//!
//! - `w4g{G}[a]` `q`: `[T][cols/32][4][nr][4]` bytes (16·nr per tile-block). Byte `j` of
//!   lane `r` in vector `k` holds column `32b + 8k + j` in its low nibble and `32b + 8k + 4 + j`
//!   in its high nibble: `and 0x0F` and `srli 4; and 0x0F` give two u8 step vectors (columns
//!   `8k..8k+4` and `8k+4..8k+8`) without any shuffle. Codes are the scheme's u4 `q`.
//! - `w4g{G}[a]` `scale` (and `min`): f16 bits `[T][cols/G][nr]`: one vector load + F16C
//!   conversion per tile and group.
//! - `w2g{G}[a]`, `w3g{G}[a]` `q`: each tile's w4 `q` bytes in the compact form of
//!   `qwenc_runtime::narrow_codes` (`bits/4` of the size). A kernel expands one tile at a time
//!   into a per-thread buffer (symmetric codes offset to mean `code − 8`, as w4's) and runs
//!   its w4 passes on it. `scale` and `min` as w4's.
//! - `w8` `q`: `[T][cols/32][8][nr][4]` bytes, step `k` = columns `32b + 4k..32b + 4k + 4`,
//!   stored as `q + 128` (u8, 1..=255; padding 128 = zero) so VNNI's u8×s8 applies directly
//!   (the kernel subtracts `128·Σx` per block; AVX2 recovers `q` with `xor 0x80`).
//! - `w8` `scale`: f32 `[T][nr]`.
//! - `w8g{G}` `q`: as `w8`'s (its codes are `q + 128` already); `scale` as w4's (f16
//!   `[T][cols/G][nr]`): the w8 steps with w4's per-group float steps.
//! - `f32`, `bf16`: the scalar layout (`w`); the x86 backends run f32 with their FMA kernels
//!   (`x86_float`) and bf16 with the scalar kernels.
//!
//! Why this layout: decode (n = 1) is bound by reading the weights once, so every byte is
//! read by exactly one full-width aligned vector load, in address order, and turned into dot
//! operands with at most an and/shift (w4) — no gathers, shuffles or per-row horizontal sums:
//! the lanes of the accumulator *are* the outputs of `nr` rows. Tiles are independent, so
//! threads split them; within a tile the codes of one block (256 B for AVX-512 w4) are reused
//! for every token of a prefill pass (`mr` tokens per pass, each loaded code vector feeding
//! `mr` dot instructions), and a tile's codes (≤ 40 KiB) stay in L1/L2 while all tokens of a
//! [`token_block`] pass over it.
//!

use crate::quant::{QuantizedData, QuantizedMatrix, Scheme};
use qwenc_runtime::narrow_codes;
use qwenc_runtime::weights::code_at;

/// Columns per activation block (= `qwenc_runtime::kernel_support::Q8_BLOCK`).
pub const BLOCK: usize = 32;

/// The packed parts of a `rows × cols` matrix in `scheme` for tiles of `nr` rows, with their
/// byte sizes, in packing order (same names as the scalar layout).
pub fn part_sizes(
    rows: usize,
    cols: usize,
    scheme: Scheme,
    nr: usize,
) -> Vec<(&'static str, usize)> {
    let padded = rows.div_ceil(nr) * nr;
    match scheme {
        Scheme::F32 => vec![("w", rows * cols * 4)],
        Scheme::Bf16 => vec![("w", rows * cols * 2)],
        Scheme::W8 => {
            assert_eq!(cols % BLOCK, 0, "w8 needs cols a multiple of {BLOCK}");
            vec![("q", padded * cols), ("scale", padded * 4)]
        }
        Scheme::W8Grouped { group } => {
            assert_eq!(
                cols % group,
                0,
                "{scheme} needs cols a multiple of the group"
            );
            vec![("q", padded * cols), ("scale", padded * cols / group * 2)]
        }
        Scheme::W4 { group, asymmetric }
        | Scheme::Narrow {
            group, asymmetric, ..
        } => {
            assert_eq!(
                cols % group,
                0,
                "{scheme} needs cols a multiple of the group"
            );
            let bits = scheme.code_bits().expect("a group-wise scheme") as usize;
            let mut parts = vec![
                ("q", padded * cols * bits / 8),
                ("scale", padded * cols / group * 2),
            ];
            if asymmetric {
                parts.push(("min", padded * cols / group * 2));
            }
            parts
        }
    }
}

/// The bytes of every part of `m` in the tiled layout for `nr`-row tiles (names and sizes as
/// [`part_sizes`]). `f32` and `bf16` keep the scalar layout.
pub fn pack_parts(m: &QuantizedMatrix, nr: usize) -> Vec<(&'static str, Vec<u8>)> {
    let (rows, cols) = (m.rows, m.cols);
    let tiles = rows.div_ceil(nr);
    let blocks = cols / BLOCK;
    let parts = match &m.data {
        QuantizedData::F32(w) => vec![("w", w.iter().flat_map(|v| v.to_le_bytes()).collect())],
        QuantizedData::Bf16(w) => vec![("w", w.iter().flat_map(|v| v.to_le_bytes()).collect())],
        QuantizedData::W8 { q, scales } => {
            let codes = w8_steps(rows, cols, nr, |r, c| (q[r * cols + c] as i32 + 128) as u8);
            let mut scale = vec![0u8; tiles * nr * 4];
            for r in 0..rows {
                scale[r * 4..][..4].copy_from_slice(&scales[r].to_le_bytes());
            }
            vec![("q", codes), ("scale", scale)]
        }
        QuantizedData::Grouped {
            packed,
            scales,
            mins,
        } => {
            let group = m.scheme.group().expect("a group-wise scheme");
            let bits = m.scheme.code_bits().expect("a group-wise scheme") as usize;
            let groups = cols / group;
            let code = |r: usize, c: usize| code_at(packed, bits, r * cols + c);
            let mut codes = if bits == 8 {
                // As w8's steps; a symmetric 8-bit code already is q + 128.
                w8_steps(rows, cols, nr, code)
            } else {
                let mut codes = vec![0u8; tiles * nr * cols / 2];
                for r in 0..rows {
                    let (tile, lane) = (r / nr, r % nr);
                    for b in 0..blocks {
                        let block = (tile * blocks + b) * BLOCK / 2 * nr;
                        for k in 0..4 {
                            for j in 0..4 {
                                let c = b * BLOCK + 8 * k + j;
                                codes[block + k * 4 * nr + lane * 4 + j] =
                                    code(r, c) | code(r, c + 4) << 4;
                            }
                        }
                    }
                }
                codes
            };
            let per_group = |values: &[half::f16]| {
                let mut out = vec![0u8; tiles * groups * nr * 2];
                for r in 0..rows {
                    let (tile, lane) = (r / nr, r % nr);
                    for g in 0..groups {
                        let at = ((tile * groups + g) * nr + lane) * 2;
                        out[at..at + 2].copy_from_slice(&values[r * groups + g].to_le_bytes());
                    }
                }
                out
            };
            // 2- and 3-bit codes: the w4 bytes in their compact form, tile by tile (the
            // unit a kernel expands).
            if bits < 4 {
                codes = narrow_codes::compress(bits, &codes, blocks * BLOCK / 2 * nr);
            }
            let mut parts = vec![("q", codes), ("scale", per_group(scales))];
            if let Some(mins) = mins {
                parts.push(("min", per_group(mins)));
            }
            parts
        }
    };
    debug_assert_eq!(
        parts.iter().map(|(n, b)| (*n, b.len())).collect::<Vec<_>>(),
        part_sizes(rows, cols, m.scheme, nr)
    );
    parts
}

/// w8 code bytes (`code(r, c)` = q + 128) in the tiled layout: `[T][cols/32][8][nr][4]`,
/// padding rows 128 (= 0).
fn w8_steps(rows: usize, cols: usize, nr: usize, code: impl Fn(usize, usize) -> u8) -> Vec<u8> {
    let blocks = cols / BLOCK;
    let mut codes = vec![128u8; rows.div_ceil(nr) * nr * cols];
    for r in 0..rows {
        let (tile, lane) = (r / nr, r % nr);
        for b in 0..blocks {
            let block = (tile * blocks + b) * BLOCK * nr;
            for k in 0..8 {
                for j in 0..4 {
                    codes[block + k * 4 * nr + lane * 4 + j] = code(r, b * BLOCK + 4 * k + j);
                }
            }
        }
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_rtn;

    fn matrix(rows: usize, cols: usize, scheme: &str) -> QuantizedMatrix {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1013) as f32 / 506.0 - 1.0) * (1 + i % 5) as f32)
            .collect();
        quantize_rtn(&w, rows, cols, scheme.parse().unwrap())
    }

    /// The packed bytes hold every code where the module docs say, and zeros as padding.
    #[test]
    fn layout_round_trips() {
        for nr in [8, 16] {
            for scheme in ["w8", "w4g32", "w4g64a"] {
                let m = matrix(13, 128, scheme);
                let parts = pack_parts(&m, nr);
                let sizes: Vec<_> = parts.iter().map(|(n, b)| (*n, b.len())).collect();
                assert_eq!(sizes, part_sizes(13, 128, m.scheme, nr));
                let q = &parts[0].1;
                let blocks = 128 / BLOCK;
                let padded = 13usize.div_ceil(nr) * nr;
                for r in 0..padded {
                    let (tile, lane) = (r / nr, r % nr);
                    for c in 0..128 {
                        let (b, i) = (c / BLOCK, c % BLOCK);
                        let got = match &m.data {
                            QuantizedData::W8 { .. } => {
                                let at = (tile * blocks + b) * BLOCK * nr
                                    + (i / 4) * 4 * nr
                                    + lane * 4
                                    + i % 4;
                                q[at] as i32 - 128
                            }
                            _ => {
                                let (k, j, high) = (i / 8, i % 4, i % 8 >= 4);
                                let byte = q[(tile * blocks + b) * BLOCK / 2 * nr
                                    + k * 4 * nr
                                    + lane * 4
                                    + j];
                                (if high { byte >> 4 } else { byte & 15 }) as i32
                            }
                        };
                        let want = match (&m.data, r < 13) {
                            (_, false) => 0,
                            (QuantizedData::W8 { q, .. }, true) => q[r * 128 + c] as i32,
                            (QuantizedData::Grouped { packed, .. }, true) => {
                                ((packed[(r * 128 + c) / 2] >> (4 * (c % 2))) & 15) as i32
                            }
                            _ => unreachable!(),
                        };
                        assert_eq!(got, want, "{scheme} nr={nr} row {r} col {c}");
                    }
                }
                // Scales (and minimums): [tile][group][nr], padding zero.
                if let QuantizedData::Grouped { scales, .. } = &m.data {
                    let groups = scales.len() / 13;
                    let s = &parts[1].1;
                    for r in 0..padded {
                        for g in 0..groups {
                            let at = ((r / nr * groups + g) * nr + r % nr) * 2;
                            let got = u16::from_le_bytes([s[at], s[at + 1]]);
                            let want = if r < 13 {
                                scales[r * groups + g].to_bits()
                            } else {
                                0
                            };
                            assert_eq!(got, want);
                        }
                    }
                }
            }
        }
    }
}
