//! The aarch64 backends of the tiled integer kernels: NEON dotprod, NEON i8mm and SVE.
//!
//! All three read the tiled layout of [`super::tiled`] (its module docs), with `nr` = the i32
//! lanes of one vector: 4 for NEON (128 bits), and for SVE the lanes of the vector length the
//! executable is specialized for (4, 8 or 16 at 128, 256, 512 bits). So every Arm kernel has
//! the same plain-Rust twin as the x86 kernel of the same `nr` (`twin4`, `twin8`, `twin16`),
//! and one packer serves all.
//!
//! | backend            | n = 1 (decode)                           | n ≥ 2 (prefill)                         |
//! |--------------------|------------------------------------------|-----------------------------------------|
//! | `aarch64-neon`     | `sdot` (4 rows × 4 bytes) vs `ld1r` of x | same, 4 tokens per pass                 |
//! | `aarch64-i8mm`     | as neon                                  | `smmla` (2 rows × 8 · 8 × 2 tokens), 8 tokens per pass |
//! | `aarch64-sve2[-B]` | SVE `sdot` on whole z registers in one `asm!` loop per tile | same, 4 tokens per pass |
//!
//! `sdot` and `smmla` are s8 × s8: w4 codes (0..=15) are valid s8 as they are; w8 codes are
//! stored q + 128, and `eor 0x80` gives q back, so no correction term is needed for w8.
//!
//! i8mm needs no layout of its own: with `nr` = 4, one 16-byte w4 vector `k` holds rows 0..4 ×
//! columns `8k..8k+4` (low nibbles) and `8k+4..8k+8` (high nibbles); `zip1.4s(lo, hi)` is then
//! rows 0, 1 × columns `8k..8k+8` and `zip2.4s` rows 2, 3 — exactly `smmla`'s 2 × 8 operand.
//! For w8, `zip1/zip2.4s` of steps `2k` and `2k + 1` give the same. The 2 × 2 results
//! (row-major: row, token) are split back into one vector of 4 rows per token by
//! `uzp1/uzp2.4s`, and from there the float part is the generic body's, so the outputs are
//! bit-identical to the twin's.
//!
//! Why `asm!`: the Rust intrinsics `vdotq_s32` / `vmmlaq_s32` are unstable (features
//! `stdarch_neon_dotprod`, `stdarch_neon_i8mm`) and Rust has no SVE types at all. `asm!`
//! with `vreg` operands is stable: one instruction per block, operands in registers the
//! compiler allocates, so the surrounding loads, masks and float math stay ordinary
//! intrinsics the compiler schedules. SVE values cannot live in Rust variables, so an SVE pass
//! is one `asm!` loop over the blocks of a tile, its registers named in the template and
//! declared clobbered.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::lit;
use super::tiled::{self, DotKind, TilePrims};
use crate::compile::plan::MatmulShape;
use crate::quant::Scheme;

/// The aarch64 instruction sets with a tiled integer backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArmIsa {
    /// Armv8.2 dotprod (Cortex-A76 and later: Raspberry Pi 5, Graviton 2): 4 rows per tile.
    Neon,
    /// Armv8.6 i8mm on top (Neoverse N2/V1/V2, Yitian 710, Graviton 3/4, Apple M2+).
    I8mm,
    /// SVE2 at a fixed vector length in bits (128 on Neoverse N2 / Yitian 710; 256 on V1;
    /// 512 for completeness): `bits / 32` rows per tile, checked at start-up with `cntb`.
    Sve2 { bits: usize },
}

impl ArmIsa {
    pub const ALL: [ArmIsa; 5] = [
        ArmIsa::Neon,
        ArmIsa::I8mm,
        ArmIsa::Sve2 { bits: 128 },
        ArmIsa::Sve2 { bits: 256 },
        ArmIsa::Sve2 { bits: 512 },
    ];

