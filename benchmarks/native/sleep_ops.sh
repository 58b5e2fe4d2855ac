#!/usr/bin/env bash
# Instructions per sleep of a blocking reader of N journals (sleep_ops.py: bell_block with a
# timeout of 0, as wait="block" calls it), counted inside native_bell_block only
# (valgrind --tool=callgrind --toggle-collect; the difference of two runs at T1 and T2 sleeps).
# Usage: benchmarks/native/sleep_ops.sh [JOURNALS...]   (default: 1 16 256)
set -euo pipefail
export PYTHONHASHSEED=0
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-$here/../../.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
T1=500
T2=1500

total() {  # total JOURNALS TIMES: the Ir inside native_bell_block of one run in a fresh directory
    rm -rf "$work/j" && mkdir "$work/j"
    MMIPC_BACKEND=native valgrind --tool=callgrind --toggle-collect=native_bell_block \
        --callgrind-out-file="$work/cg.out" "$py" "$here/sleep_ops.py" "$1" "$2" "$work/j" \
        >/dev/null 2>"$work/vg.log"
    grep -E '^(summary|totals):' "$work/cg.out" | head -1 | awk '{print $2}'
}

[ $# -gt 0 ] || set -- 1 16 256
for journals in "$@"; do
    a=$(total "$journals" $T1)
    b=$(total "$journals" $T2)
    printf 'native   sleep and timed-out wake, %4s journals %9.1f instructions/sleep\n' "$journals" \
        "$(echo "($b - $a) / ($T2 - $T1)" | bc -l)"
done
