#!/usr/bin/env bash
# Load test of `qwen serve` on the real model: 32 concurrent clients x 20 streamed greedy
# requests (runtime/tests/serve_load.rs, load_external_server). Prints errors, mixed-up
# answers (each must equal the answer to the same prompt asked alone), p50/p99 latency,
# tokens/s, and the server's peak RSS.
#   bash scripts/load-test.sh            (QWEN=path/to/qwen, LOAD_CLIENTS, LOAD_REQUESTS,
#                                         LOAD_MAX_TOKENS, SERVE_ARGS="--parallel 8" to change)
set -euo pipefail
cd "$(dirname "$0")/.."
qwen="${QWEN:-target/qwen-dev}"
if [ ! -x "$qwen" ] || ! "$qwen" serve --help >/dev/null 2>&1; then
  [ -x target/release/qwenc ] || cargo build --release --locked --bin qwenc
  target/release/qwenc build models/dev-w4g32 -o "$qwen"
fi
# Build the client first, so the server does not wait on the compiler.
cargo test --release --locked -p qwenc-runtime --test serve_load --no-run 2>/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
# shellcheck disable=SC2086
"$qwen" serve --port "$port" ${SERVE_ARGS:-} > "$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "error: qwen serve exited" >&2; exit 1; }
  sleep 0.2
done
QWEN_SERVE_ADDR="127.0.0.1:$port" timeout 1800 cargo test --release --locked -p qwenc-runtime --test serve_load \
  load_external_server -- --ignored --nocapture 2>&1 | grep -E '^load:|panicked|test result'
echo "server peak RSS: $(grep VmHWM /proc/$server/status | awk '{print $2/1024 " MiB"}')"
