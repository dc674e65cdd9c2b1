//! `qwen bench --profile decode-sets`: the committed prompt sets, and the profile on the fake
//! model through `cli::run` (real clock: only structure and counts are checked, never speeds).

mod common;

use common::{qwen, TempDir};
use qwenc_runtime::bench::decode_sets::{
    builtin_set, check_identical, first_difference, parse_set, DecodeSetsError, SetName,
};
use qwenc_runtime::model::{ForwardError, KvCache, LogitsFor, Model, ModelInfo};
use qwenc_runtime::testing::{FakeModel, VOCAB_SIZE};
use qwenc_runtime::tokenizer::Tokenizer;
use serde_json::Value;

/// The text between the first code fence of `text` and the next.
fn fenced(text: &str) -> (&str, Vec<&str>) {
    let start = text.find("\n```").expect("a code fence") + 4;
    let rest = &text[start..];
    let (lang, body) = rest.split_once('\n').unwrap();
    let end = body.find("\n```").expect("a closing fence");
    (lang, body[..end].lines().collect())
}

#[test]
fn the_committed_sets_have_their_counts_and_lengths() {
    let code = builtin_set(SetName::Code).unwrap();
    assert_eq!(code.len(), 8);
    let mut languages = Vec::new();
    for e in &code {
        assert!(e.chat, "{}", e.id);
        let text = e.text.as_deref().unwrap();
        let (lang, lines) = fenced(text);
        assert!(lang == "rust" || lang == "python", "{}: {lang}", e.id);
        assert!(
            lines.len() >= 30,
            "{}: a function of {} lines",
            e.id,
            lines.len()
        );
        // An instruction before the code, and the code from this repository.
        assert!(text.find("\n```").unwrap() > 20, "{}", e.id);
        assert!(
            ["runtime/src/", "codegen/src/", "bench/"]
                .iter()
                .any(|d| e.source.starts_with(d)),
            "{}: {}",
            e.id,
            e.source
        );
        languages.push(lang.to_string());
    }
    assert!(languages.iter().any(|l| l == "rust"));
    assert!(languages.iter().any(|l| l == "python"));

    let extract = builtin_set(SetName::Extract).unwrap();
    assert_eq!(extract.len(), 8);
    for e in &extract {
        assert!(e.chat, "{}", e.id);
        let text = e.text.as_deref().unwrap();
        // "Read this passage:", the passage, the instruction.
        let parts: Vec<&str> = text.split("\n\n").collect();
        assert_eq!(parts.len(), 3, "{}", e.id);
        let words = parts[1].split_whitespace().count();
        assert!((150..=400).contains(&words), "{}: {words} words", e.id);
        assert!(parts[2].split_whitespace().count() >= 5, "{}", e.id);
        assert!(
            e.source.starts_with("wikitext2_test.txt line "),
            "{}",
            e.source
        );
    }

    let aicas = builtin_set(SetName::Aicas).unwrap();
    assert_eq!(aicas.len(), 1);
    assert!(!aicas[0].chat);
    assert_eq!(aicas[0].file.as_deref(), Some("aicas2025_prompt.txt"));
    assert_eq!(aicas[0].text, None);

    let chat = builtin_set(SetName::Chat).unwrap();
    assert_eq!(chat.len(), 8);
    for e in &chat {
        assert!(e.chat);
        let words = e.text.as_deref().unwrap().split_whitespace().count();
        assert!((3..=40).contains(&words), "{}: {words} words", e.id);
    }
}

#[test]
fn set_files_are_checked() {
    let ok = r#"{"id": "a", "chat": true, "text": "hi", "source": "s"}"#;
    assert_eq!(parse_set(&format!("{ok}\n\n")).unwrap().len(), 1);
    let twice = format!("{ok}\n{ok}");
    assert!(parse_set(&twice).unwrap_err().contains("used twice"));
    let both = r#"{"id": "a", "chat": false, "text": "x", "file": "f", "source": "s"}"#;
    assert!(parse_set(both).unwrap_err().contains("exactly one of"));
    let neither = r#"{"id": "a", "chat": false, "source": "s"}"#;
    assert!(parse_set(neither).unwrap_err().contains("exactly one of"));
    let unknown = r#"{"id": "a", "chat": true, "text": "x", "source": "s", "extra": 1}"#;
    assert!(parse_set(unknown).unwrap_err().starts_with("line 1: "));
    assert_eq!(parse_set("\n").unwrap_err(), "no prompts");
}

