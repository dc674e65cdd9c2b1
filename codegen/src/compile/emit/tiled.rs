//! Tiled integer kernels: the kernel body (written once, generic over an ISA's [`TilePrims`],
//! emitted once per scheme as a module generic over the shape) and the plain-Rust *twin* that
//! reads the same layout and defines, operation for operation, what the SIMD kernels compute.
//!
//! The layout is [`crate::compile::layout`]'s (its module docs); this module emits the code that reads it.
//!
//! # Arithmetic (the twin does exactly this, so SIMD and twin agree bit for bit)
//!
//! Per row `r`, token `t`, 32-column block `b` with activation scale `sa` and `s = Σ x`:
//! - integer: `dot = Σ code·x` (i32, exact); symmetric w4 `dot −= 8·s`; w8 codes are `q`.
//! - `w4g{G}`:  `acc = fma(dot as f32, d·sa, acc)`, `d` = the group's scale.
//! - `w4g{G}a`: then also `acc = fma(m, sa·(s as f32), acc)`, `m` = the group's minimum.
//! - `w8`:      `acc = fma(dot as f32, sa, acc)`, and at the end `y = acc·scale[r]`.
//! - `w8g{G}`:  as `w4g{G}`, with w8's dot.
//!
//! Blocks are accumulated in column order from `acc = 0`. This equals the scalar kernel's
//! value up to float rounding order (`d·(dot·sa)` there, `dot·(d·sa)` fused here).
//!
//! # Matrix units
//!
//! A backend may also offer a matrix unit ([`TilePrims::matrix_unit`]: AMX on AVX-512), which
//! takes passes of 16 tokens when a call has them and the CPU allows it at run time. It
//! computes the same exact integer dots (from signed codes, so without the offset
//! correction) and then runs the same float steps (`float_update`): its outputs are
//! bit-identical to the register passes'.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::{kernel_name, lit};
use crate::compile::plan::MatmulShape;
use crate::quant::Scheme;
use qwenc_runtime::narrow_codes;

pub use crate::compile::layout::BLOCK;

/// How many bytes ahead of the block it reads a decode pass hints the weights into L2
/// (`prefetcht1`, `prfm pldl2keep`). Measured on the dev checkpoint (w4g32, AVX-512, 2
/// threads, `qwen bench`): decode 60 tok/s without hints, 73–75 with L1 hints 1–4 KiB
/// ahead, 75–80 with L2 hints (which do not hold L1 fill buffers), 2 and 4 KiB alike.
pub const PREFETCH_AHEAD: usize = 4096;

/// Which integer dot product a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DotKind {
    /// u8 codes in 0..=15 (w4, after unpacking a nibble).
    U4,
    /// w8 codes stored as q + 128, turned into operands by [`TilePrims::w8_signed`] and
    /// [`TilePrims::w8_unsigned`].
    W8,
}

/// The primitives of one ISA. Every vector method returns the tokens of one expression; the
/// kernel body ([`matmul_with`]) is the only place they are combined. An integer vector has
/// `nr()` i32 lanes (or 4·`nr()` bytes), a float vector `nr()` f32 lanes.
pub trait TilePrims: Sync {
    /// Backend name, for [`kernel_name`].
    fn name(&self) -> &'static str;
    /// Rows per tile (= i32 lanes per vector).
    fn nr(&self) -> usize;
    /// Tokens per prefill pass (accumulators kept in registers at once).
    fn mr(&self) -> usize;
    /// Integer accumulators per token and block (1, or 2 to halve the dependency chain).
    fn int_accs(&self) -> usize;
    /// The offset of [`DotKind::W8`] dots: they compute Σ (q + bias)·x.
    fn w8_bias(&self) -> i32;
    /// `#[cfg(...)]` put on every emitted item of this ISA.
    fn cfg(&self) -> TokenStream;
    /// The `use` of the intrinsics, at the top of each kernel.
    fn arch_import(&self) -> TokenStream;
    /// `#[target_feature(enable = ...)]` of the inner functions.
    fn target_feature(&self) -> TokenStream;
    /// A `bool` expression: the CPU has the features.
    fn detect(&self) -> TokenStream;
    /// The features, for messages.
    fn features(&self) -> String;

