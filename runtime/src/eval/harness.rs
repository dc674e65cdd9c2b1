//! Multiple-choice evaluation as lm-evaluation-harness's `multiple_choice` output type
//! with its Hugging Face model: tokenization of the requests, acc / acc_norm, standard
//! errors and the results JSON.

use std::time::Instant;

use serde_json::{json, Map, Value};

use super::scoring::{score_continuations, ScoreError};
use super::tasks::{Doc, Task, TaskDocs};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// Python's `str.isspace` for one character (Rust's `char::is_whitespace` plus the
/// separators U+001C..U+001F, which Python also counts).
pub fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `(context.rstrip(), the whitespace rstrip removed)`.
pub fn split_trailing_whitespace(context: &str) -> (&str, &str) {
    let kept = context.trim_end_matches(is_python_space);
    (kept, &context[kept.len()..])
}

/// lm-eval's `_encode_pair`: the context's trailing whitespace moves to the front of the
/// continuation; `whole = encode(context + continuation)`, `ctx = encode(context)` and the
/// continuation tokens are `whole[len(ctx):]`. Returns `(ctx, continuation tokens)`.
pub fn encode_pair(
    tokenizer: &Tokenizer,
    context: &str,
    continuation: &str,
) -> (Vec<u32>, Vec<u32>) {
    let (ctx, moved) = split_trailing_whitespace(context);
    let ctx_ids = tokenizer.encode(ctx);
    let whole = tokenizer.encode(&format!("{ctx}{moved}{continuation}"));
    let cont = whole.get(ctx_ids.len()..).unwrap_or_default().to_vec();
    (ctx_ids, cont)
}

/// The tokens lm-eval scores for a document: the context (shared by every choice: it is
/// the same string after the whitespace moving) and one continuation per choice.
///
/// An empty context becomes `[prefix_token]`, as lm-eval does (its prefix token is the
/// eos for Qwen, which has no BOS).
pub fn doc_requests(
    tokenizer: &Tokenizer,
    doc: &Doc,
    prefix_token: Option<u32>,
) -> (Vec<u32>, Vec<Vec<u32>>) {
    let mut ctx = Vec::new();
    let mut conts = Vec::with_capacity(doc.choices.len());
    for i in 0..doc.choices.len() {
        let continuation = doc.continuation(i);
        if doc.context.is_empty() {
            ctx = prefix_token.into_iter().collect();
            conts.push(tokenizer.encode(&continuation));
        } else {
            let (c, cont) = encode_pair(tokenizer, &doc.context, &continuation);
            ctx = c;
            conts.push(cont);
        }
    }
    (ctx, conts)
}

/// Index of the first maximum (`numpy.argmax`; NaN never wins here).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// lm-eval's acc_norm choice: the argmax of `loglikelihood / len(choice)`, the length in
/// Unicode code points of the choice text (without the target delimiter).
pub fn argmax_normalized(loglikelihoods: &[f64], choices: &[String]) -> usize {
    let normalized: Vec<f64> = loglikelihoods
        .iter()
        .zip(choices)
        .map(|(ll, c)| ll / c.chars().count() as f64)
        .collect();
    argmax(&normalized)
}

/// Mean of `xs` (NaN when empty).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// lm-eval's `mean_stderr`: sample standard deviation (n - 1) / sqrt(n). `None` for fewer
/// than 2 values (lm-eval writes "N/A").
pub fn mean_stderr(xs: &[f64]) -> Option<f64> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let mu = mean(xs);
    let var = xs.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / (n - 1) as f64;
    Some(var.sqrt() / (n as f64).sqrt())
}

/// The outcome of one document.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DocResult {
    pub doc_id: usize,
    pub target: usize,
    /// Summed log-probability of each choice's continuation.
    pub loglikelihoods: Vec<f64>,
    /// Per choice: every continuation token was the greedy one.
    pub is_greedy: Vec<bool>,
    /// Continuation tokens per choice.
    pub continuation_tokens: Vec<usize>,
    pub pred_acc: usize,
    pub pred_acc_norm: usize,
    pub acc: f64,
    pub acc_norm: f64,
}

/// Scores every choice of `doc` (the context runs once) and picks acc / acc_norm.
pub fn evaluate_doc(model: &dyn Model, doc: &Doc) -> Result<DocResult, ScoreError> {
    let prefix = model.info().eos_token_ids.first().copied();
    let (ctx, conts) = doc_requests(model.tokenizer(), doc, prefix);
    let scores = score_continuations(model, &ctx, &conts)?;
    let loglikelihoods: Vec<f64> = scores.iter().map(|s| s.logprob_sum).collect();
    let pred_acc = argmax(&loglikelihoods);
    let pred_acc_norm = argmax_normalized(&loglikelihoods, &doc.choices);
    let hit = |pred: usize| if pred == doc.target { 1.0 } else { 0.0 };
    Ok(DocResult {
        doc_id: doc.doc_id,
        target: doc.target,
        is_greedy: scores.iter().map(|s| s.is_greedy).collect(),
        continuation_tokens: conts.iter().map(Vec::len).collect(),
        loglikelihoods,
        pred_acc,
        pred_acc_norm,
        acc: hit(pred_acc),
        acc_norm: hit(pred_acc_norm),
    })
}

/// Scoring a document failed.
#[derive(Debug, thiserror::Error)]
#[error("{task}, document {doc_id}: {source}")]
pub struct EvalError {
    pub task: Task,
    pub doc_id: usize,
    pub source: ScoreError,
}

/// The results of one task.
#[derive(Clone, Debug)]
pub struct TaskReport {
    pub task: Task,
    /// Documents in the data file.
    pub in_file: usize,
    pub samples: Vec<DocResult>,
    pub seconds: f64,
}

