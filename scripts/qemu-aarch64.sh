#!/usr/bin/env bash
# Cargo runner for aarch64-unknown-linux-gnu (.cargo/config.toml): runs an aarch64 binary
# under qemu-user with the CPU model in QWENC_QEMU_CPU (default `max`: dotprod, i8mm, SVE2 at
# qemu's default vector length; e.g. `max,sve=off` for NEON only, `max,sve256=on`).
set -euo pipefail
exec qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu "${QWENC_QEMU_CPU:-max}" "$@"
