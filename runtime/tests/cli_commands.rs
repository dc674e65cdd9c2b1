//! The `qwen` command line on the fake model, through `cli::run` with captured streams.

mod common;

use common::{qwen, qwen_with_stdin, Output};
use qwenc_runtime::chat::{render, ChatMessage};
use qwenc_runtime::model::Model;
use qwenc_runtime::testing::{FakeModel, IM_END};

fn json(out: &Output) -> serde_json::Value {
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    serde_json::from_str(out.stdout.trim_end()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn info_human_and_json() {
    let model = FakeModel::new();
    let out = qwen(&model, &["info"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("model:"), "{}", out.stdout);
    assert!(out.stdout.contains("fake"));
    assert!(
        out.stdout.contains("max context:   256 tokens"),
        "{}",
        out.stdout
    );
    let v = json(&qwen(&model, &["info", "--json"]));
    assert_eq!(v, serde_json::to_value(model.info()).unwrap());
}

#[test]
fn generate_streams_text_and_json_agrees() {
    let model = FakeModel::new();
    let out = qwen(
        &model,
        &["generate", "the world", "--max-tokens", "9", "--ignore-eos"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = json(&qwen(
        &model,
        &[
            "generate",
            "the world",
            "--max-tokens",
            "9",
            "--ignore-eos",
            "--json",
        ],
    ));
    let prompt_ids = model.tokenizer().encode("the world");
    assert_eq!(ids(&v["prompt_ids"]), prompt_ids);
    let generated = ids(&v["ids"]);
    assert_eq!(generated.len(), 9);
    let text = model.tokenizer().decode(&generated);
    assert_eq!(v["text"], text.as_str());
    assert_eq!(out.stdout, format!("{text}\n"));
    assert!(v["prefill_tok_s"].as_f64().unwrap() > 0.0);
    assert!(v["decode_tok_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["stop"], "max_tokens");
    let summary = out.stderr.trim_end();
    assert!(
        summary.starts_with(&format!(
            "[{} prompt tokens, 9 generated; prefill ",
            prompt_ids.len()
        )) && summary.contains(" tok/s, decode ")
            && summary.ends_with(" tok/s]"),
        "{summary}"
    );
}

#[test]
fn generate_stops_at_eos_and_leaves_it_out_of_the_text() {
    let prompt = "in on";
    let n = FakeModel::new().tokenizer().encode(prompt).len();
    let model = FakeModel::new().with_eos_at(n + 2);
    let v = json(&qwen(&model, &["generate", prompt, "--json"]));
    let generated = ids(&v["ids"]);
    assert_eq!(generated.len(), 3);
    assert_eq!(v["stop"], "eos");
    assert_eq!(
        v["text"],
        model.tokenizer().decode(&generated[..2]).as_str()
    );
    let out = qwen(&model, &["generate", prompt]);
    assert_eq!(out.stdout, format!("{}\n", v["text"].as_str().unwrap()));
    // --ignore-eos: exactly --max-tokens.
    let v = json(&qwen(
        &model,
        &[
            "generate",
            prompt,
            "--json",
            "--ignore-eos",
            "--max-tokens",
            "7",
        ],
    ));
    assert_eq!(ids(&v["ids"]).len(), 7);
}

#[test]
fn generate_chat_uses_the_template() {
    let model = FakeModel::new().with_reply_text("Hello there!");
    let v = json(&qwen(&model, &["generate", "Hi", "--chat", "--json"]));
    let rendered = render(&[ChatMessage::user("Hi")], true);
    assert_eq!(ids(&v["prompt_ids"]), model.tokenizer().encode(&rendered));
    assert_eq!(v["text"], "Hello there!");
    assert_eq!(*ids(&v["ids"]).last().unwrap(), IM_END);
    let v = json(&qwen(
        &model,
        &[
            "generate",
            "Hi",
            "--chat",
            "--system",
            "Be brief.",
            "--json",
        ],
    ));
    let rendered = render(
        &[ChatMessage::system("Be brief."), ChatMessage::user("Hi")],
        true,
    );
    assert_eq!(ids(&v["prompt_ids"]), model.tokenizer().encode(&rendered));
    let out = qwen(&model, &["generate", "Hi", "--chat"]);
    assert_eq!(out.stdout, "Hello there!\n");
}

#[test]
fn generate_reads_the_prompt_from_stdin() {
    let model = FakeModel::new();
    let a = json(&qwen_with_stdin(
        &model,
        &["generate", "-", "--json", "--max-tokens", "3"],
        "the world",
    ));
    let b = json(&qwen(
        &model,
        &["generate", "the world", "--json", "--max-tokens", "3"],
    ));
    assert_eq!(a["ids"], b["ids"]);
    assert_eq!(a["prompt_ids"], b["prompt_ids"]);
}

#[test]
fn seeded_sampling_is_reproducible() {
    let model = FakeModel::new();
    let args = |seed: &'static str| {
        [
            "generate",
            "the",
            "--json",
            "--temperature",
            "2",
            "--top-k",
            "40",
            "--top-p",
            "0.9",
            "--seed",
            seed,
            "--max-tokens",
            "20",
        ]
    };
    let a = json(&qwen(&model, &args("7")));
    let b = json(&qwen(&model, &args("7")));
    let c = json(&qwen(&model, &args("8")));
    assert_eq!(a["ids"], b["ids"]);
    assert_ne!(a["ids"], c["ids"]);
    assert_eq!(a["seed"], 7);
}

/// Exit code 1, `error: ...` on stderr mentioning `needle`, nothing on stdout.
fn assert_fails(model: &FakeModel, args: &[&str], needle: &str) {
    let out = qwen(model, args);
    assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
    assert!(
        out.stderr.starts_with("error: "),
        "{args:?}: {}",
        out.stderr
    );
    assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    assert_eq!(out.stdout, "", "{args:?}");
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let model = FakeModel::new();
    assert_fails(&model, &["generate", "x", "--top-p", "2"], "--top-p");
    assert_fails(&model, &["generate", "x", "--top-p", "0"], "(0, 1]");
    assert_fails(
        &model,
        &["generate", "x", "--temperature", "-1"],
        "--temperature",
    );
    assert_fails(
        &model,
        &["generate", "x", "--temperature", "nan"],
        "--temperature",
    );
    assert_fails(
        &model,
        &["generate", "x", "--max-tokens", "0"],
        "--max-tokens",
    );
    assert_fails(
        &model,
        &["generate", "x", "--max-tokens", "many"],
        "not a valid number",
    );
    assert_fails(&model, &["generate", "x", "--top-k", "-3"], "--top-k");
    assert_fails(&model, &["generate", "x", "--seed", "s"], "--seed");
    assert_fails(&model, &["generate", "x", "--threads", "0"], "--threads");
    assert_fails(&model, &["generate", "x", "--system", "s"], "--chat");
    assert_fails(&model, &["generate"], "PROMPT");
    assert_fails(&model, &["generate", "x", "--bogus"], "--bogus");
    assert_fails(&model, &["chat", "--context", "0"], "--context");
    assert_fails(&model, &["frobnicate"], "frobnicate");
    assert_fails(&model, &[], "subcommand");
    assert_eq!(model.forward_calls(), 0);
}

#[test]
fn an_overlong_prompt_is_a_clear_error() {
    let model = FakeModel::new().with_max_context(32);
    let prompt = "abc ".repeat(20);
    let n = model.tokenizer().encode(&prompt).len();
    assert!(n > 32);
    let out = qwen(&model, &["generate", &prompt]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("{n} tokens")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("128"), "{}", out.stderr);
    assert!(out.stderr.contains("32 tokens"), "{}", out.stderr);
    // Fits alone but not with --max-tokens.
    assert_fails(
        &model,
        &["generate", "abc", "--max-tokens", "40"],
        "40 tokens to generate",
    );
    assert_fails(&model, &["generate", "", "--max-tokens", "4"], "empty");
    assert_eq!(model.forward_calls(), 0);
}

#[test]
fn help_and_version_succeed() {
    let model = FakeModel::new();
    let out = qwen(&model, &["--help"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Usage: qwen"), "{}", out.stdout);
    for sub in ["generate", "chat", "info"] {
        assert!(out.stdout.contains(sub));
    }
    let out = qwen(&model, &["generate", "--help"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("--max-tokens"));
    let out = qwen(&model, &["--version"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.starts_with("qwen "));
}

#[test]
fn chat_repl_keeps_the_conversation() {
    let model = FakeModel::new().with_reply_text("Hello there!");
    let input = "Hi\n\nHow are you?\n/reset\nHi again\n/exit\nNot read\n";
    let out = qwen_with_stdin(&model, &["chat", "--threads", "1", "--stats"], input);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "Hello there!\n".repeat(3));
    assert!(out.stderr.contains("[new conversation]"), "{}", out.stderr);
    assert_eq!(out.stderr.matches(" generated; prefill ").count(), 3);

    // The second turn's prefill is only the new user turn (the first answer was closed
    // with `<|im_end|>\n` after the first turn).
    let tok = model.tokenizer();
    let closed = tok.encode(&render(
        &[
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello there!"),
        ],
        false,
    ));
    let second = tok.encode(&render(
        &[
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello there!"),
            ChatMessage::user("How are you?"),
        ],
        true,
    ));
    assert!(second.starts_with(&closed));
    assert!(
        out.stderr
            .contains(&format!("[{} prompt tokens, ", second.len() - closed.len())),
        "{}",
        out.stderr
    );

    // End of input also quits.
    let out = qwen_with_stdin(&model, &["chat", "--system", "Be brief."], "Hi");
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, "Hello there!\n");
}

#[test]
fn chat_resets_when_the_context_is_full_and_survives_long_messages() {
    let reply = "the world the world the world the world";
    let model = FakeModel::new().with_reply_text(reply);
    let tok = model.tokenizer();
    let sys = ChatMessage::system("Be brief.");
    let two_prompts = tok
        .encode(&render(
            &[
                sys.clone(),
                ChatMessage::user("Hi"),
                ChatMessage::assistant(reply),
                ChatMessage::user("Hi"),
            ],
            true,
        ))
        .len();
    // The second answer is cut after 3 tokens: the context is full.
    let context = (two_prompts + 3).to_string();
    let out = qwen_with_stdin(
        &model,
        &["chat", "--system", "Be brief.", "--context", &context],
        &format!("Hi\nHi\n{}\nHi\n", "x".repeat(200)),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("is full: the conversation was reset"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("error: ") && out.stderr.contains("the message was not sent"),
        "{}",
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert_eq!(lines[0], reply);
    assert!(reply.starts_with(lines[1]) && lines[1].len() < reply.len());
    assert_eq!(lines[2], reply, "a new conversation after the reset");
}

#[test]
fn speculation_is_on_by_default_and_no_speculate_turns_it_off() {
    let reply = "the world in the world, and the world is in a world";
    let model = FakeModel::new().with_reply_text(reply);
    let args = ["generate", reply, "--chat", "--json", "--max-tokens", "40"];
    let on = json(&qwen(&model, &args));
    let off = json(&qwen(&model, &[&args[..], &["--no-speculate"]].concat()));
    assert_eq!(on["ids"], off["ids"]);
    assert_eq!(on["text"], reply);
    assert_eq!(
        (on["speculate"].as_bool(), off["speculate"].as_bool()),
        (Some(true), Some(false))
    );
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert!(
        n(&on, "accepted_tokens") > 0 && n(&on, "verify_passes") > 0,
        "{on}"
    );
    assert!(n(&on, "decode_passes") < n(&off, "decode_passes"));
    let rate = on["acceptance_rate"].as_f64().unwrap();
    let want = n(&on, "accepted_tokens") as f64 / n(&on, "drafted_tokens") as f64;
    assert!((rate - want).abs() < 1e-12);
    assert_eq!(
        (
            n(&off, "verify_passes"),
            n(&off, "drafted_tokens"),
            n(&off, "accepted_tokens")
        ),
        (0, 0, 0)
    );

    // chat: the same answers; --stats names the accepted drafts only when there were any.
    let input = format!("{reply}\n{reply}\n");
    let on = qwen_with_stdin(&model, &["chat", "--stats"], &input);
    let off = qwen_with_stdin(&model, &["chat", "--stats", "--no-speculate"], &input);
    assert_eq!((on.code, off.code), (0, 0), "{}{}", on.stderr, off.stderr);
    assert_eq!(on.stdout, off.stdout);
    assert_eq!(on.stdout, format!("{reply}\n{reply}\n"));
    assert!(
        on.stderr.contains(" drafted tokens accepted in "),
        "{}",
        on.stderr
    );
    assert!(!off.stderr.contains("drafted"), "{}", off.stderr);
}
