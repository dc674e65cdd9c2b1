#!/usr/bin/env bash
# The project's test command (README, CI).
# 1. Fetch the dev checkpoint if it is not there yet.
# 2. Every test of the workspace, including those on the real checkpoint (marked #[ignore] so
#    that a plain `cargo test` stays quick and says what it skipped).
# 3. The dev checkpoint compiled into executables in four schemes, against transformers'
#    logits (its own target dir, so the default tiny build is not rebuilt back and forth).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-dev-model.sh
# load_external_server drives a server started by scripts/load-test.sh; it has nothing to test here.
cargo test --workspace --locked -- --include-ignored --skip load_external_server
QWENC_MODEL="$PWD/models/qwen2.5-coder-0.5b-instruct.gguf" QWENC_VARIANTS="f32;w8;w4g32;w4g32a" \
  cargo test --release --locked --features dev-model --target-dir target/dev-model --test compiled_dev -- --nocapture
bash scripts/fuzz.sh 5
# The aarch64 backends, cross-built and run under qemu (kernels vs twins, tiny model, greedy tokens).
bash scripts/test-aarch64.sh
