//! The f32 weights of the reference model, loaded by Hugging Face name with every shape
//! checked against the config.

use crate::model_io::checkpoint::{Checkpoint, EMBED, FINAL_NORM, LM_HEAD};
use crate::model_io::config::QwenConfig;
use crate::model_io::error::Result;

/// One decoder layer. Matrices are row-major `[out, in]` as in Hugging Face.
pub struct LayerWeights {
    pub input_norm: Vec<f32>, // [hidden]
    pub q_proj: Vec<f32>,     // [q_dim, hidden]
    pub q_bias: Vec<f32>,     // [q_dim]
    pub k_proj: Vec<f32>,     // [kv_dim, hidden]
    pub k_bias: Vec<f32>,     // [kv_dim]
    pub v_proj: Vec<f32>,     // [kv_dim, hidden]
    pub v_bias: Vec<f32>,     // [kv_dim]
    pub o_proj: Vec<f32>,     // [hidden, q_dim]
    pub post_norm: Vec<f32>,  // [hidden]
    pub gate_proj: Vec<f32>,  // [ffn, hidden]
    pub up_proj: Vec<f32>,    // [ffn, hidden]
    pub down_proj: Vec<f32>,  // [hidden, ffn]
}

pub struct ReferenceWeights {
    pub config: QwenConfig,
    pub embed: Vec<f32>, // [vocab, hidden]
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>, // [hidden]
    /// `None` when the model ties `lm_head` to the embedding (no second copy in memory).
    pub lm_head: Option<Vec<f32>>, // [vocab, hidden]
}

impl ReferenceWeights {
    /// The names (and shapes) the reference reads, in load order.
    pub fn tensor_plan(config: &QwenConfig, separate_lm_head: bool) -> Vec<(String, Vec<usize>)> {
        let (h, q, kv, f, v) = (
            config.hidden_size,
            config.q_dim(),
            config.kv_dim(),
            config.intermediate_size,
            config.vocab_size,
        );
        let mut plan = vec![(EMBED.to_string(), vec![v, h])];
        for l in 0..config.num_hidden_layers {
            let p = format!("model.layers.{l}");
            plan.extend([
                (format!("{p}.input_layernorm.weight"), vec![h]),
                (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
                (format!("{p}.self_attn.q_proj.bias"), vec![q]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.k_proj.bias"), vec![kv]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.v_proj.bias"), vec![kv]),
                (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
                (format!("{p}.post_attention_layernorm.weight"), vec![h]),
                (format!("{p}.mlp.gate_proj.weight"), vec![f, h]),
                (format!("{p}.mlp.up_proj.weight"), vec![f, h]),
                (format!("{p}.mlp.down_proj.weight"), vec![h, f]),
            ]);
        }
        plan.push((FINAL_NORM.to_string(), vec![h]));
        if separate_lm_head {
            plan.push((LM_HEAD.to_string(), vec![v, h]));
        }
        plan
    }

    /// Load every tensor; `progress(done, total, name)` is called before each one.
    pub fn load(ckpt: &Checkpoint, progress: &mut dyn FnMut(usize, usize, &str)) -> Result<Self> {
        let config = ckpt.config.clone();
        // A tied model may still ship an lm_head copy; the embedding is used either way then.
        let separate = ckpt.has_separate_lm_head() && !config.tie_word_embeddings;
        if !separate && !config.tie_word_embeddings {
            // Let `Checkpoint::load` produce the named error for the missing tensor.
            ckpt.load(LM_HEAD, &[config.vocab_size, config.hidden_size])?;
        }
        let plan = Self::tensor_plan(&config, separate);
        let total = plan.len();
        let mut tensors = plan.into_iter().enumerate().map(|(i, (name, shape))| {
            progress(i, total, &name);
            ckpt.load(&name, &shape)
        });
        let mut next = || tensors.next().expect("plan length is fixed");

        let embed = next()?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            layers.push(LayerWeights {
                input_norm: next()?,
                q_proj: next()?,
                q_bias: next()?,
                k_proj: next()?,
                k_bias: next()?,
                v_proj: next()?,
                v_bias: next()?,
                o_proj: next()?,
                post_norm: next()?,
                gate_proj: next()?,
                up_proj: next()?,
                down_proj: next()?,
            });
        }
        let final_norm = next()?;
        let lm_head = if separate { Some(next()?) } else { None };
        progress(total, total, "");
        Ok(ReferenceWeights {
            config,
            embed,
            layers,
            final_norm,
            lm_head,
        })
    }

    pub fn lm_head(&self) -> &[f32] {
        self.lm_head.as_deref().unwrap_or(&self.embed)
    }
}
