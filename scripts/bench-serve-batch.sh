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

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$qwen" serve --port "$port" --parallel "$clients" --no-speculate --prefix-cache-mb 0 > "$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log" "$ids" "$ids.txt"' EXIT
for _ in $(seq 1 100); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "error: qwen serve exited" >&2; exit 1; }
  sleep 0.2
done
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $("$qwen" info | grep -i backend || true)"
python3 bench/serve_batch.py --url "http://127.0.0.1:$port" --ids "$ids" --clients "$clients" ${JSON:+--json "$JSON"}
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
