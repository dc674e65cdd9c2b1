//! Unit tests on a tiny hand-made vocabulary (no checkpoint needed).

use super::*;

/// Ids 0..=255: the byte tokens (id = byte). Then merged tokens from `MERGES`, in order,
/// from id 256. Added tokens from 1000.
const MERGES: &[(&str, &str)] = &[
    ("h", "e"),     // 256 he
    ("l", "l"),     // 257 ll
    ("he", "ll"),   // 258 hell
    ("hell", "o"),  // 259 hello
    ("Ġ", "w"),     // 260 Ġw
    ("o", "r"),     // 261 or
    ("Ġw", "or"),   // 262 Ġwor
    ("Ġwor", "l"),  // 263 Ġworl
    ("Ġworl", "d"), // 264 Ġworld
    ("Ġ", "Ġ"),     // 265 ĠĠ
    ("ĠĠ", "ĠĠ"),   // 266 ĠĠĠĠ
    ("e", "l"),     // 267 el   (rank 11: loses to "l l" and "h e")
    ("ä", "¸"),     // 268 ä¸   (first two bytes of 中 E4 B8 AD)
    ("ä¸", "Ń"),    // 269 中
    ("Ċ", "Ċ"),     // 270 ĊĊ
    ("'", "s"),     // 271 's
];

fn spec() -> TokenizerSpec {
    let mut vocab: Vec<(String, u32)> = (0..=255u8)
        .map(|b| (bytes_to_token(&[b]), b as u32))
        .collect();
    for (k, (a, b)) in MERGES.iter().enumerate() {
        vocab.push((format!("{a}{b}"), 256 + k as u32));
    }
    let added = [
        ("<|im_start|>", 1000, true),
        ("<|im_end|>", 1001, true),
        ("<tool_call>", 1002, false),
        ("<|a|>", 1003, true),
        ("<|a|>b", 1004, true),
    ]
    .into_iter()
    .map(|(c, id, special)| AddedToken {
        id,
        content: c.to_string(),
        special,
    })
    .collect();
    TokenizerSpec {
        vocab,
        merges: MERGES
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        added,
        pre_tokenizer: PreTokenizer::Qwen2,
        nfc: true,
    }
}

fn tok() -> Tokenizer {
    Tokenizer::from_spec(spec()).expect("tiny spec builds")
}

fn id(t: &Tokenizer, s: &str) -> u32 {
    t.token_to_id(s).unwrap_or_else(|| panic!("no token {s:?}"))
}

#[test]
fn bpe_merges_by_rank() {
    let t = tok();
    assert_eq!(t.encode("hello"), [259]);
    assert_eq!(t.encode("hello world"), [259, 264]);
    // "hel": he (rank 0) beats el (rank 11).
    assert_eq!(t.encode("hel"), [256, id(&t, "l")]);
    // "ell": ll (rank 1) beats el (rank 11).
    assert_eq!(t.encode("ell"), [id(&t, "e"), 257]);
    // "el" alone merges.
    assert_eq!(t.encode("el"), [267]);
    // Spaces: "     x" -> the run minus one, then " x".
    assert_eq!(t.encode("     x"), [266, id(&t, "Ġ"), id(&t, "x")]);
    assert_eq!(t.encode("中"), [269]);
    assert_eq!(t.encode("it's"), [id(&t, "i"), id(&t, "t"), 271]);
    assert_eq!(t.encode(""), Vec::<u32>::new());
}

#[test]
fn added_tokens_split_first() {
    let t = tok();
    assert_eq!(t.encode("<|im_start|>hello<|im_end|>"), [1000, 259, 1001]);
    // Longest match at the leftmost position.
    assert_eq!(t.encode("<|a|>b<|a|>"), [1004, 1003]);
    // Non-special added tokens are matched too.
    assert_eq!(t.encode("x<tool_call>"), [id(&t, "x"), 1002]);
    // The text around an added token is split on its own: the spaces before it end
    // the piece (so `\s+(?!\S)` keeps them all).
    assert_eq!(t.encode("  <|im_end|>"), [265, 1001]);
    // A broken marker is ordinary text.
    let ids = t.encode("<|im_end|");
    assert!(!ids.contains(&1001));
    assert_eq!(t.decode(&ids), "<|im_end|");
    // encode_ordinary does not look for added tokens.
    assert!(!t.encode_ordinary("<|im_end|>").contains(&1001));
    assert!(t.is_special(1000));
    assert!(!t.is_special(1002));
    assert!(t.is_added(1002));
    assert!(!t.is_special(259));
    assert!(!t.is_special(99_999));
}

