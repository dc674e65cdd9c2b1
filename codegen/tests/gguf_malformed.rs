//! The GGUF reader on small files built here: a valid one (every metadata value type, tensors
//! in F32 / F16 / Q8_0 / Q4_K), then one corruption at a time, each of which must be refused
//! with the right `LoadError` variant and a message that says what is wrong; plus truncation
//! at every byte and byte flips over the whole header, which must never panic.

use std::path::Path;

use half::f16;
use qwenc_codegen::model_io::gguf::{GgmlType, GgufFile, GgufValue};
use qwenc_codegen::{LoadError, TensorSource};

// ---------------------------------------------------------------------------------------------
// A tiny GGUF writer.

#[derive(Clone, Debug)]
enum V {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Arr(u32, Vec<V>),
    U64(u64),
    I64(i64),
    F64(f64),
    /// Any type id with any payload bytes.
    Raw(u32, Vec<u8>),
}

fn s(x: &str) -> V {
    V::Str(x.to_string())
}

fn strs(xs: &[&str]) -> V {
    V::Arr(8, xs.iter().map(|x| s(x)).collect())
}

fn put_str(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

impl V {
    fn ty(&self) -> u32 {
        match self {
            V::U8(_) => 0,
            V::I8(_) => 1,
            V::U16(_) => 2,
            V::I16(_) => 3,
            V::U32(_) => 4,
            V::I32(_) => 5,
            V::F32(_) => 6,
            V::Bool(_) => 7,
            V::Str(_) => 8,
            V::Arr(..) => 9,
            V::U64(_) => 10,
            V::I64(_) => 11,
            V::F64(_) => 12,
            V::Raw(t, _) => *t,
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        match self {
            V::U8(v) => out.push(*v),
            V::I8(v) => out.push(*v as u8),
            V::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::Bool(v) => out.push(*v as u8),
            V::Str(v) => put_str(out, v.as_bytes()),
            V::Arr(t, items) => {
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for i in items {
                    i.put(out);
                }
            }
            V::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
            V::Raw(_, b) => out.extend_from_slice(b),
        }
    }
}

#[derive(Clone, Debug)]
struct T {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
    /// Written instead of `dims.len()`.
    n_dims: Option<u32>,
    /// Written instead of the offset where the data really is.
    offset: Option<u64>,
}

fn tensor(name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> T {
    T {
        name: name.to_string(),
        dims: dims.to_vec(),
        ty,
        data,
        n_dims: None,
        offset: None,
    }
}

#[derive(Clone, Debug)]
struct Gguf {
    magic: [u8; 4],
    version: u32,
    kv: Vec<(Vec<u8>, V)>,
    tensors: Vec<T>,
    /// Layout alignment (write `general.alignment` yourself when it is not 32).
    alignment: u64,
    n_tensors: Option<u64>,
    n_kv: Option<u64>,
}

fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

impl Gguf {
    fn set(&mut self, key: &str, v: V) -> &mut Self {
        match self.kv.iter_mut().find(|(k, _)| k == key.as_bytes()) {
            Some(slot) => slot.1 = v,
            None => self.kv.push((key.as_bytes().to_vec(), v)),
        }
        self
    }

    fn remove(&mut self, key: &str) -> &mut Self {
        self.kv.retain(|(k, _)| k != key.as_bytes());
        self
    }

    fn tensor_mut(&mut self, name: &str) -> &mut T {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap()
    }

    /// The file, and the end of the last tensor's data.
    fn build_with_end(&self) -> (Vec<u8>, u64) {
        let mut offsets = Vec::new();
        let mut off = 0u64;
        for t in &self.tensors {
            offsets.push(off);
            off = align(off + t.data.len() as u64, self.alignment);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&self.magic);
        out.extend_from_slice(&self.version.to_le_bytes());
        let n_tensors = self.n_tensors.unwrap_or(self.tensors.len() as u64);
        out.extend_from_slice(&n_tensors.to_le_bytes());
        let n_kv = self.n_kv.unwrap_or(self.kv.len() as u64);
        out.extend_from_slice(&n_kv.to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            out.extend_from_slice(&v.ty().to_le_bytes());
            v.put(&mut out);
        }
        for (t, &o) in self.tensors.iter().zip(&offsets) {
            put_str(&mut out, t.name.as_bytes());
            let n_dims = t.n_dims.unwrap_or(t.dims.len() as u32);
            out.extend_from_slice(&n_dims.to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.to_le_bytes());
            out.extend_from_slice(&t.offset.unwrap_or(o).to_le_bytes());
        }
        let data_start = align(out.len() as u64, self.alignment);
        out.resize(data_start as usize, 0);
        let mut end = data_start;
        for (t, &o) in self.tensors.iter().zip(&offsets) {
            out.resize((data_start + o) as usize, 0);
            out.extend_from_slice(&t.data);
            end = data_start + o + t.data.len() as u64;
        }
        (out, end)
    }

    fn build(&self) -> Vec<u8> {
        self.build_with_end().0
    }

    fn open(&self) -> Result<GgufFile, LoadError> {
        GgufFile::from_bytes(Path::new("tiny.gguf"), self.build())
    }
}

const HIDDEN: u64 = 256;
const VOCAB: u64 = 8;
const TOKENS: [&str; 8] = [
    "a",
    "b",
    "ab",
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "[PAD7]",
];
const TOKEN_TYPES: [i32; 8] = [1, 1, 1, 3, 3, 3, 4, 5];

fn q8_0_value(r: u64, b: u64, j: u64) -> i8 {
    ((r * 37 + b * 11 + j * 5) % 256) as u8 as i8
}

/// `token_embd.weight`: VOCAB rows of HIDDEN values, Q8_0 with d = 0.5.
fn embd_data() -> Vec<u8> {
    let mut out = Vec::new();
    for r in 0..VOCAB {
        for b in 0..HIDDEN / 32 {
            out.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
            for j in 0..32 {
                out.push(q8_0_value(r, b, j) as u8);
            }
        }
    }
    out
}

fn q4_k_nibbles(r: usize, i: usize) -> u8 {
    (((i + r) % 16) | (((i * 3) % 16) << 4)) as u8
}

/// Two rows of one Q4_K block each: d = 1, dmin = 0, every scale 1, so value = nibble.
fn q4_k_data(rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for r in 0..rows {
        out.extend_from_slice(&f16::from_f32(1.0).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(0.0).to_le_bytes());
        out.extend_from_slice(&[1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]);
        for i in 0..128 {
            out.push(q4_k_nibbles(r, i));
        }
    }
    out
}

fn f32_data(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 * 0.25).to_le_bytes())
        .collect()
}

fn f16_data(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| f16::from_f32(i as f32 - 128.0).to_le_bytes())
        .collect()
}

