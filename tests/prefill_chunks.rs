//! Long inputs run in passes of `prefill_chunk()` tokens (generated `forward`). With a chunk
//! of 5 tokens, a 12-token input (passes of 5, 5 and 2) must give the logits of feeding the
//! tokens one at a time, for every compiled variant, and `Last` the last row of `All`. Its
//! own test binary: the chunk size is read once per process.

mod common;

use common::{runnable, PROMPT};
use qwenc_runtime::model::{prefill_chunk, KvCache, LogitsFor};

#[test]
fn chunked_passes_equal_token_by_token() {
    // Before any forward pass reads it; the only test of this binary.
    std::env::set_var("QWENC_PREFILL_CHUNK", "5");
    assert_eq!(prefill_chunk(), 5);
    let mut checked = 0;
    for (v, weights) in runnable(qwenc::variants::ALL) {
        let w = weights.bytes();
        let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
        let all = (v.forward)(w, &mut cache, &PROMPT, LogitsFor::All).unwrap();
        assert_eq!(cache.len, PROMPT.len());
        let vocab = all.len() / PROMPT.len();
        assert_eq!(vocab, v.vocab);
        let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
        let last = (v.forward)(w, &mut cache, &PROMPT, LogitsFor::Last).unwrap();
        assert_eq!(last, all[(PROMPT.len() - 1) * vocab..], "{}", v.schemes);
        let mut cache = KvCache::new(v.layers, 64, v.kv_dim);
        for (t, &id) in PROMPT.iter().enumerate() {
            let step = (v.forward)(w, &mut cache, &[id], LogitsFor::Last).unwrap();
            for (a, b) in step.iter().zip(&all[t * vocab..][..vocab]) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{} position {t}: {a} vs {b}",
                    v.schemes
                );
            }
        }
        checked += 1;
    }
    assert!(checked > 0, "no variant runs on this CPU");
}
