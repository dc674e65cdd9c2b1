//! The benchmark profiles on the fake model with a hand-driven clock: every forward pass
//! advances the clock by a known amount, so each figure can be checked exactly.

mod common;

use std::time::Duration;

use common::Hooked;
use qwenc_runtime::bench::memory::parse_vm_hwm;
use qwenc_runtime::bench::report::{Latency, Throughput};
use qwenc_runtime::bench::{
    run_aicas, run_optimum, synthetic_prompt, AicasOptions, AicasResult, BenchError, BenchReport,
    GenerationTiming, Instruments, ManualClock, OptimumOptions,
};
use qwenc_runtime::generate::GenerateError;
use qwenc_runtime::model::Model;
use qwenc_runtime::testing::FakeModel;

const A: f64 = 0.002; // per call
const B: f64 = 0.001; // per token

/// The fake model, with each forward pass taking `A + B × tokens` on `clock`.
fn ticking(clock: &ManualClock) -> Hooked<impl Fn(usize) + Sync + '_> {
    let (per_call, per_token) = (Duration::from_secs_f64(A), Duration::from_secs_f64(B));
    Hooked {
        inner: FakeModel::new(),
        before: move |tokens| clock.advance(per_call + per_token * tokens as u32),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {{
        let (a, b) = ($a, $b);
        assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
    }};
}

const PEAK: u64 = 455_000_000;

fn instruments(clock: &ManualClock) -> Instruments<'_> {
    Instruments {
        clock,
        peak_rss: &|| Some(PEAK),
    }
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| 40 + i % 50).collect()
}

