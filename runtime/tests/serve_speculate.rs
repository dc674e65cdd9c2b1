//! Speculative decoding in `qwen serve` (fake model over loopback): an answer that quotes
//! its prompt is drafted and verified in fewer forward passes, and every answer (text,
//! streamed deltas, stop strings that fall inside an accepted block, max_tokens) is the one
//! the server gives with speculation off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qwenc_runtime::serve::client;
use qwenc_runtime::serve::{RunningServer, ServeConfig};
use qwenc_runtime::testing::FakeModel;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const CODE: &str = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\nprint(add(3, 4))\n";

fn post(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let r = client::post(addr, path, &body.to_string(), T).expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().unwrap()
}

/// The streamed text of a chat completion.
fn streamed(addr: SocketAddr, body: &Value) -> String {
    let mut body = body.clone();
    body["stream"] = json!(true);
    let (status, events) =
        client::post_stream(addr, "/v1/chat/completions", &body.to_string(), T).unwrap();
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    events[..events.len() - 1]
        .iter()
        .filter_map(|e| {
            let v: Value = serde_json::from_str(e).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

fn answer(mut v: Value) -> Value {
    for k in ["id", "created"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[test]
fn speculated_answers_are_the_plain_ones_in_fewer_passes() {
    // The model answers with the code the user quoted (with prefix reuse off, so that the
    // passes counted are the decode's).
    let [(on, m_on), (off, m_off)] = [true, false].map(|speculate| {
        let m = Arc::new(FakeModel::new().with_reply_text(CODE));
        let config = ServeConfig {
            speculate,
            prefix_cache_mb: 0,
            ..ServeConfig::default()
        };
        (RunningServer::start(m.clone(), config).unwrap(), m)
    });
    let chat = |extra: &[(&str, Value)]| {
        let mut body = json!({"messages": [{"role": "user", "content": format!("Format this:\n{CODE}")}],
                              "temperature": 0});
        for (k, v) in extra {
            body[*k] = v.clone();
        }
        body
    };
    let cases = [
        chat(&[]),
        // A stop string inside what the drafts cover, and a max_tokens that ends a block.
        chat(&[("stop", json!("b\n\n\nprint"))]),
        chat(&[("stop", json!(["(3, 4", "zzz"]))]),
        chat(&[("max_tokens", json!(7))]),
        chat(&[("max_tokens", json!(23))]),
        chat(&[("logprobs", Value::Null), ("presence_penalty", json!(0.5))]),
    ];
    let mut compared = 0;
    for body in &cases {
        let (calls_on, calls_off) = (m_on.forward_calls(), m_off.forward_calls());
        let a = post(on.addr, "/v1/chat/completions", body);
        let b = post(off.addr, "/v1/chat/completions", body);
        assert_eq!(answer(a.clone()), answer(b), "{body}");
        let passes_on = m_on.forward_calls() - calls_on;
        let passes_off = m_off.forward_calls() - calls_off;
        let n = a["usage"]["completion_tokens"].as_u64().unwrap() as usize;
        if let Some(max) = body["max_tokens"].as_u64() {
            assert!(n <= max as usize, "{n} tokens for max_tokens {max}");
        }
        if n > 12 {
            compared += 1;
            assert!(
                passes_on * 2 < passes_off,
                "{passes_on} passes with speculation, {passes_off} without: {body}"
            );
        }
        assert_eq!(streamed(on.addr, body), streamed(off.addr, body), "{body}");
    }
    assert!(
        compared >= 3,
        "only {compared} answers were long enough to compare passes"
    );
    // The quoted answer came out whole.
    let a = post(on.addr, "/v1/chat/completions", &cases[0]);
    assert_eq!(a["choices"][0]["message"]["content"], CODE);
    // Sampling with speculation stays within max_tokens and ends properly.
    let mut sampled = cases[4].clone();
    sampled["temperature"] = json!(0.8);
    sampled["seed"] = json!(7);
    let v = post(on.addr, "/v1/chat/completions", &sampled);
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 23);
    on.stop().unwrap();
    off.stop().unwrap();
}
