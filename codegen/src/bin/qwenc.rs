//! `qwenc`: the host tool. Inspect a checkpoint, tokenize, run the f32 reference.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use qwenc_codegen::compress::calibrate::{LayerScales, Methods};
use qwenc_codegen::compress::format::{CompressedModel, Manifest, TensorClass, MANIFEST_FILE};
use qwenc_codegen::compress::pipeline::{
    self, Budget, CalibrationInput, CalibrationText, Event, Step, TIE_DISTANCE_WARNING,
};
use qwenc_codegen::compress::{CompressOptions, CompressPlan, SchemeArgs};
use qwenc_codegen::model_io::checkpoint::LayerTensor;
use qwenc_codegen::quant::awq::AwqOptions;
use qwenc_codegen::quant::gptq::GptqOptions;
use qwenc_codegen::quant::Scheme;
use qwenc_codegen::reference::{Eos, ReferenceWeights};
use qwenc_codegen::Checkpoint;
use qwenc_runtime::tokenizer::{StreamDecoder, Tokenizer};

#[derive(Parser)]
#[command(
    name = "qwenc",
    version,
    about = "qwenc: compile Qwen2.5 models into fast CPU executables"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the config, the tensor table and the bytes by storage type; for a compressed
    /// directory, its manifest (every tensor's scheme, bytes and, after --budget-mb, predicted cost).
    Info {
        /// A Hugging Face directory, a GGUF file or a directory from `qwenc compress`.
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
        /// Default scheme of every matrix: f32, bf16, w8, w8g{N} (int8, scale per N inputs),
        /// w4g{32,64,128,256}, w{4,3,2}g{N}[a] (a: asymmetric). Embedding and lm_head default
        /// to w8 unless this is f32, bf16, w8 or w8g{N}.
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
        /// Mixed precision: choose each matrix's scheme (w4g{128,64,32}, their asymmetric
        /// forms, w8, w8g128, w3g128, w3g{128,64}a, w2g{128,64,32}a) to minimise the predicted loss
        /// with model.safetensors at most N MB
        /// (10^6 bytes). Calibrates on --calib-file; incompatible with the scheme flags.
        #[arg(long, value_name = "N", conflicts_with_all = ["scheme", "attn", "mlp", "embed", "lm_head"])]
        budget_mb: Option<f64>,
        /// Store an untied model's lm_head once and gather the embedding from it, as a tied
        /// model does (saves one vocab × hidden matrix: 136 M weights on Qwen2.5-0.5B). Meant for
        /// checkpoints whose two matrices are copies of one (the dev GGUF: a Q5_0 embedding and
        /// a Q8_0 lm_head, 4.4% apart); compress prints how far apart they were.
        #[arg(long)]
        tie_embeddings: bool,
        /// Write into an existing non-empty directory.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        calib: CalibArgs,
    },
    /// Reference logits for `qwen kl`: the f32 reference over chunks of a text, keeping the
    /// top-K logits, the logsumexp and the next token's logit per scored position.
    ReferenceLogits {
        /// A Hugging Face directory, a GGUF file or a compressed directory's source.
        model: PathBuf,
        /// The text (tokenized whole, no BOS).
        #[arg(
            long,
            value_name = "PATH",
            default_value = "../shared/data/wikitext2_test.txt"
        )]
        file: PathBuf,
        /// Output file.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Tokens of the text to use (whole chunks only).
        #[arg(long, default_value_t = 4096)]
        tokens: usize,
        /// Tokens per chunk; the second half of each chunk is scored.
        #[arg(long, default_value_t = 512)]
        context: usize,
        /// Logits kept per position (the rest of the vocabulary is one bucket).
        #[arg(long, default_value_t = 32)]
        top_k: usize,
    },
    /// Compile a model into the per-model executable `qwen` (and its `.weights` file).
    /// Runs `cargo build --release` in the qwenc source tree with QWENC_MODEL set.
    Build {
        /// A directory from `qwenc compress`, an HF directory or a GGUF file.
        model: PathBuf,
        /// Where to put the executable; the weights go to `<output>.weights`.
        #[arg(short, long, default_value = "qwen")]
        output: PathBuf,
        /// Kernel backend: `native` (what the build target supports), `scalar`, `x86-avx2`,
        /// `x86-avx512`, `aarch64-neon`, `aarch64-i8mm`, `aarch64-sve2` (128-bit SVE),
        /// `aarch64-sve2-256` or `aarch64-sve2-512` (aarch64 ones with `--triple` from x86).
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

/// Quantization method and calibration flags of `compress`.
#[derive(clap::Args, Clone, Debug)]
struct CalibArgs {
    /// rtn, awq or gptq for the attention and MLP matrices, or per class:
    /// `attn=awq,mlp=gptq,lm_head=gptq` (an untied lm_head takes rtn or gptq, default rtn;
    /// the embedding, and a tied lm_head, always use rtn).
    #[arg(long, value_name = "M", default_value = "rtn")]
    method: Methods,
    /// Calibration text for awq/gptq (never the evaluation data).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "../shared/data/war_and_peace.txt"
    )]
    calib_file: PathBuf,
    /// Calibration tokens (from the start of --calib-file).
    #[arg(long, value_name = "N", default_value_t = 512)]
    calib_tokens: usize,
    /// Tokens per calibration sequence (each from an empty cache).
    #[arg(long, value_name = "N", default_value_t = 512)]
    calib_seq_len: usize,
    /// AWQ: grid points of α in [0, 1).
    #[arg(long, value_name = "N", default_value_t = 10)]
    awq_grid: usize,
    /// AWQ: calibration tokens in the search's error.
    #[arg(long, value_name = "N", default_value_t = 128)]
    awq_search_tokens: usize,
    /// GPTQ: damping, fraction of the mean diagonal of H.
    #[arg(long, value_name = "F", default_value_t = 0.01)]
    gptq_damp: f64,
    /// GPTQ: quantize columns in decreasing order of diag H (static groups).
    #[arg(long)]
    gptq_act_order: bool,
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
            budget_mb,
            tie_embeddings,
            force,
            calib,
        } => {
            let schemes = SchemeArgs {
                scheme,
                attn,
                mlp,
                embed,
                lm_head,
            };
            let options = pipeline::Options {
                plan: CompressOptions {
                    schemes,
                    force,
                    tie_embeddings,
                },
                budget: budget_mb.map(Budget::Megabytes),
                ..calib.options()
            };
            compress(&source, &output, &options, &calib)
        }
        Command::ReferenceLogits {
            model,
            file,
            output,
            tokens,
            context,
            top_k,
        } => reference_logits(&model, &file, &output, tokens, context, top_k),
        Command::Build {
            model,
            output,
            target,
            scheme,
            triple,
        } => build(
            &model,
            &output,
            &target,
            scheme.as_deref(),
            triple.as_deref(),
        ),
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
    if path.join(MANIFEST_FILE).exists() {
        let model = CompressedModel::open(path)?;
        println!(
            "compressed model: {} (quantizer {})",
            path.display(),
            model.manifest.quantizer
        );
        print_manifest(&model.manifest);
        return Ok(());
    }
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
    println!(
        "\n{:<52} {:>6} {:>16} {:>12}",
        "tensor", "dtype", "shape", "bytes"
    );
    let mut by_dtype: std::collections::BTreeMap<String, (usize, u64, usize)> = Default::default();
    for t in &tensors {
        println!(
            "{:<52} {:>6} {:>16} {:>12}",
            t.name,
            t.dtype,
            format!("{:?}", t.shape),
            t.n_bytes
        );
        let e = by_dtype.entry(t.dtype.clone()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
        e.2 += t.n_elements();
    }
    println!(
        "\n{:<8} {:>8} {:>14} {:>14} {:>8}",
        "dtype", "tensors", "bytes", "params", "bits/w"
    );
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

fn reference(
    path: &Path,
    prompt: &str,
    max_tokens: usize,
    json: bool,
    ignore_eos: bool,
) -> AnyResult {
    let ckpt = Checkpoint::open(path)?;
    let tokenizer = Tokenizer::from_spec(ckpt.tokenizer.clone())?;
    let weights = load_with_progress(&ckpt)?;
    drop(ckpt);

    let prompt_ids = tokenizer.encode(prompt);
    let eos_ids = weights.config.eos_token_ids.clone();
    let eos = if ignore_eos {
        Eos::Suppress(eos_ids)
    } else {
        Eos::StopAt(eos_ids)
    };
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

fn reference_logits(
    path: &Path,
    file: &Path,
    output: &Path,
    n_tokens: usize,
    context: usize,
    top_k: usize,
) -> AnyResult {
    use qwenc_codegen::reference::kl::reference_records;
    use qwenc_runtime::reference_logits::{write_reference, ReferenceHeader};
    let start = Instant::now();
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let ckpt = Checkpoint::open(path)?;
    let tokenizer = Tokenizer::from_spec(ckpt.tokenizer.clone())?;
    let mut tokens = tokenizer.encode(&text);
    if top_k == 0 {
        return Err("--top-k must be at least 1".into());
    }
    if tokens.len() < n_tokens {
        eprintln!("note: {} has only {} tokens", file.display(), tokens.len());
    }
    tokens.truncate(n_tokens);
    tokens.truncate(tokens.len() / context.max(1) * context.max(1));
    let weights = load_with_progress(&ckpt)?;
    drop(ckpt);
    let vocab = weights.config.vocab_size;
    let header = ReferenceHeader {
        model: path.display().to_string(),
        text: file.display().to_string(),
        vocab_size: vocab,
        context,
        top_k: top_k.min(vocab),
        tokens,
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "reference logits {bar:40} {pos}/{len} chunks {elapsed}/{duration}",
        )
        .expect("static template"),
    );
    let result = reference_records(&weights, &header, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let records = result?;
    let plan = header.plan()?;
    write_reference(output, &header, &records)?;
    eprintln!(
        "wrote {}: {} positions ({} chunks of {}, top-{}) in {:.1} s",
        output.display(),
        records.len(),
        plan.chunks,
        context,
        header.top_k,
        start.elapsed().as_secs_f64()
    );
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

impl CalibArgs {
    /// The pipeline's options for these flags (schemes and budget aside).
    fn options(&self) -> pipeline::Options {
        pipeline::Options {
            methods: self.method,
            awq: AwqOptions {
                grid: self.awq_grid,
                search_tokens: self.awq_search_tokens,
            },
            gptq: GptqOptions {
                damp: self.gptq_damp,
                act_order: self.gptq_act_order,
                ..Default::default()
            },
            calibration: CalibrationInput {
                text: CalibrationText::File(self.calib_file.clone()),
                tokens: self.calib_tokens,
                seq_len: self.calib_seq_len,
            },
            ..Default::default()
        }
    }
}

/// One progress bar at a time: the bar of the step that reports progress.
#[derive(Default)]
struct Bars {
    current: Option<(Step, ProgressBar)>,
}

impl Bars {
    fn update(&mut self, step: Step, done: usize, total: usize, item: &str) {
        if self.current.as_ref().map(|(s, _)| *s) != Some(step) {
            self.clear();
            let template = match step {
                Step::Load => "loading {bar:40} {pos}/{len} tensors {elapsed} {msg}",
                Step::Calibrate => "calibrating {bar:40} {pos}/{len} sequences {elapsed}",
                Step::Measure => "sensitivity {bar:40} {pos}/{len} matrices {elapsed}",
                Step::AwqSearch => "awq search {bar:40} {pos}/{len} layers {elapsed}/{duration}",
                Step::Write => "compressing {bar:40} {pos}/{len} tensors {elapsed} {msg}",
            };
            let bar = ProgressBar::new(total as u64)
                .with_style(ProgressStyle::with_template(template).expect("static template"));
            self.current = Some((step, bar));
        }
        if let Some((_, bar)) = &self.current {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(item.to_string());
        }
    }

    fn clear(&mut self) {
        if let Some((_, bar)) = self.current.take() {
            bar.finish_and_clear();
        }
    }
}

fn compress(
    source: &Path,
    output: &Path,
    options: &pipeline::Options,
    calib: &CalibArgs,
) -> AnyResult {
    let start = Instant::now();
    let mut bars = Bars::default();
    let result = pipeline::run(source, output, options, &mut |event| match event {
        Event::Progress {
            step,
            done,
            total,
            item,
        } => bars.update(step, done, total, item),
        event => {
            bars.clear();
            print_event(&event, calib);
        }
    });
    bars.clear();
    let report = result?;
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
    print_manifest(m);
    println!(
        "\nmodel.safetensors {} bytes · directory {} bytes ({:.1} MiB)",
        report.safetensors_bytes,
        report.dir_bytes,
        report.dir_bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// What `qwenc compress` says between its progress bars.
fn print_event(event: &Event, calib: &CalibArgs) {
    match event {
        Event::Progress { .. } => {}
        Event::Planned(plan) => print_plan(plan),
        Event::SeparateCopies {
            distance,
            lm_head_weights,
        } => eprintln!(
            "hint: the embedding and the lm_head are {:.2}% apart, two roundings of one matrix: --tie-embeddings stores it once and frees {:.0} M weights of the budget",
            distance * 100.0,
            *lm_head_weights as f64 / 1e6
        ),
        Event::Calibrated {
            calibration,
            elapsed,
        } => eprintln!(
            "calibration: {} tokens of {} in sequences of {}, {:.0} MB of activations ({:.1} s)",
            calibration.tokens,
            calib.calib_file.display(),
            calib.calib_seq_len,
            calibration.bytes() as f64 / 1e6,
            elapsed.as_secs_f64()
        ),
        Event::Budgeted { choice, elapsed } => {
            let b = &choice.info;
            eprintln!(
                "budget: {:.1} MB → matrices {:.1} MB, model.safetensors {:.1} MB (cheapest assignment {:.1} MB); predicted cost {:.4} vs {:.4} for the cheapest ({:.1} s)",
                b.budget_bytes as f64 / 1e6,
                choice.selection.bytes as f64 / 1e6,
                choice.file_len as f64 / 1e6,
                b.minimum_bytes as f64 / 1e6,
                b.predicted_cost,
                b.predicted_cost_minimum,
                elapsed.as_secs_f64()
            );
        }
        Event::AwqSearched { scales, elapsed } => print_awq(scales, elapsed.as_secs_f64()),
    }
}

/// The plan's warnings, and how far `--tie-embeddings` moved the embedding.
fn print_plan(plan: &CompressPlan) {
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(d) = plan.embedding_from_lm_head {
        eprintln!(
            "--tie-embeddings: the embedding is replaced by the lm_head, {:.2}% apart (relative Frobenius distance)",
            d * 100.0
        );
        if d > TIE_DISTANCE_WARNING {
            eprintln!(
                "warning: the embedding and the lm_head are not copies of one matrix ({:.0}% apart): sharing them changes the model; check `qwen kl` before using it",
                d * 100.0
            );
        }
    }
}

/// The AWQ search's output error against RTN's, and α per layer.
fn print_awq(scales: &[LayerScales], seconds: f64) {
    let (mut err, mut rtn) = (0.0, 0.0);
    for s in scales {
        for x in [&s.attn, &s.mlp, &s.down].into_iter().flatten() {
            err += x.error;
            rtn += x.rtn_error;
        }
    }
    let alphas: Vec<String> = scales
        .iter()
        .map(|s| {
            [&s.attn, &s.mlp, &s.down]
                .iter()
                .map(|x| {
                    x.as_ref()
                        .map_or("-".to_string(), |x| format!("{:.2}", x.alpha))
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    eprintln!(
        "awq: output error {:.4e} vs rtn {:.4e} ({:.1}% less) on the search tokens in {:.1} s; α (attn/mlp/down) per layer: {}",
        err,
        rtn,
        100.0 * (1.0 - err / rtn.max(f64::MIN_POSITIVE)),
        seconds,
        alphas.join(" ")
    );
}

/// The class table, and for a `--budget-mb` manifest each layer's chosen schemes with their
/// predicted costs.
fn print_manifest(m: &Manifest) {
    if let Some(d) = m.source.embedding_from_lm_head {
        println!(
            "embedding: the source's lm_head, stored once for both (--tie-embeddings; the source's own embedding was {:.2}% from it)",
            d * 100.0
        );
    }
    if let Some(b) = &m.budget {
        println!(
            "\nbudget {} bytes ({:.1} MB) · cheapest assignment {} bytes · predicted cost {:.5} (cheapest {:.5}) · calibration {} tokens\nproxy: {}",
            b.budget_bytes,
            b.budget_bytes as f64 / 1e6,
            b.minimum_bytes,
            b.predicted_cost,
            b.predicted_cost_minimum,
            b.calibration_tokens,
            b.proxy
        );
        let entry = |name: &str| {
            m.tensors
                .get(name)
                .map_or("-".to_string(), |e| match e.predicted_cost {
                    Some(c) => format!("{} {:.2e}", e.scheme, c),
                    None => e.scheme.to_string(),
                })
        };
        // Fused groups share a scheme; their cost is the sum of the members'.
        let group = |names: &[String]| {
            let entries: Vec<_> = names.iter().filter_map(|n| m.tensors.get(n)).collect();
            match entries.first() {
                None => "-".to_string(),
                Some(e) => {
                    let cost: f64 = entries.iter().filter_map(|e| e.predicted_cost).sum();
                    format!("{} {:.2e}", e.scheme, cost)
                }
            }
        };
        println!(
            "\n{:<6} {:<18} {:<18} {:<18} {:<18}",
            "layer", "q/k/v", "o_proj", "gate/up", "down"
        );
        for l in 0.. {
            use LayerTensor::*;
            if !m.tensors.contains_key(&OProj.name(l)) {
                break;
            }
            println!(
                "{l:<6} {:<18} {:<18} {:<18} {:<18}",
                group(&[QProj.name(l), KProj.name(l), VProj.name(l)]),
                entry(&OProj.name(l)),
                group(&[GateProj.name(l), UpProj.name(l)]),
                entry(&DownProj.name(l))
            );
        }
        println!("embed  {}", entry("model.embed_tokens.weight"));
        if m.tensors.contains_key("lm_head.weight") {
            println!("lm_head {}", entry("lm_head.weight"));
        }
    }
    println!(
        "\n{:<14} {:<8} {:>8} {:>14} {:>14} {:>8}",
        "class", "scheme", "tensors", "params", "bytes", "bits/w"
    );
    for c in m.class_totals() {
        let mixed = m
            .tensors
            .iter()
            .filter(|(n, _)| TensorClass::of(n) == c.class)
            .any(|(_, e)| Some(e.scheme) != c.scheme);
        println!(
            "{:<14} {:<8} {:>8} {:>14} {:>14} {:>8.3}",
            c.class.label(),
            if mixed && c.class != TensorClass::Vector {
                "mixed".to_string()
            } else {
                c.scheme.map_or("f32".to_string(), |s| s.to_string())
            },
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
}

/// `QWENC_MODEL=... cargo build --release --bin qwen` in the source tree, then copy the
/// executable and its weights to `output`.
fn build(
    model: &Path,
    output: &Path,
    target: &str,
    scheme: Option<&str>,
    triple: Option<&str>,
) -> AnyResult {
    let model = std::fs::canonicalize(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cargo =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
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
    let status = cargo
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status})").into());
    }
    // Where cargo put it: CARGO_TARGET_DIR when set (relative to the tree cargo ran in).
    let mut built = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => source_tree.join(dir),
        None => source_tree.join("target"),
    };
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
