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

use crate::compress::format::{ClassSchemes, TensorClass};
use crate::model_io::checkpoint::{LayerTensor, EMBED, FINAL_NORM, LM_HEAD};
use crate::model_io::config::QwenConfig;
use crate::quant::Scheme;

/// A matrix product `y[n, rows] = x[n, cols] · Wᵀ` with constant shape: one emitted kernel each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatmulShape {
    pub rows: usize,
    pub cols: usize,
    pub scheme: Scheme,
}

/// The fused matrices of a decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerMatrix {
    /// `[q; k; v]` stacked.
    Qkv,
    OProj,
    /// `[gate; up]` stacked.
    GateUp,
    Down,
}

impl LayerMatrix {
    pub const ALL: [LayerMatrix; 4] = [
        LayerMatrix::Qkv,
        LayerMatrix::OProj,
        LayerMatrix::GateUp,
        LayerMatrix::Down,
    ];

    /// Its name in packed weights (`layers.{l}.{name}`) and summaries.
    pub fn name(self) -> &'static str {
        match self {
            LayerMatrix::Qkv => "qkv",
            LayerMatrix::OProj => "o_proj",
            LayerMatrix::GateUp => "gate_up",
            LayerMatrix::Down => "down",
        }
    }

    pub fn class(self) -> TensorClass {
        match self {
            LayerMatrix::Qkv | LayerMatrix::OProj => TensorClass::Attn,
            LayerMatrix::GateUp | LayerMatrix::Down => TensorClass::Mlp,
        }
    }
}

/// What a fused matrix is in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatrixKind {
    Layer(LayerMatrix),
    /// The token embedding (the lm_head too when tied).
    Embed,
    LmHead,
}

/// One Hugging Face tensor stacked into a fused matrix, with its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub rows: usize,
}

/// One matrix after fusion, and the Hugging Face tensors it is stacked from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusedMatrix {
    /// Name of the fused matrix in the packed weights: `layers.{l}.qkv`, ...
    pub name: String,
    pub kind: MatrixKind,
    pub class: TensorClass,
    pub shape: MatmulShape,
    /// Hugging Face tensors stacked along rows, in order.
    pub parts: Vec<Part>,
}

/// A decoder layer's fused matrices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerMatrices {
    pub qkv: FusedMatrix,
    pub o_proj: FusedMatrix,
    pub gate_up: FusedMatrix,
    pub down: FusedMatrix,
}

impl LayerMatrices {
    pub fn get(&self, m: LayerMatrix) -> &FusedMatrix {
        match m {
            LayerMatrix::Qkv => &self.qkv,
            LayerMatrix::OProj => &self.o_proj,
            LayerMatrix::GateUp => &self.gate_up,
            LayerMatrix::Down => &self.down,
        }
    }

    /// In packing order: qkv, o_proj, gate_up, down.
    pub fn iter(&self) -> impl Iterator<Item = &FusedMatrix> {
        LayerMatrix::ALL.into_iter().map(|m| self.get(m))
    }
}

/// The scheme of a fused matrix, from its Hugging Face tensors and class ([`Plan::per_matrix`]).
pub type SchemeOf<'a> = dyn Fn(&[String], TensorClass) -> Result<Scheme, String> + 'a;

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub config: QwenConfig,
    pub schemes: ClassSchemes,
    pub layers: Vec<LayerMatrices>,
    pub embed: FusedMatrix,
    /// `None` when tied: the lm_head reads the embedding.
    pub lm_head: Option<FusedMatrix>,
}

impl Plan {
    /// One scheme per class.
    pub fn new(config: &QwenConfig, schemes: ClassSchemes, tied: bool) -> Result<Plan, String> {
        Plan::per_matrix(config, schemes, tied, &|_, class| {
            Ok(schemes.for_class(class))
        })
    }