impl TaskReport {
    fn values(&self, norm: bool) -> Vec<f64> {
        self.samples
            .iter()
            .map(|s| if norm { s.acc_norm } else { s.acc })
            .collect()
    }
    pub fn acc(&self) -> f64 {
        mean(&self.values(false))
    }
    pub fn acc_stderr(&self) -> Option<f64> {
        mean_stderr(&self.values(false))
    }
    pub fn acc_norm(&self) -> f64 {
        mean(&self.values(true))
    }
    pub fn acc_norm_stderr(&self) -> Option<f64> {
        mean_stderr(&self.values(true))
    }
    /// The metric the challenge reports for this task.
    pub fn challenge_value(&self) -> f64 {
        match self.task.challenge_metric() {
            "acc_norm" => self.acc_norm(),
            _ => self.acc(),
        }
    }
}

/// Evaluates the documents in order; `progress(done)` is called after each one.
pub fn evaluate_task(
    model: &dyn Model,
    docs: &TaskDocs,
    progress: &mut dyn FnMut(usize),
) -> Result<TaskReport, EvalError> {
    let start = Instant::now();
    let mut samples = Vec::with_capacity(docs.docs.len());
    for doc in &docs.docs {
        let result = evaluate_doc(model, doc).map_err(|source| EvalError {
            task: docs.task,
            doc_id: doc.doc_id,
            source,
        })?;
        samples.push(result);
        progress(samples.len());
    }
    Ok(TaskReport {
        task: docs.task,
        in_file: docs.in_file,
        samples,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn stderr_value(s: Option<f64>) -> Value {
    s.map_or_else(|| Value::from("N/A"), Value::from)
}

/// The results JSON, shaped like lm-eval's output:
/// `{"results": {task: {"alias", "acc,none", "acc_stderr,none", "acc_norm,none",
/// "acc_norm_stderr,none"}}, "versions", "n-shot", "higher_is_better", "n-samples":
/// {task: {"original", "effective"}}, "config", "challenge": {"metrics", "average"},
/// "samples": {task: [DocResult...]}}`. A standard error over fewer than 2 documents is
/// the string "N/A", as in lm-eval.
pub fn results_json(reports: &[TaskReport], config: Value) -> Value {
    let mut results = Map::new();
    let mut versions = Map::new();
    let mut n_shot = Map::new();
    let mut higher = Map::new();
    let mut n_samples = Map::new();
    let mut samples = Map::new();
    let mut challenge = Map::new();
    for r in reports {
        let name = r.task.name().to_string();
        results.insert(
            name.clone(),
            json!({
                "alias": name,
                "acc,none": r.acc(),
                "acc_stderr,none": stderr_value(r.acc_stderr()),
                "acc_norm,none": r.acc_norm(),
                "acc_norm_stderr,none": stderr_value(r.acc_norm_stderr()),
            }),
        );
        versions.insert(name.clone(), json!(1.0));
        n_shot.insert(name.clone(), json!(0));
        higher.insert(name.clone(), json!({"acc": true, "acc_norm": true}));
        n_samples.insert(
            name.clone(),
            json!({"original": r.in_file, "effective": r.samples.len()}),
        );
        samples.insert(name.clone(), json!(r.samples));
        challenge.insert(
            name,
            json!({"metric": r.task.challenge_metric(), "value": r.challenge_value()}),
        );
    }
    let values: Vec<f64> = reports.iter().map(TaskReport::challenge_value).collect();
    json!({
        "results": results,
        "versions": versions,
        "n-shot": n_shot,
        "higher_is_better": higher,
        "n-samples": n_samples,
        "config": config,
        "challenge": {"metrics": challenge, "average": if values.is_empty() { Value::Null } else { json!(mean(&values)) }},
        "samples": samples,
    })
}

/// A Markdown table of the results (what `qwen eval` prints).
pub fn summary_table(reports: &[TaskReport]) -> String {
    let fmt_se = |s: Option<f64>| s.map_or_else(|| "N/A".to_string(), |v| format!("{v:.4}"));
    let width = reports
        .iter()
        .map(|r| r.task.name().len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "| {:<width$} | {:>5} | {:<8} | {:>6} |   | {:>6} |\n|{}|{}:|{}|{}:|---|{}:|\n",
        "Task",
        "n",
        "Metric",
        "Value",
        "Stderr",
        "-".repeat(width + 2),
        "-".repeat(6),
        "-".repeat(10),
        "-".repeat(7),
        "-".repeat(7),
    );
    for r in reports {
        let n = r.samples.len();
        out.push_str(&format!(
            "| {:<width$} | {n:>5} | {:<8} | {:>6.4} | ± | {:>6} |\n",
            r.task.name(),
            "acc",
            r.acc(),
            fmt_se(r.acc_stderr())
        ));
        out.push_str(&format!(
            "| {:<width$} | {:>5} | {:<8} | {:>6.4} | ± | {:>6} |\n",
            "",
            "",
            "acc_norm",
            r.acc_norm(),
            fmt_se(r.acc_norm_stderr())
        ));
    }
    if !reports.is_empty() {
        let parts: Vec<String> = reports
            .iter()
            .map(|r| {
                format!(
                    "{} {} {:.4}",
                    r.task.name(),
                    r.task.challenge_metric(),
                    r.challenge_value()
                )
            })
            .collect();
        let values: Vec<f64> = reports.iter().map(TaskReport::challenge_value).collect();
        out.push_str(&format!(
            "\nchallenge metrics: {}; average {:.4}\n",
            parts.join(", "),
            mean(&values)
        ));
    }
    out
}
