//! The eval library on the fake model: prompts, lm-eval's tokenization of requests,
//! continuation scoring with a shared context, acc / acc_norm, standard errors, the
//! results JSON, perplexity windows and data errors. Expected values are computed here
//! from `FakeModel::logits_after` (the fake model's logits as a plain function).

mod common;

use std::path::Path;

use common::log_softmax_at;
use qwenc_runtime::eval::harness::{
    argmax, argmax_normalized, doc_requests, encode_pair, evaluate_doc, mean_stderr, results_json,
    split_trailing_whitespace, summary_table, DocResult, TaskReport,
};
use qwenc_runtime::eval::perplexity::{perplexity, windows, PerplexityError, Window};
use qwenc_runtime::eval::scoring::{score_continuations, ScoreError};
use qwenc_runtime::eval::tasks::{parse_docs, DataError, Doc, Task};
use qwenc_runtime::model::{LogitsFor, Model};
use qwenc_runtime::testing::FakeModel;

/// Per-token log-probabilities of `cont` after `ctx`, from the fake model's logit function.
fn expected_token_lls(model: &FakeModel, ctx: &[u32], cont: &[u32]) -> Vec<f64> {
    let seq: Vec<u32> = ctx.iter().chain(cont).copied().collect();
    (0..cont.len())
        .map(|j| log_softmax_at(&model.logits_after(&seq[..ctx.len() + j]), cont[j]))
        .collect()
}

