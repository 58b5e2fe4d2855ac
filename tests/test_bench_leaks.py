"""`mmipc bench` leaves nothing in the temporary directory, however it ends.

A bench killed mid-run used to leave its run's files (33 MB for mmipc) and its service's home (by
then holding only ``service.lock``): the kernel stopped its service, which shut down cleanly, but
the bench's own clean-up never ran.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from conftest import Child, wait_for

BENCH = ["-m", "mmipc", "bench", "--quick", "--peers", "mmipc", "--size", "64", "--intervals", "200"]


def bench_in(tmpdir: Path) -> Child:
    tmpdir.mkdir()
    return Child([sys.executable, *BENCH], env={**os.environ, "TMPDIR": str(tmpdir)})


@pytest.mark.once  # .ci/run: in its native pass only (the bench's clean-up is not the backend's)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_bench_killed_mid_run_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    tmpdir = tmp_path / "tmp"
    bench = bench_in(tmpdir)
    wait_for(lambda: "run 1/" in bench.stderr(), timeout=300, what="the bench's first run")
    assert os.listdir(tmpdir), "the bench keeps its files elsewhere: this test would prove nothing"
    bench.proc.send_signal(sig)
    assert bench.proc.wait(timeout=60) == -sig
    wait_for(lambda: not os.listdir(tmpdir), timeout=120, what="the bench's files to go")


@pytest.mark.once
def test_a_bench_that_ends_leaves_nothing_behind(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    bench = bench_in(tmpdir)
    bench.finish(timeout=600)
    assert not os.listdir(tmpdir)