#[test]
fn the_comparison_names_the_prompt_and_the_first_difference() {
    assert_eq!(first_difference(&[1, 2, 3], &[1, 2, 3]), None);
    assert_eq!(first_difference(&[1, 2, 3], &[1, 5, 3]), Some(1));
    assert_eq!(first_difference(&[1, 2, 3], &[1, 2]), Some(2));
    assert_eq!(first_difference(&[], &[7]), Some(0));
    assert!(check_identical(SetName::Code, "x", "speculative (pair 1)", &[4, 5], &[4, 5]).is_ok());
    let e = check_identical(
        SetName::Code,
        "x",
        "speculative (pair 2)",
        &[4, 5, 6],
        &[4, 5],
    );
    let e = e.unwrap_err();
    assert!(
        matches!(e, DecodeSetsError::Mismatch { at: 2, .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "set code, prompt x: the speculative (pair 2) output differs from the first plain one \
         at generated token 2 (first plain id 6, this one end; 3 vs 2 tokens): speculative \
         decoding changed a greedy output"
    );
    let e = check_identical(SetName::Chat, "q", "plain (pair 3)", &[1], &[2]).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("greedy decoding is not deterministic here"),
        "{e}"
    );
}

/// The answer of the fake model to every chat prompt: it repeats itself, so prompt lookup
/// drafts tokens that are accepted.
const REPLY: &str = "the world the world the world the world the world the world";

/// A data directory (`name`: unique in this file) with a short stand-in for the AICAS prompt.
fn data_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    dir.write("aicas2025_prompt.txt", "in the weather\\n the world ");
    dir
}

fn run_json(model: &dyn Model, args: &[&str]) -> (Value, String) {
    let out = qwen(model, args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    (serde_json::from_str(&out.stdout).unwrap(), out.stderr)
}

fn n(v: &Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}")) as usize
}

