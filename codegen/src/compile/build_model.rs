//! What `build.rs` does, as a library function so that `qwenc build`, tests and the
//! `generated/` check share it: read a model, plan, pack, generate, write the outputs.

use std::path::{Path, PathBuf};

use crate::compile::emit::aarch64::ArmIsa;
use crate::compile::emit::x86::X86Isa;
use crate::compile::emit::{generate, Backend, ModelMeta};
use crate::compile::pack::{pack, weights_hash, Packed, QuantizeOnTheFly};
use crate::compile::plan::Plan;
use crate::compress::format::{ClassSchemes, CompressedModel};
use crate::model_io::checkpoint::Checkpoint;
use crate::model_io::error::{LoadError, Result};
use crate::quant::Scheme;

/// The default scheme: 4-bit groups of 32 in the layers, 8-bit embedding and lm_head.
pub fn default_schemes() -> ClassSchemes {
    ClassSchemes {
        attn: Scheme::W4 {
            group: 32,
            asymmetric: false,
        },
        mlp: Scheme::W4 {
            group: 32,
            asymmetric: false,
        },
        embed: Scheme::W8,
        lm_head: Scheme::W8,
    }
}

/// Parse `QWENC_SCHEME`-style text: one scheme for the layers (`w4g32`), optionally followed
/// by `,embed=S,lm_head=S,attn=S,mlp=S` overrides. `f32`/`bf16`/`w8` alone apply everywhere.
pub fn parse_schemes(text: &str) -> std::result::Result<ClassSchemes, String> {
    let mut parts = text.split(',');
    let base: Scheme = parts
        .next()
        .unwrap_or("")
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut s = match base {
        Scheme::W4 { .. } => ClassSchemes {
            attn: base,
            mlp: base,
            ..default_schemes()
        },
        _ => ClassSchemes {
            attn: base,
            mlp: base,
            embed: base,
            lm_head: base,
        },
    };
    for part in parts {
        let (class, scheme) = part
            .split_once('=')
            .ok_or_else(|| format!("expected class=scheme, got `{part}`"))?;
        let scheme: Scheme = scheme.trim().parse().map_err(|e| format!("{e}"))?;
        match class.trim() {
            "attn" => s.attn = scheme,
            "mlp" => s.mlp = scheme,
            "embed" => s.embed = scheme,
            "lm_head" => s.lm_head = scheme,
            other => {
                return Err(format!(
                    "unknown tensor class `{other}` (attn, mlp, embed, lm_head)"
                ))
            }
        }
    }
    Ok(s)
}

/// A model compiled to source and packed weights, not yet written anywhere.
pub struct Compiled {
    pub plan: Plan,
    pub packed: Packed,
    pub files: std::collections::BTreeMap<String, String>,
    pub tokenizer_json: String,
    pub meta: ModelMeta,
}

