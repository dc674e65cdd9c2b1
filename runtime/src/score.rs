//! The AICAS 2025 challenge score (GUIDE.md §3) from our own reports.
//!
//! ```text
//! Ratio_acc = 1                          if P >= P_max
//!           = (P - P_min) / (P_max - P_min) otherwise
//! Ratio_mem = 1 - M_opt / M_ori          (peak resident memory, MB)
//! Ratio_P   = 1 - T_ori / T_opt          (prefill throughput, tokens/s)
//! Ratio_D   = 1 - T_ori / T_opt          (decode throughput, tokens/s)
//! total     = 0.4 Ratio_acc / best_acc + 0.2 Ratio_mem / best_mem
//!           + 0.2 Ratio_P / best_P     + 0.2 Ratio_D / best_D
//! ```
//!
//! P is the mean of the challenge metrics: acc_norm on arc_challenge and hellaswag, acc on
//! piqa (`qwen eval --output`). T and M come from `qwen bench --json`: the `aicas` profile's
//! own figures (`report.aicas`), or optimum-benchmark's targets for the `optimum` profile.
//! The ratios are not clamped: a model below P_min, or slower/larger than the baseline, gets
//! a negative ratio, as the formula says.

use serde_json::Value;

/// The tasks whose mean is P, with the metric the challenge reports for each.
pub const CHALLENGE_TASKS: [(&str, &str); 3] = [
    ("arc_challenge", "acc_norm,none"),
    ("hellaswag", "acc_norm,none"),
    ("piqa", "acc,none"),
];

/// The weights of the four ratios in the total.
pub const WEIGHTS: Weights = Weights {
    acc: 0.4,
    mem: 0.2,
    prefill: 0.2,
    decode: 0.2,
};

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Weights {
    pub acc: f64,
    pub mem: f64,
    pub prefill: f64,
    pub decode: f64,
}

/// The baseline's figures (the original model run by transformers, and the GPTQ-Int4 model
/// for P_min).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Baseline {
    /// Accuracy average of the original model.
    pub p_max: f64,
    /// Accuracy average of Qwen2.5-0.5B-Instruct-GPTQ-Int4.
    pub p_min: f64,
    /// Peak memory of the original model, MB.
    pub mem_mb: f64,
    /// Prefill throughput of the original model, tokens/s.
    pub prefill_tok_s: f64,
    /// Decode throughput of the original model, tokens/s.
    pub decode_tok_s: f64,
}

/// The best team's ratios, which each of ours is divided by (1 = no normalisation).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Best {
    pub acc: f64,
    pub mem: f64,
    pub prefill: f64,
    pub decode: f64,
}

impl Default for Best {
    fn default() -> Self {
        Best {
            acc: 1.0,
            mem: 1.0,
            prefill: 1.0,
            decode: 1.0,
        }
    }
}

/// Our measured figures.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Measured {
    /// Mean of the challenge metrics.
    pub accuracy: f64,
    /// The metric of each task that went into `accuracy`.
    pub task_metrics: Vec<(String, f64)>,
    pub mem_mb: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// Where the bench figures came from, e.g. `aicas` or `optimum`.
    pub bench_profile: String,
}

/// One ratio: raw, normalised by the best team, and its weighted share of the total.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Ratio {
    pub raw: f64,
    pub normalised: f64,
    pub weighted: f64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Score {
    pub acc: Ratio,
    pub mem: Ratio,
    pub prefill: Ratio,
    pub decode: Ratio,
    pub total: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    #[error("{name} must be a finite number above 0, not {value}")]
    NotPositive { name: &'static str, value: f64 },
    #[error("P_max ({p_max}) must be above P_min ({p_min})")]
    AccuracyRange { p_max: f64, p_min: f64 },
    #[error("the eval JSON has no {metric} for task `{task}` (the score needs arc_challenge, hellaswag and piqa: run `qwen eval --output FILE` with all three)")]
    MissingTask { task: String, metric: String },
    #[error("the bench JSON has no {0} (expected the output of `qwen bench --json FILE`)")]
    MissingBench(String),
}

fn positive(name: &'static str, value: f64) -> Result<f64, ScoreError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ScoreError::NotPositive { name, value })
    }
}

impl Baseline {
    fn check(&self) -> Result<(), ScoreError> {
        if !(self.p_max.is_finite() && self.p_min.is_finite() && self.p_max > self.p_min) {
            return Err(ScoreError::AccuracyRange {
                p_max: self.p_max,
                p_min: self.p_min,
            });
        }
        positive("the baseline memory", self.mem_mb)?;
        positive("the baseline prefill throughput", self.prefill_tok_s)?;
        positive("the baseline decode throughput", self.decode_tok_s)?;
        Ok(())
    }
}

