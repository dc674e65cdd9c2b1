#!/usr/bin/env bash
# Outside the test suite: the dev checkpoint (models/dev-w4g32) compiled for aarch64-i8mm
# (cross, aarch64-unknown-linux-gnu), run under qemu (-cpu max) on two prompts of
# /work/shared/fixtures/reference_logits.json; its greedy 8 tokens must equal the x86 build's.
# Prints how long each step took.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash scripts/setup-aarch64.sh
FIX="${QWENC_SHARED:-/work/shared}/fixtures/reference_logits.json"
MODEL=models/dev-w4g32
OUT="${QWENC_ARM_OUT:-target/arm-dev}"
mkdir -p "$OUT"
export CARGO_TARGET_DIR="${QWENC_ARM_TARGET_DIR:-$PWD/target/aarch64}"

cargo build --release --locked --bin qwenc -q
QWENC=$CARGO_TARGET_DIR/release/qwenc
"$QWENC" build "$MODEL" -o "$OUT/qwen-i8mm" --target aarch64-i8mm --triple aarch64-unknown-linux-gnu
t1=$(date +%s); echo "arm build: $((t1 - t0)) s"
if [ ! -x "$OUT/qwen-x86" ]; then
  "$QWENC" build "$MODEL" -o "$OUT/qwen-x86" --target native
fi
t2=$(date +%s); echo "x86 build: $((t2 - t1)) s"

ids() { python3 -c 'import json,sys; print(json.load(sys.stdin)["ids"])'; }
fail=0
for i in 0 1; do
  prompt="$(python3 -c "import json; print(json.load(open('$FIX'))['cases'][$i]['prompt'])")"
  s=$(date +%s)
  want="$("$OUT/qwen-x86" generate "$prompt" --max-tokens 8 --ignore-eos --json | ids)"
  m=$(date +%s)
  got="$(QWENC_QEMU_CPU=max bash scripts/qemu-aarch64.sh "$OUT/qwen-i8mm" generate "$prompt" --max-tokens 8 --ignore-eos --json | ids)"
  e=$(date +%s)
  echo "prompt $i: ${prompt:0:40}"
  echo "  x86 ($(( m - s )) s):          $want"
  echo "  aarch64-i8mm qemu ($(( e - m )) s): $got"
  [ "$got" = "$want" ] || { echo "  DIFFERENT"; fail=1; }
done
echo "total: $(( $(date +%s) - t0 )) s"
exit $fail
