//! The ChatML template against transformers' rendering (`shared/fixtures/chat_template_case.json`).

use std::path::PathBuf;

use qwenc_runtime::chat::{render, ChatMessage};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    rendered: String,
}

fn shared_dir() -> PathBuf {
    std::env::var_os("QWENC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

#[test]
fn renders_like_transformers() {
    let path = shared_dir().join("fixtures/chat_template_case.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): set QWENC_SHARED to the shared/ folder",
            path.display()
        )
    });
    let case: Case = serde_json::from_str(&text).expect("chat_template_case.json parses");
    assert_eq!(
        render(&case.messages, case.add_generation_prompt),
        case.rendered
    );
}