fn valid() -> Gguf {
    let mut g = Gguf {
        magic: *b"GGUF",
        version: 3,
        kv: Vec::new(),
        tensors: Vec::new(),
        alignment: 32,
        n_tensors: None,
        n_kv: None,
    };
    g.set("general.architecture", s("qwen2"))
        .set("general.name", s("tiny"))
        .set("qwen2.embedding_length", V::U32(HIDDEN as u32))
        .set("qwen2.feed_forward_length", V::U32(512))
        .set("qwen2.block_count", V::U32(1))
        .set("qwen2.attention.head_count", V::U32(4))
        .set("qwen2.attention.head_count_kv", V::U32(2))
        .set("qwen2.context_length", V::U32(128))
        .set("qwen2.rope.freq_base", V::F32(1e6))
        .set("qwen2.attention.layer_norm_rms_epsilon", V::F32(1e-6))
        .set("tokenizer.ggml.model", s("gpt2"))
        .set("tokenizer.ggml.pre", s("qwen2"))
        .set("tokenizer.ggml.tokens", strs(&TOKENS))
        .set(
            "tokenizer.ggml.token_type",
            V::Arr(5, TOKEN_TYPES.iter().map(|&t| V::I32(t)).collect()),
        )
        .set("tokenizer.ggml.merges", strs(&["a b"]))
        .set("tokenizer.ggml.bos_token_id", V::U32(3))
        .set("tokenizer.ggml.eos_token_id", V::U32(5))
        // One of every value type, and a nested array.
        .set("test.u8", V::U8(200))
        .set("test.i8", V::I8(-100))
        .set("test.u16", V::U16(60000))
        .set("test.i16", V::I16(-30000))
        .set("test.i32", V::I32(-7))
        .set("test.bool", V::Bool(true))
        .set("test.u64", V::U64(u64::MAX))
        .set("test.i64", V::I64(i64::MIN))
        .set("test.f64", V::F64(-0.125))
        .set(
            "test.nested",
            V::Arr(
                9,
                vec![
                    V::Arr(4, vec![V::U32(1), V::U32(2)]),
                    V::Arr(8, vec![s("x")]),
                ],
            ),
        );
    g.tensors = vec![
        tensor("token_embd.weight", &[HIDDEN, VOCAB], 8, embd_data()),
        tensor(
            "output_norm.weight",
            &[HIDDEN],
            0,
            f32_data(HIDDEN as usize),
        ),
        tensor("blk.0.attn_q.bias", &[HIDDEN], 1, f16_data(HIDDEN as usize)),
        tensor("blk.0.ffn_up.weight", &[HIDDEN, 2], 12, q4_k_data(2)),
    ];
    g
}