    fn ivec(&self) -> TokenStream;
    fn fvec(&self) -> TokenStream;
    /// Unaligned load of one integer vector from a `*const u8`.
    fn load_i(&self, ptr: TokenStream) -> TokenStream;
    fn splat_i8(&self, v: i8) -> TokenStream;
    fn splat_i32(&self, e: TokenStream) -> TokenStream;
    /// The 4 activation bytes at `ptr: *const i8` in every i32 lane.
    fn bcast_x4(&self, ptr: TokenStream) -> TokenStream {
        // A byte-array deref: a plain 4-byte load (no `read_unaligned` call and no debug
        // precondition checks in test builds).
        self.splat_i32(quote! { i32::from_le_bytes(*(#ptr as *const [u8; 4])) })
    }
    /// `acc` plus the 4-wide dot products of `u` (and sign operand `s`) with the 4 activation
    /// bytes at `ptr: *const i8` in every lane. An ISA with a [`TilePrims::prelude`] writes it
    /// as a call of one of its helper macros; the expansion is the same expression.
    fn dot_x4(
        &self,
        kind: DotKind,
        acc: TokenStream,
        u: TokenStream,
        s: Option<TokenStream>,
        ptr: TokenStream,
    ) -> TokenStream {
        self.dot(kind, acc, u, s, self.bcast_x4(ptr))
    }
    /// Helper macros put at the top of each kernel family (hand-formatted Rust), which the
    /// primitives may call: one line per dot in the passes instead of nine.
    fn prelude(&self) -> Option<&'static str> {
        None
    }
    /// A hint to fetch the cache line at `ptr` (a `*const u8`, possibly past the end of the
    /// weights: the hint never faults) into L2; `None` when the ISA's kernels do without.
    fn prefetch(&self, _ptr: TokenStream) -> Option<TokenStream> {
        None
    }
    fn and_i(&self, a: TokenStream, b: TokenStream) -> TokenStream;
    /// Shift every 16-bit lane right by 4.
    fn srli16_4(&self, a: TokenStream) -> TokenStream;
    fn sub_i32(&self, a: TokenStream, b: TokenStream) -> TokenStream;
    /// A zero accumulator for one block of `kind` dots (its lane type is the ISA's business).
    fn acc_zero(&self, kind: DotKind) -> TokenStream;
    /// From one loaded w8 code vector `v`: a signed operand, if the ISA's dot needs one.
    fn w8_signed(&self, v: TokenStream) -> Option<TokenStream>;
    /// The unsigned operand of a w8 dot, from `v` and the signed operand (if any).
    fn w8_unsigned(&self, v: TokenStream, s: Option<TokenStream>) -> TokenStream;
    /// `acc` plus the 4-wide dot products of unsigned `u` and signed activations `x`.
    fn dot(
        &self,
        kind: DotKind,
        acc: TokenStream,
        u: TokenStream,
        s: Option<TokenStream>,
        x: TokenStream,
    ) -> TokenStream;
    /// The accumulators of one block summed to i32 lanes.
    fn acc_sum(&self, kind: DotKind, accs: &[TokenStream]) -> TokenStream;
    fn zero_f(&self) -> TokenStream;
    fn splat_f32(&self, e: TokenStream) -> TokenStream;
    /// i32 → f32, round to nearest even (as `as f32`).
    fn cvt_f32(&self, a: TokenStream) -> TokenStream;
    fn mul_f(&self, a: TokenStream, b: TokenStream) -> TokenStream;
    /// `a·b + c`, fused (as `f32::mul_add`).
    fn fma_f(&self, a: TokenStream, b: TokenStream, c: TokenStream) -> TokenStream;
    /// `nr` f32 from `*const f32`.
    fn load_f32(&self, ptr: TokenStream) -> TokenStream;
    /// `nr` f16 bits from `*const u16`, converted exactly to f32.
    fn load_f16(&self, ptr: TokenStream) -> TokenStream;
    fn store_f32(&self, ptr: TokenStream, v: TokenStream) -> TokenStream;
    /// A matrix unit (AMX) that takes [`MatrixUnit::tokens`] tokens of one tile per pass, used
    /// at run time when `enabled` holds and that many tokens remain; `None` for none.
    fn matrix_unit(&self) -> Option<MatrixUnit> {
        None
    }
    /// A pass of `m` tokens written by the ISA itself (`unsafe fn tokens_{m}(codes, PARAMS
    /// xq, xs, xsum, out)` as [`matmul_with`] calls it), or `None` for the generic body. Arm
    /// i8mm uses it for its matrix-matrix passes.
    fn token_pass(&self, scheme: Scheme, m: usize, params: &TokenStream) -> Option<TokenStream> {
        let _ = (scheme, m, params);
        None
    }
}

/// The statements of a matrix unit's pass (AMX), which [`unit_pass`] strings together.
pub trait UnitPrims: Sync {
    /// The statements at the top of a pass (its scratch).
    fn setup(&self, kind: DotKind, asymmetric: bool) -> TokenStream;
    /// Stage the block's codes (at `c`) and activations (at `xb`, token `j` at
    /// `xb + j·COLS`) and start their product in `slot` (0 or 1). The dots it leaves are
    /// Σ q·x with q the signed code (w4 symmetric: code − 8; w8: q), or Σ code·x for
    /// asymmetric w4: the register passes' dots after their offset correction.
    fn start(&self, kind: DotKind, asymmetric: bool, slot: usize) -> TokenStream;
    /// Wait for `slot`'s product and leave token `j`'s i32 dots of the tile's rows at
    /// `ct + 64·j`.
    fn finish(&self, slot: usize) -> TokenStream;
}

/// A matrix unit's pass: its size and the expressions the tile loop wraps around it.
pub struct MatrixUnit {
    /// Tokens per pass (more than the register passes' `mr`).
    pub tokens: usize,
    /// A `bool` expression, evaluated once per kernel call: use the unit.
    pub enabled: TokenStream,
    /// Statements run by each thread before its first pass and after its last.
    pub enter: TokenStream,
    pub leave: TokenStream,
    /// A `&'static str` expression for `info` and `bench`: whether the unit is used here.
    pub status: TokenStream,
    /// The statements of its passes.
    pub prims: &'static dyn UnitPrims,
}

/// What the tile loop (the kernel's outer part) needs of a backend; from a [`TilePrims`] by
/// [`TileLoop::of`], or built directly by a backend that writes whole passes itself (SVE).
pub struct TileLoop {
    pub name: &'static str,
    pub nr: usize,
    pub mr: usize,
    pub cfg: TokenStream,
    pub arch_import: TokenStream,
    pub target_feature: TokenStream,
    pub detect: TokenStream,
    pub features: String,
    pub matrix_unit: Option<MatrixUnit>,
    /// A statement hinting the cache line at `line: *const u8` into L2, if the ISA has one.
    pub prefetch_line: Option<TokenStream>,
    /// Helper macros at the top of the family ([`TilePrims::prelude`]).
    pub prelude: Option<&'static str>,
}

impl TileLoop {
    pub fn of(p: &dyn TilePrims) -> TileLoop {
        TileLoop {
            name: p.name(),
            nr: p.nr(),
            mr: p.mr(),
            cfg: p.cfg(),
            arch_import: p.arch_import(),
            target_feature: p.target_feature(),
            detect: p.detect(),
            features: p.features(),
            matrix_unit: p.matrix_unit(),
            prefetch_line: p.prefetch(quote! { line }),
            prelude: p.prelude(),
        }
    }
}

/// Tokens per sweep of the SIMD kernel over its tiles for `cols` inputs: a multiple of the
/// pass size whose activations fit in 256 KiB (longer prompts sweep the weights again).
pub fn token_block(p: &dyn TilePrims, cols: usize) -> usize {
    token_block_for(p.mr(), cols)
}

/// [`token_block`] for a pass size of `mr` tokens.
pub fn token_block_for(mr: usize, cols: usize) -> usize {
    (256 * 1024 / cols / mr * mr).max(mr)
}

/// Code bytes of one 32-column block of one tile, as the passes read them (2- and 3-bit
/// codes expanded to w4's).
fn block_bytes(scheme: Scheme, nr: usize) -> usize {
    scheme_info(scheme).kind.block_bytes(nr)
}

/// Code bytes of one 32-column block of one tile, as stored.
fn stored_block_bytes(scheme: Scheme, nr: usize) -> usize {
    let info = scheme_info(scheme);
    match info.narrow_bits {
        Some(bits) => info.kind.block_bytes(nr) * bits / 4,
        None => info.kind.block_bytes(nr),
    }
}

/// The scheme the passes of a `scheme` kernel multiply: a 2- or 3-bit scheme's codes are
/// expanded to w4 codes of the same meaning (see `qwenc_runtime::narrow_codes`), so its
/// passes are those of w4 with the same group and asymmetry.
pub fn pass_scheme(scheme: Scheme) -> Scheme {
    match scheme {
        Scheme::Narrow {
            group, asymmetric, ..
        } => Scheme::W4 { group, asymmetric },
        other => other,
    }
}

/// What a kernel adds to each expanded `bits`-bit code, as a literal
/// (`qwenc_runtime::narrow_codes::expand_offset`).
pub fn expand_offset_lit(bits: usize, asymmetric: bool) -> proc_macro2::Literal {
    proc_macro2::Literal::u8_unsuffixed(narrow_codes::expand_offset(bits, asymmetric))
}

/// `shape` with [`pass_scheme`].
pub fn pass_shape(shape: &MatmulShape) -> MatmulShape {
    MatmulShape {
        scheme: pass_scheme(shape.scheme),
        ..*shape
    }
}

impl DotKind {
    /// Code bytes of one 32-column block of an `nr`-row tile.
    fn block_bytes(self, nr: usize) -> usize {
        match self {
            DotKind::W8 => BLOCK * nr,
            DotKind::U4 => BLOCK / 2 * nr,
        }
    }
}

/// What the body needs to know about the scheme.
struct SchemeInfo {
    kind: DotKind,
    /// `None` for w8 (a per-row f32 scale instead of per-group f16 scales).
    group: Option<usize>,
    asymmetric: bool,
    /// Bits of 2- and 3-bit codes, which the kernel expands to w4 codes per tile.
    narrow_bits: Option<usize>,
}

fn scheme_info(scheme: Scheme) -> SchemeInfo {
    match scheme {
        Scheme::W8 => SchemeInfo {
            kind: DotKind::W8,
            group: None,
            asymmetric: false,
            narrow_bits: None,
        },
        Scheme::W8Grouped { group } => SchemeInfo {
            kind: DotKind::W8,
            group: Some(group),
            asymmetric: false,
            narrow_bits: None,
        },
        Scheme::W4 { group, asymmetric } => SchemeInfo {
            kind: DotKind::U4,
            group: Some(group),
            asymmetric,
            narrow_bits: None,
        },
        Scheme::Narrow {
            bits,
            group,
            asymmetric,
        } => SchemeInfo {
            kind: DotKind::U4,
            group: Some(group),
            asymmetric,
            narrow_bits: Some(bits as usize),
        },
        other => {
            panic!("the tiled kernels are for integer schemes; {other} uses the scalar kernel")
        }
    }
}

/// The family module of `scheme` on `p`: the generic kernel body, instantiated per shape.
pub fn family_with(p: &dyn TilePrims, scheme: Scheme) -> TokenStream {
    let info = scheme_info(scheme);
    let unit = p.matrix_unit();
    let passes = pass_scheme(scheme);
    family(&TileLoop::of(p), scheme, &|m, params| match &unit {
        Some(unit) if m == unit.tokens => unit_pass(p, &info, unit, params),
        _ => p
            .token_pass(passes, m, params)
            .unwrap_or_else(|| token_pass(p, &info, m, params)),
    })
}

/// The module name of the kernels of `scheme` on backend `name`: `{backend}_{scheme}`.
pub fn family_ident(name: &str, scheme: Scheme) -> Ident {
    format_ident!("{}_{}", name.replace('-', "_"), scheme.to_string())
}

/// The entry point of one shape: [`kernel_name`] calling its family's generic `matmul`.
pub fn entry(name: &str, cfg: &TokenStream, shape: &MatmulShape) -> TokenStream {
    let kernel = kernel_name(name, shape);
    let family = family_ident(name, shape.scheme);
    let (rows, cols) = (lit(shape.rows), lit(shape.cols));
    let doc = format!(
        " `y[n, {}] = x[n, {}] · Wᵀ`, W in `{}` ({name}).",
        shape.rows, shape.cols, shape.scheme
    );
    quote! {
        #cfg
        #[doc = #doc]
        pub fn #kernel(w: &[u8], at: &MatrixAt, x: &Q8Acts, y: &mut [f32]) {
            #family::matmul::<#rows, #cols>(w, at, x, y)
        }
    }
}

/// Every tiled kernel of `shapes` on one backend: each scheme's family once (in first-use
/// order), then an entry point per shape.
pub fn kernel_set(
    name: &str,
    cfg: &TokenStream,
    shapes: &[MatmulShape],
    family: &dyn Fn(Scheme) -> TokenStream,
) -> TokenStream {
    let mut seen: Vec<Scheme> = Vec::new();
    let mut out = TokenStream::new();
    for s in shapes {
        if !seen.contains(&s.scheme) {
            seen.push(s.scheme);
            out.extend(family(s.scheme));
        }
    }
    for s in shapes {
        out.extend(entry(name, cfg, s));
    }
    out
}

/// The kernels of one scheme on one backend, as a module generic over the shape: checks,
/// weight views, threads over tiles, token blocks, and calls of the passes
/// `tokens_1..=tokens_{mr}` (and `tokens_{u}` of a matrix unit of `u` tokens), which
/// `pass(m, params)` emits. The passes depend on the column count only; a call of
/// `matmul::<ROWS, COLS>` instantiates them for its `COLS`.
pub fn family(
    t: &TileLoop,
    scheme: Scheme,
    pass: &dyn Fn(usize, &TokenStream) -> TokenStream,
) -> TokenStream {
    let info = scheme_info(scheme);
    let module = family_ident(t.name, scheme);
    let (nr, mr) = (t.nr, t.mr);
    let (nr_l, mr_l) = (lit(nr), lit(mr));
    let block_bytes_l = lit(block_bytes(scheme, nr));
    let stored_block_bytes_l = lit(stored_block_bytes(scheme, nr));
    // 2- and 3-bit codes: each tile is expanded into this thread's buffer, then read as w4.
    // The expansion is the only reader of the stored codes, so while the passes run on one
    // tile nothing would fetch the next one: hint its lines into L2 first (measured on the
    // 240 MB build, decode excl. prefill went from 75-77 to 84-88 tok/s).
    let (expand_setup, expand_tile) = match info.narrow_bits {
        Some(bits) => {
            let offset = expand_offset_lit(bits, info.asymmetric);
            let bits = lit(bits);
            let prefetch_next = t.prefetch_line.as_ref().map(|hint| {
                quote! {
                    __note!("Hint the next tile's stored codes into L2: the expansion is their only reader.");
                    if n == 1 {
                        let next = codes.wrapping_add(Self::STORED_TILE_BYTES);
                        for i in (0..Self::STORED_TILE_BYTES).step_by(64) {
                            let line = next.wrapping_add(i);
                            #hint;
                        }
                    }
                }
            });
            (
                quote! { let expanded = qwenc_runtime::narrow_codes::expansion_buffer(Self::TILE_BYTES); },
                quote! {
                    __note!("Expand the tile's narrow codes to w4 codes of the same meaning.");
                    qwenc_runtime::narrow_codes::expand::<#bits>(
                        std::slice::from_raw_parts(codes, Self::STORED_TILE_BYTES),
                        std::slice::from_raw_parts_mut(expanded, Self::TILE_BYTES),
                        #offset,
                    );
                    #prefetch_next
                    let codes = expanded as *const u8;
                },
            )
        }
        None => (quote! {}, quote! {}),
    };
    let (cfg, arch, tf, detect) = (&t.cfg, &t.arch_import, &t.target_feature, &t.detect);
    let doc = format!(
        " `{scheme}` matrices on {}: tiles of {nr} rows, passes of 1..={mr} tokens{} ({}).",
        t.name,
        match &t.matrix_unit {
            Some(u) => format!(" and of {} on the matrix unit", u.tokens),
            None => String::new(),
        },
        t.features
    );
    let missing = format!(
        "the {} kernels need the CPU features {} (this CPU lacks one)",
        t.name, t.features
    );

    // Scheme-dependent constants, weight views, and the weight pointers passed down.
    let (consts, shape_consts, views, params, args, advance, view_ptrs) = match info.group {
        Some(group) => {
            let group = lit(group);
            let consts = quote! {
                /// Inputs per scale (and minimum), and activation blocks per group.
                const GROUP: usize = #group;
                const BLOCKS_PER_GROUP: usize = GROUP / Q8_BLOCK;
            };
            let shape_consts = quote! { const GROUPS: usize = COLS / GROUP; };
            let (mut views, mut params, mut args, mut advance, mut ptrs) = (
                quote! { let scales: &[u16] = view(w, at.scale, Self::TILES * Self::GROUPS * NR); },
                quote! { scales: *const u16, },
                quote! { scales, },
                quote! { let scales = scales.add(tile * Self::GROUPS * NR); },
                quote! { scales.as_ptr(), },
            );
            if info.asymmetric {
                views.extend(
                    quote! { let mins: &[u16] = view(w, at.min, Self::TILES * Self::GROUPS * NR); },
                );
                params.extend(quote! { mins: *const u16, });
                args.extend(quote! { mins, });
                advance.extend(quote! { let mins = mins.add(tile * Self::GROUPS * NR); });
                ptrs.extend(quote! { mins.as_ptr(), });
            }
            (consts, shape_consts, views, params, args, advance, ptrs)
        }
        None => (
            quote! {},
            quote! {},
            quote! { let scales: &[f32] = view(w, at.scale, Self::TILES * NR); },
            quote! { scales: *const f32, },
            quote! { scales, },
            quote! { let scales = scales.add(tile * NR); },
            quote! { scales.as_ptr(), },
        ),
    };

    let unit_tokens = t.matrix_unit.as_ref().map(|u| u.tokens);
    let passes: Vec<TokenStream> = (1..=mr)
        .chain(unit_tokens)
        .map(|m| pass(m, &params))
        .collect();
    let pass = |m: usize| format_ident!("tokens_{m}");
    let full = pass(mr);
    let bind_passes: Vec<TokenStream> = (1..=mr)
        .chain(unit_tokens)
        .map(|m| {
            let f = pass(m);
            quote! { let #f = Passes::<COLS>::#f; }
        })
        .collect();
    let call_args = quote! { codes, #args xq.add(t * COLS), xs.add(t * Self::BLOCKS), xsum.add(t * Self::BLOCKS), o.add(t * NR) };
    let rest_arms: Vec<TokenStream> = (1..mr)
        .map(|m| {
            let (f, m) = (pass(m), lit(m));
            quote! { #m => #f(#call_args), }
        })
        .collect();

    // With a matrix unit: whether this call uses it, and its passes before the register ones.
    let (unit_const, unit_flag, unit_param, unit_arg, unit_enter, unit_leave, unit_passes) =
        match &t.matrix_unit {
            Some(u) => {
                let (tokens, enabled, enter, leave) =
                    (lit(u.tokens), &u.enabled, &u.enter, &u.leave);
                let f = pass(u.tokens);
                (
                    quote! {
                        /// Tokens per matrix-unit pass.
                        const UNIT: usize = #tokens;
                    },
                    quote! {
                        __note!("The matrix unit takes passes of UNIT tokens when a call has that many.");
                        let unit = n >= UNIT && #enabled;
                    },
                    quote! { , unit: bool },
                    quote! { , unit },
                    quote! { if unit { #enter; } },
                    quote! { if unit { #leave; } },
                    quote! {
                        while unit && t + UNIT <= t1 {
                            #f(#call_args);
                            t += UNIT;
                        }
                    },
                )
            }
            None => Default::default(),
        };
    let prefetch_ahead = lit(PREFETCH_AHEAD);
    let prelude = t.prelude.map(|text| quote! { __verbatim!(#text); });
    let token_block = quote! {
        {
            let fit = 256 * 1024 / COLS / MR * MR;
            if fit > MR { fit } else { MR }
        }
    };
    quote! {
        #cfg
        #[doc = #doc]
        pub mod #module {
            use super::*;
            #arch
            /// Rows per tile (the lanes of one vector) and tokens per register pass.
            const NR: usize = #nr_l;
            const MR: usize = #mr_l;
            /// Code bytes of one tile's 32-column block, as the passes read them and as stored.
            const BLOCK_BYTES: usize = #block_bytes_l;
            const STORED_BLOCK_BYTES: usize = #stored_block_bytes_l;
            /// How far ahead of the block being read decode hints the next lines into L2.
            const PREFETCH_AHEAD: usize = #prefetch_ahead;
            #consts
            #unit_const
            #prelude

            /// `y[n, ROWS] = x[n, COLS] · Wᵀ` for W packed in this family's tiled layout.
            pub fn matmul<const ROWS: usize, const COLS: usize>(w: &[u8], at: &MatrixAt, x: &Q8Acts, y: &mut [f32]) {
                Matrix::<ROWS, COLS>::matmul(w, at, x, y)
            }

            /// The constants of one `ROWS × COLS` matrix.
            struct Matrix<const ROWS: usize, const COLS: usize>;

            impl<const ROWS: usize, const COLS: usize> Matrix<ROWS, COLS> {
                /// Tiles (the last one padded), activation blocks, and groups.
                const TILES: usize = ROWS.div_ceil(NR);
                const BLOCKS: usize = COLS / Q8_BLOCK;
                #shape_consts
                /// Code bytes of one tile, as the passes read them and as stored.
                const TILE_BYTES: usize = Self::BLOCKS * BLOCK_BYTES;
                const STORED_TILE_BYTES: usize = Self::BLOCKS * STORED_BLOCK_BYTES;
                /// Tokens per sweep over the tiles: at most 256 KiB of activations.
                const TOKEN_BLOCK: usize = #token_block;

                fn matmul(w: &[u8], at: &MatrixAt, x: &Q8Acts, y: &mut [f32]) {
                    #[allow(unused_parens)]
                    let supported = #detect;
                    assert!(supported, #missing);
                    let n = x.tokens();
                    assert!(
                        x.cols == COLS && x.q.len() == n * COLS && x.scale.len() == n * Self::BLOCKS && x.sum.len() == n * Self::BLOCKS && y.len() == n * ROWS,
                        "shape mismatch"
                    );
                    if n == 0 {
                        return;
                    }
                    #unit_flag
                    let codes: &[u8] = view(w, at.q, Self::TILES * Self::STORED_TILE_BYTES);
                    #views
                    __note!("Outputs per tile as [n][NR]: y itself for one token and whole tiles, else this");
                    __note!("thread's kept scratch, copied out after (dropping the padded rows).");
                    let run = |out: &mut [f32]| {
                        __note!("16 chunks per thread, claimed in turn: whoever finishes first waits for at");
                        __note!("most one small chunk (4 per thread left a worker spinning 4.7% of decode).");
                        let chunk = (Self::TILES / (16 * qwenc_runtime::threads::current_num_threads())).max(1);
                        qwenc_runtime::threads::for_each_chunk_mut(out, chunk * n * NR, |c, out| {
                            __note!("SAFETY: the CPU has the features (asserted above), and `tiles` reads only");
                            __note!("inside the views and `x`, whose lengths were checked against the shape.");
                            unsafe { Self::tiles(codes.as_ptr(), #view_ptrs x, n, c * chunk, out #unit_arg) }
                        });
                    };
                    if n == 1 && ROWS % NR == 0 {
                        run(y);
                    } else {
                        qwenc_runtime::kernel_support::with_scratch(Self::TILES * n * NR, |scratch| {
                            run(scratch);
                            qwenc_runtime::kernel_support::untile(scratch, y, n, ROWS, NR);
                        });
                    }
                }

                /// Tiles `first..` into `out` (`[tiles][n][NR]`): for each block of `TOKEN_BLOCK`
                /// tokens (their activations stay in L2), every tile, `MR` tokens per pass.
                #tf
                unsafe fn tiles(codes: *const u8, #params x: &Q8Acts, n: usize, first: usize, out: &mut [f32] #unit_param) {
                    __note!("SAFETY: the caller checked the CPU features and the lengths of the weight");
                    __note!("views and of `x`; every pointer below stays inside them.");
                    unsafe {
                        __note!("The passes for this column count.");
                        #(#bind_passes)*
                        #unit_enter
                        #expand_setup
                        let (xq, xs, xsum) = (x.q.as_ptr(), x.scale.as_ptr(), x.sum.as_ptr());
                        let mut t0 = 0;
                        while t0 < n {
                            let t1 = (t0 + Self::TOKEN_BLOCK).min(n);
                            for (i, slab) in out.chunks_exact_mut(n * NR).enumerate() {
                                let tile = first + i;
                                let codes = codes.add(tile * Self::STORED_TILE_BYTES);
                                #expand_tile
                                #advance
                                let o = slab.as_mut_ptr();
                                let mut t = t0;
                                #unit_passes
                                while t + MR <= t1 {
                                    #full(#call_args);
                                    t += MR;
                                }
                                match t1 - t {
                                    0 => {}
                                    #(#rest_arms)*
                                    _ => unreachable!(),
                                }
                            }
                            t0 = t1;
                        }
                        #unit_leave
                    }
                }
            }

            /// The passes over one tile, for `COLS` inputs: `tokens_m` multiplies the tile by
            /// `m` tokens (at `xq`/`xs`/`xsum`, `COLS`/`BLOCKS` apart) and stores token `j`'s
            /// `NR` outputs at `out + j·NR`. The caller guarantees the CPU features and that
            /// every pointer covers one tile (codes, scales) and `m` tokens (activations).
            struct Passes<const COLS: usize>;

            impl<const COLS: usize> Passes<COLS> {
                const BLOCKS: usize = COLS / Q8_BLOCK;
                #shape_consts

                #(#passes)*
            }
        }
    }
}

/// `tokens_{m}`: one tile × `m` tokens, all blocks; token `j`'s outputs to `out + j·NR`.
fn token_pass(p: &dyn TilePrims, info: &SchemeInfo, m: usize, params: &TokenStream) -> TokenStream {
    let nr = p.nr();
    let tf = p.target_feature();
    let (ivec, fvec) = (p.ivec(), p.fvec());
    let kind = info.kind;
    let accs = p.int_accs();
    let f: Vec<Ident> = (0..m).map(|j| format_ident!("f{j}")).collect();
    let acc = |j: usize, a: usize| format_ident!("a{j}_{a}");
    let id = |i: Ident| quote!(#i);

    // The integer part of one block: accumulators, steps, and the corrected dot per token.
    let mut block = TokenStream::new();
    for j in 0..m {
        for a in 0..accs {
            let (name, zero) = (acc(j, a), p.acc_zero(kind));
            block.extend(quote! { let mut #name: #ivec = #zero; });
        }
    }
    // (code operand, sign operand, activation byte offset in the block) per step, in order.
    let mut steps: Vec<(TokenStream, Option<TokenStream>, usize)> = Vec::new();
    match kind {
        DotKind::U4 => {
            let mask = quote!(nibble);
            for k in 0..4 {
                let (v, lo, hi) = (
                    format_ident!("v{k}"),
                    format_ident!("lo{k}"),
                    format_ident!("hi{k}"),
                );
                let kl = lit(k);
                let load = p.load_i(quote! { c.add(#kl * 4 * NR) });
                let lo_e = p.and_i(id(v.clone()), mask.clone());
                let hi_e = p.and_i(p.srli16_4(id(v.clone())), mask.clone());
                block.extend(quote! {
                    let #v: #ivec = #load;
                    let #lo: #ivec = #lo_e;
                    let #hi: #ivec = #hi_e;
                });
                steps.push((id(lo), None, 8 * k));
                steps.push((id(hi), None, 8 * k + 4));
            }
        }
        DotKind::W8 => {
            for k in 0..8 {
                let (v, u, s) = (
                    format_ident!("v{k}"),
                    format_ident!("u{k}"),
                    format_ident!("s{k}"),
                );
                let kl = lit(k);
                let load = p.load_i(quote! { c.add(#kl * 4 * NR) });
                block.extend(quote! { let #v: #ivec = #load; });
                let s = p.w8_signed(id(v.clone())).map(|s_e| {
                    block.extend(quote! { let #s: #ivec = #s_e; });
                    id(s)
                });
                let u_e = p.w8_unsigned(id(v), s.clone());
                block.extend(quote! { let #u: #ivec = #u_e; });
                steps.push((id(u), s, 4 * k));
            }
        }
    }
    // Token-inner: every loaded step vector serves all m tokens before the next load.
    for (step, (u, s, off)) in steps.iter().enumerate() {
        for j in 0..m {
            let a = acc(j, step % accs);
            let (jl, offl) = (lit(j), lit(*off));
            let x = quote! { xb.add(#jl * COLS + #offl) };
            let dot = p.dot_x4(kind, id(a.clone()), u.clone(), s.clone(), x);
            block.extend(quote! { #a = #dot; });
        }
    }
    let correction: i32 = match kind {
        DotKind::U4 if !info.asymmetric => 8,
        DotKind::U4 => 0,
        DotKind::W8 => p.w8_bias(),
    };
    for (j, fj) in f.iter().enumerate() {
        let sum = p.acc_sum(kind, &(0..accs).map(|a| id(acc(j, a))).collect::<Vec<_>>());
        block.extend(float_update(p, info, j, fj, sum, correction));
    }

    // Decode (one token) streams every weight byte once: hint the lines PREFETCH_AHEAD bytes
    // on, so that more misses are in flight than the hardware prefetcher keeps by itself.
    let prefetch: Vec<TokenStream> = if m == 1 {
        (0..kind.block_bytes(nr) / 64)
            .filter_map(|l| {
                let off = lit(l * 64);
                p.prefetch(quote! { c.wrapping_add(PREFETCH_AHEAD + #off) })
            })
            .collect()
    } else {
        Vec::new()
    };
    let block_setup = quote! {
        let c = codes.add(b * BLOCK_BYTES);
        #(#prefetch;)*
        let xb = xq.add(b * Q8_BLOCK);
    };
    let loops = match info.group {
        Some(_) => {
            let d = p.load_f16(quote! { scales.add(g * NR) });
            let mn = info.asymmetric.then(|| {
                let e = p.load_f16(quote! { mins.add(g * NR) });
                quote! { let mn: #fvec = #e; }
            });
            quote! {
                for g in 0..Self::GROUPS {
                    let d: #fvec = #d;
                    #mn
                    for kb in 0..BLOCKS_PER_GROUP {
                        let b = g * BLOCKS_PER_GROUP + kb;
                        #block_setup
                        #block
                    }
                }
            }
        }
        None => quote! {
            for b in 0..Self::BLOCKS {
                #block_setup
                #block
            }
        },
    };
    let nibble = (kind == DotKind::U4).then(|| {
        let e = p.splat_i8(0x0f);
        quote! { let nibble: #ivec = #e; }
    });
    let zero_f = p.zero_f();
    let (row_scale, stores) = pass_end(p, info, &f);
    // w8 with an unbiased dot (AVX2) needs no Σx.
    let unused = (correction == 0 && !info.asymmetric).then(|| quote! { let _ = xsum; });
    let doc = format!(
        " One tile ({nr} rows) × {m} token(s) at `xq`/`xs`/`xsum`, outputs at `out + j·NR`."
    );
    let body = quote! {
            #unused
            #nibble
            #(let mut #f: #fvec = #zero_f;)*
            #loops
            #row_scale
            #(#stores;)*
    };
    pass_item(m, &doc, &tf, params, body)
}

/// The pass `tokens_{m}`: the signature the tile loop calls, its docs and target features,
/// and `body`, the statements of its `unsafe` block, under the SAFETY note they share.
pub fn pass_item(
    m: usize,
    doc: &str,
    tf: &TokenStream,
    params: &TokenStream,
    body: TokenStream,
) -> TokenStream {
    let fname = format_ident!("tokens_{m}");
    quote! {
        #[doc = #doc]
        #tf
        #[inline(never)]
        unsafe fn #fname(codes: *const u8, #params xq: *const i8, xs: *const f32, xsum: *const i32, out: *mut f32) {
            __note!("SAFETY: `tiles` calls this with the CPU features checked and pointers that");
            __note!("cover one tile of codes and scales and this pass's tokens (see `Passes`).");
            unsafe {
                #body
            }
        }
    }
}

/// Token `j`'s float update of accumulator `fj` with `dot`, its i32 dots of one block (an
/// expression; `correction`·Σx is subtracted first unless 0): the one definition of the float
/// steps that the twin mirrors, for register and matrix-unit passes alike. Expects `b` (the
/// block), `xs`, `xsum` and, with groups, `d` (and `mn`) in scope.
fn float_update(
    p: &dyn TilePrims,
    info: &SchemeInfo,
    j: usize,
    fj: &Ident,
    dot_e: TokenStream,
    correction: i32,
) -> TokenStream {
    let ivec = p.ivec();
    let jl = lit(j);
    let dot = format_ident!("dot{j}");
    let mut out = quote! {
        let #dot: #ivec = #dot_e;
        let sa = *xs.add(#jl * Self::BLOCKS + b);
    };
    if correction != 0 {
        let correction = proc_macro2::Literal::i32_unsuffixed(correction);
        let bias = p.splat_i32(quote! { #correction * *xsum.add(#jl * Self::BLOCKS + b) });
        let sub = p.sub_i32(quote!(#dot), bias);
        out.extend(quote! { let #dot: #ivec = #sub; });
    }
    let dotf = p.cvt_f32(quote!(#dot));
    let update = match info.group {
        Some(_) => {
            let ds = p.mul_f(quote!(d), p.splat_f32(quote!(sa)));
            let mut u = p.fma_f(dotf, ds, quote!(#fj));
            if info.asymmetric {
                let ms = p.splat_f32(quote! { sa * *xsum.add(#jl * Self::BLOCKS + b) as f32 });
                u = p.fma_f(quote!(mn), ms, u);
            }
            u
        }
        None => p.fma_f(dotf, p.splat_f32(quote!(sa)), quote!(#fj)),
    };
    out.extend(quote! { #fj = #update; });
    out
}

/// The end of a pass over accumulators `f`: (the w8 row scale's load, the stores of token
/// `j`'s outputs to `out + j·NR`).
fn pass_end(
    p: &dyn TilePrims,
    info: &SchemeInfo,
    f: &[Ident],
) -> (Option<TokenStream>, Vec<TokenStream>) {
    let fvec = p.fvec();
    let stores = f
        .iter()
        .enumerate()
        .map(|(j, fj)| {
            let v = match info.group {
                Some(_) => quote!(#fj),
                None => p.mul_f(quote!(#fj), quote!(row_scale)),
            };
            let jl = lit(j);
            p.store_f32(quote! { out.add(#jl * NR) }, v)
        })
        .collect();
    let row_scale = info.group.is_none().then(|| {
        let e = p.load_f32(quote!(scales));
        quote! { let row_scale: #fvec = #e; }
    });
    (row_scale, stores)
}

/// `tokens_{u}` of a matrix unit of `u` tokens: one tile × `u` tokens, all blocks. The unit's
/// products run one block ahead of the float steps, in two alternating slots, so that the
/// unit's latency hides behind the previous block's float work (starting the next product
/// before storing this one measured 474 tok/s prefill, storing first 445). The unit's dots come without
/// offset (w4 symmetric and w8 codes are staged signed), so no Σx correction follows.
fn unit_pass(
    p: &dyn TilePrims,
    info: &SchemeInfo,
    unit: &MatrixUnit,
    params: &TokenStream,
) -> TokenStream {
    let m = unit.tokens;
    let tf = p.target_feature();
    let fvec = p.fvec();
    let f: Vec<Ident> = (0..m).map(|j| format_ident!("f{j}")).collect();
    let setup = unit.prims.setup(info.kind, info.asymmetric);
    let start = |slot: usize| unit.prims.start(info.kind, info.asymmetric, slot);
    let (start0, start1) = (start(0), start(1));
    let (finish0, finish1) = (unit.prims.finish(0), unit.prims.finish(1));
    let updates: Vec<TokenStream> = f
        .iter()
        .enumerate()
        .map(|(j, fj)| {
            let row = lit(64 * j);
            let dot = p.load_i(quote! { ct.0.as_ptr().add(#row) });
            float_update(p, info, j, fj, dot, 0)
        })
        .collect();
    let scales = info.group.map(|_| {
        let d = p.load_f16(quote! { scales.add(b / BLOCKS_PER_GROUP * NR) });
        let mn = info.asymmetric.then(|| {
            let e = p.load_f16(quote! { mins.add(b / BLOCKS_PER_GROUP * NR) });
            quote! { let mn: #fvec = #e; }
        });
        quote! {
            let d: #fvec = #d;
            #mn
        }
    });
    let (row_scale, stores) = pass_end(p, info, &f);
    let zero_f = p.zero_f();
    let doc = format!(" One tile × {m} tokens on the matrix unit, outputs at `out + j·NR`.");
    let body = quote! {
            let _ = xsum;
            #setup
            #(let mut #f: #fvec = #zero_f;)*
            {
                let (c, xb) = (codes, xq);
                #start0
            }
            for b in 0..Self::BLOCKS {
                let next = b + 1;
                if next < Self::BLOCKS {
                    let (c, xb) = (codes.add(next * BLOCK_BYTES), xq.add(next * Q8_BLOCK));
                    if next % 2 == 0 { #start0 } else { #start1 }
                }
                if b % 2 == 0 { #finish0 } else { #finish1 }
                #scales
                #(#updates)*
            }
            #row_scale
            #(#stores;)*
    };
    pass_item(m, &doc, &tf, params, body)
}

/// The plain-Rust twin of the tiled kernel for `nr`-row tiles: the same layout, the same
/// integer and float operations in the same order (see the module docs), one output at a
/// time. Named `twin{nr}_matmul_...` by [`kernel_name`].
pub fn matmul_twin(nr: usize, shape: &MatmulShape) -> TokenStream {
    let info = scheme_info(shape.scheme);
    let backend = format!("twin{nr}");
    let name = kernel_name(&backend, shape);
    let tiles = shape.rows.div_ceil(nr);
    let (rows_l, cols_l, nr_l, tiles_l) = (lit(shape.rows), lit(shape.cols), lit(nr), lit(tiles));
    let block_bytes_l = lit(block_bytes(shape.scheme, nr));
    // 2- and 3-bit codes: the whole matrix expanded to w4 codes first, tile by tile as the
    // SIMD kernels expand it.
    let codes = match info.narrow_bits {
        Some(bits) => {
            let offset = expand_offset_lit(bits, info.asymmetric);
            let bits_l = lit(bits);
            let stored = lit(stored_block_bytes(shape.scheme, nr));
            quote! {
                let stored: &[u8] = view(w, at.q, TILES * BLOCKS * #stored);
                let mut expanded = vec![0u8; TILES * BLOCKS * BLOCK_BYTES];
                for (s, d) in stored
                    .chunks_exact(BLOCKS * #stored)
                    .zip(expanded.chunks_exact_mut(BLOCKS * BLOCK_BYTES))
                {
                    qwenc_runtime::narrow_codes::expand::<#bits_l>(s, d, #offset);
                }
                let codes: &[u8] = &expanded;
            }
        }
        None => quote! { let codes: &[u8] = view(w, at.q, TILES * BLOCKS * BLOCK_BYTES); },
    };
    let doc = format!(
        " `y[n, {}] = x[n, {}] · Wᵀ`, W in `{}`, tiled layout of {nr} rows: the plain-Rust twin of the SIMD kernels.",
        shape.rows, shape.cols, shape.scheme
    );
    // The exact integer dot of row `lane` of `tile` with token `t`'s block `b`.
    let block_dot = match info.kind {
        DotKind::W8 => quote! {
            __note!("8 steps of NR lanes × 4 bytes; step k = columns 4k..4k+4, stored q + 128.");
            let block = &codes[(tile * BLOCKS + b) * BLOCK_BYTES..][..BLOCK_BYTES];
            let mut dot = 0i32;
            for k in 0..8 {
                for j in 0..4 {
                    let q = block[k * 4 * NR + lane * 4 + j] as i32 - 128;
                    dot += q * xq[b * Q8_BLOCK + 4 * k + j] as i32;
                }
            }
        },
        DotKind::U4 => quote! {
            __note!("4 vectors of NR lanes × 4 bytes; byte j of vector k holds column 8k + j (low");
            __note!("nibble) and 8k + 4 + j (high nibble).");
            let block = &codes[(tile * BLOCKS + b) * BLOCK_BYTES..][..BLOCK_BYTES];
            let mut dot = 0i32;
            for k in 0..4 {
                for j in 0..4 {
                    let byte = block[k * 4 * NR + lane * 4 + j];
                    dot += (byte & 15) as i32 * xq[b * Q8_BLOCK + 8 * k + j] as i32;
                    dot += (byte >> 4) as i32 * xq[b * Q8_BLOCK + 8 * k + 4 + j] as i32;
                }
            }
        },
    };
    let body = match info.group {
        None => quote! {
            let scales: &[f32] = view(w, at.scale, TILES * NR);
            par_outputs(y, x.tokens(), ROWS, |r, t| {
                let (tile, lane) = (r / NR, r % NR);
                let xq = &x.q[t * COLS..][..COLS];
                let mut acc = 0.0f32;
                for b in 0..BLOCKS {
                    #block_dot
                    acc = (dot as f32).mul_add(x.scale[t * BLOCKS + b], acc);
                }
                acc * scales[tile * NR + lane]
            });
        },
        Some(group) => {
            let group = lit(group);
            let load_mins = info
                .asymmetric
                .then(|| quote! { let mins: &[u16] = view(w, at.min, TILES * GROUPS * NR); });
            let load_m = info
                .asymmetric
                .then(|| quote! { let m = f16_to_f32(mins[(tile * GROUPS + g) * NR + lane]); });
            let block_end = if info.asymmetric {
                quote! {
                    acc = (dot as f32).mul_add(d * sa, acc);
                    acc = m.mul_add(sa * x.sum[t * BLOCKS + b] as f32, acc);
                }
            } else {
                // Symmetric w4 codes stand for code − 8 (w8's are signed already).
                let correction = (info.kind == DotKind::U4).then(|| {
                    quote! { let dot = dot - 8 * x.sum[t * BLOCKS + b]; }
                });
                quote! {
                    #correction
                    acc = (dot as f32).mul_add(d * sa, acc);
                }
            };
            quote! {
                const GROUP: usize = #group;
                const GROUPS: usize = COLS / GROUP;
                const BLOCKS_PER_GROUP: usize = GROUP / Q8_BLOCK;
                let scales: &[u16] = view(w, at.scale, TILES * GROUPS * NR);
                #load_mins
                par_outputs(y, x.tokens(), ROWS, |r, t| {
                    let (tile, lane) = (r / NR, r % NR);
                    let xq = &x.q[t * COLS..][..COLS];
                    let mut acc = 0.0f32;
                    for g in 0..GROUPS {
                        let d = f16_to_f32(scales[(tile * GROUPS + g) * NR + lane]);
                        #load_m
                        for kb in 0..BLOCKS_PER_GROUP {
                            let b = g * BLOCKS_PER_GROUP + kb;
                            #block_dot
                            let sa = x.scale[t * BLOCKS + b];
                            #block_end
                        }
                    }
                    acc
                });
            }
        }
    };
    quote! {
        #[doc = #doc]
        pub fn #name(w: &[u8], at: &MatrixAt, x: &Q8Acts, y: &mut [f32]) {
            const ROWS: usize = #rows_l;
            const COLS: usize = #cols_l;
            const NR: usize = #nr_l;
            const TILES: usize = #tiles_l;
            const BLOCKS: usize = COLS / Q8_BLOCK;
            const BLOCK_BYTES: usize = #block_bytes_l;
            #codes
            #body
        }
    }
}
