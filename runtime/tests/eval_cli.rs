//! `qwen eval` and `qwen perplexity` on the fake model, through `cli::run`, with data
//! files written to a temporary directory.

mod common;

use std::path::Path;

use common::{log_softmax_at, qwen, TempDir};
use qwenc_runtime::eval::perplexity::perplexity;
use qwenc_runtime::model::Model;
use qwenc_runtime::testing::FakeModel;

const ARC: &str = r#"{"id": "a1", "question": "What is in the world?", "choices": ["the sea", "in", "a whole lot of other things"], "label": 0}
{"id": "a2", "question": "Where?", "choices": ["here", "there", "on the other hand", "nowhere"], "label": 2}
"#;
const PIQA: &str = r#"{"goal": "Open a jar", "sol1": "twist the lid", "sol2": "sit on it", "label": 0}
{"goal": "Boil water", "sol1": "heat it", "sol2": "cool it", "label": 1}
{"goal": "Read", "sol1": "open the book", "sol2": "close the book", "label": 0}
"#;
const HELLASWAG: &str = r#"{"row": 0, "query": "Roof: A man is on a roof. He", "choices": ["falls.", " Follow the steps.", "sits.", "waves."], "label": 3, "exact_lmeval": false}
{"row": 1, "query": "Cooking: She stirs the pot. She", "choices": ["adds salt.", "leaves.", "eats it all.", "sings."], "label": 0, "exact_lmeval": true}
{"row": 2, "query": "Running: He runs.", "choices": [" He stops.", "He falls.", "He wins.", "He waves."], "label": 1, "exact_lmeval": true}
"#;

fn data_dir(name: &str) -> TempDir {
    let d = TempDir::new(name);
    d.write("arc_challenge_test.jsonl", ARC);
    d.write("piqa_val.jsonl", PIQA);
    d.write("hellaswag_val.jsonl", HELLASWAG);
    d
}

/// lm-eval's log-likelihood of `" " + choice` after `context`, from scratch.
fn expected_ll(model: &FakeModel, context: &str, choice: &str) -> f64 {
    let tok = model.tokenizer();
    let ctx = tok.encode(context);
    let whole = tok.encode(&format!("{context} {choice}"));
    (ctx.len()..whole.len())
        .map(|k| log_softmax_at(&model.logits_after(&whole[..k]), whole[k]))
        .sum()
}

