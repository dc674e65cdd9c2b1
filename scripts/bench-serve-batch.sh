#!/usr/bin/env bash
# Batched decode of `qwen serve` on the dev model (a benchmark, not a test): 8 concurrent
# streaming clients with 64-token prompts (passages of WikiText-2), exactly 128 greedy new
# tokens each, against each prompt run alone (bench/serve_batch.py prints the figures and
# checks that every client's output is the one it gets alone). Speculation and prefix reuse are
# off: the figure is batched decode alone. Run it on a quiet machine.
#   bash scripts/bench-serve-batch.sh      (QWEN=path/to/qwen, CLIENTS=8, JSON=out.json)
set -euo pipefail
cd "$(dirname "$0")/.."
qwen="${QWEN:-target/qwen-dev}"
clients="${CLIENTS:-8}"
shared="${QWENC_SHARED:-../shared}"
[ -x "$qwen" ] || { echo "error: $qwen not found (scripts/run-dev.sh builds it)" >&2; exit 1; }
[ -x target/release/qwenc ] || cargo build --release --locked --bin qwenc

# One prompt per client: the first 64 tokens of successive long WikiText-2 paragraphs (lines).
ids=$(mktemp)
python3 - "$shared/data/wikitext2_test.txt" "$clients" > "$ids.txt" <<'PY'
import sys
paras = [p.strip() for p in open(sys.argv[1]).read().split("\n") if len(p.strip()) > 600]
print("\x1e".join(paras[: int(sys.argv[2])]))
PY
python3 - "$ids.txt" "$ids" <<'PY'
import json, subprocess, sys
out = []
for text in open(sys.argv[1]).read().split("\x1e"):
    r = subprocess.run(["target/release/qwenc", "tokenize", "models/qwen2.5-coder-0.5b-instruct.gguf"], input=text,
                       capture_output=True, text=True, check=True)
    out.append(json.loads(r.stdout))
json.dump(out, open(sys.argv[2], "w"))
PY

# shellcheck source=scripts/lib/serve.sh
source scripts/lib/serve.sh
start_qwen_serve "$qwen" --parallel "$clients" --no-speculate --prefix-cache-mb 0
trap 'stop_qwen_serve; rm -f "$ids" "$ids.txt"' EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $("$qwen" info | grep -i backend || true)"
python3 bench/serve_batch.py --url "http://127.0.0.1:$port" --ids "$ids" --clients "$clients" ${JSON:+--json "$JSON"}
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
