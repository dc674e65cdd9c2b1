//! Speculative decoding on every compiled tiny-model variant: greedy generation gives the
//! same tokens with and without it, and the KV cache it leaves gives the same next logits,
//! bit for bit (the rollback leaves nothing of the rejected drafts behind). Prompts with and
//! without repeated n-grams; the run as a whole must both accept and reject drafts, so the
//! test cannot pass without exercising speculation. A generation ending at max_tokens, at a
//! callback break and at a stop token inside a verification pass ends exactly as plain
//! decoding does.

#![cfg(qwenc_tiny)]

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Mutex;

use common::{runnable, PROMPT};
use qwenc::Variant;
use qwenc_runtime::generate::{generate, GenerateOptions, GenerateStats, StopReason};
use qwenc_runtime::model::{ForwardError, KvCache, LogitsFor, Model, ModelInfo};
use qwenc_runtime::tokenizer::Tokenizer;
use qwenc_runtime::weights::Weights;

/// One compiled variant behind the `Model` trait (the tokenizer and info of the executable's
/// own model: every variant compiles the same tiny checkpoint), logging each pass's size.
struct VariantModel<'a> {
    variant: &'static Variant,
    weights: Weights,
    base: &'a qwenc::CompiledModel,
    passes: Mutex<Vec<usize>>,
}

impl Model for VariantModel<'_> {
    fn info(&self) -> &ModelInfo {
        self.base.info()
    }
    fn tokenizer(&self) -> &Tokenizer {
        self.base.tokenizer()
    }
    fn new_cache(&self, capacity: usize) -> KvCache {
        let capacity = capacity.min(self.info().max_context);
        KvCache::new(self.variant.layers, capacity, self.variant.kv_dim)
    }
    fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        logits: LogitsFor,
    ) -> Result<Vec<f32>, ForwardError> {
        self.passes.lock().unwrap().push(tokens.len());
        (self.variant.forward)(self.weights.bytes(), cache, tokens, logits)
    }
}

fn base_model() -> qwenc::CompiledModel {
    use qwenc::generated as g;
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_qwen"));
    let weights = Weights::open(
        &exe.with_file_name("qwen.weights"),
        g::WEIGHTS_LEN,
        g::WEIGHTS_HASH,
    )
    .unwrap();
    qwenc::CompiledModel::with_weights(weights).unwrap()
}

fn models(base: &qwenc::CompiledModel) -> Vec<VariantModel<'_>> {
    runnable(qwenc::variants::ALL.iter().chain(qwenc::variants::MIXED))
        .into_iter()
        .map(|(variant, weights)| VariantModel {
            variant,
            weights,
            base,
            passes: Mutex::new(Vec::new()),
        })
        .collect()
}

fn prompts(vocab: u32) -> Vec<(&'static str, Vec<u32>)> {
    let repeated: Vec<u32> = PROMPT
        .iter()
        .chain(&PROMPT)
        .chain(&PROMPT[..7])
        .copied()
        .collect();
    let distinct: Vec<u32> = (0..20u32).map(|i| (i * 53 + 17) % vocab).collect();
    vec![
        ("the test prompt", PROMPT.to_vec()),
        ("repeated", repeated),
        ("no repeats", distinct),
    ]
}

struct Run {
    ids: Vec<u32>,
    stats: GenerateStats,
    /// The logits after the last generated id, run on the cache the call left.
    next: Vec<u32>,
    /// For each id: the size of the pass its logits came from (0: the prefill), its row.
    rows: Vec<(usize, usize)>,
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Generates on a fresh cache of exactly `prompt + max_tokens` positions (one more for the
/// check of the next logits); `flow(n)` answers the n-th id.
fn run(
    m: &VariantModel<'_>,
    prompt: &[u32],
    o: &GenerateOptions,
    mut flow: impl FnMut(usize) -> ControlFlow<()>,
) -> Run {
    m.passes.lock().unwrap().clear();
    let mut cache = m.new_cache(prompt.len() + o.max_tokens + 1);
    let mut ids = Vec::new();
    let mut seen = Vec::new();
    let stats = generate(m, &mut cache, prompt, o, &mut |id| {
        seen.push(m.passes.lock().unwrap().len());
        ids.push(id);
        flow(ids.len())
    })
    .unwrap();
    assert_eq!(
        cache.len,
        prompt.len() + ids.len() - 1,
        "the cache invariant"
    );
    let passes = m.passes.lock().unwrap().clone();
    let rows = seen
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let size = if count <= 1 { 0 } else { passes[count - 1] };
            let row = seen[..i].iter().rev().take_while(|&&c| c == count).count();
            (size, row)
        })
        .collect();
    let last = *ids.last().unwrap();
    let next = bits(&m.forward(&mut cache, &[last], LogitsFor::Last).unwrap());
    Run {
        ids,
        stats,
        next,
        rows,
    }
}

