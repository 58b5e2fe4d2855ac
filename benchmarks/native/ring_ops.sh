#!/usr/bin/env bash
# Instructions per Writer.write of 64 B with 0, 1 and 10 subscribed readers that never read, per
# backend (valgrind --tool=callgrind; the difference of two runs at N1 and N2 frames, as in
# callgrind_ops.sh). Usage: benchmarks/native/ring_ops.sh [READERS...]
set -euo pipefail
export PYTHONHASHSEED=0
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-$here/../../.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
N1=5000
N2=15000

total() {  # total BACKEND READERS N
    rm -rf "$work/j" && mkdir "$work/j"
    MMIPC_BACKEND="$1" valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
        "$py" "$here/ring_ops.py" "$2" "$3" "$work/j" >/dev/null 2>"$work/vg.log"
    grep -E '^(summary|totals):' "$work/cg.out" | head -1 | awk '{print $2}'
}

[ $# -gt 0 ] || set -- 0 1 10
for backend in native python; do
    for readers in "$@"; do
        a=$(total "$backend" "$readers" "$N1")
        b=$(total "$backend" "$readers" "$N2")
        printf '%-8s Writer.write 64 B, %2s readers %8.1f instructions/write\n' \
            "$backend" "$readers" "$(echo "($b - $a) / ($N2 - $N1)" | bc -l)"
    done
done
