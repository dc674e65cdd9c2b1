//! `qwen serve` on the fake model over loopback: the error table, completions (plain,
//! streamed, echo + logprobs against `score_continuations`, stop strings, several prompts),
//! chat, models and health.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use qwenc_runtime::eval::scoring::score_continuations;
use qwenc_runtime::generate::{generate, GenerateOptions};
use qwenc_runtime::model::Model;
use qwenc_runtime::serve::client::{self, request_bytes, send_raw};
use qwenc_runtime::serve::{RunningServer, ServeConfig};
use qwenc_runtime::testing::FakeModel;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn start(model: FakeModel, config: ServeConfig) -> (RunningServer, Arc<FakeModel>) {
    let model = Arc::new(model);
    let server = RunningServer::start(model.clone(), config).expect("server starts");
    (server, model)
}

fn post_json(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let r = client::post(addr, path, &body.to_string(), T).expect("request");
    let v = r.json().expect("JSON body");
    (r.status, v)
}

/// Greedy ids the fake model generates after `prompt` (the stop token included).
fn greedy(model: &FakeModel, prompt: &[u32], max_tokens: usize, extra_stop: Vec<u32>) -> Vec<u32> {
    let mut cache = model.new_cache(prompt.len() + max_tokens);
    let mut ids = Vec::new();
    let opts = GenerateOptions {
        max_tokens,
        extra_stop_ids: extra_stop,
        ..GenerateOptions::default()
    };
    generate(model, &mut cache, prompt, &opts, &mut |id| {
        ids.push(id);
        ControlFlow::Continue(())
    })
    .unwrap();
    ids
}

