#!/usr/bin/env bash
# The aarch64 backends under qemu-user (called by scripts/test.sh; ~15 min budget on 2 cores).
# 1. Cross-build the aarch64 kernel tests and the compiled tiny model's tests once.
# 2. Run them on four emulated CPUs: NEON only, and SVE at 128, 256 and 512 bits. A kernel
#    set the CPU cannot run prints SKIPPED and asserts nothing.
# 3. The tiny-model `qwen` built for each aarch64 backend must generate the same greedy
#    tokens under qemu as the scalar build on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup-aarch64.sh

T=aarch64-unknown-linux-gnu
# Own target dir: the cross build never invalidates the host one.
export CARGO_TARGET_DIR="${QWENC_ARM_TARGET_DIR:-$PWD/target/aarch64}"
# The tiny build's own schemes run on i8mm (sdot for one token, smmla for more); build.rs
# adds one variant per other aarch64 backend (tiny_variants).
export QWENC_TARGET=aarch64-i8mm
unset QWENC_MODEL QWENC_VARIANTS QWENC_SCHEME

echo "== aarch64: building the tests"
cargo test --locked --target "$T" -p qwenc --test kernels_aarch64 --test compiled_tiny --test logit_hashes --test forward_segments --no-run
echo "   built in $(( $(date +%s) - start )) s"

log="$(mktemp)"
# Each kernel set runs on the CPU it is meant for (the others print SKIPPED); twin4 against
# the scalar kernels is plain Rust and runs natively in `cargo test`.
for cpu_kernels in "max,sve=off:neon,i8mm" "max,sve128=on:sve128" "max,sve256=on:sve256" "max,sve512=on:sve512"; do
  cpu="${cpu_kernels%%:*}"
  echo "== aarch64: qemu -cpu $cpu"
  if ! QWENC_QEMU_CPU="$cpu" QWENC_ARM_KERNELS="${cpu_kernels#*:}" cargo test --locked --target "$T" -p qwenc \
      --test kernels_aarch64 --test compiled_tiny --test logit_hashes --test forward_segments -- --nocapture --skip twin4 >"$log" 2>&1; then
    tail -60 "$log"; echo "FAILED on -cpu $cpu"; exit 1
  fi
  grep -E "SKIPPED|bit-identical|worst|test result|UNRECORDED" "$log" || true
done
rm -f "$log"
echo "   kernel and tiny-model tests done at $(( $(date +%s) - start )) s"

echo "== aarch64: greedy tokens of the tiny model vs the scalar build on the host"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
prompt="Hello world, 12345"
gen() { "$@" generate "$prompt" --max-tokens 24 --ignore-eos --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ids"])'; }
# Their own target dir: building `qwen` for another backend rewrites the qwen.weights beside
# it, which the tests above (their CARGO_BIN_EXE_qwen) read on the next run.
export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/greedy"
QWENC_VARIANTS="" QWENC_TARGET=scalar cargo build --locked --bin qwen -q
want="$(gen "$CARGO_TARGET_DIR/debug/qwen")"
echo "   scalar (host): $want"
for backend in aarch64-neon aarch64-i8mm aarch64-sve2 aarch64-sve2-256 aarch64-sve2-512; do
  QWENC_VARIANTS="" QWENC_TARGET="$backend" cargo build --locked --target "$T" --bin qwen -q
  mkdir -p "$work/$backend"
  cp "$CARGO_TARGET_DIR/$T/debug/qwen" "$CARGO_TARGET_DIR/$T/debug/qwen.weights" "$work/$backend/"
  case "$backend" in
    aarch64-sve2) cpu="max,sve128=on" ;;
    aarch64-sve2-256) cpu="max,sve256=on" ;;
    aarch64-sve2-512) cpu="max,sve512=on" ;;
    *) cpu="max,sve=off" ;;
  esac
  got="$(QWENC_QEMU_CPU="$cpu" gen bash scripts/qemu-aarch64.sh "$work/$backend/qwen")"
  echo "   $backend (qemu -cpu $cpu): $got"
  [ "$got" = "$want" ] || { echo "FAILED: $backend generates other tokens than the scalar build"; exit 1; }
done
# A CPU without the features is refused at start-up with a clear message.
if QWENC_QEMU_CPU="max,sve128=on" bash scripts/qemu-aarch64.sh "$work/aarch64-sve2-512/qwen" info >"$work/refused" 2>&1; then
  echo "FAILED: the SVE-512 build ran on a 128-bit SVE CPU"; exit 1
fi
grep -q "SVE vectors of 512 bits" "$work/refused" || { cat "$work/refused"; echo "FAILED: no clear refusal message"; exit 1; }
echo "   refused on the wrong vector length: $(head -c 160 "$work/refused")"
echo "== aarch64: all passed in $(( $(date +%s) - start )) s"
