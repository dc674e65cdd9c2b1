"""The aicas profile on a qwenc build: runs `QWEN --threads N bench --profile aicas --json` (the
executable measures itself, VmHWM of its own process) and reshapes its report into the peers'
record (aicas.py).

Bytes read per decoded token = the weights file minus the embedding table, of which decode
reads one row; the table's size follows from its scheme (codegen/src/quant/mod.rs), the vocab
and the hidden size that the report names.

usage: qwen_engine.py QWEN OUT_JSON --threads N --runs N [--new-tokens N]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aicas  # noqa: E402


def matrix_bytes(scheme: str, rows: int, cols: int) -> int | None:
    """Packed bytes of a rows x cols matrix in a qwenc scheme (None: unknown scheme)."""
    if scheme == "f32":
        return 4 * rows * cols
    if scheme == "bf16":
        return 2 * rows * cols
    if scheme == "w8":  # i8 per weight, f32 scale per row
        return rows * cols + 4 * rows
    m = re.fullmatch(r"w4g(\d+)(a?)", scheme)
    if m:  # two u4 per byte, f16 scale (and f16 min when asymmetric) per group
        group, asym = int(m.group(1)), m.group(2) == "a"
        if group <= 0 or cols % group:
            return None
        return rows * cols // 2 + rows * (cols // group) * (4 if asym else 2)
    return None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("qwen")
    p.add_argument("out")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--new-tokens", type=int, default=50)
    p.add_argument("--prompt-file", default=aicas.PROMPT_FILE)
    a = p.parse_args()
    if not os.access(a.qwen, os.X_OK):
        raise SystemExit(f"qwen_engine: {a.qwen} is not an executable qwenc build")

    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "bench.json")
        cmd = [
            a.qwen, "--threads", str(a.threads), "bench", "--profile", "aicas",
            "--runs", str(a.runs), "--new-tokens", str(a.new_tokens),
            "--prompt-file", a.prompt_file, "--json", report_path,
        ]
        print("[qwen] " + " ".join(cmd), file=sys.stderr, flush=True)
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            raise SystemExit(f"qwen_engine: {a.qwen} bench exited with {rc}")
        with open(report_path) as f:
            report = json.load(f)

    cfg, section = report["config"], report["report"].get("aicas")
    if section is None:
        raise SystemExit("qwen_engine: the report has no aicas section")
    model = cfg["model"]
    schemes = dict(part.split("=", 1) for part in model["scheme"].split() if "=" in part)
    embed = schemes.get("embed")
    emb_bytes = matrix_bytes(embed, model["vocab_size"], model["hidden_size"]) if embed else None
    per_token = model["weight_bytes"] - emb_bytes if emb_bytes is not None else None

    data = {
        "engine": f"qwenc {os.path.basename(a.qwen)} ({model['backend']})",
        "prompt_tokens": section["prompt_tokens"],
        "new_tokens": section["new_tokens"],
        "runs": section["runs"],
        "threads": cfg["threads"],
        "prefill_tok_s": section["prefill_tok_s"],
        "decode_tok_s": section["decode_tok_s"],
        "decode_excl_prefill_tok_s": section["decode_excl_prefill_tok_s"],
        "forward_seconds": section["forward_seconds"],
        "generate_seconds": section["generate_seconds"],
        "first_token_seconds": section["first_token_seconds"],
        "peak_rss_mb": section["peak_rss_mb"],
        "weight_bytes_per_token": per_token,
        "weight_bytes_note": (
            f"weights file minus the {embed} embedding table"
            if per_token is not None
            else f"unknown: embedding scheme {embed!r} not understood"
        ),
        "details": {"qwen": a.qwen, "model": model},
    }
    aicas.write(a.out, data)


if __name__ == "__main__":
    main()
