//! The code generator: plan + packed layout + backend in, Rust source out.
//!
//! `generate` is a pure function: the same inputs give byte-identical files (everything goes
//! through `prettyplease`; maps are ordered). Kernel names come from one place,
//! [`kernel_name`]: `{backend}_matmul_{scheme}_{rows}x{cols}`.

pub mod aarch64;
mod embed;
pub mod format;
pub mod kernel_tests;
mod ops;
pub mod scalar;
pub mod tiled;
pub mod x86;
pub mod x86_float;

use std::collections::BTreeMap;

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use crate::compile::pack::Packed;
use crate::compile::plan::{FusedMatrix, LayerMatrix, MatmulShape, Plan};
use crate::quant::Scheme;
use aarch64::ArmIsa;
use x86::X86Isa;

pub const CODEGEN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Backends the generator can emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Portable Rust: the reference for every other backend.
    Scalar,
    /// x86_64 SIMD for the integer schemes (tiled layout) and f32 (FMA); bf16 runs scalar kernels.
    X86(X86Isa),
    /// aarch64 NEON dotprod / i8mm / SVE2 for the integer schemes (same tiled layout).
    Arm(ArmIsa),
}

impl Backend {
    /// The matrix unit (AMX) that the backend's prefill passes use where the CPU has it.
    pub fn matrix_unit(self) -> Option<tiled::MatrixUnit> {
        match self {
            Backend::Scalar => None,
            Backend::X86(isa) => isa.prims().matrix_unit(),
            Backend::Arm(isa) => isa.prims().and_then(|p| p.matrix_unit()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Scalar => scalar::BACKEND,
            Backend::X86(isa) => isa.name(),
            Backend::Arm(isa) => isa.name(),
        }
    }

    /// `QWENC_TARGET`: `scalar`, `x86-avx2`, `x86-avx512`, `aarch64-neon`, `aarch64-i8mm`,
    /// `aarch64-sve2` (128-bit vectors), `aarch64-sve2-256`, `aarch64-sve2-512`, or `native`
    /// (the best backend the build machine supports for `target_arch`, the arch being
    /// compiled for). A backend for another arch than `target_arch` is refused.
    pub fn parse(s: &str, target_arch: &str) -> Result<Backend, String> {
        let backend = match s {
            "scalar" => return Ok(Backend::Scalar),
            "native" => return Ok(Backend::native(target_arch)),
            other => X86Isa::ALL
                .into_iter()
                .find(|isa| isa.name() == other)
                .map(Backend::X86)
                .or_else(|| ArmIsa::ALL.into_iter().find(|isa| isa.name() == other).map(Backend::Arm))
                .ok_or_else(|| {
                    format!(
                        "unknown target `{other}` (available: native, scalar, x86-avx2, x86-avx512, aarch64-neon, aarch64-i8mm, aarch64-sve2, aarch64-sve2-256, aarch64-sve2-512)"
                    )
                })?,
        };
        let arch = match backend {
            Backend::X86(_) => "x86_64",
            Backend::Arm(_) => "aarch64",
            Backend::Scalar => target_arch,
        };
        if arch != target_arch {
            return Err(format!("target `{s}` is for {arch}, but this build compiles for {target_arch} (pick a {target_arch} backend, scalar, or native)"));
        }
        Ok(backend)
    }

    /// The best backend this machine runs, when it is also the machine compiled for.
    pub fn native(target_arch: &str) -> Backend {
        #[cfg(target_arch = "x86_64")]
        if target_arch == "x86_64" {
            for isa in [X86Isa::Avx512Vnni, X86Isa::Avx2] {
                if isa.target_features().iter().all(|f| host_has_feature(f)) {
                    return Backend::X86(isa);
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        if target_arch == "aarch64" {
            let detected = |isa: ArmIsa| isa.target_features().iter().all(|f| host_has_feature(f));
            if detected(ArmIsa::I8mm) {
                return Backend::Arm(ArmIsa::I8mm);
            }
            if detected(ArmIsa::Neon) {
                return Backend::Arm(ArmIsa::Neon);
            }
        }
        let _ = target_arch;
        Backend::Scalar
    }

    /// Rows per tile of the packed integer matrices, for tiled backends.
    pub fn tile_rows(self) -> Option<usize> {
        match self {
            Backend::Scalar => None,
            Backend::X86(isa) => Some(isa.nr()),
            Backend::Arm(isa) => Some(isa.nr()),
        }
    }

    /// The backend whose kernel runs a matmul in `scheme` (tiled backends hand float schemes
    /// to the scalar kernels).
    fn kernel_backend(self, scheme: Scheme) -> Backend {
        match (self, scheme) {
            (Backend::X86(_) | Backend::Arm(_), Scheme::F32 | Scheme::Bf16) => Backend::Scalar,
            _ => self,
        }
    }

    /// The backend whose matmul kernel runs `shape`: as [`Backend::kernel_backend`], except
    /// that x86 multiplies f32 weights (still in the scalar layout) with its FMA kernels.
    fn matmul_backend(self, shape: &MatmulShape) -> Backend {
        match self {
            Backend::X86(isa) if x86_float::supports(isa, shape) => self,
            _ => self.kernel_backend(shape.scheme),
        }
    }

    /// The matmul kernels of `shapes`: scalar and f32 kernels per shape; the tiled kernels
    /// as one family per scheme (generic over the shape) and an entry point per shape.
    fn matmuls(self, shapes: &[MatmulShape]) -> TokenStream {
        let mut out = TokenStream::new();
        let mut tiled_shapes = Vec::new();
        for shape in shapes {
            match self.matmul_backend(shape) {
                Backend::Scalar => out.extend(scalar::matmul(shape)),
                Backend::X86(isa) if shape.scheme == Scheme::F32 => {
                    out.extend(x86_float::matmul_f32(isa, shape))
                }
                Backend::X86(_) | Backend::Arm(_) => tiled_shapes.push(*shape),
            }
        }
        let tiled = match self {
            Backend::X86(isa) => {
                let cfg = quote! { #[cfg(target_arch = "x86_64")] };
                tiled::kernel_set(isa.name(), &cfg, &tiled_shapes, &|s| isa.family(s))
            }
            Backend::Arm(isa) => {
                let cfg = quote! { #[cfg(target_arch = "aarch64")] };
                tiled::kernel_set(isa.name(), &cfg, &tiled_shapes, &|s| isa.family(s))
            }
            Backend::Scalar => TokenStream::new(),
        };
        out.extend(tiled);
        out
    }

    /// `pub fn check_cpu() -> Result<(), String>`: the start-up check that this CPU runs the
    /// kernels compiled in.
    fn cpu_check(self) -> TokenStream {
        match self {
            Backend::Scalar => quote! {
                /// The scalar backend runs everywhere.
                pub fn check_cpu() -> Result<(), String> {
                    Ok(())
                }
            },
            Backend::X86(isa) => {
                let features = isa
                    .target_features()
                    .iter()
                    .map(|f| quote! { std::arch::is_x86_feature_detected!(#f) });
                let check = quote! { let ok = #(#features)&&*; };
                let message = format!(
                    "this executable was compiled for {} ({}), which this CPU lacks: rebuild with QWENC_TARGET=x86-avx2 or QWENC_TARGET=scalar",
                    isa.name(),
                    isa.target_features().join(", ")
                );
                quote! {
                    /// Whether this CPU has every instruction the kernels use.
                    #[cfg(target_arch = "x86_64")]
                    pub fn check_cpu() -> Result<(), String> {
                        #check
                        if ok { Ok(()) } else { Err(#message.to_string()) }
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    pub fn check_cpu() -> Result<(), String> {
                        Err(#message.to_string())
                    }
                }
            }
            Backend::Arm(isa) => {
                let detect = isa.detect();
                let message = format!(
                    "this executable was compiled for {} ({}), which this CPU lacks: rebuild with QWENC_TARGET=aarch64-neon, another aarch64 backend, or QWENC_TARGET=scalar",
                    isa.name(),
                    isa.requirement()
                );
                quote! {
                    /// Whether this CPU has every instruction the kernels use (and, for SVE, the
                    /// vector length they were built for).
                    #[cfg(target_arch = "aarch64")]
                    pub fn check_cpu() -> Result<(), String> {
                        #[allow(unused_parens)]
                        let ok = #detect;
                        if ok { Ok(()) } else { Err(#message.to_string()) }
                    }
                    #[cfg(not(target_arch = "aarch64"))]
                    pub fn check_cpu() -> Result<(), String> {
                        Err(#message.to_string())
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn host_has_feature(feature: &str) -> bool {
    match feature {
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        "f16c" => std::arch::is_x86_feature_detected!("f16c"),
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
        _ => false,
    }
}

#[cfg(target_arch = "aarch64")]
fn host_has_feature(feature: &str) -> bool {
    match feature {
        "neon" => std::arch::is_aarch64_feature_detected!("neon"),
        "dotprod" => std::arch::is_aarch64_feature_detected!("dotprod"),
        "i8mm" => std::arch::is_aarch64_feature_detected!("i8mm"),
        _ => false,
    }
}

/// What the generated file says about where it came from.
#[derive(Clone, Debug)]
pub struct ModelMeta {
    pub name: String,
    pub weights_len: u64,
    pub weights_hash: u64,
}

pub fn lit(n: usize) -> Literal {
    Literal::usize_unsuffixed(n)
}

/// The one place kernel names are made.
pub fn kernel_name(backend: &str, shape: &MatmulShape) -> Ident {
    format_ident!(
        "{}_matmul_{}_{}x{}",
        backend.replace('-', "_"),
        shape.scheme.to_string(),
        shape.rows,
        shape.cols
    )
}

/// Generate `model.rs` for `plan` with weights laid out as `packed`.
pub fn generate(
    plan: &Plan,
    packed: &Packed,
    backend: Backend,
    meta: &ModelMeta,
) -> BTreeMap<String, String> {
    let c = &plan.config;
    let shapes: Vec<MatmulShape> = plan.matmul_shapes().into_iter().collect();
    let kernels = backend.matmuls(&shapes);
    // A tied embedding is the lm_head matrix, in the lm_head kernel's layout.
    let embed_row = match crate::compile::pack::matrix_tile_rows(
        plan,
        &plan.embed,
        backend.kernel_backend(plan.embed.shape.scheme).tile_rows(),
    ) {
        Some(nr) => embed::tiled(&plan.embed.shape, nr),
        None => scalar::embed_row(&plan.embed.shape),
    };
    let cpu_check = backend.cpu_check();

    let consts = constants(plan, backend, meta);
    let offsets = offsets(plan, packed);
    let rope = rope_table(c.head_dim, c.rope_theta);
    let forward = forward(plan, backend);
    let ops = ops::ops(backend, c.hidden_size);

    let file = quote! {
        use qwenc_runtime::kernel_support::{par_outputs, Q8Acts, Q8_BLOCK};
        use qwenc_runtime::model::{ForwardError, KvCache, LogitsFor, Segment};
        use qwenc_runtime::weights::{bf16_to_f32, f16_to_f32, view};

        #consts
        #rope
        #offsets

        /// Where one matrix's packed parts start in the weights (unused parts are 0).
        #[derive(Clone, Copy, Debug)]
        pub struct MatrixAt {
            pub w: usize,
            pub q: usize,
            pub scale: usize,
            pub min: usize,
        }

        impl MatrixAt {
            /// Byte offsets of the parts `w`, `q`, `scale`, `min` (0 for a part it lacks).
            pub const fn new(w: usize, q: usize, scale: usize, min: usize) -> MatrixAt {
                MatrixAt { w, q, scale, min }
            }
        }

        #cpu_check

        #forward

        __note!("---- Kernels -------------------------------------------------------------------------");
        #embed_row
        #kernels

        #ops
    };
    let header = format!(
        "// @generated by qwenc-codegen {CODEGEN_VERSION}. Do not edit.\n\
         // model: {} · weights: {} bytes, hash {:016x} · schemes: {} · backend: {}\n\n",
        meta.name,
        meta.weights_len,
        meta.weights_hash,
        plan.schemes_label(),
        backend.name()
    );
    let mut files = BTreeMap::new();
    files.insert("model.rs".to_string(), header + &format::format_file(file));
    files
}

fn constants(plan: &Plan, backend: Backend, meta: &ModelMeta) -> TokenStream {
    let c = &plan.config;
    let (hidden, q_dim, kv_dim, head_dim) = (
        lit(c.hidden_size),
        lit(c.q_dim()),
        lit(c.kv_dim()),
        lit(c.head_dim),
    );
    let (heads, kv_heads, ffn, vocab) = (
        lit(c.num_attention_heads),
        lit(c.num_key_value_heads),
        lit(c.intermediate_size),
        lit(c.vocab_size),
    );
    let (layers, max_ctx) = (lit(c.num_hidden_layers), lit(c.max_position_embeddings));
    let eps = Literal::f32_suffixed(c.rms_norm_eps);
    let eos: Vec<Literal> = c
        .eos_token_ids
        .iter()
        .map(|&i| Literal::u32_unsuffixed(i))
        .collect();
    let n_eos = lit(eos.len());
    let (wlen, whash) = (
        Literal::u64_unsuffixed(meta.weights_len),
        Literal::u64_unsuffixed(meta.weights_hash),
    );
    let (name, scheme, backend_name) = (&meta.name, plan.schemes_label(), backend.name());
    let unit = match backend.matrix_unit() {
        Some(unit) => {
            let status = unit.status;
            quote! { Some(#status) }
        }
        None => quote! { None },
    };
    quote! {
        pub const MODEL_NAME: &str = #name;
        pub const SCHEMES: &str = #scheme;
        pub const BACKEND: &str = #backend_name;
        /// Whether this CPU runs the prefill passes on a matrix unit (AMX), for `info`; `None`
        /// when the backend has none.
        pub fn matrix_unit_status() -> Option<&'static str> {
            #unit
        }
        pub const HIDDEN: usize = #hidden;
        pub const Q_DIM: usize = #q_dim;
        pub const KV_DIM: usize = #kv_dim;
        pub const HEAD_DIM: usize = #head_dim;
        pub const N_HEADS: usize = #heads;
        pub const N_KV_HEADS: usize = #kv_heads;
        pub const FFN: usize = #ffn;
        pub const VOCAB: usize = #vocab;
        pub const LAYERS: usize = #layers;
        pub const MAX_CONTEXT: usize = #max_ctx;
        pub const RMS_EPS: f32 = #eps;
        pub const EOS_TOKEN_IDS: [u32; #n_eos] = [#(#eos),*];
        /// Rows of the fused q/k/v matrix.
        pub const QKV_ROWS: usize = Q_DIM + 2 * KV_DIM;
        pub const WEIGHTS_LEN: u64 = #wlen;
        pub const WEIGHTS_HASH: u64 = #whash;
        const _: () = assert!(N_HEADS % N_KV_HEADS == 0 && HIDDEN % Q8_BLOCK == 0 && FFN % Q8_BLOCK == 0);
    }
}

/// `1 / θ^(2i / d)` in f32, computed as transformers does, baked in as a table.
fn rope_table(head_dim: usize, theta: f32) -> TokenStream {
    let values: Vec<Literal> = (0..head_dim / 2)
        .map(|i| Literal::f32_suffixed(1.0 / theta.powf((2 * i) as f32 / head_dim as f32)))
        .collect();
    let half = lit(head_dim / 2);
    quote! {
        /// RoPE's inverse frequencies `1 / θ^(2i / HEAD_DIM)`, in f32 as transformers computes them.
        const ROPE_INV_FREQ: [f32; #half] = [#(#values),*];
    }
}

fn matrix_at(packed: &Packed, m: &FusedMatrix) -> TokenStream {
    let get = |part: &str| {
        lit(packed
            .regions
            .get(&format!("{}.{part}", m.name))
            .map_or(0, |r| r.offset))
    };
    let (w, q, scale, min) = (get("w"), get("q"), get("scale"), get("min"));
    quote! { MatrixAt::new(#w, #q, #scale, #min) }
}

fn offsets(plan: &Plan, packed: &Packed) -> TokenStream {
    let per_layer = |m: LayerMatrix| -> Vec<TokenStream> {
        plan.layers
            .iter()
            .map(|l| matrix_at(packed, l.get(m)))
            .collect()
    };
    let (qkv, o, gate_up, down) = (
        per_layer(LayerMatrix::Qkv),
        per_layer(LayerMatrix::OProj),
        per_layer(LayerMatrix::GateUp),
        per_layer(LayerMatrix::Down),
    );
    let vector = |suffix: &str| -> Vec<Literal> {
        (0..plan.config.num_hidden_layers)
            .map(|l| lit(packed.region(&format!("layers.{l}.{suffix}")).offset))
            .collect()
    };
    let (attn_norm, qkv_bias, mlp_norm) =
        (vector("attn_norm"), vector("qkv_bias"), vector("mlp_norm"));
    let final_norm = lit(packed.region("final_norm").offset);
    let embed = matrix_at(packed, &plan.embed);
    let lm_head = matrix_at(packed, plan.lm_head.as_ref().unwrap_or(&plan.embed));
    let tables = kernel_tables(plan);
    quote! {
        __note!("---- Packed weight offsets (bytes) -----------------------------------------------------");
        const QKV: [MatrixAt; LAYERS] = [#(#qkv),*];
        const O_PROJ: [MatrixAt; LAYERS] = [#(#o),*];
        const GATE_UP: [MatrixAt; LAYERS] = [#(#gate_up),*];
        const DOWN: [MatrixAt; LAYERS] = [#(#down),*];
        const ATTN_NORM: [usize; LAYERS] = [#(#attn_norm),*];
        const QKV_BIAS: [usize; LAYERS] = [#(#qkv_bias),*];
        const MLP_NORM: [usize; LAYERS] = [#(#mlp_norm),*];
        const FINAL_NORM: usize = #final_norm;
        const EMBED: MatrixAt = #embed;
        /// The embedding when tied.
        const LM_HEAD: MatrixAt = #lm_head;
        #tables
    }
}

/// A call of the matmul for `shape`, quantizing the f32 input first for integer schemes.
fn matmul_call(
    backend: Backend,
    shape: &MatmulShape,
    at: TokenStream,
    x: TokenStream,
    y: TokenStream,
) -> TokenStream {
    let kernel = kernel_name(backend.matmul_backend(shape).name(), shape);
    let cols = lit(shape.cols);
    match shape.scheme {
        Scheme::F32 | Scheme::Bf16 => quote! { #kernel(w, &#at, #x, #y) },
        Scheme::W8 | Scheme::W4 { .. } | Scheme::W8Grouped { .. } | Scheme::Narrow { .. } => {
            quote! { #kernel(w, &#at, &Q8Acts::quantize(#x, #cols), #y) }
        }
    }
}

/// The per-layer kernel table of the layers' matrix `m`.
fn kernel_table(m: LayerMatrix) -> Ident {
    format_ident!("{}_KERNEL", m.name().to_uppercase())
}

/// `KERNEL[l]`: which kernel each layer's matrix `m` calls, for the matrices whose layers
/// use more than one scheme (mixed precision); nothing for a uniform one.
fn kernel_tables(plan: &Plan) -> TokenStream {
    let mut out = TokenStream::new();
    for m in LayerMatrix::ALL {
        let (shapes, index) = plan.layer_kernels(m);
        if shapes.len() > 1 {
            let ident = kernel_table(m);
            let index = index.into_iter().map(|k| Literal::u8_unsuffixed(k as u8));
            let doc = format!(
                " Per layer, the kernel of its matrix: {}.",
                shapes
                    .iter()
                    .enumerate()
                    .map(|(k, s)| format!("{k} = {}", s.scheme))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            out.extend(quote! {
                #[doc = #doc]
                const #ident: [u8; LAYERS] = [#(#index),*];
            });
        }
    }
    out
}

/// The call of layer `l`'s matrix `m`: one kernel when every layer shares its scheme, else a
/// `match` on its kernel table.
fn layer_call(
    plan: &Plan,
    backend: Backend,
    m: LayerMatrix,
    at: TokenStream,
    x: TokenStream,
    y: TokenStream,
) -> TokenStream {
    let shapes = plan.layer_shapes(m);
    if shapes.len() == 1 {
        return matmul_call(backend, &shapes[0], at, x, y);
    }
    let table = kernel_table(m);
    let arms = shapes.iter().enumerate().map(|(k, s)| {
        let k = Literal::u8_unsuffixed(k as u8);
        let call = matmul_call(backend, s, at.clone(), x.clone(), y.clone());
        quote! { #k => #call, }
    });
    quote! {
        match #table[l] {
            #(#arms)*
            _ => unreachable!(),
        }
    }
}

fn forward(plan: &Plan, backend: Backend) -> TokenStream {
    let lm_head = plan.lm_head.as_ref().unwrap_or(&plan.embed);
    let qkv_call = layer_call(
        plan,
        backend,
        LayerMatrix::Qkv,
        quote!(QKV[l]),
        quote!(&h),
        quote!(&mut qkv),
    );
    let o_call = layer_call(
        plan,
        backend,
        LayerMatrix::OProj,
        quote!(O_PROJ[l]),
        quote!(&attn),
        quote!(&mut proj),
    );
    let gate_up_call = layer_call(
        plan,
        backend,
        LayerMatrix::GateUp,
        quote!(GATE_UP[l]),
        quote!(&h),
        quote!(&mut gate_up),
    );
    let down_call = layer_call(
        plan,
        backend,
        LayerMatrix::Down,
        quote!(DOWN[l]),
        quote!(&act),
        quote!(&mut proj),
    );
    let head_call = matmul_call(
        backend,
        &lm_head.shape,
        quote!(LM_HEAD),
        quote!(&last),
        quote!(&mut logits[at..]),
    );
    quote! {
        /// Run `tokens` at positions `cache.len..`, extend the cache, return logits `[rows, VOCAB]`.
        pub fn forward(w: &[u8], cache: &mut KvCache, tokens: &[u32], logits_for: LogitsFor) -> Result<Vec<f32>, ForwardError> {
            let mut logits = Vec::new();
            forward_into(w, cache, tokens, logits_for, &mut logits)?;
            Ok(logits)
        }

        /// [`forward`] into `logits` (replacing its contents): decode keeps one buffer instead
        /// of allocating and zeroing `VOCAB` floats per token.
        pub fn forward_into(w: &[u8], cache: &mut KvCache, tokens: &[u32], logits_for: LogitsFor, logits: &mut Vec<f32>) -> Result<(), ForwardError> {
            let mut segments = [Segment { cache, tokens, logits_for }];
            forward_segments(w, &mut segments, std::slice::from_mut(logits))
        }

        /// Several sequences in one pass over the weights: segment `i`'s tokens run at positions
        /// `cache.len..` of its own cache, and `logits[i]` (replaced) receives its logits as its
        /// `logits_for` asks. The matrix products take the rows of every segment at once, so the
        /// weights are read once per pass for all of them; attention reads each row's own cache.
        /// No row's numbers depend on another row, so each segment's logits are bit-identical
        /// to running it alone. When a segment is refused, no cache changes.
        pub fn forward_segments(w: &[u8], segments: &mut [Segment<'_>], logits: &mut [Vec<f32>]) -> Result<(), ForwardError> {
            assert_eq!(segments.len(), logits.len(), "one logits buffer per segment");
            for s in segments.iter() {
                qwenc_runtime::model::check_tokens(s.cache, s.tokens, VOCAB, MAX_CONTEXT)?;
            }
            for l in logits.iter_mut() {
                l.clear();
            }
            let lens: Vec<usize> = segments.iter().map(|s| s.tokens.len()).collect();
            let wants: Vec<LogitsFor> = segments.iter().map(|s| s.logits_for).collect();
            __note!("Long inputs run in passes of at most `prefill_chunk()` tokens per segment: the");
            __note!("activations (~110 kB per token) then stay bounded, at the price of reading the");
            __note!("weights once more per pass.");
            let chunk = qwenc_runtime::model::prefill_chunk();
            let mut done = vec![0usize; segments.len()];
            loop {
                __note!("This pass: the next tokens of every segment that has some left.");
                let mut runs: Vec<Run<'_>> = Vec::with_capacity(segments.len());
                let mut owners: Vec<usize> = Vec::with_capacity(segments.len());
                for (i, s) in segments.iter_mut().enumerate() {
                    let take = (lens[i] - done[i]).min(chunk);
                    if take > 0 {
                        let tokens: &[u32] = s.tokens;
                        runs.push(Run { cache: &mut *s.cache, tokens: &tokens[done[i]..done[i] + take] });
                        owners.push(i);
                        done[i] += take;
                    }
                }
                if runs.is_empty() {
                    return Ok(());
                }
                __note!("[rows, HIDDEN]: the runs' rows one after another.");
                let x = layers(w, &mut runs);
                __note!("The rows that need logits, per segment: (segment, first row, rows).");
                let mut picks: Vec<(usize, usize, usize)> = Vec::with_capacity(runs.len());
                let mut row = 0;
                for (run, &i) in runs.iter().zip(&owners) {
                    let m = run.tokens.len();
                    match wants[i] {
                        LogitsFor::All => picks.push((i, row, m)),
                        LogitsFor::Last if done[i] == lens[i] => picks.push((i, row + m - 1, 1)),
                        LogitsFor::Last | LogitsFor::None => {}
                    }
                    row += m;
                }
                match picks.as_slice() {
                    [] => {}
                    &[(i, first, m)] => head(w, &x[first * HIDDEN..(first + m) * HIDDEN], &mut logits[i]),
                    _ => {
                        __note!("Several segments: one lm_head pass over all their rows, so that a batch of");
                        __note!("decoding sequences reads the head's weights once, not once per sequence.");
                        __note!("[picked rows, HIDDEN]");
                        let mut sel = Vec::with_capacity(picks.iter().map(|p| p.2).sum::<usize>() * HIDDEN);
                        for &(_, first, m) in &picks {
                            sel.extend_from_slice(&x[first * HIDDEN..(first + m) * HIDDEN]);
                        }
                        __note!("[picked rows, VOCAB]");
                        let mut all = Vec::new();
                        head(w, &sel, &mut all);
                        let mut at = 0;
                        for &(i, _, m) in &picks {
                            logits[i].extend_from_slice(&all[at * VOCAB..(at + m) * VOCAB]);
                            at += m;
                        }
                    }
                }
            }
        }

        /// One pass's share of a segment: `tokens` at positions `cache.len..` of `cache`.
        struct Run<'a> {
            cache: &'a mut KvCache,
            tokens: &'a [u32],
        }

        /// The decoder layers on `runs` (each at least one token): extends each run's cache
        /// and returns the residual stream `[rows, HIDDEN]`, the runs' rows one after another.
        fn layers(w: &[u8], runs: &mut [Run<'_>]) -> Vec<f32> {
            __note!("Each row's run and position.");
            let rows: Vec<(usize, usize)> = runs
                .iter()
                .enumerate()
                .flat_map(|(r, run)| (0..run.tokens.len()).map(move |t| (r, run.cache.len + t)))
                .collect();
            let n = rows.len();

            // ---- Embedding ----------------------------------------------------------------------
            __note!("[n, HIDDEN] residual stream");
            let mut x = vec![0.0f32; n * HIDDEN];
            for (t, &id) in runs.iter().flat_map(|run| run.tokens).enumerate() {
                embed_row(w, &EMBED, id as usize, &mut x[t * HIDDEN..][..HIDDEN]);
            }
            __note!("[n, HIDDEN] normalized");
            let mut h = vec![0.0f32; n * HIDDEN];
            __note!("[n, Q_DIM + 2 KV_DIM]");
            let mut qkv = vec![0.0f32; n * QKV_ROWS];
            __note!("[n, Q_DIM]");
            let mut attn = vec![0.0f32; n * Q_DIM];
            __note!("[n, HIDDEN]");
            let mut proj = vec![0.0f32; n * HIDDEN];
            __note!("[n, 2 FFN]");
            let mut gate_up = vec![0.0f32; n * 2 * FFN];
            __note!("[n, FFN]");
            let mut act = vec![0.0f32; n * FFN];
            __note!("[n, HEAD_DIM / 2] each");
            let (rope_cos, rope_sin) = rope_angles(&rows);

            for l in 0..LAYERS {
                __note!("---- Attention block ------------------------------------------------------------");
                __note!("1. Pre-attention RMSNorm.");
                rms_norm(&x, view(w, ATTN_NORM[l], HIDDEN), &mut h);
                __note!("2. Fused q/k/v projection plus bias.");
                #qkv_call;
                let bias: &[f32] = view(w, QKV_BIAS[l], QKV_ROWS);
                for row in qkv.chunks_exact_mut(QKV_ROWS) {
                    for (v, b) in row.iter_mut().zip(bias) {
                        *v += b;
                    }
                }
                __note!("3. RoPE on q and k; k and v into the cache.");
                for (t, &(r, pos)) in rows.iter().enumerate() {
                    let row = &mut qkv[t * QKV_ROWS..][..QKV_ROWS];
                    let angles = t * HEAD_DIM / 2..(t + 1) * HEAD_DIM / 2;
                    for head in row[..Q_DIM + KV_DIM].chunks_exact_mut(HEAD_DIM) {
                        rope(head, &rope_cos[angles.clone()], &rope_sin[angles.clone()]);
                    }
                    store_kv(runs[r].cache, l, pos, &row[Q_DIM..Q_DIM + KV_DIM], &row[Q_DIM + KV_DIM..]);
                }
                __note!("4. Causal attention over the cache.");
                attention(&qkv, &rows, runs, l, &mut attn);
                __note!("5. Output projection and residual.");
                #o_call;
                for (xi, p) in x.iter_mut().zip(&proj) {
                    *xi += p;
                }

                __note!("---- MLP block ------------------------------------------------------------------");
                __note!("6. Post-attention RMSNorm.");
                rms_norm(&x, view(w, MLP_NORM[l], HIDDEN), &mut h);
                __note!("7. Fused gate/up projection, SiLU(gate) · up.");
                #gate_up_call;
                swiglu(&gate_up, &mut act);
                __note!("8. Down projection and residual.");
                #down_call;
                for (xi, p) in x.iter_mut().zip(&proj) {
                    *xi += p;
                }
            }
            for run in runs.iter_mut() {
                run.cache.len += run.tokens.len();
            }
            x
        }

        /// Final norm and lm_head of the residual rows `x` (`[rows, HIDDEN]`), appended to
        /// `logits` (`[rows, VOCAB]` more).
        fn head(w: &[u8], x: &[f32], logits: &mut Vec<f32>) {
            let rows = x.len() / HIDDEN;
            __note!("[rows, HIDDEN]");
            let mut last = vec![0.0f32; rows * HIDDEN];
            rms_norm(x, view(w, FINAL_NORM, HIDDEN), &mut last);
            let at = logits.len();
            __note!("[.., rows, VOCAB]");
            logits.resize(at + rows * VOCAB, 0.0);
            #head_call;
        }
    }
}
