"""The benchmark script runs end to end with tiny counts (speed is never asserted in tests)."""

from __future__ import annotations

import json
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
