#!/usr/bin/env bash
# The project's test command (README, CI): fetch the dev checkpoint if it is not there yet,
# then run every test, including the ones on the real checkpoint (marked #[ignore] so that a
# plain `cargo test` stays quick and says what it skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-dev-model.sh
cargo test --workspace --locked -- --include-ignored
