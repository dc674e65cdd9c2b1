#!/usr/bin/env bash
# Side-by-side benchmark of qwenc builds against transformers and llama.cpp, in ONE run, with
# the same prompt and thread count: the aicas profile (the AICAS 2025 challenge's script:
# prefill, decode incl. and excl. prefill, peak RSS), the machine's memory bandwidth (STREAM
# triad) and the decode bound it implies, and llama-bench as a cross-check. Not part of the
# test suite. See bench/peers/README.md.
#
# usage: bench/peers/run.sh [--quick] [--threads N] [--qwen PATH]... [--out DIR] [--skip-setup]
#   --quick        2 runs instead of 10 (llama-bench: -n 16 -r 1), for a smoke test
#   --threads N    threads for every engine (default: the number of cores)
#   --qwen PATH    a qwenc build to measure (repeatable; default target/qwen-dev)
#   --out DIR      where the table, JSON and chart go (default bench/results)
#   --skip-setup   do not run bench/peers/setup.sh (it is idempotent, but checks take seconds)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS="$ROOT/bench/peers"
CACHE="$ROOT/bench/cache"
BUILD="$ROOT/bench/build"
PY="$ROOT/bench/.venv/bin/python"
PROMPT=/work/shared/data/aicas2025_prompt.txt
[ -f "$PROMPT" ] || PROMPT="$ROOT/../shared/data/aicas2025_prompt.txt"
DEV_GGUF="$ROOT/models/qwen2.5-coder-0.5b-instruct.gguf"
FIXTURES=/work/shared/fixtures/reference_logits.json
[ -f "$FIXTURES" ] || FIXTURES="$ROOT/../shared/fixtures/reference_logits.json"

QUICK=0; THREADS="$(nproc)"; QWENS=(); OUT="$ROOT/bench/results"; SETUP=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --threads) THREADS="${2:?--threads needs a number}"; shift ;;
    --qwen) QWENS+=("$(realpath -m "${2:?--qwen needs a path}")"); shift ;;
    --out) OUT="$(realpath -m "${2:?--out needs a directory}")"; shift ;;
    --skip-setup) SETUP=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --threads must be a positive integer" >&2; exit 2; }
