//! The compression driver behind `qwenc compress`: open a checkpoint, choose a scheme per
//! matrix, then stream tensor by tensor (load f32 → hash → quantize → write) into a
//! [compressed model directory](crate::compressed), so that peak memory stays near one f32 copy
//! of the largest tensor plus its quantized form.
//!
//! The numerics live in [`crate::quant`]; the per-tensor quantize step is one call to a
//! [`Quantizer`]: [`Rtn`], or [`crate::calibrate::CalibratedQuantizer`] for AWQ/GPTQ
//! (AWQ also changes norm weights and up_proj rows through [`Quantizer::transform`]).
//!
//! ```no_run
//! # use qwenc_codegen::compress::*;
//! # use std::path::Path;
//! let plan = CompressPlan::new(Path::new("model.gguf"), Path::new("out"), &CompressOptions::default())?;
//! for w in &plan.warnings { eprintln!("warning: {w}"); }
//! let report = plan.run(&Rtn, &mut |_done, _total, _name| {})?;
//! # Ok::<(), CompressError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::budget;
use crate::checkpoint::Checkpoint;
use crate::compressed::{
    file_len, matrix_data, matrix_parts, vector_part, BudgetInfo, ClassSchemes, Manifest, PartData,
    PartSpec, SafetensorsWriter, SourceInfo, TensorClass, TensorEntry, CONFIG_FILE, FORMAT,
    MANIFEST_FILE, SAFETENSORS_FILE, TOKENIZER_FILE,
};
use crate::error::LoadError;
use crate::quant::{quantize_rtn, QuantizedMatrix, Scheme};
use crate::reference::ReferenceWeights;

/// Turns one f32 matrix into a [`QuantizedMatrix`] in the requested scheme.
pub trait Quantizer: Sync {
    /// Recorded in the manifest (`rtn`).
    fn name(&self) -> &str;
    /// Quantize `w` (`[rows, cols]`, row-major, Hugging Face tensor `name`). The driver has
    /// checked `scheme.check_cols(cols)`; the result must have the same rows, cols and scheme.
    fn quantize(
        &self,
        name: &str,
        w: &[f32],
        rows: usize,
        cols: usize,
        scheme: Scheme,
    ) -> QuantizedMatrix;
    /// Change tensor `name` (any tensor, vectors included) before it is quantized or stored,
    /// e.g. AWQ folding its scales into a norm weight. The default changes nothing.
    fn transform(&self, _name: &str, _w: &mut [f32]) {}
}

/// Round to nearest: [`quantize_rtn`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Rtn;