/// The documented error table (README, "Serving"): request → status, code, param.
#[test]
fn malformed_requests_get_documented_errors() {
    let config = ServeConfig {
        max_body_bytes: 64 * 1024,
        ..ServeConfig::default()
    };
    let (server, _model) = start(FakeModel::new(), config);
    let addr = server.addr;
    let long_prompt: Vec<u32> = vec![b'a' as u32; 300];
    let huge = format!("{{\"prompt\": \"{}\"}}", "x".repeat(100 * 1024));
    let cmpl = "/v1/completions";
    let chat = "/v1/chat/completions";
    // (method, path, body, status, code, param)
    type Case<'a> = (&'a str, &'a str, String, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("POST", cmpl, "{".into(), 400, "invalid_json", None),
        ("POST", cmpl, "".into(), 400, "invalid_json", None),
        ("POST", cmpl, "[1, 2]".into(), 400, "invalid_json", None),
        (
            "POST",
            cmpl,
            "{}".into(),
            400,
            "missing_required_parameter",
            Some("prompt"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": 5}"#.into(),
            400,
            "invalid_type",
            Some("prompt"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": []}"#.into(),
            400,
            "invalid_value",
            Some("prompt"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": ""}"#.into(),
            400,
            "invalid_value",
            Some("prompt"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": [1, -2]}"#.into(),
            400,
            "invalid_type",
            Some("prompt"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": [1, 99999]}"#.into(),
            400,
            "invalid_value",
            Some("prompt"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": [{"a": 1}]}"#.into(),
            400,
            "invalid_type",
            Some("prompt"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "max_tokens": "16"}"#.into(),
            400,
            "invalid_type",
            Some("max_tokens"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "max_tokens": -1}"#.into(),
            400,
            "invalid_value",
            Some("max_tokens"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "max_tokens": 1.5}"#.into(),
            400,
            "invalid_type",
            Some("max_tokens"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "temperature": 3}"#.into(),
            400,
            "invalid_value",
            Some("temperature"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "temperature": "hot"}"#.into(),
            400,
            "invalid_type",
            Some("temperature"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "top_p": 0}"#.into(),
            400,
            "invalid_value",
            Some("top_p"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "seed": "x"}"#.into(),
            400,
            "invalid_type",
            Some("seed"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "stop": 5}"#.into(),
            400,
            "invalid_type",
            Some("stop"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "stop": ["a","b","c","d","e"]}"#.into(),
            400,
            "invalid_value",
            Some("stop"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "stream": "yes"}"#.into(),
            400,
            "invalid_type",
            Some("stream"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "echo": 1}"#.into(),
            400,
            "invalid_type",
            Some("echo"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "logprobs": 21}"#.into(),
            400,
            "invalid_value",
            Some("logprobs"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "n": 2}"#.into(),
            400,
            "unsupported_value",
            Some("n"),
        ),
        (
            "POST",
            cmpl,
            json!({"prompt": long_prompt}).to_string(),
            400,
            "context_length_exceeded",
            Some("prompt"),
        ),
        (
            "POST",
            cmpl,
            r#"{"prompt": "a", "max_tokens": 256}"#.into(),
            400,
            "context_length_exceeded",
            Some("max_tokens"),
        ),
        ("POST", cmpl, huge, 413, "body_too_large", None),
        (
            "POST",
            chat,
            "{}".into(),
            400,
            "missing_required_parameter",
            Some("messages"),
        ),
        (
            "POST",
            chat,
            r#"{"messages": "hi"}"#.into(),
            400,
            "invalid_type",
            Some("messages"),
        ),
        (
            "POST",
            chat,
            r#"{"messages": []}"#.into(),
            400,
            "invalid_value",
            Some("messages"),
        ),
        (
            "POST",
            chat,
            r#"{"messages": [{"role": "robot", "content": "x"}]}"#.into(),
            400,
            "invalid_value",
            Some("messages[0].role"),
        ),
        (
            "POST",
            chat,
            r#"{"messages": [{"role": "user", "content": 7}]}"#.into(),
            400,
            "invalid_type",
            Some("messages[0].content"),
        ),
        (
            "POST",
            chat,
            r#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1000}"#.into(),
            400,
            "context_length_exceeded",
            Some("max_tokens"),
        ),
        (
            "POST",
            chat,
            r#"{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}"#
                .into(),
            400,
            "unsupported_value",
            Some("tools"),
        ),
        ("GET", "/v1/nope", String::new(), 404, "unknown_route", None),
        ("GET", cmpl, String::new(), 405, "method_not_allowed", None),
        (
            "POST",
            "/health",
            "{}".into(),
            405,
            "method_not_allowed",
            None,
        ),
    ];
    assert!(cases.len() >= 20);
    for (method, path, body, status, code, param) in &cases {
        let raw = if *method == "GET" {
            request_bytes(method, path, None)
        } else {
            request_bytes(method, path, Some(body.as_bytes()))
        };
        let r =
            send_raw(addr, &raw, T).unwrap_or_else(|e| panic!("{method} {path} {body:.80}: {e}"));
        let what = format!("{method} {path} {:.80} -> {} {}", body, r.status, r.text());
        assert_eq!(r.status, *status, "{what}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
        let v = r.json().unwrap();
        let err = &v["error"];
        assert_eq!(err["code"], *code, "{what}");
        assert_eq!(
            err["param"],
            param.map_or(Value::Null, |p| json!(p)),
            "{what}"
        );
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert!(err["type"].is_string(), "{what}");
    }
    // Unknown fields are ignored.
    let (status, v) = post_json(
        addr,
        cmpl,
        &json!({"prompt": "a", "max_tokens": 2, "frobnicate": [1], "user": "u"}),
    );
    assert_eq!(status, 200, "{v}");
    // The server still serves after all that.
    assert_eq!(client::get(addr, "/health", T).unwrap().status, 200);
    server.stop().unwrap();
}

#[test]
fn completion_plain_and_streamed_match_the_model() {
    let (server, model) = start(FakeModel::new(), ServeConfig::default());
    let addr = server.addr;
    let prompt = "the world";
    let ids = model.tokenizer().encode(prompt);
    let expected_ids = greedy(&model, &ids, 12, vec![]);
    let expected = model.tokenizer().decode(&expected_ids);

    let (status, v) = post_json(
        addr,
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], expected);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], ids.len());
    assert_eq!(v["usage"]["completion_tokens"], 12);

    // Token ids as the prompt give the same.
    let (_, v2) = post_json(
        addr,
        "/v1/completions",
        &json!({"prompt": ids, "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(v2["choices"][0]["text"], expected);

    // Streamed: the chunks add up to the same text, then [DONE].
    let body = json!({"prompt": prompt, "max_tokens": 12, "temperature": 0, "stream": true,
                      "stream_options": {"include_usage": true}});
    let (status, events) =
        client::post_stream(addr, "/v1/completions", &body.to_string(), T).unwrap();
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["text"].as_str())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, expected);
    assert!(
        chunks.len() > 2,
        "one chunk per token, got {}",
        chunks.len()
    );
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("length")]);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 12);

    // The eos ends the generation with finish_reason "stop" and is left out of the text.
    let (server2, model2) = start(
        FakeModel::new().with_eos_at(ids.len() + 3),
        ServeConfig::default(),
    );
    let (_, v) = post_json(
        server2.addr,
        "/v1/completions",
        &json!({"prompt": ids, "max_tokens": 10, "temperature": 0}),
    );
    let exp = greedy(&model2, &ids, 10, vec![]);
    assert_eq!(exp.len(), 4);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["choices"][0]["text"],
        model2.tokenizer().decode(&exp[..3])
    );
    assert_eq!(v["usage"]["completion_tokens"], 4);
    server2.stop().unwrap();
    server.stop().unwrap();
}

