//! Tiled integer kernels: the packed layout the SIMD backends read, its packer, the kernel
//! body (written once, generic over an ISA's [`TilePrims`]) and the plain-Rust *twin* that
//! reads the same layout and defines, operation for operation, what the SIMD kernels compute.
//!
//! # Layout (`nr` = rows per tile: 16 for AVX-512, 8 for AVX2)
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

use super::x86::X86Isa;
use super::{kernel_name, lit};
use crate::plan::MatmulShape;
use crate::quant::{QuantizedData, QuantizedMatrix, Scheme};
use qwenc_runtime::narrow_codes;
use qwenc_runtime::weights::code_at;

/// Columns per activation block (= `qwenc_runtime::kernel_support::Q8_BLOCK`).
pub const BLOCK: usize = 32;

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
    /// Matrix unit: the statements at the top of a pass (its scratch).
    fn matrix_setup(&self, kind: DotKind, asymmetric: bool) -> TokenStream {
        let _ = (kind, asymmetric);
        unreachable!("an ISA without a matrix unit")
    }
    /// Matrix unit: stage the block's codes (at `c`) and activations (at `xb`, token `j` at
    /// `xb + j·COLS`) and start their product in `slot` (0 or 1). The dots it leaves are
    /// Σ q·x with q the signed code (w4 symmetric: code − 8; w8: q), or Σ code·x for
    /// asymmetric w4: the register passes' dots after their offset correction.
    fn matrix_start(&self, kind: DotKind, asymmetric: bool, slot: usize) -> TokenStream {
        let _ = (kind, asymmetric, slot);
        unreachable!("an ISA without a matrix unit")
    }
    /// Matrix unit: wait for `slot`'s product and leave token `j`'s i32 dots of the tile's rows
    /// at `ct + 64·j`.
    fn matrix_finish(&self, slot: usize) -> TokenStream {
        let _ = slot;
        unreachable!("an ISA without a matrix unit")
    }
    /// A pass of `m` tokens written by the ISA itself (`unsafe fn tokens_{m}(codes, PARAMS
    /// xq, xs, xsum, out)` as [`matmul_with`] calls it), or `None` for the generic body. Arm
    /// i8mm uses it for its matrix-matrix passes.
    fn token_pass(
        &self,
        shape: &MatmulShape,
        m: usize,
        params: &TokenStream,
    ) -> Option<TokenStream> {
        let _ = (shape, m, params);
        None
    }
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
        }
    }
}