    /// A scheme per fused matrix (mixed precision, `qwenc compress --budget-mb`):
    /// `scheme_of(hf_names, class)` is asked once per fused matrix with the Hugging Face tensors
    /// it stacks (fused parts share one scheme). `schemes` is what the class summary says (the
    /// generated header and `SCHEMES` name every scheme a class uses when it is mixed).
    pub fn per_matrix(
        config: &QwenConfig,
        schemes: ClassSchemes,
        tied: bool,
        scheme_of: &SchemeOf<'_>,
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
                      kind: MatrixKind,
                      class: TensorClass,
                      cols: usize,
                      parts: Vec<Part>|
         -> Result<FusedMatrix, String> {
            let names: Vec<String> = parts.iter().map(|p| p.name.clone()).collect();
            let scheme = scheme_of(&names, class).map_err(|e| format!("{name}: {e}"))?;
            scheme
                .check_cols(cols)
                .map_err(|e| format!("{name} with {scheme}: {e}"))?;
            let rows = parts.iter().map(|p| p.rows).sum();
            Ok(FusedMatrix {
                name,
                kind,
                class,
                shape: MatmulShape { rows, cols, scheme },
                parts,
            })
        };
        let part = |name: String, rows: usize| Part { name, rows };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let hf = |t: LayerTensor, rows: usize| part(t.name(l), rows);
            let layer = |m: LayerMatrix, cols: usize, parts: Vec<Part>| {
                let name = format!("layers.{l}.{}", m.name());
                matrix(name, MatrixKind::Layer(m), m.class(), cols, parts)
            };
            use LayerTensor::*;
            layers.push(LayerMatrices {
                qkv: layer(
                    LayerMatrix::Qkv,
                    h,
                    vec![hf(QProj, q), hf(KProj, kv), hf(VProj, kv)],
                )?,
                o_proj: layer(LayerMatrix::OProj, q, vec![hf(OProj, h)])?,
                gate_up: layer(LayerMatrix::GateUp, h, vec![hf(GateProj, f), hf(UpProj, f)])?,
                down: layer(LayerMatrix::Down, f, vec![hf(DownProj, h)])?,
            });
        }
        let embed_class = if tied {
            TensorClass::LmHead
        } else {
            TensorClass::Embed
        };
        let embed = matrix(
            "embed".into(),
            MatrixKind::Embed,
            embed_class,
            h,
            vec![part(EMBED.into(), v)],
        )?;
        let lm_head = if tied {
            None
        } else {
            Some(matrix(
                "lm_head".into(),
                MatrixKind::LmHead,
                TensorClass::LmHead,
                h,
                vec![part(LM_HEAD.into(), v)],
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
        LayerMatrix::ALL
            .into_iter()
            .any(|m| self.layer_shapes(m).len() > 1)
    }

    /// The distinct shapes (with schemes) of the layers' matrix `m`, in first-use order, and
    /// each layer's index into them.
    pub fn layer_shapes(&self, m: LayerMatrix) -> Vec<MatmulShape> {
        self.layer_kernels(m).0
    }

    /// [`Plan::layer_shapes`] and, per layer, the index of its shape.
    pub fn layer_kernels(&self, m: LayerMatrix) -> (Vec<MatmulShape>, Vec<usize>) {
        let mut shapes: Vec<MatmulShape> = Vec::new();
        let index = self
            .layers
            .iter()
            .map(|l| {
                let shape = l.get(m).shape;
                match shapes.iter().position(|s| *s == shape) {
                    Some(k) => k,
                    None => {
                        shapes.push(shape);
                        shapes.len() - 1
                    }
                }
            })
            .collect();
        (shapes, index)
    }

    /// The schemes for humans: [`ClassSchemes`]' text for a uniform plan; for a mixed one, every
    /// scheme each kind of matrix uses, with its count (`qkv=w4g32×20+w8×4 ...`).
    pub fn schemes_label(&self) -> String {
        if !self.is_mixed() {
            return self.schemes.to_string();
        }
        let mut parts = Vec::new();
        for m in LayerMatrix::ALL {
            let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
            for l in &self.layers {
                *counts.entry(l.get(m).shape.scheme.to_string()).or_default() += 1;
            }
            let list: Vec<String> = counts.iter().map(|(s, n)| format!("{s}×{n}")).collect();
            parts.push(format!("{}={}", m.name(), list.join("+")));
        }
        let head = self.lm_head.as_ref().unwrap_or(&self.embed).shape.scheme;
        parts.push(format!("embed={} lm_head={head}", self.embed.shape.scheme));
        format!("mixed: {}", parts.join(" "))
    }

    /// Every distinct matmul the forward pass runs (the embedding is only gathered from).
    pub fn matmul_shapes(&self) -> BTreeSet<MatmulShape> {
        let mut shapes: BTreeSet<MatmulShape> = self
            .layers
            .iter()
            .flat_map(|l| l.iter())
            .map(|m| m.shape)
            .collect();
        shapes.insert(self.lm_head.as_ref().unwrap_or(&self.embed).shape);
        shapes
    }

    /// Whether `m` is only gathered from, never multiplied: the embedding of an untied model
    /// (it keeps the scalar layout; a tied one is the lm_head's tiled matrix).
    pub fn gathered_only(&self, m: &FusedMatrix) -> bool {
        m.kind == MatrixKind::Embed && self.lm_head.is_some()
    }

    /// Every fused matrix in packing order.
    pub fn matrices(&self) -> impl Iterator<Item = &FusedMatrix> {
        std::iter::once(&self.embed)
            .chain(self.layers.iter().flat_map(|l| l.iter()))
            .chain(self.lm_head.iter())
    }

    /// The f32 vectors (norm weights, biases) in packing order: (packed name, the Hugging Face
    /// vectors stacked, each with its length as `rows`).
    pub fn vectors(&self) -> Vec<(String, Vec<Part>)> {
        let c = &self.config;
        let part = |name: String, rows: usize| Part { name, rows };
        let mut out = Vec::new();
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let bias = |m: &str, rows: usize| part(format!("{p}.self_attn.{m}.bias"), rows);
            out.push((
                format!("layers.{l}.attn_norm"),
                vec![part(format!("{p}.input_layernorm.weight"), c.hidden_size)],
            ));
            out.push((
                format!("layers.{l}.qkv_bias"),
                vec![
                    bias("q_proj", c.q_dim()),
                    bias("k_proj", c.kv_dim()),
                    bias("v_proj", c.kv_dim()),
                ],
            ));
            out.push((
                format!("layers.{l}.mlp_norm"),
                vec![part(
                    format!("{p}.post_attention_layernorm.weight"),
                    c.hidden_size,
                )],
            ));
        }
        out.push((
            "final_norm".into(),
            vec![part(FINAL_NORM.into(), c.hidden_size)],
        ));
        out
    }
}