/// Compile the model at `path`: a compressed directory from `qwenc compress` (its schemes are
/// fixed: `schemes` must be `None` or equal), or an HF directory / GGUF file quantized on the
/// fly with round-to-nearest `schemes` (default [`default_schemes`]).
pub fn compile_model(
    path: &Path,
    schemes: Option<ClassSchemes>,
    backend: Backend,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Compiled> {
    if !path.join("manifest.json").exists() {
        return compile_checkpoint(
            path,
            schemes.unwrap_or_else(default_schemes),
            backend,
            progress,
        );
    }
    let model = CompressedModel::open(path)?;
    let stored = model.manifest.schemes;
    if let Some(wanted) = schemes.filter(|w| *w != stored) {
        return Err(LoadError::config(
            path,
            format!("this directory was compressed with `{stored}`, not `{wanted}`: compress again, or leave the scheme unset"),
        ));
    }
    // Each fused matrix in the scheme its tensors are stored in (per tensor after
    // `qwenc compress --budget-mb`; fused parts must agree).
    let scheme_of = |parts: &[String], _class| -> std::result::Result<Scheme, String> {
        let mut schemes = parts.iter().map(|p| {
            model
                .scheme(p)
                .ok_or_else(|| format!("`{p}` is missing from the manifest"))
        });
        let first = schemes.next().expect("a fused matrix has parts")?;
        for (p, s) in parts.iter().zip(std::iter::once(Ok(first)).chain(schemes)) {
            let s = s?;
            if s != first {
                return Err(format!("`{p}` is stored in {s}, but `{}` in {first}: tensors fused into one matrix need one scheme", parts[0]));
            }
        }
        Ok(first)
    };
    let plan = Plan::per_matrix(&model.config, stored, model.tied_embeddings(), &scheme_of)
        .map_err(|e| LoadError::config(path, e))?;
    let packed = pack(&plan, &model, backend.tile_rows(), progress)?;
    finish(
        path,
        plan,
        packed,
        backend,
        model.tokenizer.to_tokenizer_json(),
    )
}

/// Compile the checkpoint at `model` (HF directory or GGUF) with round-to-nearest schemes.
pub fn compile_checkpoint(
    model: &Path,
    schemes: ClassSchemes,
    backend: Backend,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Compiled> {
    let ckpt = Checkpoint::open(model)?;
    let tied = ckpt.config.tie_word_embeddings || !ckpt.has_separate_lm_head();
    let plan = Plan::new(&ckpt.config, schemes, tied).map_err(|e| LoadError::config(model, e))?;
    let packed = pack(
        &plan,
        &QuantizeOnTheFly(&ckpt),
        backend.tile_rows(),
        progress,
    )?;
    finish(
        model,
        plan,
        packed,
        backend,
        ckpt.tokenizer.to_tokenizer_json(),
    )
}

fn finish(
    path: &Path,
    plan: Plan,
    packed: Packed,
    backend: Backend,
    tokenizer_json: String,
) -> Result<Compiled> {
    let name = path
        .file_name()
        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
    let meta = ModelMeta {
        name,
        weights_len: packed.bytes.len() as u64,
        weights_hash: weights_hash(&packed.bytes),
    };
    let files = generate(&plan, &packed, backend, &meta);
    Ok(Compiled {
        plan,
        packed,
        files,
        tokenizer_json,
        meta,
    })
}

/// Write `contents` to `path` only when it differs, so that cargo does not rebuild needlessly.
pub fn write_if_changed(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, contents)
}

/// The directory cargo puts the final binaries in, from a build script's OUT_DIR
/// (`<target>/<profile>/build/<pkg>-<hash>/out`).
pub fn artifact_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(3)
        .map_or_else(|| out_dir.to_path_buf(), Path::to_path_buf)
}

/// The review copy in `generated/`: the code for the Qwen2.5-0.5B shapes with the default
/// schemes, per backend. It depends on shapes and schemes only; the weights (and so their
/// hash, shown as 0 here) belong to a concrete build.
pub fn review_files(config_json: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let config = crate::model_io::config::QwenConfig::from_file(config_json)?;
    let plan = Plan::new(&config, default_schemes(), config.tie_word_embeddings)
        .map_err(|e| LoadError::config(config_json, e))?;
    let mut files = std::collections::BTreeMap::new();
    let backends = [
        Backend::Scalar,
        Backend::X86(X86Isa::Avx2),
        Backend::X86(X86Isa::Avx512Vnni),
        Backend::Arm(ArmIsa::Neon),
        Backend::Arm(ArmIsa::I8mm),
        Backend::Arm(ArmIsa::Sve2 { bits: 128 }),
    ];
    for backend in backends {
        let layout = crate::compile::pack::layout(&plan, backend.tile_rows());
        let meta = ModelMeta {
            name: "Qwen2.5-0.5B (review copy)".into(),
            weights_len: layout.packed_len() as u64,
            weights_hash: 0,
        };
        for (name, code) in generate(&plan, &layout, backend, &meta) {
            files.insert(format!("{}/{name}", backend.name()), code);
        }
    }
    Ok(files)
}

/// One test variant of a build (`QWENC_VARIANTS` entry): `SCHEMES[+tied][@BACKEND]`, e.g.
/// `w4g32`, `w8+tied` (the tiny model with a tied embedding), `w4g32@x86-avx2`.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantSpec {
    pub schemes: ClassSchemes,
    pub tied: bool,
    /// `None`: the build's own backend.
    pub backend: Option<String>,
}

pub fn parse_variant(text: &str) -> std::result::Result<VariantSpec, String> {
    let (rest, backend) = match text.split_once('@') {
        Some((rest, backend)) => (rest, Some(backend.to_string())),
        None => (text, None),
    };
    let (schemes, tied) = match rest.strip_suffix("+tied") {
        Some(s) => (s, true),
        None => (rest, false),
    };
    Ok(VariantSpec {
        schemes: parse_schemes(schemes)?,
        tied,
        backend,
    })
}

/// A Rust identifier for a variant's module and weights file.
pub fn variant_ident(text: &str) -> String {
    let mut ident = String::from("v_");
    for c in text.chars() {
        ident.push(if c.is_ascii_alphanumeric() { c } else { '_' });
    }
    ident
}
