//! The plan: one model as a fixed sequence of typed operations with constant shapes.
//! Emitters read only the plan; they never look at a checkpoint or a config again.
//!
//! Per decoder layer (the same for all layers, with that layer's weights):
//! ```text
//! attn_norm   RMSNorm(x)                                   [n, hidden]
//! qkv         one matmul over the fused [q; k; v] matrix    [n, q_dim + 2 kv_dim], + bias
//! rope        rotate q and k, write k and v into the cache
//! attention   causal GQA over the cache                     [n, q_dim]
//! o_proj      matmul, added to the residual                 [n, hidden]
//! mlp_norm    RMSNorm(x)                                    [n, hidden]
//! gate_up     one matmul over the fused [gate; up] matrix   [n, 2 ffn], SiLU(gate) · up
//! down        matmul, added to the residual                 [n, hidden]
//! ```
//! then the final RMSNorm and the lm_head on the positions that need logits.

use std::collections::BTreeSet;

use crate::model_io::config::QwenConfig;
use crate::quant::Scheme;

/// Which class of matrices a scheme applies to (users choose per class).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatrixClass {
    Attn,
    Mlp,
    Embed,
    LmHead,
}

/// Schemes chosen per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schemes {
    pub attn: Scheme,
    pub mlp: Scheme,
    pub embed: Scheme,
    pub lm_head: Scheme,
}

impl Schemes {
    pub fn of(&self, class: MatrixClass) -> Scheme {
        match class {
            MatrixClass::Attn => self.attn,
            MatrixClass::Mlp => self.mlp,
            MatrixClass::Embed => self.embed,
            MatrixClass::LmHead => self.lm_head,
        }
    }
}

impl std::fmt::Display for Schemes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "attn={} mlp={} embed={} lm_head={}",
            self.attn, self.mlp, self.embed, self.lm_head
        )
    }
}

/// A matrix product `y[n, rows] = x[n, cols] · Wᵀ` with constant shape: one emitted kernel each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatmulShape {
    pub rows: usize,
    pub cols: usize,
    pub scheme: Scheme,
}

/// The matrices of one layer after fusion, and the HF tensors each is stacked from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusedMatrix {
    /// Name of the fused matrix in the packed weights: `layers.{l}.qkv`, ...
    pub name: String,
    pub class: MatrixClass,
    pub shape: MatmulShape,
    /// Hugging Face tensors stacked along rows, in order.
    pub parts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub config: QwenConfig,
    pub schemes: Schemes,
    /// Per layer: qkv, o_proj, gate_up, down.
    pub layers: Vec<[FusedMatrix; 4]>,
    pub embed: FusedMatrix,
    /// `None` when tied: the lm_head reads the embedding.
    pub lm_head: Option<FusedMatrix>,
}

impl Plan {
    /// One scheme per class.
    pub fn new(config: &QwenConfig, schemes: Schemes, tied: bool) -> Result<Plan, String> {
        Plan::per_matrix(config, schemes, tied, &|_, class| Ok(schemes.of(class)))
    }