#[test]
fn seeded_sampling_is_reproducible() {
    let (server, _model) = start(FakeModel::new(), ServeConfig::default());
    let body = json!({"prompt": "the", "max_tokens": 20, "temperature": 1.5, "seed": 42});
    let (_, a) = post_json(server.addr, "/v1/completions", &body);
    let (_, b) = post_json(server.addr, "/v1/completions", &body);
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    let (_, c) = post_json(
        server.addr,
        "/v1/completions",
        &json!({"prompt": "the", "max_tokens": 20, "temperature": 0}),
    );
    assert_ne!(
        a["choices"][0]["text"], c["choices"][0]["text"],
        "temperature 1.5 on near-uniform noise differs from greedy"
    );
    server.stop().unwrap();
}

#[test]
fn stop_strings_cut_the_text_plain_and_streamed() {
    let (server, model) = start(FakeModel::new(), ServeConfig::default());
    let ids = model.tokenizer().encode("in the");
    let full = model.tokenizer().decode(&greedy(&model, &ids, 30, vec![]));
    // A stop string from the middle of the expected text (two characters).
    let chars: Vec<char> = full.chars().collect();
    let stop: String = chars[10..12].iter().collect();
    let cut = &full[..full.find(&stop).unwrap()];
    let body =
        json!({"prompt": ids, "max_tokens": 30, "temperature": 0, "stop": [stop, "never-there"]});
    let (_, v) = post_json(server.addr, "/v1/completions", &body);
    assert_eq!(v["choices"][0]["text"], cut, "full text {full:?}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let (_, events) =
        client::post_stream(server.addr, "/v1/completions", &sbody.to_string(), T).unwrap();
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(text, cut);
    server.stop().unwrap();
}

/// lm-evaluation-harness's `local-completions` loglikelihood request: echo, max_tokens 1,
/// logprobs 1, a batch of token-id prompts. `token_logprobs[ctxlen:-1]` must be
/// `score_continuations`' numbers.
#[test]
fn echo_logprobs_equal_score_continuations() {
    let (server, model) = start(FakeModel::new(), ServeConfig::default());
    let tok = model.tokenizer();
    let context = tok.encode("Question: where is the world?\nAnswer:");
    let conts: Vec<Vec<u32>> = [" in the sea", " here", " all around the world and more"]
        .iter()
        .map(|c| tok.encode(c))
        .collect();
    let scores = score_continuations(&*model, &context, &conts).unwrap();
    let prompts: Vec<Vec<u32>> = conts
        .iter()
        .map(|c| [context.clone(), c.clone()].concat())
        .collect();
    let body = json!({"model": "fake", "prompt": prompts, "temperature": 0, "max_tokens": 1,
                      "logprobs": 1, "seed": 1234, "echo": true});
    let (status, v) = post_json(server.addr, "/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, s) in scores.iter().enumerate() {
        let ch = choices.iter().find(|c| c["index"] == i).unwrap();
        let lp = &ch["logprobs"];
        let token_logprobs = lp["token_logprobs"].as_array().unwrap();
        let n = prompts[i].len();
        assert_eq!(token_logprobs.len(), n + 1, "prompt tokens + 1 generated");
        assert!(token_logprobs[0].is_null());
        let got: Vec<f64> = token_logprobs[context.len()..n]
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        // The server writes the exact f64 (shortest round-trip form); serde_json's default
        // parser may land one ulp away, so compare to 1e-13 (Python's parser is exact).
        assert_eq!(got.len(), s.token_logprobs.len());
        for (g, e) in got.iter().zip(&s.token_logprobs) {
            assert!(
                (g - e).abs() <= 1e-13 * e.abs().max(1.0),
                "choice {i}: {g} vs {e}"
            );
        }
        // lm-eval's is_greedy: each token's logprob is the max of its top_logprobs.
        let top = lp["top_logprobs"].as_array().unwrap();
        let greedy = (context.len()..n).all(|k| {
            let best = top[k]
                .as_object()
                .unwrap()
                .values()
                .map(|x| x.as_f64().unwrap())
                .fold(f64::MIN, f64::max);
            (token_logprobs[k].as_f64().unwrap() - best).abs() < 1e-12
        });
        assert_eq!(greedy, s.is_greedy);
        // The text is the prompt then the generated token; offsets point into it.
        let text = ch["text"].as_str().unwrap();
        let prompt_text = tok.decode(&prompts[i]);
        assert!(text.starts_with(&prompt_text));
        let tokens = lp["tokens"].as_array().unwrap();
        let offsets = lp["text_offset"].as_array().unwrap();
        assert_eq!(tokens.len(), n + 1);
        for k in 0..n {
            let off = offsets[k].as_u64().unwrap() as usize;
            let rest: String = text.chars().skip(off).collect();
            assert!(rest.starts_with(tokens[k].as_str().unwrap()), "token {k}");
        }
    }
    // max_tokens 0 with echo: the prompt's logprobs only.
    let body = json!({"prompt": prompts[0], "max_tokens": 0, "logprobs": 0, "echo": true});
    let (_, v) = post_json(server.addr, "/v1/completions", &body);
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(
        lp["token_logprobs"].as_array().unwrap().len(),
        prompts[0].len()
    );
    assert_eq!(v["choices"][0]["text"], tok.decode(&prompts[0]));
    server.stop().unwrap();
}

#[test]
fn chat_plain_and_streamed() {
    let (server, model) = start(
        FakeModel::new().with_reply_text("Hello there, world!"),
        ServeConfig::default(),
    );
    let body = json!({"model": "fake", "messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "temperature": 0});
    let (status, v) = post_json(server.addr, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello there, world!");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let reply_len = model.tokenizer().encode("Hello there, world!").len();
    assert_eq!(
        v["usage"]["completion_tokens"],
        reply_len + 1,
        "the reply and <|im_end|>"
    );

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let (status, events) =
        client::post_stream(server.addr, "/v1/chat/completions", &sbody.to_string(), T).unwrap();
    assert_eq!(status, 200);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"]["content"].as_str())
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "Hello there, world!");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        reply_len + 1
    );
    // max_tokens cuts the answer.
    let mut short = body.clone();
    short["max_tokens"] = json!(2);
    let (_, v) = post_json(server.addr, "/v1/chat/completions", &short);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 2);
    server.stop().unwrap();
}

#[test]
fn models_and_health() {
    let (server, _m) = start(FakeModel::new(), ServeConfig::default());
    let r = client::get(server.addr, "/v1/models", T).unwrap();
    assert_eq!(r.status, 200);
    let v = r.json().unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "fake");
    let h = client::get(server.addr, "/health", T)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["in_flight"], 0);
    server.stop().unwrap();
}