[ ${#QWENS[@]} -gt 0 ] || QWENS=("$ROOT/target/qwen-dev")
for q in "${QWENS[@]}"; do
  [ -x "$q" ] || { echo "run.sh: $q is not an executable qwenc build (qwenc build MODEL -o PATH)" >&2; exit 2; }
done
[ -f "$PROMPT" ] || { echo "run.sh: no prompt file $PROMPT" >&2; exit 2; }
# llama-bench: -p 256 -n 64 -r 5 for the real run; the quick run only proves it works.
if [ "$QUICK" = 1 ]; then RUNS=2; LB=(-p 256 -n 16 -r 1); STREAM_REPS=5
else RUNS=10; LB=(-p 256 -n 64 -r 5); STREAM_REPS=10; fi

log() { echo "[run] $(date +%T) $*" >&2; }
T_START=$(date +%s)
cd "$ROOT"

# --- 1. set-up (venv, llama.cpp, triad) -------------------------------------------------------
if [ "$SETUP" = 1 ]; then
  t0=$(date +%s); bash "$PEERS/setup.sh"; log "setup took $(( $(date +%s) - t0 )) s"
fi
[ -x "$PY" ] || { echo "run.sh: no venv at bench/.venv (run without --skip-setup)" >&2; exit 2; }
export PATH="$ROOT/bench/.venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1
QUANTIZE="$BUILD/llama.cpp/bin/llama-quantize"
LLAMA_BENCH="$BUILD/llama.cpp/bin/llama-bench"

# --- 2. the models ------------------------------------------------------------------------------
[ -f "$DEV_GGUF" ] || bash "$ROOT/scripts/fetch-dev-model.sh"
if [ ! -f "$CACHE/hf-f32/CONVERTED" ] || [ ! -f "$CACHE/hf-bf16/CONVERTED" ]; then
  "$PY" "$PEERS/convert.py" "$DEV_GGUF" "$CACHE" "$FIXTURES"
fi
for q in Q4_0 Q8_0; do
  f="$CACHE/dev-$q.gguf"
  if [ ! -f "$f" ]; then
    # --pure: every tensor (embedding and output too) in $q, as the challenge's llama.cpp entries.
    log "requantizing the dev GGUF to pure $q"
    "$QUANTIZE" --allow-requantize --pure "$DEV_GGUF" "$f.partial" "$q" "$THREADS" \
      >"$CACHE/quantize-$q.log" 2>&1 || { tail -20 "$CACHE/quantize-$q.log"; exit 1; }
    mv "$f.partial" "$f"
  fi
done

# --- 3. measurements (each engine in its own process: VmHWM is that engine's) -----------------
WORK="$CACHE/run"; rm -rf "$WORK"; mkdir -p "$WORK/engines" "$WORK/logs"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

log "memory bandwidth (triad, 3 x 256 MiB arrays, best of $STREAM_REPS)"
for t in $(printf '%s\n' 1 2 "$THREADS" | sort -nu); do
  "$BUILD/stream" "$t" 256 "$STREAM_REPS" >"$WORK/stream-$t.json"
  cat "$WORK/stream-$t.json" >&2
done

FAILED=()
engine() {  # engine NAME CMD...: runs one measurement, keeps going if it fails
  local name="$1"; shift
  log "measuring $name"
  if ! "$@" 2> >(tee "$WORK/logs/$name.log" >&2); then
    FAILED+=("$name"); log "$name FAILED (log: $WORK/logs/$name.log)"
  fi
}
COMMON=(--threads "$THREADS" --runs "$RUNS" --new-tokens 50 --prompt-file "$PROMPT")
n=0
for q in "${QWENS[@]}"; do
  n=$((n + 1))
  engine "qwen$n" "$PY" "$PEERS/qwen_engine.py" "$q" "$WORK/engines/0$n-qwen.json" "${COMMON[@]}"
done
engine llama-q4_0 "$PY" "$PEERS/llama_engine.py" "$CACHE/dev-Q4_0.gguf" Q4_0 "$WORK/engines/20-llama-q4_0.json" "${COMMON[@]}"
engine llama-q4_k_m "$PY" "$PEERS/llama_engine.py" "$DEV_GGUF" "Q4_K_M (dev file)" "$WORK/engines/21-llama-q4_k_m.json" "${COMMON[@]}"
engine llama-q8_0 "$PY" "$PEERS/llama_engine.py" "$CACHE/dev-Q8_0.gguf" Q8_0 "$WORK/engines/22-llama-q8_0.json" "${COMMON[@]}"
engine hf-bf16 "$PY" "$PEERS/hf_engine.py" "$CACHE/hf-bf16" bf16 "$WORK/engines/30-hf-bf16.json" "${COMMON[@]}"
engine hf-f32 "$PY" "$PEERS/hf_engine.py" "$CACHE/hf-f32" f32 "$WORK/engines/31-hf-f32.json" "${COMMON[@]}"

# --- 4. llama-bench cross-check --------------------------------------------------------------------
for q in Q4_0 Q4_K_M; do
  f="$CACHE/dev-$q.gguf"; [ "$q" = Q4_K_M ] && f="$DEV_GGUF"
  log "llama-bench $q"
  "$LLAMA_BENCH" -m "$f" "${LB[@]}" -t "$THREADS" -o json \
    >"$WORK/llama-bench-$q.json" 2>"$WORK/logs/llama-bench-$q.log" \
    || { FAILED+=("llama-bench-$q"); log "llama-bench $q FAILED"; }
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- 5. the report -----------------------------------------------------------------------------------
mkdir -p "$OUT"
"$PY" "$PEERS/report.py" "$WORK" "$OUT" --threads "$THREADS" --quick "$QUICK" \
  --load-before "$LOAD_BEFORE" --load-after "$LOAD_AFTER" \
  --wall-seconds "$(( $(date +%s) - T_START ))" --failed "${FAILED[*]:-}"
log "done in $(( $(date +%s) - T_START )) s: $OUT/peers.md, peers.json, peers.svg"
[ ${#FAILED[@]} -eq 0 ] || { log "failed: ${FAILED[*]}"; exit 1; }
