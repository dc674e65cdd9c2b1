//! The f32 reference forward pass of Qwen2: the oracle every compiled kernel is checked against.
//! Clarity first; the only concession to speed is that matrix products run over output rows in
//! parallel and read each weight row once for all the tokens of a batch.
//!
//! Follows transformers' `modeling_qwen2.py` (RMSNorm in f32, RoPE on the two halves of each
//! head, grouped-query attention with a causal mask, SwiGLU MLP).

use qwenc_runtime::model::{ForwardError, LogitsFor};
use rayon::prelude::*;

use super::weights::{LayerWeights, ReferenceWeights};

/// Keys and values of every layer for the positions seen so far.
pub struct KvCache {
    /// Per layer: `[len, kv_dim]` keys (after RoPE) and values.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        KvCache {
            keys: vec![Vec::new(); n_layers],
            values: vec![Vec::new(); n_layers],
            len: 0,
        }
    }
    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Forget everything after the first `len` positions (to re-score from a shared prefix).
    pub fn truncate(&mut self, len: usize, kv_dim: usize) {
        for layer in self.keys.iter_mut().chain(self.values.iter_mut()) {
            layer.truncate(len * kv_dim);
        }
        self.len = self.len.min(len);
    }
}

/// The inputs of the linear layers, as an observer of [`ReferenceWeights::forward_observed`]
/// sees them (calibration for AWQ and GPTQ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tap {
    /// Input of q/k/v_proj: the input RMSNorm's output `[n, hidden]`.
    Attn,
    /// Input of o_proj: the attention output `[n, q_dim]`.
    OProj,
    /// Input of gate/up_proj: the post-attention RMSNorm's output `[n, hidden]`.
    Mlp,
    /// Input of down_proj: silu(gate)·up `[n, ffn]`.
    Down,
    /// Input of the lm_head at every position: the final RMSNorm's output `[n, hidden]`
    /// (shown with layer index `num_hidden_layers`).
    Head,
}

/// Sees `(layer, tap, activations [n, dim])` during a forward pass.
pub type Observer<'a> = dyn FnMut(usize, Tap, &[f32]) + 'a;

