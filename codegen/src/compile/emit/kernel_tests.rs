//! A Rust module of kernels for the kernel tests (`tests/kernels_x86.rs`,
//! `tests/kernels_aarch64.rs`): for each integer scheme and a few shapes, the scalar kernel,
//! the tiled twins (`twin4`, `twin8`, `twin16`), the x86 SIMD kernels (`avx2`, `avx512`) and
//! the aarch64 ones (`neon`, `i8mm`, `sve128`, `sve256`, `sve512`), each module with a uniform lookup
//! `kernel(rows, cols, scheme) -> Option<Kernel>`, plus a `MatrixAt` like the generated one so the
//! file compiles on its own inside any module of a crate that depends on `qwenc_runtime`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::aarch64::ArmIsa;
use super::x86::X86Isa;
use super::{kernel_name, lit, scalar, tiled, x86_float};
use crate::compile::plan::MatmulShape;
use crate::quant::Scheme;

/// The integer schemes under test.
pub const TEST_SCHEMES: [&str; 9] = [
    "w8", "w8g32", "w8g128", "w4g32", "w4g64", "w4g128a", "w4g32a", "w3g32", "w2g64a",
]; // 2- and 3-bit: one symmetric, one asymmetric

/// Shapes under test: tiny, rows not a multiple of any tile (13), and two real Qwen2.5-0.5B
/// shapes (qkv: 1152×896, down: 896×4864). A scheme is skipped where its group does not
/// divide the columns.
pub const TEST_SHAPES: [(usize, usize); 4] = [(8, 64), (13, 96), (1152, 896), (896, 4864)];

/// Shapes of the f32 kernels under test (x86 FMA kernels against the scalar kernel).
pub const FLOAT_SHAPES: [(usize, usize); 4] = [(8, 64), (13, 96), (1152, 896), (896, 4864)];

/// Every (shape, scheme) the module has kernels for.
pub fn test_shapes() -> Vec<MatmulShape> {
    let mut shapes = Vec::new();
    for (rows, cols) in TEST_SHAPES {
        for scheme in TEST_SCHEMES {
            let scheme: Scheme = scheme.parse().expect("valid scheme name");
            if scheme.check_cols(cols).is_ok() {
                shapes.push(MatmulShape { rows, cols, scheme });
            }
        }
    }
    shapes
}

