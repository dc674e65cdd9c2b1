"""The aicas profile (the AICAS 2025 challenge's throughput script) shared by the peer engines.

Same definitions as `qwen bench --profile aicas` (runtime/src/bench/mod.rs), so that the
figures sit in one table:
- prefill = runs x n_prompt / total time of `runs` full forward passes over the prompt;
- decode = runs x new / total time of `runs` generations of exactly `new` tokens, each
  including its prefill (the challenge's figure);
- decode excl. prefill = runs x (new - 1) / total time of the same generations after their
  first token (optimum-benchmark's definition).
No warm-up: the first run is timed like the others, as the challenge did.
"""

import json
import os
import sys
import time

PROMPT_FILE = "/work/shared/data/aicas2025_prompt.txt"


def now() -> float:
    return time.perf_counter()


def peak_rss_mb() -> float | None:
    """VmHWM of this process in MB (10^6 bytes), as qwen bench reports it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    value, unit = line.split()[1:3]
                    if unit.lower() != "kb":
                        return None
                    return int(value) * 1024 / 1e6
    except OSError:
        return None
    return None


def rate(volume: float, seconds: float) -> float:
    return volume / seconds if seconds > 0 else float("nan")


def result(
    *,
    engine: str,
    prompt_tokens: int,
    new_tokens: int,
    threads: int,
    forward_seconds: list[float],
    generate_seconds: list[float],
    first_token_seconds: list[float],
    weight_bytes_per_token: int | None,
    weight_bytes_note: str,
    details: dict,
) -> dict:
    runs = len(forward_seconds)
    if runs == 0 or len(generate_seconds) != runs or len(first_token_seconds) != runs:
        raise ValueError("aicas: need as many generations and first-token times as forward passes")
    decode_only = [g - f for g, f in zip(generate_seconds, first_token_seconds)]
    return {
        "engine": engine,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "runs": runs,
        "threads": threads,
        "prefill_tok_s": rate(runs * prompt_tokens, sum(forward_seconds)),
        "decode_tok_s": rate(runs * new_tokens, sum(generate_seconds)),
        "decode_excl_prefill_tok_s": rate(runs * (new_tokens - 1), sum(decode_only)),
        "forward_seconds": forward_seconds,
        "generate_seconds": generate_seconds,
        "first_token_seconds": first_token_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "weight_bytes_per_token": weight_bytes_per_token,
        "weight_bytes_note": weight_bytes_note,
        "details": details,
    }


def read_prompt(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise SystemExit(f"cannot read the prompt file {path}: {e}")


def write(out: str, data: dict) -> None:
    with open(out, "w") as f:
        json.dump(data, f, indent=1)
    print(
        f"[{data['engine']}] prefill {data['prefill_tok_s']:.1f} tok/s, decode "
        f"{data['decode_tok_s']:.2f} tok/s incl. prefill, {data['decode_excl_prefill_tok_s']:.2f} "
        f"excl., peak RSS {data['peak_rss_mb']:.0f} MB",
        file=sys.stderr,
    )


def progress(engine: str, line: str) -> None:
    print(f"[{engine}] {line}", file=sys.stderr, flush=True)


def set_threads_env(threads: int) -> None:
    """Before torch or ggml start their pools: OpenMP and MKL obey these."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
