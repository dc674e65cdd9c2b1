//! Tensor names: llama.cpp's GGUF names for a Qwen2 model and their Hugging Face equivalents.
//! Qwen2 uses NEOX-style RoPE, so llama.cpp's converter stores q/k unpermuted: the data of
//! every tensor is already row-major in the Hugging Face layout.

/// Names outside the repeated blocks.
const GLOBAL: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Suffixes inside `blk.N.` / `model.layers.N.`.
const PER_LAYER: &[(&str, &str)] = &[
    ("attn_norm.weight", "input_layernorm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// A layer index written canonically (`0`, `17`; not `017` or `+1`).
fn layer_index(s: &str) -> Option<u32> {
    let n: u32 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

/// The Hugging Face name of a GGUF tensor, `None` when the name is not part of a Qwen2 model.
pub fn gguf_to_hf(name: &str) -> Option<String> {
    if let Some(&(_, hf)) = GLOBAL.iter().find(|(g, _)| *g == name) {
        return Some(hf.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (n, suffix) = rest.split_once('.')?;
    let n = layer_index(n)?;
    let &(_, hf) = PER_LAYER.iter().find(|(g, _)| *g == suffix)?;
    Some(format!("model.layers.{n}.{hf}"))
}

/// The GGUF name of a Hugging Face tensor (the inverse of [`gguf_to_hf`]).
pub fn hf_to_gguf(name: &str) -> Option<String> {
    if let Some(&(g, _)) = GLOBAL.iter().find(|(_, h)| *h == name) {
        return Some(g.to_string());
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (n, suffix) = rest.split_once('.')?;
    let n = layer_index(n)?;
    let &(g, _) = PER_LAYER.iter().find(|(_, h)| *h == suffix)?;
    Some(format!("blk.{n}.{g}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_qwen2_name() {
        let cases = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output.weight", "lm_head.weight"),
            ("output_norm.weight", "model.norm.weight"),
            (
                "blk.0.attn_norm.weight",
                "model.layers.0.input_layernorm.weight",
            ),
            (
                "blk.23.ffn_norm.weight",
                "model.layers.23.post_attention_layernorm.weight",
            ),
            ("blk.5.attn_q.bias", "model.layers.5.self_attn.q_proj.bias"),
            (
                "blk.5.attn_k.weight",
                "model.layers.5.self_attn.k_proj.weight",
            ),
            ("blk.5.attn_v.bias", "model.layers.5.self_attn.v_proj.bias"),
            (
                "blk.10.attn_output.weight",
                "model.layers.10.self_attn.o_proj.weight",
            ),
            (
                "blk.1.ffn_gate.weight",
                "model.layers.1.mlp.gate_proj.weight",
            ),
            ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"),
            (
                "blk.1.ffn_down.weight",
                "model.layers.1.mlp.down_proj.weight",
            ),
        ];
        for (g, h) in cases {
            assert_eq!(gguf_to_hf(g).as_deref(), Some(h), "{g}");
            assert_eq!(hf_to_gguf(h).as_deref(), Some(g), "{h}");
        }
    }

    #[test]
    fn rejects_unknown_names() {
        for g in [
            "rope_freqs.weight",
            "blk.x.attn_q.weight",
            "blk.01.attn_q.weight",
            "blk.1.attn_q",
            "blk.1.attn_output.bias",
            "blk..attn_q.weight",
            "token_embd",
            "",
        ] {
            assert_eq!(gguf_to_hf(g), None, "{g}");
        }
        assert_eq!(hf_to_gguf("model.layers.0.mlp.fc.weight"), None);
    }
}
