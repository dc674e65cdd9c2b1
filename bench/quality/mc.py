"""lm-evaluation-harness 0-shot multiple choice, the parts every engine shares: the documents
of ../shared/data, the tokenization of (context, continuation) requests, and the scores.
Used by hf_crosscheck.py (transformers) and llama_eval.py (llama.cpp); ../shared/GUIDE.md
section 3 and runtime/src/eval define the same for qwen."""
import json
from pathlib import Path

FILES = {
    "arc_challenge": "arc_challenge_test.jsonl",
    "hellaswag": "hellaswag_val.jsonl",
    "piqa": "piqa_val.jsonl",
}
# The challenge's metric per task.
CHALLENGE_METRIC = {"arc_challenge": "acc_norm", "hellaswag": "acc_norm", "piqa": "acc"}


def load_docs(data_dir, task, limit):
    """The first `limit` documents of `task` in file order (HellaSwag: the `exact_lmeval`
    rows only), as (doc_id, context, choices, target); doc_id counts every row of the file."""
    docs = []
    with open(Path(data_dir) / FILES[task], encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for doc_id, r in enumerate(rows):
        if task == "arc_challenge":
            d = (f"Question: {r['question']}\nAnswer:", r["choices"], r["label"])
        elif task == "piqa":
            d = (f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], r["label"])
        else:
            if not r["exact_lmeval"]:
                continue
            d = (r["query"], r["choices"], r["label"])
        docs.append((doc_id, *d))
        if len(docs) == limit:
            break
    return docs


def requests(encode, context, choices):
    """lm-eval's HF tokenization, per choice: (context tokens, continuation tokens). The
    context's trailing whitespace moves to the continuation " " + choice; the continuation
    tokens are those of encode(context + continuation) past len(encode(context))."""
    out = []
    for choice in choices:
        cont = " " + choice
        n_space = len(context) - len(context.rstrip())
        ctx, cont = (context[:-n_space], context[-n_space:] + cont) if n_space else (context, cont)
        whole = encode(ctx + cont)
        n_ctx = len(encode(ctx))
        out.append((whole[:n_ctx], whole[n_ctx:]))
    return out


def argmax(xs):
    """Index of the first maximum (numpy.argmax)."""
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def judge(doc_id, target, choices, loglikelihoods):
    """One document's record: predictions by acc and by acc_norm (length in code points)."""
    return {
        "doc_id": doc_id,
        "target": target,
        "loglikelihoods": loglikelihoods,
        "pred_acc": argmax(loglikelihoods),
        "pred_acc_norm": argmax([ll / len(c) for ll, c in zip(loglikelihoods, choices)]),
    }


def summary(rows):
    n = len(rows)
    return {
        "n": n,
        "acc": sum(r["pred_acc"] == r["target"] for r in rows) / n,
        "acc_norm": sum(r["pred_acc_norm"] == r["target"] for r in rows) / n,
    }


def challenge_average(results):
    """The challenge's three-task average of a {task: summary} map."""
    return sum(results[t][CHALLENGE_METRIC[t]] for t in results) / len(results)


def write_json(path, report):
    """Writes `report` to `path` (parents created) and says so."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {path}")