    /// A scheme per fused matrix (mixed precision, `qwenc compress --budget-mb`):
    /// `scheme_of(hf_parts, class)` is asked once per fused matrix with the Hugging Face tensors
    /// it stacks (fused parts share one scheme). `schemes` is what the class summary says (the
    /// generated header and `SCHEMES` name every scheme a class uses when it is mixed).
    pub fn per_matrix(
        config: &QwenConfig,
        schemes: Schemes,
        tied: bool,
        scheme_of: &dyn Fn(&[String], MatrixClass) -> Result<Scheme, String>,
    ) -> Result<Plan, String> {
        let c = config;
        let (h, q, kv, f, v) = (
            c.hidden_size,
            c.q_dim(),
            c.kv_dim(),
            c.intermediate_size,
            c.vocab_size,
        );
        let matrix = |name: String,
                      class: MatrixClass,
                      rows: usize,
                      cols: usize,
                      parts: Vec<String>|
         -> Result<FusedMatrix, String> {
            let scheme = scheme_of(&parts, class).map_err(|e| format!("{name}: {e}"))?;
            scheme
                .check_cols(cols)
                .map_err(|e| format!("{name} with {scheme}: {e}"))?;
            Ok(FusedMatrix {
                name,
                class,
                shape: MatmulShape { rows, cols, scheme },
                parts,
            })
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let attn = |m: &str| format!("{p}.self_attn.{m}.weight");
            let mlp = |m: &str| format!("{p}.mlp.{m}.weight");
            layers.push([
                matrix(
                    format!("layers.{l}.qkv"),
                    MatrixClass::Attn,
                    q + 2 * kv,
                    h,
                    vec![attn("q_proj"), attn("k_proj"), attn("v_proj")],
                )?,
                matrix(
                    format!("layers.{l}.o_proj"),
                    MatrixClass::Attn,
                    h,
                    q,
                    vec![attn("o_proj")],
                )?,
                matrix(
                    format!("layers.{l}.gate_up"),
                    MatrixClass::Mlp,
                    2 * f,
                    h,
                    vec![mlp("gate_proj"), mlp("up_proj")],
                )?,
                matrix(
                    format!("layers.{l}.down"),
                    MatrixClass::Mlp,
                    h,
                    f,
                    vec![mlp("down_proj")],
                )?,
            ]);
        }
        let embed_class = if tied {
            MatrixClass::LmHead
        } else {
            MatrixClass::Embed
        };
        let embed = matrix(
            "embed".into(),
            embed_class,
            v,
            h,
            vec![crate::model_io::checkpoint::EMBED.into()],
        )?;
        let lm_head = if tied {
            None
        } else {
            Some(matrix(
                "lm_head".into(),
                MatrixClass::LmHead,
                v,
                h,
                vec![crate::model_io::checkpoint::LM_HEAD.into()],
            )?)
        };
        Ok(Plan {
            config: config.clone(),
            schemes,
            layers,
            embed,
            lm_head,
        })
    }

    /// Whether some class uses more than one scheme (a per-tensor, mixed-precision plan).
    pub fn is_mixed(&self) -> bool {
        (0..4).any(|i| {
            self.layers
                .iter()
                .any(|l| l[i].shape != self.layers[0][i].shape)
        })
    }

    /// The schemes for humans: [`Schemes`]' text for a uniform plan; for a mixed one, every
    /// scheme each kind of matrix uses, with its count (`qkv=w4g32×20+w8×4 ...`).
    pub fn schemes_label(&self) -> String {
        if !self.is_mixed() {
            return self.schemes.to_string();
        }
        let kinds = ["qkv", "o_proj", "gate_up", "down"];
        let mut parts = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
            for l in &self.layers {
                *counts.entry(l[i].shape.scheme.to_string()).or_default() += 1;
            }
            let list: Vec<String> = counts.iter().map(|(s, n)| format!("{s}×{n}")).collect();
            parts.push(format!("{kind}={}", list.join("+")));
        }
        let head = self.lm_head.as_ref().unwrap_or(&self.embed).shape.scheme;
        parts.push(format!("embed={} lm_head={head}", self.embed.shape.scheme));
        format!("mixed: {}", parts.join(" "))
    }

    /// Every distinct matmul the forward pass runs (the embedding is only gathered from).
    pub fn matmul_shapes(&self) -> BTreeSet<MatmulShape> {
        let mut shapes: BTreeSet<MatmulShape> =
            self.layers.iter().flatten().map(|m| m.shape).collect();
        shapes.insert(self.lm_head.as_ref().unwrap_or(&self.embed).shape);
        shapes
    }

    /// Every fused matrix in packing order.
    pub fn matrices(&self) -> impl Iterator<Item = &FusedMatrix> {
        std::iter::once(&self.embed)
            .chain(self.layers.iter().flatten())
            .chain(self.lm_head.iter())
    }

    /// The f32 vectors (norm weights, biases) in packing order: (packed name, HF names stacked).
    pub fn vectors(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for l in 0..self.config.num_hidden_layers {
            let p = format!("model.layers.{l}");
            out.push((
                format!("layers.{l}.attn_norm"),
                vec![format!("{p}.input_layernorm.weight")],
            ));
            out.push((
                format!("layers.{l}.qkv_bias"),
                ["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .map(|m| format!("{p}.self_attn.{m}.bias"))
                    .collect(),
            ));
            out.push((
                format!("layers.{l}.mlp_norm"),
                vec![format!("{p}.post_attention_layernorm.weight")],
            ));
        }
        out.push((
            "final_norm".into(),
            vec![crate::model_io::checkpoint::FINAL_NORM.into()],
        ));
        out
    }
}
