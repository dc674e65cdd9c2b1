#!/usr/bin/env bash
# The project's test command (README, CI).
# 0. cargo fmt --check and clippy with warnings as errors.
# 1. Fetch the dev checkpoint if it is not there yet.
# 2. Every test of the workspace, including those on the real checkpoint (marked #[ignore] so
#    that a plain `cargo test` stays quick and says what it skipped) and the chat page in
#    headless Chromium (scripts/setup-browser-test.sh installs what it needs).
# 3. The dev checkpoint compiled into executables in five schemes, against transformers'
#    logits (its own target dir, so the default tiny build is not rebuilt back and forth).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage builds into its own target dir. Where disk is short (CI machines have had only
# a few GB free) a finished stage's build is removed before the next one starts; the stages
# took 15 GB together, the largest alone under 5 GB. QWENC_KEEP_TARGETS=1 keeps them.
stage_done() {
  local dir="$1" free_gb
  free_gb=$(df -Pk . | awk 'NR==2 { print int($4 / 1048576) }')
  if [ "${QWENC_KEEP_TARGETS:-0}" != 1 ] && [ "$free_gb" -lt 20 ] && [ -d "$dir" ]; then
    echo "disk: ${free_gb} GB free, removing $dir (QWENC_KEEP_TARGETS=1 keeps it)"
    rm -rf "$dir"
  fi
  echo "disk: $(df -Ph . | awk 'NR==2 { print $4 }') free"
}

# Style and lints first: they fail in a minute, before the long stages.
if command -v rustup >/dev/null && ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then
  rustup component add clippy rustfmt
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
bash scripts/fetch-dev-model.sh
# The chat page's browser test (tests/chat_page_browser.rs, in the workspace tests below):
# chromium, chromedriver and a venv with selenium, installed where missing. The test fails
# rather than skips without them here.
QWENC_BROWSER_PYTHON="$(bash scripts/setup-browser-test.sh | tail -n 1)"
export QWENC_BROWSER_PYTHON QWENC_REQUIRE_BROWSER=1
# load_external_server drives a server started by scripts/load-test.sh; it has nothing to test here.
cargo test --workspace --locked -- --include-ignored --skip load_external_server

# --- OpenAI Python SDK client test (tests/openai_sdk.rs) ---
# A project-local venv with the pinned `openai` (runtime/tests/clients/requirements.txt),
# made once and kept until the pin changes; the Rust test then drives the tiny-model
# `qwen serve` with it and fails rather than skips if the package is missing.
clients_venv="target/clients-venv"
clients_req="runtime/tests/clients/requirements.txt"
if ! cmp -s "$clients_req" "$clients_venv/requirements.txt"; then
  rm -rf "$clients_venv"
  python3 -m venv "$clients_venv"
  "$clients_venv/bin/pip" install -q --no-cache-dir -r "$clients_req"
  cp "$clients_req" "$clients_venv/requirements.txt"
fi
QWENC_REQUIRE_OPENAI=1 QWENC_PYTHON="$PWD/$clients_venv/bin/python" \
  cargo test --locked --test openai_sdk -- --nocapture
# --- end of the OpenAI Python SDK client test ---

stage_done target/debug
QWENC_MODEL="$PWD/models/qwen2.5-coder-0.5b-instruct.gguf" QWENC_VARIANTS="f32;w8;w8g128;w4g32;w4g32a" \
  cargo test --release --locked --features dev-model --target-dir target/dev-model --test compiled_dev -- --nocapture
stage_done target/dev-model
bash scripts/fuzz.sh 5
stage_done fuzz/target
# The aarch64 backends, cross-built and run under qemu (kernels vs twins, tiny model, greedy tokens).
bash scripts/test-aarch64.sh