#[test]
fn the_profile_runs_every_set_end_to_end() {
    // The prompts are up to ~1800 fake tokens (bytes, few merges).
    let model = FakeModel::new()
        .with_max_context(4096)
        .with_reply_text(REPLY);
    let reply_len = model.tokenizer().encode(REPLY).len();
    let dir = data_dir("end-to-end");
    let (v, stderr) = run_json(
        &model,
        &[
            "bench",
            "--profile",
            "decode-sets",
            "--max-tokens",
            "40",
            "--pairs",
            "2",
            "--data-dir",
            dir.path(),
            "--json",
            "-",
        ],
    );
    assert!(reply_len + 1 < 40, "{reply_len}");
    let c = &v["config"];
    assert_eq!(c["name"], "qwen bench");
    assert_eq!(c["profile"], "decode-sets");
    assert_eq!(c["max_tokens"], 40);
    assert_eq!(c["pairs"], 2);
    assert_eq!(c["batch_size"], 1);
    assert_eq!(c["model"]["backend"], "fake");
    assert_eq!(c["data_dir"], dir.path());
    assert_eq!(
        c["sets"],
        serde_json::json!(["code", "extract", "aicas", "chat"])
    );
    let r = &v["report"];
    for k in [
        "decode_tok_s",
        "ratio",
        "acceptance_rate",
        "bytes_per_token",
    ] {
        assert!(r["definitions"][k].is_string(), "{k}");
    }
    let sets = r["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 4);
    let mut forward_calls = 0;
    for (s, (name, prompts)) in
        sets.iter()
            .zip([("code", 8), ("extract", 8), ("aicas", 1), ("chat", 8)])
    {
        assert_eq!(s["name"], name);
        assert_eq!(n(&s["prompts"]), prompts);
        assert_eq!(n(&s["pairs"]), 2);
        assert_eq!(s["identical"], true);
        for spread in [
            &s["plain"]["decode_tok_s"],
            &s["speculative"]["decode_tok_s"],
            &s["ratio"],
        ] {
            assert_eq!(spread["values"].as_array().unwrap().len(), 2, "{name}");
            for k in ["median", "min", "max"] {
                assert!(spread[k].is_f64(), "{name} {k}");
            }
        }
        let per_prompt = s["per_prompt"].as_array().unwrap();
        assert_eq!(per_prompt.len(), prompts);
        let mut output_tokens = 0;
        for p in per_prompt {
            let generated = n(&p["generated_tokens"]);
            output_tokens += generated;
            if name == "aicas" {
                // A plain prompt: the fake has no reason to stop.
                assert_eq!(generated, 40);
                assert_eq!(p["stop"], "max_tokens");
            } else {
                // The answer ends at <|im_end|>: stop tokens are not suppressed.
                assert_eq!(generated, reply_len + 1, "{}", p["id"]);
                assert_eq!(p["stop"], "eos");
            }
            assert_eq!(p["plain_decode_tok_s"].as_array().unwrap().len(), 2);
            assert_eq!(p["speculative_decode_tok_s"].as_array().unwrap().len(), 2);
            assert!(n(&p["prompt_tokens"]) > 0);
            assert!(n(&p["accepted_tokens"]) <= n(&p["drafted_tokens"]));
            assert!(n(&p["verify_passes"]) <= n(&p["decode_passes"]));
        }
        assert_eq!(n(&s["output_tokens"]), output_tokens);
        let (plain, spec) = (&s["plain"], &s["speculative"]);
        // Both kinds decode the same tokens: every output but its first token, each pair.
        let decode_tokens = 2 * (output_tokens - prompts);
        assert_eq!(n(&plain["decode_tokens"]), decode_tokens);
        assert_eq!(n(&spec["decode_tokens"]), decode_tokens);
        assert_eq!(n(&plain["decode_passes"]), decode_tokens);
        assert_eq!(plain["tokens_per_pass"], 1.0);
        let per_pass = decode_tokens as f64 / n(&spec["decode_passes"]) as f64;
        assert_eq!(spec["tokens_per_pass"].as_f64().unwrap(), per_pass);
        // The fake's weights are 0 bytes.
        assert_eq!(spec["bytes_per_token"], 0.0);
        let (drafted, accepted) = (n(&s["drafted_tokens"]), n(&s["accepted_tokens"]));
        assert!(accepted <= drafted);
        if name != "aicas" {
            // The reply repeats itself: drafts are accepted, passes saved.
            assert!(accepted > 0, "{name}");
            assert!(per_pass > 1.0, "{name}");
            let rate = s["acceptance_rate"].as_f64().unwrap();
            assert_eq!(rate, accepted as f64 / drafted as f64);
        }
        // Each generation: one prefill pass and its decode passes.
        forward_calls += 2 * 2 * prompts + n(&plain["decode_passes"]) + n(&spec["decode_passes"]);
    }
    assert_eq!(model.forward_calls(), forward_calls);

    // Progress on stderr, then the table (JSON took stdout).
    assert!(
        stderr.contains("decode-sets code 1/8 rename-sorted pair 2/2: "),
        "{stderr}"
    );
    let table: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("decode-sets: greedy"))
        .collect();
    assert_eq!(table.len(), 1 + 1 + 4 + 1, "{stderr}");
    assert!(table[1].starts_with("set "), "{}", table[1]);
    for (row, name) in table[2..6].iter().zip(["code", "extract", "aicas", "chat"]) {
        assert!(row.starts_with(name), "{row}");
    }
    assert!(
        table[6].starts_with("all outputs token-identical with and without speculation (25 prompts, 100 generations)"),
        "{}",
        table[6]
    );
}

