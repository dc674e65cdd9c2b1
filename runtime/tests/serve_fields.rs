//! Every OpenAI request field is honoured or refused, never accepted and ignored
//! (`serve::fields`): each refused value gets a 400 `unsupported_value` naming the field,
//! each accepted one a 200; the fields without effect leave the output as it was; the
//! penalties and `logit_bias` change it as OpenAI's formula says; the README's table is the
//! server's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qwenc_runtime::model::Model;
use qwenc_runtime::serve::client;
use qwenc_runtime::serve::fields::{Field, Support, CHAT_FIELDS, COMPLETION_FIELDS};
use qwenc_runtime::serve::{RunningServer, ServeConfig};
use qwenc_runtime::testing::FakeModel;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const CMPL: &str = "/v1/completions";
const CHAT: &str = "/v1/chat/completions";

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let r = client::post(addr, path, &body.to_string(), T).expect("request");
    (r.status, r.json().expect("JSON body"))
}

/// A greedy request of `path` with one more field.
fn with(path: &str, name: &str, value: Value) -> Value {
    let mut body = if path == CMPL {
        json!({"prompt": "the cat", "max_tokens": 6, "temperature": 0})
    } else {
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0})
    };
    body[name] = value;
    body
}

/// A value the server must refuse (for `Only` and `Refused` fields).
fn unsupported_value(name: &str) -> Value {
    match name {
        "n" | "best_of" => json!(2),
        "suffix" => json!(" and then"),
        "logprobs" => json!(true),
        "modalities" => json!(["text", "audio"]),
        "response_format" => json!({"type": "json_object"}),
        "tool_choice" => json!("auto"),
        "tools" => {
            json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
        }
        "parallel_tool_calls" => json!(false),
        "top_logprobs" => json!(2),
        "reasoning_effort" => json!("low"),
        "verbosity" => json!("low"),
        "audio" => json!({"voice": "alloy", "format": "wav"}),
        "functions" => json!([{"name": "f", "parameters": {"type": "object"}}]),
        "function_call" => json!("auto"),
        "moderation" => json!({"enabled": true}),
        "web_search_options" => json!({}),
        other => panic!("no unsupported value for {other}: add one"),
    }
}

/// A value the server must accept: an `Only` field's allowed value, any value of a field
/// without effect.
fn accepted_value(name: &str) -> Value {
    match name {
        "n" | "best_of" => json!(1),
        "suffix" => json!(""),
        "logprobs" => json!(false),
        "modalities" => json!(["text"]),
        "response_format" => json!({"type": "text"}),
        "tool_choice" => json!("none"),
        "tools" => json!([]),
        "model" => json!("some-other-name"),
        "user" | "safety_identifier" | "prompt_cache_key" => json!("user-1234"),
        "metadata" => json!({"team": "qa"}),
        "prediction" => json!({"type": "content", "content": "the cat sat"}),
        "prompt_cache_options" => json!({"mode": "explicit"}),
        "prompt_cache_retention" => json!("24h"),
        "service_tier" => json!("flex"),
        "store" => json!(true),
        other => panic!("no accepted value for {other}: add one"),
    }
}

fn text_of(path: &str, v: &Value) -> String {
    let choice = &v["choices"][0];
    let t = if path == CMPL {
        &choice["text"]
    } else {
        &choice["message"]["content"]
    };
    t.as_str().expect("text").to_string()
}

fn check_table(addr: SocketAddr, path: &str, fields: &[Field]) {
    let (status, plain) = post(addr, path, &with(path, "x_unknown_field", json!(1)));
    assert_eq!(status, 200, "{plain}");
    let plain = text_of(path, &plain);
    for f in fields {
        match f.support {
            Support::Honoured => {}
            Support::NoEffect(_) => {
                let (status, v) = post(addr, path, &with(path, f.name, accepted_value(f.name)));
                assert_eq!(status, 200, "{path} {}: {v}", f.name);
                assert_eq!(
                    text_of(path, &v),
                    plain,
                    "{path} {} changed the output",
                    f.name
                );
            }
            Support::Only(..) | Support::Refused(_) => {
                if let Support::Only(..) = f.support {
                    let (status, v) = post(addr, path, &with(path, f.name, accepted_value(f.name)));
                    assert_eq!(status, 200, "{path} {}: {v}", f.name);
                    assert_eq!(text_of(path, &v), plain, "{path} {}", f.name);
                }
                let (status, v) = post(addr, path, &with(path, f.name, unsupported_value(f.name)));
                assert_eq!(status, 400, "{path} {}: {v}", f.name);
                assert_eq!(v["error"]["code"], "unsupported_value", "{path} {}", f.name);
                assert_eq!(v["error"]["param"], f.name, "{path}");
                // null is "not given".
                let (status, v) = post(addr, path, &with(path, f.name, Value::Null));
                assert_eq!(status, 200, "{path} {} = null: {v}", f.name);
            }
        }
    }
}

