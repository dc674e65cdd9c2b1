//! The tokenizer on arbitrary strings and ids. Text: `decode(encode_ordinary(s))` is
//! canonically equivalent to `s` (byte-level BPE loses nothing but normalization: equal NFD),
//! encoding that text again gives the same ids (the normalization is idempotent), and the
//! streaming decoder agrees with `decode`. Ids: decoding anything never panics.
//!
//! Not `== NFC(s)` with today's tables: the tokenizer normalizes as Hugging Face does, with
//! Unicode 9.0 tables (runtime/src/tokenizer/normalize.rs), so a mark assigned later is not
//! reordered (fuzz/regressions/tokenizer_roundtrip/ holds the input that showed it).
//!
//! The tokenizer is the dev checkpoint's (`models/dev-w4g32/tokenizer.json`, or
//! `QWENC_FUZZ_TOKENIZER`) when present, else the runtime's small fake one.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qwenc_runtime::tokenizer::{Tokenizer, TokenizerSpec};
use unicode_normalization::UnicodeNormalization;

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = std::env::var("QWENC_FUZZ_TOKENIZER").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../models/dev-w4g32/tokenizer.json"
            )
            .into()
        });
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let spec = TokenizerSpec::from_tokenizer_json(&text)
                    .expect("the dev tokenizer.json loads");
                eprintln!("fuzzing the tokenizer of {path}");
                Tokenizer::from_spec(spec).expect("the dev tokenizer builds")
            }
            Err(_) => {
                eprintln!("{path} not found: fuzzing the fake tokenizer");
                Tokenizer::from_spec(qwenc_runtime::testing::tokenizer_spec())
                    .expect("the fake spec builds")
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let tok = tokenizer();
    if let Ok(s) = std::str::from_utf8(data) {
        let ids = tok.encode_ordinary(s);
        let text = tok.decode(&ids);
        let nfd = |t: &str| t.nfd().collect::<String>();
        assert_eq!(nfd(&text), nfd(s), "ordinary round trip of {s:?} gave {text:?}");
        assert_eq!(tok.encode_ordinary(&text), ids, "re-encoding the decoded {text:?}");
        let ids = tok.encode(s);
        let mut stream = tok.stream_decoder();
        let mut streamed = String::new();
        for &id in &ids {
            streamed += &stream.push(id).expect("ids from encode are valid");
        }
        if let Some(rest) = stream.finish() {
            streamed += &rest;
        }
        assert_eq!(streamed, tok.decode(&ids), "stream decoding of {s:?}");
    }
    // Arbitrary ids (4 bytes each): decode never panics; unknown ids are skipped or refused.
    let ids: Vec<u32> = data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) % 200_000)
        .collect();
    let text = tok.decode(&ids);
    let _ = tok.try_decode(&ids);
    let _ = tok.decode_skip_special(&ids);
    let _ = text;
});
