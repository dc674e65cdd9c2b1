//! `qwenc`: the host tool. Inspect a checkpoint, tokenize, run the f32 reference.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use qwenc_codegen::compress::{CompressOptions, CompressPlan, Rtn, SchemeArgs};
use qwenc_codegen::quant::Scheme;
use qwenc_codegen::reference::{Eos, ReferenceWeights};
use qwenc_codegen::Checkpoint;
use qwenc_runtime::tokenizer::{StreamDecoder, Tokenizer};

#[derive(Parser)]
#[command(name = "qwenc", version, about = "qwenc: compile Qwen2.5 models into fast CPU executables")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the config, the tensor table and the bytes by storage type.
    Info {
        /// A Hugging Face directory or a GGUF file.
        model: PathBuf,
    },
    /// Tokenize text from stdin into a JSON array of ids (or decode one with --decode).
    Tokenize {
        model: PathBuf,
        /// Read a JSON array of ids from stdin and print the text.
        #[arg(long)]
        decode: bool,
    },
    /// Greedy generation with the f32 reference model (slow, exact: the oracle).
    Reference {
        model: PathBuf,
        prompt: String,
        /// Number of new tokens.
        #[arg(short = 'n', long, default_value_t = 32)]
        max_tokens: usize,
        /// Print {"prompt_ids":[...],"ids":[...],"text":"..."} instead of streaming text.
        #[arg(long)]
        json: bool,
        /// Never pick end-of-sequence tokens: generate exactly N tokens (as transformers'
        /// min_new_tokens, which the fixtures used).
        #[arg(long)]
        ignore_eos: bool,
    },
    /// Quantize a checkpoint into a compressed model directory (the compiler's input).
    Compress {
        /// A Hugging Face directory or a GGUF file.
        source: PathBuf,
        /// Output directory (config.json, tokenizer.json, manifest.json, model.safetensors).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Default scheme of every matrix: f32, bf16, w8, w4g{32,64,128,256}, w4g{N}a (asymmetric).
        /// Embedding and lm_head default to w8 unless this is f32, bf16 or w8.
        #[arg(long, value_name = "S")]
        scheme: Option<Scheme>,
        /// Scheme of the attention projections (q/k/v/o).
        #[arg(long, value_name = "S")]
        attn: Option<Scheme>,
        /// Scheme of the MLP projections (gate/up/down).
        #[arg(long, value_name = "S")]
        mlp: Option<Scheme>,
        /// Scheme of the token embedding (a tied model stores it once, in the --lm-head scheme).
        #[arg(long, value_name = "S")]
        embed: Option<Scheme>,
        /// Scheme of the output projection.
        #[arg(long = "lm-head", value_name = "S")]
        lm_head: Option<Scheme>,
        /// Write into an existing non-empty directory.
        #[arg(long)]
        force: bool,
    },
    /// Compile a model into the per-model executable `qwen` (and its `.weights` file).
    /// Runs `cargo build --release` in the qwenc source tree with QWENC_MODEL set.
    Build {
        /// A directory from `qwenc compress`, an HF directory or a GGUF file.
        model: PathBuf,
        /// Where to put the executable; the weights go to `<output>.weights`.
        #[arg(short, long, default_value = "qwen")]
        output: PathBuf,
        /// Kernel backend: `native` (what the build target supports) or `scalar`.
        #[arg(long, default_value = "native")]
        target: String,
        /// Schemes for an HF directory or GGUF compiled directly (QWENC_SCHEME syntax:
        /// `w4g32`, `w8`, `w4g32,embed=w8,lm_head=w8`). A compressed directory keeps its own.
        #[arg(long)]
        scheme: Option<String>,
        /// Cross-compile for this Rust target triple (e.g. aarch64-unknown-linux-gnu).
        #[arg(long)]
        triple: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { model } => info(&model),
        Command::Tokenize { model, decode } => tokenize(&model, decode),
        Command::Reference {
            model,
            prompt,
            max_tokens,
            json,
            ignore_eos,
        } => reference(&model, &prompt, max_tokens, json, ignore_eos),
        Command::Compress {
            source,
            output,
            scheme,
            attn,
            mlp,
            embed,
            lm_head,
            force,
        } => {
            let schemes = SchemeArgs {
                scheme,
                attn,
                mlp,
                embed,
                lm_head,
            };
            compress(&source, &output, CompressOptions { schemes, force })
        }
        Command::Build {
            model,
            output,
            target,
            scheme,
            triple,
        } => build(&model, &output, &target, scheme.as_deref(), triple.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyResult = Result<(), Box<dyn std::error::Error>>;

fn info(path: &Path) -> AnyResult {
    let ckpt = Checkpoint::open(path)?;
    let c = &ckpt.config;
    println!("model: {} ({})", path.display(), ckpt.format);
    println!(
        "config: hidden {} · layers {} · heads {} q / {} kv × {} · ffn {} · vocab {} · context {} · rope θ {} · eps {:e} · tied lm_head {}",
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.intermediate_size,
        c.vocab_size,
        c.max_position_embeddings,
        c.rope_theta,
        c.rms_norm_eps,
        c.tie_word_embeddings
    );
    println!(
        "tokenizer: {} vocab entries, {} merges, {} added tokens",
        ckpt.tokenizer.vocab.len(),
        ckpt.tokenizer.merges.len(),
        ckpt.tokenizer.added.len()
    );
    let tensors = ckpt.tensors.tensors();
    println!("\n{:<52} {:>6} {:>16} {:>12}", "tensor", "dtype", "shape", "bytes");
    let mut by_dtype: std::collections::BTreeMap<String, (usize, u64, usize)> = Default::default();
    for t in &tensors {
        println!("{:<52} {:>6} {:>16} {:>12}", t.name, t.dtype, format!("{:?}", t.shape), t.n_bytes);
        let e = by_dtype.entry(t.dtype.clone()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
        e.2 += t.n_elements();
    }
    println!("\n{:<8} {:>8} {:>14} {:>14} {:>8}", "dtype", "tensors", "bytes", "params", "bits/w");
    let (mut all_bytes, mut all_params) = (0u64, 0usize);
    for (dtype, (count, bytes, params)) in &by_dtype {
        println!(
            "{dtype:<8} {count:>8} {bytes:>14} {params:>14} {:>8.3}",
            *bytes as f64 * 8.0 / *params as f64
        );
        all_bytes += bytes;
        all_params += params;
    }
    println!(
        "{:<8} {:>8} {all_bytes:>14} {all_params:>14} {:>8.3}",
        "total",
        tensors.len(),
        all_bytes as f64 * 8.0 / all_params as f64
    );
    Ok(())
}

fn tokenize(path: &Path, decode: bool) -> AnyResult {
    let ckpt = Checkpoint::open(path)?;
    let tokenizer = Tokenizer::from_spec(ckpt.tokenizer)?;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    if decode {
        let ids: Vec<u32> = serde_json::from_str(&input)
            .map_err(|e| format!("--decode expects a JSON array of token ids on stdin: {e}"))?;
        print!("{}", tokenizer.try_decode(&ids)?);
    } else {
        println!("{}", serde_json::to_string(&tokenizer.encode(&input))?);
    }
    Ok(())
}

fn reference(path: &Path, prompt: &str, max_tokens: usize, json: bool, ignore_eos: bool) -> AnyResult {
    let ckpt = Checkpoint::open(path)?;
    let tokenizer = Tokenizer::from_spec(ckpt.tokenizer.clone())?;
    let weights = load_with_progress(&ckpt)?;
    drop(ckpt);

    let prompt_ids = tokenizer.encode(prompt);
    let eos_ids = weights.config.eos_token_ids.clone();
    let eos = if ignore_eos { Eos::Suppress(eos_ids) } else { Eos::StopAt(eos_ids) };
    let start = Instant::now();
    let mut stream = StreamDecoder::new(&tokenizer);
    let mut stdout = std::io::stdout().lock();
    let ids = weights.generate_greedy(&prompt_ids, max_tokens, &eos, &mut |id| {
        if !json {
            if let Ok(text) = stream.push(id) {
                let _: std::io::Result<()> = stdout.write_all(text.as_bytes());
                let _: std::io::Result<()> = stdout.flush();
            }
        }
    })?;
    let seconds = start.elapsed().as_secs_f64();
    if json {
        let out = serde_json::json!({
            "prompt_ids": prompt_ids,
            "ids": ids,
            "text": tokenizer.decode(&ids),
        });
        println!("{out}");
    } else {
        println!();
        eprintln!(
            "[reference f32: {} prompt + {} new tokens in {seconds:.2} s, {:.2} tokens/s]",
            prompt_ids.len(),
            ids.len(),
            ids.len() as f64 / seconds
        );
    }
    Ok(())
}

/// Load the f32 weights with a progress bar over tensors.
fn load_with_progress(ckpt: &Checkpoint) -> Result<ReferenceWeights, qwenc_codegen::LoadError> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("loading {bar:40} {pos}/{len} tensors {elapsed} {msg}")
            .expect("static template"),
    );
    let weights = ReferenceWeights::load(ckpt, &mut |done, total, name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    });
    bar.finish_and_clear();
    weights
}

