"""Red team 13: what session 13 merged (bell-list registration retried at sweeps, `bell_block`'s
signal handling, the NATS bridge's new options), attacked as a careless or hostile user would.
Each test is a defect found (and fixed): it failed before its fix. Real nats-server, real bridges.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import PROCS, Procs, wait_for
from test_bridge import (
    NatsServer,
    bridge_in,
    journal_frames,
    mirrored,
    nats_server,  # noqa: F401 (a fixture)
    state,
    stop,
    with_nats,
    write_frames,
)
from test_red_team_11 import _add_stream, _ship

FLOOD = 400


def _publish_foreign(url: str, count: int) -> None:
    """Another client publishes `count` messages that are no mmipc frame on the bridge's subjects."""

    async def publish(client: Any) -> None:
        js = client.jetstream()
        for i in range(count):
            await js.publish(f"mmipc.DESK.zz{i % 7}", b"not a frame", headers={"Other": str(i)})

    with_nats(url, publish)


@pytest.mark.once  # the bridge's dealings with NATS, whatever backend reads the journals
def test_skip_foreign_does_not_log_a_line_per_foreign_message(
    nats_server: NatsServer,  # noqa: F811
    procs: Procs,
    tmp_path: Path,
) -> None:
    """A flood of foreign messages logged one warning line each with --skip-foreign (400 messages,
    400 lines; a misconfigured publisher at 10,000 a second filled the bridge's log). The first few
    are logged with their subject and stream sequence, the rest counted (the state file, `mmipc
    status`) and summed up in one line at most every minute; the frames after them are mirrored."""
    _add_stream(nats_server.url, "DESK", ["mmipc.DESK.>"])
    _publish_foreign(nats_server.url, FLOOD)
    source, to = str(tmp_path / "src"), str(tmp_path / "mirror")
    frames = write_frames(source, "md", 3, 1)
    _ship(nats_server, procs, source, 3)
    into = bridge_in(procs, nats_server, to, "--skip-foreign", "--name", "bi-flood")
    wait_for(functools.partial(mirrored, to, "md", 3), what="the frames after the flood")
    assert journal_frames(to, "md") == frames
    wait_for(lambda: state("bi-flood").get("foreign_skipped") == FLOOD, what="the count")
    stop(into)
    lines = [x for x in into.stderr().splitlines() if "foreign" in x or "skipped" in x]
    assert len(lines) <= 12, f"{len(lines)} lines for {FLOOD} foreign messages: {lines[:3]} ..."
    assert "subject mmipc.DESK.zz0 (stream sequence 1)" in lines[0], lines[0]
    assert any(f"{FLOOD} foreign message" in x for x in lines), lines


def test_a_signal_storm_whose_handler_sleeps_in_another_reader_loses_nothing(jdir: str) -> None:
    """A pure-Python reader imported `_aio` (and asyncio) at its first wait, for its FIFO: a signal
    handler that ran during that import and slept in another reader's frames(wait="block") met the
    module half made ("cannot import name '_fifo' from partially initialized module"), and the
    reader died of ImportError. Every frame comes once, in order, through the storm."""
    count = 300
    for run in range(3):  # a fresh interpreter each: the import is at its first wait
        directory = os.path.join(jdir, str(run))
        storm = [sys.executable, str(PROCS / "signal_storm.py"), directory, str(count)]
        done = subprocess.run(storm, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.split() == [str(i) for i in range(count)]


_FENCE_HELD = """
import signal, sys
from mmipc import Reader, Writer
from mmipc.journal import _bell
directory = sys.argv[1]
Writer.create(directory, "j", service=None).close()
reader = Reader.create("fenced", service=None)
reader.add_journal(directory, "j")
got = []
signal.signal(signal.SIGUSR1, lambda signum, frame: got.extend(reader.frames(timeout=0.01)))
with _bell._fence_lock:  # the signal lands inside a fence of the code it interrupts
    signal.raise_signal(signal.SIGUSR1)
print("slept", len(got))
"""


def test_a_signal_handler_that_sleeps_in_a_reader_inside_a_fence_does_not_deadlock(jdir: str) -> None:
    """The pure-Python fence was a round trip of one shared lock: a signal handler that slept in a
    reader (its announcement fences) while the code it interrupted held that lock waited for it for
    ever. The signal storm test hung in about one run in ten that way (the lead's, after red13)."""
    from mmipc.journal._backend import native

    if native is not None:
        pytest.skip("the native fence is an instruction, not a lock")
    command = [sys.executable, "-c", _FENCE_HELD, jdir]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["slept", "0"]
