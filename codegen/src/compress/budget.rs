//! Mixed precision under a memory budget (`qwenc compress --budget-mb N`): measure how much
//! each matrix loses in each scheme the kernels support, then pick one scheme per matrix so
//! that the predicted loss is least and the weights file fits the budget.
//!
//! **Units of choice.** Matrices that the compiled model multiplies as one fused matrix must
//! share a scheme: per layer q/k/v (one group), o_proj, gate/up (one group), down_proj; then
//! the embedding and the lm_head (one group when tied).
//!
//! **Sensitivity (the predicted cost).** For a group G with input second moments
//! m_j = E[x_j²] over the calibration tokens (the diagonal of E[x xᵀ]):
//!
//! ```text
//! err_s(W)  = Σ_ij (W_ij − Q_s(W)_ij)² m_j          ≈ E‖(W − Q_s(W)) x‖²
//! sig(W)    = Σ_ij W_ij² m_j                          ≈ E‖W x‖²
//! cost_s(G) = weight(G) · Σ_{W∈G} err_s(W) / Σ_{W∈G} sig(W)
//! ```
//!
//! i.e. the noise-to-signal ratio the quantization adds to the group's output, in the diagonal
//! approximation (cross terms of E[x xᵀ] dropped: the full matrix would cost rows·cols² per
//! scheme, 2·10¹⁰ flops for one down_proj). The ratio, not the absolute error, because the
//! outputs live in different units (the residual stream grows ~10× over the depth, q/k feed a
//! softmax): each layer matmul's relative output noise counts once (weight 1). The embedding
//! and the lm_head have no captured inputs: m_j = 1 (their relative Frobenius error), with the
//! weights [`EMBED_WEIGHT`] and [`LM_HEAD_WEIGHT`]; a tied matrix serves both roles and weighs
//! their sum. Q_s is round-to-nearest on the original weights whatever `--method` then
//! quantizes with: the proxy ranks tensors, it does not predict AWQ's gain.
//!
//! **Selection.** A multiple-choice knapsack, solved greedily: start from every group's
//! cheapest option; per group keep the options on the lower convex hull of (bytes, cost);
//! repeatedly take the upgrade with the largest cost reduction per extra byte among those
//! that still fit; finally try any single change that lowers the cost and fits. A budget
//! below the cheapest assignment is refused ([`BudgetError::TooSmall`]).

use rayon::prelude::*;

use crate::compress::calibrate::{Calibration, LayerActivations};
use crate::compress::format::matrix_parts;
use crate::model_io::checkpoint::{LayerTensor, EMBED, LM_HEAD};
use crate::quant::{dequantize, quantize_rtn, Scheme};
use crate::reference::{ReferenceWeights, Tap};

/// The schemes a budget chooses from. f32/bf16 are never worth their bytes here, nor 3-bit
/// groups of 32 (w4g128 costs about as much), nor w3g64 (w3g64a is 0.25 bits more). Of the
/// grouped int8 schemes only w8g128: 0.09 bits more than per-row w8, which cannot follow
/// weights on 4- to 6-bit grids with a scale per 16–32 inputs (docs/quality.md).
pub const CANDIDATES: [Scheme; 14] = [
    Scheme::W4 {
        group: 128,
        asymmetric: false,
    },
    Scheme::W4 {
        group: 128,
        asymmetric: true,
    },
    Scheme::W4 {
        group: 64,
        asymmetric: false,
    },
    Scheme::W4 {
        group: 64,
        asymmetric: true,
    },
    Scheme::W4 {
        group: 32,
        asymmetric: false,
    },
    Scheme::W4 {
        group: 32,
        asymmetric: true,
    },
    Scheme::W8,
    Scheme::W8Grouped { group: 128 },
    Scheme::Narrow {
        bits: 2,
        group: 128,
        asymmetric: true,
    },
    Scheme::Narrow {
        bits: 2,
        group: 64,
        asymmetric: true,
    },
    Scheme::Narrow {
        bits: 2,
        group: 32,
        asymmetric: true,
    },
    Scheme::Narrow {
        bits: 3,
        group: 128,
        asymmetric: false,
    },
    Scheme::Narrow {
        bits: 3,
        group: 128,
        asymmetric: true,
    },
    Scheme::Narrow {
        bits: 3,
        group: 64,
        asymmetric: true,
    },
];

