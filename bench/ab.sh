#!/usr/bin/env bash
# A/B of two qwen builds, alternating, `qwen bench --profile aicas --runs 3` each time, with the
# load average after each pair: prefill, decode incl. and excl. prefill, peak RSS.
#   bash bench/ab.sh OLD NEW [PAIRS=5]
# Run it alone on the machine (no builds or other benchmarks beside it).
set -euo pipefail
old="${1:?usage: bench/ab.sh OLD NEW [PAIRS]}"; new="${2:?usage: bench/ab.sh OLD NEW [PAIRS]}"
pairs="${3:-5}"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
for i in $(seq 1 "$pairs"); do
  for exe in "$old" "$new"; do
    "$exe" bench --profile aicas --runs 3 --json "$tmp/r.json" >/dev/null
    python3 - "$exe" "$i" "$tmp/r.json" <<'PY'
import json, sys
exe, i, path = sys.argv[1:]
a = json.load(open(path))["report"]["aicas"]
print(f"{i} {exe}: prefill {a['prefill_tok_s']:.1f}  decode {a['decode_tok_s']:.1f}  "
      f"excl. prefill {a['decode_excl_prefill_tok_s']:.1f}  peak RSS {a['peak_rss_mb']:.1f} MB")
PY
  done
  echo "   load: $(cut -d' ' -f1-3 /proc/loadavg)"
done
