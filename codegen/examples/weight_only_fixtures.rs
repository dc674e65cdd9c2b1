//! How much of a scheme's loss on the fixtures comes from its weights alone: the f32
//! reference forward with every decoder matrix replaced by its quantized-then-dequantized
//! value (activations stay f32, so int8 activation rounding plays no part), scored as
//! `tests/compiled_dev.rs` scores the compiled builds: top-1 agreement with transformers at
//! every fixture position, and greedy 32-token continuations identical.
//!
//! ```text
//! cargo run --release -p qwenc-codegen --example weight_only_fixtures -- w8 w4g32 w8g128
//! cargo run --release -p qwenc-codegen --example weight_only_fixtures -- dir:COMPRESSED_DIR
//! ```
//! `w8g{N}` is int8 with an f16 scale per group of N inputs (llama.cpp's Q8_0 is w8g32), to
//! tell per-row scaling from 8-bit rounding as such. (The docs/quality.md table was measured
//! with a scale of max|w|/127 before `w8g` became a scheme; the scheme maps the extreme to −128.)
//! `dir:` reads the matrices (and norms, which AWQ rescales) of a `qwenc compress` output.
//! The embedding and lm_head stay f32.

use std::path::Path;

use qwenc_codegen::compress::format::CompressedModel;
use qwenc_codegen::quant::{dequantize, quantize_rtn, Scheme};
use qwenc_codegen::reference::{argmax, Eos, KvCache, ReferenceWeights};
use qwenc_codegen::Checkpoint;
use qwenc_runtime::model::LogitsFor;
use serde::Deserialize;

const MODEL: &str = "models/qwen2.5-coder-0.5b-instruct.gguf";
const FIXTURES: &str = "../shared/fixtures/reference_logits.json";

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}
#[derive(Deserialize)]
struct Case {
    ids: Vec<u32>,
    positions: Vec<Position>,
    greedy_32: Vec<u32>,
}
#[derive(Deserialize)]
struct Position {
    top_ids: Vec<u32>,
}

/// Replaces every decoder matrix of `w` as `mode` says.
fn apply(w: &mut ReferenceWeights, mode: &str) -> Result<(), String> {
    if let Some(dir) = mode.strip_prefix("dir:") {
        let cm = CompressedModel::open(Path::new(dir)).map_err(|e| e.to_string())?;
        let m = |n: String| {
            cm.matrix(&n)
                .map(|q| dequantize(&q))
                .map_err(|e| e.to_string())
        };
        let v = |n: String| cm.vector(&n).map_err(|e| e.to_string());
        for (i, l) in w.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}.");
            l.q_proj = m(format!("{p}self_attn.q_proj.weight"))?;
            l.k_proj = m(format!("{p}self_attn.k_proj.weight"))?;
            l.v_proj = m(format!("{p}self_attn.v_proj.weight"))?;
            l.o_proj = m(format!("{p}self_attn.o_proj.weight"))?;
            l.gate_proj = m(format!("{p}mlp.gate_proj.weight"))?;
            l.up_proj = m(format!("{p}mlp.up_proj.weight"))?;
            l.down_proj = m(format!("{p}mlp.down_proj.weight"))?;
            l.input_norm = v(format!("{p}input_layernorm.weight"))?;
            l.post_norm = v(format!("{p}post_attention_layernorm.weight"))?;
        }
        return Ok(());
    }
    let quantize = |m: &mut Vec<f32>, cols: usize| -> Result<(), String> {
        let scheme: Scheme = mode.parse().map_err(|e| format!("{e}"))?;
        *m = dequantize(&quantize_rtn(m, m.len() / cols, cols, scheme));
        Ok(())
    };
    let (h, f, q) = (
        w.config.hidden_size,
        w.config.intermediate_size,
        w.config.q_dim(),
    );
    for l in &mut w.layers {
        for (m, cols) in [
            (&mut l.q_proj, h),
            (&mut l.k_proj, h),
            (&mut l.v_proj, h),
            (&mut l.o_proj, q),
            (&mut l.gate_proj, h),
            (&mut l.up_proj, h),
            (&mut l.down_proj, f),
        ] {
            quantize(m, cols)?;
        }
    }
    Ok(())
}

fn main() -> Result<(), String> {
    let fixture: Fixture = serde_json::from_str(
        &std::fs::read_to_string(FIXTURES).map_err(|e| format!("{FIXTURES}: {e}"))?,
    )
    .map_err(|e| e.to_string())?;
    let ckpt = Checkpoint::open(Path::new(MODEL)).map_err(|e| e.to_string())?;
    for mode in std::env::args().skip(1) {
        let mut w = ReferenceWeights::load(&ckpt, &mut |_, _, _| {}).map_err(|e| e.to_string())?;
        apply(&mut w, &mode)?;
        let (mut same, mut total, mut identical, mut diverge) = (0, 0, 0, Vec::new());
        let eos = Eos::Suppress(w.config.eos_token_ids.clone());
        for case in &fixture.cases {
            let mut cache = KvCache::new(w.config.num_hidden_layers);
            let logits = w
                .forward(&case.ids, &mut cache, LogitsFor::All)
                .map_err(|e| e.to_string())?;
            for (row, want) in logits.iter().zip(&case.positions) {
                same += (argmax(row) == want.top_ids[0]) as usize;
                total += 1;
            }
            let got = w
                .generate_greedy(&case.ids, 32, &eos, &mut |_| {})
                .map_err(|e| e.to_string())?;
            identical += (got == case.greedy_32) as usize;
            diverge.push(got.iter().zip(&case.greedy_32).position(|(a, b)| a != b));
        }
        println!(
            "{mode}: top-1 {same}/{total}, greedy 32 identical {identical}/{} (first differing token per prompt: {diverge:?})",
            fixture.cases.len()
        );
    }
    Ok(())
}
