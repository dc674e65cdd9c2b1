//! The scalar backend: portable kernels, and the numeric definition every SIMD kernel of the
//! same scheme is tested against.

use proc_macro2::TokenStream;
use quote::quote;

use super::{kernel_name, lit};
use crate::compile::plan::MatmulShape;
use crate::quant::Scheme;

pub const BACKEND: &str = "scalar";

/// `y[n, ROWS] = x[n, COLS] · Wᵀ` for one shape and scheme, all bounds constant.
pub fn matmul(shape: &MatmulShape) -> TokenStream {
    let name = kernel_name(BACKEND, shape);
    let (rows, cols) = (lit(shape.rows), lit(shape.cols));
    let doc = format!(
        " `y[n, {}] = x[n, {}] · Wᵀ`, W in `{}`.",
        shape.rows, shape.cols, shape.scheme
    );
    match shape.scheme {
        Scheme::F32 | Scheme::Bf16 => {
            let load = if shape.scheme == Scheme::F32 {
                quote! { let wm: &[f32] = view(w, at.w, ROWS * COLS); }
            } else {
                quote! { let wm: &[u16] = view(w, at.w, ROWS * COLS); }
            };
            let weight = if shape.scheme == Scheme::F32 {
                quote! { row[c] }
            } else {
                quote! { bf16_to_f32(row[c]) }
            };
            quote! {
                #[doc = #doc]
                pub fn #name(w: &[u8], at: &MatrixAt, x: &[f32], y: &mut [f32]) {
                    const ROWS: usize = #rows;
                    const COLS: usize = #cols;
                    #load
                    let n = x.len() / COLS;
                    par_outputs(y, n, ROWS, |r, t| {
                        let row = &wm[r * COLS..][..COLS];
                        let xt = &x[t * COLS..][..COLS];
                        __note!("Eight partial sums, as the reference's dot product.");
                        let mut acc = [0.0f32; 8];
                        for i in 0..COLS / 8 {
                            for j in 0..8 {
                                let c = i * 8 + j;
                                acc[j] += #weight * xt[c];
                            }
                        }
                        let mut sum = acc.iter().sum::<f32>();
                        for c in COLS / 8 * 8..COLS {
                            sum += #weight * xt[c];
                        }
                        sum
                    });
                }
            }
        }
        Scheme::W8 => quote! {
            #[doc = #doc]
            pub fn #name(w: &[u8], at: &MatrixAt, x: &Q8Acts, y: &mut [f32]) {
                const ROWS: usize = #rows;
                const COLS: usize = #cols;
                const BLOCKS: usize = COLS / Q8_BLOCK;
                let q: &[i8] = view(w, at.q, ROWS * COLS);
                let scale: &[f32] = view(w, at.scale, ROWS);
                par_outputs(y, x.tokens(), ROWS, |r, t| {
                    let row = &q[r * COLS..][..COLS];
                    let xq = &x.q[t * COLS..][..COLS];
                    let mut acc = 0.0f32;
                    for b in 0..BLOCKS {
                        let mut dot = 0i32;
                        for j in 0..Q8_BLOCK {
                            dot += row[b * Q8_BLOCK + j] as i32 * xq[b * Q8_BLOCK + j] as i32;
                        }
                        acc += dot as f32 * x.scale[t * BLOCKS + b];
                    }
                    acc * scale[r]
                });
            }
        },
        Scheme::W4 { .. } | Scheme::W8Grouped { .. } | Scheme::Narrow { .. } => {
            let (group, asymmetric) = (
                shape.scheme.group().expect("grouped"),
                shape.scheme.asymmetric(),
            );
            let bits = shape.scheme.code_bits().expect("a group-wise scheme") as usize;
            let (group, bits_l) = (lit(group), lit(bits));
            let half = lit(1usize << (bits - 1));
            // Symmetric codes stand for q − 2^(bits−1); asymmetric ones for d·q + min.
            let block_term = if asymmetric {
                quote! {
                    let m = f16_to_f32(mins[r * GROUPS + g]);
                    acc += d * (dot as f32 * sa) + m * (sa * x.sum[t * BLOCKS + b] as f32);
                }
            } else {
                quote! {
                    let dot = dot - #half * x.sum[t * BLOCKS + b];
                    acc += d * (dot as f32 * sa);
                }
            };
            // Codes are a little-endian bit stream; 4-bit ones are nibbles, low one first.
            let block_dot = if bits == 4 {
                quote! {
                    for j in 0..Q8_BLOCK / 2 {
                        let byte = row[b * Q8_BLOCK / 2 + j];
                        dot += (byte & 15) as i32 * xq[b * Q8_BLOCK + 2 * j] as i32;
                        dot += (byte >> 4) as i32 * xq[b * Q8_BLOCK + 2 * j + 1] as i32;
                    }
                }
            } else {
                quote! {
                    for c in b * Q8_BLOCK..(b + 1) * Q8_BLOCK {
                        dot += qwenc_runtime::weights::code_at(row, BITS, c) as i32 * xq[c] as i32;
                    }
                }
            };
            let load_mins = if asymmetric {
                quote! { let mins: &[u16] = view(w, at.min, ROWS * GROUPS); }
            } else {
                quote! {}
            };
            quote! {
                #[doc = #doc]
                pub fn #name(w: &[u8], at: &MatrixAt, x: &Q8Acts, y: &mut [f32]) {
                    const ROWS: usize = #rows;
                    const COLS: usize = #cols;
                    const GROUP: usize = #group;
                    const GROUPS: usize = COLS / GROUP;
                    const BLOCKS: usize = COLS / Q8_BLOCK;
                    const BLOCKS_PER_GROUP: usize = GROUP / Q8_BLOCK;
                    /// Bits per code, and code bytes per row.
                    const BITS: usize = #bits_l;
                    const ROW_BYTES: usize = COLS * BITS / 8;
                    let codes: &[u8] = view(w, at.q, ROWS * ROW_BYTES);
                    let scales: &[u16] = view(w, at.scale, ROWS * GROUPS);
                    #load_mins
                    par_outputs(y, x.tokens(), ROWS, |r, t| {
                        let row = &codes[r * ROW_BYTES..][..ROW_BYTES];
                        let xq = &x.q[t * COLS..][..COLS];
                        let mut acc = 0.0f32;
                        for g in 0..GROUPS {
                            let d = f16_to_f32(scales[r * GROUPS + g]);
                            for k in 0..BLOCKS_PER_GROUP {
                                let b = g * BLOCKS_PER_GROUP + k;
                                let mut dot = 0i32;
                                #block_dot
                                let sa = x.scale[t * BLOCKS + b];
                                #block_term
                            }
                        }
                        acc
                    });
                }
            }
        }
    }
}