/// The challenge score of `measured` against `baseline`, normalised by `best`.
pub fn score(measured: &Measured, baseline: &Baseline, best: &Best) -> Result<Score, ScoreError> {
    baseline.check()?;
    positive("the best team's accuracy ratio", best.acc)?;
    positive("the best team's memory ratio", best.mem)?;
    positive("the best team's prefill ratio", best.prefill)?;
    positive("the best team's decode ratio", best.decode)?;
    if !measured.accuracy.is_finite() {
        return Err(ScoreError::NotPositive {
            name: "the measured accuracy",
            value: measured.accuracy,
        });
    }
    positive("the measured memory", measured.mem_mb)?;
    positive("the measured prefill throughput", measured.prefill_tok_s)?;
    positive("the measured decode throughput", measured.decode_tok_s)?;

    let acc = if measured.accuracy >= baseline.p_max {
        1.0
    } else {
        (measured.accuracy - baseline.p_min) / (baseline.p_max - baseline.p_min)
    };
    let mem = 1.0 - measured.mem_mb / baseline.mem_mb;
    let prefill = 1.0 - baseline.prefill_tok_s / measured.prefill_tok_s;
    let decode = 1.0 - baseline.decode_tok_s / measured.decode_tok_s;
    let ratio = |raw: f64, best: f64, weight: f64| Ratio {
        raw,
        normalised: raw / best,
        weighted: weight * raw / best,
    };
    let acc = ratio(acc, best.acc, WEIGHTS.acc);
    let mem = ratio(mem, best.mem, WEIGHTS.mem);
    let prefill = ratio(prefill, best.prefill, WEIGHTS.prefill);
    let decode = ratio(decode, best.decode, WEIGHTS.decode);
    Ok(Score {
        total: acc.weighted + mem.weighted + prefill.weighted + decode.weighted,
        acc,
        mem,
        prefill,
        decode,
    })
}

/// The challenge metrics of an eval JSON (`qwen eval --output`) and their mean.
pub fn accuracy_from_eval(eval: &Value) -> Result<(f64, Vec<(String, f64)>), ScoreError> {
    let mut metrics = Vec::new();
    for (task, metric) in CHALLENGE_TASKS {
        let v = eval
            .get("results")
            .and_then(|r| r.get(task))
            .and_then(|t| t.get(metric))
            .and_then(Value::as_f64)
            .ok_or_else(|| ScoreError::MissingTask {
                task: task.to_string(),
                metric: metric.trim_end_matches(",none").to_string(),
            })?;
        metrics.push((task.to_string(), v));
    }
    let mean = metrics.iter().map(|(_, v)| v).sum::<f64>() / metrics.len() as f64;
    Ok((mean, metrics))
}

/// Prefill and decode throughput and peak memory of a bench JSON (`qwen bench --json`):
/// `(profile, prefill, decode, memory MB)`. The `aicas` profile's figures are the
/// challenge's own definitions; for `optimum` the prefill and decode targets' throughputs.
pub fn speed_from_bench(bench: &Value) -> Result<(String, f64, f64, f64), ScoreError> {
    let missing = |what: &str| ScoreError::MissingBench(what.to_string());
    let report = bench.get("report").ok_or_else(|| missing("`report`"))?;
    let peak = ["prefill", "decode", "generate"]
        .iter()
        .filter_map(|t| report.get(t)?.get("memory")?.get("max_ram")?.as_f64())
        .reduce(f64::max);
    if let Some(a) = report.get("aicas").filter(|a| !a.is_null()) {
        let get = |k: &str| {
            a.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| missing(&format!("`report.aicas.{k}`")))
        };
        let mem = a
            .get("peak_rss_mb")
            .and_then(Value::as_f64)
            .or(peak)
            .ok_or_else(|| missing("peak memory (`report.aicas.peak_rss_mb`)"))?;
        return Ok((
            "aicas".to_string(),
            get("prefill_tok_s")?,
            get("decode_tok_s")?,
            mem,
        ));
    }
    let throughput = |t: &str| {
        report
            .get(t)
            .and_then(|t| t.get("throughput"))
            .and_then(|t| t.get("value"))
            .and_then(Value::as_f64)
            .ok_or_else(|| missing(&format!("`report.{t}.throughput.value`")))
    };
    Ok((
        "optimum".to_string(),
        throughput("prefill")?,
        throughput("decode")?,
        peak.ok_or_else(|| missing("peak memory (`report.*.memory.max_ram`)"))?,
    ))
}

/// [`Measured`] from the two JSON reports.
pub fn measured_from_reports(eval: &Value, bench: &Value) -> Result<Measured, ScoreError> {
    let (accuracy, task_metrics) = accuracy_from_eval(eval)?;
    let (bench_profile, prefill_tok_s, decode_tok_s, mem_mb) = speed_from_bench(bench)?;
    Ok(Measured {
        accuracy,
        task_metrics,
        mem_mb,
        prefill_tok_s,
        decode_tok_s,
        bench_profile,
    })
}
