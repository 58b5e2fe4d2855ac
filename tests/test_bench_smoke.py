"""The benchmark script runs end to end with tiny counts (speed is never asserted in tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mmipc

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "journal_bench.py"


@pytest.mark.once  # .ci/run: in its native pass only (20 s, the same script either way)
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


@pytest.mark.once  # .ci/run: in its native pass only (a benchmark script of the service)
def test_service_bench_quick_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    run = subprocess.run(
        [sys.executable, str(SCRIPT.parent / "service_bench.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=SCRIPT.parent,
    )
    assert run.returncode == 0, run.stderr[-4000:]  # the cause, in CI's output too
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


@pytest.mark.once  # .ci/run: native pass only (its peer mmipc-python is the pure-Python backend)
@pytest.mark.timeout(900)  # about 40 runs of every installed peer: minutes on a loaded machine
def test_mmipc_bench_runs_every_installed_peer_without_loss(tmp_path: Path) -> None:
    from mmipc.bench import PEERS

    installed = [p.name for p in PEERS if p.missing() is None]
    assert {"mmipc", "mmipc-python", "mmipc-batch", "naive-mmap", "os.pipe"} <= set(installed)
    raw = tmp_path / "bench.json"
    out = subprocess.run(
        [sys.executable, "-m", "mmipc", "bench", "--quick", "--size", "64", "-o", str(raw)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr  # non-zero on any loss, disorder or hang
    backend = f"mmipc backend: {mmipc.backend} (the peer mmipc-python runs the pure-Python one)"
    for figure in ("busy-polling reader", "blocking reader", "Throughput, 64-byte", backend):
        assert figure in out.stdout
    assert "| 200 us | mmipc-backoff (polling) |" in out.stdout  # backoff polls: it says so
    assert "| 200 us | mmipc | " in out.stdout and "asyncio reader" in out.stdout
    runs = json.loads(raw.read_text())["runs"]
    for peer in installed:
        mine = [r for r in runs if r["peer"] == peer]
        asyncio = {"latency-asyncio"} if peer in ("mmipc", "pyzmq-ipc") else set()
        assert {r["mode"] for r in mine} == {"latency", "latency-blocking", "throughput"} | asyncio, peer
        assert all(r.get("disorder", 0) == 0 for r in mine), peer
        assert any("per_s" in r for r in mine) and any("latency_us" in r for r in mine), peer
        assert all(r["cpu"] >= 0 for r in mine if "latency_us" in r), peer  # reader CPU per second


def test_mmipc_bench_dir_puts_the_journals_there_and_names_its_file_system(tmp_path: Path) -> None:
    """`--dir`: the journals go where the user's will (a disk, a tmpfs), the report says which file
    system that is, and nothing is left there; a path that is not a directory is one line."""
    store, raw = tmp_path / "store", tmp_path / "bench.json"
    store.mkdir()
    cmd = [sys.executable, "-m", "mmipc", "bench", "--quick", "--size", "64", "--peers", "mmipc,naive-mmap"]
    cmd += ["--modes", "throughput", "--dir", str(store), "-o", str(raw)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    where = json.loads(raw.read_text())["storage"]
    assert where["dir"] == os.path.realpath(store) and where["fs"] not in ("", "unknown"), where
    assert f"journals and logs in {where['dir']} ({where['fs']})" in out.stdout
    assert list(store.iterdir()) == []  # the scratch directory made there is removed
    missing = [*cmd[:-4], "--dir", str(tmp_path / "missing")]
    bad = subprocess.run(missing, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a directory" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_bench_helpers_die_with_a_killed_bench() -> None:
    from conftest import wait_for

    bench = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmipc",
            "bench",
            "--peers",
            "mmipc",
            "--size",
            "64",
            "--rounds",
            "1",
            "--count",
            "10000000",
        ],
        stdout=subprocess.DEVNULL,
    )

    def helpers() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if entry.isdigit() and int(fields[1]) == bench.pid and fields[0] != "Z":
                found.append(int(entry))
        return found

    wait_for(lambda: len(helpers()) >= 3, what="the service, the receiver and the sender")  # all spinning
    started = helpers()
    bench.kill()
    bench.wait(timeout=30)
    wait_for(
        lambda: all(not os.path.exists(f"/proc/{pid}") or _zombie(pid) for pid in started),
        what="the killed bench's helpers to die with it",
    )


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_mmipc_bench_journals_mode_reports_each_count() -> None:
    """One row per backend and count, each the median of its interleaved rounds (`--rounds`)."""
    cmd = [sys.executable, "-m", "mmipc", "bench", "--journals", "1,3", "--count", "300", "--rounds", "3"]
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    backends = ["native", "python"] if mmipc.backend == "native" else ["python"]  # both, when it can
    expected = [(b, n, 300) for b in backends for n in (1, 3)]
    assert [(r["backend"], r["journals"], r["frames"]) for r in rows] == expected
    assert all(r["read_ns"] > 0 and r["empty_ns"] > 0 for r in rows)
    for row in rows:
        for key in ("read_ns", "empty_ns"):
            assert len(row[f"{key}_rounds"]) == 3
            assert row[key] == sorted(row[f"{key}_rounds"])[1]


@pytest.mark.once
def test_mmipc_bench_modes_runs_only_the_modes_asked_for(tmp_path: Path) -> None:
    """`--modes`: the lead re-measures the wake-up latency alone (blocking and asyncio rows); the
    tables show only those, no busy-polling or throughput table of "not run" rows."""
    cmd = [sys.executable, "-m", "mmipc", "bench", "--peers", "mmipc,os.pipe", "--size", "64"]
    cmd += ["--modes", "latency-blocking,latency-asyncio", "--intervals", "1000", "--rounds", "1"]
    saved = tmp_path / "results.json"
    cmd += ["--count", "200", "-o", str(saved)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    headings = [line for line in out.stdout.splitlines() if line.startswith("### ")]
    assert headings == [
        "### Latency, 64-byte messages, blocking reader (sleeps in the kernel; `polling` peers spin, yield "
        "and nap) (us)",
        "### Latency, 64-byte messages, asyncio reader (mmipc `aframes`, pyzmq's asyncio socket) (us)",
    ], out.stdout
    assert "not run" not in out.stdout
    runs = json.loads(saved.read_text())["runs"]
    assert sorted((r["peer"], r["mode"]) for r in runs) == [
        ("mmipc", "latency-asyncio"),
        ("mmipc", "latency-blocking"),
        ("os.pipe", "latency-blocking"),
    ]