/// Weight of the embedding's cost relative to a layer matmul's. Fitted on the dev checkpoint
/// (docs/quality.md, "Weighing the units"): lowering one class alone, the rest w8, adds mean
/// KL per unit of (unweighted) cost 0.157 for the MLPs at w3g128a, 0.150 for attention at
/// w3g128a, 0.27 for the embedding at w2g128a, and 1.8 to 2.5 for the lm_head (w4g128 to
/// w2g128a).
pub const EMBED_WEIGHT: f64 = 1.7;

/// Weight of the lm_head's cost relative to a layer matmul's (see [`EMBED_WEIGHT`]): 12 to 16
/// measured. Noise that is a fraction `c` of the logits' power costs about `c · E[z²] / 2` nats
/// of KL (`z` the logits), and no later layer damps it.
pub const LM_HEAD_WEIGHT: f64 = 14.0;

/// The manifest's name for the proxy.
pub const PROXY: &str = "relative output error E|(W-Q(W))x|^2 / E|Wx|^2 per fused matrix, diagonal input second moments, RTN, <= 2^20 sampled weights per matrix; weights: layers 1, embedding 1.7, lm_head 14";

/// Stored bytes of a `[rows, cols]` matrix in `scheme` (as `format::matrix_parts`).
pub fn matrix_bytes(rows: usize, cols: usize, scheme: Scheme) -> u64 {
    matrix_parts("", rows, cols, scheme)
        .iter()
        .map(|p| p.n_bytes() as u64)
        .sum()
}

/// One option of a group: a scheme, its bytes and predicted cost.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupOption {
    pub scheme: Scheme,
    pub bytes: u64,
    /// The group's predicted cost (weighted noise-to-signal ratio).
    pub cost: f64,
    /// Each member's share of `cost` (its error over the group's signal), in member order.
    pub member_costs: Vec<f64>,
}

/// Matrices that share one scheme.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// `layers.3.qkv`, `embed`, ...
    pub name: String,
    /// Hugging Face tensor names.
    pub members: Vec<String>,
    /// Every candidate scheme that fits the group's shapes, by increasing bytes.
    pub options: Vec<GroupOption>,
}

/// Per input column, E[x²] over the rows of `x` (`[n, cols]`).
pub fn second_moments(x: &[f32], cols: usize) -> Vec<f64> {
    let n = x.len() / cols.max(1);
    let mut m = vec![0.0f64; cols];
    for row in x.chunks_exact(cols) {
        for (m, &v) in m.iter_mut().zip(row) {
            *m += (v as f64) * (v as f64);
        }
    }
    for v in &mut m {
        *v /= n.max(1) as f64;
    }
    m
}