#[test]
fn aicas_formulas() {
    let clock = ManualClock::new();
    let model = ticking(&clock);
    let (n, k, runs) = (20usize, 6usize, 3usize);
    let opts = AicasOptions {
        runs,
        new_tokens: k,
    };
    let mut lines = Vec::new();
    let r = run_aicas(&model, &prompt(n), &opts, instruments(&clock), &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    assert_eq!(lines.len(), 2 * runs, "{lines:?}");
    assert!(
        lines[0].starts_with("aicas prefill 1/3: 20 tokens in "),
        "{lines:?}"
    );

    // 3 forward passes over the prompt, then 3 generations of 1 prefill + (k-1) decode passes.
    assert_eq!(model.inner.forward_calls(), runs + runs * k);
    let prefill = A + B * n as f64;
    let step = A + B;
    let gen = prefill + (k - 1) as f64 * step;
    assert_eq!(r.forward_seconds.len(), runs);
    for &s in &r.forward_seconds {
        assert_close!(s, prefill);
    }
    for g in &r.generations {
        assert_close!(g.total, gen);
        assert_close!(g.first_token(), prefill);
        assert_eq!(g.token_times.len(), k);
    }
    assert_close!(r.prefill_tok_s(), n as f64 / prefill);
    assert_close!(r.decode_tok_s(), k as f64 / gen);
    assert_close!(r.decode_excl_prefill_tok_s(), 1.0 / step);
    assert_eq!(r.peak_rss_decode, Some(PEAK));

    let report = BenchReport::aicas(&r, &opts, model.info(), 2, "p.txt");
    let v = serde_json::to_value(&report).unwrap();
    let a = &v["report"]["aicas"];
    assert_close!(a["prefill_tok_s"].as_f64().unwrap(), n as f64 / prefill);
    assert_close!(a["decode_tok_s"].as_f64().unwrap(), k as f64 / gen);
    assert_close!(a["decode_excl_prefill_tok_s"].as_f64().unwrap(), 1.0 / step);
    assert_eq!(a["forward_seconds"].as_array().unwrap().len(), runs);
    assert_eq!(a["first_token_seconds"].as_array().unwrap().len(), runs);
    assert_eq!(a["peak_rss_mb"], 455.0);
    assert!(a["definitions"]["decode_tok_s"].is_string());
    // optimum-benchmark's targets, measured on the same runs.
    let rep = &v["report"];
    assert_close!(
        rep["prefill"]["throughput"]["value"].as_f64().unwrap(),
        n as f64 / prefill
    );
    assert_close!(
        rep["decode"]["throughput"]["value"].as_f64().unwrap(),
        1.0 / step
    );
    assert_close!(
        rep["decode"]["latency"]["mean"].as_f64().unwrap(),
        gen - prefill
    );
    assert_close!(rep["generate"]["latency"]["p50"].as_f64().unwrap(), gen);
    assert_eq!(
        rep["per_token"]["latency"]["count"],
        (runs * (k - 1)) as u64
    );
    assert_close!(rep["per_token"]["latency"]["mean"].as_f64().unwrap(), step);
    assert!(rep.get("first_generate").is_none());
    assert!(report.summary_line().starts_with("aicas: prefill "));
}

#[test]
fn optimum_formulas_and_loop() {
    let clock = ManualClock::new();
    let model = ticking(&clock);
    let (n, k) = (16usize, 5usize);
    let opts = OptimumOptions {
        warmup_runs: 2,
        iterations: 3,
        duration: Duration::ZERO,
        new_tokens: k,
    };
    let r = run_optimum(&model, &prompt(n), &opts, instruments(&clock), &mut |_| {}).unwrap();
    // Warm-up: one full generation and 2 of 2 tokens; then 3 of 1 token and 3 of k tokens.
    assert_eq!(model.inner.forward_calls(), k + 2 * 2 + 3 + 3 * k);
    let prefill = A + B * n as f64;
    let step = A + B;
    let gen = prefill + (k - 1) as f64 * step;
    assert_close!(r.first_generate.total, gen);
    assert_eq!(r.prefill_seconds.len(), 3);
    assert_eq!(r.generations.len(), 3);
    for &s in &r.prefill_seconds {
        assert_close!(s, prefill);
    }
    for d in r.decode_seconds() {
        assert_close!(d, (k - 1) as f64 * step);
    }
    assert_close!(r.prefill_tok_s(), n as f64 / prefill);
    assert_close!(r.decode_tok_s(), 1.0 / step);
    assert_eq!(r.per_token_seconds().len(), 3 * (k - 1));

    // At least `duration` too: 5.5 prefills' worth of time takes 6 prefills.
    let clock = ManualClock::new();
    let model = ticking(&clock);
    let opts = OptimumOptions {
        warmup_runs: 0,
        iterations: 2,
        duration: Duration::from_secs_f64(5.5 * prefill),
        new_tokens: k,
    };
    let r = run_optimum(&model, &prompt(n), &opts, instruments(&clock), &mut |_| {}).unwrap();
    assert_eq!(r.prefill_seconds.len(), 6);
    // A generation takes 0.018 + 4 × 0.003 = 0.030 s: 0.099 s takes 4 of them.
    assert_close!(gen, 0.030);
    assert_eq!(r.generations.len(), 4);

    let report = BenchReport::optimum(&r, &opts, model.info(), 1, "built-in text");
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["config"]["profile"], "optimum");
    assert_eq!(v["config"]["iterations"], 2);
    assert_eq!(v["config"]["warmup_runs"], 0);
    assert!(v["config"].get("runs").is_none());
    assert!(v["report"].get("aicas").is_none());
    assert_eq!(v["report"]["first_generate"]["latency"]["count"], 1);
    assert_close!(
        v["report"]["decode"]["throughput"]["value"]
            .as_f64()
            .unwrap(),
        1.0 / step
    );
    let line = report.summary_line();
    assert!(
        line.starts_with(&format!(
            "optimum: prefill {:.1} tok/s (median; ",
            n as f64 / prefill
        )),
        "{line}"
    );
    assert!(
        line.contains("16 prompt + 5 new tokens, 6 + 4 iterations"),
        "{line}"
    );
    assert!(line.ends_with(" · 1 thread · fake · f32"), "{line}");
}

