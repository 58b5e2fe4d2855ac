#!/usr/bin/env bash
# Instruction counts per operation (valgrind --tool=callgrind): run each case at two N and divide
# the difference of the totals by the difference of N. Prints one line per case.
set -euo pipefail
export PYTHONHASHSEED=0  # the same dict layouts in every run, so setup costs cancel exactly
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
py="${PYTHON:-$root/.venv/bin/python}"
native="$root/src/mmipc/journal/_native"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
gcc -std=c11 -O2 -I"$native" -o "$work/c_ops" "$here/c_ops.c" "$native/mmipc.c"
N1=10000
N2=30000

total() {  # total Ir of one run: total CMD...
    local out="$work/cg.out"
    rm -rf "$work/j" && mkdir "$work/j"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>"$work/vg.log"
    grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
}

per_op() {  # per_op LABEL CMD-PREFIX...  (N and the directory are appended)
    local label="$1"; shift
    local a b
    a=$(total "$@" "$N1" "$work/j")
    b=$(total "$@" "$N2" "$work/j")
    printf '%-40s %8.1f instructions/op\n' "$label" "$(echo "($b - $a) / ($N2 - $N1)" | bc -l)"
}

per_op_args() {  # like per_op, for py_ops.py whose N comes before the directory
    local label="$1" backend="$2" op="$3"
    local a b
    a=$(total "$py" "$here/py_ops.py" "$backend" "$op" "$N1" "$work/j")
    b=$(total "$py" "$here/py_ops.py" "$backend" "$op" "$N2" "$work/j")
    printf '%-40s %8.1f instructions/op\n' "$label" "$(echo "($b - $a) / ($N2 - $N1)" | bc -l)"
}

api_case() {  # api_case LABEL BACKEND OP: the public API (api_ops.py) on MMIPC_BACKEND=BACKEND
    local a b
    a=$(MMIPC_BACKEND="$2" total "$py" "$here/api_ops.py" "$3" "$N1" "$work/j")
    b=$(MMIPC_BACKEND="$2" total "$py" "$here/api_ops.py" "$3" "$N2" "$work/j")
    printf '%-40s %8.1f instructions/op\n' "$1" "$(echo "($b - $a) / ($N2 - $N1)" | bc -l)"
}

c_case() {  # c_case LABEL OP
    local a b
    a=$(total "$work/c_ops" "$2" "$N1" "$work/j")
    b=$(total "$work/c_ops" "$2" "$N2" "$work/j")
    printf '%-40s %8.1f instructions/op\n' "$1" "$(echo "($b - $a) / ($N2 - $N1)" | bc -l)"
}

c_case "C write 408 B" write
c_case "C empty read" read_empty
c_case "C one-frame read" read
per_op_args "Python loop iteration (baseline)" python loop
per_op_args "ext WriterCore.write 408 B" ext write
per_op_args "ext CursorCore.read empty" ext read_empty
per_op_args "ext CursorCore.read one frame" ext read
per_op_args "ext read_batch(1000) per frame" ext read_batch
per_op_args "python Writer.write 408 B" python write
per_op_args "python Reader.read empty" python read_empty
per_op_args "python Reader.read one frame" python read
api_case "Python loop iteration (baseline)" native loop
for backend in native python; do
    api_case "$backend Writer.write 64 B" "$backend" write64
    api_case "$backend Writer.write 408 B" "$backend" write408
    api_case "$backend Reader.read empty" "$backend" read_empty
    api_case "$backend Reader.read one 64 B frame" "$backend" read
    api_case "$backend Reader.read_data empty" "$backend" read_data_empty
    api_case "$backend Reader.read_data one 64 B frame" "$backend" read_data
    api_case "$backend Reader.read_batch(1000) per frame" "$backend" read_batch
done

loop_case() {  # loop_case LABEL BACKEND WHAT SIZE: one iteration of mmipc bench's throughput loops
    local a b
    a=$(MMIPC_BACKEND="$2" total "$py" "$here/bench_loops.py" "$3" "$N1" "$work/j" "$4")
    b=$(MMIPC_BACKEND="$2" total "$py" "$here/bench_loops.py" "$3" "$N2" "$work/j" "$4")
    printf '%-40s %8.1f instructions/op\n' "$1" "$(echo "($b - $a) / ($N2 - $N1)" | bc -l)"
}

loop_case "bench loop: empty (baseline)" native loop 64
for size in 64 408; do
    for what in mmipc-send naive-send mmipc-receive mmipc-frame-receive naive-receive; do
        loop_case "bench throughput loop: $what $size B" native "$what" "$size"
    done
    loop_case "bench throughput loop: mmipc-python send $size B" python mmipc-send "$size"
    loop_case "bench throughput loop: mmipc-python recv $size B" python mmipc-receive "$size"
done