// ---------------------------------------------------------------------------------------------
// Assertions.

#[track_caller]
fn expect_format(r: Result<GgufFile, LoadError>, needle: &str) {
    match r {
        Err(e @ LoadError::Format { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
            assert!(
                msg.contains("tiny.gguf"),
                "message {msg:?} does not name the file"
            );
        }
        Err(e) => panic!("expected a Format error containing {needle:?}, got {e:?}"),
        Ok(_) => panic!("expected a Format error containing {needle:?}, got Ok"),
    }
}

#[track_caller]
fn expect_tensor<T: std::fmt::Debug>(r: Result<T, LoadError>, tensor_name: &str, needle: &str) {
    match r {
        Err(LoadError::Tensor {
            path,
            tensor,
            problem,
        }) => {
            assert_eq!(tensor, tensor_name);
            assert!(
                problem.contains(needle),
                "problem {problem:?} lacks {needle:?}"
            );
            assert_eq!(path, Path::new("tiny.gguf"));
        }
        other => {
            panic!("expected a Tensor error on {tensor_name} containing {needle:?}, got {other:?}")
        }
    }
}

#[track_caller]
fn expect_config<T: std::fmt::Debug>(r: Result<T, LoadError>, needle: &str) {
    match r {
        Err(e @ LoadError::Config { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
        }
        other => panic!("expected a Config error containing {needle:?}, got {other:?}"),
    }
}

/// Everything a caller might do with a file; must not panic whatever the bytes.
fn exercise(bytes: Vec<u8>) -> Result<(), LoadError> {
    let g = GgufFile::from_bytes(Path::new("tiny.gguf"), bytes)?;
    let _ = g.config();
    let _ = g.tokenizer_spec();
    for m in g.tensors() {
        let v = g.load_f32(&m.name)?;
        assert_eq!(v.len(), m.n_elements());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The valid file.

#[test]
fn valid_file_parses() {
    let g = valid().open().unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_start() % 32, 0);
    assert_eq!(g.get("test.u8"), Some(&GgufValue::U8(200)));
    assert_eq!(g.get("test.i8"), Some(&GgufValue::I8(-100)));
    assert_eq!(g.get("test.u16"), Some(&GgufValue::U16(60000)));
    assert_eq!(g.get("test.i16"), Some(&GgufValue::I16(-30000)));
    assert_eq!(g.get("qwen2.block_count"), Some(&GgufValue::U32(1)));
    assert_eq!(g.get("test.i32"), Some(&GgufValue::I32(-7)));
    assert_eq!(g.get("qwen2.rope.freq_base"), Some(&GgufValue::F32(1e6)));
    assert_eq!(g.get("test.bool"), Some(&GgufValue::Bool(true)));
    assert_eq!(g.get("general.name").and_then(|v| v.as_str()), Some("tiny"));
    assert_eq!(g.get("test.u64"), Some(&GgufValue::U64(u64::MAX)));
    assert_eq!(g.get("test.i64"), Some(&GgufValue::I64(i64::MIN)));
    assert_eq!(g.get("test.f64"), Some(&GgufValue::F64(-0.125)));
    assert_eq!(
        g.get("test.nested"),
        Some(&GgufValue::Array(vec![
            GgufValue::Array(vec![GgufValue::U32(1), GgufValue::U32(2)]),
            GgufValue::Array(vec![GgufValue::String("x".into())]),
        ]))
    );
    assert_eq!(g.get("test.i32").unwrap().as_u64(), None);
    assert_eq!(g.metadata().len(), valid().kv.len());

    let infos = g.tensor_infos();
    assert_eq!(infos.len(), 4);
    assert_eq!(infos[0].name, "token_embd.weight");
    assert_eq!(infos[0].dims, vec![HIDDEN, VOCAB]);
    assert_eq!(infos[0].ggml_type, GgmlType::Q8_0);
    assert_eq!(infos[0].offset, 0);
    assert_eq!(infos[0].n_bytes, VOCAB * HIDDEN / 32 * 34);
    assert_eq!(infos[3].ggml_type, GgmlType::Q4_K);

    let metas = g.tensors();
    let names: Vec<&str> = metas.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "model.layers.0.self_attn.q_proj.bias",
            "model.layers.0.mlp.up_proj.weight",
        ]
    );
    assert_eq!(metas[0].shape, vec![VOCAB as usize, HIDDEN as usize]);
    assert_eq!(metas[0].dtype, "Q8_0");
    assert_eq!(metas[1].shape, vec![HIDDEN as usize]);
    assert_eq!(metas[3].shape, vec![2, HIDDEN as usize]);
    assert_eq!(metas[3].n_bytes, 288);
}

#[test]
fn valid_file_dequantizes_row_major() {
    let g = valid().open().unwrap();

    let embd = g.load_f32("model.embed_tokens.weight").unwrap();
    assert_eq!(embd.len(), (VOCAB * HIDDEN) as usize);
    for r in 0..VOCAB {
        for c in 0..HIDDEN {
            let want = q8_0_value(r, c / 32, c % 32) as f32 * 0.5;
            assert_eq!(embd[(r * HIDDEN + c) as usize], want, "row {r} col {c}");
        }
    }

    let norm = g.load_f32("model.norm.weight").unwrap();
    assert_eq!(norm, (0..256).map(|i| i as f32 * 0.25).collect::<Vec<_>>());

    let bias = g.load_f32("model.layers.0.self_attn.q_proj.bias").unwrap();
    assert_eq!(bias, (0..256).map(|i| i as f32 - 128.0).collect::<Vec<_>>());

    let up = g.load_f32("model.layers.0.mlp.up_proj.weight").unwrap();
    assert_eq!(up.len(), 512);
    for r in 0..2 {
        for grp in 0..4 {
            for l in 0..32 {
                let byte = q4_k_nibbles(r, 32 * grp + l);
                assert_eq!(up[r * 256 + 64 * grp + l], (byte & 0xF) as f32);
                assert_eq!(up[r * 256 + 64 * grp + 32 + l], (byte >> 4) as f32);
            }
        }
    }

    expect_tensor(
        g.load_f32("lm_head.weight"),
        "lm_head.weight",
        "no such tensor",
    );
}

#[test]
fn valid_file_config_and_tokenizer() {
    let g = valid().open().unwrap();
    let c = g.config().unwrap();
    assert_eq!(c.hidden_size, 256);
    assert_eq!(c.intermediate_size, 512);
    assert_eq!(c.num_hidden_layers, 1);
    assert_eq!(c.num_attention_heads, 4);
    assert_eq!(c.num_key_value_heads, 2);
    assert_eq!(c.head_dim, 64);
    assert_eq!(c.vocab_size, 8);
    assert_eq!(c.max_position_embeddings, 128);
    assert_eq!(c.rope_theta, 1e6);
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert!(c.tie_word_embeddings, "no output.weight: tied");
    assert_eq!(c.bos_token_id, Some(3));
    assert_eq!(c.eos_token_ids, vec![5, 3]);

    let t = g.tokenizer_spec().unwrap();
    assert_eq!(
        t.vocab,
        vec![("a".into(), 0), ("b".into(), 1), ("ab".into(), 2)]
    );
    assert_eq!(t.merges, vec![("a".into(), "b".into())]);
    let added: Vec<(u32, &str, bool)> = t
        .added
        .iter()
        .map(|a| (a.id, a.content.as_str(), a.special))
        .collect();
    assert_eq!(
        added,
        [
            (3, "<|endoftext|>", true),
            (4, "<|im_start|>", true),
            (5, "<|im_end|>", true),
            (6, "<tool_call>", false),
        ]
    );
    assert!(t.nfc);

    // With an lm_head the embeddings are not tied.
    let mut v = valid();
    v.tensors
        .push(tensor("output.weight", &[HIDDEN, VOCAB], 8, embd_data()));
    assert!(!v.open().unwrap().config().unwrap().tie_word_embeddings);
}

#[test]
fn version_2_and_other_alignments() {
    let mut v = valid();
    v.version = 2;
    assert_eq!(v.open().unwrap().version(), 2);

    let mut v = valid();
    v.alignment = 64;
    v.set("general.alignment", V::U32(64));
    let g = v.open().unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_start() % 64, 0);
    assert_eq!(g.tensor_infos()[1].offset % 64, 0);
    exercise(v.build()).unwrap();
}

