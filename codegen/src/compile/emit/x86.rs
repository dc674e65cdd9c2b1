//! The x86_64 primitive sets of the tiled integer kernels: AVX2 and AVX-512 VNNI.
//!
//! Each ISA only says how to load, splat, multiply-accumulate, convert and store; the kernel
//! body that strings these together is written once, in [`super::tiled`], over the
//! [`TilePrims`] trait. Every primitive returns the tokens of one Rust expression built from
//! `std::arch::x86_64` intrinsics (the emitted functions `use std::arch::x86_64::*`).
//!
//! Integer dot products (4 columns per i32 lane, u8 weight codes × s8 activations):
//!
//! | ISA          | u4 codes (0..=15)                   | w8 codes (q + 128 as u8)                         |
//! |--------------|-------------------------------------|--------------------------------------------------|
//! | AVX-512 VNNI | `vpdpbusd` into i32                 | `vpdpbusd` into i32; the body subtracts 128·Σx   |
//! | AVX2         | `vpmaddubsw` summed in i16, then one `vpmaddwd` per block | q = code xor 0x80; `vpmaddubsw(abs(q), sign(x, q))`, `vpmaddwd` per step |
//!
//! AVX2 has no u8×s8 → i32 instruction, and `vpmaddubsw` saturates its i16 pair sums. For u4
//! codes a pair is at most 2·15·128 = 3840 and a whole 32-column block (8 steps into one i16
//! accumulator) at most 8·3840 = 30720 < 32767, so summing in i16 and widening once per block is
//! exact. For w8 a pair of (q + 128)·x would reach 2·255·127 = 64770 and saturate, so AVX2
//! multiplies abs(q) by x·sign(q) instead (pairs ≤ 2·127·127 = 32258, exact for x ∈ [−127, 127],
//! which `Q8Acts::quantize` guarantees: it never produces −128) and widens every step.

use proc_macro2::TokenStream;
use quote::quote;

use super::lit;
use super::tiled::{self, DotKind, MatrixUnit, TilePrims, UnitPrims};
use crate::compile::plan::MatmulShape;
use crate::quant::Scheme;

/// The x86_64 instruction sets with a tiled integer backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum X86Isa {
    /// AVX2 + FMA + F16C (Haswell and later, every Zen): 8 rows per tile.
    Avx2,
    /// AVX-512 F/BW/VL + VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later): 16 rows per tile.
    Avx512Vnni,
}

impl X86Isa {
    pub const ALL: [X86Isa; 2] = [X86Isa::Avx2, X86Isa::Avx512Vnni];