fn go(_: usize) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn opts(max_tokens: usize, ignore_eos: bool, speculate: bool) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ignore_eos,
        speculate,
        ..GenerateOptions::default()
    }
}

#[test]
fn greedy_tokens_are_identical_in_every_variant() {
    let base = base_model();
    let (mut drafted, mut accepted, mut runs) = (0, 0, 0);
    for m in models(&base) {
        let name = format!("{} ({})", m.variant.schemes, m.variant.backend);
        for (what, prompt) in prompts(m.variant.vocab as u32) {
            for ignore_eos in [false, true] {
                let max = 200 - prompt.len();
                let plain = run(&m, &prompt, &opts(max, ignore_eos, false), go);
                let spec = run(&m, &prompt, &opts(max, ignore_eos, true), go);
                assert_eq!(spec.ids, plain.ids, "{name}, {what}");
                assert_eq!(spec.stats.stop, plain.stats.stop, "{name}, {what}");
                assert!(
                    spec.next == plain.next,
                    "{name}, {what}: the cache after speculation gives other logits"
                );
                assert_eq!(plain.stats.verify_passes, 0);
                assert!(spec.rows.iter().all(|&(size, _)| size <= 16));
                let s = &spec.stats;
                assert_eq!(s.decode_passes, s.decode_tokens - s.accepted_tokens);
                drafted += s.drafted_tokens;
                accepted += s.accepted_tokens;
                runs += 1;
            }
        }
    }
    eprintln!("{runs} runs: {accepted} of {drafted} drafted tokens accepted");
    assert!(runs > 0);
    assert!(
        accepted > 0 && drafted > accepted,
        "drafts must be both accepted and rejected: {accepted} of {drafted}"
    );
}

#[test]
fn max_tokens_callback_and_stop_tokens_end_as_plain_decoding() {
    let base = base_model();
    let models = models(&base);
    let m = &models[0];
    // A prompt that quotes the model's own continuation, so drafts get accepted: of a few
    // such prompts, the one whose continuation accepts the most.
    let prompt = &(0..8u32)
        .map(|seed| {
            let p: Vec<u32> = (0..12u32).map(|i| (i * 97 + seed * 31 + 5) % 320).collect();
            let g = run(m, &p, &opts(40, true, false), go).ids;
            [&p[..], &g[..], &p[..]].concat()
        })
        .max_by_key(|p| run(m, p, &opts(60, true, true), go).stats.accepted_tokens)
        .unwrap();
    let full = run(m, prompt, &opts(60, true, false), go);
    let n_full = full.ids.len();
    let (mut broke_inside, mut stopped_inside) = (0, 0);
    let (mut broke_after_accepted, mut stopped_after_accepted) = (0, 0);

    for n in 1..=n_full {
        let plain = run(m, prompt, &opts(n, true, false), go);
        let spec = run(m, prompt, &opts(n, true, true), go);
        assert_eq!(spec.ids, full.ids[..n], "max_tokens {n}");
        assert_eq!(spec.stats.stop, StopReason::MaxTokens);
        assert!(spec.next == plain.next, "max_tokens {n}");
    }

    for n in 1..n_full {
        let at = |k| {
            if k == n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let plain = run(m, prompt, &opts(60, true, false), at);
        let spec = run(m, prompt, &opts(60, true, true), at);
        assert_eq!(spec.ids, full.ids[..n], "break at {n}");
        assert_eq!(spec.stats.stop, StopReason::Callback);
        assert!(spec.next == plain.next, "break at {n}");
        let (size, row) = spec.rows[n - 1];
        broke_inside += usize::from(row + 1 < size);
        broke_after_accepted += usize::from(row >= 1 && row + 1 < size);
    }

    for (n, &stop) in full.ids.iter().enumerate() {
        if full.ids[..n].contains(&stop) {
            continue;
        }
        let o = |speculate| GenerateOptions {
            extra_stop_ids: vec![stop],
            ..opts(60, false, speculate)
        };
        let plain = run(m, prompt, &o(false), go);
        let spec = run(m, prompt, &o(true), go);
        if plain.stats.stop != StopReason::Eos(stop) {
            continue; // the model's own eos came first
        }
        assert_eq!(spec.ids, full.ids[..=n], "stop at {n}");
        assert_eq!(spec.stats.stop, StopReason::Eos(stop));
        assert!(spec.next == plain.next, "stop at {n}");
        let (size, row) = spec.rows[n];
        stopped_inside += usize::from(row + 1 < size);
        stopped_after_accepted += usize::from(row >= 1 && row + 1 < size);
    }
    eprintln!(
        "{broke_inside} breaks ({broke_after_accepted} after an accepted draft) and \
         {stopped_inside} stops ({stopped_after_accepted}) inside a verification pass"
    );
    assert!(broke_inside > 0 && stopped_inside > 0);
    assert!(broke_after_accepted + stopped_after_accepted > 0);
}