#[test]
fn nfc_normalization() {
    let t = tok();
    // e + combining acute becomes é (C3 A9) before splitting.
    let ids = t.encode("e\u{301}");
    assert_eq!(ids, [0xC3, 0xA9]);
    assert_eq!(t.decode(&ids), "é");
    // Without NFC the mark stays separate.
    let mut s = spec();
    s.nfc = false;
    let raw = Tokenizer::from_spec(&s).unwrap();
    assert_eq!(raw.encode("e\u{301}"), [id(&t, "e"), 0xCC, 0x81]);
}

#[test]
fn decode_and_round_trip() {
    let t = tok();
    let texts = [
        "hello world",
        "<|im_start|>user\nhi 中文 😀<|im_end|>\n",
        "  tabs\tand\n\n\nnewlines  ",
        "I'M it's 123 ½ Ⅻ ſ",
        "\u{0}\u{1f}\u{7f}\u{ad}\u{a0}ÿ",
    ];
    for text in texts {
        let ids = t.encode(text);
        assert_eq!(t.decode(&ids), text, "round trip of {text:?}");
    }
    assert_eq!(t.id_to_token(259), Some("hello"));
    assert_eq!(t.id_to_token(1000), Some("<|im_start|>"));
    assert_eq!(t.id_to_token(500), None);
    assert_eq!(t.token_to_id("Ġworld"), Some(264));
    assert_eq!(t.token_to_id("<|im_end|>"), Some(1001));
    assert_eq!(t.vocab_size(), 1005);
    assert_eq!(
        t.decode_skip_special(&[1000, 259, 1002, 1001]),
        "hello<tool_call>"
    );
}

#[test]
fn decode_invalid_and_unknown() {
    let t = tok();
    // A lone continuation byte, a truncated 3-byte sequence at the end.
    assert_eq!(t.decode(&[0x80]), "\u{FFFD}");
    assert_eq!(t.decode(&[b'a' as u32, 0xE4, 0xB8]), "a\u{FFFD}");
    assert_eq!(t.decode(&[0xE4, b'a' as u32]), "\u{FFFD}a");
    // Unknown ids are skipped by decode, refused by try_decode.
    assert_eq!(t.decode(&[259, 500, 77_777_777]), "hello");
    assert_eq!(
        t.try_decode(&[259, 500]),
        Err(TokenizerError::UnknownId(500))
    );
    assert_eq!(t.try_decode(&[259]).as_deref(), Ok("hello"));
}

#[test]
fn stream_decoder_holds_partial_characters() {
    let t = tok();
    let mut s = t.stream_decoder();
    // 中 = E4 B8 AD sent byte by byte.
    assert_eq!(s.push(0xE4), Ok(String::new()));
    assert_eq!(s.push(0xB8), Ok(String::new()));
    assert_eq!(s.pending_len(), 2);
    assert_eq!(s.push(0xAD), Ok("中".to_string()));
    assert_eq!(s.pending_len(), 0);
    // 😀 = F0 9F 98 80 split 2 + 2, then text.
    assert_eq!(s.push(0xF0), Ok(String::new()));
    assert_eq!(s.push(0x9F), Ok(String::new()));
    assert_eq!(s.push(0x98), Ok(String::new()));
    assert_eq!(s.push(0x80), Ok("😀".to_string()));
    assert_eq!(s.push(259), Ok("hello".to_string()));
    // Unknown id: an error, nothing lost.
    assert_eq!(s.push(0xE4), Ok(String::new()));
    assert_eq!(s.push(500), Err(TokenizerError::UnknownId(500)));
    assert_eq!(s.push(269), Ok("\u{FFFD}中".to_string()));
    // An incomplete character at the end comes out as U+FFFD on finish.
    assert_eq!(s.push(0xE4), Ok(String::new()));
    assert_eq!(s.finish(), Some("\u{FFFD}".to_string()));
    assert_eq!(s.finish(), None);
    // Special tokens can be skipped.
    let mut s = t.stream_decoder().skip_special_tokens(true);
    assert_eq!(s.push(1000), Ok(String::new()));
    assert_eq!(s.push(1002), Ok("<tool_call>".to_string()));
}

