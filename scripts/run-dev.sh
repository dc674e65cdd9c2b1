#!/usr/bin/env bash
# The main job on the dev checkpoint: fetch it, build the host tool, and generate with it.
# Prints the continuation and the tokens/s.
set -euo pipefail
cd "$(dirname "$0")/.."
model=models/qwen2.5-coder-0.5b-instruct.gguf
bash scripts/fetch-dev-model.sh "$model"
cargo build --release --locked --bin qwenc
prompt="${1:-def is_prime(n):}"
# The f32 reference for now; the compiled executable replaces it when `qwenc build` lands.
target/release/qwenc info "$model" | head -3
target/release/qwenc reference "$model" "$prompt" -n 32