/// A client that writes its whole body before reading (Python's `http.client`, `urllib`)
/// reads the 413 and its JSON, not a broken pipe: the server drains the refused body.
#[test]
fn oversized_body_reaches_a_client_that_writes_it_all_first() {
    use std::io::{Read, Write};
    let config = ServeConfig {
        max_body_bytes: 64 * 1024,
        ..ServeConfig::default()
    };
    let (server, _model) = start(FakeModel::new(), config);
    let body = format!("{{\"prompt\": \"{}\"}}", "x".repeat(16 << 20));
    for declared in [true, false] {
        let mut c = std::net::TcpStream::connect(server.addr).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        let head = if declared {
            format!(
                "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
        } else {
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_string()
        };
        c.write_all(head.as_bytes()).unwrap();
        if declared {
            c.write_all(body.as_bytes())
                .expect("the server reads the whole body");
        } else {
            for part in body.as_bytes().chunks(32 * 1024) {
                c.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                    .unwrap();
                c.write_all(part).expect("the server reads the whole body");
                c.write_all(b"\r\n").unwrap();
            }
            c.write_all(b"0\r\n\r\n").unwrap();
        }
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the JSON error has arrived (the connection may stay open).
        while !String::from_utf8_lossy(&answer).contains("}}") {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading the answer: {e}"),
            }
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "declared {declared}: {text}"
        );
        assert!(text.contains("\"code\":\"body_too_large\""), "{text}");
    }
    server.stop().unwrap();
}
