#!/usr/bin/env bash
# The compression quality table of docs/quality.md: for each variant, compress the dev
# checkpoint, build an executable, and measure KL / top-1 / perplexity against the f32
# reference logits and lm-eval accuracy on a bounded number of documents.
#
#   bash scripts/quality-table.sh [NAME ...]      (default: all variants below)
#
# Environment: LIMIT (docs per task, default 100; LIMIT=full runs ARC-Challenge 1172, PIQA
# 1838 and the 1000 `exact_lmeval` HellaSwag rows), KL_TOKENS (reference tokens, 1024),
# TARGET (kernel backend, x86-avx512), THREADS (2), KEEP_WEIGHTS=1 keeps the executables'
# weights files (each 0.4-2.5 GB) after measuring. Results: target/quality/NAME.json and a
# Markdown table on stdout (scripts/quality-table.sh prints it again from the JSON files
# when every variant is already measured).
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=models/qwen2.5-coder-0.5b-instruct.gguf
OUT=target/quality
LIMIT=${LIMIT:-100}
KL_TOKENS=${KL_TOKENS:-1024}
TARGET=${TARGET:-x86-avx512}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/quality/cargo}

# name | compress flags
VARIANTS=(
  "w8|--scheme w8"
  "w8g128|--scheme w8g128"
  "w4g32-rtn|--scheme w4g32"
  "w4g32-awq|--scheme w4g32 --method awq"
  "w4g32-gptq|--scheme w4g32 --method gptq"
  "w4g32a-rtn|--scheme w4g32a"
  "budget-400|--budget-mb 400"
  "budget-340|--budget-mb 340"
  "budget-300|--budget-mb 300"
  "budget-240|--budget-mb 240"
  "budget-240-gptq|--budget-mb 240 --method gptq,lm_head=gptq"
  "budget-300-tied|--budget-mb 300 --tie-embeddings"
  "budget-240-tied|--budget-mb 240 --tie-embeddings"
  "budget-240-tied-gptq|--budget-mb 240 --tie-embeddings --method gptq"
  "f32|--scheme f32"
)

cargo build --release -p qwenc-codegen --bin qwenc
QWENC=$CARGO_TARGET_DIR/release/qwenc

REF=$OUT/reference-$KL_TOKENS.kl
if [ ! -f "$REF" ]; then
  "$QWENC" reference-logits "$SRC" --tokens "$KL_TOKENS" -o "$REF"
fi

want=("$@")
for v in "${VARIANTS[@]}"; do
  name=${v%%|*}
  flags=${v#*|}
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " =~ " $name " ]]; then continue; fi
  [ -f "$OUT/$name.json" ] && continue
  dir=$OUT/dev-$name
  exe=$OUT/q-$name
  t0=$(date +%s)
  if [ ! -f "$dir/manifest.json" ]; then
    # shellcheck disable=SC2086
    "$QWENC" compress "$SRC" -o "$dir" --force $flags 2>&1 | tee "$OUT/$name.compress.log" | grep -v '^\s*$' | tail -n 12
  fi
  t1=$(date +%s)
  "$QWENC" build "$dir" -o "$exe" --target "$TARGET"
  t2=$(date +%s)
  "$exe" --threads "$THREADS" kl "$REF" --json > "$OUT/$name.kl.json"
  t3=$(date +%s)
  if [ "$LIMIT" = full ]; then limit_flags=(--hellaswag-exact); else limit_flags=(--limit "$LIMIT"); fi
  "$exe" --threads "$THREADS" eval "${limit_flags[@]}" --output "$OUT/$name.eval.json" > "$OUT/$name.eval.txt"
  t4=$(date +%s)
  # Peak RSS (VmHWM, kB) of the process while generating 64 tokens from a short prompt.
  /usr/bin/time -f '%M' -o "$OUT/$name.rss" "$exe" --threads "$THREADS" generate \
    "The history of the printing press" --max-tokens 64 > /dev/null
  python3 - "$name" "$dir" "$exe" "$LIMIT" "$((t1 - t0))" "$((t3 - t2))" "$((t4 - t3))" > "$OUT/$name.json" <<'PY'
import json, os, sys
name, d, exe, limit, t_compress, t_kl, t_eval = sys.argv[1:]
rss_kb = int(open(f"target/quality/{name}.rss").read().split()[-1])
m = json.load(open(f"{d}/manifest.json"))
kl = json.load(open(f"target/quality/{name}.kl.json"))
ev = json.load(open(f"target/quality/{name}.eval.json"))
r = ev["results"]
print(json.dumps({
    "name": name,
    "quantizer": m["quantizer"],
    "bits_per_weight": m["totals"]["bits_per_weight"],
    "weights_file_bytes": os.path.getsize(exe + ".weights"),
    "safetensors_bytes": os.path.getsize(f"{d}/model.safetensors"),
    "kl": kl,
    "acc": {t: {"acc": r[t]["acc,none"], "acc_norm": r[t]["acc_norm,none"],
                "acc_stderr": r[t]["acc_stderr,none"], "acc_norm_stderr": r[t]["acc_norm_stderr,none"]} for t in r},
    "challenge_average": ev["challenge"]["average"],
    "peak_rss_generate_mb": rss_kb * 1024 / 1e6,
    "n_docs": {t: ev["n-samples"][t]["effective"] for t in r},
    "limit": limit,
    "seconds": {"compress": int(t_compress), "kl": int(t_kl), "eval": int(t_eval)},
}))
PY
  if [ "${KEEP_WEIGHTS:-0}" != 1 ]; then rm -f "$exe.weights"; fi
done

python3 - <<'PY'
import glob, json
rows = [json.load(open(f)) for f in sorted(glob.glob("target/quality/*.json")) if not f.endswith((".kl.json", ".eval.json"))]
print("| variant | quantizer | bits/w | weights MB | peak RSS MB | mean KL | 99% KL | top-1 | ppl (ref) | ARC-C acc / norm | HellaSwag acc / norm | PIQA acc / norm | challenge avg | docs ARC/HS/PIQA | s (compress/kl/eval) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    k, a = r["kl"], r["acc"]
    f = lambda t: f'{a[t]["acc"]:.3f} / {a[t]["acc_norm"]:.3f}' if t in a else "—"
    s = r["seconds"]
    n = r.get("n_docs", {})
    docs = "/".join(str(n.get(t, r["limit"])) for t in ("arc_challenge", "hellaswag", "piqa"))
    rss = f'{r["peak_rss_generate_mb"]:.0f}' if "peak_rss_generate_mb" in r else "—"
    print(f'| {r["name"]} | {r["quantizer"]} | {r["bits_per_weight"]:.3f} | {r["weights_file_bytes"]/1e6:.0f} | {rss} | {k["mean_kl"]:.4f} ± {k["mean_kl_stderr"]:.4f} | {k["p99_kl"]:.3f} | {100*k["top1_agreement"]:.1f}% | {k["ppl_model"]:.3f} ({k["ppl_reference"]:.3f}) | {f("arc_challenge")} | {f("hellaswag")} | {f("piqa")} | {r["challenge_average"]:.4f} | {docs} | {s["compress"]}/{s["kl"]}/{s["eval"]} |')
PY
