"""`mmipc read --durable`, `mmipc cursors [--json] [--reset NAME [--to T]]`, and read's live default."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from mmipc import Reader


def mmipc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, timeout=300)


def frame_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "latency" in line and "summary" not in line]


def cursor(name: str) -> dict[str, Any]:
    listed = json.loads(mmipc("cursors", "--json").stdout)
    [found] = [c for c in listed if c["name"] == name]
    return dict(found)


def test_durable_read_resumes_and_cursors_lists_and_resets(jdir: str) -> None:
    assert mmipc("write", jdir, "md", "--count", "300", "--rate", "0").returncode == 0
    first = mmipc("read", jdir, "md", "--name", "cli-dur", "--durable", "--count", "100")
    assert first.returncode == 0, first.stderr
    assert len(frame_lines(first.stdout)) == 100
    [entry] = cursor("cli-dur")["journals"]
    assert entry["name"] == "md" and entry["page_no"] == 0 and entry["nano"] > 0
    rest = mmipc("read", jdir, "md", "--name", "cli-dur", "--durable")
    assert len(frame_lines(rest.stdout)) == 200  # resumed after the 100 it printed: no repeats, no loss
    table = mmipc("cursors").stdout
    assert "cli-dur" in table and f"{jdir}/md" in table
    with Reader.create("probe", service=None) as probe:
        probe.add_journal(jdir, "md")
        frames = [probe.read() for _ in range(51)]
    assert frames[50] is not None
    moved = mmipc("cursors", "--reset", "cli-dur", "--to", str(frames[50].nano))
    assert moved.returncode == 0 and "reset durable reader cli-dur" in moved.stdout
    again = mmipc("read", jdir, "md", "--name", "cli-dur", "--durable")
    assert len(frame_lines(again.stdout)) == 250
    assert mmipc("cursors", "--reset", "cli-dur").returncode == 0
    assert "cli-dur" not in mmipc("cursors").stdout


def test_read_follows_live_frames_unless_told_otherwise(jdir: str) -> None:
    assert mmipc("write", jdir, "md", "--count", "20", "--rate", "0").returncode == 0
    live = mmipc("read", jdir, "md", "--timeout", "0.5")
    assert live.returncode == 0, live.stderr
    assert frame_lines(live.stdout) == []  # the old frames are not replayed
    assert "live frames only" in " ".join(mmipc("read", "--help").stdout.split())


def test_cursor_cli_errors_are_one_line() -> None:
    no_name = mmipc("read", "/tmp", "md", "--durable")
    assert no_name.returncode == 2 and "--durable needs --name" in no_name.stderr
    assert "Traceback" not in no_name.stderr
    lone_to = mmipc("cursors", "--to", "0")
    assert lone_to.returncode == 2 and "--to needs --reset" in lone_to.stderr