    /// The backend name (`QWENC_TARGET`, kernel name prefix after `-` → `_`).
    pub fn name(self) -> &'static str {
        match self {
            X86Isa::Avx2 => "x86-avx2",
            X86Isa::Avx512Vnni => "x86-avx512",
        }
    }

    /// Short name (module names of the test kernels).
    pub fn short_name(self) -> &'static str {
        match self {
            X86Isa::Avx2 => "avx2",
            X86Isa::Avx512Vnni => "avx512",
        }
    }

    /// The target features every emitted SIMD function enables (and the CPU must have).
    pub fn target_features(self) -> &'static [&'static str] {
        match self {
            X86Isa::Avx2 => &["avx2", "fma", "f16c"],
            X86Isa::Avx512Vnni => &[
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512vnni",
                "avx2",
                "fma",
                "f16c",
            ],
        }
    }

    /// `#[target_feature(enable = "...")]` for this ISA.
    pub fn target_feature_attr(self) -> TokenStream {
        let list = self.target_features().join(",");
        quote! { #[target_feature(enable = #list)] }
    }

    /// A `bool` expression: whether the running CPU has every feature of this ISA.
    pub fn detect(self) -> TokenStream {
        let checks = self
            .target_features()
            .iter()
            .map(|f| quote! { std::arch::is_x86_feature_detected!(#f) });
        quote! { (#(#checks)&&*) }
    }

    /// Rows per tile of the packed integer matrices.
    pub fn nr(self) -> usize {
        self.prims().nr()
    }

    /// The kernel family of `scheme` (an integer scheme): [`tiled::family_with`].
    pub fn family(self, scheme: Scheme) -> TokenStream {
        tiled::family_with(self.prims(), scheme)
    }

    /// The kernel of one shape: its scheme's family and the shape's entry point.
    pub fn matmul(self, shape: &MatmulShape) -> TokenStream {
        let cfg = quote! { #[cfg(target_arch = "x86_64")] };
        tiled::kernel_set(self.name(), &cfg, &[*shape], &|s| self.family(s))
    }

    /// The primitive set the tiled kernel body is instantiated with.
    pub fn prims(self) -> &'static dyn TilePrims {
        match self {
            X86Isa::Avx2 => &Avx2,
            X86Isa::Avx512Vnni => &Avx512Vnni,
        }
    }
}

impl std::fmt::Display for X86Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The helper macros of the AVX-512 families; their expansions are what [`Avx512Vnni::dot`]
/// and [`TilePrims::bcast_x4`] would emit.
const AVX512_PRELUDE: &str = r#"/// `acc` plus, per i32 lane, the dot product of the lane's 4 code bytes in `u` (u8) with the
/// 4 activation bytes at `x` (s8): one `vpdpbusd`.
#[allow(unused_macros)]
macro_rules! dot4 {
    ($acc:expr, $u:expr, $x:expr) => {
        _mm512_dpbusd_epi32($acc, $u, _mm512_set1_epi32(i32::from_le_bytes(*($x as *const [u8; 4]))))
    };
}
/// Hint the cache line at `ptr` into L2 (`prefetcht1`; never faults).
#[allow(unused_macros)]
macro_rules! prefetch_l2 {
    ($ptr:expr) => {
        _mm_prefetch::<_MM_HINT_T1>($ptr as *const i8)
    };
}"#;

/// The helper macros of the AVX2 families; their expansions are what [`Avx2::dot`] and
/// [`TilePrims::bcast_x4`] would emit.
const AVX2_PRELUDE: &str = r#"/// u4 codes: `acc` (i16 lanes) plus the pair sums of `u` (u8) times the 4 activation bytes
/// at `x` (s8). Exact for one block: see the x86 backend's notes on saturation.
#[allow(unused_macros)]
macro_rules! dot4 {
    ($acc:expr, $u:expr, $x:expr) => {
        _mm256_add_epi16($acc, _mm256_maddubs_epi16($u, _mm256_set1_epi32(i32::from_le_bytes(*($x as *const [u8; 4])))))
    };
}
/// w8 codes: `acc` (i32 lanes) plus the dot products of |q| (`u`) with the 4 activation bytes
/// at `x` carrying the sign of q (`s`).
#[allow(unused_macros)]
macro_rules! dot4_signed {
    ($acc:expr, $u:expr, $s:expr, $x:expr) => {
        _mm256_add_epi32(
            $acc,
            _mm256_madd_epi16(
                _mm256_maddubs_epi16($u, _mm256_sign_epi8(_mm256_set1_epi32(i32::from_le_bytes(*($x as *const [u8; 4]))), $s)),
                _mm256_set1_epi16(1),
            ),
        )
    };
}
/// Hint the cache line at `ptr` into L2 (`prefetcht1`; never faults).
#[allow(unused_macros)]
macro_rules! prefetch_l2 {
    ($ptr:expr) => {
        _mm_prefetch::<_MM_HINT_T1>($ptr as *const i8)
    };
}"#;

/// AVX2 primitives: 256-bit vectors, 8 i32/f32 lanes = 8 rows.
pub struct Avx2;

/// AVX-512 VNNI primitives: 512-bit vectors, 16 i32/f32 lanes = 16 rows.
pub struct Avx512Vnni;

impl TilePrims for Avx2 {
    fn name(&self) -> &'static str {
        X86Isa::Avx2.name()
    }
    fn cfg(&self) -> TokenStream {
        quote! { #[cfg(target_arch = "x86_64")] }
    }
    fn arch_import(&self) -> TokenStream {
        quote! { use std::arch::x86_64::*; }
    }
    fn target_feature(&self) -> TokenStream {
        X86Isa::Avx2.target_feature_attr()
    }
    fn detect(&self) -> TokenStream {
        X86Isa::Avx2.detect()
    }
    fn features(&self) -> String {
        X86Isa::Avx2.target_features().join(", ")
    }
    fn nr(&self) -> usize {
        8
    }
    fn mr(&self) -> usize {
        // 16 ymm registers: per token one i16/i32 accumulator and one f32 accumulator.
        4
    }
    fn int_accs(&self) -> usize {
        1
    }
    fn w8_bias(&self) -> i32 {
        0
    }
    fn ivec(&self) -> TokenStream {
        quote! { __m256i }
    }
    fn fvec(&self) -> TokenStream {
        quote! { __m256 }
    }
    fn load_i(&self, ptr: TokenStream) -> TokenStream {
        quote! { _mm256_loadu_si256(#ptr as *const __m256i) }
    }
    fn splat_i8(&self, v: i8) -> TokenStream {
        quote! { _mm256_set1_epi8(#v) }
    }
    fn splat_i32(&self, e: TokenStream) -> TokenStream {
        quote! { _mm256_set1_epi32(#e) }
    }
    fn and_i(&self, a: TokenStream, b: TokenStream) -> TokenStream {
        quote! { _mm256_and_si256(#a, #b) }
    }
    fn srli16_4(&self, a: TokenStream) -> TokenStream {
        quote! { _mm256_srli_epi16::<4>(#a) }
    }
    fn sub_i32(&self, a: TokenStream, b: TokenStream) -> TokenStream {
        quote! { _mm256_sub_epi32(#a, #b) }
    }
    fn acc_zero(&self, _kind: DotKind) -> TokenStream {
        quote! { _mm256_setzero_si256() }
    }
    fn w8_signed(&self, v: TokenStream) -> Option<TokenStream> {
        // Back to the s8 weight q (its sign goes onto x) ...
        Some(quote! { _mm256_xor_si256(#v, _mm256_set1_epi8(-128)) })
    }
    fn w8_unsigned(&self, _v: TokenStream, s: Option<TokenStream>) -> TokenStream {
        // ... and |q| is the unsigned operand.
        let s = s.expect("AVX2 w8 has a signed operand");
        quote! { _mm256_abs_epi8(#s) }
    }
    fn dot(
        &self,
        kind: DotKind,
        acc: TokenStream,
        u: TokenStream,
        s: Option<TokenStream>,
        x: TokenStream,
    ) -> TokenStream {
        match kind {
            // i16 accumulation: exact for one block (see the module docs).
            DotKind::U4 => quote! { _mm256_add_epi16(#acc, _mm256_maddubs_epi16(#u, #x)) },
            DotKind::W8 => {
                let s = s.expect("AVX2 w8 needs the sign operand");
                quote! {
                    _mm256_add_epi32(#acc, _mm256_madd_epi16(_mm256_maddubs_epi16(#u, _mm256_sign_epi8(#x, #s)), _mm256_set1_epi16(1)))
                }
            }
        }
    }
    fn dot_x4(
        &self,
        kind: DotKind,
        acc: TokenStream,
        u: TokenStream,
        s: Option<TokenStream>,
        ptr: TokenStream,
    ) -> TokenStream {
        match (kind, s) {
            (DotKind::U4, _) => quote! { dot4!(#acc, #u, #ptr) },
            (DotKind::W8, s) => {
                let s = s.expect("AVX2 w8 needs the sign operand");
                quote! { dot4_signed!(#acc, #u, #s, #ptr) }
            }
        }
    }
    fn prelude(&self) -> Option<&'static str> {
        Some(AVX2_PRELUDE)
    }
    fn acc_sum(&self, kind: DotKind, accs: &[TokenStream]) -> TokenStream {
        let [acc] = accs else {
            panic!("AVX2 uses one accumulator")
        };
        match kind {
            DotKind::U4 => quote! { _mm256_madd_epi16(#acc, _mm256_set1_epi16(1)) },
            DotKind::W8 => quote! { #acc },
        }
    }
    fn prefetch(&self, ptr: TokenStream) -> Option<TokenStream> {
        Some(quote! { prefetch_l2!(#ptr) })
    }
    fn zero_f(&self) -> TokenStream {
        quote! { _mm256_setzero_ps() }
    }
    fn splat_f32(&self, e: TokenStream) -> TokenStream {
        quote! { _mm256_set1_ps(#e) }
    }
    fn cvt_f32(&self, a: TokenStream) -> TokenStream {
        quote! { _mm256_cvtepi32_ps(#a) }
    }
    fn mul_f(&self, a: TokenStream, b: TokenStream) -> TokenStream {
        quote! { _mm256_mul_ps(#a, #b) }
    }
    fn fma_f(&self, a: TokenStream, b: TokenStream, c: TokenStream) -> TokenStream {
        quote! { _mm256_fmadd_ps(#a, #b, #c) }
    }
    fn load_f32(&self, ptr: TokenStream) -> TokenStream {
        quote! { _mm256_loadu_ps(#ptr) }
    }
    fn load_f16(&self, ptr: TokenStream) -> TokenStream {
        quote! { _mm256_cvtph_ps(_mm_loadu_si128(#ptr as *const __m128i)) }
    }
    fn store_f32(&self, ptr: TokenStream, v: TokenStream) -> TokenStream {
        quote! { _mm256_storeu_ps(#ptr, #v) }
    }
}

impl TilePrims for Avx512Vnni {
    fn name(&self) -> &'static str {
        X86Isa::Avx512Vnni.name()
    }
    fn cfg(&self) -> TokenStream {
        quote! { #[cfg(target_arch = "x86_64")] }
    }
    fn arch_import(&self) -> TokenStream {
        quote! { use std::arch::x86_64::*; }
    }
    fn target_feature(&self) -> TokenStream {
        X86Isa::Avx512Vnni.target_feature_attr()
    }
    fn detect(&self) -> TokenStream {
        X86Isa::Avx512Vnni.detect()
    }
    fn features(&self) -> String {
        X86Isa::Avx512Vnni.target_features().join(", ")
    }
    fn nr(&self) -> usize {
        16
    }
    fn mr(&self) -> usize {
        // 32 zmm registers: per token one i32 and one f32 accumulator (16), a block's step
        // vectors (8) and constants. Measured on the dev checkpoint (w4g32, 2 threads): 8
        // tokens with one vpdpbusd chain each prefill 433 tok/s, 4 tokens with two chains 411.
        8
    }
    fn int_accs(&self) -> usize {
        // Eight tokens are eight independent chains (vpdpbusd latency 5, throughput 1).
        1
    }
    fn w8_bias(&self) -> i32 {
        128
    }
    fn ivec(&self) -> TokenStream {
        quote! { __m512i }
    }
    fn fvec(&self) -> TokenStream {
        quote! { __m512 }
    }
    fn load_i(&self, ptr: TokenStream) -> TokenStream {
        quote! { _mm512_loadu_si512(#ptr as *const _) }
    }
    fn splat_i8(&self, v: i8) -> TokenStream {
        quote! { _mm512_set1_epi8(#v) }
    }
    fn splat_i32(&self, e: TokenStream) -> TokenStream {
        quote! { _mm512_set1_epi32(#e) }
    }
    fn and_i(&self, a: TokenStream, b: TokenStream) -> TokenStream {
        quote! { _mm512_and_si512(#a, #b) }
    }
    fn srli16_4(&self, a: TokenStream) -> TokenStream {
        quote! { _mm512_srli_epi16::<4>(#a) }
    }
    fn sub_i32(&self, a: TokenStream, b: TokenStream) -> TokenStream {
        quote! { _mm512_sub_epi32(#a, #b) }
    }
    fn acc_zero(&self, _kind: DotKind) -> TokenStream {
        quote! { _mm512_setzero_si512() }
    }
    fn w8_signed(&self, _v: TokenStream) -> Option<TokenStream> {
        None
    }
    fn w8_unsigned(&self, v: TokenStream, _s: Option<TokenStream>) -> TokenStream {
        // The stored q + 128 is the unsigned operand as is; the body subtracts 128·Σx.
        v
    }
    fn dot(
        &self,
        _kind: DotKind,
        acc: TokenStream,
        u: TokenStream,
        _s: Option<TokenStream>,
        x: TokenStream,
    ) -> TokenStream {
        quote! { _mm512_dpbusd_epi32(#acc, #u, #x) }
    }
    fn dot_x4(
        &self,
        _kind: DotKind,
        acc: TokenStream,
        u: TokenStream,
        _s: Option<TokenStream>,
        ptr: TokenStream,
    ) -> TokenStream {
        quote! { dot4!(#acc, #u, #ptr) }
    }
    fn prelude(&self) -> Option<&'static str> {
        Some(AVX512_PRELUDE)
    }
    fn acc_sum(&self, _kind: DotKind, accs: &[TokenStream]) -> TokenStream {
        match accs {
            [a] => quote! { #a },
            [a, b] => quote! { _mm512_add_epi32(#a, #b) },
            _ => panic!("AVX-512 uses one or two accumulators"),
        }
    }
    fn prefetch(&self, ptr: TokenStream) -> Option<TokenStream> {
        Some(quote! { prefetch_l2!(#ptr) })
    }
    fn matrix_unit(&self) -> Option<MatrixUnit> {
        // AMX where the CPU and OS have it (qwenc_runtime::amx), checked at run time: the
        // same executable runs its register passes on a CPU without.
        Some(MatrixUnit {
            tokens: 16,
            enabled: quote! { qwenc_runtime::amx::enabled() },
            enter: quote! { qwenc_runtime::amx::configure() },
            leave: quote! { qwenc_runtime::amx::release() },
            status: quote! { qwenc_runtime::amx::status() },
            prims: &Amx,
        })
    }
    fn zero_f(&self) -> TokenStream {
        quote! { _mm512_setzero_ps() }
    }
    fn splat_f32(&self, e: TokenStream) -> TokenStream {
        quote! { _mm512_set1_ps(#e) }
    }
    fn cvt_f32(&self, a: TokenStream) -> TokenStream {
        quote! { _mm512_cvtepi32_ps(#a) }
    }
    fn mul_f(&self, a: TokenStream, b: TokenStream) -> TokenStream {
        quote! { _mm512_mul_ps(#a, #b) }
    }
    fn fma_f(&self, a: TokenStream, b: TokenStream, c: TokenStream) -> TokenStream {
        quote! { _mm512_fmadd_ps(#a, #b, #c) }
    }
    fn load_f32(&self, ptr: TokenStream) -> TokenStream {
        quote! { _mm512_loadu_ps(#ptr) }
    }
    fn load_f16(&self, ptr: TokenStream) -> TokenStream {
        quote! { _mm512_cvtph_ps(_mm256_loadu_si256(#ptr as *const __m256i)) }
    }
    fn store_f32(&self, ptr: TokenStream, v: TokenStream) -> TokenStream {
        quote! { _mm512_storeu_ps(#ptr, #v) }
    }
}

/// AMX int8 tiles: the matrix unit of the AVX-512 backend (`qwenc_runtime::amx`).
pub struct Amx;

impl UnitPrims for Amx {
    fn setup(&self, kind: DotKind, asymmetric: bool) -> TokenStream {
        let consts = match kind {
            DotKind::U4 if asymmetric => quote! { let nibble = _mm512_set1_epi8(0x0f); },
            DotKind::U4 => quote! {
                let nibble = _mm512_set1_epi8(0x0f);
                let eight = _mm512_set1_epi8(8);
            },
            DotKind::W8 => quote! { let flip = _mm512_set1_epi8(-128); },
        };
        quote! {
            #consts
            __note!("Per slot: the block's codes as AMX's B tile; the i32 results of one block.");
            let mut bt = [qwenc_runtime::amx::TileBuf::<512>::new(), qwenc_runtime::amx::TileBuf::<512>::new()];
            let mut ct = qwenc_runtime::amx::TileBuf::<1024>::new();
        }
    }
    fn start(&self, kind: DotKind, asymmetric: bool, slot: usize) -> TokenStream {
        let stage = match kind {
            // Step vector k's low nibbles are columns 8k..8k+4 of the 16 rows, 4 per i32
            // lane: B tile row 2k; the high nibbles are row 2k + 1. Symmetric codes become
            // signed (code − 8) so that the product needs no Σx correction.
            DotKind::U4 => {
                let signed = |e: TokenStream| {
                    if asymmetric {
                        e
                    } else {
                        quote! { _mm512_sub_epi8(#e, eight) }
                    }
                };
                let (lo, hi) = (
                    signed(quote! { _mm512_and_si512(v, nibble) }),
                    signed(quote! { _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble) }),
                );
                quote! {
                    for k in 0..4 {
                        let v = _mm512_loadu_si512(c.add(64 * k) as *const _);
                        _mm512_store_si512(bp.add(128 * k) as *mut _, #lo);
                        _mm512_store_si512(bp.add(128 * k + 64) as *mut _, #hi);
                    }
                }
            }
            // w8 step vector k is B tile row k; stored q + 128, so xor 0x80 gives q.
            DotKind::W8 => quote! {
                for k in 0..8 {
                    let v = _mm512_loadu_si512(c.add(64 * k) as *const _);
                    _mm512_store_si512(bp.add(64 * k) as *mut _, _mm512_xor_si512(v, flip));
                }
            },
        };
        let signed = kind == DotKind::W8 || !asymmetric;
        let slot = lit(slot);
        quote! {
            let bp = bt[#slot].0.as_mut_ptr();
            #stage
            qwenc_runtime::amx::start::<#slot, #signed>(xb, COLS, bp);
        }
    }
    fn finish(&self, slot: usize) -> TokenStream {
        let slot = lit(slot);
        quote! { qwenc_runtime::amx::finish::<#slot>(ct.0.as_mut_ptr()); }
    }
}
