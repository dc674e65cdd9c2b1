//! `qwen bench` on the fake model, through `cli::run` with captured streams (real clock:
//! only shapes and counts are checked here; bench_formulas.rs checks the arithmetic).

mod common;

use common::{qwen, TempFile};
use qwenc_runtime::model::Model;
use qwenc_runtime::testing::FakeModel;

/// Literal backslash-n, as in the challenge prompt: kept as it is.
const PROMPT: &str = "the world\\nin the\\nweather ";

#[test]
fn aicas_summary_and_json_on_stdout() {
    let file = TempFile::new("aicas.txt", PROMPT);
    let model = FakeModel::new();
    let n = model.tokenizer().encode(PROMPT).len();
    let out = qwen(
        &model,
        &[
            "bench",
            "--prompt-file",
            file.path(),
            "--runs",
            "2",
            "--new-tokens",
            "4",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // 2 forward passes, then 2 generations of 1 + 3 passes.
    assert_eq!(model.forward_calls(), 2 + 2 * 4);
    assert_eq!(model.forwarded_tokens(), 4 * n + 2 * 3);
    let line = out.stdout.trim_end();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.starts_with("aicas: prefill "), "{line}");
    assert!(line.contains(" tok/s (incl. prefill) · "), "{line}");
    assert!(line.contains(" tok/s (excl.) · "), "{line}");
    assert!(
        line.contains(&format!("{n} prompt + 4 new tokens, 2 runs · peak RSS ")),
        "{line}"
    );
    assert!(line.ends_with(" · fake · f32"), "{line}");
    assert!(out.stderr.contains("aicas prefill 2/2"), "{}", out.stderr);
    assert!(out.stderr.contains("aicas decode 2/2"), "{}", out.stderr);

    let out = qwen(
        &model,
        &[
            "bench",
            "--profile",
            "aicas",
            "--prompt-file",
            file.path(),
            "--runs",
            "1",
            "--new-tokens",
            "3",
            "--json",
            "-",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["config"]["profile"], "aicas");
    assert_eq!(v["config"]["prompt"], file.path());
    assert_eq!(v["config"]["prompt_tokens"], n);
    assert_eq!(v["config"]["runs"], 1);
    assert_eq!(v["config"]["model"]["backend"], "fake");
    assert!(v["config"]["threads"].as_u64().unwrap() >= 1);
    assert_eq!(v["report"]["aicas"]["runs"], 1);
    assert_eq!(v["report"]["aicas"]["new_tokens"], 3);
    assert!(v["report"]["aicas"]["prefill_tok_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["report"]["prefill"]["throughput"]["unit"], "tokens/s");
    assert_eq!(v["report"]["prefill"]["memory"]["unit"], "MB");
    if cfg!(target_os = "linux") {
        assert!(v["report"]["decode"]["memory"]["max_ram"].as_f64().unwrap() > 1.0);
    }
    // The summary moved to stderr.
    assert!(out
        .stderr
        .trim_end()
        .lines()
        .last()
        .unwrap()
        .starts_with("aicas: prefill "));
}

#[test]
fn optimum_json_file_and_summary() {
    let model = FakeModel::new();
    let json = TempFile::new("report.json", "");
    let out = qwen(
        &model,
        &[
            "bench",
            "--profile",
            "optimum",
            "--prompt-tokens",
            "40",
            "--new-tokens",
            "5",
            "--iterations",
            "3",
            "--duration",
            "0",
            "--warmup",
            "1",
            "--json",
            json.path(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // First full generation, 1 warm-up of 2 tokens, 3 of 1 token, 3 of 5 tokens.
    assert_eq!(model.forward_calls(), 5 + 2 + 3 + 3 * 5);
    let line = out.stdout.trim_end();
    assert!(line.starts_with("optimum: prefill "), "{line}");
    assert!(
        line.contains("40 prompt + 5 new tokens, 3 + 3 iterations"),
        "{line}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap()).unwrap();
    assert_eq!(v["config"]["profile"], "optimum");
    assert_eq!(
        v["config"]["prompt"],
        "built-in text, repeated to 40 tokens"
    );
    assert_eq!(v["config"]["duration"], 0.0);
    assert_eq!(v["report"]["prefill"]["latency"]["count"], 3);
    assert_eq!(v["report"]["per_token"]["latency"]["count"], 3 * 4);
    assert!(v["report"].get("aicas").is_none());
}

#[test]
fn unreadable_prompt_file_is_a_clear_error() {
    let model = FakeModel::new();
    let out = qwen(
        &model,
        &[
            "bench",
            "--prompt-file",
            "/nonexistent/prompt.txt",
            "--runs",
            "1",
        ],
    );
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    let err = out.stderr.trim_end();
    assert!(
        err.starts_with("error: cannot read the prompt file /nonexistent/prompt.txt: "),
        "{err}"
    );
    assert!(err.contains("--prompt-file"), "{err}");
    assert_eq!(model.forward_calls(), 0);
    // The optimum profile reads a given file too.
    let out = qwen(
        &model,
        &[
            "bench",
            "--profile",
            "optimum",
            "--prompt-file",
            "/nonexistent/prompt.txt",
        ],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("cannot read the prompt file"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_flags_are_refused() {
    let model = FakeModel::new();
    let file = TempFile::new("flags.txt", PROMPT);
    let out = qwen(
        &model,
        &["bench", "--prompt-file", file.path(), "--duration", "1"],
    );
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim_end(),
        "error: --duration applies to --profile optimum only"
    );
    let out = qwen(&model, &["bench", "--profile", "optimum", "--runs", "3"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim_end(),
        "error: --runs applies to --profile aicas only"
    );
    let out = qwen(&model, &["bench", "--new-tokens", "1"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("at least 2"), "{}", out.stderr);
    let out = qwen(&model, &["bench", "--profile", "fastest"]);
    assert_eq!(out.code, 1);
    // A prompt too long for the context is refused before any forward pass.
    let long = TempFile::new("long.txt", &"weather ".repeat(100));
    let out = qwen(
        &model,
        &["bench", "--prompt-file", long.path(), "--runs", "1"],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("more than the context"),
        "{}",
        out.stderr
    );
    assert_eq!(model.forward_calls(), 0);
}
