"""The pure-Python `wait="block"` reader waits on its bell's FIFO: it napped in 1 ms steps (about
9,000 sleeps and 3-4% of a core over 10 idle seconds), where the native one waits on the futex."""

from __future__ import annotations

import json
import os

import pytest

from conftest import Procs
from mmipc import Writer

pytestmark = pytest.mark.once  # .ci/run: native pass only (its children run the pure-Python backend)


def test_an_idle_pure_python_block_reader_sleeps_a_handful_of_times(procs: Procs, jdir: str) -> None:
    """Counted, not timed: voluntary context switches over 3 idle seconds. The waits are naps of
    0.1 s doubling to 1.6 s (`_block.Naps`): 5 or so; the 1 ms steps were about 2,700."""
    with Writer.create(jdir, "idle", service=None) as writer:
        writer.write(b"")
        reader = procs.spawn(
            "bell_reader.py", jdir, "idle", "--idle", "3", env={**os.environ, "MMIPC_BACKEND": "python"}
        )
        result = json.loads(reader.finish(timeout=120).splitlines()[-1])
    assert result["frames"] == 1
    assert result["sleeps"] < 100, result


def test_a_pure_python_block_reader_without_its_fifo_does_not_wake_every_millisecond(
    procs: Procs, jdir: str
) -> None:
    """Without its FIFO (a regular file at its path here) it slept in 1 ms steps (about 2,700 in 3
    idle seconds); its steps now double up to 0.1 s while it finds nothing, and it says so once."""
    with Writer.create(jdir, "idle", service=None) as writer:
        writer.write(b"")
        env = {**os.environ, "MMIPC_BACKEND": "python"}
        reader = procs.spawn("bell_reader.py", jdir, "idle", "--idle", "3", "--squat-fifo", env=env)
        result = json.loads(reader.finish(timeout=120).splitlines()[-1])
    assert result["frames"] == 1
    assert result["sleeps"] < 150, result
    assert len([line for line in reader.stderr().splitlines() if ".fifo" in line]) == 1, reader.stderr()


def test_a_pure_python_block_reader_is_woken_by_a_ring_not_its_nap(procs: Procs, jdir: str) -> None:
    """With no nap at all (`max_nap=None`), only a ring can end the wait: every frame arrives, with
    the reader asleep on its FIFO in between (the lost-wake-up test of test_doorbell, pure Python)."""
    env = {**os.environ, "MMIPC_BACKEND": "python"}
    reader = procs.spawn("bell_reader.py", jdir, "lw", env=env)
    reader.expect_line("ready")
    writer = procs.spawn("bell_writer.py", jdir, "lw", "3000", "11", env=env)
    writer.expect_line("done", timeout=600)
    result = json.loads(reader.finish(timeout=600))
    assert (result["counts"], result["errors"]) == ({"lw": 3000}, [])
    assert result["wakes"] > 100, result  # about 900 here; the 1 ms steps slept about 100 times