impl ReferenceWeights {
    /// Run `tokens` (positions `cache.len()..`) through the model, extending the cache.
    /// Returns logits `[n, vocab]` for the requested positions.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: LogitsFor,
    ) -> Result<Vec<Vec<f32>>, ForwardError> {
        self.forward_observed(tokens, cache, logits, &mut |_, _, _| {})
    }

    /// [`forward`](Self::forward), showing `observer` the input of every linear layer.
    pub fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: LogitsFor,
        observer: &mut Observer<'_>,
    ) -> Result<Vec<Vec<f32>>, ForwardError> {
        let c = &self.config;
        let (hidden, vocab) = (c.hidden_size, c.vocab_size);
        let start = cache.len;
        if start + tokens.len() > c.max_position_embeddings {
            return Err(ForwardError::ContextOverflow {
                needed: start + tokens.len(),
                max: c.max_position_embeddings,
            });
        }
        if let Some((pos, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= vocab)
        {
            return Err(ForwardError::TokenOutOfRange {
                id,
                pos: start + pos,
                vocab,
            });
        }
        let n = tokens.len();
        if n == 0 {
            return Ok(Vec::new());
        }

        // ---- Embedding lookup ------------------------------------------------------------
        let mut x: Vec<f32> = Vec::with_capacity(n * hidden); // [n, hidden] residual stream
        for &id in tokens {
            x.extend_from_slice(&self.embed[id as usize * hidden..][..hidden]);
        }

        // ---- Decoder layers ----------------------------------------------------------------
        for (l, layer) in self.layers.iter().enumerate() {
            let mut tap = |tap: Tap, a: &[f32]| observer(l, tap, a);
            self.attention_block(
                layer,
                &mut x,
                start,
                &mut cache.keys[l],
                &mut cache.values[l],
                &mut tap,
            );
            self.mlp_block(layer, &mut x, &mut tap);
        }
        cache.len = start + n;

        // ---- Final norm and lm_head --------------------------------------------------------
        // Every position is normalized once: the lm_head's input as observed (calibration),
        // and the rows that need logits are taken from it.
        let normed_all = rms_norm(&x, &self.final_norm, c.rms_norm_eps); // [n, hidden]
        observer(c.num_hidden_layers, Tap::Head, &normed_all);
        let normed = match logits {
            LogitsFor::All => normed_all,
            LogitsFor::Last => normed_all[(n - 1) * hidden..].to_vec(), // [1, hidden]
            LogitsFor::None => return Ok(Vec::new()),
        };
        let out = linear(&normed, self.lm_head(), None, hidden, vocab); // [rows, vocab]
        Ok(out.chunks(vocab).map(<[f32]>::to_vec).collect())
    }

    /// x += o_proj(attention(rope(q), rope(k), v)) over the normalized x.
    fn attention_block(
        &self,
        w: &LayerWeights,
        x: &mut [f32],
        start: usize,
        keys: &mut Vec<f32>,
        values: &mut Vec<f32>,
        tap: &mut dyn FnMut(Tap, &[f32]),
    ) {
        let c = &self.config;
        let (hidden, hd) = (c.hidden_size, c.head_dim);
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        let n = x.len() / hidden;

        // 1. Pre-attention RMSNorm.
        let h = rms_norm(x, &w.input_norm, c.rms_norm_eps); // [n, hidden]
        tap(Tap::Attn, &h);

        // 2. Projections with bias.
        let mut q = linear(&h, &w.q_proj, Some(&w.q_bias), hidden, q_dim); // [n, q_dim]
        let mut k = linear(&h, &w.k_proj, Some(&w.k_bias), hidden, kv_dim); // [n, kv_dim]
        let v = linear(&h, &w.v_proj, Some(&w.v_bias), hidden, kv_dim); // [n, kv_dim]

        // 3. Rotary position embedding on every head of q and k.
        for t in 0..n {
            let pos = start + t;
            for head in q[t * q_dim..][..q_dim].chunks_mut(hd) {
                rope(head, pos, c.rope_theta);
            }
            for head in k[t * kv_dim..][..kv_dim].chunks_mut(hd) {
                rope(head, pos, c.rope_theta);
            }
        }

        // 4. Append to the cache: positions 0..start+n are now available.
        keys.extend_from_slice(&k); // [start + n, kv_dim]
        values.extend_from_slice(&v); // [start + n, kv_dim]

        // 5. Causal grouped-query attention: query head qh reads kv head qh / group.
        let group = c.group_size();
        let scale = 1.0 / (hd as f32).sqrt();
        let mut attn = vec![0.0f32; n * q_dim]; // [n, q_dim]
        attn.par_chunks_mut(q_dim).enumerate().for_each(|(t, out)| {
            let visible = start + t + 1;
            for qh in 0..c.num_attention_heads {
                let kvh = qh / group;
                let qv = &q[t * q_dim + qh * hd..][..hd];
                let mut scores: Vec<f32> = (0..visible)
                    .map(|p| dot(qv, &keys[p * kv_dim + kvh * hd..][..hd]) * scale)
                    .collect(); // [visible]
                softmax(&mut scores);
                let o = &mut out[qh * hd..][..hd];
                for (p, &s) in scores.iter().enumerate() {
                    let vv = &values[p * kv_dim + kvh * hd..][..hd];
                    for (oi, &vi) in o.iter_mut().zip(vv) {
                        *oi += s * vi;
                    }
                }
            }
        });

        // 6. Output projection and residual.
        tap(Tap::OProj, &attn);
        let o = linear(&attn, &w.o_proj, None, q_dim, hidden); // [n, hidden]
        for (xi, oi) in x.iter_mut().zip(&o) {
            *xi += oi;
        }
    }

    /// x += down(silu(gate(h)) * up(h)), h = RMSNorm(x).
    fn mlp_block(&self, w: &LayerWeights, x: &mut [f32], tap: &mut dyn FnMut(Tap, &[f32])) {
        let c = &self.config;
        let (hidden, ffn) = (c.hidden_size, c.intermediate_size);
        let h = rms_norm(x, &w.post_norm, c.rms_norm_eps); // [n, hidden]
        tap(Tap::Mlp, &h);
        let gate = linear(&h, &w.gate_proj, None, hidden, ffn); // [n, ffn]
        let up = linear(&h, &w.up_proj, None, hidden, ffn); // [n, ffn]
        let act: Vec<f32> = gate.iter().zip(&up).map(|(&g, &u)| silu(g) * u).collect(); // [n, ffn]
        tap(Tap::Down, &act);
        let down = linear(&act, &w.down_proj, None, ffn, hidden); // [n, hidden]
        for (xi, di) in x.iter_mut().zip(&down) {
            *xi += di;
        }
    }
}

/// RMSNorm over each row of `x` ([n, d]): x / sqrt(mean(x²) + eps) · weight.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let d = weight.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        out.extend(row.iter().zip(weight).map(|(v, w)| w * (v * inv)));
    }
    out
}

/// `y[t, o] = x[t, :] · w[o, :] (+ b[o])` for x [n, d_in], w [d_out, d_in]; returns [n, d_out].
/// Parallel over output rows; each weight row is read once for all n tokens.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, d_in: usize, d_out: usize) -> Vec<f32> {
    let n = x.len() / d_in;
    debug_assert_eq!(w.len(), d_in * d_out);
    // Column-major result [d_out, n], transposed at the end.
    let mut cols = vec![0.0f32; d_out * n];
    cols.par_chunks_mut(n).enumerate().for_each(|(o, col)| {
        let row = &w[o * d_in..][..d_in];
        let b = bias.map_or(0.0, |b| b[o]);
        for (t, y) in col.iter_mut().enumerate() {
            *y = dot(&x[t * d_in..][..d_in], row) + b;
        }
    });
    let mut out = vec![0.0f32; n * d_out];
    for o in 0..d_out {
        for t in 0..n {
            out[t * d_out + o] = cols[o * n + t];
        }
    }
    out
}

/// Dot product with 8 independent partial sums (so the compiler can vectorize it).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for j in 0..8 {
            acc[j] += a[i * 8 + j] * b[i * 8 + j];
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

/// Rotate one head in place, "rotate_half" layout: pairs are (i, i + d/2).
/// Frequencies computed in f32 as transformers does: inv_freq = 1 / theta^(2i/d).
pub fn rope(head: &mut [f32], pos: usize, theta: f32) {
    let d = head.len();
    let half = d / 2;
    for i in 0..half {
        let inv_freq = 1.0 / theta.powf((2 * i) as f32 / d as f32);
        let angle = pos as f32 * inv_freq;
        let (sin, cos) = angle.sin_cos();
        let (a, b) = (head[i], head[i + half]);
        head[i] = a * cos - b * sin;
        head[i + half] = b * cos + a * sin;
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}