    /// The backend name (`QWENC_TARGET`, kernel name prefix after `-` → `_`).
    pub fn name(self) -> &'static str {
        match self {
            ArmIsa::Neon => "aarch64-neon",
            ArmIsa::I8mm => "aarch64-i8mm",
            ArmIsa::Sve2 { bits: 128 } => "aarch64-sve2",
            ArmIsa::Sve2 { bits: 256 } => "aarch64-sve2-256",
            ArmIsa::Sve2 { bits: 512 } => "aarch64-sve2-512",
            ArmIsa::Sve2 { bits } => panic!("no SVE backend for {bits}-bit vectors"),
        }
    }

    /// Short name (module names of the test kernels).
    pub fn short_name(self) -> &'static str {
        match self {
            ArmIsa::Neon => "neon",
            ArmIsa::I8mm => "i8mm",
            ArmIsa::Sve2 { bits: 128 } => "sve128",
            ArmIsa::Sve2 { bits: 256 } => "sve256",
            ArmIsa::Sve2 { bits: 512 } => "sve512",
            ArmIsa::Sve2 { bits } => panic!("no SVE backend for {bits}-bit vectors"),
        }
    }

    /// The target features every emitted SIMD function enables (and the CPU must have).
    pub fn target_features(self) -> &'static [&'static str] {
        match self {
            ArmIsa::Neon => &["neon", "dotprod"],
            ArmIsa::I8mm => &["neon", "dotprod", "i8mm"],
            ArmIsa::Sve2 { .. } => &["neon", "sve", "sve2"],
        }
    }

    /// Rows per tile (= i32 lanes of one vector).
    pub fn nr(self) -> usize {
        match self {
            ArmIsa::Neon | ArmIsa::I8mm => 4,
            ArmIsa::Sve2 { bits } => bits / 32,
        }
    }

    /// SVE vector length in bytes the kernels were built for (`cntb`), if SVE.
    pub fn sve_bytes(self) -> Option<usize> {
        match self {
            ArmIsa::Sve2 { bits } => Some(bits / 8),
            _ => None,
        }
    }

    /// `#[target_feature(enable = "...")]` for this ISA.
    pub fn target_feature_attr(self) -> TokenStream {
        let list = self.target_features().join(",");
        quote! { #[target_feature(enable = #list)] }
    }

    /// A `bool` expression: the running CPU has every feature (and, for SVE, the vector
    /// length the kernels were built for).
    pub fn detect(self) -> TokenStream {
        let checks = self
            .target_features()
            .iter()
            .map(|f| quote! { std::arch::is_aarch64_feature_detected!(#f) });
        match self.sve_bytes() {
            None => quote! { (#(#checks)&&*) },
            Some(bytes) => {
                let bytes = lit(bytes);
                quote! {
                    ({
                        /// SVE vector length in bytes.
                        #[target_feature(enable = "sve")]
                        unsafe fn cntb() -> usize {
                            let n: usize;
                            __note!("SAFETY: `cntb` reads the vector length and nothing else.");
                            unsafe { std::arch::asm!("cntb {n}", n = out(reg) n, options(pure, nomem, nostack)) };
                            n
                        }
                        let sve = #(#checks)&&*;
                        __note!("SAFETY: `cntb` runs only once SVE is detected.");
                        sve && unsafe { cntb() } == #bytes
                    })
                }
            }
        }
    }

    /// What a CPU that fails [`ArmIsa::detect`] lacks, for the start-up message.
    pub fn requirement(self) -> String {
        let features = self.target_features().join(", ");
        match self.sve_bytes() {
            None => features,
            Some(bytes) => format!(
                "{features}, and SVE vectors of {} bits (cntb = {bytes})",
                bytes * 8
            ),
        }
    }

    /// The kernel of one shape: its scheme's family and the shape's entry point.
    pub fn matmul(self, shape: &MatmulShape) -> TokenStream {
        let cfg = quote! { #[cfg(target_arch = "aarch64")] };
        tiled::kernel_set(self.name(), &cfg, &[*shape], &|s| self.family(s))
    }

    /// The kernel family of `scheme` (an integer scheme), generic over the shape.
    pub fn family(self, scheme: Scheme) -> TokenStream {
        match self {
            ArmIsa::Neon => tiled::family_with(&Neon { i8mm: false }, scheme),
            ArmIsa::I8mm => tiled::family_with(&Neon { i8mm: true }, scheme),
            ArmIsa::Sve2 { .. } => sve::family(self, scheme),
        }
    }

    /// The NEON primitive set (for `token_block`), if this ISA has one.
    pub fn prims(self) -> Option<&'static dyn TilePrims> {
        match self {
            ArmIsa::Neon => Some(&Neon { i8mm: false }),
            ArmIsa::I8mm => Some(&Neon { i8mm: true }),
            ArmIsa::Sve2 { .. } => None,
        }
    }

    /// Tokens per pass.
    pub fn mr(self) -> usize {
        match self {
            ArmIsa::Neon => 4,
            // Four token pairs: 8 smmla accumulators + 8 f32 accumulators of 32 registers.
            ArmIsa::I8mm => 8,
            ArmIsa::Sve2 { .. } => sve::MR,
        }
    }
}

impl std::fmt::Display for ArmIsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The helper macros of the NEON and i8mm families: each expands to the `asm!` statement or
/// block that the primitives would otherwise write out at every use.
const NEON_PRELUDE: &str = r#"/// `acc` plus, per i32 lane, the dot product of the lane's 4 code bytes in `w` with the 4
/// activation bytes at `x` (all s8): one `sdot`.
#[allow(unused_macros)]
macro_rules! sdot4 {
    ($acc:expr, $w:expr, $x:expr) => {{
        let mut acc: int32x4_t = $acc;
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) $w,
            x = in(vreg) vdupq_n_s32(i32::from_le_bytes(*($x as *const [u8; 4]))),
            options(pure, nomem, nostack),
        );
        acc
    }};
}
/// `acc` (2 rows × 2 tokens, i32) plus the 2 × 8 codes `w` times the 8 × 2 activations `x`:
/// one `smmla`.
#[allow(unused_macros)]
macro_rules! smmla {
    ($acc:ident, $w:expr, $x:expr) => {
        asm!(
            "smmla {acc:v}.4s, {w:v}.16b, {x:v}.16b",
            acc = inout(vreg) $acc,
            w = in(vreg) $w,
            x = in(vreg) $x,
            options(pure, nomem, nostack),
        )
    };
}
/// Four f16 at `ptr`, converted exactly to f32 (`fcvtl`; the f16 intrinsics are unstable).
#[allow(unused_macros)]
macro_rules! load_f16x4 {
    ($ptr:expr) => {{
        let h: uint16x4_t = vld1_u16($ptr);
        let f: float32x4_t;
        asm!("fcvtl {f:v}.4s, {h:v}.4h", f = lateout(vreg) f, h = in(vreg) h, options(pure, nomem, nostack));
        f
    }};
}
/// Hint the cache line at `ptr` into L2 (`prfm pldl2keep`; never faults).
#[allow(unused_macros)]
macro_rules! prefetch_l2 {
    ($ptr:expr) => {
        asm!("prfm pldl2keep, [{p}]", p = in(reg) $ptr, options(nostack, readonly, preserves_flags))
    };
}"#;

/// NEON primitives (128-bit, 4 rows per tile), with `smmla` passes when `i8mm`.
pub struct Neon {
    pub i8mm: bool,
}

impl Neon {
    fn isa(&self) -> ArmIsa {
        if self.i8mm {
            ArmIsa::I8mm
        } else {
            ArmIsa::Neon
        }
    }
}

impl TilePrims for Neon {
    fn name(&self) -> &'static str {
        self.isa().name()
    }
    fn nr(&self) -> usize {
        4
    }
    fn mr(&self) -> usize {
        self.isa().mr()
    }
    fn int_accs(&self) -> usize {
        // Two sdot chains per token and block (latency 3, two per cycle on Neoverse N2).
        2
    }
    fn w8_bias(&self) -> i32 {
        0
    }
    fn cfg(&self) -> TokenStream {
        quote! { #[cfg(target_arch = "aarch64")] }
    }
    fn arch_import(&self) -> TokenStream {
        quote! { use std::arch::aarch64::*; use std::arch::asm; }
    }
    fn target_feature(&self) -> TokenStream {
        self.isa().target_feature_attr()
    }
    fn detect(&self) -> TokenStream {
        self.isa().detect()
    }
    fn features(&self) -> String {
        self.isa().target_features().join(", ")
    }
    fn ivec(&self) -> TokenStream {
        quote! { int32x4_t }
    }
    fn fvec(&self) -> TokenStream {
        quote! { float32x4_t }
    }
    fn load_i(&self, ptr: TokenStream) -> TokenStream {
        quote! { vreinterpretq_s32_u8(vld1q_u8(#ptr as *const u8)) }
    }
    fn splat_i8(&self, v: i8) -> TokenStream {
        quote! { vreinterpretq_s32_s8(vdupq_n_s8(#v)) }
    }
    fn splat_i32(&self, e: TokenStream) -> TokenStream {
        quote! { vdupq_n_s32(#e) }
    }
    fn prefetch(&self, ptr: TokenStream) -> Option<TokenStream> {
        Some(quote! { prefetch_l2!(#ptr) })
    }
    fn prelude(&self) -> Option<&'static str> {
        Some(NEON_PRELUDE)
    }
    fn dot_x4(
        &self,
        _kind: DotKind,
        acc: TokenStream,
        u: TokenStream,
        _s: Option<TokenStream>,
        ptr: TokenStream,
    ) -> TokenStream {
        quote! { sdot4!(#acc, #u, #ptr) }
    }
    fn and_i(&self, a: TokenStream, b: TokenStream) -> TokenStream {
        quote! { vandq_s32(#a, #b) }
    }
    fn srli16_4(&self, a: TokenStream) -> TokenStream {
        // A byte shift: the same bits as a 16-bit shift under the 0x0F mask that follows, and
        // the compiler then drops the mask (the top nibble is known zero).
        quote! { vreinterpretq_s32_u8(vshrq_n_u8::<4>(vreinterpretq_u8_s32(#a))) }
    }
    fn sub_i32(&self, a: TokenStream, b: TokenStream) -> TokenStream {
        quote! { vsubq_s32(#a, #b) }
    }
    fn acc_zero(&self, _kind: DotKind) -> TokenStream {
        quote! { vdupq_n_s32(0) }
    }
    fn w8_signed(&self, v: TokenStream) -> Option<TokenStream> {
        // q + 128 → q: sdot is s8 × s8.
        Some(quote! { veorq_s32(#v, vreinterpretq_s32_s8(vdupq_n_s8(-128))) })
    }
    fn w8_unsigned(&self, _v: TokenStream, s: Option<TokenStream>) -> TokenStream {
        s.expect("NEON w8 has a signed operand")
    }
    fn dot(
        &self,
        _kind: DotKind,
        acc: TokenStream,
        u: TokenStream,
        _s: Option<TokenStream>,
        x: TokenStream,
    ) -> TokenStream {
        quote! {
            {
                let mut acc: int32x4_t = #acc;
                asm!("sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b", acc = inout(vreg) acc, w = in(vreg) #u, x = in(vreg) #x, options(pure, nomem, nostack));
                acc
            }
        }
    }
    fn acc_sum(&self, _kind: DotKind, accs: &[TokenStream]) -> TokenStream {
        match accs {
            [a] => quote! { #a },
            [a, b] => quote! { vaddq_s32(#a, #b) },
            _ => panic!("NEON uses one or two accumulators"),
        }
    }
    fn zero_f(&self) -> TokenStream {
        quote! { vdupq_n_f32(0.0) }
    }
    fn splat_f32(&self, e: TokenStream) -> TokenStream {
        quote! { vdupq_n_f32(#e) }
    }
    fn cvt_f32(&self, a: TokenStream) -> TokenStream {
        quote! { vcvtq_f32_s32(#a) }
    }
    fn mul_f(&self, a: TokenStream, b: TokenStream) -> TokenStream {
        quote! { vmulq_f32(#a, #b) }
    }
    fn fma_f(&self, a: TokenStream, b: TokenStream, c: TokenStream) -> TokenStream {
        quote! { vfmaq_f32(#c, #a, #b) }
    }
    fn load_f32(&self, ptr: TokenStream) -> TokenStream {
        quote! { vld1q_f32(#ptr) }
    }
    fn load_f16(&self, ptr: TokenStream) -> TokenStream {
        // fcvtl: exact f16 → f32 (the f16 intrinsics are unstable).
        quote! { load_f16x4!(#ptr) }
    }
    fn store_f32(&self, ptr: TokenStream, v: TokenStream) -> TokenStream {
        quote! { vst1q_f32(#ptr, #v) }
    }
    fn token_pass(&self, scheme: Scheme, m: usize, params: &TokenStream) -> Option<TokenStream> {
        (self.i8mm && m >= 2).then(|| smmla_pass(self, scheme, m, params))
    }
}

/// A statement hinting the cache line at `ptr` into L2 (`prfm pldl2keep`).
fn prefetch_l2(ptr: TokenStream) -> TokenStream {
    quote! {
        asm!("prfm pldl2keep, [{p}]", p = in(reg) #ptr, options(nostack, readonly, preserves_flags))
    }
}

/// `tokens_{m}` for i8mm: `ceil(m / 2)` token pairs (an odd last token is paired with itself
/// and its duplicate output dropped), `smmla` on 2 rows × 8 columns · 8 columns × 2 tokens.
/// The float part per token is the generic body's, so outputs equal the twin's bit for bit.
fn smmla_pass(p: &Neon, scheme: Scheme, m: usize, params: &TokenStream) -> TokenStream {
    let tf = p.target_feature();
    let pairs = m.div_ceil(2);
    let (group, asymmetric, w8) = match scheme {
        Scheme::W4 { group, asymmetric } => (Some(group), asymmetric, false),
        Scheme::W8 => (None, false, true),
        Scheme::W8Grouped { group } => (Some(group), false, true),
        other => panic!("the tiled kernels are for integer schemes, not {other}"),
    };
    let f: Vec<_> = (0..m).map(|j| format_ident!("f{j}")).collect();

    // Weights of one block as 4 steps × 2 row pairs of 2 × 8 matrices: w{k}_01, w{k}_23.
    let mut block = TokenStream::new();
    if w8 {
        for k in 0..8 {
            let v = format_ident!("v{k}");
            let off = lit(16 * k);
            block.extend(quote! {
                let #v = veorq_s32(vreinterpretq_s32_u8(vld1q_u8(c.add(#off))), flip);
            });
        }
        for k in 0..4 {
            let (a, b) = (
                format_ident!("v{}", 2 * k as usize),
                format_ident!("v{}", 2 * k as usize + 1),
            );
            let (lo, hi) = (format_ident!("w{k}_01"), format_ident!("w{k}_23"));
            block.extend(quote! {
                let #lo = vzip1q_s32(#a, #b);
                let #hi = vzip2q_s32(#a, #b);
            });
        }
    } else {
        for k in 0..4 {
            let off = lit(16 * k);
            let (lo, hi) = (format_ident!("w{k}_01"), format_ident!("w{k}_23"));
            block.extend(quote! {
                let v = vld1q_u8(c.add(#off));
                let lo = vreinterpretq_s32_u8(vandq_u8(v, nibble));
                let hi = vreinterpretq_s32_u8(vshrq_n_u8::<4>(v));
                let #lo = vzip1q_s32(lo, hi);
                let #hi = vzip2q_s32(lo, hi);
            });
        }
    }
    // Per pair: two accumulators (rows 0,1 and rows 2,3), 4 smmla each.
    for pair in 0..pairs {
        let (t0, t1) = (2 * pair, (2 * pair + 1).min(m - 1));
        let (a01, a23) = (format_ident!("p{pair}_01"), format_ident!("p{pair}_23"));
        let (t0l, t1l) = (lit(t0), lit(t1));
        block.extend(quote! {
            let mut #a01 = vdupq_n_s32(0);
            let mut #a23 = vdupq_n_s32(0);
        });
        for k in 0..4 {
            let off = lit(8 * k);
            let (w01, w23) = (format_ident!("w{k}_01"), format_ident!("w{k}_23"));
            block.extend(quote! {
                let x = vreinterpretq_s32_s8(vcombine_s8(vld1_s8(xb.add(#t0l * COLS + #off)), vld1_s8(xb.add(#t1l * COLS + #off))));
                smmla!(#a01, #w01, x);
                smmla!(#a23, #w23, x);
            });
        }
        // (row, token) 2 × 2 tiles → 4 rows of token t0 (even lanes) and of t1 (odd lanes).
        let (d0, d1) = (
            format_ident!("dot{t0}"),
            format_ident!("dot{}", 2 * pair + 1),
        );
        block.extend(quote! { let #d0 = vuzp1q_s32(#a01, #a23); });
        if 2 * pair + 1 < m {
            block.extend(quote! { let #d1 = vuzp2q_s32(#a01, #a23); });
        }
    }
    // The float part, per token, exactly as the generic body.
    for (j, fj) in f.iter().enumerate() {
        let jl = lit(j);
        let dot = format_ident!("dot{j}");
        block.extend(quote! { let sa = *xs.add(#jl * Self::BLOCKS + b); });
        let update = match group {
            Some(_) => {
                if !asymmetric && !w8 {
                    block.extend(quote! {
                        let #dot = vsubq_s32(#dot, vdupq_n_s32(8 * *xsum.add(#jl * Self::BLOCKS + b)));
                    });
                }
                let mut u =
                    quote! { vfmaq_f32(#fj, vcvtq_f32_s32(#dot), vmulq_f32(d, vdupq_n_f32(sa))) };
                if asymmetric {
                    u = quote! { vfmaq_f32(#u, mn, vdupq_n_f32(sa * *xsum.add(#jl * Self::BLOCKS + b) as f32)) };
                }
                u
            }
            None => quote! { vfmaq_f32(#fj, vcvtq_f32_s32(#dot), vdupq_n_f32(sa)) },
        };
        block.extend(quote! { #fj = #update; });
    }
    let block_setup = quote! {
        let c = codes.add(b * BLOCK_BYTES);
        let xb = xq.add(b * Q8_BLOCK);
    };
    let load_f16 = |ptr: TokenStream| p.load_f16(ptr);
    let loops = match group {
        Some(_) => {
            let d = load_f16(quote! { scales.add(g * NR) });
            let mn = asymmetric.then(|| {
                let e = load_f16(quote! { mins.add(g * NR) });
                quote! { let mn: float32x4_t = #e; }
            });
            quote! {
                for g in 0..Self::GROUPS {
                    let d: float32x4_t = #d;
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
    let consts = if w8 {
        quote! { let flip = vreinterpretq_s32_s8(vdupq_n_s8(-128)); }
    } else {
        quote! { let nibble = vdupq_n_u8(0x0f); }
    };
    let stores = f.iter().enumerate().map(|(j, fj)| {
        let jl = lit(j);
        let v = if group.is_none() {
            quote! { vmulq_f32(#fj, row_scale) }
        } else {
            quote! { #fj }
        };
        quote! { vst1q_f32(out.add(#jl * NR), #v); }
    });
    // Per-row w8 scales once at the end; grouped schemes scaled every group above.
    let row_scale = group
        .is_none()
        .then(|| quote! { let row_scale = vld1q_f32(scales); });
    let unused = w8.then(|| quote! { let _ = xsum; });
    let doc = format!(
        " One tile (4 rows) × {m} tokens at `xq`/`xs`/`xsum` by `smmla` on {pairs} token pair(s), outputs at `out + j·NR`."
    );
    let body = quote! {
            #unused
            #consts
            #(let mut #f: float32x4_t = vdupq_n_f32(0.0);)*
            #loops
            #row_scale
            #(#stores)*
    };
    tiled::pass_item(m, &doc, &tf, params, body)
}

/// The SVE passes: one `asm!` loop per tile and pass, whole z registers (`nr` = VL / 32 rows).
mod sve {
    use proc_macro2::TokenStream;
    use quote::{format_ident, quote};

    use super::super::tiled::{self, TileLoop};
    use super::ArmIsa;
    use crate::quant::Scheme;

    /// Tokens per pass: 4 f32 + 4 i32 accumulators and 4 × 3 pointer registers.
    pub const MR: usize = 4;

    pub fn family(isa: ArmIsa, scheme: Scheme) -> TokenStream {
        let t = TileLoop {
            name: isa.name(),
            nr: isa.nr(),
            mr: MR,
            cfg: quote! { #[cfg(target_arch = "aarch64")] },
            arch_import: quote! { use std::arch::asm; },
            target_feature: isa.target_feature_attr(),
            detect: isa.detect(),
            features: isa.requirement(),
            matrix_unit: None,
            prefetch_line: Some(super::prefetch_l2(quote! { line })),
            prelude: None,
        };
        let passes = tiled::pass_scheme(scheme);
        tiled::family(&t, scheme, &|m, params| pass(isa, passes, m, params))
    }

    /// `tokens_{m}` as one asm loop. Registers: z31 = 0x0F bytes, z0..z2 codes, z3 the
    /// broadcast activation bytes, z4 scales (d), z5 minimums, z6/z7 temporaries, z8+j the f32
    /// accumulator and z16+j the i32 dot of token j; p0 = all .s lanes, p1 = all bytes.
    fn pass(isa: ArmIsa, scheme: Scheme, m: usize, params: &TokenStream) -> TokenStream {
        let tf = isa.target_feature_attr();
        let (group, asymmetric, w8) = match scheme {
            Scheme::W4 { group, asymmetric } => (Some(group), asymmetric, false),
            Scheme::W8 => (None, false, true),
            Scheme::W8Grouped { group } => (Some(group), false, true),
            other => panic!("the tiled kernels are for integer schemes, not {other}"),
        };
        let nr = isa.nr();
        let (bpg, outer) = match group {
            Some(g) => (g / tiled::BLOCK, quote! { Self::GROUPS }),
            None => (1, quote! { Self::BLOCKS }),
        };
        let block_bytes = if w8 { 32 * nr } else { 16 * nr };
        let mut a = Vec::<String>::new();
        let mut line = |s: String| a.push(s);
        line("ptrue p0.s".into());
        line("ptrue p1.b".into());
        if !w8 {
            line("mov z31.b, #15".into());
        }
        for j in 0..m {
            line(format!("mov z{}.s, #0", 8 + j));
        }
        line("2:".into());
        if group.is_some() {
            // The group's scales (f16 → f32, exact), and minimums.
            line("ld1h «z4.s», p0/z, [{scales}]".into());
            line("fcvt z4.s, p0/m, z4.h".into());
            line(format!("add {{scales}}, {{scales}}, #{}", 2 * nr));
            if asymmetric {
                line("ld1h «z5.s», p0/z, [{mins}]".into());
                line("fcvt z5.s, p0/m, z5.h".into());
                line(format!("add {{mins}}, {{mins}}, #{}", 2 * nr));
            }
        }
        for _ in 0..bpg {
            for j in 0..m {
                line(format!("mov z{}.s, #0", 16 + j));
            }
            if w8 {
                for k in 0..8 {
                    // One step per VL: q + 128 → q.
                    line(format!("ld1b «z0.b», p1/z, [{{codes}}, #{k}, mul vl]"));
                    line("eor z0.b, z0.b, #0x80".into());
                    emit_dots(&mut line, m, 0, 4 * k);
                }
            } else {
                for k in 0..4 {
                    line(format!("ld1b «z0.b», p1/z, [{{codes}}, #{k}, mul vl]"));
                    line("and z1.d, z0.d, z31.d".into());
                    line("lsr z2.b, z0.b, #4".into());
                    emit_dots(&mut line, m, 1, 8 * k);
                    emit_dots(&mut line, m, 2, 8 * k + 4);
                }
            }
            if m == 1 {
                // Decode streams the weights once: hint the lines PREFETCH_AHEAD bytes on.
                line("prfm pldl2keep, [{codes}, #{ahead}]".into());
                for l in 1..block_bytes / 64 {
                    line(format!(
                        "prfm pldl2keep, [{{codes}}, #({{ahead}} + {})]",
                        64 * l
                    ));
                }
            }
            line(format!("add {{codes}}, {{codes}}, #{block_bytes}"));
            for j in 0..m {
                let (acc, dot) = (8 + j, 16 + j);
                if !w8 && !asymmetric {
                    // dot −= 8·Σx (symmetric w4: value d·(q − 8)).
                    line(format!("ld1rw «z6.s», p0/z, [{{xsum{j}}}]"));
                    line("lsl z6.s, z6.s, #3".into());
                    line(format!("sub z{dot}.s, z{dot}.s, z6.s"));
                }
                line(format!("scvtf z{dot}.s, p0/m, z{dot}.s"));
                line(format!("ld1rw «z7.s», p0/z, [{{xs{j}}}]"));
                if group.is_none() {
                    line(format!("fmla z{acc}.s, p0/m, z{dot}.s, z7.s"));
                } else {
                    line("fmul z6.s, z4.s, z7.s".into());
                    line(format!("fmla z{acc}.s, p0/m, z{dot}.s, z6.s"));
                    if asymmetric {
                        // acc += m · (sa · Σx), the product rounded as the twin's.
                        line(format!("ld1rw «z6.s», p0/z, [{{xsum{j}}}]"));
                        line("scvtf z6.s, p0/m, z6.s".into());
                        line("fmul z6.s, z6.s, z7.s".into());
                        line(format!("fmla z{acc}.s, p0/m, z5.s, z6.s"));
                    }
                }
                line(format!("add {{xq{j}}}, {{xq{j}}}, #32"));
                line(format!("add {{xs{j}}}, {{xs{j}}}, #4"));
                if !w8 {
                    line(format!("add {{xsum{j}}}, {{xsum{j}}}, #4"));
                }
            }
        }
        line("subs {count}, {count}, #1".into());
        line("b.ne 2b".into());
        if group.is_none() {
            // Per-row w8 scales, once at the end.
            line("ld1w «z4.s», p0/z, [{scales}]".into());
        }
        for j in 0..m {
            let acc = 8 + j;
            if group.is_none() {
                line(format!("fmul z{acc}.s, z{acc}.s, z4.s"));
            }
            line(format!("st1w «z{acc}.s», p0, [{{out}}, #{j}, mul vl]"));
        }

        // «» stand for the braces of a register list, `{{ }}` in an asm! template.
        let template = a.iter().map(|s| {
            let s = s.replace('«', "{{").replace('»', "}}");
            quote! { #s }
        });
        let mut operands = vec![
            quote! { codes = inout(reg) codes => _ },
            quote! { count = inout(reg) #outer => _ },
            quote! { out = in(reg) out },
            quote! { scales = inout(reg) scales => _ },
        ];
        if asymmetric {
            operands.push(quote! { mins = inout(reg) mins => _ });
        }
        if m == 1 {
            operands.push(quote! { ahead = const PREFETCH_AHEAD });
        }
        for j in 0..m {
            let jl = super::lit(j);
            let (xq, xs, xsum) = (format!("xq{j}"), format!("xs{j}"), format!("xsum{j}"));
            let (xq, xs, xsum) = (
                format_ident!("{xq}"),
                format_ident!("{xs}"),
                format_ident!("{xsum}"),
            );
            operands.push(quote! { #xq = inout(reg) xq.add(#jl * COLS) => _ });
            operands.push(quote! { #xs = inout(reg) xs.add(#jl * Self::BLOCKS) => _ });
            if !w8 {
                operands.push(quote! { #xsum = inout(reg) xsum.add(#jl * Self::BLOCKS) => _ });
            }
        }
        let mut used: Vec<usize> = vec![0, 4, 6, 7];
        if !w8 {
            used.extend([1, 2, 31]);
        }
        if asymmetric {
            used.push(5);
        }
        used.extend((0..m).flat_map(|j| [8 + j, 16 + j]));
        used.push(3);
        used.sort_unstable();
        let clobbers = used.iter().map(|r| {
            let v = format!("v{r}");
            quote! { out(#v) _ }
        });
        let unused = w8.then(|| quote! { let _ = xsum; });
        let doc = format!(
            " One tile ({nr} rows, one SVE vector) × {m} token(s): one asm loop over the blocks."
        );
        let body = quote! {
                #unused
                asm!(
                    #(#template,)*
                    #(#operands,)*
                    #(#clobbers,)*
                    out("p0") _,
                    out("p1") _,
                    options(nostack),
                );
        };
        tiled::pass_item(m, &doc, &tf, params, body)
    }

    /// `sdot` of code register `z{w}` against the 4 activation bytes at `off` for each token.
    fn emit_dots(line: &mut impl FnMut(String), m: usize, w: usize, off: usize) {
        for j in 0..m {
            line(format!("ld1rw «z3.s», p0/z, [{{xq{j}}}, #{off}]"));
            line(format!("sdot z{}.s, z{w}.b, z3.b", 16 + j));
        }
    }
}