#[test]
fn every_field_is_honoured_or_refused() {
    let model = Arc::new(FakeModel::new());
    let server = RunningServer::start(model, ServeConfig::default()).unwrap();
    check_table(server.addr, CMPL, COMPLETION_FIELDS);
    check_table(server.addr, CHAT, CHAT_FIELDS);
    // Every honoured field is one the parser reads: a wrongly typed value is refused.
    for (path, fields) in [(CMPL, COMPLETION_FIELDS), (CHAT, CHAT_FIELDS)] {
        for f in fields
            .iter()
            .filter(|f| matches!(f.support, Support::Honoured))
        {
            let wrong = match f.name {
                "prompt" | "messages" | "stop" | "stream_options" => json!(7),
                _ => json!({"not": ["a", "value"]}),
            };
            let (status, v) = post(server.addr, path, &with(path, f.name, wrong));
            assert_eq!(status, 400, "{path} {}: {v}", f.name);
            assert_eq!(v["error"]["param"], f.name, "{path}: {v}");
        }
    }
    server.stop().unwrap();
}

/// The tokens of a greedy completion with their logprobs (taken after the penalties).
fn completion_tokens(addr: SocketAddr, extra: &[(&str, Value)]) -> (Vec<String>, Vec<f64>) {
    let mut body = json!({"prompt": "the cat", "max_tokens": 48, "temperature": 0, "logprobs": 0});
    for (k, v) in extra {
        body[*k] = v.clone();
    }
    let (status, v) = post(addr, CMPL, &body);
    assert_eq!(status, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let tokens = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string());
    let logprobs = lp["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap());
    (tokens.collect(), logprobs.collect())
}

#[test]
fn penalties_and_logit_bias_shape_the_output() {
    let model = Arc::new(FakeModel::new());
    let server = RunningServer::start(model.clone(), ServeConfig::default()).unwrap();
    let addr = server.addr;
    let (plain, plain_lp) = completion_tokens(addr, &[]);
    // A bias of 100 on one id makes greedy pick it every time.
    let id = model.tokenizer().encode("z")[0];
    let (biased, _) = completion_tokens(addr, &[("logit_bias", json!({ id.to_string(): 100 }))]);
    assert!(biased.iter().all(|t| t == "z"), "{biased:?}");
    // A bias of -100 on every token plain greedy chose removes them all.
    let ids: Vec<u32> = plain
        .iter()
        .flat_map(|t| model.tokenizer().encode(t))
        .collect();
    let ban: serde_json::Map<String, Value> =
        ids.iter().map(|id| (id.to_string(), json!(-100))).collect();
    let (banned, _) = completion_tokens(addr, &[("logit_bias", Value::Object(ban))]);
    assert!(
        banned.iter().all(|t| !plain.contains(t)),
        "{banned:?} vs {plain:?}"
    );
    // The fake model's peak (+8) outweighs a penalty of 2: the same tokens come out, but a
    // token generated before is less likely (its logit went down), one not generated yet is
    // more likely (the others went down), exactly as often as plain greedy repeats.
    let (penalised, pen_lp) = completion_tokens(addr, &[("presence_penalty", json!(2.0))]);
    assert_eq!(penalised, plain);
    let mut repeats = 0;
    for (i, t) in plain.iter().enumerate() {
        let seen: Vec<&String> = plain[..i].iter().collect();
        if seen.contains(&t) {
            repeats += 1;
            assert!(
                pen_lp[i] < plain_lp[i] - 1e-3,
                "token {i} {t:?}: {} vs {}",
                pen_lp[i],
                plain_lp[i]
            );
        } else if i > 0 {
            assert!(
                pen_lp[i] >= plain_lp[i],
                "token {i} {t:?}: {} vs {}",
                pen_lp[i],
                plain_lp[i]
            );
        } else {
            assert_eq!(
                pen_lp[i], plain_lp[i],
                "nothing was generated before token 0"
            );
        }
    }
    assert!(
        repeats >= 2,
        "plain greedy repeats {repeats} tokens: {plain:?}"
    );
    // frequency_penalty grows with the count: 2 × count against presence's 2.
    let (_, freq_lp) = completion_tokens(addr, &[("frequency_penalty", json!(2.0))]);
    let third =
        (0..plain.len()).find(|&i| plain[..i].iter().filter(|t| **t == plain[i]).count() >= 2);
    if let Some(i) = third {
        assert!(
            freq_lp[i] < pen_lp[i],
            "token {i}: {} vs {}",
            freq_lp[i],
            pen_lp[i]
        );
    }
    // Out of range and outside the vocabulary.
    for (k, v) in [
        ("presence_penalty", json!(2.5)),
        ("frequency_penalty", json!(-3)),
        ("logit_bias", json!({"5": 101})),
        ("logit_bias", json!({"five": 1})),
        (
            "logit_bias",
            json!({ (model.info().vocab_size).to_string(): 1 }),
        ),
    ] {
        let mut body = json!({"prompt": "the cat", "max_tokens": 2});
        body[k] = v.clone();
        let (status, r) = post(addr, CMPL, &body);
        assert_eq!(
            (status, r["error"]["code"].as_str()),
            (400, Some("invalid_value")),
            "{k}={v}: {r}"
        );
        assert_eq!(r["error"]["param"], k);
    }
    server.stop().unwrap();
}

/// The README's field table lists exactly the server's fields, with what is done with each.
#[test]
fn readme_field_table_is_the_servers() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut rows = Vec::new();
    for (endpoint, fields) in [("completions", COMPLETION_FIELDS), ("chat", CHAT_FIELDS)] {
        for f in fields {
            let what = match f.support {
                Support::Honoured => "honoured".to_string(),
                Support::NoEffect(why) => format!("accepted, no effect: {why}"),
                Support::Only(what, _) => format!("only {what}"),
                Support::Refused(why) => format!("refused: {why}"),
            };
            rows.push(format!("| {endpoint} | `{}` | {what} |", f.name));
        }
    }
    let missing = rows.iter().filter(|r| !readme.contains(r.as_str())).count();
    assert_eq!(
        missing,
        0,
        "README lacks {missing} rows of the table:\n{}",
        rows.join("\n")
    );
}

