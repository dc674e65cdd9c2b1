//! f32 matmuls on x86_64 (AVX2 + FMA, AVX-512): the `f32` scheme's weights in the scalar
//! layout (row-major `[rows][cols]`), multiplied with FMA in register blocks.
//!
//! The f32 build is the accuracy reference of the quality tables, so what matters is prefill
//! and scoring throughput (eval runs hundreds of tokens per pass). Each pass computes a block
//! of [`RB`] rows × up to [`TB`] tokens: per `LANES` columns it loads `RB` weight vectors and
//! `TB` activation vectors and issues `RB·TB` FMAs into as many accumulators (16 of the 32
//! AVX-512 registers, 16 of AVX2's 16 with the loads spilled to memory operands), then reduces
//! each accumulator across lanes once at the end. Row blocks are independent, so threads
//! split them; tokens go in sweeps whose activations stay in L2 (as the tiled kernels do).
//!
//! Sum order differs from the scalar kernel's eight partial sums (lanes of `LANES` columns,
//! fused multiply-adds), so outputs agree within float rounding, not bit for bit: the kernel
//! tests bound the difference by the magnitude of the products.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::x86::X86Isa;
use super::{kernel_name, lit};
use crate::compile::plan::MatmulShape;
use crate::quant::Scheme;

/// Rows per register block.
pub const RB: usize = 4;
/// Tokens per register block.
pub const TB: usize = 4;

/// f32 lanes per vector of `isa`.
pub fn lanes(isa: X86Isa) -> usize {
    match isa {
        X86Isa::Avx2 => 8,
        X86Isa::Avx512Vnni => 16,
    }
}

/// Whether this backend has an f32 kernel for `shape` (else the scalar kernel runs it).
pub fn supports(isa: X86Isa, shape: &MatmulShape) -> bool {
    shape.scheme == Scheme::F32 && shape.cols.is_multiple_of(lanes(isa))
}

