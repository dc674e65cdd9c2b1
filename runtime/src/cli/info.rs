//! `qwen info`: what was compiled.

use super::{CliError, InfoArgs, Io};
use crate::model::{Model, ModelInfo};

/// `1234567 bytes (1.2 MiB)`.
fn bytes(n: u64) -> String {
    let mib = n as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{n} bytes ({:.2} GiB)", mib / 1024.0)
    } else {
        format!("{n} bytes ({mib:.1} MiB)")
    }
}

/// The human form of `info`.
pub fn format_info(info: &ModelInfo) -> String {
    let eos: Vec<String> = info.eos_token_ids.iter().map(|id| id.to_string()).collect();
    let rows = [
        ("model", info.name.clone()),
        ("quantization", info.scheme.clone()),
        ("backend", info.backend.clone()),
        ("weights", bytes(info.weight_bytes)),
        ("vocabulary", info.vocab_size.to_string()),
        ("hidden size", info.hidden_size.to_string()),
        ("layers", info.num_layers.to_string()),
        ("kv heads", info.num_kv_heads.to_string()),
        ("head dim", info.head_dim.to_string()),
        ("max context", format!("{} tokens", info.max_context)),
        ("eos token ids", eos.join(", ")),
    ];
    let mut out = String::new();
    for (key, value) in rows {
        out.push_str(&format!("{:<14} {value}\n", format!("{key}:")));
    }
    out
}

pub(super) fn run(args: &InfoArgs, model: &dyn Model, io: &mut Io<'_>) -> Result<(), CliError> {
    let info = model.info();
    if args.json {
        let json = serde_json::to_string(info).expect("ModelInfo serializes");
        writeln!(io.stdout, "{json}")?;
    } else {
        io.stdout.write_all(format_info(info).as_bytes())?;
    }
    io.stdout.flush()?;
    Ok(())
}
