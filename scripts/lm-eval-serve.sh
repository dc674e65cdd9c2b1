#!/usr/bin/env bash
# lm-evaluation-harness through `qwen serve`, against `qwen eval`, on ARC-Challenge.
#   bash scripts/lm-eval-serve.sh [LIMIT]        (default 50 documents)
# 1. A venv at bench/.venv-lmeval with lm_eval[api] and transformers (for the tokenizer).
# 2. target/qwen-dev (QWEN=... to use another executable), built from models/dev-w4g32 if it
#    is missing or has no `serve` command.
# 3. `qwen serve` on a free loopback port; lm_eval --model local-completions with the task
#    YAML scripts/lmeval/arc_challenge_local.yaml (tokenized requests: the HF tokenizer from
#    the model's tokenizer.json, echo + logprobs).
# 4. `qwen eval --tasks arc_challenge --limit LIMIT`, and a comparison: acc and acc_norm
#    must be equal, else the script fails.
set -euo pipefail
cd "$(dirname "$0")/.."
limit="${1:-50}"
root="$PWD"
shared="${QWENC_SHARED:-$(cd .. && pwd)/shared}"
data="$shared/data/arc_challenge_test.jsonl"
[ -f "$data" ] || { echo "error: $data not found (set QWENC_SHARED)" >&2; exit 1; }
work="bench/lmeval-serve"
venv="bench/.venv-lmeval"
mkdir -p "$work"

if [ ! -x "$venv/bin/lm_eval" ] || ! "$venv/bin/python" -c "import transformers, aiohttp, tenacity" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "lm_eval[api]" transformers
fi

qwen="${QWEN:-target/qwen-dev}"
if [ ! -x "$qwen" ] || ! "$qwen" serve --help >/dev/null 2>&1; then
  [ -d models/dev-w4g32 ] || { echo "error: models/dev-w4g32 not found (scripts/run-dev.sh makes it)" >&2; exit 1; }
  [ -x target/release/qwenc ] || cargo build --release --locked --bin qwenc
  target/release/qwenc build models/dev-w4g32 -o "$qwen"
fi

# The tokenizer lm-eval encodes with: the model's own tokenizer.json.
tokdir="$work/tokenizer"
mkdir -p "$tokdir"
cp models/dev-w4g32/tokenizer.json "$tokdir/tokenizer.json"
cat > "$tokdir/tokenizer_config.json" <<'JSON'
{"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": false, "eos_token": "<|endoftext|>", "model_max_length": 32768}
JSON

tasks="$work/tasks"
mkdir -p "$tasks"
sed "s#/work/shared/data/arc_challenge_test.jsonl#$data#" scripts/lmeval/arc_challenge_local.yaml > "$tasks/arc_challenge_local.yaml"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$qwen" serve --port "$port" --parallel 1 > "$work/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log"; echo "error: qwen serve exited" >&2; exit 1; }
  sleep 0.2
done

echo "lm-eval: local-completions on http://127.0.0.1:$port, $limit documents"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false "$venv/bin/lm_eval" \
  --model local-completions \
  --model_args "model=qwen-dev,base_url=http://127.0.0.1:$port/v1/completions,tokenizer=$root/$tokdir,tokenizer_backend=huggingface,tokenized_requests=True,num_concurrent=1,max_retries=1,timeout=600" \
  --include_path "$tasks" --tasks arc_challenge_local --limit "$limit" \
  --output_path "$work/out" --log_samples > "$work/lm_eval.log" 2>&1 || { tail -40 "$work/lm_eval.log"; exit 1; }
kill "$server" 2>/dev/null || true

echo "qwen eval: arc_challenge, $limit documents"
"$qwen" eval --tasks arc_challenge --limit "$limit" --data-dir "$shared/data" --output "$work/qwen_eval.json" > "$work/qwen_eval.log" 2>&1

python3 - "$work" <<'PY'
import glob, json, sys
work = sys.argv[1]
files = sorted(glob.glob(f"{work}/out/**/results_*.json", recursive=True))
lm = json.load(open(files[-1]))["results"]["arc_challenge_local"]
q = json.load(open(f"{work}/qwen_eval.json"))["results"]["arc_challenge"]
rows = [("acc", lm["acc,none"], q["acc,none"]), ("acc_norm", lm["acc_norm,none"], q["acc_norm,none"])]
print(f"{'metric':<10} {'lm-eval via serve':>18} {'qwen eval':>10}")
for name, a, b in rows:
    print(f"{name:<10} {a:>18.4f} {b:>10.4f}")
if any(abs(a - b) > 1e-12 for _, a, b in rows):
    sys.exit("lm-eval via serve and qwen eval disagree")
print("lm-eval via serve equals qwen eval")
PY
