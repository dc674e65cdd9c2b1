#!/usr/bin/env bash
# The main job on the dev checkpoint: fetch it, compress it (w4g32 layers; the lm_head in
# w4g32a, stored once and also serving as the embedding), compile it into the `qwen`
# executable, and generate. Prints the text and tokens/s.
# - w4g32a lm_head: it reads 85 MB per token instead of w8's 137 MB (decode +7%).
# - --tie-embeddings: the GGUF's embedding (Q5_0) and lm_head (Q8_0) are two roundings of
#   Qwen2.5's one tied matrix, 4.4% apart. Storing it once takes the weights from 423 to
#   287 MB and peak RSS from 496 to 360 MB, at the same mean KL on WikiText-2 (0.0999 against
#   0.1000, `qwen kl`, 510 positions) and the same speed (docs/quality.md).
set -euo pipefail
cd "$(dirname "$0")/.."
gguf=models/qwen2.5-coder-0.5b-instruct.gguf
compressed=models/dev-w4g32
prompt="${1:-def is_prime(n):}"

bash scripts/fetch-dev-model.sh "$gguf"
cargo build --release --locked --bin qwenc
target/release/qwenc compress "$gguf" -o "$compressed" --scheme w4g32 --lm-head w4g32a --tie-embeddings --force
target/release/qwenc build "$compressed" -o target/qwen-dev
target/qwen-dev info
target/qwen-dev generate "$prompt" --max-tokens 64
