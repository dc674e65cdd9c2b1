//! The non-matmul ops of the forward pass: RMSNorm, RoPE, causal grouped-query attention,
//! SiLU. Shapes are the generated file's constants; loops are written over fixed-width lane
//! arrays so that the compiler vectorizes them without reassociating float sums on its own
//! (Rust never does), and the sums are the same on every backend.
//!
//! Attention is the op that grows with the context: at a 560-token prompt it was 31% of a
//! naive prefill (per-position dot products, each ending in a horizontal sum). It runs one
//! work item per (token, KV head): the `N_HEADS / N_KV_HEADS` query heads that share a KV
//! head read each key tile and value row once, and the items spread over the threads
//! (prefill has `n · N_KV_HEADS` of them, decode `N_KV_HEADS`). Keys are stored in tiles of
//! `KV_TILE` positions (`store_kv`), so scores come out `KV_TILE` at a time, each lane
//! summing in dimension order like the reference. On x86 the same body is compiled a
//! second time with AVX2 + FMA enabled and picked at run time.

use proc_macro2::TokenStream;
use quote::quote;

use super::{lit, Backend};

/// Lanes of the partial sums: the widest of 16, 8, 4, 2, 1 that divides `n`.
fn lanes(n: usize) -> usize {
    [16, 8, 4, 2, 1]
        .into_iter()
        .find(|l| n.is_multiple_of(*l))
        .unwrap_or(1)
}

/// `fn NAME(PARAMS)` calling `BODY(ARGS)`; on the x86 backends through a second build of the
/// body with AVX2 + FMA where the CPU has it (every x86 SIMD backend requires both), picked at
/// run time, so that its lane loops (and `exp`) vectorize at 8 lanes.
fn dispatched(
    backend: Backend,
    name: TokenStream,
    body: TokenStream,
    params: TokenStream,
    args: TokenStream,
    doc: &str,
) -> TokenStream {
    match backend {
        Backend::X86(_) => {
            let doc = format!("{doc}; the AVX2 + FMA build of the same body where the CPU has it.");
            quote! {
                #[doc = #doc]
                fn #name(#params) {
                    #[cfg(target_arch = "x86_64")]
                    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                        #[target_feature(enable = "avx2,fma")]
                        unsafe fn avx2(#params) {
                            #body(#args)
                        }
                        __note!("SAFETY: the features were just detected.");
                        return unsafe { avx2(#args) };
                    }
                    #body(#args)
                }
            }
        }
        _ => {
            let doc = format!("{doc}.");
            quote! {
                #[doc = #doc]
                fn #name(#params) {
                    #body(#args)
                }
            }
        }
    }
}