fn compress(source: &Path, output: &Path, options: CompressOptions) -> AnyResult {
    let start = Instant::now();
    let plan = CompressPlan::new(source, output, &options)?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    let bar = ProgressBar::new(plan.tensors.len() as u64).with_style(
        ProgressStyle::with_template("compressing {bar:40} {pos}/{len} tensors {elapsed} {msg}")
            .expect("static template"),
    );
    let report = plan.run(&Rtn, &mut |done, _total, name| {
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    });
    bar.finish_and_clear();
    let report = report?;
    let m = &report.manifest;
    println!(
        "compressed {} ({}) into {} in {:.1} s{}",
        source.display(),
        m.source.format,
        report.out_dir.display(),
        start.elapsed().as_secs_f64(),
        if m.tied_embeddings {
            " (tied embeddings: stored once)"
        } else {
            ""
        }
    );
    println!(
        "\n{:<14} {:<8} {:>8} {:>14} {:>14} {:>8}",
        "class", "scheme", "tensors", "params", "bytes", "bits/w"
    );
    for c in m.class_totals() {
        println!(
            "{:<14} {:<8} {:>8} {:>14} {:>14} {:>8.3}",
            c.class.label(),
            c.scheme.map_or("f32".to_string(), |s| s.to_string()),
            c.tensors,
            c.params,
            c.bytes,
            c.bits_per_weight()
        );
    }
    println!(
        "{:<14} {:<8} {:>8} {:>14} {:>14} {:>8.3}",
        "total",
        "",
        m.tensors.len(),
        m.totals.params,
        m.totals.bytes,
        m.totals.bits_per_weight
    );
    println!(
        "\nmodel.safetensors {} bytes · directory {} bytes ({:.1} MiB)",
        report.safetensors_bytes,
        report.dir_bytes,
        report.dir_bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// `QWENC_MODEL=... cargo build --release --bin qwen` in the source tree, then copy the
/// executable and its weights to `output`.
fn build(model: &Path, output: &Path, target: &str, scheme: Option<&str>, triple: Option<&str>) -> AnyResult {
    let model = std::fs::canonicalize(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cargo = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(&source_tree)
        .args(["build", "--release", "--bin", "qwen"])
        .env("QWENC_MODEL", &model)
        .env("QWENC_TARGET", target);
    if let Some(scheme) = scheme {
        cargo.env("QWENC_SCHEME", scheme);
    }
    if let Some(triple) = triple {
        cargo.args(["--target", triple]);
    }
    let started = Instant::now();
    let status = cargo.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status})").into());
    }
    let mut built = source_tree.join("target");
    if let Some(triple) = triple {
        built.push(triple);
    }
    built.push("release");
    let mut weights_out = output.as_os_str().to_owned();
    weights_out.push(".weights");
    std::fs::copy(built.join("qwen"), output)?;
    std::fs::copy(built.join("qwen.weights"), &weights_out)?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "built {} ({:.1} MB) + {} ({:.1} MB) in {:.0} s",
        output.display(),
        size(output) as f64 / 1e6,
        Path::new(&weights_out).display(),
        size(Path::new(&weights_out)) as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