#[test]
fn open_maps_the_file_and_reports_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, valid().build()).unwrap();
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(
        g.load_f32("model.norm.weight").unwrap(),
        valid()
            .open()
            .unwrap()
            .load_f32("model.norm.weight")
            .unwrap()
    );
    assert_eq!(TensorSource::path(&g), path.as_path());

    let missing = dir.path().join("missing.gguf");
    match GgufFile::open(&missing) {
        Err(e @ LoadError::Io { .. }) => assert!(e.to_string().contains("missing.gguf")),
        other => panic!("expected Io, got {other:?}"),
    }

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    match GgufFile::open(&empty) {
        Err(e @ LoadError::Format { .. }) => assert!(e.to_string().contains("too short")),
        other => panic!("expected Format, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Header corruptions.

#[test]
fn bad_magic() {
    let mut v = valid();
    v.magic = *b"GGML";
    expect_format(v.open(), "bad magic");
    expect_format(
        GgufFile::from_bytes(Path::new("tiny.gguf"), b"GG".to_vec()),
        "too short",
    );
}

#[test]
fn unsupported_versions() {
    let mut v = valid();
    v.version = 1;
    expect_format(v.open(), "version 1");
    v.version = 4;
    expect_format(v.open(), "unsupported GGUF version 4");
    v.version = 3u32.swap_bytes();
    expect_format(v.open(), "big-endian");
}

#[test]
fn truncated_header() {
    let bytes = valid().build();
    // Inside the version, the counts, a key, a value, a tensor info.
    for cut in [6, 12, 20, 30, 200, 700] {
        expect_format(
            GgufFile::from_bytes(Path::new("tiny.gguf"), bytes[..cut].to_vec()),
            "truncated",
        );
    }
}

#[test]
fn string_length_past_eof() {
    let mut v = valid();
    // A string whose length runs past the end of the file.
    let mut payload = Vec::new();
    payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
    payload.extend_from_slice(b"abc");
    v.set("general.name", V::Raw(8, payload));
    expect_format(v.open(), "metadata `general.name`");
    expect_format(v.open(), "truncated");

    // The same for a key.
    let mut bytes = valid().build();
    bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_format(
        GgufFile::from_bytes(Path::new("tiny.gguf"), bytes),
        "key of metadata entry #0",
    );
}

#[test]
fn absurd_counts() {
    let mut v = valid();
    let mut payload = 0u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&u64::MAX.to_le_bytes());
    v.set("general.name", V::Raw(9, payload));
    expect_format(v.open(), "cannot fit");

    let mut v = valid();
    let mut payload = 8u32.to_le_bytes().to_vec(); // strings: at least 8 bytes each
    payload.extend_from_slice(&(1u64 << 50).to_le_bytes());
    v.set("general.name", V::Raw(9, payload));
    expect_format(
        v.open(),
        "array of 1125899906842624 string values cannot fit",
    );

    let mut v = valid();
    v.n_kv = Some(u64::MAX);
    expect_format(v.open(), "metadata count");

    let mut v = valid();
    v.n_tensors = Some(1 << 40);
    expect_format(v.open(), "tensor count");

    // More entries than written: the reader runs into the tensor infos and fails somewhere,
    // but cleanly.
    let mut v = valid();
    v.n_kv = Some(v.kv.len() as u64 + 3);
    assert!(matches!(v.open(), Err(LoadError::Format { .. })));
}

#[test]
fn bad_metadata_values() {
    let mut v = valid();
    v.set("test.weird", V::Raw(13, vec![0; 8]));
    expect_format(v.open(), "unknown value type 13");

    let mut v = valid();
    v.set(
        "test.weird",
        V::Raw(9, [77u32.to_le_bytes(), [0; 4]].concat()),
    );
    expect_format(v.open(), "unknown array element type 77");

    let mut v = valid();
    v.set("test.bool", V::Raw(7, vec![2]));
    expect_format(v.open(), "invalid bool");

    let mut v = valid();
    v.set(
        "test.utf8",
        V::Raw(8, [2u64.to_le_bytes().to_vec(), vec![0xC3, 0x28]].concat()),
    );
    expect_format(v.open(), "UTF-8");

    let mut v = valid();
    v.kv.push((vec![0xFF, 0xFE], V::U8(1)));
    expect_format(v.open(), "UTF-8");

    let mut v = valid();
    v.kv.push((b"general.name".to_vec(), s("again")));
    expect_format(v.open(), "duplicate metadata key `general.name`");

    // Arrays nested 100 deep.
    let mut deep = V::U8(1);
    for _ in 0..100 {
        deep = V::Arr(deep.ty(), vec![deep]);
    }
    let mut v = valid();
    v.set("test.deep", deep);
    expect_format(v.open(), "nested deeper");
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48] {
        let mut v = valid();
        v.set("general.alignment", V::U32(a));
        expect_format(v.open(), "general.alignment");
    }
    let mut v = valid();
    v.set("general.alignment", s("32"));
    expect_format(v.open(), "general.alignment");
}