/// Rows per tile of `isa`.
pub fn tile_rows(isa: X86Isa) -> usize {
    isa.prims().nr()
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

/// The SIMD kernel for `shape` on `isa`: `pub fn NAME(w: &[u8], at: &MatrixAt, x: &Q8Acts,
/// y: &mut [f32])`, NAME from [`kernel_name`].
pub fn matmul(isa: X86Isa, shape: &MatmulShape) -> TokenStream {
    matmul_with(isa.prims(), shape)
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

/// The kernel body, once, over the primitives `p`.
pub fn matmul_with(p: &dyn TilePrims, shape: &MatmulShape) -> TokenStream {
    let info = scheme_info(shape.scheme);
    let unit = p.matrix_unit();
    tile_loop(&TileLoop::of(p), shape, &|m, params| match &unit {
        Some(unit) if m == unit.tokens => unit_pass(p, &info, unit, params),
        _ => p
            .token_pass(&pass_shape(shape), m, params)
            .unwrap_or_else(|| token_pass(p, &info, m, params)),
    })
}

/// The kernel's outer part for `shape`: checks, weight views, threads over tiles, token
/// blocks, and calls of the passes `tokens_1..=tokens_{mr}` (and `tokens_{u}` of a matrix unit
/// of `u` tokens), which `pass(m, params)` emits.
pub fn tile_loop(
    t: &TileLoop,
    shape: &MatmulShape,
    pass: &dyn Fn(usize, &TokenStream) -> TokenStream,
) -> TokenStream {
    let info = scheme_info(shape.scheme);
    let name = kernel_name(t.name, shape);
    let (nr, mr) = (t.nr, t.mr);
    let tiles = shape.rows.div_ceil(nr);
    let (rows_l, cols_l, nr_l, mr_l, tiles_l) = (
        lit(shape.rows),
        lit(shape.cols),
        lit(nr),
        lit(mr),
        lit(tiles),
    );
    let block_bytes_l = lit(block_bytes(shape.scheme, nr));
    let stored_block_bytes_l = lit(stored_block_bytes(shape.scheme, nr));
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
                    if n == 1 {
                        let next = codes.wrapping_add(STORED_TILE_BYTES);
                        for i in (0..STORED_TILE_BYTES).step_by(64) {
                            let line = next.wrapping_add(i);
                            #hint;
                        }
                    }
                }
            });
            (
                quote! { let expanded = qwenc_runtime::narrow_codes::expansion_buffer(TILE_BYTES); },
                quote! {
                    qwenc_runtime::narrow_codes::expand::<#bits>(
                        std::slice::from_raw_parts(codes, STORED_TILE_BYTES),
                        std::slice::from_raw_parts_mut(expanded, TILE_BYTES),
                        #offset,
                    );
                    #prefetch_next
                    let codes = expanded as *const u8;
                },
            )
        }
        None => (quote! {}, quote! {}),
    };
    let token_block = lit(token_block_for(mr, shape.cols));
    let (cfg, arch, tf, detect) = (&t.cfg, &t.arch_import, &t.target_feature, &t.detect);
    let doc = format!(
        " `y[n, {}] = x[n, {}] · Wᵀ`, W in `{}`, tiled layout of {nr} rows ({}: {}).",
        shape.rows, shape.cols, shape.scheme, t.name, t.features
    );
    let missing = format!(
        "{name} needs the CPU features {} (this CPU lacks one)",
        t.features
    );

    // Scheme-dependent constants, weight views, and the weight pointers passed down.
    let (consts, views, params, args, advance, view_ptrs) = match info.group {
        Some(group) => {
            let group = lit(group);
            let consts = quote! {
                const GROUP: usize = #group;
                const GROUPS: usize = COLS / GROUP;
                const BLOCKS_PER_GROUP: usize = GROUP / Q8_BLOCK;
            };
            let (mut views, mut params, mut args, mut advance, mut ptrs) = (
                quote! { let scales: &[u16] = view(w, at.scale, TILES * GROUPS * NR); },
                quote! { scales: *const u16, },
                quote! { scales, },
                quote! { let scales = scales.add(tile * GROUPS * NR); },
                quote! { scales.as_ptr(), },
            );
            if info.asymmetric {
                views.extend(quote! { let mins: &[u16] = view(w, at.min, TILES * GROUPS * NR); });
                params.extend(quote! { mins: *const u16, });
                args.extend(quote! { mins, });
                advance.extend(quote! { let mins = mins.add(tile * GROUPS * NR); });
                ptrs.extend(quote! { mins.as_ptr(), });
            }
            (consts, views, params, args, advance, ptrs)
        }
        None => (
            quote! {},
            quote! { let scales: &[f32] = view(w, at.scale, TILES * NR); },
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
    let call_args = quote! { codes, #args xq.add(t * COLS), xs.add(t * BLOCKS), xsum.add(t * BLOCKS), o.add(t * NR) };
    let rest_arms: Vec<TokenStream> = (1..mr)
        .map(|m| {
            let (f, m) = (pass(m), lit(m));
            quote! { #m => #f(#call_args), }
        })
        .collect();

    // With a matrix unit: whether this call uses it, and its passes before the register ones.
    let (unit_flag, unit_param, unit_arg, unit_enter, unit_leave, unit_passes) = match &t
        .matrix_unit
    {
        Some(u) => {
            let (tokens, enabled, enter, leave) = (lit(u.tokens), &u.enabled, &u.enter, &u.leave);
            let f = pass(u.tokens);
            (
                quote! {
                    // The matrix unit takes passes of UNIT tokens when a call has that many.
                    const UNIT: usize = #tokens;
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
    quote! {
        #cfg
        #[doc = #doc]
        pub fn #name(w: &[u8], at: &MatrixAt, x: &Q8Acts, y: &mut [f32]) {
            #arch
            const ROWS: usize = #rows_l;
            const COLS: usize = #cols_l;
            /// Rows per tile, tokens per pass, tiles (the last one padded).
            const NR: usize = #nr_l;
            const MR: usize = #mr_l;
            const TILES: usize = #tiles_l;
            const BLOCKS: usize = COLS / Q8_BLOCK;
            /// Code bytes of one tile and block, and of one tile, as the passes read them and
            /// as stored.
            const BLOCK_BYTES: usize = #block_bytes_l;
            const TILE_BYTES: usize = BLOCKS * BLOCK_BYTES;
            const STORED_TILE_BYTES: usize = BLOCKS * #stored_block_bytes_l;
            /// Tokens per sweep over the tiles: at most 256 KiB of activations.
            const TOKEN_BLOCK: usize = #token_block;
            /// How far ahead of the block being read decode hints the next lines into L2.
            const PREFETCH_AHEAD: usize = #prefetch_ahead;
            #consts
            assert!(#detect, #missing);
            let n = x.tokens();
            assert!(
                x.cols == COLS && x.q.len() == n * COLS && x.scale.len() == n * BLOCKS && x.sum.len() == n * BLOCKS && y.len() == n * ROWS,
                "shape mismatch"
            );
            if n == 0 {
                return;
            }
            #unit_flag
            let codes: &[u8] = view(w, at.q, TILES * STORED_TILE_BYTES);
            #views
            // Outputs per tile as [n][NR]: y itself for one token and whole tiles, else this
            // thread's kept scratch, copied out after (dropping the padded rows).
            let run = |out: &mut [f32]| {
                // 16 chunks per thread, claimed in turn: whoever finishes first waits for at
                // most one small chunk (4 per thread left a worker spinning 4.7% of decode).
                let chunk = (TILES / (16 * qwenc_runtime::threads::current_num_threads())).max(1);
                qwenc_runtime::threads::for_each_chunk_mut(out, chunk * n * NR, |c, out| {
                    // SAFETY: the CPU has the features (asserted above), and `tiles` reads only
                    // inside the views and `x`, whose lengths were checked against the shape.
                    unsafe { tiles(codes.as_ptr(), #view_ptrs x, n, c * chunk, out #unit_arg) }
                });
            };
            if n == 1 && ROWS % NR == 0 {
                run(y);
            } else {
                qwenc_runtime::kernel_support::with_scratch(TILES * n * NR, |scratch| {
                    run(scratch);
                    qwenc_runtime::kernel_support::untile(scratch, y, n, ROWS, NR);
                });
            }

            /// Tiles `first..` into `out` (`[tiles][n][NR]`): for each block of `TOKEN_BLOCK`
            /// tokens (their activations stay in L2), every tile, `MR` tokens per pass.
            #tf
            unsafe fn tiles(codes: *const u8, #params x: &Q8Acts, n: usize, first: usize, out: &mut [f32] #unit_param) {
                unsafe {
                    #unit_enter
                    #expand_setup
                    let (xq, xs, xsum) = (x.q.as_ptr(), x.scale.as_ptr(), x.sum.as_ptr());
                    let mut t0 = 0;
                    while t0 < n {
                        let t1 = (t0 + TOKEN_BLOCK).min(n);
                        for (i, slab) in out.chunks_exact_mut(n * NR).enumerate() {
                            let tile = first + i;
                            let codes = codes.add(tile * STORED_TILE_BYTES);
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

            #(#passes)*
        }
    }
}

/// `tokens_{m}`: one tile × `m` tokens, all blocks; token `j`'s outputs to `out + j·NR`.
fn token_pass(p: &dyn TilePrims, info: &SchemeInfo, m: usize, params: &TokenStream) -> TokenStream {
    let nr = p.nr();
    let tf = p.target_feature();
    let fname = format_ident!("tokens_{m}");
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
            let x = p.bcast_x4(quote! { xb.add(#jl * COLS + #offl) });
            let dot = p.dot(kind, id(a.clone()), u.clone(), s.clone(), x);
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
                for g in 0..GROUPS {
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
            for b in 0..BLOCKS {
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
    quote! {
        #[doc = #doc]
        #tf
        #[inline(never)]
        unsafe fn #fname(codes: *const u8, #params xq: *const i8, xs: *const f32, xsum: *const i32, out: *mut f32) {
            unsafe {
                #unused
                #nibble
                #(let mut #f: #fvec = #zero_f;)*
                #loops
                #row_scale
                #(#stores;)*
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
        let sa = *xs.add(#jl * BLOCKS + b);
    };
    if correction != 0 {
        let correction = proc_macro2::Literal::i32_unsuffixed(correction);
        let bias = p.splat_i32(quote! { #correction * *xsum.add(#jl * BLOCKS + b) });
        let sub = p.sub_i32(quote!(#dot), bias);
        out.extend(quote! { let #dot: #ivec = #sub; });
    }
    let dotf = p.cvt_f32(quote!(#dot));
    let update = match info.group {
        Some(_) => {
            let ds = p.mul_f(quote!(d), p.splat_f32(quote!(sa)));
            let mut u = p.fma_f(dotf, ds, quote!(#fj));
            if info.asymmetric {
                let ms = p.splat_f32(quote! { sa * *xsum.add(#jl * BLOCKS + b) as f32 });
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
    let fname = format_ident!("tokens_{m}");
    let fvec = p.fvec();
    let f: Vec<Ident> = (0..m).map(|j| format_ident!("f{j}")).collect();
    let setup = p.matrix_setup(info.kind, info.asymmetric);
    let start = |slot: usize| p.matrix_start(info.kind, info.asymmetric, slot);
    let (start0, start1) = (start(0), start(1));
    let (finish0, finish1) = (p.matrix_finish(0), p.matrix_finish(1));
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
    quote! {
        #[doc = #doc]
        #tf
        #[inline(never)]
        unsafe fn #fname(codes: *const u8, #params xq: *const i8, xs: *const f32, xsum: *const i32, out: *mut f32) {
            unsafe {
                let _ = xsum;
                #setup
                #(let mut #f: #fvec = #zero_f;)*
                {
                    let (c, xb) = (codes, xq);
                    #start0
                }
                for b in 0..BLOCKS {
                    let next = b + 1;
                    if next < BLOCKS {
                        let (c, xb) = (codes.add(next * BLOCK_BYTES), xq.add(next * Q8_BLOCK));
                        if next % 2 == 0 { #start0 } else { #start1 }
                    }
                    if b % 2 == 0 { #finish0 } else { #finish1 }
                    #scales
                    #(#updates)*
                }
                #row_scale
                #(#stores;)*
            }
        }
    }
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
            // 8 steps of NR lanes × 4 bytes; step k = columns 4k..4k+4, stored q + 128.
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
            // 4 vectors of NR lanes × 4 bytes; byte j of vector k holds column 8k + j (low
            // nibble) and 8k + 4 + j (high nibble).
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