/// The documents of the three files above: (task, context, choices, label, exact).
fn expected_docs() -> Vec<(&'static str, String, Vec<String>, usize, bool)> {
    let mut docs = Vec::new();
    for (task, text) in [
        ("arc_challenge", ARC),
        ("hellaswag", HELLASWAG),
        ("piqa", PIQA),
    ] {
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            let (ctx, choices) = match task {
                "arc_challenge" => (
                    format!("Question: {}\nAnswer:", s("question")),
                    serde_json::from_value(v["choices"].clone()).unwrap(),
                ),
                "piqa" => (
                    format!("Question: {}\nAnswer:", s("goal")),
                    vec![s("sol1"), s("sol2")],
                ),
                _ => (
                    s("query"),
                    serde_json::from_value(v["choices"].clone()).unwrap(),
                ),
            };
            let exact = v["exact_lmeval"].as_bool().unwrap_or(false);
            docs.push((
                task,
                ctx,
                choices,
                v["label"].as_u64().unwrap() as usize,
                exact,
            ));
        }
    }
    docs
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn eval_writes_lm_eval_json_and_a_table() {
    let model = FakeModel::new();
    let dir = data_dir("full");
    let out_path = dir.join("results.json");
    let out = qwen(
        &model,
        &[
            "eval",
            "--data-dir",
            dir.path(),
            "--output",
            out_path.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for task in ["arc_challenge", "hellaswag", "piqa"] {
        assert!(out.stdout.contains(&format!("| {task}")), "{}", out.stdout);
        assert!(out.stderr.contains(&format!("{task}: ")), "{}", out.stderr);
    }
    assert!(out.stdout.contains("challenge metrics: "), "{}", out.stdout);
    assert!(out.stderr.contains("docs (100.0%)"), "{}", out.stderr);

    let v = read_json(&out_path);
    let mut by_task: std::collections::HashMap<&str, (Vec<f64>, Vec<f64>)> = Default::default();
    let mut doc_index: std::collections::HashMap<&str, usize> = Default::default();
    for (task, ctx, choices, label, _) in expected_docs() {
        let i = doc_index.entry(task).or_insert(0);
        let s = &v["samples"][task][*i];
        assert_eq!(s["doc_id"], *i as u64);
        assert_eq!(s["target"], label as u64);
        *i += 1;
        let lls: Vec<f64> = choices
            .iter()
            .map(|c| expected_ll(&model, &ctx, c))
            .collect();
        let got: Vec<f64> = s["loglikelihoods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), lls.len());
        for (a, b) in got.iter().zip(&lls) {
            assert!((a - b).abs() < 1e-9, "{task}: {got:?} vs {lls:?}");
        }
        let first_max =
            |xs: &[f64]| (0..xs.len()).fold(0, |best, j| if xs[j] > xs[best] { j } else { best });
        let pred = first_max(&lls);
        let norm: Vec<f64> = lls
            .iter()
            .zip(&choices)
            .map(|(l, c)| l / c.chars().count() as f64)
            .collect();
        let pred_norm = first_max(&norm);
        assert_eq!(s["pred_acc"], pred as u64);
        assert_eq!(s["pred_acc_norm"], pred_norm as u64);
        let e = by_task.entry(task).or_default();
        e.0.push((pred == label) as u8 as f64);
        e.1.push((pred_norm == label) as u8 as f64);
    }
    for (task, (acc, acc_norm)) in &by_task {
        let r = &v["results"][*task];
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
        let se = |xs: &[f64]| {
            let m = mean(xs);
            let n = xs.len() as f64;
            (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() / n.sqrt()
        };
        assert!((r["acc,none"].as_f64().unwrap() - mean(acc)).abs() < 1e-12);
        assert!((r["acc_norm,none"].as_f64().unwrap() - mean(acc_norm)).abs() < 1e-12);
        assert!((r["acc_stderr,none"].as_f64().unwrap() - se(acc)).abs() < 1e-12);
        assert!((r["acc_norm_stderr,none"].as_f64().unwrap() - se(acc_norm)).abs() < 1e-12);
        assert_eq!(r["alias"], *task);
        assert_eq!(v["n-samples"][*task]["effective"], acc.len() as u64);
    }
    assert_eq!(v["config"]["model"], "fake");
    assert_eq!(v["config"]["num_fewshot"], 0);
    assert!(v["config"]["limit"].is_null());
    assert!(v["total_evaluation_time_seconds"].as_f64().unwrap() >= 0.0);
}

#[test]
fn eval_limit_and_hellaswag_exact() {
    let model = FakeModel::new();
    let dir = data_dir("limit");
    let out_path = dir.join("r.json");
    let out = qwen(
        &model,
        &[
            "eval",
            "--tasks",
            "hellaswag,piqa,hellaswag",
            "--data-dir",
            dir.path(),
            "--limit",
            "1",
            "--hellaswag-exact",
            "--output",
            out_path.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = read_json(&out_path);
    let tasks: Vec<&String> = v["results"].as_object().unwrap().keys().collect();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(v["results"]["arc_challenge"].is_null());
    // The first exact HellaSwag row is row 1; PIQA's first document is doc 0.
    assert_eq!(v["samples"]["hellaswag"].as_array().unwrap().len(), 1);
    assert_eq!(v["samples"]["hellaswag"][0]["doc_id"], 1);
    assert_eq!(v["samples"]["piqa"][0]["doc_id"], 0);
    assert_eq!(v["n-samples"]["hellaswag"]["original"], 3);
    assert_eq!(v["n-samples"]["hellaswag"]["effective"], 1);
    assert_eq!(v["results"]["piqa"]["acc_stderr,none"], "N/A");
    assert_eq!(v["config"]["limit"], 1);
    assert_eq!(v["config"]["hellaswag_exact"], true);
    assert_eq!(
        v["config"]["tasks"],
        serde_json::json!(["hellaswag", "piqa"])
    );
    assert!(
        out.stderr.contains("hellaswag: 1 of 3 documents"),
        "{}",
        out.stderr
    );
}

#[test]
fn eval_errors_name_the_file_and_line() {
    let model = FakeModel::new();
    let dir = data_dir("bad");
    let bad = dir.write(
        "piqa_val.jsonl",
        "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\", \"label\": 0}\n{\"goal\": \"g\", \"sol1\": \"a\"\n",
    );
    let out = qwen(
        &model,
        &[
            "eval",
            "--tasks",
            "arc_challenge,piqa",
            "--data-dir",
            dir.path(),
        ],
    );
    assert_eq!(out.code, 1);
    let expected = format!("error: {}:2: ", bad.display());
    assert!(out.stderr.starts_with(&expected), "{}", out.stderr);
    // Nothing was scored: the files are read first.
    assert_eq!(model.forward_calls(), 0);
    assert!(out.stdout.is_empty());

    let out = qwen(&model, &["eval", "--data-dir", "/nonexistent/dir"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("error: cannot read /nonexistent/dir/arc_challenge_test.jsonl: "),
        "{}",
        out.stderr
    );

    let out = qwen(&model, &["eval", "--tasks", "mmlu"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("unknown task `mmlu`"), "{}", out.stderr);
    let out = qwen(&model, &["eval", "--limit", "0"]);
    assert_eq!(out.code, 1);

    // A question longer than the model's context.
    let small = FakeModel::new().with_max_context(8);
    let out = qwen(
        &small,
        &["eval", "--tasks", "arc_challenge", "--data-dir", dir.path()],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("\nerror: arc_challenge, document 0: ")
            && out.stderr.contains("exceed the context"),
        "{}",
        out.stderr
    );
}

#[test]
fn perplexity_command() {
    let model = FakeModel::new();
    let dir = TempDir::new("ppl");
    let text =
        "the world in on the other hand, where all the rest are there.\nAnd the sea is here. "
            .repeat(3);
    let file = dir.write("t.txt", &text);
    let tokens = model.tokenizer().encode(&text);
    assert!(tokens.len() > 60);

    let out = qwen(
        &model,
        &[
            "perplexity",
            "--file",
            file.to_str().unwrap(),
            "--context",
            "16",
            "--stride",
            "8",
            "--json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim_end()).unwrap();
    let expected = perplexity(&model, &tokens, 16, 8, &mut |_, _| {}).unwrap();
    assert_eq!(v["tokens_scored"], (tokens.len() - 1) as u64);
    assert_eq!(v["tokens"], tokens.len() as u64);
    assert_eq!(v["tokens_in_file"], tokens.len() as u64);
    assert_eq!(v["windows"], expected.windows as u64);
    assert_eq!(v["context"], 16);
    assert_eq!(v["stride"], 8);
    assert_eq!(v["perplexity"].as_f64().unwrap(), expected.perplexity);
    assert!(v["tokens_per_second"].as_f64().unwrap() >= 0.0);
    assert!(out.stderr.contains("windows (100.0%)"), "{}", out.stderr);

    let out = qwen(
        &model,
        &[
            "perplexity",
            "--file",
            file.to_str().unwrap(),
            "--context",
            "16",
            "--stride",
            "8",
            "--limit-tokens",
            "20",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let limited = perplexity(&model, &tokens[..20], 16, 8, &mut |_, _| {}).unwrap();
    assert!(
        out.stdout.starts_with(&format!(
            "perplexity: {:.4}\ntokens scored: 19 (of 20; 2 windows of 16, stride 8)\n",
            limited.perplexity
        )),
        "{}",
        out.stdout
    );

    for (args, message) in [
        (
            vec!["--context", "16", "--stride", "17"],
            "--stride 17 is larger than --context 16",
        ),
        (
            vec!["--context", "300"],
            "--context 300 exceeds the model's context of 256 tokens",
        ),
        (
            vec!["--limit-tokens", "1", "--context", "16", "--stride", "8"],
            "1 token(s): at least 2 are needed",
        ),
    ] {
        let mut argv = vec!["perplexity", "--file", file.to_str().unwrap()];
        argv.extend(args);
        let out = qwen(&model, &argv);
        assert_eq!(out.code, 1);
        assert!(out.stderr.contains(message), "{}", out.stderr);
    }
    // The stride defaults to half the context.
    let out = qwen(
        &model,
        &[
            "perplexity",
            "--file",
            file.to_str().unwrap(),
            "--context",
            "16",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim_end()).unwrap();
    assert_eq!(v["stride"], 8);
    assert_eq!(v["perplexity"].as_f64().unwrap(), expected.perplexity);
    let out = qwen(
        &model,
        &[
            "perplexity",
            "--file",
            "/nonexistent/t.txt",
            "--context",
            "16",
        ],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("error: cannot read /nonexistent/t.txt: "),
        "{}",
        out.stderr
    );
}

#[test]
fn help_documents_the_flags() {
    let model = FakeModel::new();
    let out = qwen(&model, &["eval", "--help"]);
    assert_eq!(out.code, 0);
    for s in [
        "--tasks",
        "--data-dir",
        "--limit",
        "first N documents",
        "--hellaswag-exact",
        "--output",
    ] {
        assert!(out.stdout.contains(s), "{s}: {}", out.stdout);
    }
    let out = qwen(&model, &["perplexity", "--help"]);
    assert_eq!(out.code, 0);
    for s in [
        "--file",
        "--context",
        "--stride",
        "last STRIDE tokens",
        "--limit-tokens",
        "--json",
    ] {
        assert!(out.stdout.contains(s), "{s}: {}", out.stdout);
    }
    let out = qwen(&model, &["--help"]);
    assert!(
        out.stdout.contains("eval") && out.stdout.contains("perplexity"),
        "{}",
        out.stdout
    );
}
