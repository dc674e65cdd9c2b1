#!/usr/bin/env bash
# Prefix reuse of `qwen serve` on the dev model (a benchmark, not a test): time to first token
# of a chat's second turn against its first (a ~1,500-token message of WikiText-2 and its
# reply), with prefix reuse on, then off (bench/serve_prefix.py). Run it on a quiet machine.
#   bash scripts/bench-serve-prefix.sh      (QWEN=path/to/qwen)
set -euo pipefail
cd "$(dirname "$0")/.."
qwen="${QWEN:-target/qwen-dev}"
shared="${QWENC_SHARED:-../shared}"
[ -x "$qwen" ] || { echo "error: $qwen not found (scripts/run-dev.sh builds it)" >&2; exit 1; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
for mb in 256 0; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log=$(mktemp)
  "$qwen" serve --port "$port" --prefix-cache-mb "$mb" > "$log" 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
  for _ in $(seq 1 100); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$log"; echo "error: qwen serve exited" >&2; exit 1; }
    sleep 0.2
  done
  echo "== --prefix-cache-mb $mb"
  python3 bench/serve_prefix.py --url "http://127.0.0.1:$port" --text "$shared/data/wikitext2_test.txt"
  kill "$server"; wait "$server" 2>/dev/null || true
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
