#!/usr/bin/env python3
"""The f32 build's `qwen eval` against Hugging Face transformers on the same documents.

Scores the first N documents of arc_challenge, hellaswag (the `exact_lmeval` rows) and piqa
with transformers in f32, as lm-evaluation-harness's HF model does 0-shot loglikelihood
multiple choice (mc.py), then compares with the per-document samples of a
`qwen eval --output` JSON. That JSON has the same documents first (`--limit N` and the full
run both take documents in file order; run it with `--hellaswag-exact`): both predictions
and the largest loglikelihood difference, document by document.

    bench/.venv/bin/python bench/quality/hf_crosscheck.py \
        --model bench/cache/hf-f32 --qwen-eval target/quality/f32-limit100.eval.json --limit 100

Not part of the test suite: it needs the bench venv (bench/peers/setup.sh) and minutes.
"""
import argparse
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mc  # noqa: E402


@torch.no_grad()
def loglikelihoods(model, reqs):
    """Summed log-probability of each (context, continuation), one padded batch."""
    seqs = [c + k for c, k in reqs]
    width = max(len(s) for s in seqs) - 1
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s) - 1] = torch.tensor(s[:-1])
        mask[i, : len(s) - 1] = 1
    logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
    out = []
    for i, (c, k) in enumerate(reqs):
        rows = logprobs[i, len(c) - 1 : len(c) - 1 + len(k)]
        out.append(rows[torch.arange(len(k)), torch.tensor(k)].sum().item())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="bench/cache/hf-f32", help="Hugging Face directory (f32)")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--tasks", default="arc_challenge,hellaswag,piqa")
    ap.add_argument("--qwen-eval", help="a `qwen eval --output` JSON (f32 build) to compare with")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", default="bench/results/hf_crosscheck.json")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    encode = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    qwen = json.load(open(a.qwen_eval)) if a.qwen_eval else None

    report = {"model": a.model, "limit": a.limit, "transformers": {}, "qwen": {}, "agreement": {}}
    for task in a.tasks.split(","):
        t0 = time.time()
        rows = [
            mc.judge(doc_id, target, choices, loglikelihoods(model, mc.requests(encode, ctx, choices)))
            for doc_id, ctx, choices, target in mc.load_docs(a.data_dir, task, a.limit)
        ]
        s = mc.summary(rows)
        report["transformers"][task] = {**s, "seconds": round(time.time() - t0, 1), "samples": rows}
        line = f"{task:14s} n={s['n']}  transformers acc {s['acc']:.4f} acc_norm {s['acc_norm']:.4f}"
        if qwen:
            by_id = {d["doc_id"]: d for d in qwen["samples"][task]}
            ours = [by_id[r["doc_id"]] for r in rows]
            q = mc.summary(ours)
            same = sum(o["pred_acc"] == r["pred_acc"] for o, r in zip(ours, rows))
            same_norm = sum(o["pred_acc_norm"] == r["pred_acc_norm"] for o, r in zip(ours, rows))
            diffs = [abs(x - y) for o, r in zip(ours, rows)
                     for x, y in zip(o["loglikelihoods"], r["loglikelihoods"])]
            report["qwen"][task] = q
            report["agreement"][task] = {
                "same_pred_acc": same, "same_pred_acc_norm": same_norm,
                "max_abs_loglikelihood_diff": max(diffs),
                "mean_abs_loglikelihood_diff": sum(diffs) / len(diffs),
            }
            line += (f"  | qwen acc {q['acc']:.4f} acc_norm {q['acc_norm']:.4f}  | same predictions "
                     f"{same}/{s['n']} (norm {same_norm}/{s['n']}), loglikelihood |diff| max "
                     f"{max(diffs):.4f} mean {sum(diffs) / len(diffs):.5f}")
        print(line, flush=True)
    report["transformers_challenge_average"] = mc.challenge_average(report["transformers"])
    if qwen:
        report["qwen_challenge_average"] = mc.challenge_average(report["qwen"])
        print(f"challenge average: transformers {report['transformers_challenge_average']:.4f}, "
              f"qwen {report['qwen_challenge_average']:.4f}")
    mc.write_json(a.output, report)


if __name__ == "__main__":
    main()
