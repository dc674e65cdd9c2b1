"""Converts the dev GGUF to Hugging Face directories (f32 and bf16) for the transformers peers.

transformers dequantizes every GGUF tensor to float (`from_pretrained(..., gguf_file=...)`).
Two traps on this machine, handled here:
- transformers 5 refuses `save_pretrained` on a model loaded from GGUF: the model is rebuilt
  with `from_config` and `load_state_dict(strict=True)` (every tensor accounted for), then saved.
- transformers 5 may write `rope_parameters` without a top-level `rope_theta`, which
  transformers 4 silently reads as 10000: the GGUF's theta is written at the top level too.

The f32 directory is checked against the shared fixtures (transformers' own logits on the dev
checkpoint) before it is marked complete, so a wrong conversion never gets benchmarked.

usage: convert.py GGUF OUT_DIR FIXTURES_JSON   (writes OUT_DIR/hf-f32, OUT_DIR/hf-bf16)
"""

import json
import os
import shutil
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

DONE = "CONVERTED"  # marker written last: a directory without it is rebuilt


def rope_theta_of(config) -> float:
    theta = getattr(config, "rope_theta", None)
    params = getattr(config, "rope_parameters", None) or {}
    if theta is None and isinstance(params, dict):
        theta = params.get("rope_theta")
    if theta is None:
        raise SystemExit("convert: the GGUF config has no rope_theta; refusing to guess one")
    return float(theta)


def save(model, tokenizer, theta: float, out: str, dtype: torch.dtype) -> None:
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    fresh = AutoModelForCausalLM.from_config(model.config, dtype=dtype)
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    fresh.load_state_dict(state, strict=True)
    fresh.config.dtype = dtype
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    path = os.path.join(tmp, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["rope_theta"] = theta
    rp = cfg.get("rope_parameters")
    if isinstance(rp, dict):
        rp.setdefault("rope_theta", theta)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)


def check_against_fixtures(out: str, fixtures: str) -> None:
    """The saved f32 model must give transformers' fixture logits (top-10 within 1e-3)."""
    with open(fixtures) as f:
        cases = json.load(f)["cases"]
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    model.eval()
    worst = 0.0
    for case in cases[:2]:
        ids = torch.tensor([case["ids"]])
        with torch.inference_mode():
            logits = model(ids).logits[0]
        for pos, ref in enumerate(case["positions"]):
            row = logits[pos]
            if int(row.argmax()) != ref["top_ids"][0]:
                raise SystemExit(
                    f"convert: {out} disagrees with the fixtures: top-1 at position {pos} of "
                    f"{case['prompt']!r} is {int(row.argmax())}, expected {ref['top_ids'][0]}"
                )
            got = row[torch.tensor(ref["top_ids"])]
            err = float((got - torch.tensor(ref["top_logits"])).abs().max())
            worst = max(worst, err)
    if worst > 1e-3:
        raise SystemExit(f"convert: {out} logits differ from the fixtures by {worst:.2e} (> 1e-3)")
    print(f"[convert] {out} matches the fixtures (max top-10 logit error {worst:.1e})", file=sys.stderr)


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    gguf, out_dir, fixtures = sys.argv[1:]
    if not os.path.isfile(gguf):
        raise SystemExit(f"convert: no GGUF at {gguf} (run scripts/fetch-dev-model.sh)")
    targets = {"hf-f32": torch.float32, "hf-bf16": torch.bfloat16}
    todo = {n: d for n, d in targets.items() if not os.path.exists(os.path.join(out_dir, n, DONE))}
    if not todo:
        print("[convert] HF directories already there", file=sys.stderr)
        return
    folder, name = os.path.split(os.path.abspath(gguf))
    print(f"[convert] loading {gguf} with transformers (dequantizes to f32)", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    theta = rope_theta_of(AutoConfig.from_pretrained(folder, gguf_file=name))
    for n, dtype in todo.items():
        out = os.path.join(out_dir, n)
        save(model, tokenizer, theta, out, dtype)
        if dtype == torch.float32:
            check_against_fixtures(out, fixtures)
        open(os.path.join(out, DONE), "w").close()
        print(f"[convert] wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
