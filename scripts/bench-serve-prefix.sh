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
# shellcheck source=scripts/lib/serve.sh
source scripts/lib/serve.sh
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
for mb in 256 0; do
  start_qwen_serve "$qwen" --prefix-cache-mb "$mb"
  echo "== --prefix-cache-mb $mb"
  python3 bench/serve_prefix.py --url "http://127.0.0.1:$port" --text "$shared/data/wikitext2_test.txt"
  stop_qwen_serve
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
