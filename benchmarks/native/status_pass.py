"""Instruction counts of one service pass over many journals in one directory (callgrind).

    python status_pass.py setup DIR N           # N journals in DIR (1 or 3 pages)
    valgrind --tool=callgrind python status_pass.py KIND DIR PASSES

KIND: `retain` (a retention pass, `Monitor.retain_all`), `retain-per-journal` (the same journals
retained one by one outside a pass: what a pass did before it listed each directory once),
`status` (each journal's status row and tail, as the service's status makes them). Run each at two
PASSES (1 and 3) and halve the difference of the totals: one pass's instructions, setup cancelled.
`benchmarks/native/status_pass.sh` does this."""

from __future__ import annotations

import os
import sys
import tempfile

from mmipc import Writer
from mmipc.service._lag import journal_tail
from mmipc.service._monitor import Monitor
from mmipc.service._retention import Policy, parse_age
from mmipc.service._status import journal_status, one_listing

PAGE = 64 * 1024


def setup(directory: str, count: int) -> None:
    for i in range(count):
        with Writer.create(directory, f"j{i:04d}", page_size=PAGE, service=None) as writer:
            for _ in range((i % 3) * 70):  # 0, 70 or 140 frames of 1000 B: 1 or 3 pages
                writer.write(bytes(1000))


def journals(directory: str) -> list[tuple[str, str]]:
    names = {entry.split(".")[0] for entry in os.listdir(directory) if entry.endswith(".journal")}
    return [(directory, name) for name in sorted(names)]


def run(kind: str, directory: str, passes: int) -> None:
    keys = journals(directory)
    home = tempfile.mkdtemp()
    monitor = Monitor(home, lambda: keys, Policy(max_age_ns=parse_age("10000d")))
    for _ in range(passes):
        if kind == "retain":
            monitor.retain_all()
        elif kind == "retain-per-journal":
            for key in keys:
                monitor.retain(key)
        else:
            with one_listing():
                for key in keys:
                    journal_status(*key)
                    journal_tail(*key)
    os.rmdir(home)


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(sys.argv[2], int(sys.argv[3]))
    else:
        run(sys.argv[1], sys.argv[2], int(sys.argv[3]))
