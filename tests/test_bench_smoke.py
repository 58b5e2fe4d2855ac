"""The benchmark script runs end to end with tiny counts (speed is never asserted in tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "journal_bench.py"


def test_journal_bench_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--rounds", "1", "--out", str(out), "--json", str(raw)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    text = out.read_text()
    for figure in ("| p50 |", "| p99.9 |", "| 64 B |", "| 408 B |", "`write` 408 B", "| 64 |", "## Seek"):
        assert figure in text, figure
    results = json.loads(raw.read_text())
    assert set(results["latency"]) == {"mmipc", "naive"}
    assert all(v[0] > 0 for v in results["throughput"].values())  # the script fails on any loss


def test_service_bench_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    subprocess.run(
        [sys.executable, str(SCRIPT.parent / "service_bench.py"), "--quick", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
        cwd=SCRIPT.parent,
    )
    text = out.read_text()
    for figure in ("page-switch writes, max", "all writes, p99.99", "round trip, p50", "new clients"):
        assert figure in text, figure


def test_quickstart_example_loses_nothing() -> None:
    example = SCRIPT.parent.parent / "examples" / "quickstart.py"
    out = subprocess.run(
        [sys.executable, str(example), "--count", "300", "--rate", "0"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "MMIPC_HOME"},
    ).stdout
    assert "received 300 of 300 frames, lost 0" in out
