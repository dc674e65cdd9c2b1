//! A tiny synthetic Qwen2 checkpoint (random weights, a small byte-level tokenizer) written
//! as a Hugging Face directory. Tests and the default build use it so that they run in
//! seconds and need no download.

use std::collections::BTreeMap;
use std::path::Path;

use qwenc_runtime::tokenizer::TokenizerSpec;
use safetensors::tensor::{Dtype, TensorView};

use crate::model_io::config::QwenConfig;
use crate::reference::ReferenceWeights;

/// Storage type of the synthetic safetensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreAs {
    F32,
    F16,
    BF16,
}

#[derive(Clone, Debug)]
pub struct SyntheticOptions {
    pub tie_word_embeddings: bool,
    pub store_as: StoreAs,
    /// Split the tensors over two shard files with a `model.safetensors.index.json`.
    pub sharded: bool,
    pub seed: u64,
}

impl Default for SyntheticOptions {
    fn default() -> Self {
        SyntheticOptions {
            tie_word_embeddings: false,
            store_as: StoreAs::F32,
            sharded: false,
            seed: 1,
        }
    }
}

/// The tiny model's shapes: every dimension small, but GQA (2 query heads per KV head),
/// biases and an odd number of layers, like the real thing.
pub fn tiny_config(tie_word_embeddings: bool) -> QwenConfig {
    QwenConfig {
        hidden_size: 64,
        intermediate_size: 192,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        vocab_size: 320,
        max_position_embeddings: 256,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        tie_word_embeddings,
        bos_token_id: Some(ENDOFTEXT),
        eos_token_ids: vec![IM_END, ENDOFTEXT],
    }
}

/// Special token ids of the tiny tokenizer (after the 256 bytes and the merges).
pub const ENDOFTEXT: u32 = 300;
pub const IM_START: u32 = ENDOFTEXT + 1;
pub const IM_END: u32 = ENDOFTEXT + 2;

/// A byte-level BPE vocabulary: the 256 byte symbols, a few English merges, ChatML specials.
pub fn tiny_tokenizer() -> TokenizerSpec {
    const MERGES: [(&str, &str); 12] = [
        ("Ġ", "t"),
        ("h", "e"),
        ("Ġt", "he"),
        ("i", "n"),
        ("e", "r"),
        ("a", "n"),
        ("o", "n"),
        ("Ġ", "a"),
        ("Ġ", "s"),
        ("r", "e"),
        ("Ġ", "w"),
        ("o", "r"),
    ];
    TokenizerSpec::byte_level_chatml(&MERGES, ENDOFTEXT)
}

/// xorshift64*: deterministic, dependency-free random numbers for weights.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40; // 24 bits
        bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0 // uniform in [-1, 1)
    }
}

/// The tiny model's tensors (Hugging Face names and shapes) with random values.
pub fn tiny_tensors(config: &QwenConfig, seed: u64) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut tensors = BTreeMap::new();
    let separate_head = !config.tie_word_embeddings;
    for (name, shape) in ReferenceWeights::tensor_plan(config, separate_head) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            (0..n).map(|_| 1.0 + 0.2 * rng.next_f32()).collect()
        } else if name.ends_with(".bias") {
            (0..n).map(|_| 0.1 * rng.next_f32()).collect()
        } else {
            // Scale like a trained model's rows: |w| ~ 1/sqrt(fan_in), a bit larger so logits spread.
            let fan_in = *shape.last().unwrap() as f32;
            let scale = 2.0 / fan_in.sqrt();
            (0..n).map(|_| scale * rng.next_f32()).collect()
        };
        tensors.insert(name, (shape, values));
    }
    tensors
}

/// Write the tiny model as a Hugging Face directory: config.json, tokenizer.json, safetensors.
pub fn write_tiny_model(dir: &Path, options: &SyntheticOptions) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = tiny_config(options.tie_word_embeddings);
    let json = serde_json::to_string_pretty(&config.to_hf_json())?;
    std::fs::write(dir.join("config.json"), json)?;
    std::fs::write(
        dir.join("tokenizer.json"),
        tiny_tokenizer().to_tokenizer_json(),
    )?;

    let tensors = tiny_tensors(&config, options.seed);
    let (dtype, encoded): (Dtype, BTreeMap<&str, Vec<u8>>) = {
        let encode = |v: &[f32]| -> Vec<u8> {
            match options.store_as {
                StoreAs::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                StoreAs::F16 => v
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
                StoreAs::BF16 => v
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            }
        };
        let dtype = match options.store_as {
            StoreAs::F32 => Dtype::F32,
            StoreAs::F16 => Dtype::F16,
            StoreAs::BF16 => Dtype::BF16,
        };
        (
            dtype,
            tensors
                .iter()
                .map(|(k, (_, v))| (k.as_str(), encode(v)))
                .collect(),
        )
    };
    let views = |names: &mut dyn Iterator<Item = &String>| -> Vec<(String, TensorView<'_>)> {
        names
            .map(|name| {
                let view = TensorView::new(dtype, tensors[name].0.clone(), &encoded[name.as_str()])
                    .expect("shape and byte length agree by construction");
                (name.clone(), view)
            })
            .collect()
    };
    let to_io = |e: safetensors::SafeTensorError| std::io::Error::other(e.to_string());
    if options.sharded {
        // Layers in one shard, everything else in the other.
        let (layers, rest): (Vec<&String>, Vec<&String>) =
            tensors.keys().partition(|n| n.starts_with("model.layers."));
        let mut weight_map = serde_json::Map::new();
        for (file, names) in [
            ("model-00001-of-00002.safetensors", rest),
            ("model-00002-of-00002.safetensors", layers),
        ] {
            for n in &names {
                weight_map.insert((*n).clone(), file.into());
            }
            safetensors::serialize_to_file(views(&mut names.into_iter()), &None, &dir.join(file))
                .map_err(to_io)?;
        }
        let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index)?,
        )?;
    } else {
        safetensors::serialize_to_file(
            views(&mut tensors.keys()),
            &None,
            &dir.join("model.safetensors"),
        )
        .map_err(to_io)?;
    }
    Ok(())
}

/// Deterministic calibration ids for a synthetic model (`n` ids below `vocab`): what the tiny
/// model's mixed build and its tests calibrate on.
pub fn synthetic_calibration_ids(n: usize, vocab: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % vocab).collect()
}
