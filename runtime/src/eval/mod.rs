//! Accuracy and perplexity of a compiled model: lm-evaluation-harness's 0-shot
//! loglikelihood multiple choice (`arc_challenge`, `hellaswag`, `piqa`), windowed
//! perplexity, and the continuation scoring both use (also for the server).
//!
//! - [`scoring`]: [`score_continuations`] — log P(continuation | context) per
//!   continuation, sharing the context's KV cache;
//! - [`tasks`]: the data files and prompts;
//! - [`harness`]: lm-eval's tokenization of requests, acc / acc_norm, standard errors,
//!   the results JSON and table;
//! - [`perplexity`]: windowed perplexity;
//! - [`kl`]: KL divergence from stored reference logits (top-K);
//! - [`progress`]: the rate-limited progress line of the CLI.

pub mod harness;
pub mod kl;
pub mod perplexity;
pub mod progress;
pub mod scoring;
pub mod tasks;

pub use harness::{evaluate_doc, evaluate_task, results_json, DocResult, EvalError, TaskReport};
pub use scoring::{score_continuations, ContinuationScore, ScoreError};
pub use tasks::{load_task, Doc, Selection, Task, TaskDocs};