#[test]
fn pairs_default_to_five_for_chat_and_one_elsewhere() {
    let model = FakeModel::new().with_max_context(1024);
    let dir = data_dir("default-pairs");
    let json = dir.join("out.json");
    let out = qwen(
        &model,
        &[
            "bench",
            "--profile",
            "decode-sets",
            "--sets",
            "chat,aicas,chat",
            "--max-tokens",
            "6",
            "--data-dir",
            dir.path(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The table on stdout.
    assert!(out
        .stdout
        .starts_with("decode-sets: greedy, up to 6 tokens"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["config"]["pairs"], Value::Null);
    assert_eq!(v["config"]["sets"], serde_json::json!(["chat", "aicas"]));
    let sets = v["report"]["sets"].as_array().unwrap();
    assert_eq!((n(&sets[0]["pairs"]), n(&sets[1]["pairs"])), (5, 1));
    assert_eq!(sets[0]["ratio"]["values"].as_array().unwrap().len(), 5);
}

/// The fake model, except that a pass over several tokens with every position's logits (a
/// verification pass) puts the next token's peak on `#`: a backend whose multi-token pass
/// does not match one-token decode.
struct Skewed(FakeModel);

impl Model for Skewed {
    fn info(&self) -> &ModelInfo {
        self.0.info()
    }
    fn tokenizer(&self) -> &Tokenizer {
        self.0.tokenizer()
    }
    fn new_cache(&self, capacity: usize) -> KvCache {
        self.0.new_cache(capacity)
    }
    fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
    ) -> Result<Vec<f32>, ForwardError> {
        let mut out = self.0.forward(cache, tokens, logits)?;
        if logits == LogitsFor::All && tokens.len() > 1 {
            out[..VOCAB_SIZE][b'#' as usize] += 100.0;
        }
        Ok(out)
    }
}

#[test]
fn an_output_that_speculation_changes_fails_the_command() {
    let model = Skewed(FakeModel::new().with_max_context(1024));
    let dir = data_dir("skewed");
    let out = qwen(
        &model,
        &[
            "bench",
            "--profile",
            "decode-sets",
            "--sets",
            "chat",
            "--max-tokens",
            "16",
            "--pairs",
            "1",
            "--data-dir",
            dir.path(),
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let err = out.stderr.trim_end().lines().last().unwrap();
    assert!(
        err.starts_with(
            "error: set chat, prompt story-lighthouse: the speculative (pair 1) output differs \
             from the first plain one at generated token "
        ),
        "{err}"
    );
    assert!(
        err.ends_with("speculative decoding changed a greedy output"),
        "{err}"
    );
    // It stopped at the first prompt: one plain and one speculative generation.
    assert!(
        !out.stderr.contains("decode-sets chat 1/8"),
        "{}",
        out.stderr
    );
}

#[test]
fn flags_of_other_profiles_and_bad_inputs_are_refused() {
    let model = FakeModel::new();
    let refused = |args: &[&str], message: &str| {
        let out = qwen(&model, args);
        assert_eq!(out.code, 1, "{args:?}");
        assert_eq!(out.stderr.trim_end(), message, "{args:?}");
    };
    let sets = ["bench", "--profile", "decode-sets"];
    refused(
        &[&sets[..], &["--runs", "3"]].concat(),
        "error: --runs applies to --profile aicas only",
    );
    refused(
        &[&sets[..], &["--new-tokens", "5"]].concat(),
        "error: --new-tokens applies to --profile aicas or optimum only",
    );
    refused(
        &[&sets[..], &["--prompt-file", "p.txt"]].concat(),
        "error: --prompt-file applies to --profile aicas or optimum only",
    );
    refused(
        &[&sets[..], &["--duration", "1"]].concat(),
        "error: --duration applies to --profile optimum only",
    );
    refused(
        &["bench", "--pairs", "2"],
        "error: --pairs applies to --profile decode-sets only",
    );
    refused(
        &["bench", "--profile", "optimum", "--max-tokens", "9"],
        "error: --max-tokens applies to --profile decode-sets only",
    );
    refused(
        &["bench", "--sets", "chat"],
        "error: --sets applies to --profile decode-sets only",
    );
    refused(
        &["bench", "--profile", "aicas", "--data-dir", "d"],
        "error: --data-dir applies to --profile decode-sets only",
    );
    for (flag, value, says) in [
        ("--sets", "chat,poems", "unknown set `poems`"),
        ("--pairs", "0", "at least 1"),
        ("--max-tokens", "1", "at least 2"),
    ] {
        let out = qwen(&model, &[&sets[..], &[flag, value]].concat());
        assert_eq!(out.code, 1, "{flag}");
        assert!(out.stderr.contains(says), "{flag}: {}", out.stderr);
    }

    // The AICAS prompt's file is read from --data-dir, before any generation.
    let out = qwen(
        &model,
        &[
            &sets[..],
            &["--sets", "aicas", "--data-dir", "/nonexistent"],
        ]
        .concat(),
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with(
            "error: cannot read /nonexistent/aicas2025_prompt.txt (prompt aicas2025): "
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--data-dir"), "{}", out.stderr);

    // Every prompt must fit the context with --max-tokens: checked before the first pass.
    let dir = data_dir("refusals");
    let out = qwen(
        &model,
        &[
            &sets[..],
            &[
                "--sets",
                "aicas,chat",
                "--max-tokens",
                "200",
                "--data-dir",
                dir.path(),
            ],
        ]
        .concat(),
    );
    assert_eq!(out.code, 1);
    let err = out.stderr.trim_end();
    assert!(
        err.starts_with("error: set chat, prompt story-lighthouse: a prompt of "),
        "{err}"
    );
    assert!(
        err.contains(" + 200 tokens to generate = ")
            && err.ends_with("more than the context of 256 tokens"),
        "{err}"
    );
    assert_eq!(model.forward_calls(), 0);
}