/// (err_s(W), sig(W)) with column weights `m` (see the module docs). Row blocks are quantized
/// independently: every scheme is row-local, so this equals quantizing the whole matrix.
pub fn weighted_error(
    w: &[f32],
    rows: usize,
    cols: usize,
    m: &[f64],
    scheme: Scheme,
) -> (f64, f64) {
    const BLOCK: usize = 256;
    assert_eq!(w.len(), rows * cols, "matrix length");
    // Blocks in order, then summed in order: the same bits on every run, whatever the threads.
    let parts: Vec<(f64, f64)> = w
        .par_chunks(BLOCK * cols)
        .map(|block| {
            let r = block.len() / cols;
            let q = dequantize(&quantize_rtn(block, r, cols, scheme));
            let (mut err, mut sig) = (0.0f64, 0.0f64);
            for (qr, wr) in q.chunks_exact(cols).zip(block.chunks_exact(cols)) {
                for ((&q, &w), &m) in qr.iter().zip(wr).zip(m) {
                    let d = (q - w) as f64;
                    err += d * d * m;
                    sig += (w as f64) * (w as f64) * m;
                }
            }
            (err, sig)
        })
        .collect();
    parts.iter().fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Weights of one matrix that [`measure`] quantizes per scheme, at most: larger matrices are
/// measured on evenly spread blocks of 16 rows (quantization is row-local, so those rows come
/// out exactly as in the whole matrix; err and sig are sampled alike, so their ratio is an
/// estimate of the whole matrix's). The asymmetric schemes' least-squares fit costs ~40 passes
/// per group, and the dev checkpoint's 630 M weights × 7 schemes would take most of an hour.
pub const MAX_SAMPLED_WEIGHTS: usize = 1 << 20;

/// [`weighted_error`] on at most `max_weights` weights: every row when the matrix is that
/// small, else evenly spread blocks of 16 rows, scaled up to the whole matrix (rows / sampled
/// rows) so that members of one group sampled differently still add up.
pub fn sampled_error(
    w: &[f32],
    rows: usize,
    cols: usize,
    m: &[f64],
    scheme: Scheme,
    max_weights: usize,
) -> (f64, f64) {
    const ROWS: usize = 16;
    if rows * cols <= max_weights {
        return weighted_error(w, rows, cols, m, scheme);
    }
    let blocks = rows.div_ceil(ROWS);
    let keep = (max_weights / (ROWS * cols)).clamp(1, blocks);
    let mut sample = Vec::with_capacity(keep * ROWS * cols);
    for i in 0..keep {
        let b = i * blocks / keep;
        let (r0, r1) = (b * ROWS, ((b + 1) * ROWS).min(rows));
        sample.extend_from_slice(&w[r0 * cols..r1 * cols]);
    }
    let sampled = sample.len() / cols;
    let (err, sig) = weighted_error(&sample, sampled, cols, m, scheme);
    let scale = rows as f64 / sampled as f64;
    (err * scale, sig * scale)
}

/// Measure every group of `weights` in every candidate that fits. `calib` gives the layers'
/// input moments. `progress(done, total)` after each group.
pub fn measure(
    weights: &ReferenceWeights,
    calib: &Calibration,
    candidates: &[Scheme],
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<Group> {
    let c = &weights.config;
    let (h, q, kv, f, v) = (
        c.hidden_size,
        c.q_dim(),
        c.kv_dim(),
        c.intermediate_size,
        c.vocab_size,
    );
    // (name, members [(hf name, w, rows)], cols, column weights, weight)
    type Member<'a> = (String, &'a [f32], usize);
    type Spec<'a> = (String, Vec<Member<'a>>, usize, Vec<f64>, f64);
    let mut specs: Vec<Spec> = Vec::new();
    let empty = LayerActivations::default();
    for (l, lw) in weights.layers.iter().enumerate() {
        let acts = calib.layers.get(l).unwrap_or(&empty);
        let moments = |tap: Tap, cols: usize| {
            let x = acts.get(tap);
            if x.is_empty() {
                vec![1.0; cols]
            } else {
                second_moments(x, cols)
            }
        };
        use LayerTensor::*;
        specs.push((
            format!("layers.{l}.qkv"),
            vec![
                (QProj.name(l), &lw.q_proj[..], q),
                (KProj.name(l), &lw.k_proj[..], kv),
                (VProj.name(l), &lw.v_proj[..], kv),
            ],
            h,
            moments(Tap::Attn, h),
            1.0,
        ));
        specs.push((
            format!("layers.{l}.o_proj"),
            vec![(OProj.name(l), &lw.o_proj[..], h)],
            q,
            moments(Tap::OProj, q),
            1.0,
        ));
        specs.push((
            format!("layers.{l}.gate_up"),
            vec![
                (GateProj.name(l), &lw.gate_proj[..], f),
                (UpProj.name(l), &lw.up_proj[..], f),
            ],
            h,
            moments(Tap::Mlp, h),
            1.0,
        ));
        specs.push((
            format!("layers.{l}.down"),
            vec![(DownProj.name(l), &lw.down_proj[..], h)],
            f,
            moments(Tap::Down, f),
            1.0,
        ));
    }
    match &weights.lm_head {
        Some(head) => {
            specs.push((
                "embed".into(),
                vec![(EMBED.into(), &weights.embed[..], v)],
                h,
                vec![1.0; h],
                EMBED_WEIGHT,
            ));
            specs.push((
                "lm_head".into(),
                vec![(LM_HEAD.into(), &head[..], v)],
                h,
                vec![1.0; h],
                LM_HEAD_WEIGHT,
            ));
        }
        // Tied: one matrix that is both the embedding and the lm_head.
        None => specs.push((
            "embed".into(),
            vec![(EMBED.into(), &weights.embed[..], v)],
            h,
            vec![1.0; h],
            EMBED_WEIGHT + LM_HEAD_WEIGHT,
        )),
    }
    let total = specs.len();
    let mut groups = Vec::with_capacity(total);
    for (i, (name, members, cols, m, weight)) in specs.into_iter().enumerate() {
        let mut options = Vec::new();
        for &scheme in candidates {
            if scheme.check_cols(cols).is_err() {
                continue;
            }
            let errs: Vec<(f64, f64)> = members
                .iter()
                .map(|(_, w, rows)| sampled_error(w, *rows, cols, &m, scheme, MAX_SAMPLED_WEIGHTS))
                .collect();
            let sig: f64 = errs.iter().map(|e| e.1).sum::<f64>().max(f64::MIN_POSITIVE);
            let member_costs: Vec<f64> = errs.iter().map(|e| weight * e.0 / sig).collect();
            options.push(GroupOption {
                scheme,
                bytes: members
                    .iter()
                    .map(|(_, _, rows)| matrix_bytes(*rows, cols, scheme))
                    .sum(),
                cost: member_costs.iter().sum(),
                member_costs,
            });
        }
        options.sort_by(|a, b| a.bytes.cmp(&b.bytes).then(a.cost.total_cmp(&b.cost)));
        groups.push(Group {
            name,
            members: members.into_iter().map(|m| m.0).collect(),
            options,
        });
        progress(i + 1, total);
    }
    groups
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "budget of {budget} bytes ({:.1} MB) is below the smallest assignment ({minimum} bytes, {:.1} MB: every matrix in its cheapest scheme{}): raise --budget-mb to at least {}",
        *budget as f64 / 1e6, *minimum as f64 / 1e6, cheapest.as_deref().map(|s| format!(", {s}")).unwrap_or_default(), minimum.div_ceil(1_000_000)
    )]
    TooSmall {
        budget: u64,
        minimum: u64,
        cheapest: Option<String>,
    },
    #[error("group `{0}` has no scheme that fits its shape")]
    NoOption(String),
}

