#!/usr/bin/env bash
# Instructions of one service pass over N journals in one directory (callgrind): each KIND of
# status_pass.py run at 1 and 3 passes, half the difference. Usage: status_pass.sh [N] [KIND...]
set -euo pipefail
export PYTHONHASHSEED=0
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-$here/../../.venv/bin/python}"
n="${1:-300}"; shift || true
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/j"
"$py" "$here/status_pass.py" setup "$work/j" "$n"
total() {
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$py" "$here/status_pass.py" "$@" \
        >/dev/null 2>"$work/vg.log"
    grep -E '^(summary|totals):' "$work/cg.out" | head -1 | awk '{print $2}'
}
for kind in "${@:-retain-per-journal retain status}"; do
    for k in $kind; do
        a=$(total "$k" "$work/j" 1)
        b=$(total "$k" "$work/j" 3)
        printf '%-20s %d journals: %'"'"'d instructions a pass\n' "$k" "$n" "$(( (b - a) / 2 ))"
    done
done