// ---------------------------------------------------------------------------------------------
// Tensor corruptions.

#[test]
fn absurd_n_dims() {
    let mut v = valid();
    v.tensor_mut("output_norm.weight").n_dims = Some(u32::MAX);
    expect_tensor(v.open(), "output_norm.weight", "n_dims 4294967295");

    let mut v = valid();
    v.tensor_mut("output_norm.weight").dims = vec![256, 1, 1, 1, 1];
    expect_tensor(v.open(), "output_norm.weight", "n_dims 5");

    let mut v = valid();
    v.tensor_mut("output_norm.weight").dims = vec![];
    expect_tensor(v.open(), "output_norm.weight", "n_dims 0");
}

#[test]
fn duplicate_tensor_names() {
    let mut v = valid();
    let dup = v.tensors[1].clone();
    v.tensors.push(dup);
    expect_tensor(v.open(), "output_norm.weight", "duplicate tensor name");
}

#[test]
fn unknown_tensor_name() {
    let mut v = valid();
    v.tensors
        .push(tensor("rope_freqs.weight", &[32], 0, f32_data(32)));
    expect_tensor(v.open(), "rope_freqs.weight", "unknown tensor name");
}

#[test]
fn tensor_data_past_eof() {
    let mut v = valid();
    v.tensor_mut("output_norm.weight").offset = Some(1 << 20);
    expect_tensor(v.open(), "output_norm.weight", "past the end of the file");

    // Offset + size overflowing u64.
    let mut v = valid();
    v.tensor_mut("output_norm.weight").offset = Some(u64::MAX - 31);
    expect_tensor(v.open(), "output_norm.weight", "past the end of the file");

    // The last tensor one byte short.
    let mut bytes = valid().build();
    bytes.pop();
    expect_tensor(
        GgufFile::from_bytes(Path::new("tiny.gguf"), bytes),
        "blk.0.ffn_up.weight",
        "past the end of the file",
    );

    // Dimensions claiming more data than is there.
    let mut v = valid();
    v.tensor_mut("blk.0.ffn_up.weight").dims = vec![HIDDEN, 1 << 20];
    expect_tensor(v.open(), "blk.0.ffn_up.weight", "past the end of the file");
}