/// The chosen option index of every group.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub choice: Vec<usize>,
    /// Bytes of the chosen matrices.
    pub bytes: u64,
    /// Predicted cost (sum over groups).
    pub cost: f64,
}

/// Choose one option per group with total bytes ≤ `budget` (bytes for the matrices alone)
/// and least predicted cost, greedily (see the module docs). Deterministic: ties go to the
/// earlier group.
pub fn select(groups: &[Group], budget: u64) -> Result<Selection, BudgetError> {
    if let Some(g) = groups.iter().find(|g| g.options.is_empty()) {
        return Err(BudgetError::NoOption(g.name.clone()));
    }
    // The cheapest option of each group (by bytes, then cost).
    let mut choice: Vec<usize> = vec![0; groups.len()];
    let minimum: u64 = groups.iter().map(|g| g.options[0].bytes).sum();
    if minimum > budget {
        let mut names: Vec<String> = groups
            .iter()
            .map(|g| g.options[0].scheme.to_string())
            .collect();
        names.dedup();
        return Err(BudgetError::TooSmall {
            budget,
            minimum,
            cheapest: Some(names.join("/")),
        });
    }
    // Lower convex hull of (bytes, cost) per group: options worth taking in order.
    let hulls: Vec<Vec<usize>> = groups.iter().map(|g| lower_hull(&g.options)).collect();
    let mut pos: Vec<usize> = vec![0; groups.len()]; // index into the hull
    let mut used = minimum;
    loop {
        let mut best: Option<(f64, usize)> = None;
        for (gi, g) in groups.iter().enumerate() {
            let hull = &hulls[gi];
            let Some(&next) = hull.get(pos[gi] + 1) else {
                continue;
            };
            let (cur, nxt) = (&g.options[hull[pos[gi]]], &g.options[next]);
            let extra = nxt.bytes - cur.bytes;
            if used + extra > budget {
                continue;
            }
            let slope = (cur.cost - nxt.cost) / extra.max(1) as f64;
            if best.is_none_or(|(s, _)| slope > s) {
                best = Some((slope, gi));
            }
        }
        let Some((_, gi)) = best else { break };
        let hull = &hulls[gi];
        used +=
            groups[gi].options[hull[pos[gi] + 1]].bytes - groups[gi].options[hull[pos[gi]]].bytes;
        pos[gi] += 1;
    }
    for (gi, hull) in hulls.iter().enumerate() {
        choice[gi] = hull[pos[gi]];
    }
    // Fill what is left with the best single change (any option, hull or not).
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for (gi, g) in groups.iter().enumerate() {
            let cur = &g.options[choice[gi]];
            for (oi, o) in g.options.iter().enumerate() {
                let gain = cur.cost - o.cost;
                if gain > 0.0
                    && used - cur.bytes + o.bytes <= budget
                    && best.is_none_or(|(b, _, _)| gain > b)
                {
                    best = Some((gain, gi, oi));
                }
            }
        }
        let Some((_, gi, oi)) = best else { break };
        used = used - groups[gi].options[choice[gi]].bytes + groups[gi].options[oi].bytes;
        choice[gi] = oi;
    }
    let cost = groups
        .iter()
        .zip(&choice)
        .map(|(g, &c)| g.options[c].cost)
        .sum();
    Ok(Selection {
        choice,
        bytes: used,
        cost,
    })
}

