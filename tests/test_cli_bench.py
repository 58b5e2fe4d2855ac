"""`mmipc bench` says why a run failed and when the machine was too busy for its figures."""

from __future__ import annotations

import os
from typing import Any

from mmipc.cli._bench import failures, load_warnings


def run(peer: str, round_: int, **fields: Any) -> dict[str, Any]:
    return {"peer": peer, "size": 64, "mode": "latency", "round": round_, "load1": 0.0, **fields}


def test_failed_runs_are_named_with_their_reason() -> None:
    results = {
        "runs": [
            run("mmipc", 0, latency_us={"p50": 2.0}, disorder=0),
            run("pyzmq", 0, error="receiver failed: OSError('gone')"),
            run("os.pipe", 0, latency_us={"p50": 3.0}, disorder=4),
            run("naive-mmap", 0, error="no blocking read"),  # that mode does not apply: not a failure
        ]
    }
    assert failures(results) == [
        "pyzmq 64 B latency (round 1): receiver failed: OSError('gone')",
        "os.pipe 64 B latency (round 1): 4 message(s) out of order",
    ]


def test_a_loaded_machine_or_disagreeing_rounds_are_warned_about() -> None:
    cores = len(os.sched_getaffinity(0))
    quiet = {"runs": [run("mmipc", r, latency_us={"p50": 2.0}) for r in range(3)]}
    assert load_warnings(quiet) == []
    busy = {"runs": [run("mmipc", 0, latency_us={"p50": 2.0}, load1=cores * 2.0)]}
    assert "the machine was loaded during 1 run(s)" in load_warnings(busy)[0]
    spread = {"runs": [run("mmipc", r, latency_us={"p50": p50}) for r, p50 in enumerate((2.0, 2.1, 9.0))]}
    assert load_warnings(spread) == [
        "mmipc 64 B latency: p50 varies 2.0..9.0 us across rounds (median 2.1): something else was running"
    ]