#[test]
fn refusals() {
    let clock = ManualClock::new();
    let model = ticking(&clock);
    let inst = instruments(&clock);
    let aicas = |p: &[u32], runs, new_tokens| {
        run_aicas(
            &model,
            p,
            &AicasOptions { runs, new_tokens },
            inst,
            &mut |_| {},
        )
    };
    assert_eq!(
        aicas(&prompt(4), 1, 1).unwrap_err(),
        BenchError::TooFewNewTokens(1)
    );
    assert_eq!(
        aicas(&[], 1, 2).unwrap_err(),
        BenchError::Generate(GenerateError::EmptyPrompt)
    );
    assert!(matches!(
        aicas(&prompt(250), 1, 10).unwrap_err(),
        BenchError::Generate(GenerateError::ContextOverflow { .. })
    ));
    assert!(matches!(
        aicas(&prompt(4), 0, 2).unwrap_err(),
        BenchError::NothingToTime(_)
    ));
    assert!(matches!(
        aicas(&[1, 99_999], 1, 2).unwrap_err(),
        BenchError::Generate(GenerateError::TokenOutOfRange { index: 1, .. })
    ));
    assert_eq!(model.inner.forward_calls(), 0);
    let opts = OptimumOptions {
        iterations: 0,
        duration: Duration::ZERO,
        ..OptimumOptions::default()
    };
    assert!(matches!(
        run_optimum(&model, &prompt(4), &opts, inst, &mut |_| {}).unwrap_err(),
        BenchError::NothingToTime(_)
    ));
}

#[test]
fn summary_line_exact() {
    let info = FakeModel::new().info().clone();
    let result = AicasResult {
        prompt_tokens: 100,
        runs: 1,
        new_tokens: 50,
        forward_seconds: vec![0.25],
        generations: vec![GenerationTiming {
            total: 1.0,
            token_times: (0..50).map(|i| 0.02 + 0.02 * i as f64).collect(),
        }],
        peak_rss_prefill: Some(400_000_000),
        peak_rss_decode: Some(455_200_000),
    };
    let opts = AicasOptions {
        runs: 1,
        new_tokens: 50,
    };
    let report = BenchReport::aicas(&result, &opts, &info, 3, "p.txt");
    assert_eq!(
        report.summary_line(),
        "aicas: prefill 400.0 tok/s · decode 50.0 tok/s (incl. prefill) · 50.0 tok/s (excl.) · \
         100 prompt + 50 new tokens, 1 run · peak RSS 455 MB (weights 0 MB) · 3 threads · fake · f32"
    );
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["report"]["prefill"]["memory"]["max_ram"], 400.0);
    assert_eq!(v["report"]["decode"]["memory"]["unit"], "MB");
    assert_eq!(v["report"]["decode"]["memory"]["max_ram"], 455.2);
    let mut unknown = result.clone();
    unknown.peak_rss_prefill = None;
    unknown.peak_rss_decode = None;
    let report = BenchReport::aicas(&unknown, &opts, &info, 1, "p.txt");
    assert!(report.summary_line().contains("peak RSS n/a"));
    let v = serde_json::to_value(&report).unwrap();
    assert!(v["report"]["decode"]["memory"]["max_ram"].is_null());
}