/// The ops, for a model of hidden size `hidden`.
pub fn ops(backend: Backend, hidden: usize) -> TokenStream {
    let hidden_lanes = lit(lanes(hidden));
    let attend = dispatched(
        backend,
        quote!(attend_group),
        quote!(attend_group_body),
        quote!(q: &[f32], keys: &[f32], values: &[f32], kvh: usize, visible: usize, out: &mut [f32]),
        quote!(q, keys, values, kvh, visible, out),
        " One attention work item",
    );
    let swiglu = dispatched(
        backend,
        quote!(swiglu),
        quote!(swiglu_body),
        quote!(gate_up: &[f32], act: &mut [f32]),
        quote!(gate_up, act),
        " SiLU(gate) · up",
    );
    quote! {
        #swiglu
        /// Lanes of the partial sums over the hidden size.
        const HIDDEN_LANES: usize = #hidden_lanes;
        const _: () = assert!(HIDDEN % HIDDEN_LANES == 0);

        /// RMSNorm of each row of `x` (`[n, HIDDEN]`) into `out`.
        fn rms_norm(x: &[f32], weight: &[f32], out: &mut [f32]) {
            for (row, o) in x.chunks_exact(HIDDEN).zip(out.chunks_exact_mut(HIDDEN)) {
                let mut acc = [0.0f32; HIDDEN_LANES];
                for chunk in row.chunks_exact(HIDDEN_LANES) {
                    for (a, &v) in acc.iter_mut().zip(chunk) {
                        *a += v * v;
                    }
                }
                let mean_sq = acc.iter().sum::<f32>() / HIDDEN as f32;
                let inv = 1.0 / (mean_sq + RMS_EPS).sqrt();
                for ((o, &v), &w) in o.iter_mut().zip(row).zip(weight) {
                    *o = w * (v * inv);
                }
            }
        }

        /// cos and sin of every rotation angle at the position of each row (`(run, position)`):
        /// `[n, HEAD_DIM / 2]` each, computed once per forward pass instead of once per head.
        fn rope_angles(rows: &[(usize, usize)]) -> (Vec<f32>, Vec<f32>) {
            let n = rows.len();
            let mut cos = vec![0.0f32; n * HEAD_DIM / 2];
            let mut sin = vec![0.0f32; n * HEAD_DIM / 2];
            for (t, &(_, pos)) in rows.iter().enumerate() {
                for i in 0..HEAD_DIM / 2 {
                    let (s, c) = (pos as f32 * ROPE_INV_FREQ[i]).sin_cos();
                    cos[t * HEAD_DIM / 2 + i] = c;
                    sin[t * HEAD_DIM / 2 + i] = s;
                }
            }
            (cos, sin)
        }

        /// Rotate one head in place (pairs `(i, i + HEAD_DIM / 2)`) by one position's angles.
        fn rope(head: &mut [f32], cos: &[f32], sin: &[f32]) {
            let (lo, hi) = head.split_at_mut(HEAD_DIM / 2);
            for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
                let (x, y) = (*a, *b);
                *a = x * c - y * s;
                *b = y * c + x * s;
            }
        }

        /// Positions per key tile (`qwenc_runtime::model::KV_TILE`).
        const KV_TILE: usize = qwenc_runtime::model::KV_TILE;

        /// Writes the keys and values (`[KV_DIM]` each) of position `pos` into the cache of
        /// `layer`. Values are `[position][KV_DIM]`. Keys are tiled, `[N_KV_HEADS][tile]
        /// [HEAD_DIM][KV_TILE]`: the scores of `KV_TILE` consecutive positions are then one
        /// lane-wise multiply-add per head dimension, with no horizontal sums.
        fn store_kv(cache: &mut KvCache, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
            let positions = cache.layer_stride / KV_DIM;
            let base = layer * cache.layer_stride;
            cache.values[base + pos * KV_DIM..][..KV_DIM].copy_from_slice(v);
            let tile = base + (pos / KV_TILE) * HEAD_DIM * KV_TILE + pos % KV_TILE;
            for (kvh, head) in k.chunks_exact(HEAD_DIM).enumerate() {
                let at = tile + kvh * positions * HEAD_DIM;
                for (d, &x) in head.iter().enumerate() {
                    cache.keys[at + d * KV_TILE] = x;
                }
            }
        }

        /// Copies positions `0..len` of `src` into `dst` and sets `dst.len = len` (a cached
        /// prefix reused by another sequence). Values are one run per layer; keys one run of
        /// whole tiles per KV head, whose place depends on each cache's capacity (see
        /// [`store_kv`]).
        pub fn copy_kv_prefix(src: &KvCache, dst: &mut KvCache, len: usize) {
            assert!(len <= src.len && len <= dst.capacity, "copy_kv_prefix: {len} positions from a cache of {} into one of capacity {}", src.len, dst.capacity);
            let tiled = len.div_ceil(KV_TILE) * KV_TILE * HEAD_DIM;
            let (src_positions, dst_positions) = (src.layer_stride / KV_DIM, dst.layer_stride / KV_DIM);
            for l in 0..LAYERS {
                let (s, d) = (l * src.layer_stride, l * dst.layer_stride);
                dst.values[d..][..len * KV_DIM].copy_from_slice(&src.values[s..][..len * KV_DIM]);
                for kvh in 0..N_KV_HEADS {
                    let from = &src.keys[s + kvh * src_positions * HEAD_DIM..][..tiled];
                    dst.keys[d + kvh * dst_positions * HEAD_DIM..][..tiled].copy_from_slice(from);
                }
            }
            dst.len = len;
        }

        /// Causal grouped-query attention of `n` new queries (`qkv`: `[n, QKV_ROWS]`), row `t`
        /// at position `rows[t].1` of run `rows[t].0`, over layer `layer` of that run's cache,
        /// which already holds their keys and values; `out`: `[n, Q_DIM]`.
        fn attention(qkv: &[f32], rows: &[(usize, usize)], runs: &[Run<'_>], layer: usize, out: &mut [f32]) {
            const GROUP: usize = N_HEADS / N_KV_HEADS;
            __note!("Query heads of one KV head are adjacent, so item (t, kvh) owns one run of `out`.");
            qwenc_runtime::threads::for_each_chunk_mut(out, GROUP * HEAD_DIM, |item, out| {
                let (t, kvh) = (item / N_KV_HEADS, item % N_KV_HEADS);
                let (r, pos) = rows[t];
                let cache: &KvCache = runs[r].cache;
                let positions = cache.layer_stride / KV_DIM;
                let keys = &cache.keys[layer * cache.layer_stride..][..cache.layer_stride];
                let values = &cache.values[layer * cache.layer_stride..][..cache.layer_stride];
                let q = &qkv[t * QKV_ROWS + kvh * GROUP * HEAD_DIM..][..GROUP * HEAD_DIM];
                let keys = &keys[kvh * positions * HEAD_DIM..][..positions * HEAD_DIM];
                attend_group(q, keys, values, kvh, pos + 1, out);
            });
        }

        #attend

        /// The query heads `q` (`[GROUP, HEAD_DIM]`) of KV head `kvh` over positions
        /// `0..visible`: softmax(q·kᵀ / √HEAD_DIM)·v into `out` (`[GROUP, HEAD_DIM]`).
        /// `keys`: this KV head's key tiles (see [`store_kv`]); `values`: the layer's.
        #[inline(always)]
        fn attend_group_body(q: &[f32], keys: &[f32], values: &[f32], kvh: usize, visible: usize, out: &mut [f32]) {
            const GROUP: usize = N_HEADS / N_KV_HEADS;
            let scale = 1.0 / (HEAD_DIM as f32).sqrt();
            __note!("Scores [GROUP, tiles · KV_TILE]: each key tile is read once for the whole group;");
            __note!("a lane sums its position's products in dimension order, as the reference does.");
            __note!("Lanes past `visible` in the last tile hold stale keys and are never read.");
            let width = visible.div_ceil(KV_TILE) * KV_TILE;
            let mut scores = vec![0.0f32; GROUP * width];
            for (tile, kt) in keys[..width * HEAD_DIM].chunks_exact(HEAD_DIM * KV_TILE).enumerate() {
                for j in 0..GROUP {
                    let qj = &q[j * HEAD_DIM..][..HEAD_DIM];
                    let mut acc = [0.0f32; KV_TILE];
                    for (&qd, kd) in qj.iter().zip(kt.chunks_exact(KV_TILE)) {
                        for (a, &k) in acc.iter_mut().zip(kd) {
                            *a += qd * k;
                        }
                    }
                    for (s, a) in scores[j * width + tile * KV_TILE..][..KV_TILE].iter_mut().zip(acc) {
                        *s = a * scale;
                    }
                }
            }
            __note!("Softmax per head; the weights are normalized before they scale the values. The");
            __note!("maximum and the sum run over eight lanes (the sum of the exponentials is then");
            __note!("eight partial sums, added in lane order, instead of one chain in position order).");
            for row in scores.chunks_exact_mut(width) {
                let row = &mut row[..visible];
                let mut lanes = [f32::NEG_INFINITY; 8];
                let mut chunks = row.chunks_exact(8);
                for c in chunks.by_ref() {
                    for (m, &s) in lanes.iter_mut().zip(c) {
                        *m = m.max(s);
                    }
                }
                let max = lanes.iter().chain(chunks.remainder()).fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                let mut lanes = [0.0f32; 8];
                let mut chunks = row.chunks_exact_mut(8);
                for c in chunks.by_ref() {
                    for (l, s) in lanes.iter_mut().zip(c.iter_mut()) {
                        *s = exp(*s - max);
                        *l += *s;
                    }
                }
                let mut sum = lanes.iter().sum::<f32>();
                for s in chunks.into_remainder() {
                    *s = exp(*s - max);
                    sum += *s;
                }
                for s in row.iter_mut() {
                    *s /= sum;
                }
            }
            __note!("One head at a time, so that its output row stays in registers.");
            for j in 0..GROUP {
                let mut acc = [0.0f32; HEAD_DIM];
                for (p, &weight) in scores[j * width..][..visible].iter().enumerate() {
                    let v = &values[p * KV_DIM + kvh * HEAD_DIM..][..HEAD_DIM];
                    for (o, &vi) in acc.iter_mut().zip(v) {
                        *o += weight * vi;
                    }
                }
                out[j * HEAD_DIM..][..HEAD_DIM].copy_from_slice(&acc);
            }
        }

        #[inline(always)]
        fn silu(x: f32) -> f32 {
            x / (1.0 + exp(-x))
        }

        /// SiLU(gate) · up per token: `gate_up` is `[n, 2·FFN]` (gate, then up), `act`
        /// `[n, FFN]`.
        #[inline(always)]
        fn swiglu_body(gate_up: &[f32], act: &mut [f32]) {
            for (a, gu) in act.chunks_exact_mut(FFN).zip(gate_up.chunks_exact(2 * FFN)) {
                let (gate, up) = gu.split_at(FFN);
                for ((a, &g), &u) in a.iter_mut().zip(gate).zip(up) {
                    *a = silu(g) * u;
                }
            }
        }

        /// e^x within 0.7 ulp (measured against f64 over −87.3..88 in steps of 7e-4), as
        /// Cephes' expf: x = n·ln 2 + r, |r| ≤ ln 2 / 2, a polynomial in r, then 2^n through
        /// the exponent bits; saturating below −87.3 (at 1.2e-38) and above 88 (at 1.7e38).
        /// Unlike the libm call it inlines and vectorizes: softmax and SiLU spent 6% of a
        /// 560-token prefill in `expf`.
        #[inline(always)]
        fn exp(x: f32) -> f32 {
            const LOG2E: f32 = std::f32::consts::LOG2_E;
            const LN2_HI: f32 = 0.693_359_4;
            const LN2_LO: f32 = -2.121_944_4e-4;
            __note!("1.5·2^23: adding and removing it rounds to the nearest integer.");
            const MAGIC: f32 = 12_582_912.0;
            let x = if x < -87.336_54 { -87.336_54 } else if x > 88.0 { 88.0 } else { x };
            let n = (x * LOG2E + MAGIC) - MAGIC;
            let r = (x - n * LN2_HI) - n * LN2_LO;
            let mut p = 1.987_569_2e-4f32;
            p = p * r + 1.398_2e-3;
            p = p * r + 8.333_452e-3;
            p = p * r + 4.166_579_6e-2;
            p = p * r + 1.666_666_5e-1;
            p = p * r + 5.000_000_1e-1;
            let y = p * (r * r) + r + 1.0;
            __note!("SAFETY: n is an integer in [-126, 127] (x was clamped), so it fits an i32.");
            let e: i32 = unsafe { n.to_int_unchecked() };
            y * f32::from_bits(((e + 127) as u32) << 23)
        }
    }
}