/// `pub fn NAME(w: &[u8], at: &MatrixAt, x: &[f32], y: &mut [f32])` for an f32 `shape`.
pub fn matmul_f32(isa: X86Isa, shape: &MatmulShape) -> TokenStream {
    assert!(supports(isa, shape), "no x86 f32 kernel for {shape:?}");
    let name = kernel_name(isa.name(), shape);
    let (rows, cols, lanes_l) = (lit(shape.rows), lit(shape.cols), lit(lanes(isa)));
    let (rb, tb) = (lit(RB), lit(TB));
    let tf = isa.target_feature_attr();
    let detect = isa.detect();
    let missing = format!(
        "{name} needs the CPU features {} (this CPU lacks one)",
        isa.target_features().join(", ")
    );
    let doc = format!(
        " `y[n, {}] = x[n, {}] · Wᵀ`, W in f32, {} FMA blocks of {RB} rows × {TB} tokens.",
        shape.rows,
        shape.cols,
        isa.name()
    );
    let (load, fma, zero, reduce) = match isa {
        X86Isa::Avx512Vnni => (
            quote! { _mm512_loadu_ps },
            quote! { _mm512_fmadd_ps },
            quote! { _mm512_setzero_ps() },
            quote! { _mm512_reduce_add_ps(v) },
        ),
        X86Isa::Avx2 => (
            quote! { _mm256_loadu_ps },
            quote! { _mm256_fmadd_ps },
            quote! { _mm256_setzero_ps() },
            quote! {{
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }},
        ),
    };
    let vec_ty = match isa {
        X86Isa::Avx512Vnni => quote! { __m512 },
        X86Isa::Avx2 => quote! { __m256 },
    };
    // acc[r][t] for the block's rows and tokens, unrolled so every one is a register.
    let acc = |r: usize, t: usize| format_ident!("a{r}_{t}");
    let mut decls = TokenStream::new();
    let mut body = TokenStream::new();
    let mut stores = TokenStream::new();
    // The remainder passes below are written for 4 tokens per block.
    const _: () = assert!(TB == 4);
    for r in 0..RB {
        let rl = lit(r);
        let wv = format_ident!("w{r}");
        body.extend(quote! { let #wv = #load(wr[#rl].add(k)); });
    }
    for t in 0..TB {
        let tl = lit(t);
        let xv = format_ident!("x{t}");
        let fmas = (0..RB).map(|r| {
            let (a, wv) = (acc(r, t), format_ident!("w{r}"));
            quote! { #a = #fma(#wv, #xv, #a); }
        });
        body.extend(quote! {
            if #tl < MT {
                let #xv = #load(xp.add(#tl * COLS + k));
                #(#fmas)*
            }
        });
    }
    for r in 0..RB {
        for t in 0..TB {
            let a = acc(r, t);
            decls.extend(quote! { let mut #a: #vec_ty = #zero; });
            let (rl, tl) = (lit(r), lit(t));
            stores.extend(quote! {
                if #tl < MT {
                    let v = #a;
                    *out.add(#tl * RB + #rl) = #reduce;
                }
            });
        }
    }
    quote! {
        #[cfg(target_arch = "x86_64")]
        #[doc = #doc]
        pub fn #name(w: &[u8], at: &MatrixAt, x: &[f32], y: &mut [f32]) {
            use std::arch::x86_64::*;
            const ROWS: usize = #rows;
            const COLS: usize = #cols;
            const LANES: usize = #lanes_l;
            /// Rows and tokens per register block; row blocks (the last one padded by
            /// repeating the last row, whose extra outputs are dropped).
            const RB: usize = #rb;
            const TB: usize = #tb;
            const BLOCKS: usize = ROWS.div_ceil(RB);
            /// Tokens per sweep over the row blocks: at most 256 KiB of activations.
            const TOKEN_SWEEP: usize = {
                let t = 256 * 1024 / (COLS * 4) / TB * TB;
                if t < TB { TB } else { t }
            };
            const _: () = assert!(COLS % LANES == 0);
            assert!(#detect, #missing);
            let n = x.len() / COLS;
            assert!(x.len() == n * COLS && y.len() == n * ROWS, "shape mismatch");
            if n == 0 {
                return;
            }
            let wm: &[f32] = view(w, at.w, ROWS * COLS);

            /// One block: rows `r0..r0 + RB` (clamped to the last row) × `MT` tokens at `xp`,
            /// outputs to `out[t·RB + r]`.
            #tf
            unsafe fn block<const MT: usize>(wm: &[f32], r0: usize, xp: *const f32, out: *mut f32) {
                unsafe {
                    __note!("Padded rows read the last row again (in bounds; outputs dropped).");
                    let wr: [*const f32; RB] =
                        std::array::from_fn(|r| wm.as_ptr().add((r0 + r).min(ROWS - 1) * COLS));
                    #decls
                    let mut k = 0;
                    while k < COLS {
                        #body
                        k += LANES;
                    }
                    #stores
                }
            }

            __note!("Outputs as [block][n][RB], then copied to y = [n][ROWS].");
            qwenc_runtime::kernel_support::with_scratch(BLOCKS * n * RB, |scratch| {
                let chunk = (BLOCKS / (8 * qwenc_runtime::threads::current_num_threads())).max(1);
                qwenc_runtime::threads::for_each_chunk_mut(scratch, chunk * n * RB, |c, out| {
                    let mut t0 = 0;
                    while t0 < n {
                        let t1 = (t0 + TOKEN_SWEEP).min(n);
                        for (i, slab) in out.chunks_exact_mut(n * RB).enumerate() {
                            let r0 = (c * chunk + i) * RB;
                            let mut t = t0;
                            __note!("SAFETY: the CPU has the features (asserted above); `block` reads");
                            __note!("rows below ROWS and tokens below n, and writes inside `slab`.");
                            unsafe {
                                while t + TB <= t1 {
                                    block::<TB>(wm, r0, x.as_ptr().add(t * COLS), slab.as_mut_ptr().add(t * RB));
                                    t += TB;
                                }
                                match t1 - t {
                                    0 => {}
                                    1 => block::<1>(wm, r0, x.as_ptr().add(t * COLS), slab.as_mut_ptr().add(t * RB)),
                                    2 => block::<2>(wm, r0, x.as_ptr().add(t * COLS), slab.as_mut_ptr().add(t * RB)),
                                    3 => block::<3>(wm, r0, x.as_ptr().add(t * COLS), slab.as_mut_ptr().add(t * RB)),
                                    _ => unreachable!(),
                                }
                            }
                        }
                        t0 = t1;
                    }
                });
                qwenc_runtime::kernel_support::untile(scratch, y, n, ROWS, RB);
            });
        }
    }
}
