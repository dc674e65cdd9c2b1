//! Behaviour pinned bit for bit: every compiled tiny-model variant (all schemes, every backend
//! this machine runs, the mixed builds) on fixed prompts, hashed over the exact bits of its
//! logits, against `tests/logit_hashes.txt`.
//!
//! The twin tests compare kernels with their plain-Rust twins; a change to both would pass
//! them. This test catches any change of the numbers themselves, so that a refactor of the
//! emitters can show that it changed nothing. A deliberate change of the arithmetic re-records
//! the file with `QWENC_BLESS=1` (and says why in its commit).
//!
//! Each variant runs three ways: a 12-token prefill with logits for every position, the same
//! tokens one at a time, and a 40-token prefill (passes of 16 and of the remainder) followed by
//! two decode steps. A (backend, schemes) pair the file has no line for is reported as
//! unrecorded; a recorded one that differs fails.

#![cfg(qwenc_tiny)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{runnable, PROMPT};
use qwenc::Variant;
use qwenc_runtime::model::{KvCache, LogitsFor};

/// FNV-1a over the little-endian bits of every float.
fn hash(values: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn logits_of(v: &Variant, w: &[u8]) -> Vec<f32> {
    let mut all = Vec::new();
    // One prefill with every position's logits.
    let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
    all.extend((v.forward)(w, &mut cache, &PROMPT, LogitsFor::All).unwrap());
    // The same tokens one at a time.
    let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
    for &t in &PROMPT {
        all.extend((v.forward)(w, &mut cache, &[t], LogitsFor::Last).unwrap());
    }
    // A longer prefill (the 16-token passes and their remainder), then two decode steps.
    let long: Vec<u32> = (0..40u32).map(|i| (i * 37 + 11) % v.vocab as u32).collect();
    let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
    all.extend((v.forward)(w, &mut cache, &long, LogitsFor::All).unwrap());
    for t in [5u32, 9] {
        all.extend((v.forward)(w, &mut cache, &[t], LogitsFor::Last).unwrap());
    }
    all
}

fn recorded_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/logit_hashes.txt")
}

/// `backend<TAB>schemes<TAB>hash` lines.
fn read_recorded() -> BTreeMap<(String, String), String> {
    let text = std::fs::read_to_string(recorded_path()).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split('\t');
            let (b, s, h) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            ((b.to_string(), s.to_string()), h.to_string())
        })
        .collect()
}

#[test]
fn logits_are_bit_identical_to_the_recorded_ones() {
    let mut recorded = read_recorded();
    let bless = std::env::var_os("QWENC_BLESS").is_some_and(|v| v == "1");
    let (mut checked, mut differ, mut unrecorded) = (0, Vec::new(), Vec::new());
    for (v, weights) in runnable(qwenc::variants::ALL.iter().chain(qwenc::variants::MIXED)) {
        let got = format!("{:016x}", hash(&logits_of(v, weights.bytes())));
        let key = (v.backend.to_string(), v.schemes.to_string());
        eprintln!("{}\t{}\t{got}", key.0, key.1);
        match recorded.get(&key) {
            Some(want) if *want == got => checked += 1,
            Some(want) => differ.push(format!("{key:?}: recorded {want}, now {got}")),
            None => unrecorded.push(format!("{key:?}")),
        }
        if bless {
            recorded.insert(key, got);
        }
    }
    if bless {
        let mut text = String::from(
            "# tests/logit_hashes.rs: backend, schemes, FNV-1a of the logits' bits. Re-record with QWENC_BLESS=1.\n",
        );
        for ((b, s), h) in &recorded {
            text += &format!("{b}\t{s}\t{h}\n");
        }
        std::fs::write(recorded_path(), text).unwrap();
        return;
    }
    for u in &unrecorded {
        eprintln!("UNRECORDED {u} (QWENC_BLESS=1 records it)");
    }
    assert!(differ.is_empty(), "logits changed:\n{}", differ.join("\n"));
    assert!(
        checked > 0,
        "no variant was checked against a recorded hash"
    );
    eprintln!("{checked} variants bit-identical to the recorded logits");
}