#[test]
fn stream_concatenation_equals_decode() {
    let t = tok();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..300 {
        let len = (seed % 12) as usize;
        let ids: Vec<u32> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Bytes, with a bias to the UTF-8 lead and continuation ranges, and merges.
                match seed % 5 {
                    0 => 0x80 + (seed >> 8) as u32 % 0x40,
                    1 => 0xC0 + (seed >> 8) as u32 % 0x40,
                    2 => 256 + (seed >> 8) as u32 % MERGES.len() as u32,
                    _ => (seed >> 8) as u32 % 256,
                }
            })
            .collect();
        let mut s = t.stream_decoder();
        let mut streamed = String::new();
        for &i in &ids {
            streamed.push_str(&s.push(i).unwrap());
        }
        streamed.extend(s.finish());
        assert_eq!(streamed, t.decode(&ids), "ids {ids:?}");
    }
}

#[test]
fn long_inputs_are_not_quadratic() {
    let t = tok();
    let start = std::time::Instant::now();
    let spaces = " ".repeat(100_000);
    let ids = t.encode(&spaces);
    assert_eq!(t.decode(&ids), spaces);
    assert_eq!(ids.len(), 25_000);
    let letters = "hello".repeat(200_000); // one 1 MB word
    let ids = t.encode(&letters);
    assert_eq!(t.decode(&ids), letters);
    let newlines = "\n".repeat(100_000);
    assert_eq!(t.encode(&newlines).len(), 50_000);
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
}

#[test]
fn spec_errors_are_named() {
    let mut s = spec();
    s.vocab.push(("zzz".into(), 3));
    assert!(matches!(
        Tokenizer::from_spec(&s),
        Err(TokenizerError::DuplicateId { id: 3, .. })
    ));

    let mut s = spec();
    s.vocab.push(("hello".into(), 600));
    assert!(matches!(
        Tokenizer::from_spec(&s),
        Err(TokenizerError::DuplicateToken {
            first: 259,
            second: 600,
            ..
        })
    ));

    let mut s = spec();
    s.merges.push(("q".into(), "nope".into()));
    assert!(matches!(
        Tokenizer::from_spec(&s),
        Err(TokenizerError::MergeUnknownToken { ref token, .. }) if token == "nope"
    ));

    let mut s = spec();
    s.merges.push(("q".into(), "q".into()));
    assert!(matches!(
        Tokenizer::from_spec(&s),
        Err(TokenizerError::MergeUnknownToken { ref token, .. }) if token == "qq"
    ));

    let mut s = spec();
    s.merges.push(("h".into(), "e".into()));
    assert!(matches!(
        Tokenizer::from_spec(&s),
        Err(TokenizerError::DuplicateMerge { first_rank: 0, .. })
    ));

    let mut s = spec();
    s.vocab.retain(|(_, id)| *id != b' ' as u32);
    s.merges.clear();
    assert!(matches!(
        Tokenizer::from_spec(&s),
        Err(TokenizerError::MissingByteToken { byte: b' ', .. })
    ));

    let mut s = spec();
    s.added.push(AddedToken {
        id: 2000,
        content: String::new(),
        special: true,
    });
    assert_eq!(
        Tokenizer::from_spec(&s).err(),
        Some(TokenizerError::EmptyAddedToken { id: 2000 })
    );

    let mut s = spec();
    s.added.push(AddedToken {
        id: 259,
        content: "<x>".into(),
        special: true,
    });
    assert!(matches!(
        Tokenizer::from_spec(&s),
        Err(TokenizerError::DuplicateId { id: 259, .. })
    ));

    let mut s = spec();
    s.vocab.push(("big".into(), u32::MAX));
    assert!(matches!(
        Tokenizer::from_spec(&s),
        Err(TokenizerError::IdTooLarge { .. })
    ));

    // An added token also listed in the vocabulary with the same id (GGUF style) is fine.
    let mut s = spec();
    s.vocab.push(("<|im_start|>".into(), 1000));
    let t = Tokenizer::from_spec(&s).unwrap();
    assert_eq!(t.encode("<|im_start|>"), [1000]);
    assert!(t.is_special(1000));
}