#[test]
fn misaligned_offset() {
    let mut v = valid();
    v.tensor_mut("output_norm.weight").offset = Some(2176 + 4);
    expect_tensor(
        v.open(),
        "output_norm.weight",
        "not a multiple of the alignment 32",
    );
}

#[test]
fn unknown_ggml_type() {
    for id in [4u32, 31, 99, u32::MAX] {
        let mut v = valid();
        v.tensor_mut("output_norm.weight").ty = id;
        expect_tensor(
            v.open(),
            "output_norm.weight",
            &format!("unknown ggml type id {id}"),
        );
    }
}

#[test]
fn unsupported_type_fails_at_load() {
    // IQ2_XXS: a known layout (256 values in 66 bytes) that qwenc does not dequantize.
    let mut v = valid();
    v.tensors
        .push(tensor("blk.0.attn_k.weight", &[HIDDEN, 1], 16, vec![0; 66]));
    let g = v.open().unwrap();
    let meta = g
        .tensors()
        .into_iter()
        .find(|m| m.name == "model.layers.0.self_attn.k_proj.weight")
        .unwrap();
    assert_eq!(meta.dtype, "IQ2_XXS");
    assert_eq!(meta.n_bytes, 66);
    expect_tensor(
        g.load_f32("model.layers.0.self_attn.k_proj.weight"),
        "model.layers.0.self_attn.k_proj.weight",
        "IQ2_XXS",
    );
    // The other tensors still load.
    g.load_f32("model.norm.weight").unwrap();
}