impl Quantizer for Rtn {
    fn name(&self) -> &str {
        "rtn"
    }
    fn quantize(
        &self,
        _name: &str,
        w: &[f32],
        rows: usize,
        cols: usize,
        scheme: Scheme,
    ) -> QuantizedMatrix {
        quantize_rtn(w, rows, cols, scheme)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{}: output directory exists and is not empty (pass --force to overwrite it)", path.display())]
    OutputExists { path: PathBuf },
    #[error("{}: exists and is not a directory", path.display())]
    OutputNotDir { path: PathBuf },
    #[error("{}: the output directory is the source checkpoint; choose another one", path.display())]
    OutputIsSource { path: PathBuf },
    /// A scheme cannot store a tensor (group size not dividing the columns).
    #[error("{}: tensor `{tensor}`: scheme {scheme}: {problem}", source_path.display())]
    Scheme {
        source_path: PathBuf,
        tensor: String,
        scheme: Scheme,
        problem: String,
    },
    /// `--budget-mb`: the budget cannot be met (or a group has no usable scheme).
    #[error(transparent)]
    Budget(#[from] budget::BudgetError),
    #[error("tensor `{tensor}`: quantizer `{quantizer}` returned {problem}")]
    Quantizer {
        tensor: String,
        quantizer: String,
        problem: String,
    },
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The schemes the user asked for; `None` = not given (see [`SchemeArgs::resolve`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchemeArgs {
    /// `--scheme`: the default for every matrix (`w4g32` when not given).
    pub scheme: Option<Scheme>,
    pub attn: Option<Scheme>,
    pub mlp: Option<Scheme>,
    pub embed: Option<Scheme>,
    pub lm_head: Option<Scheme>,
}

pub const DEFAULT_SCHEME: Scheme = Scheme::W4 {
    group: 32,
    asymmetric: false,
};

impl SchemeArgs {
    /// The scheme of each class: attn and mlp follow `--scheme` (default `w4g32`); embed and
    /// lm_head default to `w8`, or to `--scheme` when that is `f32`, `bf16`, `w8` or `w8g*`; a class
    /// flag always wins. A tied model stores one matrix for both in the lm_head scheme; the
    /// returned warnings say so when an explicit `--embed` lost.
    pub fn resolve(&self, tied: bool) -> (ClassSchemes, Vec<String>) {
        let default = self.scheme.unwrap_or(DEFAULT_SCHEME);
        let table_default = match default {
            Scheme::F32 | Scheme::Bf16 | Scheme::W8 | Scheme::W8Grouped { .. } => default,
            Scheme::W4 { .. } | Scheme::Narrow { .. } => Scheme::W8,
        };
        let mut schemes = ClassSchemes {
            attn: self.attn.unwrap_or(default),
            mlp: self.mlp.unwrap_or(default),
            embed: self.embed.unwrap_or(table_default),
            lm_head: self.lm_head.unwrap_or(table_default),
        };
        let mut warnings = Vec::new();
        if tied {
            if let Some(embed) = self.embed.filter(|&e| e != schemes.lm_head) {
                warnings.push(format!(
                    "the model ties lm_head to the embedding, stored once: {} ({}) wins over --embed {embed}",
                    schemes.lm_head,
                    if self.lm_head.is_some() { "--lm-head" } else { "the lm_head default" },
                ));
            }
            schemes.embed = schemes.lm_head;
        }
        (schemes, warnings)
    }
}

#[derive(Clone, Debug, Default)]
pub struct CompressOptions {
    pub schemes: SchemeArgs,
    /// Write into an existing non-empty directory (our four files are replaced, others kept).
    pub force: bool,
    /// Store an untied checkpoint's lm_head once and gather the embedding from it
    /// ([`Checkpoint::tie_embedding_to_lm_head`]).
    pub tie_embeddings: bool,
}

/// One tensor to write.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub class: TensorClass,
    pub scheme: Scheme,
    pub source_dtype: String,
    /// Set by [`CompressPlan::apply_budget`].
    pub predicted_cost: Option<f64>,
}

/// Everything decided before any output is written: a `CompressPlan` has checked the output
/// directory, every source tensor's presence and shape, and every scheme against its matrix.
pub struct CompressPlan {
    pub checkpoint: Checkpoint,
    pub source: PathBuf,
    pub out_dir: PathBuf,
    pub schemes: ClassSchemes,
    pub tied: bool,
    pub warnings: Vec<String>,
    /// In the Hugging Face load order (embedding, layers, final norm, lm_head).
    pub tensors: Vec<PlannedTensor>,
    /// Set by [`CompressPlan::apply_budget`].
    pub budget: Option<BudgetInfo>,
    /// With [`CompressOptions::tie_embeddings`]: how far the replaced embedding was from the
    /// lm_head that now serves both (‖E − L‖ / ‖L‖).
    pub embedding_from_lm_head: Option<f64>,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct CompressReport {
    pub out_dir: PathBuf,
    pub manifest: Manifest,
    pub warnings: Vec<String>,
    /// Size of `model.safetensors` (header included).
    pub safetensors_bytes: u64,
    /// Size of the four files together.
    pub dir_bytes: u64,
}

impl CompressPlan {
    /// Open `source` (a Hugging Face directory or a GGUF file) and plan the compression into
    /// `out_dir`.
    pub fn new(
        source: &Path,
        out_dir: &Path,
        options: &CompressOptions,
    ) -> Result<CompressPlan, CompressError> {
        check_output_dir(out_dir, options.force)?;
        if let (Ok(a), Ok(b)) = (out_dir.canonicalize(), source.canonicalize()) {
            if a == b {
                return Err(CompressError::OutputIsSource {
                    path: out_dir.to_path_buf(),
                });
            }
        }
        let mut checkpoint = Checkpoint::open(source)?;
        let mut distance = None;
        if options.tie_embeddings {
            let (tied, d) = checkpoint.tie_embedding_to_lm_head()?;
            checkpoint = tied;
            distance = Some(d);
        }
        let mut plan = Self::for_checkpoint(checkpoint, source, out_dir, &options.schemes)?;
        plan.embedding_from_lm_head = distance;
        Ok(plan)
    }

    /// Plan for an already opened checkpoint (`source` is recorded in the manifest). Does not
    /// check the output directory.
    pub fn for_checkpoint(
        checkpoint: Checkpoint,
        source: &Path,
        out_dir: &Path,
        args: &SchemeArgs,
    ) -> Result<CompressPlan, CompressError> {
        let config = &checkpoint.config;
        let tied = config.tie_word_embeddings;
        let (schemes, warnings) = args.resolve(tied);
        let metas = checkpoint.tensors.tensors();
        let src_path = checkpoint.tensors.path().to_path_buf();
        let mut tensors = Vec::new();
        for (name, shape) in ReferenceWeights::tensor_plan(config, !tied) {
            let meta = metas.iter().find(|m| m.name == name).ok_or_else(|| {
                LoadError::tensor(&src_path, &name, "missing from the checkpoint")
            })?;
            if meta.shape != shape {
                return Err(LoadError::tensor(
                    &src_path,
                    &name,
                    format!(
                        "shape {:?} does not match the config, which implies {:?}",
                        meta.shape, shape
                    ),
                )
                .into());
            }
            let class = TensorClass::of(&name);
            // A tied model's one matrix is the lm_head as much as the embedding.
            let scheme = schemes.for_class(class);
            if let [_, cols] = shape[..] {
                scheme
                    .check_cols(cols)
                    .map_err(|problem| CompressError::Scheme {
                        source_path: src_path.clone(),
                        tensor: name.clone(),
                        scheme,
                        problem,
                    })?;
            }
            tensors.push(PlannedTensor {
                source_dtype: meta.dtype.clone(),
                name,
                shape,
                class,
                scheme,
                predicted_cost: None,
            });
        }
        Ok(CompressPlan {
            checkpoint,
            source: source.to_path_buf(),
            out_dir: out_dir.to_path_buf(),
            schemes,
            tied,
            warnings,
            tensors,
            budget: None,
            embedding_from_lm_head: None,
        })
    }

    /// Size of `model.safetensors` with the tensors' current schemes.
    pub fn file_len(&self) -> u64 {
        file_len(&self.parts(), &safetensors_metadata())
    }

    /// Mixed precision under a budget (`--budget-mb`): choose each matrix's scheme from
    /// `candidates` with [`crate::budget`] so that `model.safetensors` (header included) is at
    /// most `budget_bytes`, and record the choice and the predicted costs for the manifest.
    /// `groups` come from [`crate::budget::measure`] on this checkpoint.
    pub fn apply_budget(
        &mut self,
        groups: &[budget::Group],
        budget_bytes: u64,
        calibration_tokens: usize,
    ) -> Result<budget::Selection, CompressError> {
        let (fixed_bytes, header_reserve) = self.budget_overhead();
        let overhead = fixed_bytes + header_reserve;
        let too_small = |minimum_matrices: u64, cheapest: Option<String>| {
            CompressError::Budget(budget::BudgetError::TooSmall {
                budget: budget_bytes,
                minimum: minimum_matrices + overhead,
                cheapest,
            })
        };
        let matrix_budget = budget_bytes.checked_sub(overhead);
        let selection = match matrix_budget {
            Some(b) => budget::select(groups, b).map_err(|e| match e {
                budget::BudgetError::TooSmall {
                    minimum, cheapest, ..
                } => too_small(minimum, cheapest),
                e => CompressError::Budget(e),
            })?,
            None => {
                let minimum = groups
                    .iter()
                    .map(|g| g.options.first().map_or(0, |o| o.bytes))
                    .sum();
                return Err(too_small(minimum, None));
            }
        };
        let mut chosen: BTreeMap<&str, (Scheme, f64)> = BTreeMap::new();
        for (g, &c) in groups.iter().zip(&selection.choice) {
            let o = &g.options[c];
            for (m, &cost) in g.members.iter().zip(&o.member_costs) {
                chosen.insert(m.as_str(), (o.scheme, cost));
            }
        }
        for t in &mut self.tensors {
            if t.shape.len() != 2 {
                continue;
            }
            let &(scheme, cost) = chosen.get(t.name.as_str()).ok_or_else(|| {
                CompressError::Budget(budget::BudgetError::NoOption(format!(
                    "{} (not measured)",
                    t.name
                )))
            })?;
            t.scheme = scheme;
            t.predicted_cost = Some(cost);
        }
        // The class summary: each class's most common scheme by parameters.
        let mut by_class: BTreeMap<(TensorClass, String), (u64, Scheme)> = BTreeMap::new();
        for t in self.tensors.iter().filter(|t| t.shape.len() == 2) {
            let e = by_class
                .entry((t.class, t.scheme.to_string()))
                .or_insert((0, t.scheme));
            e.0 += t.shape.iter().product::<usize>() as u64;
        }
        let common = |class: TensorClass| {
            by_class
                .iter()
                .filter(|((c, _), _)| *c == class)
                .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.0 .1.cmp(&a.0 .1)))
                .map(|(_, (_, s))| *s)
        };
        let head = common(TensorClass::LmHead).or(common(TensorClass::Embed));
        self.schemes = ClassSchemes {
            attn: common(TensorClass::Attn).unwrap_or(self.schemes.attn),
            mlp: common(TensorClass::Mlp).unwrap_or(self.schemes.mlp),
            embed: common(TensorClass::Embed).unwrap_or(self.schemes.embed),
            lm_head: head.unwrap_or(self.schemes.lm_head),
        };
        if self.tied {
            self.schemes.lm_head = self.schemes.embed;
        }
        let file = self.file_len();
        if file > budget_bytes {
            // The header reserve makes this unreachable; never write past the budget silently.
            return Err(too_small(file - overhead, None));
        }
        let minimum_cost = groups.iter().map(|g| g.options[0].cost).sum();
        let mut candidates: Vec<Scheme> = groups
            .iter()
            .flat_map(|g| g.options.iter().map(|o| o.scheme))
            .collect();
        candidates.sort();
        candidates.dedup();
        self.budget = Some(BudgetInfo {
            budget_bytes,
            calibration_tokens,
            candidates: candidates.iter().map(Scheme::to_string).collect(),
            minimum_bytes: groups.iter().map(|g| g.options[0].bytes).sum::<u64>()
                + (file - selection.bytes),
            predicted_cost: selection.cost,
            predicted_cost_minimum: minimum_cost,
            proxy: budget::PROXY.to_string(),
        });
        Ok(selection)
    }

    /// Refuse a budget below the smallest assignment from the shapes alone, before any
    /// calibration (the same bound [`CompressPlan::apply_budget`] enforces).
    pub fn check_budget(
        &self,
        budget_bytes: u64,
        candidates: &[Scheme],
    ) -> Result<(), CompressError> {
        let (fixed, reserve) = self.budget_overhead();
        let mut cheapest = Vec::new();
        let mut matrices = 0u64;
        for t in &self.tensors {
            if let [rows, cols] = t.shape[..] {
                let best = candidates
                    .iter()
                    .filter(|s| s.check_cols(cols).is_ok())
                    .map(|&s| (budget::matrix_bytes(rows, cols, s), s))
                    .min()
                    .ok_or_else(|| budget::BudgetError::NoOption(t.name.clone()))?;
                matrices += best.0;
                cheapest.push(best.1.to_string());
            }
        }
        cheapest.sort();
        cheapest.dedup();
        let minimum = matrices + fixed + reserve;
        if minimum > budget_bytes {
            return Err(budget::BudgetError::TooSmall {
                budget: budget_bytes,
                minimum,
                cheapest: Some(cheapest.join("/")),
            }
            .into());
        }
        Ok(())
    }

    /// Bytes that are no choice of the budget: the vectors, and a reserve for the header
    /// (at its largest: every matrix with three parts).
    fn budget_overhead(&self) -> (u64, u64) {
        let metadata = safetensors_metadata();
        let fixed: Vec<PartSpec> = self
            .tensors
            .iter()
            .filter(|t| t.shape.len() == 1)
            .map(|t| vector_part(&t.name, t.shape[0]))
            .collect();
        let widest: Vec<PartSpec> = self
            .tensors
            .iter()
            .flat_map(|t| match t.shape[..] {
                [rows, cols] => matrix_parts(
                    &t.name,
                    rows,
                    cols,
                    Scheme::W4 {
                        group: 32,
                        asymmetric: true,
                    },
                ),
                _ => vec![vector_part(&t.name, t.shape[0])],
            })
            .collect();
        let widest_data: u64 = widest.iter().map(|p| p.n_bytes() as u64).sum();
        let header_reserve = file_len(&widest, &metadata) - widest_data + 4096;
        let fixed_bytes: u64 = fixed.iter().map(|p| p.n_bytes() as u64).sum();
        (fixed_bytes, header_reserve)
    }

    /// The stored tensors of the whole model.
    pub fn parts(&self) -> Vec<PartSpec> {
        self.tensors
            .iter()
            .flat_map(|t| match t.shape[..] {
                [rows, cols] => matrix_parts(&t.name, rows, cols, t.scheme),
                _ => vec![vector_part(&t.name, t.shape[0])],
            })
            .collect()
    }

    /// Write the directory; `progress(done, total, name)` is called before each tensor and
    /// once at the end with `done == total`.
    pub fn run(
        self,
        quantizer: &dyn Quantizer,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<CompressReport, CompressError> {
        let out = &self.out_dir;
        let werr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CompressError::Write { path, source }
        };
        std::fs::create_dir_all(out).map_err(werr(out))?;
        let write_file = |name: &str, text: &str| {
            let path = out.join(name);
            std::fs::write(&path, text).map_err(werr(&path))
        };
        // The manifest goes last: a directory without one is visibly incomplete.
        let manifest_path = out.join(MANIFEST_FILE);
        if manifest_path.exists() {
            std::fs::remove_file(&manifest_path).map_err(werr(&manifest_path))?;
        }
        let mut config_json = serde_json::to_string_pretty(&self.checkpoint.config.to_hf_json())
            .expect("JSON values serialize");
        config_json.push('\n');
        write_file(CONFIG_FILE, &config_json)?;
        write_file(
            TOKENIZER_FILE,
            &self.checkpoint.tokenizer.to_tokenizer_json(),
        )?;

        let final_path = out.join(SAFETENSORS_FILE);
        let partial_path = out.join(format!("{SAFETENSORS_FILE}.partial"));
        let result = self.write_tensors(&partial_path, quantizer, progress);
        let tensors = match result {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_file(&partial_path);
                return Err(e);
            }
        };
        std::fs::rename(&partial_path, &final_path).map_err(werr(&final_path))?;

        let manifest = Manifest {
            budget: self.budget.clone(),
            format: FORMAT.to_string(),
            quantizer: quantizer.name().to_string(),
            schemes: self.schemes,
            source: SourceInfo {
                embedding_from_lm_head: self.embedding_from_lm_head,
                format: self.checkpoint.format.to_string(),
                path: self.source.to_string_lossy().into_owned(),
            },
            totals: Manifest::totals_of(&tensors),
            tensors,
            tied_embeddings: self.tied,
        };
        write_file(MANIFEST_FILE, &manifest.to_json())?;

        let size = |name: &str| {
            let path = out.join(name);
            std::fs::metadata(&path)
                .map(|m| m.len())
                .map_err(werr(&path))
        };
        let safetensors_bytes = size(SAFETENSORS_FILE)?;
        let dir_bytes =
            safetensors_bytes + size(MANIFEST_FILE)? + size(CONFIG_FILE)? + size(TOKENIZER_FILE)?;
        Ok(CompressReport {
            out_dir: self.out_dir.clone(),
            manifest,
            warnings: self.warnings,
            safetensors_bytes,
            dir_bytes,
        })
    }

    /// Stream every tensor into `path`; returns the manifest entries.
    fn write_tensors(
        &self,
        path: &Path,
        quantizer: &dyn Quantizer,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<BTreeMap<String, TensorEntry>, CompressError> {
        let werr = |source| CompressError::Write {
            path: path.to_path_buf(),
            source,
        };
        let parts = self.parts();
        let sizes: BTreeMap<&str, usize> = parts
            .iter()
            .map(|p| (p.name.as_str(), p.n_bytes()))
            .collect();
        let metadata = safetensors_metadata();
        let mut writer = SafetensorsWriter::create(path, &parts, &metadata).map_err(werr)?;

        let total = self.tensors.len();
        let mut entries = BTreeMap::new();
        for (i, t) in self.tensors.iter().enumerate() {
            progress(i, total, &t.name);
            let mut w = self.checkpoint.load(&t.name, &t.shape)?;
            // The manifest's hash is of the source tensor, before any transform.
            let source_sha = sha256_f32(&w);
            quantizer.transform(&t.name, &mut w);
            let (bytes, sha) = match t.shape[..] {
                [rows, cols] => {
                    let (sha, m) = (
                        source_sha,
                        quantizer.quantize(&t.name, &w, rows, cols, t.scheme),
                    );
                    drop(w);
                    check_quantized(&m, rows, cols, t.scheme).map_err(|problem| {
                        CompressError::Quantizer {
                            tensor: t.name.clone(),
                            quantizer: quantizer.name().to_string(),
                            problem,
                        }
                    })?;
                    let mut bytes = 0;
                    for (spec, data) in matrix_parts(&t.name, rows, cols, t.scheme)
                        .iter()
                        .zip(matrix_data(&m))
                    {
                        writer.write(&spec.name, data).map_err(werr)?;
                        bytes += sizes[spec.name.as_str()];
                    }
                    (bytes, sha)
                }
                _ => {
                    writer.write(&t.name, PartData::F32(&w)).map_err(werr)?;
                    (sizes[t.name.as_str()], source_sha)
                }
            };
            let params: usize = t.shape.iter().product();
            entries.insert(
                t.name.clone(),
                TensorEntry {
                    bits_per_weight: bytes as f64 * 8.0 / params as f64,
                    bytes: bytes as u64,
                    predicted_cost: t.predicted_cost,
                    scheme: t.scheme,
                    shape: t.shape.clone(),
                    source_dtype: t.source_dtype.clone(),
                    source_sha256: sha,
                },
            );
        }
        writer.finish().map_err(werr)?;
        progress(total, total, "");
        Ok(entries)
    }
}

/// The `__metadata__` of `model.safetensors`.
fn safetensors_metadata() -> BTreeMap<String, String> {
    BTreeMap::from([("format".to_string(), FORMAT.to_string())])
}

/// Plan and run with [`Rtn`] and no progress report.
pub fn compress(
    source: &Path,
    out_dir: &Path,
    options: &CompressOptions,
) -> Result<CompressReport, CompressError> {
    CompressPlan::new(source, out_dir, options)?.run(&Rtn, &mut |_, _, _| {})
}

fn check_output_dir(dir: &Path, force: bool) -> Result<(), CompressError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CompressError::Write {
            path: dir.to_path_buf(),
            source: e,
        }),
        Ok(m) if !m.is_dir() => Err(CompressError::OutputNotDir {
            path: dir.to_path_buf(),
        }),
        Ok(_) => {
            let mut listing = std::fs::read_dir(dir).map_err(|e| CompressError::Write {
                path: dir.to_path_buf(),
                source: e,
            })?;
            if listing.next().is_some() && !force {
                Err(CompressError::OutputExists {
                    path: dir.to_path_buf(),
                })
            } else {
                Ok(())
            }
        }
    }
}

