//! Embedding lookup: one row of the embedding matrix, dequantized to f32. The matrix is in the
//! scalar layout, or, when the model ties the embedding to the lm_head and a SIMD backend packs
//! the lm_head in tiles, in the tiled layout (see `tiled.rs`); the gather reads either.

use proc_macro2::TokenStream;
use quote::quote;

use super::lit;
use crate::compile::plan::MatmulShape;
use crate::quant::Scheme;

/// `fn embed_row(w, at, id, out)` for the tiled layout with `nr` rows per tile.
pub fn tiled(shape: &MatmulShape, nr: usize) -> TokenStream {
    let (cols, nrl) = (lit(shape.cols), lit(nr));
    let body = match shape.scheme {
        Scheme::F32 | Scheme::Bf16 => unreachable!("float schemes keep the scalar layout"),
        Scheme::W8 => quote! {
            __note!("q: [T][COLS/32][8][NR][4] bytes of q + 128; scale: f32 [T][NR].");
            let q: &[u8] = view(w, at.q + tile * (COLS / 32) * 8 * NR * 4, (COLS / 32) * 8 * NR * 4);
            let s = view::<f32>(w, at.scale + tile * NR * 4, NR)[lane];
            for c in 0..COLS {
                let (b, k, j) = (c / 32, (c % 32) / 4, c % 4);
                let code = q[((b * 8 + k) * NR + lane) * 4 + j] as i32 - 128;
                out[c] = s * code as f32;
            }
        },
        Scheme::W8Grouped { group } => {
            let group = lit(group);
            quote! {
                __note!("q: [T][COLS/32][8][NR][4] bytes of q + 128; scale: f16 [T][COLS/G][NR].");
                let q: &[u8] = view(w, at.q + tile * (COLS / 32) * 8 * NR * 4, (COLS / 32) * 8 * NR * 4);
                let scales: &[u16] = view(w, at.scale + tile * (COLS / #group) * NR * 2, (COLS / #group) * NR);
                for c in 0..COLS {
                    let (b, k, j) = (c / 32, (c % 32) / 4, c % 4);
                    let code = q[((b * 8 + k) * NR + lane) * 4 + j] as i32 - 128;
                    out[c] = f16_to_f32(scales[(c / #group) * NR + lane]) * code as f32;
                }
            }
        }
        Scheme::W4 { group, asymmetric }
        | Scheme::Narrow {
            group, asymmetric, ..
        } => {
            let bits = shape.scheme.code_bits().expect("a group-wise scheme") as usize;
            let group = lit(group);
            // 2- and 3-bit codes: the byte their expansion to w4 codes would hold.
            let (q_bytes, byte) = if bits == 4 {
                (quote! { (COLS / 32) * 4 * NR * 4 }, quote! { q[i] })
            } else {
                let offset = super::tiled::expand_offset_lit(bits, asymmetric);
                let bits = lit(bits);
                (
                    quote! { (COLS / 32) * 4 * NR * #bits },
                    quote! { qwenc_runtime::narrow_codes::expanded_byte(#bits, q, i, #offset) },
                )
            };
            let value = if asymmetric {
                quote! { d * code as f32 + f16_to_f32(mins[g * NR + lane]) }
            } else {
                quote! { d * (code as f32 - 8.0) }
            };
            let load_mins = if asymmetric {
                quote! { let mins: &[u16] = view(w, at.min + tile * (COLS / #group) * NR * 2, (COLS / #group) * NR); }
            } else {
                quote! {}
            };
            quote! {
                __note!("q: [T][COLS/32][4][NR][4] bytes; byte j of lane r in vector k holds column");
                __note!("32b + 8k + j (low nibble) and 32b + 8k + 4 + j (high nibble).");
                __note!("scale (and min): f16 [T][COLS/G][NR].");
                let q: &[u8] = view(w, at.q + tile * #q_bytes, #q_bytes);
                let scales: &[u16] = view(w, at.scale + tile * (COLS / #group) * NR * 2, (COLS / #group) * NR);
                #load_mins
                for c in 0..COLS {
                    let (b, within) = (c / 32, c % 32);
                    let (k, high, j) = (within / 8, (within % 8) / 4, within % 4);
                    let i = ((b * 4 + k) * NR + lane) * 4 + j;
                    let byte = #byte;
                    let code = if high == 1 { byte >> 4 } else { byte & 15 };
                    let g = c / #group;
                    let d = f16_to_f32(scales[g * NR + lane]);
                    out[c] = #value;
                }
            }
        }
    };
    quote! {
        /// The embedding row of token `id`, as f32, gathered from the tiled lm_head layout.
        fn embed_row(w: &[u8], at: &MatrixAt, id: usize, out: &mut [f32]) {
            const COLS: usize = #cols;
            const NR: usize = #nrl;
            let (tile, lane) = (id / NR, id % NR);
            #body
        }
    }
}