#[test]
fn row_not_a_whole_number_of_blocks() {
    let mut v = valid();
    let t = v.tensor_mut("token_embd.weight");
    t.dims = vec![40, 1];
    t.data.truncate(34 * 2);
    expect_tensor(
        v.open(),
        "token_embd.weight",
        "row length 40 is not a multiple of the Q8_0 block size 32",
    );

    let mut v = valid();
    v.tensor_mut("blk.0.ffn_up.weight").dims = vec![128, 4];
    expect_tensor(v.open(), "blk.0.ffn_up.weight", "Q4_K block size 256");
}

#[test]
fn dims_product_overflow() {
    let mut v = valid();
    v.tensor_mut("output_norm.weight").dims = vec![1 << 32, 1 << 32];
    expect_tensor(v.open(), "output_norm.weight", "overflow");

    let mut v = valid();
    v.tensor_mut("output_norm.weight").dims = vec![u64::MAX, 1];
    expect_tensor(v.open(), "output_norm.weight", "overflow");

    // The element count fits in 63 bits but the byte count (8 bytes each) does not.
    let mut v = valid();
    let t = v.tensor_mut("output_norm.weight");
    t.ty = 28; // F64
    t.dims = vec![1 << 31, 1 << 31];
    expect_tensor(
        v.open(),
        "output_norm.weight",
        "size in bytes of 4611686018427387904 F64 elements overflows",
    );
}

// ---------------------------------------------------------------------------------------------
// Config and tokenizer metadata.