/// The lm-eval log-likelihood of `" " + choice` after `context`, from scratch.
fn expected_ll(model: &FakeModel, context: &str, choice: &str) -> f64 {
    let tok = model.tokenizer();
    let ctx = tok.encode(context.trim_end());
    let whole = tok.encode(&format!("{context} {choice}"));
    expected_token_lls(model, &ctx, &whole[ctx.len()..])
        .iter()
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

fn doc(context: &str, choices: &[&str], target: usize) -> Doc {
    Doc {
        doc_id: 0,
        context: context.to_string(),
        choices: choices.iter().map(|s| s.to_string()).collect(),
        target,
        exact_lmeval: None,
    }
}

#[test]
fn prompt_formatting_per_task() {
    let p = Path::new("x.jsonl");
    let arc = parse_docs(
        Task::ArcChallenge,
        br#"{"id": "Q1", "question": "Which is hot?", "choices": ["ice", "the sun", "snow"], "label": 1}"#,
        p,
    )
    .unwrap();
    assert_eq!(arc[0].context, "Question: Which is hot?\nAnswer:");
    assert_eq!(arc[0].choices, ["ice", "the sun", "snow"]);
    assert_eq!(arc[0].continuation(1), " the sun");
    assert_eq!(
        (arc[0].target, arc[0].doc_id, arc[0].exact_lmeval),
        (1, 0, None)
    );

    let piqa = parse_docs(
        Task::Piqa,
        b"{\"goal\": \"Open a jar\", \"sol1\": \"twist the lid\", \"sol2\": \"eat it\", \"label\": 0}\n\n{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\", \"label\": 1}\n",
        p,
    )
    .unwrap();
    assert_eq!(piqa.len(), 2);
    assert_eq!(piqa[0].context, "Question: Open a jar\nAnswer:");
    assert_eq!(piqa[0].choices, ["twist the lid", "eat it"]);
    assert_eq!(piqa[0].continuation(0), " twist the lid");
    // Blank lines do not count as documents.
    assert_eq!((piqa[1].doc_id, piqa[1].target), (1, 1));

    // HellaSwag: query and choices as they are, leading spaces of choices kept.
    let hs = parse_docs(
        Task::Hellaswag,
        br#"{"row": 0, "query": "Roof: A man is on a roof. He", "choices": ["falls.", " Follow the steps.", "sits.", "waves."], "endings": ["x"], "label": 3, "exact_lmeval": true}"#,
        p,
    )
    .unwrap();
    assert_eq!(hs[0].context, "Roof: A man is on a roof. He");
    assert_eq!(hs[0].choices[1], " Follow the steps.");
    assert_eq!(hs[0].continuation(1), "  Follow the steps.");
    assert_eq!((hs[0].target, hs[0].exact_lmeval), (3, Some(true)));

    assert_eq!("piqa".parse::<Task>(), Ok(Task::Piqa));
    assert!("mmlu"
        .parse::<Task>()
        .unwrap_err()
        .contains("known: arc_challenge, hellaswag, piqa"));
}

#[test]
fn trailing_whitespace_moves_to_the_continuation() {
    assert_eq!(
        split_trailing_whitespace("Answer: \n\t"),
        ("Answer:", " \n\t")
    );
    assert_eq!(
        split_trailing_whitespace("a\u{1f}\u{a0}"),
        ("a", "\u{1f}\u{a0}")
    );
    assert_eq!(split_trailing_whitespace("none"), ("none", ""));

    let m = FakeModel::new();
    let tok = m.tokenizer();
    let (ctx, cont) = encode_pair(tok, "Answer: ", "the world");
    assert_eq!(ctx, tok.encode("Answer:"));
    let whole = tok.encode("Answer: the world");
    assert_eq!(cont, whole[ctx.len()..]);
    // Not moving it would score different tokens: the space would be in the context.
    let naive = tok.encode("Answer: ");
    assert_ne!(whole[naive.len()..], cont[..]);
    assert_eq!(tok.decode(&cont), " the world");

    // A document's context is shared by its choices and its continuations are
    // whole[len(ctx):].
    let d = doc("Question: in on\nAnswer:", &["the", "world"], 0);
    let (ctx, conts) = doc_requests(tok, &d, None);
    assert_eq!(ctx, tok.encode("Question: in on\nAnswer:"));
    for (i, c) in conts.iter().enumerate() {
        let whole = tok.encode(&format!("Question: in on\nAnswer: {}", d.choices[i]));
        assert_eq!(c[..], whole[ctx.len()..]);
    }
    // An empty context becomes the prefix token (lm-eval's behaviour).
    let (ctx, conts) = doc_requests(tok, &doc("", &["a", "b"], 0), Some(7));
    assert_eq!(ctx, [7]);
    assert_eq!(conts[0], tok.encode(" a"));
}

#[test]
fn shared_context_scores_equal_scoring_from_scratch() {
    let m = FakeModel::new();
    let tok = m.tokenizer();
    let ctx = tok.encode("Question: the world in on\nAnswer:");
    // A continuation made of the greedy tokens, one token, and longer ones.
    let mut greedy = Vec::new();
    let mut seq = ctx.clone();
    for _ in 0..4 {
        let t = m.peak_after(&seq);
        greedy.push(t);
        seq.push(t);
    }
    let conts = vec![
        tok.encode(" the answer is here"),
        vec![tok.encode(" x")[0]],
        greedy.clone(),
        tok.encode(" or worse, the rest"),
    ];
    let before = m.forwarded_tokens();
    let scores = score_continuations(&m, &ctx, &conts).unwrap();
    // The context ran once; each continuation ran all its tokens but the last.
    let expected_run = ctx.len() + conts.iter().map(|c| c.len() - 1).sum::<usize>();
    assert_eq!(m.forwarded_tokens() - before, expected_run);

    assert_eq!(scores.len(), conts.len());
    for (s, cont) in scores.iter().zip(&conts) {
        let expected = expected_token_lls(&m, &ctx, cont);
        assert_eq!(s.token_logprobs.len(), cont.len());
        for (a, b) in s.token_logprobs.iter().zip(&expected) {
            assert!(close(*a, *b), "{a} vs {b}");
        }
        assert!(close(s.logprob_sum, expected.iter().sum()));

        // Scratch: a fresh cache over context + continuation, all rows.
        let full: Vec<u32> = ctx.iter().chain(cont).copied().collect();
        let mut cache = m.new_cache(full.len());
        let logits = m.forward(&mut cache, &full, LogitsFor::All).unwrap();
        let v = m.info().vocab_size;
        let scratch: f64 = (0..cont.len())
            .map(|j| {
                let row = &logits[(ctx.len() - 1 + j) * v..][..v];
                log_softmax_at(row, cont[j])
            })
            .sum();
        assert!(
            close(s.logprob_sum, scratch),
            "{} vs {scratch}",
            s.logprob_sum
        );

        let greedy_expected = (0..cont.len()).all(|j| {
            let seq: Vec<u32> = ctx.iter().chain(&cont[..j]).copied().collect();
            m.peak_after(&seq) == cont[j]
        });
        assert_eq!(s.is_greedy, greedy_expected);
    }
    assert!(scores[2].is_greedy);
    assert!(!scores[0].is_greedy);

    // Empty continuations score 0; an empty context cannot be scored.
    let s = score_continuations(&m, &ctx, &[vec![]]).unwrap();
    assert_eq!((s[0].logprob_sum, s[0].is_greedy), (0.0, true));
    assert_eq!(
        score_continuations(&m, &[], &conts),
        Err(ScoreError::EmptyContext)
    );
    // Too long for the model: the forward error comes through.
    let small = FakeModel::new().with_max_context(ctx.len() + 2);
    assert!(matches!(
        score_continuations(&small, &ctx, &conts),
        Err(ScoreError::Forward(_))
    ));
}

#[test]
fn acc_and_acc_norm_can_disagree() {
    // Pure: the short choice has the best sum, the long one the best per character.
    let lls = [-3.0, -5.0];
    let choices = ["a".to_string(), "longer choice".to_string()];
    assert_eq!(argmax(&lls), 0);
    assert_eq!(argmax_normalized(&lls, &choices), 1);
    // Ties go to the first; the length counts code points, not bytes.
    assert_eq!(argmax(&[-1.0, -1.0]), 0);
    let accented = ["éé".to_string(), "abc".to_string()];
    assert_eq!(argmax_normalized(&[-2.0, -3.0], &accented), 0);
    assert_eq!(argmax_normalized(&[-2.2, -3.0], &accented), 1);

    // On the model: one short choice, one long choice of cheap tokens.
    let m = FakeModel::new();
    let context = "Question: the world\nAnswer:";
    let d = doc(context, &["x", "the the the the the the"], 1);
    let expected: Vec<f64> = d
        .choices
        .iter()
        .map(|c| expected_ll(&m, context, c))
        .collect();
    let by_sum = argmax(&expected);
    let by_char = argmax(&[expected[0] / 1.0, expected[1] / 23.0]);
    assert_eq!(
        (by_sum, by_char),
        (0, 1),
        "the crafted item must disagree: {expected:?}"
    );

    let r = evaluate_doc(&m, &d).unwrap();
    for (a, b) in r.loglikelihoods.iter().zip(&expected) {
        assert!(close(*a, *b));
    }
    assert_eq!((r.pred_acc, r.pred_acc_norm), (0, 1));
    assert_eq!((r.acc, r.acc_norm), (0.0, 1.0));
    assert_eq!(r.target, 1);
    let tok = m.tokenizer();
    let ctx_len = tok.encode(context).len();
    assert_eq!(
        r.continuation_tokens,
        [
            tok.encode(&format!("{context} x")).len() - ctx_len,
            tok.encode(&format!("{context} the the the the the the"))
                .len()
                - ctx_len
        ]
    );
}

fn sample(doc_id: usize, acc: f64, acc_norm: f64) -> DocResult {
    DocResult {
        doc_id,
        target: 0,
        loglikelihoods: vec![-1.0, -2.0],
        is_greedy: vec![false, false],
        continuation_tokens: vec![1, 2],
        pred_acc: if acc == 1.0 { 0 } else { 1 },
        pred_acc_norm: if acc_norm == 1.0 { 0 } else { 1 },
        acc,
        acc_norm,
    }
}

#[test]
fn stderr_is_the_sample_standard_deviation_over_sqrt_n() {
    // mean 0.75; sum of squares (3 x 0.0625 + 0.5625) = 0.75; / (n-1) = 0.25; sd 0.5.
    let se = mean_stderr(&[1.0, 0.0, 1.0, 1.0]).unwrap();
    assert!((se - 0.25).abs() < 1e-15, "{se}");
    let xs = [0.0, 1.0, 1.0, 0.0, 1.0];
    let mu = 0.6f64;
    let sd = (xs.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / 4.0).sqrt();
    assert!((mean_stderr(&xs).unwrap() - sd / 5f64.sqrt()).abs() < 1e-15);
    assert_eq!(mean_stderr(&[1.0]), None);
    assert_eq!(mean_stderr(&[]), None);
}

#[test]
fn results_json_has_lm_evals_shape() {
    let reports = vec![
        TaskReport {
            task: Task::ArcChallenge,
            in_file: 10,
            samples: vec![
                sample(0, 1.0, 1.0),
                sample(1, 0.0, 1.0),
                sample(2, 1.0, 0.0),
                sample(3, 1.0, 1.0),
            ],
            seconds: 1.0,
        },
        TaskReport {
            task: Task::Piqa,
            in_file: 5,
            samples: vec![sample(4, 1.0, 0.0)],
            seconds: 1.0,
        },
    ];
    let v = results_json(&reports, serde_json::json!({"model": "fake"}));
    let arc = &v["results"]["arc_challenge"];
    assert_eq!(arc["alias"], "arc_challenge");
    assert_eq!(arc["acc,none"], 0.75);
    assert_eq!(arc["acc_stderr,none"], 0.25);
    assert_eq!(arc["acc_norm,none"], 0.75);
    assert_eq!(arc["acc_norm_stderr,none"], 0.25);
    // One document: no standard error, as lm-eval.
    assert_eq!(v["results"]["piqa"]["acc_stderr,none"], "N/A");
    assert_eq!(v["results"]["piqa"]["acc,none"], 1.0);
    assert_eq!(v["n-samples"]["arc_challenge"]["original"], 10);
    assert_eq!(v["n-samples"]["arc_challenge"]["effective"], 4);
    assert_eq!(v["n-shot"]["piqa"], 0);
    assert_eq!(v["config"]["model"], "fake");
    let s = &v["samples"]["arc_challenge"][1];
    for key in [
        "doc_id",
        "target",
        "loglikelihoods",
        "pred_acc",
        "pred_acc_norm",
        "is_greedy",
        "acc",
        "acc_norm",
    ] {
        assert!(!s[key].is_null(), "{key} missing in {s}");
    }
    assert_eq!(s["doc_id"], 1);
    assert_eq!(s["loglikelihoods"], serde_json::json!([-1.0, -2.0]));
    // The challenge metric: acc_norm for ARC, acc for PIQA.
    assert_eq!(
        v["challenge"]["metrics"]["arc_challenge"]["metric"],
        "acc_norm"
    );
    assert_eq!(v["challenge"]["metrics"]["piqa"]["value"], 1.0);
    assert_eq!(v["challenge"]["average"], 0.875);

    let table = summary_table(&reports);
    assert!(
        table.contains("| arc_challenge |     4 | acc      | 0.7500 | ± | 0.2500 |"),
        "{table}"
    );
    assert!(table.contains("N/A"), "{table}");
    assert!(table.contains("average 0.8750"), "{table}");
}

#[test]
fn perplexity_windows() {
    let w = |begin, end, score_from| Window {
        begin,
        end,
        score_from,
    };
    assert_eq!(
        windows(10, 4, 2).unwrap(),
        [w(0, 4, 1), w(2, 6, 4), w(4, 8, 6), w(6, 10, 8)]
    );
    assert_eq!(
        windows(9, 4, 2).unwrap(),
        [w(0, 4, 1), w(2, 6, 4), w(4, 8, 6), w(6, 9, 8)]
    );
    // Not overlapping: the first token of each window has nothing before it.
    assert_eq!(
        windows(10, 4, 4).unwrap(),
        [w(0, 4, 1), w(4, 8, 5), w(8, 10, 9)]
    );
    // A last window of one token would score nothing: left out.
    assert_eq!(windows(9, 4, 4).unwrap(), [w(0, 4, 1), w(4, 8, 5)]);
    assert_eq!(windows(3, 8, 4).unwrap(), [w(0, 3, 1)]);
    assert_eq!(windows(1, 8, 4), Err(PerplexityError::TooFewTokens(1)));
    assert_eq!(
        windows(10, 4, 5),
        Err(PerplexityError::BadStride {
            context: 4,
            stride: 5
        })
    );
    assert!(windows(10, 4, 0).is_err());
    assert_eq!(windows(10, 1, 1), Err(PerplexityError::ContextTooSmall(1)));
    // Every token but the first is scored exactly once.
    for (n, c, s) in [(100, 16, 5), (37, 8, 7), (64, 64, 1), (65, 10, 3)] {
        let mut seen = vec![0; n];
        for win in windows(n, c, s).unwrap() {
            assert!(win.end - win.begin <= c && win.score_from > win.begin);
            for x in &mut seen[win.score_from..win.end] {
                *x += 1;
            }
        }
        assert_eq!(seen[0], 0);
        assert!(seen[1..].iter().all(|&x| x == 1), "{n} {c} {s}");
    }
}

#[test]
fn perplexity_exact_value() {
    let m = FakeModel::new();
    // Windows longer than the 64-row chunks of logits, and a short last window.
    for (n, context, stride) in [(23usize, 8usize, 3usize), (300, 150, 70), (12, 5, 5)] {
        let tokens: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 11) % 256).collect();
        // Token k (k >= context) is scored by window w = (k - context) / stride + 1,
        // which begins at w * stride; tokens before `context` by the first window.
        let mut nll = 0.0;
        for k in 1..n {
            let begin = if k < context {
                0
            } else {
                ((k - context) / stride + 1) * stride
            };
            if stride == context && k == begin {
                continue; // the first token of a window that does not overlap
            }
            nll -= log_softmax_at(&m.logits_after(&tokens[begin..k]), tokens[k]);
        }
        let scored = if stride == context {
            n - 1 - (n - 1) / stride
        } else {
            n - 1
        };
        let expected = (nll / scored as f64).exp();
        let mut calls = 0;
        let r = perplexity(&m, &tokens, context, stride, &mut |done, total| {
            calls += 1;
            assert_eq!(done, calls);
            assert!(done <= total);
        })
        .unwrap();
        assert_eq!(r.tokens_scored, scored);
        assert_eq!(r.windows, calls);
        assert!(
            close(r.perplexity, expected),
            "{} vs {expected}",
            r.perplexity
        );
        assert!(close(r.nll_sum, nll));
    }
    assert_eq!(
        perplexity(&m, &[1, 2, 3], 300, 10, &mut |_, _| {}),
        Err(PerplexityError::ContextTooLarge {
            context: 300,
            max: 256
        })
    );
}

