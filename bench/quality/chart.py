#!/usr/bin/env python3
"""Accuracy and KL divergence against memory for every measured compression of the dev
checkpoint, with the Pareto front marked and the peers beside ours: the picture of
docs/quality.md and the README.

    bench/.venv/bin/python bench/quality/chart.py [--dir target/quality] \
        [--point 'LABEL|EVAL.json|MB'] ... [--out docs/quality-pareto.svg]

- Our variants: the per-variant JSON files of scripts/quality-table.sh (`DIR/NAME.json`, with
  `DIR/NAME.eval.json` beside it).
- `--point`: an accuracy-only point, from a `qwen eval` JSON or a bench/quality/llama_eval.py
  JSON, at MB megabytes (the f32 build; llama.cpp's Q4_0 and Q8_0 files).
- `--records`: the points of earlier runs (bench/results/quality/records.json, committed, since
  target/ does not outlive a machine); a variant or point measured now replaces the record of
  the same name, and `--save-records` writes the merged list back.

Left: the challenge's three-task average (ARC-Challenge acc_norm, HellaSwag acc_norm, PIQA acc)
on the first 100 documents of each task (HellaSwag: of the `exact_lmeval` rows), the subset
every engine was run on; the full-length averages are in the table of docs/quality.md.
Right: mean KL divergence from the f32 reference (lower is better). A point is on the front
when no other point of ours is at most as large and at least as good.
"""
import argparse
import glob
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRIC = {"arc_challenge": "acc_norm", "hellaswag": "acc_norm", "piqa": "acc"}
SUBSET = 100


def subset_average(path):
    """Three-task average over the first SUBSET documents of each task in an eval JSON."""
    d = json.load(open(path))
    samples = d.get("samples") or {t: r["samples"] for t, r in d["results"].items()}
    values = []
    for task, metric in METRIC.items():
        rows = samples[task][:SUBSET]
        if len(rows) < SUBSET:
            raise SystemExit(f"{path}: {task} has {len(rows)} documents, fewer than {SUBSET}")
        if "acc" in rows[0]:  # qwen eval: acc / acc_norm per document
            values.append(sum(r[metric] for r in rows) / len(rows))
        else:  # llama_eval.py / hf_crosscheck.py: predictions per document
            key = "pred_acc" if metric == "acc" else "pred_acc_norm"
            values.append(sum(r[key] == r["target"] for r in rows) / len(rows))
    return 100 * sum(values) / len(values)


def front(points, better):
    """Indices of the points no other point dominates, by size."""
    keep = []
    for i, (s, v) in enumerate(points):
        if not any(s2 <= s and better(v2, v) and (s2, v2) != (s, v)
                   for j, (s2, v2) in enumerate(points) if j != i):
            keep.append(i)
    return sorted(keep, key=lambda i: points[i][0])


def merge_records(path, ours, others, save):
    """Earlier runs' points from `path`, replaced by this run's points of the same name."""
    records = json.load(open(path)) if Path(path).exists() else []
    fresh = {r["name"] for r in ours + others}
    for r in records:
        if r["name"] in fresh:
            continue
        (ours if r["kind"] == "qwenc" else others).append(r)
    if save:
        rows = [dict(r, kind="qwenc") for r in ours] + [dict(r, kind="other") for r in others]
        rows.sort(key=lambda r: (r["kind"], r["name"]))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        json.dump(rows, open(path, "w"), indent=1)
        open(path, "a").write("\n")
    return ours, others


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="target/quality")
    ap.add_argument("--point", action="append", default=[], help="LABEL|EVAL_JSON|MB")
    ap.add_argument("--out", default="docs/quality-pareto.svg")
    ap.add_argument("--records", default="bench/results/quality/records.json")
    ap.add_argument("--save-records", action="store_true")
    a = ap.parse_args()
    ours = []
    for f in sorted(glob.glob(f"{a.dir}/*.json")):
        if f.endswith(".eval.json") or f.endswith(".kl.json"):
            continue
        r = json.load(open(f))
        ev = f[: -len(".json")] + ".eval.json"
        if "kl" not in r or not Path(ev).exists():
            continue
        ours.append({"name": r["name"], "mb": r["weights_file_bytes"] / 1e6,
                     "acc": subset_average(ev), "kl": r["kl"]["mean_kl"],
                     "source": f"{f} ({r['limit']} docs per task, first {SUBSET} scored)"})
    others = []
    for p in a.point:
        label, path, mb = p.split("|")
        others.append({"name": label, "mb": float(mb), "acc": subset_average(path), "source": path})
    ours, others = merge_records(a.records, ours, others, a.save_records)
    if not ours:
        raise SystemExit(f"no variant JSON with its eval JSON in {a.dir} (scripts/quality-table.sh)")

    fig, (ax_a, ax_k) = plt.subplots(1, 2, figsize=(13, 5))
    panels = (
        (ax_a, "acc", lambda x, y: x >= y,
         f"three-task average on the first {SUBSET} docs per task, %", ours + others),
        (ax_k, "kl", lambda x, y: x <= y, "mean KL from f32 (lower is better)", ours),
    )
    for ax, key, better, label, pts_rows in panels:
        mine = [(r["mb"], r[key]) for r in ours]
        on = front(mine, better)
        ax.plot([mine[i][0] for i in on], [mine[i][1] for i in on], "-", color="tab:orange",
                zorder=1, label="Pareto front (qwenc)")
        values = [r[key] for r in pts_rows]
        near = 0.02 * (max(values) - min(values))
        for r in pts_rows:
            # A label goes below its point when a smaller point's label sits at the same height.
            below = any(abs(q[key] - r[key]) <= near and q["mb"] < r["mb"] for q in pts_rows)
            peer = r in others
            ax.scatter(r["mb"], r[key], s=50, zorder=2, marker="s" if peer else "o",
                       color="tab:gray" if peer else "tab:blue")
            ax.annotate(r["name"], (r["mb"], r[key]), textcoords="offset points",
                        xytext=(5, -11 if below else 4),
                        fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("weights file, MB (log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    ax_a.set_title("accuracy vs memory (squares: other engines / the f32 build)")
    ax_k.set_title("KL vs memory (510 WikiText-2 positions)")
    fig.suptitle("Compressions of Qwen2.5-Coder-0.5B-Instruct (the dev checkpoint)")
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out)
    print(f"wrote {a.out} ({len(ours)} qwenc variants, {len(others)} other points)")


if __name__ == "__main__":
    main()