/// The module's source, formatted.
pub fn kernel_test_module() -> String {
    let shapes = test_shapes();
    let module = |name: &str, backend: &str, cfg: TokenStream, kernels: Vec<TokenStream>| {
        let name = format_ident!("{name}");
        let arms = shapes.iter().map(|s| {
            let (r, c, scheme) = (lit(s.rows), lit(s.cols), s.scheme.to_string());
            let k = kernel_name(backend, s);
            quote! { (#r, #c, #scheme) => Some(#k as Kernel), }
        });
        quote! {
            #cfg
            #[allow(dead_code, unused_imports, clippy::all)]
            pub mod #name {
                use super::*;
                #(#kernels)*
                /// This module's kernel for `rows × cols` in `scheme`, if emitted.
                pub fn kernel(rows: usize, cols: usize, scheme: &str) -> Option<Kernel> {
                    match (rows, cols, scheme) {
                        #(#arms)*
                        _ => None,
                    }
                }
            }
        }
    };
    let x86_cfg = quote! { #[cfg(target_arch = "x86_64")] };
    let mut modules = vec![module(
        "scalar",
        scalar::BACKEND,
        quote! {},
        shapes.iter().map(scalar::matmul).collect(),
    )];
    for isa in X86Isa::ALL {
        let nr = isa.nr();
        let twin: Vec<_> = shapes.iter().map(|s| tiled::matmul_twin(nr, s)).collect();
        modules.push(module(
            &format!("twin{nr}"),
            &format!("twin{nr}"),
            quote! {},
            twin,
        ));
        let simd = tiled::kernel_set(isa.name(), &x86_cfg, &shapes, &|s| isa.family(s));
        modules.push(module(
            isa.short_name(),
            isa.name(),
            x86_cfg.clone(),
            vec![simd],
        ));
    }
    // aarch64: the twin4 layout (NEON, i8mm, SVE at 128 bits) is the only new one.
    let arm_cfg = quote! { #[cfg(target_arch = "aarch64")] };
    modules.push(module(
        "twin4",
        "twin4",
        quote! {},
        shapes.iter().map(|s| tiled::matmul_twin(4, s)).collect(),
    ));
    for isa in ArmIsa::ALL {
        let simd = tiled::kernel_set(isa.name(), &arm_cfg, &shapes, &|s| isa.family(s));
        modules.push(module(
            isa.short_name(),
            isa.name(),
            arm_cfg.clone(),
            vec![simd],
        ));
    }
    let arm_list = ArmIsa::ALL.iter().map(|isa| {
        let (short, nr) = (isa.short_name(), lit(isa.nr()));
        let twin = format!("twin{}", isa.nr());
        let features: Vec<&str> = isa.target_features().to_vec();
        let sve = lit(isa.sve_bytes().unwrap_or(0));
        quote! { ArmKernels { module: #short, nr: #nr, twin: #twin, features: &[#(#features),*], sve_bytes: #sve } }
    });
    let arm_arms = ArmIsa::ALL.iter().map(|isa| {
        let short = isa.short_name();
        let m = format_ident!("{short}");
        quote! {
            #[cfg(target_arch = "aarch64")]
            #short => #m::kernel(rows, cols, scheme),
        }
    });
    let shape_list = shapes.iter().map(|s| {
        let (r, c, scheme) = (lit(s.rows), lit(s.cols), s.scheme.to_string());
        quote! { (#r, #c, #scheme) }
    });
    let (avx2_nr, avx512_nr) = (lit(X86Isa::Avx2.nr()), lit(X86Isa::Avx512Vnni.nr()));
    let (avx2_twin, avx512_twin) = (format!("twin{avx2_nr}"), format!("twin{avx512_nr}"));
    // f32: the scalar kernels and the x86 FMA kernels, with their own lookup.
    let float_shapes: Vec<MatmulShape> = FLOAT_SHAPES
        .iter()
        .map(|&(rows, cols)| MatmulShape {
            rows,
            cols,
            scheme: Scheme::F32,
        })
        .collect();
    let float_module = |name: &str, backend: &str, cfg: TokenStream, kernels: Vec<TokenStream>| {
        let name = format_ident!("{name}");
        let arms = float_shapes.iter().map(|s| {
            let (r, c) = (lit(s.rows), lit(s.cols));
            let k = kernel_name(backend, s);
            quote! { (#r, #c) => Some(#k as FloatKernel), }
        });
        quote! {
            #cfg
            #[allow(dead_code, unused_imports, clippy::all)]
            pub mod #name {
                use super::*;
                #(#kernels)*
                /// This module's f32 kernel for `rows × cols`, if emitted.
                pub fn kernel(rows: usize, cols: usize) -> Option<FloatKernel> {
                    match (rows, cols) {
                        #(#arms)*
                        _ => None,
                    }
                }
            }
        }
    };
    modules.push(float_module(
        "scalar_f32",
        scalar::BACKEND,
        quote! {},
        float_shapes.iter().map(scalar::matmul).collect(),
    ));
    for isa in X86Isa::ALL {
        let kernels = float_shapes
            .iter()
            .map(|s| x86_float::matmul_f32(isa, s))
            .collect();
        let name = format!("{}_f32", isa.short_name());
        modules.push(float_module(&name, isa.name(), x86_cfg.clone(), kernels));
    }
    let float_shape_list = FLOAT_SHAPES.iter().map(|&(r, c)| {
        let (r, c) = (lit(r), lit(c));
        quote! { (#r, #c) }
    });
    let file = quote! {
        #[allow(unused_imports)]
        use qwenc_runtime::kernel_support::{par_outputs, Q8Acts, Q8_BLOCK};
        #[allow(unused_imports)]
        use qwenc_runtime::weights::{bf16_to_f32, f16_to_f32, view};

        /// Where one matrix's packed parts start (as in the generated `model.rs`).
        #[derive(Clone, Copy, Debug, Default)]
        pub struct MatrixAt {
            pub w: usize,
            pub q: usize,
            pub scale: usize,
            pub min: usize,
        }

        /// The signature of every integer kernel.
        pub type Kernel = fn(&[u8], &MatrixAt, &Q8Acts, &mut [f32]);
        /// The signature of every f32 kernel.
        pub type FloatKernel = fn(&[u8], &MatrixAt, &[f32], &mut [f32]);
        /// `(rows, cols)` of every f32 kernel.
        pub const FLOAT_SHAPES: &[(usize, usize)] = &[#(#float_shape_list),*];

        /// The f32 kernel of `module` (`scalar`, `avx2`, `avx512`).
        pub fn float_kernel(module: &str, rows: usize, cols: usize) -> Option<FloatKernel> {
            match module {
                "scalar" => scalar_f32::kernel(rows, cols),
                #[cfg(target_arch = "x86_64")]
                "avx2" => avx2_f32::kernel(rows, cols),
                #[cfg(target_arch = "x86_64")]
                "avx512" => avx512_f32::kernel(rows, cols),
                _ => None,
            }
        }

        /// `(rows, cols, scheme)` of every kernel in each module.
        pub const SHAPES: &[(usize, usize, &str)] = &[#(#shape_list),*];

        /// Rows per tile of the AVX2 and AVX-512 layouts, and the twin module of each.
        pub const AVX2_NR: usize = #avx2_nr;
        pub const AVX512_NR: usize = #avx512_nr;
        pub const AVX2_TWIN: &str = #avx2_twin;
        pub const AVX512_TWIN: &str = #avx512_twin;

        /// An aarch64 kernel module: rows per tile, its twin, what the CPU needs (features, and
        /// the SVE vector length in bytes, 0 if not SVE).
        #[derive(Clone, Copy, Debug)]
        pub struct ArmKernels {
            pub module: &'static str,
            pub nr: usize,
            pub twin: &'static str,
            pub features: &'static [&'static str],
            pub sve_bytes: usize,
        }

        pub const ARM: &[ArmKernels] = &[#(#arm_list),*];

        /// The kernel of `module` (`scalar`, `twin4`, `twin8`, `twin16`, `avx2`, `avx512`,
        /// `neon`, `i8mm`, `sve128`, `sve256`, `sve512`).
        pub fn kernel(module: &str, rows: usize, cols: usize, scheme: &str) -> Option<Kernel> {
            match module {
                "scalar" => scalar::kernel(rows, cols, scheme),
                "twin4" => twin4::kernel(rows, cols, scheme),
                #(#arm_arms)*
                "twin8" => twin8::kernel(rows, cols, scheme),
                "twin16" => twin16::kernel(rows, cols, scheme),
                #[cfg(target_arch = "x86_64")]
                "avx2" => avx2::kernel(rows, cols, scheme),
                #[cfg(target_arch = "x86_64")]
                "avx512" => avx512::kernel(rows, cols, scheme),
                _ => None,
            }
        }

        #(#modules)*
    };
    format!(
        "// @generated by qwenc-codegen (emit::kernel_tests). Do not edit.\n\n{}",
        super::format::format_file(file)
    )
}
