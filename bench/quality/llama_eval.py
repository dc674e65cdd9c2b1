#!/usr/bin/env python3
"""A llama.cpp model's accuracy on the first N documents of each task, scored as `qwen eval`
scores ours (mc.py: lm-eval's 0-shot loglikelihood multiple choice), for the peers' points of
the accuracy-vs-memory chart.

Tokens come from the Hugging Face tokenizer of the converted dev checkpoint (the same
vocabulary and merges as the GGUF; `codegen/tests/tokenizer_fixtures.rs` shows ours equal to
it), so every engine scores the same token ids. Each (context, continuation) is evaluated
from an empty cache with llama.cpp computing the logits of every position.

    bench/.venv/bin/python bench/quality/llama_eval.py bench/cache/dev-Q4_0.gguf --label Q4_0 \
        --limit 100 --output bench/results/llama-Q4_0.eval.json

Not part of the test suite: it needs the bench venv (bench/peers/setup.sh) and minutes.
"""
import argparse
import os
import sys
import time

import numpy as np
from llama_cpp import Llama
from transformers import AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mc  # noqa: E402


def loglikelihood(llm, ctx, cont):
    tokens = ctx + cont
    llm.reset()
    llm.eval(tokens[:-1])
    logits = np.asarray(llm.scores[len(ctx) - 1 : len(tokens) - 1], dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    logz = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(sum(logits[i, t] - logz[i] for i, t in enumerate(cont)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("--label", required=True)
    ap.add_argument("--tokenizer", default="bench/cache/hf-f32")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--tasks", default="arc_challenge,hellaswag,piqa")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", required=True)
    a = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    encode = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    llm = Llama(model_path=a.gguf, n_ctx=1024, n_batch=1024, n_threads=a.threads,
                logits_all=True, verbose=False)
    report = {"model": a.gguf, "label": a.label, "limit": a.limit,
              "weights_file_bytes": os.path.getsize(a.gguf), "results": {}}
    for task in a.tasks.split(","):
        t0 = time.time()
        rows = []
        for doc_id, ctx, choices, target in mc.load_docs(a.data_dir, task, a.limit):
            lls = [loglikelihood(llm, c, k) for c, k in mc.requests(encode, ctx, choices)]
            rows.append(mc.judge(doc_id, target, choices, lls))
        s = mc.summary(rows)
        report["results"][task] = {**s, "seconds": round(time.time() - t0, 1), "samples": rows}
        print(f"{a.label} {task:14s} n={s['n']} acc {s['acc']:.4f} acc_norm {s['acc_norm']:.4f}",
              flush=True)
    report["challenge_average"] = mc.challenge_average(report["results"])
    print(f"{a.label}: challenge average {report['challenge_average']:.4f}")
    mc.write_json(a.output, report)


if __name__ == "__main__":
    main()
