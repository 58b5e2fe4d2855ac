#!/usr/bin/env bash
# Instructions per Writer.write of 64 B with 0, 1 and 10 subscribed readers, per backend and per
# readers' mode (ring_ops.py: `behind`, readers that never read; `keepup`, merging reader processes
# that read every frame, clearing their flags), and the C API's mmipc_write with no reader
# (valgrind --tool=callgrind; the difference of two runs at N1 and N2 frames, as in
# callgrind_ops.sh). Usage: benchmarks/native/ring_ops.sh [READERS...]
# MODES (default "behind keepup") and BACKENDS (default "native python") narrow it down. Last, for
# the native backend, the write call alone (callgrind --toggle-collect=writer_write: no Python loop,
# no reader's read), readers `behind` and `inproc` (merging readers in this process that read
# every frame after each write: the keep-up case with exact counts; `keepup`'s processes are not
# exact, their timing varies under valgrind).
set -euo pipefail
export PYTHONHASHSEED=0
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-$here/../../.venv/bin/python}"
native="$here/../../src/mmipc/journal/_native"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
N1=5000
N2=15000

total() {  # total CMD...: the total Ir of one run in a fresh directory (appended to CMD)
    rm -rf "$work/j" && mkdir "$work/j"
    valgrind --tool=callgrind ${TOGGLE:-} --callgrind-out-file="$work/cg.out" "$@" "$work/j" >/dev/null 2>"$work/vg.log"
    grep -E '^(summary|totals):' "$work/cg.out" | head -1 | awk '{print $2}'
}

per_write() {  # per_write A B N1 N2
    echo "($2 - $1) / ($4 - $3)" | bc -l
}

gcc -std=c11 -O2 -I"$native" -o "$work/c_ops" "$here/c_ops.c" "$native/mmipc.c"
a=$(total "$work/c_ops" write $((N1 * 2)))
b=$(total "$work/c_ops" write $((N2 * 2)))
printf '%-8s mmipc_write 64 B,     no reader %8.1f instructions/write\n' c \
    "$(per_write "$a" "$b" $((N1 * 2)) $((N2 * 2)))"

[ $# -gt 0 ] || set -- 0 1 10
for backend in ${BACKENDS:-native python}; do
    for mode in ${MODES:-behind keepup}; do
        for readers in "$@"; do
            [ "$mode" = keepup ] && [ "$readers" = 0 ] && continue  # the same as behind
            a=$(MMIPC_BACKEND="$backend" total "$py" "$here/ring_ops.py" "$readers" "$N1" "$mode")
            b=$(MMIPC_BACKEND="$backend" total "$py" "$here/ring_ops.py" "$readers" "$N2" "$mode")
            printf '%-8s Writer.write 64 B, %2s readers %-6s %8.1f instructions/write\n' \
                "$backend" "$readers" "$mode" "$(per_write "$a" "$b" "$N1" "$N2")"
        done
    done
done

if [[ " ${BACKENDS:-native python} " == *" native "* ]]; then
    export TOGGLE=--toggle-collect=writer_write
    for mode in behind inproc; do
        for readers in "$@"; do
            [ "$mode" = inproc ] && [ "$readers" = 0 ] && continue
            a=$(MMIPC_BACKEND=native total "$py" "$here/ring_ops.py" "$readers" "$N1" "$mode")
            b=$(MMIPC_BACKEND=native total "$py" "$here/ring_ops.py" "$readers" "$N2" "$mode")
            printf '%-8s write call alone,    %2s readers %-6s %8.1f instructions/write\n' \
                native "$readers" "$mode" "$(per_write "$a" "$b" "$N1" "$N2")"
        done
    done
fi
