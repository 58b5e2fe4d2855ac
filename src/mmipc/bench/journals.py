"""`mmipc bench --journals 1,8,64,256`: what a reader pays per `read()` as it follows more journals.

One process, no service, no second CPU: `frames` frames of 64 bytes are written spread evenly over
N journals, then a reader following all N reads them back (ns per frame) and then calls `read()` on
the drained journals (ns per empty read). Issue 16's targets: per frame at 256 journals at most 2x
(native) / 3x (Python) the one-journal cost; an empty read at most 1 us (native) / 5x one journal.
Wall-clock figures: run it on a quiet machine. `mmipc bench --journals` pins itself to one CPU
(the second of `--cpu`) and measures the counts in `--rounds` interleaved rounds (default 5), each
row the median of its rounds. `measure_both` adds the pure-Python backend's rows,
measured in a child process (a process never mixes backends).

Before the clock starts, one frame per journal is written and read: the reader's first touch of a
journal's page costs a minor page fault (the kernel then maps the 16 pages around it), a one-time
cost per journal that a short drain would otherwise count as a per-frame cost (257 of 20,000
reads at 256 journals, 1,025 at 1,024; 31 at one journal). `faults` in each row counts the minor
faults taken inside the timed drain.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from ..journal._backend import BACKEND, ENV_VAR

PAYLOAD = bytes(64)


def measure_journals(
    counts: list[int], frames: int = 20000, empty_reads: int = 20000, rounds: int = 1
) -> list[dict[str, Any]]:
    """One row per journal count: ns per frame read and per empty read, with the backend's name.

    With `rounds` > 1 the counts are measured in interleaved rounds (1, 256, 1, 256...), and each
    row holds the median of its rounds, with every round's figures in `read_ns_rounds` and
    `empty_ns_rounds`: a drain of 20,000 frames lasts one or two milliseconds, so one drain alone
    moves with whatever else the machine does in that time.

    Example: ``measure_journals([1, 8], frames=2000, rounds=3)``
    """
    _one(1, min(frames, 2000), min(empty_reads, 2000))  # warm-up: imports, first maps, caches
    runs = [[_one(n, frames, empty_reads) for n in counts] for _ in range(max(1, rounds))]
    return [_median_row([run[k] for run in runs]) for k in range(len(counts))]


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One journal count's rounds as one row: the median of each figure, and the figures."""
    row = dict(rows[0])
    for key in ("read_ns", "empty_ns"):
        row[key] = statistics.median(r[key] for r in rows)
        row[f"{key}_rounds"] = [r[key] for r in rows]
    row["faults"] = max(r["faults"] for r in rows)
    return row


def measure_both(
    counts: list[int], frames: int = 20000, empty_reads: int = 20000, rounds: int = 1
) -> list[dict[str, Any]]:
    """`measure_journals` here, then with the pure-Python backend in a child (if this one is native).

    Example: ``measure_both([1, 256], frames=2000)``
    """
    rows = measure_journals(counts, frames, empty_reads, rounds)
    if BACKEND == "python":
        return rows
    code = (
        "import json, sys; from mmipc.bench.journals import measure_journals; "
        "print(json.dumps(measure_journals(*json.loads(sys.argv[1]))))"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, json.dumps([counts, frames, empty_reads, rounds])],
        env={**os.environ, ENV_VAR: "python"},
        capture_output=True,
        text=True,
        check=True,
    )
    return rows + list(json.loads(child.stdout))


def _one(journals: int, frames: int, empty_reads: int) -> dict[str, Any]:
    from mmipc import Reader, Writer

    workdir = tempfile.mkdtemp(prefix="mmipc-bench-journals-")
    try:
        writers = [Writer.create(workdir, f"j{i}", service=None, page_size=1 << 20) for i in range(journals)]
        with Reader.create("bench-journals", service=None) as reader:
            for i in range(journals):
                reader.add_journal(workdir, f"j{i}")
            for writer in writers:  # the warm-up: each journal's page touched once (module docstring)
                writer.write(PAYLOAD)
            read, clock = reader.read, time.perf_counter_ns
            while read() is not None:
                pass
            for k in range(frames):
                writers[k % journals].write(PAYLOAD)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = clock()
            got = 0
            while read() is not None:
                got += 1
            per_frame = (clock() - start) / max(got, 1)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            start = clock()
            for _ in range(empty_reads):
                read()
            empty = (clock() - start) / empty_reads
        for writer in writers:
            writer.close()
        return {
            "journals": journals,
            "backend": BACKEND,
            "frames": got,
            "read_ns": per_frame,
            "empty_ns": empty,
            "faults": faults,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def journals_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of `measure_journals` rows.

    Example: ``print(journals_table(measure_journals([1, 8])))``
    """
    lines = [
        "| journals | backend | read() per frame | empty read() |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['journals']} | {row['backend']} | {row['read_ns']:,.0f} ns | {row['empty_ns']:,.0f} ns |"
        )
    return "\n".join([*lines, "", *_against_one_journal(rows)])


def _against_one_journal(rows: list[dict[str, Any]]) -> list[str]:
    """Each count's cost as a multiple of the same backend's one-journal cost (issue 16's targets)."""
    one = {row["backend"]: row for row in rows if row["journals"] == 1}
    out = []
    for row in rows:
        base = one.get(row["backend"])
        if base is not None and row["journals"] != 1:
            out.append(
                f"- {row['backend']}, {row['journals']} journals: read() per frame "
                f"{row['read_ns'] / base['read_ns']:.2f}x one journal{_round_ratios(row, base)}, "
                f"empty read() {row['empty_ns'] / base['empty_ns']:.2f}x ({row['empty_ns']:,.0f} ns)"
            )
    return out


def _round_ratios(row: dict[str, Any], base: dict[str, Any]) -> str:
    """Each round's per-frame ratio to the same round's one-journal cost, when there were rounds."""
    pairs = list(zip(row.get("read_ns_rounds", []), base.get("read_ns_rounds", []), strict=True))
    if len(pairs) < 2:
        return ""
    ratios = sorted(ns / one for ns, one in pairs)
    return f" (rounds: {', '.join(f'{r:.2f}x' for r in ratios)})"
