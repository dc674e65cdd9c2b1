#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 5) and prints the executions.
#   bash scripts/fuzz.sh [SECONDS]
# Needs a nightly toolchain (cargo-fuzz builds with -Zsanitizer=address): without one it
# says SKIPPED and exits 0. Installs cargo-fuzz with `cargo install --locked` if missing.
# A crash fails the script; libFuzzer leaves the input in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-5}"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: SKIPPED (no nightly toolchain; install one with 'rustup toolchain install nightly')"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

# FUZZ_TARGETS="a b" runs only those.
read -r -a targets <<< "${FUZZ_TARGETS:-safetensors_header gguf_reader config_json tokenizer_roundtrip serve_request}"

# Seed corpora (fuzz/corpus is not checked in): small valid inputs to start from.
for t in safetensors_header gguf_reader config_json tokenizer_roundtrip serve_request; do
  mkdir -p "fuzz/corpus/$t"
done
shared="${QWENC_SHARED:-../shared}"
for f in models/dev-w4g32/config.json "$shared/fixtures/qwen2.5-0.5b_config.json" "$shared/fixtures/dev_model_config_transformers5.json"; do
  [ -f "$f" ] && cp "$f" "fuzz/corpus/config_json/$(basename "$f")"
done
# A safetensors file with one F32 tensor of shape [2]: 8-byte header length, JSON, data.
header='{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
{ printf "$(printf '\\x%02x' ${#header})\\x00\\x00\\x00\\x00\\x00\\x00\\x00"; printf '%s' "$header"; printf '\x00\x00\x80\x3f\x00\x00\x00\x40'; } \
  > fuzz/corpus/safetensors_header/one_tensor.safetensors
# The start of the dev GGUF (header, metadata keys) when it is here.
gguf=models/qwen2.5-coder-0.5b-instruct.gguf
[ -f "$gguf" ] && head -c 4096 "$gguf" > fuzz/corpus/gguf_reader/dev_head.gguf
printf 'def is_prime(n):\n    return n > 1 <|im_end|> caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd' > fuzz/corpus/tokenizer_roundtrip/mixed.txt
printf '%s' '{"prompt": "Hello", "max_tokens": 4, "temperature": 0, "stop": ["lo"], "echo": true, "logprobs": 2}' \
  > fuzz/corpus/serve_request/completion.json
printf '%s' '{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": true}' \
  > fuzz/corpus/serve_request/chat.json

summary=()
for t in "${targets[@]}"; do
  dict=()
  [ -f "fuzz/dicts/$t.dict" ] && dict=("-dict=dicts/$t.dict")
  log="fuzz/artifacts/$t.log"
  mkdir -p fuzz/artifacts
  echo "fuzz: $t for ${seconds}s"
  # -rss_limit_mb: the GGUF target may allocate what a header claims, within reason.
  # fuzz/regressions/TARGET (checked in): inputs that once failed, run first every time.
  regress=()
  [ -d "fuzz/regressions/$t" ] && regress=("regressions/$t")
  if ! (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" "${regress[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 "${dict[@]}") > "$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t FAILED (log: $log; crash input in fuzz/artifacts/$t/)"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  summary+=("$t: $runs executions in ${seconds}s")
done
printf 'fuzz: %s\n' "${summary[@]}"
echo "fuzz: all ${#targets[@]} targets ran without a crash"