fn check_quantized(
    m: &QuantizedMatrix,
    rows: usize,
    cols: usize,
    scheme: Scheme,
) -> Result<(), String> {
    if (m.rows, m.cols, m.scheme) != (rows, cols, scheme) {
        return Err(format!(
            "a {}×{} {} matrix for a {rows}×{cols} {scheme} request",
            m.rows, m.cols, m.scheme
        ));
    }
    let (specs, data) = (matrix_parts("", rows, cols, scheme), matrix_data(m));
    if specs.len() != data.len() {
        return Err(format!("data of the wrong kind for scheme {scheme}"));
    }
    for (spec, data) in specs.iter().zip(data) {
        if spec.dtype != data.dtype() || spec.n_elements() != data.len() {
            return Err(format!(
                "{} {} elements for `{}`, the scheme needs {} {}",
                data.len(),
                data.dtype().name(),
                spec.name,
                spec.n_elements(),
                spec.dtype.name()
            ));
        }
    }
    Ok(())
}

/// SHA-256 (hex) of `values` as f32 little-endian bytes, hashed in chunks without a copy of
/// the whole tensor.
pub fn sha256_f32(values: &[f32]) -> String {
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(4 << 14);
    for chunk in values.chunks(1 << 14) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
        h.update(&buf);
    }
    crate::compressed::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str) -> Scheme {
        name.parse().unwrap()
    }

    #[test]
    fn defaults() {
        let (c, w) = SchemeArgs::default().resolve(false);
        assert_eq!(
            (c.attn, c.mlp, c.embed, c.lm_head),
            (s("w4g32"), s("w4g32"), s("w8"), s("w8"))
        );
        assert!(w.is_empty());
        let args = SchemeArgs {
            scheme: Some(s("bf16")),
            ..Default::default()
        };
        let (c, _) = args.resolve(false);
        assert_eq!(
            (c.attn, c.mlp, c.embed, c.lm_head),
            (s("bf16"), s("bf16"), s("bf16"), s("bf16"))
        );
        let args = SchemeArgs {
            scheme: Some(s("w4g64a")),
            mlp: Some(s("w8")),
            embed: Some(s("w4g32")),
            ..Default::default()
        };
        let (c, _) = args.resolve(false);
        assert_eq!(
            (c.attn, c.mlp, c.embed, c.lm_head),
            (s("w4g64a"), s("w8"), s("w4g32"), s("w8"))
        );
    }

    #[test]
    fn tied_models_use_the_lm_head_scheme_and_warn_when_embed_loses() {
        let args = SchemeArgs {
            embed: Some(s("w4g32")),
            ..Default::default()
        };
        let (c, w) = args.resolve(true);
        assert_eq!((c.embed, c.lm_head), (s("w8"), s("w8")));
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("w8") && w[0].contains("--embed w4g32"),
            "{w:?}"
        );
        let args = SchemeArgs {
            embed: Some(s("bf16")),
            lm_head: Some(s("bf16")),
            ..Default::default()
        };
        let (c, w) = args.resolve(true);
        assert_eq!(c.embed, s("bf16"));
        assert!(w.is_empty());
    }

    #[test]
    fn hashes_little_endian_f32() {
        // sha256 of the 4 bytes 00 00 80 3f (1.0f32).
        let mut h = Sha256::new();
        h.update([0u8, 0, 0x80, 0x3f]);
        assert_eq!(sha256_f32(&[1.0]), crate::compressed::hex(&h.finalize()));
    }
}
