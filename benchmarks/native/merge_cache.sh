#!/usr/bin/env bash
# Issue 16: what one Reader.read() costs per frame when following 1 and 256 journals (native
# backend, or MMIPC_BACKEND=python): instructions (callgrind) and simulated D1 and last-level cache
# misses (cachegrind --cache-sim=yes, the host's cache geometry) and conditional branches and
# their simulated mispredictions (--branch-sim=yes: Bc, Bcm), as (run that reads - run that
# does not) / frames, with merge_reads.py (the frames are written once per journal count, outside
# valgrind). Usage: merge_cache.sh [JOURNALS...] (default: 1 256).
# Cachegrind ignores prefetch instructions: a miss a prefetch hides still counts here.
set -euo pipefail
export PYTHONHASHSEED=0
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
py="${PYTHON:-$root/.venv/bin/python}"
frames="${FRAMES:-20000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

run() {  # run TOOL JOURNALS READ: prints the tool's totals line (events in the order of its header)
    local out="$work/out"
    if [ "$1" = cachegrind ]; then
        valgrind --tool=cachegrind --cache-sim=yes --branch-sim=yes \
            --cachegrind-out-file="$out" \
            "$py" "$here/merge_reads.py" read "$2" "$frames" "$3" "$work/j" >/dev/null 2>"$work/vg.log"
    else
        valgrind --tool=callgrind --callgrind-out-file="$out" \
            "$py" "$here/merge_reads.py" read "$2" "$frames" "$3" "$work/j" >/dev/null 2>"$work/vg.log"
    fi
    grep -E '^events:' "$out" | head -1 >"$work/events"
    grep -E '^(summary|totals):' "$out" | head -1 | cut -d' ' -f2-
}

[ $# -gt 0 ] || set -- 1 256
for journals1 in "$@"; do
    rm -rf "$work/j" && mkdir "$work/j"
    "$py" "$here/merge_reads.py" write "$journals1" "$frames" "$work/j"
    "$py" "$here/merge_reads.py" read "$journals1" "$frames" 0 "$work/j"  # its files made once
    ir0=$(run callgrind "$journals1" 0); ir1=$(run callgrind "$journals1" 1)
    c0=$(run cachegrind "$journals1" 0); c1=$(run cachegrind "$journals1" 1)
    python3 - "$journals1" "$frames" "$ir0" "$ir1" "$c0" "$c1" "$(cat "$work/events")" <<'PY'
import sys
j, f = int(sys.argv[1]), int(sys.argv[2])
ir = (int(sys.argv[4].split()[0]) - int(sys.argv[3].split()[0])) / f
names = sys.argv[7].split()[1:]  # cachegrind's events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw Bc Bcm ...
c0 = [int(x) for x in sys.argv[5].split()]
c1 = [int(x) for x in sys.argv[6].split()]
d = dict(zip(names, ((b - a) / f for a, b in zip(c0, c1))))
print(f"{j:5d} journals: {ir:7.1f} instructions/frame (callgrind), D1 misses/frame"
      f" {d['D1mr'] + d['D1mw']:5.2f} (read {d['D1mr']:.2f}, write {d['D1mw']:.2f}),"
      f" LL misses/frame {d['DLmr'] + d['DLmw']:5.2f}, I1 misses {d['I1mr']:.2f},"
      f" conditional branches/frame {d['Bc']:5.1f}, mispredicted {d['Bcm']:5.2f}")
PY
done
