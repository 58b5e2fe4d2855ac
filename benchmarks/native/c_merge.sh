#!/usr/bin/env bash
# Issue 16 for the C API: ns per frame of mmipc_merge_read following N journals (c_merge.c), on
# FRAMES (default 100,000) frames of 64 B spread evenly, written by merge_reads.py. Wall clock:
# run it on a quiet machine; pinned to CPU ${CPU:-1}. Usage: c_merge.sh [JOURNALS...] (1 256 1024).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
py="${PYTHON:-$root/.venv/bin/python}"
native="$root/src/mmipc/journal/_native"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
${CC:-cc} -std=c11 -O2 -Wall -Wextra -Werror -I"$native" -o "$work/c_merge" "$here/c_merge.c" "$native/mmipc.c"
[ $# -gt 0 ] || set -- 1 256 1024
for journals in "$@"; do
    rm -rf "$work/j" && mkdir "$work/j"
    "$py" "$here/merge_reads.py" write "$journals" "${FRAMES:-100000}" "$work/j"
    for _ in 1 2 3; do taskset -c "${CPU:-1}" "$work/c_merge" "$work/j" "$journals"; done
done