/// Chat `logprobs` / `top_logprobs`: one `content` entry per token of the answer (its text
/// adds up to the answer), with the logprobs the completions endpoint gives the same ids.
#[test]
fn chat_logprobs_match_the_completions_endpoints() {
    let model = Arc::new(FakeModel::new());
    let server = RunningServer::start(model.clone(), ServeConfig::default()).unwrap();
    let addr = server.addr;
    let messages = json!([{"role": "user", "content": "hi there"}]);
    let body = json!({"messages": messages, "max_tokens": 12, "temperature": 0,
                      "logprobs": true, "top_logprobs": 3});
    let (status, chat) = post(addr, CHAT, &body);
    assert_eq!(status, 200, "{chat}");
    let content = chat["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .clone();
    let text = chat["choices"][0]["message"]["content"].as_str().unwrap();
    let joined: String = content
        .iter()
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    assert_eq!(joined, text);
    assert!(!content.is_empty());
    for e in &content {
        assert_eq!(e["top_logprobs"].as_array().unwrap().len(), 3, "{e}");
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            e["token"].as_str().unwrap()
        );
        // The chosen token is greedy: the most likely alternative.
        assert_eq!(e["top_logprobs"][0]["token"], e["token"], "{e}");
    }
    // The completions endpoint on the rendered conversation gives the same logprobs.
    let ids = model.tokenizer().encode(&qwenc_runtime::chat::render(
        &[qwenc_runtime::chat::ChatMessage::user("hi there")],
        true,
    ));
    let (status, cmpl) = post(
        addr,
        CMPL,
        &json!({"prompt": ids, "max_tokens": content.len(), "temperature": 0, "logprobs": 3}),
    );
    assert_eq!(status, 200, "{cmpl}");
    let want = cmpl["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap();
    for (e, w) in content.iter().zip(want) {
        assert_eq!(&e["logprob"], w);
    }
    // Streamed: the chunks' entries add up to the same list.
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let (status, events) = client::post_stream(addr, CHAT, &sbody.to_string(), T).unwrap();
    assert_eq!(status, 200);
    let streamed: Vec<Value> = events[..events.len() - 1]
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(streamed, content);
    // top_logprobs needs logprobs, and at most 20.
    for extra in [
        json!({"top_logprobs": 2}),
        json!({"logprobs": true, "top_logprobs": 21}),
    ] {
        let mut b = json!({"messages": messages, "max_tokens": 2});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (status, v) = post(addr, CHAT, &b);
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some("top_logprobs")),
            "{v}"
        );
    }
    server.stop().unwrap();
}