/// One embedding row, dequantized, into `out` (`[HIDDEN]`).
pub fn embed_row(shape: &MatmulShape) -> TokenStream {
    let cols = lit(shape.cols);
    let body = match shape.scheme {
        Scheme::F32 => quote! {
            out.copy_from_slice(view::<f32>(w, at.w + id * COLS * 4, COLS));
        },
        Scheme::Bf16 => quote! {
            for (o, &b) in out.iter_mut().zip(view::<u16>(w, at.w + id * COLS * 2, COLS)) {
                *o = bf16_to_f32(b);
            }
        },
        Scheme::W8 => quote! {
            let s = view::<f32>(w, at.scale, id + 1)[id];
            for (o, &q) in out.iter_mut().zip(view::<i8>(w, at.q + id * COLS, COLS)) {
                *o = s * q as f32;
            }
        },
        Scheme::W4 { .. } | Scheme::W8Grouped { .. } | Scheme::Narrow { .. } => {
            let (group, asymmetric) = (
                shape.scheme.group().expect("grouped"),
                shape.scheme.asymmetric(),
            );
            let bits = shape.scheme.code_bits().expect("a group-wise scheme") as usize;
            let (group, bits_lit) = (lit(group), lit(bits));
            let half = proc_macro2::Literal::f32_unsuffixed((1u32 << (bits - 1)) as f32);
            let value = if asymmetric {
                quote! { d * code as f32 + f16_to_f32(mins[g]) }
            } else {
                quote! { d * (code as f32 - #half) }
            };
            let load_mins = if asymmetric {
                quote! { let mins: &[u16] = &view::<u16>(w, at.min, (id + 1) * COLS / #group)[id * COLS / #group..]; }
            } else {
                quote! {}
            };
            // Codes are a little-endian bit stream; 4-bit ones are nibbles, low one first.
            let (bits_const, row_bytes, code) = if bits == 4 {
                (
                    quote! {},
                    quote! { COLS / 2 },
                    quote! { if c % 2 == 0 { codes[c / 2] & 15 } else { codes[c / 2] >> 4 } },
                )
            } else {
                (
                    quote! { const BITS: usize = #bits_lit; },
                    quote! { COLS * BITS / 8 },
                    quote! { qwenc_runtime::weights::code_at(codes, BITS, c) },
                )
            };
            quote! {
                #bits_const
                let codes: &[u8] = view(w, at.q + id * #row_bytes, #row_bytes);
                let scales: &[u16] = &view::<u16>(w, at.scale, (id + 1) * COLS / #group)[id * COLS / #group..];
                #load_mins
                for c in 0..COLS {
                    let g = c / #group;
                    let d = f16_to_f32(scales[g]);
                    let code = #code;
                    out[c] = #value;
                }
            }
        }
    };
    quote! {
        /// The embedding row of token `id`, as f32.
        fn embed_row(w: &[u8], at: &MatrixAt, id: usize, out: &mut [f32]) {
            const COLS: usize = #cols;
            #body
        }
    }
}
