#!/usr/bin/env bash
# Instructions in the inner loop of each aarch64 tiled kernel pass, read from the disassembly
# of a built aarch64 binary (default: the kernel-test binary of scripts/test-aarch64.sh, which
# holds every backend's kernels and the twins). For each kernel pass function matching
# PATTERN it prints the innermost loop that holds the integer dot instructions (sdot/smmla,
# or for a twin the multiply-adds): its length, and that length per 32 weights of one row.
#   usage: scripts/arm-insn-count.sh [BINARY] [PATTERN]
# PATTERN (a Python regex on demangled names) defaults to the 1152x896 w4g32 and w8 kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${QWENC_ARM_TARGET_DIR:-$PWD/target/aarch64}/aarch64-unknown-linux-gnu/debug/deps"
bin="${1:-$(ls -t "$dir"/kernels_aarch64-* 2>/dev/null | grep -v '\.d$' | head -1)}"
pattern="${2:-(neon|i8mm|sve2|twin4)_matmul_(w4g32|w8)_1152x896}"
[ -f "$bin" ] || { echo "no binary (build scripts/test-aarch64.sh first): $bin" >&2; exit 1; }
py="$(mktemp)"
trap 'rm -f "$py"' EXIT
cat >"$py" <<'PY'
import re, sys
pattern = re.compile(sys.argv[1])
funcs, name = {}, None
for line in sys.stdin:
    m = re.match(r'^([0-9a-f]+) <(.*)>:$', line)
    if m:
        name = m.group(2); funcs[name] = []; continue
    m = re.match(r'^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$', line)
    if m and name is not None:
        funcs[name].append((int(m.group(1), 16), m.group(2), m.group(3)))
DOT = ('sdot', 'smmla')
TWIN = ('madd', 'mla', 'smlal', 'smlal2', 'sdot', 'mul')
rows = []
for name, insns in funcs.items():
    if not pattern.search(name) or 'tokens_' not in name and 'closure' not in name:
        continue
    addr = {a: i for i, (a, _, _) in enumerate(insns)}
    loops = []
    for i, (a, op, args) in enumerate(insns):
        if op.startswith('b') or op in ('cbnz', 'cbz', 'tbnz', 'tbz'):
            t = re.search(r'\b([0-9a-f]+) <', args)
            if t and int(t.group(1), 16) <= a and int(t.group(1), 16) in addr:
                body = insns[addr[int(t.group(1), 16)]:i + 1]
                ops = [o for _, o, _ in body]
                dots = sum(o in DOT for o in ops)
                if dots == 0 and 'twin' in name:
                    dots = sum(o in TWIN for o in ops)
                if dots:
                    loops.append((len(body), dots, ops))
    if not loops:
        continue
    n, dots, ops = min(loops)
    kind = 'w8' if '_w8_' in name else 'w4g32'
    rows.append((name, n, dots, ops))
for name, n, dots, ops in sorted(rows):
    short = re.sub(r'^.*?(\w+_matmul_\w+).*?(tokens_\d+|closure[^>]*)?.*$', r'\1 \2', name)
    counts = {}
    for o in ops:
        counts[o] = counts.get(o, 0) + 1
    top = ', '.join(f'{o}×{c}' for o, c in sorted(counts.items(), key=lambda x: -x[1])[:8])
    print(f'{short:60s} loop {n:4d} insns, {dots:3d} dot/mul | {top}')
PY
aarch64-linux-gnu-objdump -d --no-show-raw-insn -C "$bin" | python3 "$py" "$pattern"