fn tokenizer_json(merges: &str, pre: &str, model_type: &str) -> String {
    let pattern = serde_json::to_string(QWEN2_SPLIT_PATTERN).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = spec()
        .vocab
        .into_iter()
        .map(|(t, id)| (t, id.into()))
        .collect();
    let vocab = serde_json::Value::Object(vocab).to_string();
    let pre = pre.replace("PATTERN", &pattern);
    format!(
        r#"{{
  "version": "1.0",
  "added_tokens": [
    {{"id": 1000, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}},
    {{"id": 1002, "content": "<tool_call>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false}}
  ],
  "normalizer": {{"type": "NFC"}},
  "pre_tokenizer": {pre},
  "post_processor": {{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}},
  "decoder": {{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}},
  "model": {{"type": "{model_type}", "dropout": null, "unk_token": null, "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
    "vocab": {vocab},
    "merges": {merges}}}
}}"#
    )
}

const QWEN2_PRE: &str = r#"{"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": false},
    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}"#;

#[test]
fn reads_tokenizer_json() {
    let as_strings = serde_json::to_string(
        &MERGES
            .iter()
            .map(|(a, b)| format!("{a} {b}"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let as_pairs = serde_json::to_string(&MERGES).unwrap();
    for merges in [as_strings, as_pairs] {
        let spec =
            TokenizerSpec::from_tokenizer_json(&tokenizer_json(&merges, QWEN2_PRE, "BPE")).unwrap();
        assert!(spec.nfc);
        assert_eq!(spec.merges.len(), MERGES.len());
        assert_eq!(spec.merges[4], ("Ġ".to_string(), "w".to_string()));
        assert_eq!(spec.added.len(), 2);
        assert!(spec.added[0].special && !spec.added[1].special);
        let t = Tokenizer::from_spec(&spec).unwrap();
        assert_eq!(t.encode("<|im_start|>hello world"), [1000, 259, 264]);
    }
}

#[test]
fn tokenizer_json_refusals() {
    let merges = "[]";
    assert!(matches!(
        TokenizerSpec::from_tokenizer_json(&tokenizer_json(merges, QWEN2_PRE, "WordPiece")),
        Err(TokenizerError::UnsupportedModel(m)) if m == "WordPiece"
    ));
    let gpt2 = r#"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"#;
    assert!(matches!(
        TokenizerSpec::from_tokenizer_json(&tokenizer_json(merges, gpt2, "BPE")),
        Err(TokenizerError::UnsupportedPreTokenizer(_))
    ));
    let other_regex = QWEN2_PRE.replace("PATTERN", r#""\\s+""#);
    assert!(matches!(
        TokenizerSpec::from_tokenizer_json(&tokenizer_json(merges, &other_regex, "BPE")),
        Err(TokenizerError::UnsupportedPreTokenizer(_))
    ));
    let bad_merges = r#"["a b c"]"#;
    assert!(matches!(
        TokenizerSpec::from_tokenizer_json(&tokenizer_json(bad_merges, QWEN2_PRE, "BPE")),
        Err(TokenizerError::Json(_))
    ));
    let nfkc = tokenizer_json(merges, QWEN2_PRE, "BPE")
        .replace(r#"{"type": "NFC"}"#, r#"{"type": "NFKC"}"#);
    assert!(matches!(
        TokenizerSpec::from_tokenizer_json(&nfkc),
        Err(TokenizerError::UnsupportedNormalizer(_))
    ));
    assert!(matches!(
        TokenizerSpec::from_tokenizer_json("{not json"),
        Err(TokenizerError::Json(_))
    ));
}

#[test]
fn tokenizer_json_round_trip() {
    let s = spec();
    let back = TokenizerSpec::from_tokenizer_json(&s.to_tokenizer_json()).unwrap();
    assert_eq!(back, s);
}