#[test]
fn json_shape_matches_optimum_benchmark() {
    let info = FakeModel::new().info().clone();
    let result = AicasResult {
        prompt_tokens: 10,
        runs: 2,
        new_tokens: 3,
        forward_seconds: vec![0.1, 0.3],
        generations: vec![
            GenerationTiming {
                total: 0.5,
                token_times: vec![0.1, 0.2, 0.4],
            };
            2
        ],
        peak_rss_prefill: Some(1),
        peak_rss_decode: Some(2),
    };
    let opts = AicasOptions {
        runs: 2,
        new_tokens: 3,
    };
    let v = serde_json::to_value(BenchReport::aicas(&result, &opts, &info, 2, "p.txt")).unwrap();
    let config = &v["config"];
    assert_eq!(config["name"], "qwen bench");
    assert_eq!(config["profile"], "aicas");
    assert_eq!(config["model"], serde_json::to_value(&info).unwrap());
    assert_eq!(config["threads"], 2);
    assert_eq!(config["batch_size"], 1);
    assert_eq!(config["prompt"], "p.txt");
    assert_eq!(config["prompt_tokens"], 10);
    assert_eq!(config["new_tokens"], 3);
    assert_eq!(config["runs"], 2);
    for target in ["prefill", "decode", "generate", "per_token"] {
        let lat = &v["report"][target]["latency"];
        assert_eq!(lat["unit"], "s", "{target}");
        for key in [
            "values", "count", "total", "mean", "stdev", "stdev_", "min", "max", "p10", "p50",
            "p90", "p95", "p99",
        ] {
            assert!(lat.get(key).is_some(), "{target}.latency.{key}");
        }
    }
    for target in ["prefill", "decode", "generate"] {
        let t = &v["report"][target]["throughput"];
        assert_eq!(t["unit"], "tokens/s");
        for key in ["value", "p50", "min", "max"] {
            assert!(t[key].is_number(), "{target}.throughput.{key}");
        }
    }
    assert!(v["report"]["per_token"].get("throughput").is_none());
    let prefill = &v["report"]["prefill"];
    assert_eq!(prefill["latency"]["values"], serde_json::json!([0.1, 0.3]));
    assert_close!(prefill["latency"]["mean"].as_f64().unwrap(), 0.2);
    assert_close!(prefill["latency"]["stdev"].as_f64().unwrap(), 0.1);
    assert_close!(prefill["latency"]["stdev_"].as_f64().unwrap(), 50.0);
    assert_close!(prefill["throughput"]["value"].as_f64().unwrap(), 50.0);
    assert_close!(prefill["throughput"]["min"].as_f64().unwrap(), 10.0 / 0.3);
    assert_close!(prefill["throughput"]["max"].as_f64().unwrap(), 100.0);
    assert_eq!(v["report"]["decode"]["memory"]["max_ram"], 2e-6);
    // per-token: the steps after the first token.
    let per_token = &v["report"]["per_token"]["latency"]["values"];
    let per_token: Vec<f64> = serde_json::from_value(per_token.clone()).unwrap();
    assert_eq!(per_token.len(), 4);
    assert_close!(per_token[0], 0.1);
    assert_close!(per_token[1], 0.2);
}

#[test]
fn throughput_from_latency() {
    let lat = Latency::from_values(vec![2.0, 1.0, 4.0]);
    let t = Throughput::from_latency(&lat, 8);
    assert_close!(t.value, 8.0 / (7.0 / 3.0));
    assert_eq!((t.p50, t.min, t.max), (4.0, 2.0, 8.0));
    let none = Throughput::from_latency(&Latency::from_values(vec![]), 8);
    assert_eq!((none.value, none.p50), (0.0, 0.0));
}

#[test]
fn vm_hwm_parsing() {
    let status = "Name:\tqwen\nVmPeak:\t  900000 kB\nVmSize:\t  800000 kB\nVmHWM:\t  444332 kB\nVmRSS:\t  400000 kB\n";
    assert_eq!(parse_vm_hwm(status), Some(444_332 * 1024));
    assert_eq!(parse_vm_hwm("VmHWM: 12 kB"), Some(12_288));
    assert_eq!(parse_vm_hwm("VmRSS:\t 5 kB\n"), None);
    assert_eq!(parse_vm_hwm("VmHWM:\t lots kB\n"), None);
    assert_eq!(parse_vm_hwm("VmHWM:\t 5 parsecs\n"), None);
    assert_eq!(parse_vm_hwm(""), None);
}

#[test]
fn synthetic_prompt_repeats_and_cuts() {
    assert_eq!(synthetic_prompt(&[1, 2, 3], 7), [1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(synthetic_prompt(&[1, 2, 3], 2), [1, 2]);
}

/// The benchmarks measure plain token-by-token decoding (the challenge's definition): no
/// speculation even where prompt lookup would draft (a prompt that quotes the reply).
#[test]
fn generations_are_timed_without_speculation() {
    use qwenc_runtime::chat::{render, ChatMessage};
    let reply = "the world in the world, and the world is in a world";
    let model = FakeModel::new().with_reply_text(reply);
    let prompt = model
        .tokenizer()
        .encode(&render(&[ChatMessage::user(reply)], true));
    qwenc_runtime::bench::timed_generation(&model, &prompt, 20, &ManualClock::new()).unwrap();
    assert_eq!(model.forward_calls(), 20);
    assert_eq!(model.forwarded_tokens(), prompt.len() + 19);
}