/// Indices of `options` (sorted by bytes) on the lower convex hull of (bytes, cost), from the
/// cheapest: each step buys a cost reduction at a falling price per byte.
fn lower_hull(options: &[GroupOption]) -> Vec<usize> {
    let mut hull: Vec<usize> = vec![0];
    for i in 1..options.len() {
        let o = &options[i];
        let last = &options[*hull.last().unwrap()];
        // Only strictly better options that cost more bytes.
        if o.cost >= last.cost || o.bytes == last.bytes {
            continue;
        }
        while hull.len() >= 2 {
            let (a, b) = (
                &options[hull[hull.len() - 2]],
                &options[hull[hull.len() - 1]],
            );
            // b is above the segment a→o: drop it.
            let slope_ab = (a.cost - b.cost) / (b.bytes - a.bytes) as f64;
            let slope_ao = (a.cost - o.cost) / (o.bytes - a.bytes) as f64;
            if slope_ao >= slope_ab {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(i);
    }
    hull
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(scheme: &str, bytes: u64, cost: f64) -> GroupOption {
        GroupOption {
            scheme: scheme.parse().unwrap(),
            bytes,
            cost,
            member_costs: vec![cost],
        }
    }

    fn group(name: &str, options: Vec<GroupOption>) -> Group {
        Group {
            name: name.into(),
            members: vec![name.into()],
            options,
        }
    }

    #[test]
    fn hull_drops_dominated_and_concave_points() {
        let o = vec![
            opt("w4g128", 10, 10.0),
            opt("w4g64", 11, 9.9),
            opt("w4g32", 12, 5.0),
            opt("w4g32a", 13, 6.0),
            opt("w8", 20, 0.0),
        ];
        assert_eq!(lower_hull(&o), vec![0, 2, 4]);
    }

    #[test]
    fn greedy_spends_the_budget_where_it_buys_most() {
        let groups = vec![
            group("a", vec![opt("w4g128", 10, 10.0), opt("w8", 20, 0.0)]), // 1.0 per byte
            group("b", vec![opt("w4g128", 10, 1.0), opt("w8", 20, 0.0)]),  // 0.1 per byte
        ];
        let s = select(&groups, 30).unwrap();
        assert_eq!((s.choice.clone(), s.bytes), (vec![1, 0], 30));
        assert_eq!(select(&groups, 40).unwrap().choice, vec![1, 1]);
        assert_eq!(select(&groups, 29).unwrap().choice, vec![0, 0]);
        let err = select(&groups, 19).unwrap_err();
        assert!(
            matches!(
                err,
                BudgetError::TooSmall {
                    minimum: 20,
                    budget: 19,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("raise --budget-mb"), "{err}");
    }

    #[test]
    fn sampling_is_exact_for_small_matrices_and_close_for_large() {
        let (rows, cols) = (512, 64);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 504.0)
            .collect();
        let m: Vec<f64> = (0..cols).map(|j| 1.0 + j as f64 / 8.0).collect();
        let s: Scheme = "w4g32a".parse().unwrap();
        let full = weighted_error(&w, rows, cols, &m, s);
        assert_eq!(sampled_error(&w, rows, cols, &m, s, rows * cols), full);
        let part = sampled_error(&w, rows, cols, &m, s, rows * cols / 4);
        let (ratio_full, ratio_part) = (full.0 / full.1, part.0 / part.1);
        assert!(
            (ratio_part / ratio_full - 1.0).abs() < 0.1,
            "{ratio_part} vs {ratio_full}"
        );
        assert!(
            (part.1 / full.1 - 1.0).abs() < 0.1,
            "{} vs {}",
            part.1,
            full.1
        );
    }

    #[test]
    fn moments_and_errors() {
        assert_eq!(second_moments(&[1.0, 2.0, 3.0, 4.0], 2), vec![5.0, 10.0]);
        let w: Vec<f32> = (0..8 * 64)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let m = vec![1.0; 64];
        let (e8, sig) = weighted_error(&w, 8, 64, &m, Scheme::W8);
        let (e4, sig4) = weighted_error(&w, 8, 64, &m, "w4g32".parse().unwrap());
        assert_eq!(sig, sig4);
        assert!(e8 < e4 && e4 < sig, "{e8} {e4} {sig}");
        // Weighting a column scales its share.
        let whole = dequantize(&quantize_rtn(&w, 8, 64, Scheme::W8));
        let direct: f64 = whole
            .iter()
            .zip(&w)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        assert!((direct - e8).abs() <= 1e-9 * direct.max(1.0));
    }
}