#[test]
fn config_errors() {
    let mut v = valid();
    v.set("general.architecture", s("llama"));
    expect_config(
        v.open().unwrap().config(),
        "unsupported architecture `llama`",
    );

    let mut v = valid();
    v.remove("general.architecture");
    expect_config(
        v.open().unwrap().config(),
        "missing metadata `general.architecture`",
    );

    let mut v = valid();
    v.remove("qwen2.block_count");
    expect_config(v.open().unwrap().config(), "`qwen2.block_count`");

    let mut v = valid();
    v.set("qwen2.context_length", s("long"));
    expect_config(
        v.open().unwrap().config(),
        "`qwen2.context_length` must be a non-negative integer, got a string",
    );

    let mut v = valid();
    v.set("qwen2.attention.head_count_kv", V::U32(3));
    expect_config(
        v.open().unwrap().config(),
        "not a multiple of num_key_value_heads",
    );

    let mut v = valid();
    v.set("qwen2.rope.scaling.type", s("yarn"));
    expect_config(v.open().unwrap().config(), "yarn");

    let mut v = valid();
    v.remove("qwen2.rope.freq_base");
    expect_config(v.open().unwrap().config(), "qwen2.rope.freq_base");

    let mut v = valid();
    v.set("tokenizer.ggml.eos_token_id", V::U32(1000));
    expect_config(v.open().unwrap().config(), "eos token id 1000");

    let mut v = valid();
    v.tensors.remove(0);
    expect_config(v.open().unwrap().config(), "token_embd.weight");

    let mut v = valid();
    v.set("qwen2.embedding_length", V::U32(128));
    expect_config(v.open().unwrap().config(), "token_embd.weight");
}

#[test]
fn tokenizer_errors() {
    let mut v = valid();
    v.set("tokenizer.ggml.model", s("llama"));
    expect_config(v.open().unwrap().tokenizer_spec(), "tokenizer.ggml.model");

    let mut v = valid();
    v.set("tokenizer.ggml.pre", s("llama-bpe"));
    expect_config(
        v.open().unwrap().tokenizer_spec(),
        "unsupported pre-tokenizer `llama-bpe`",
    );

    let mut v = valid();
    v.remove("tokenizer.ggml.pre");
    expect_config(v.open().unwrap().tokenizer_spec(), "tokenizer.ggml.pre");

    let mut v = valid();
    v.set("tokenizer.ggml.token_type", V::Arr(5, vec![V::I32(1); 3]));
    expect_config(v.open().unwrap().tokenizer_spec(), "has 3 entries");

    let mut v = valid();
    v.set(
        "tokenizer.ggml.token_type",
        V::Arr(5, vec![V::I32(9); TOKENS.len()]),
    );
    expect_config(v.open().unwrap().tokenizer_spec(), "unknown type 9");

    let mut v = valid();
    v.set("tokenizer.ggml.tokens", V::Arr(4, vec![V::U32(1); 8]));
    expect_config(v.open().unwrap().tokenizer_spec(), "tokenizer.ggml.tokens");

    let mut v = valid();
    v.set(
        "tokenizer.ggml.tokens",
        strs(&["a", "b", "a", "x", "y", "z", "w", "v"]),
    );
    expect_config(v.open().unwrap().tokenizer_spec(), "appears twice");

    for bad in ["ab", "a  b", " a", "a ", "a b c"] {
        let mut v = valid();
        v.set("tokenizer.ggml.merges", strs(&["a b", bad]));
        expect_config(v.open().unwrap().tokenizer_spec(), "merge #1");
    }
}

// ---------------------------------------------------------------------------------------------
// No panics, whatever the bytes.

#[test]
fn truncation_at_every_byte() {
    let (bytes, data_end) = valid().build_with_end();
    assert_eq!(bytes.len() as u64, data_end);
    exercise(bytes.clone()).unwrap();
    for cut in 0..bytes.len() {
        let r = exercise(bytes[..cut].to_vec());
        assert!(
            r.is_err(),
            "cut at {cut} of {} bytes was accepted",
            bytes.len()
        );
    }
    // A file whose last tensor is followed by padding may lose the padding.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0; 31]);
    for cut in bytes.len()..padded.len() {
        exercise(padded[..cut].to_vec()).unwrap();
    }
}

#[test]
fn byte_flips_never_panic() {
    let bytes = valid().build();
    let header_end = GgufFile::from_bytes(Path::new("tiny.gguf"), bytes.clone())
        .unwrap()
        .data_start() as usize;
    let mut accepted = 0;
    for i in 0..header_end {
        for flip in [0x00u8, 0xFF, 0x80, 0x7F, bytes[i] ^ 0x01, bytes[i] ^ 0x40] {
            let mut b = bytes.clone();
            b[i] = flip;
            if exercise(b).is_ok() {
                accepted += 1;
            }
        }
    }
    // Flips inside string contents or values are harmless; most others are refused.
    assert!(accepted > 0);
}
