//! `response_format` in `qwen serve` (fake model over loopback): every answer under a JSON
//! schema parses and validates unless `max_tokens` cut it, json_object answers are objects,
//! and a schema the engine cannot enforce is refused with a 400 naming the field.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qwenc_runtime::serve::client;
use qwenc_runtime::serve::{RunningServer, ServeConfig};
use qwenc_runtime::testing::FakeModel;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

fn post(addr: SocketAddr, body: &Value) -> (u16, Value) {
    let r = client::post(addr, "/v1/chat/completions", &body.to_string(), T).expect("request");
    (r.status, r.json().unwrap())
}

/// Ten schemas: nested objects, arrays, enums, required and optional fields, bounded so
/// that the fake model (whose logits are noise around one peak) ends within `max_tokens`.
fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}}, "required": ["n"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 6}, "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"], "additionalProperties": false}),
        json!({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9}, "minItems": 1, "maxItems": 4}),
        json!({"type": "object", "properties": {"point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9}, "y": {"type": "integer", "minimum": -9, "maximum": 9}}, "required": ["x", "y"], "additionalProperties": false}}, "required": ["point"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3}, "done": {"type": "boolean"}}, "required": ["tags", "done"], "additionalProperties": false}),
        json!({"enum": ["yes", "no", "maybe"]}),
        json!({"type": "object", "properties": {"kind": {"const": "circle"}, "r": {"type": "integer", "minimum": 1, "maximum": 5}, "note": {"type": "string", "maxLength": 4}}, "required": ["kind", "r"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"items": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 9}, "flag": {"type": "boolean"}}, "required": ["id", "flag"], "additionalProperties": false}}}, "required": ["items"], "additionalProperties": false}),
    ]
}

fn request(format: Value, seed: u64) -> Value {
    json!({"messages": [{"role": "user", "content": "Answer in JSON."}], "max_tokens": 150,
           "temperature": 0.9, "seed": seed, "response_format": format})
}

#[test]
fn every_answer_under_a_schema_validates() {
    let server = RunningServer::start(Arc::new(FakeModel::new()), ServeConfig::default()).unwrap();
    let mut finished = 0;
    for (i, schema) in schemas().iter().enumerate() {
        let validator = jsonschema::validator_for(schema).unwrap();
        for seed in 0..10 {
            let format = json!({"type": "json_schema", "json_schema": {"name": format!("s{i}"), "schema": schema, "strict": true}});
            let (status, v) = post(server.addr, &request(format, seed));
            assert_eq!(status, 200, "{v}");
            let choice = &v["choices"][0];
            let text = choice["message"]["content"].as_str().unwrap();
            if choice["finish_reason"] == "length" {
                continue;
            }
            assert_eq!(choice["finish_reason"], "stop", "{v}");
            let value: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("schema {i} seed {seed}: {text:?} is not JSON: {e}"));
            assert!(
                validator.is_valid(&value),
                "schema {i} seed {seed}: {value} does not validate"
            );
            // Written as json.dumps writes it: no free whitespace to loop on.
            assert!(
                !text.contains(['\n', '\t', '\r']) && !text.contains("  ") && text.trim() == text,
                "{text:?}"
            );
            finished += 1;
        }
    }
    assert!(
        finished >= 90,
        "only {finished} of 100 answers ended before max_tokens"
    );
    // Streamed, the deltas add up to a valid answer too.
    let format =
        json!({"type": "json_schema", "json_schema": {"name": "s", "schema": schemas()[3]}});
    let mut body = request(format, 3);
    body["stream"] = json!(true);
    let (status, events) =
        client::post_stream(server.addr, "/v1/chat/completions", &body.to_string(), T).unwrap();
    assert_eq!(status, 200);
    let text: String = events[..events.len() - 1]
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let value: Value = serde_json::from_str(&text).unwrap();
    assert!(jsonschema::validator_for(&schemas()[3])
        .unwrap()
        .is_valid(&value));
    server.stop().unwrap();
}

#[test]
fn json_object_answers_are_objects() {
    let server = RunningServer::start(Arc::new(FakeModel::new()), ServeConfig::default()).unwrap();
    let mut objects = 0;
    for seed in 0..10 {
        let (status, v) = post(server.addr, &request(json!({"type": "json_object"}), seed));
        assert_eq!(status, 200, "{v}");
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        if v["choices"][0]["finish_reason"] == "stop" {
            let value: Value =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(value.is_object(), "{value}");
            objects += 1;
        } else {
            // Cut by max_tokens: still the start of an object.
            assert!(text.trim_start().starts_with('{'), "{text:?}");
        }
    }
    assert!(objects > 0, "no json_object answer ended");
    server.stop().unwrap();
}

#[test]
fn malformed_or_unenforceable_formats_are_refused() {
    let server = RunningServer::start(Arc::new(FakeModel::new()), ServeConfig::default()).unwrap();
    for (format, code) in [
        (json!("json"), "invalid_type"),
        (json!({"type": "yaml"}), "invalid_value"),
        (json!({"type": "json_schema"}), "invalid_value"),
        (
            json!({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}),
            "invalid_value",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": 5}}),
            "invalid_type",
        ),
        // Not a schema the engine can enforce.
        (
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}),
            "unsupported_value",
        ),
    ] {
        let (status, v) = post(server.addr, &request(format.clone(), 0));
        assert_eq!(status, 400, "{format}: {v}");
        assert_eq!(v["error"]["code"], code, "{format}: {v}");
        assert!(
            v["error"]["param"]
                .as_str()
                .unwrap()
                .starts_with("response_format"),
            "{v}"
        );
    }
    server.stop().unwrap();
}
