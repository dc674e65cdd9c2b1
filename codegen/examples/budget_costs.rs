//! The budget proxy's cost of every unit in every candidate scheme (`budget::measure`, the
//! numbers `compress --budget-mb` chooses from), summed per class, with the unit weights
//! divided out: what the per-class weights `EMBED_WEIGHT` / `LM_HEAD_WEIGHT` are fitted on,
//! against the measured KL of lowering one class alone (docs/quality.md, "Weighing the
//! units").
//!
//! ```text
//! cargo run --release -p qwenc-codegen --example budget_costs -- [MODEL] [CALIB_TEXT]
//! ```
//! Calibrates as `compress` does by default: the first 512 tokens of the text, one sequence.

use qwenc_codegen::compress::budget::{measure, CANDIDATES, EMBED_WEIGHT, LM_HEAD_WEIGHT};
use qwenc_codegen::compress::calibrate::capture;
use qwenc_codegen::reference::ReferenceWeights;
use qwenc_codegen::Checkpoint;
use qwenc_runtime::tokenizer::Tokenizer;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .first()
        .map_or("models/qwen2.5-coder-0.5b-instruct.gguf", String::as_str);
    let text = args
        .get(1)
        .map_or("../shared/data/war_and_peace.txt", String::as_str);
    let checkpoint = Checkpoint::open(std::path::Path::new(model))?;
    let tokenizer = Tokenizer::from_spec(checkpoint.tokenizer.clone())?;
    let tokens = tokenizer.encode(&std::fs::read_to_string(text)?);
    let weights = ReferenceWeights::load(&checkpoint, &mut |_, _, _| {})?;
    let tied = weights.lm_head.is_none();
    let calib = capture(&weights, &tokens, 512, 512, &mut |_, _| {})?;
    let groups = measure(&weights, &calib, &CANDIDATES, &mut |_, _| {});

    // Class of a unit, and the weight measure() gave it.
    let class = |name: &str| -> (&'static str, f64) {
        match name {
            "embed" if tied => ("embed+lm_head (tied)", EMBED_WEIGHT + LM_HEAD_WEIGHT),
            "embed" => ("embed", EMBED_WEIGHT),
            "lm_head" => ("lm_head", LM_HEAD_WEIGHT),
            n if n.ends_with(".qkv") || n.ends_with(".o_proj") => ("attn", 1.0),
            _ => ("mlp", 1.0),
        }
    };
    println!("unweighted proxy cost summed per class (units whose group divides the inputs)");
    print!("{:<22}", "class");
    for s in CANDIDATES {
        print!("{:>10}", s.to_string());
    }
    println!();
    let mut classes: Vec<&str> = Vec::new();
    for g in &groups {
        if !classes.contains(&class(&g.name).0) {
            classes.push(class(&g.name).0);
        }
    }
    for c in classes {
        print!("{c:<22}");
        for s in CANDIDATES {
            let mut sum = 0.0;
            let mut all = true;
            for g in groups.iter().filter(|g| class(&g.name).0 == c) {
                match g.options.iter().find(|o| o.scheme == s) {
                    Some(o) => sum += o.cost / class(&g.name).1,
                    None => all = false,
                }
            }
            if all {
                print!("{sum:>10.4}");
            } else {
                print!("{:>10}", "—");
            }
        }
        println!();
    }
    Ok(())
}
