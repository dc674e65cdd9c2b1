//! Prefix reuse in `qwen serve` (fake model over loopback): a chat's next turn and a
//! scoring request's repeated context run only their new tokens, and every answer (text,
//! logprobs) is the one the server gives with reuse off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qwenc_runtime::model::Model;
use qwenc_runtime::serve::client;
use qwenc_runtime::serve::{RunningServer, ServeConfig};
use qwenc_runtime::testing::FakeModel;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn post(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let r = client::post(addr, path, &body.to_string(), T).expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().unwrap()
}

/// Two servers over fresh fake models, with prefix reuse on and off.
fn servers(model: impl Fn() -> FakeModel) -> [(RunningServer, Arc<FakeModel>); 2] {
    [256, 0].map(|mb| {
        let m = Arc::new(model());
        let config = ServeConfig {
            prefix_cache_mb: mb,
            ..ServeConfig::default()
        };
        (RunningServer::start(m.clone(), config).unwrap(), m)
    })
}

/// Strips what differs between two servers' answers to the same request.
fn answer(mut v: Value) -> Value {
    for k in ["id", "created"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[test]
fn a_chats_next_turn_runs_only_the_new_message() {
    let reply = "Sure, here it is.";
    let [(on, m_on), (off, m_off)] = servers(|| FakeModel::new().with_reply_text(reply));
    let history = "a long first message that the second turn must not prefill again ".repeat(2);
    let first = json!({"messages": [{"role": "user", "content": history}], "temperature": 0});
    let a = post(on.addr, "/v1/chat/completions", &first);
    assert_eq!(a["choices"][0]["message"]["content"], reply);
    let prompt_tokens = a["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert!(prompt_tokens > 100, "{prompt_tokens}");

    let second = json!({"messages": [
        {"role": "user", "content": history},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "thanks, and again?"}], "temperature": 0});
    let before = m_on.forwarded_tokens();
    let b = post(on.addr, "/v1/chat/completions", &second);
    let ran = m_on.forwarded_tokens() - before;
    let usage = |v: &Value, k: &str| v["usage"][k].as_u64().unwrap() as usize;
    // The first turn left its prompt and its reply (without the final <|im_end|>, which was
    // sampled but never run) in the cache: only the rest of the second prompt runs, then
    // every generated token but the last.
    let cached = prompt_tokens + usage(&a, "completion_tokens") - 1;
    let expected = usage(&b, "prompt_tokens") - cached + usage(&b, "completion_tokens") - 1;
    assert_eq!(
        ran,
        expected,
        "the second turn ran {ran} tokens, prompt {}",
        usage(&b, "prompt_tokens")
    );
    // The same answers as with reuse off, which runs every prompt token.
    post(off.addr, "/v1/chat/completions", &first);
    let before = m_off.forwarded_tokens();
    let b_off = post(off.addr, "/v1/chat/completions", &second);
    assert!(m_off.forwarded_tokens() - before > prompt_tokens);
    assert_eq!(answer(b), answer(b_off));
    // /metrics counts the hit.
    let metrics = client::get(on.addr, "/metrics", T).unwrap().text();
    let hits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("qwen_prefix_cache_hits_total "))
        .unwrap_or_else(|| panic!("no prefix-cache hits in\n{metrics}"));
    assert_eq!(hits.trim(), "1", "{metrics}");
    on.stop().unwrap();
    off.stop().unwrap();
}

#[test]
fn scoring_requests_reuse_their_context_and_its_logprobs() {
    let [(on, m_on), (off, _)] = servers(FakeModel::new);
    let context = "Question: which of these is a reason the sky looks blue?\nAnswer:";
    let choices = [
        " scattering",
        " the ocean reflects it",
        " scattering of light",
        " paint",
    ];
    let mut ran = Vec::new();
    for choice in choices {
        for logprobs in [1, 0] {
            let body = json!({"prompt": format!("{context}{choice}"), "max_tokens": 0,
                              "echo": true, "logprobs": logprobs, "temperature": 0});
            let before = m_on.forwarded_tokens();
            let with = post(on.addr, "/v1/completions", &body);
            ran.push(m_on.forwarded_tokens() - before);
            let without = post(off.addr, "/v1/completions", &body);
            assert_eq!(
                answer(with),
                answer(without),
                "{choice:?} logprobs {logprobs}"
            );
        }
    }
    let context_tokens = m_on.tokenizer().encode(context).len();
    // The first request runs everything; every later one only its continuation and the
    // last context token (whose row gives the continuation's first logprob).
    assert!(ran[0] > context_tokens, "{ran:?}");
    for (i, &n) in ran.iter().enumerate().skip(1) {
        let continuation = m_on.tokenizer().encode(choices[i / 2]).len();
        assert!(n <= continuation + 2, "request {i} ran {n} tokens: {ran:?}");
    }
    // Generation after a cached scoring context gives the text it gives without.
    let body = json!({"prompt": context, "max_tokens": 8, "temperature": 0});
    let with = post(on.addr, "/v1/completions", &body);
    let without = post(off.addr, "/v1/completions", &body);
    assert_eq!(answer(with), answer(without));
    on.stop().unwrap();
    off.stop().unwrap();
}
