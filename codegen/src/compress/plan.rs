//! The plan of a compression, decided before anything is written: the source checked, a
//! scheme per matrix ([`SchemeArgs`], or a budget's [`BudgetChoice`]). [`CompressPlan::write`]
//! then streams the tensors into the output directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::compress::budget::{self, BudgetError, Group, Selection};
use crate::compress::error::CompressError;
use crate::compress::format::{
    file_len, matrix_parts, vector_part, BudgetInfo, ClassSchemes, PartSpec, TensorClass, FORMAT,
};
use crate::model_io::checkpoint::Checkpoint;
use crate::model_io::error::LoadError;
use crate::quant::Scheme;
use crate::reference::ReferenceWeights;

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
    /// Set under a budget ([`BudgetChoice`]).
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
    /// Set under a budget ([`CompressPlan::with_budget`]).
    pub budget: Option<BudgetInfo>,
    /// With [`CompressOptions::tie_embeddings`]: how far the replaced embedding was from the
    /// lm_head that now serves both (‖E − L‖ / ‖L‖).
    pub embedding_from_lm_head: Option<f64>,
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
        file_len(&parts_of(&self.tensors), &safetensors_metadata())
    }

    /// Mixed precision under a budget (`--budget-mb`): choose each matrix's scheme from
    /// `candidates` with [`crate::compress::budget`] so that `model.safetensors` (header
    /// included) is at most `budget_bytes`, with the predicted costs for the manifest. `groups`
    /// come from [`crate::compress::budget::measure`] on this checkpoint. The plan is unchanged:
    /// [`CompressPlan::with_budget`] applies the choice.
    pub fn choose_budget(
        &self,
        groups: &[Group],
        budget_bytes: u64,
        calibration_tokens: usize,
    ) -> Result<BudgetChoice, CompressError> {
        let (fixed_bytes, header_reserve) = self.budget_overhead();
        let overhead = fixed_bytes + header_reserve;
        let too_small = |minimum_matrices: u64, cheapest: Option<String>| {
            CompressError::Budget(BudgetError::TooSmall {
                budget: budget_bytes,
                minimum: minimum_matrices + overhead,
                cheapest,
            })
        };
        let matrix_budget = budget_bytes.checked_sub(overhead);
        let selection = match matrix_budget {
            Some(b) => budget::select(groups, b).map_err(|e| match e {
                BudgetError::TooSmall {
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
        let mut tensors = self.tensors.clone();
        for t in &mut tensors {
            if t.shape.len() != 2 {
                continue;
            }
            let &(scheme, cost) = chosen.get(t.name.as_str()).ok_or_else(|| {
                CompressError::Budget(BudgetError::NoOption(format!("{} (not measured)", t.name)))
            })?;
            t.scheme = scheme;
            t.predicted_cost = Some(cost);
        }
        // The class summary: each class's most common scheme by parameters.
        let mut by_class: BTreeMap<(TensorClass, String), (u64, Scheme)> = BTreeMap::new();
        for t in tensors.iter().filter(|t| t.shape.len() == 2) {
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
        let mut schemes = ClassSchemes {
            attn: common(TensorClass::Attn).unwrap_or(self.schemes.attn),
            mlp: common(TensorClass::Mlp).unwrap_or(self.schemes.mlp),
            embed: common(TensorClass::Embed).unwrap_or(self.schemes.embed),
            lm_head: head.unwrap_or(self.schemes.lm_head),
        };
        if self.tied {
            schemes.lm_head = schemes.embed;
        }
        let file = file_len(&parts_of(&tensors), &safetensors_metadata());
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
        let info = BudgetInfo {
            budget_bytes,
            calibration_tokens,
            candidates: candidates.iter().map(Scheme::to_string).collect(),
            minimum_bytes: groups.iter().map(|g| g.options[0].bytes).sum::<u64>()
                + (file - selection.bytes),
            predicted_cost: selection.cost,
            predicted_cost_minimum: minimum_cost,
            proxy: budget::PROXY.to_string(),
        };
        Ok(BudgetChoice {
            selection,
            tensors,
            schemes,
            info,
            file_len: file,
        })
    }

    /// The plan with a budget's choice: its schemes and predicted costs, and the budget
    /// recorded for the manifest.
    pub fn with_budget(self, choice: BudgetChoice) -> CompressPlan {
        CompressPlan {
            tensors: choice.tensors,
            schemes: choice.schemes,
            budget: Some(choice.info),
            ..self
        }
    }

    /// Refuse a budget below the smallest assignment from the shapes alone, before any
    /// calibration (the same bound [`CompressPlan::choose_budget`] enforces).
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
                    .ok_or_else(|| BudgetError::NoOption(t.name.clone()))?;
                matrices += best.0;
                cheapest.push(best.1.to_string());
            }
        }
        cheapest.sort();
        cheapest.dedup();
        let minimum = matrices + fixed + reserve;
        if minimum > budget_bytes {
            return Err(BudgetError::TooSmall {
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
        parts_of(&self.tensors)
    }
}

/// A budget's choice for a plan ([`CompressPlan::choose_budget`]).
#[derive(Clone, Debug)]
pub struct BudgetChoice {
    /// The chosen option of every group, and the matrices' bytes and predicted cost.
    pub selection: Selection,
    /// The plan's tensors with the chosen schemes and predicted costs.
    pub tensors: Vec<PlannedTensor>,
    /// Each class's most common scheme (the manifest's summary).
    pub schemes: ClassSchemes,
    /// What the manifest records of the budget.
    pub info: BudgetInfo,
    /// Size of `model.safetensors` with the chosen schemes.
    pub file_len: u64,
}

/// The stored tensors of `tensors`.
fn parts_of(tensors: &[PlannedTensor]) -> Vec<PartSpec> {
    tensors
        .iter()
        .flat_map(|t| match t.shape[..] {
            [rows, cols] => matrix_parts(&t.name, rows, cols, t.scheme),
            _ => vec![vector_part(&t.name, t.shape[0])],
        })
        .collect()
}

/// The `__metadata__` of `model.safetensors`.
pub(super) fn safetensors_metadata() -> BTreeMap<String, String> {
    BTreeMap::from([("format".to_string(), FORMAT.to_string())])
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
}
