"""Combines one run of bench/peers/run.sh into bench/results/: peers.md (the table), peers.json
(everything behind it) and peers.svg (prefill and decode tok/s per engine, with each engine's
bandwidth bound).

Decode bound of an engine = triad bandwidth at the run's thread count / bytes of weights that
one decoded token reads (the embedding table excluded: decode reads one row of it). The KV
cache (a few MB at this prompt length) and activations are left out, so the bound is slightly
optimistic. "% of bound" compares decode excl. prefill with it.

usage: report.py WORK_DIR OUT_DIR --threads N --quick 0|1 [--load-before S] [--load-after S]
                 [--wall-seconds N] [--failed "names"]
"""

import argparse
import datetime
import glob
import json
import math
import os
import platform
import subprocess

REF_TF = "transformers f32"
REF_LLAMA = "llama.cpp Q4_0"


def load(path):
    with open(path) as f:
        return json.load(f)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def llama_bench_rows(work: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(work, "llama-bench-*.json"))):
        quant = os.path.basename(path)[len("llama-bench-"):-len(".json")]
        try:
            entries = load(path)
        except (OSError, json.JSONDecodeError):
            continue
        for e in entries:
            test = f"pp{e['n_prompt']}" if e.get("n_prompt") else f"tg{e['n_gen']}"
            rows.append({
                "quant": quant, "test": test, "threads": e.get("n_threads"),
                "avg_ts": e.get("avg_ts"), "stddev_ts": e.get("stddev_ts"),
                "build_commit": e.get("build_commit"), "cpu_info": e.get("cpu_info"),
            })
    return rows