fn line_error(task: Task, text: &str) -> String {
    let e = parse_docs(task, text.as_bytes(), Path::new("data/x.jsonl")).unwrap_err();
    assert!(matches!(
        e,
        DataError::Line { .. } | DataError::Empty { .. }
    ));
    e.to_string()
}

#[test]
fn malformed_jsonl_names_the_file_and_line() {
    let good = r#"{"question": "q", "choices": ["a", "b"], "label": 0}"#;
    let e = line_error(Task::ArcChallenge, &format!("{good}\n{{not json\n"));
    assert!(e.starts_with("data/x.jsonl:2: "), "{e}");
    let e = line_error(
        Task::ArcChallenge,
        &format!(
            "{good}\n\n{}\n",
            r#"{"question": "q", "choices": ["a", "b"]}"#
        ),
    );
    assert!(
        e.starts_with("data/x.jsonl:3: ") && e.contains("missing field `label`"),
        "{e}"
    );
    let e = line_error(
        Task::Piqa,
        r#"{"goal": "g", "sol1": "a", "sol2": "b", "label": 2}"#,
    );
    assert_eq!(e, "data/x.jsonl:1: label 2 is out of range for 2 choices");
    let e = line_error(
        Task::Hellaswag,
        r#"{"query": "q", "choices": ["a"], "label": 0}"#,
    );
    assert!(e.starts_with("data/x.jsonl:1: 1 choice(s)"), "{e}");
    let e = line_error(
        Task::Piqa,
        r#"{"goal": "g", "sol1": 1, "sol2": "b", "label": 0}"#,
    );
    assert!(e.starts_with("data/x.jsonl:1: invalid type"), "{e}");
    let e = parse_docs(Task::Piqa, b"{\"goal\": \"\xff\"}", Path::new("p.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("p.jsonl:1: not UTF-8"), "{e}");
    assert_eq!(
        line_error(Task::Piqa, "\n \n"),
        "data/x.jsonl: no documents"
    );
}
