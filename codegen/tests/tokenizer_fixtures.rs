//! The runtime tokenizer, rebuilt from the dev checkpoint's GGUF metadata, against Hugging
//! Face's tokenizer (`shared/fixtures/tokenizer_cases.jsonl`: 200 texts with
//! `tokenizer(text, add_special_tokens=False)` ids and `tokenizer.decode(ids)`), plus its
//! speed on a long text and on inputs that would expose quadratic behaviour.

mod common;

use std::sync::OnceLock;
use std::time::Instant;

use qwenc_codegen::model_io::gguf::GgufFile;
use qwenc_runtime::tokenizer::{StreamDecoder, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let gguf = GgufFile::open(&common::dev_gguf()).expect("the dev GGUF opens");
        let spec = gguf.tokenizer_spec().expect("the GGUF has a tokenizer");
        Tokenizer::from_spec(spec).expect("the GGUF tokenizer builds")
    })
}

fn cases() -> Vec<Case> {
    let path = common::fixture("tokenizer_cases.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("tokenizer_cases.jsonl line {}: {e}", i + 1))
        })
        .collect()
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn encode_matches_hugging_face() {
    let tok = tokenizer();
    let cases = cases();
    assert_eq!(
        cases.len(),
        200,
        "tokenizer_cases.jsonl should hold 200 cases"
    );
    let mut failures = Vec::new();
    for c in &cases {
        let ids = tok.encode(&c.text);
        if ids != c.ids {
            failures.push(format!(
                "{:?}\n    got  {ids:?}\n    want {:?}",
                c.text, c.ids
            ));
        }
    }
    let ok = cases.len() - failures.len();
    eprintln!("encode: {ok}/{} cases identical", cases.len());
    assert!(
        failures.is_empty(),
        "encode: {ok}/{} identical; first mismatches:\n{}",
        cases.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn decode_matches_hugging_face() {
    let tok = tokenizer();
    let cases = cases();
    let mut failures = Vec::new();
    for c in &cases {
        let text = tok.decode(&c.ids);
        // The streaming decoder gives the same text, piece by piece.
        let mut stream = StreamDecoder::new(tok);
        let mut streamed = String::new();
        for &id in &c.ids {
            streamed.push_str(&stream.push(id).expect("fixture ids are assigned"));
        }
        streamed.extend(stream.finish());
        if text != c.decoded || streamed != c.decoded {
            failures.push(format!(
                "{:?}\n    decode {text:?}\n    stream {streamed:?}",
                c.decoded
            ));
        }
    }
    let ok = cases.len() - failures.len();
    eprintln!("decode: {ok}/{} cases identical", cases.len());
    assert!(
        failures.is_empty(),
        "decode: {ok}/{} identical; first mismatches:\n{}",
        cases.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn qwen_special_tokens() {
    let tok = tokenizer();
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(151643));
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(151644));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(151645));
    assert_eq!(tok.token_to_id("<|file_sep|>"), Some(151664));
    assert!((151643..=151664).all(|id| tok.is_added(id)));
    assert!(tok.is_special(151645));
    // `<tool_call>` is an added token but not a special one.
    assert_eq!(tok.token_to_id("<tool_call>"), Some(151657));
    assert!(!tok.is_special(151657));
    assert!(!tok.is_special(9707));
    // Every added token written in text is matched as one id.
    for id in 151643..=151664u32 {
        let text = tok.id_to_token(id).expect("added token");
        assert_eq!(tok.encode(&format!("a{text}b")), [64, id, 65], "{text}");
    }
    // The `[PAD…]` fillers of the GGUF vocabulary are not tokens: such text is ordinary text.
    assert!(tok.token_to_id("[PAD151665]").is_none());
    assert!(tok.encode("[PAD151665]").len() > 1);
}

#[test]
#[ignore = "needs the dev checkpoint: scripts/fetch-dev-model.sh"]
fn long_texts_are_fast_and_round_trip() {
    let tok = tokenizer();
    let path = common::shared_dir().join("data/wikitext2_test.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for round in ["cold cache", "warm cache"] {
        let start = Instant::now();
        let ids = tok.encode(&text);
        let seconds = start.elapsed().as_secs_f64();
        eprintln!(
            "wikitext2_test.txt, {round}: {} bytes -> {} tokens in {seconds:.3} s ({:.0} tokens/ms)",
            text.len(),
            ids.len(),
            ids.len() as f64 / seconds / 1e3
        );
        assert!(seconds < 5.0, "encoding 1.3 MB took {seconds:.1} s");
        assert_eq!(tok.decode(&ids), text);
    }

    // Inputs that are one huge pre-tokenizer match, or many of them.
    let long_inputs = [
        " ".repeat(100_000),
        " ".repeat(100_000) + "x",
        "\n".repeat(100_000),
        "a".repeat(1 << 20),
        "hello world ".repeat(1 << 16),
        "中".repeat(300_000),
        "1".repeat(500_000),
        ".".repeat(1 << 20),
    ];
    for input in &long_inputs {
        let start = Instant::now();
        let ids = tok.encode(input);
        let seconds = start.elapsed().as_secs_f64();
        assert!(
            seconds < 5.0,
            "{} bytes of {:?}... took {seconds:.1} s",
            input.len(),
            &input[..3]
        );
        assert_eq!(tok.decode(&ids), *input);
    }
}
