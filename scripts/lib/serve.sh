# Sourced by the serving benchmarks: start `qwen serve` on a free loopback port and wait
# until /health answers.
#   start_qwen_serve QWEN [SERVE ARGS...]   sets $port, $server (its pid) and $serve_log
#   stop_qwen_serve                         stops it and removes its log
start_qwen_serve() {
  local qwen="$1"; shift
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  serve_log=$(mktemp)
  "$qwen" serve --port "$port" "$@" > "$serve_log" 2>&1 &
  server=$!
  trap stop_qwen_serve EXIT
  for _ in $(seq 1 100); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
      "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    kill -0 "$server" 2>/dev/null || { cat "$serve_log"; echo "error: qwen serve exited" >&2; exit 1; }
    sleep 0.2
  done
  echo "error: qwen serve did not answer /health on port $port" >&2
  exit 1
}

stop_qwen_serve() {
  if [ -n "${server:-}" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
  rm -f "${serve_log:-}"
}
