//! `qwen score`: the challenge formula (GUIDE.md §3) on a worked example, and its errors.

mod common;

use common::{qwen, TempDir};
use qwenc_runtime::score::{measured_from_reports, score, Baseline, Best, ScoreError};
use qwenc_runtime::testing::FakeModel;
use serde_json::{json, Value};

/// An eval JSON as `qwen eval --output` writes it (only the fields the score reads, plus
/// a distractor: acc on arc/hellaswag and acc_norm on piqa must be ignored).
fn eval_json() -> Value {
    json!({"results": {
        "arc_challenge": {"acc,none": 0.99, "acc_norm,none": 0.30},
        "hellaswag": {"acc,none": 0.99, "acc_norm,none": 0.40},
        "piqa": {"acc,none": 0.65, "acc_norm,none": 0.99},
    }})
}

/// A bench JSON of the aicas profile (`qwen bench --profile aicas --json`).
fn bench_json() -> Value {
    json!({"config": {"profile": "aicas"}, "report": {
        "prefill": {"memory": {"unit": "MB", "max_ram": 480.0}},
        "decode": {"memory": {"unit": "MB", "max_ram": 500.0}},
        "aicas": {"prefill_tok_s": 1000.0, "decode_tok_s": 100.0, "peak_rss_mb": 500.0},
    }})
}

fn baseline() -> Baseline {
    Baseline {
        p_max: 0.50,
        p_min: 0.40,
        mem_mb: 4000.0,
        prefill_tok_s: 250.0,
        decode_tok_s: 12.5,
    }
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

#[test]
fn worked_example() {
    // By hand:
    //   P = (0.30 + 0.40 + 0.65) / 3 = 0.45           (acc_norm, acc_norm, acc)
    //   Ratio_acc = (0.45 - 0.40) / (0.50 - 0.40) = 0.5
    //   Ratio_mem = 1 - 500 / 4000 = 0.875
    //   Ratio_P   = 1 - 250 / 1000 = 0.75
    //   Ratio_D   = 1 - 12.5 / 100 = 0.875
    //   total (best = 1) = 0.4*0.5 + 0.2*0.875 + 0.2*0.75 + 0.2*0.875 = 0.2 + 0.175 + 0.15 + 0.175 = 0.7
    //   best = (0.8, 0.875, 0.75, 0.7):
    //   total = 0.4*0.5/0.8 + 0.2*1 + 0.2*1 + 0.2*0.875/0.7 = 0.25 + 0.2 + 0.2 + 0.25 = 0.9
    let m = measured_from_reports(&eval_json(), &bench_json()).unwrap();
    close(m.accuracy, 0.45);
    assert_eq!(m.bench_profile, "aicas");
    let s = score(&m, &baseline(), &Best::default()).unwrap();
    close(s.acc.raw, 0.5);
    close(s.mem.raw, 0.875);
    close(s.prefill.raw, 0.75);
    close(s.decode.raw, 0.875);
    close(s.total, 0.7);
    let best = Best {
        acc: 0.8,
        mem: 0.875,
        prefill: 0.75,
        decode: 0.7,
    };
    let s = score(&m, &baseline(), &best).unwrap();
    close(s.acc.normalised, 0.625);
    close(s.mem.normalised, 1.0);
    close(s.decode.weighted, 0.25);
    close(s.total, 0.9);
}

#[test]
fn accuracy_at_or_above_p_max_counts_as_one_and_below_p_min_goes_negative() {
    let mut m = measured_from_reports(&eval_json(), &bench_json()).unwrap();
    m.accuracy = 0.5;
    close(
        score(&m, &baseline(), &Best::default()).unwrap().acc.raw,
        1.0,
    );
    m.accuracy = 0.7;
    close(
        score(&m, &baseline(), &Best::default()).unwrap().acc.raw,
        1.0,
    );
    // (0.35 - 0.40) / 0.10 = -0.5: the formula is not clamped.
    m.accuracy = 0.35;
    close(
        score(&m, &baseline(), &Best::default()).unwrap().acc.raw,
        -0.5,
    );
}

#[test]
fn optimum_profile_reads_the_throughput_targets() {
    let bench = json!({"report": {
        "prefill": {"throughput": {"value": 500.0}, "memory": {"max_ram": 300.0}},
        "decode": {"throughput": {"value": 50.0}, "memory": {"max_ram": 320.0}},
    }});
    let m = measured_from_reports(&eval_json(), &bench).unwrap();
    assert_eq!(m.bench_profile, "optimum");
    assert_eq!(
        (m.prefill_tok_s, m.decode_tok_s, m.mem_mb),
        (500.0, 50.0, 320.0)
    );
}

#[test]
fn bad_inputs_are_named() {
    let mut eval = eval_json();
    eval["results"].as_object_mut().unwrap().remove("piqa");
    match measured_from_reports(&eval, &bench_json()) {
        Err(ScoreError::MissingTask { task, metric }) => {
            assert_eq!((task.as_str(), metric.as_str()), ("piqa", "acc"))
        }
        other => panic!("{other:?}"),
    }
    let err = measured_from_reports(&eval_json(), &json!({"nothing": 1})).unwrap_err();
    assert!(err.to_string().contains("`report`"), "{err}");
    let m = measured_from_reports(&eval_json(), &bench_json()).unwrap();
    let mut b = baseline();
    b.p_min = 0.5;
    assert!(matches!(
        score(&m, &b, &Best::default()),
        Err(ScoreError::AccuracyRange { .. })
    ));
    let mut b = baseline();
    b.decode_tok_s = 0.0;
    assert!(score(&m, &b, &Best::default())
        .unwrap_err()
        .to_string()
        .contains("baseline decode"));
    let best = Best {
        mem: -1.0,
        ..Best::default()
    };
    assert!(score(&m, &baseline(), &best).is_err());
}

#[test]
fn the_command_prints_the_total() {
    let dir = TempDir::new("score");
    let eval = dir.write("eval.json", &eval_json().to_string());
    let bench = dir.write("bench.json", &bench_json().to_string());
    let base = [
        "score",
        "--eval",
        eval.to_str().unwrap(),
        "--bench",
        bench.to_str().unwrap(),
        "--p-max",
        "0.5",
        "--p-min",
        "0.4",
        "--mem-ori",
        "4000",
        "--prefill-ori",
        "250",
        "--decode-ori",
        "12.5",
    ];
    let out = qwen(&FakeModel::new(), &base);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("total    0.7000"), "{}", out.stdout);
    let mut args = base.to_vec();
    args.push("--json");
    let out = qwen(&FakeModel::new(), &args);
    assert_eq!(out.code, 0);
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    close(v["score"]["total"].as_f64().unwrap(), 0.7);
    // A missing file is named.
    let mut args = base.to_vec();
    args[2] = "/nonexistent/eval.json";
    let out = qwen(&FakeModel::new(), &args);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("/nonexistent/eval.json"),
        "{}",
        out.stderr
    );
}