def fmt(v, digits=1):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def chart(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["engine"] for r in rows]
    y = list(range(len(rows)))[::-1]
    fig, (ax_p, ax_d) = plt.subplots(1, 2, figsize=(13, 0.55 * len(rows) + 2.2), sharey=True)
    ax_p.barh(y, [r["prefill_tok_s"] for r in rows], color="#4c72b0")
    for yi, r in zip(y, rows):
        ax_p.text(r["prefill_tok_s"], yi, f" {r['prefill_tok_s']:.0f}", va="center", fontsize=8)
    ax_p.set_yticks(y, names, fontsize=9)
    ax_p.set_xlabel("prefill tok/s (aicas)")
    ax_p.set_title("prefill")

    h = 0.38
    ax_d.barh([v + h / 2 for v in y], [r["decode_excl_prefill_tok_s"] for r in rows], h,
              color="#dd8452", label="decode excl. prefill")
    ax_d.barh([v - h / 2 for v in y], [r["decode_tok_s"] for r in rows], h,
              color="#c44e52", label="decode incl. prefill (challenge)")
    first = True
    for yi, r in zip(y, rows):
        ax_d.text(r["decode_excl_prefill_tok_s"], yi + h / 2,
                  f" {r['decode_excl_prefill_tok_s']:.1f}", va="center", fontsize=8)
        b = r.get("decode_bound_tok_s")
        if b:
            ax_d.plot([b, b], [yi - 0.45, yi + 0.45], color="black", lw=2,
                      label="bandwidth bound" if first else None)
            first = False
    ax_d.set_xlabel("decode tok/s")
    ax_d.set_title("decode (| = triad bandwidth / weight bytes per token)")
    ax_d.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    # A fixed hash salt and no date in the metadata: the same numbers give the same file.
    plt.rcParams["svg.hashsalt"] = "qwenc-peers"
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("work")
    p.add_argument("out")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--quick", type=int, default=0)
    p.add_argument("--load-before", default="")
    p.add_argument("--load-after", default="")
    p.add_argument("--wall-seconds", type=int, default=None)
    p.add_argument("--failed", default="")
    a = p.parse_args()

    engines = [load(f) for f in sorted(glob.glob(os.path.join(a.work, "engines", "*.json")))]
    if not engines:
        raise SystemExit("report: no engine results in " + a.work)
    stream = {}
    for f in glob.glob(os.path.join(a.work, "stream-*.json")):
        s = load(f)
        stream[s["threads"]] = s
    bw = stream.get(a.threads, {}).get("triad_gb_s")

    by_name = {e["engine"]: e for e in engines}
    tf, lq = by_name.get(REF_TF), by_name.get(REF_LLAMA)
    rows = []
    for e in engines:
        bpt = e.get("weight_bytes_per_token")
        bound = bw * 1e9 / bpt if bw and bpt else None
        rows.append({
            **{k: e[k] for k in ("engine", "prefill_tok_s", "decode_tok_s",
                                 "decode_excl_prefill_tok_s", "peak_rss_mb", "prompt_tokens",
                                 "runs", "threads")},
            "weight_mb_per_token": bpt / 1e6 if bpt else None,
            "decode_bound_tok_s": bound,
            "pct_of_bound": 100 * e["decode_excl_prefill_tok_s"] / bound if bound else None,
            "x_tf_f32": {
                "prefill": ratio(e["prefill_tok_s"], tf and tf["prefill_tok_s"]),
                "decode": ratio(e["decode_tok_s"], tf and tf["decode_tok_s"]),
            },
            "x_llama_q4_0": {
                "prefill": ratio(e["prefill_tok_s"], lq and lq["prefill_tok_s"]),
                "decode": ratio(e["decode_tok_s"], lq and lq["decode_tok_s"]),
            },
        })

    lb = llama_bench_rows(a.work)
    prompt_tokens = sorted({e["prompt_tokens"] for e in engines})
    runs = sorted({e["runs"] for e in engines})
    meta = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "threads": a.threads,
        "quick": bool(a.quick),
        "runs": runs,
        "prompt": "shared/data/aicas2025_prompt.txt",
        "prompt_tokens": prompt_tokens,
        "new_tokens": 50,
        "load_average_before": a.load_before,
        "load_average_after": a.load_after,
        "wall_seconds": a.wall_seconds,
        "failed": a.failed.split(),
        "bandwidth": {str(k): v for k, v in sorted(stream.items())},
    }
    try:
        meta["qwenc_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except OSError:
        meta["qwenc_commit"] = None

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "peers.json"), "w") as f:
        json.dump({"meta": meta, "table": rows, "llama_bench": lb, "engines": engines}, f, indent=1)

    def x(pair):
        if pair["prefill"] is None:
            return "—"
        return f"{pair['prefill']:.2f} / {pair['decode']:.2f}"

    md = []
    md.append("# qwenc against its peers: the aicas profile\n")
    md.append(
        f"{meta['date_utc']} UTC · {meta['cpu']}, {meta['cores']} cores · {a.threads} threads for "
        f"every engine · prompt `{meta['prompt']}` ({'/'.join(map(str, prompt_tokens))} tokens) "
        f"+ 50 new · {'/'.join(map(str, runs))} runs each · qwenc {meta['qwenc_commit'] or '?'}\n")
    if a.quick:
        md.append("**Quick run (`--quick`: 2 runs instead of 10): a smoke test, not a result.**\n")
    md.append(
        f"Load average before/after: {a.load_before or '?'} / {a.load_after or '?'} (above "
        f"{a.threads} means other jobs shared the cores and the numbers are noisy).\n")
    md.append(
        "| engine | prefill tok/s | decode tok/s (incl. prefill) | decode tok/s (excl. prefill) "
        "| × transformers f32 (prefill / decode) | × llama.cpp Q4_0 (prefill / decode) "
        "| peak RSS MB | weights MB / token | decode bound tok/s | % of bound |")
    md.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        md.append(
            f"| {r['engine']} | {fmt(r['prefill_tok_s'])} | {fmt(r['decode_tok_s'], 2)} "
            f"| {fmt(r['decode_excl_prefill_tok_s'], 2)} | {x(r['x_tf_f32'])} "
            f"| {x(r['x_llama_q4_0'])} | {fmt(r['peak_rss_mb'], 0)} "
            f"| {fmt(r['weight_mb_per_token'], 0)} | {fmt(r['decode_bound_tok_s'])} "
            f"| {fmt(r['pct_of_bound'], 0)} |")
    if a.failed.strip():
        md.append(f"\nFailed (not in the table): {a.failed}. Their logs are in bench/cache/run/logs.")
    md.append("\n## Notes\n")
    md.append(
        "- **aicas profile** (the AICAS 2025 challenge's script), batch 1, no warm-up: prefill = "
        "runs × prompt tokens / time of runs full forward passes; decode = runs × 50 / time of "
        "runs generations of exactly 50 tokens, each including its prefill (the challenge's "
        "figure); decode excl. prefill = runs × 49 / (generation time − time to first token). "
        "Ratios use the challenge's figures (prefill, decode incl. prefill).")
    md.append(
        "- transformers prefill is `model(input_ids)` as in the challenge's script: it computes the "
        "logits of every prompt position (qwen and llama.cpp compute the last one only). "
        "llama.cpp runs through llama-cpp-python's low-level API (the C API, greedy sampler, "
        "EOS ignored); Q4_0 and Q8_0 are the dev GGUF requantized with `llama-quantize "
        "--allow-requantize --pure` (every tensor, embedding and output included).")
    md.append(
        "- Peak RSS is VmHWM of the process that ran each engine (model loading included; "
        "memory-mapped weights count once touched).")
    bw_txt = ", ".join(
        f"{t} thread{'s' if int(t) > 1 else ''}: triad {s['triad_gb_s']:.1f} GB/s, read {s['read_gb_s']:.1f} GB/s"
        for t, s in meta["bandwidth"].items())
    md.append(
        f"- Memory bandwidth (STREAM-like, `bench/peers/stream.c`, 3 × 256 MiB arrays, best of "
        f"several): {bw_txt}. Decode bound = triad at {a.threads} threads / weight bytes per token "
        "(all weights but the embedding table; for qwenc the weights file minus the table, for "
        "llama.cpp the GGUF tensors minus `token_embd`, for transformers the parameters minus the "
        "embedding). % of bound uses decode excl. prefill.")
    if lb:
        md.append(
            f"- llama-bench cross-check (the same llama.cpp as llama-cpp-python, -t {a.threads}; "
            "`-p 256 -n 64 -r 5`, or `-n 16 -r 1` in a quick run): ppN = prompt processing of N "
            "tokens, tgN = generation of N tokens.")
        md.append("")
        md.append("  | quant | test | tok/s | ± |")
        md.append("  | --- | --- | ---: | ---: |")
        for r in lb:
            md.append(f"  | {r['quant']} | {r['test']} | {fmt(r['avg_ts'])} | {fmt(r['stddev_ts'])} |")
    md.append(
        "\nMade by `bench/peers/run.sh`; peers.json holds every timing behind this table, "
        "peers.svg the chart.")
    with open(os.path.join(a.out, "peers.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    title = (f"aicas profile, {a.threads} threads, {meta['cpu']}" +
             (" (quick run: 2 runs, noisy)" if a.quick else ""))
    chart(rows, os.path.join(a.out, "peers.svg"), title)
    print("\n".join(md))


if __name__ == "__main__":
    main()
