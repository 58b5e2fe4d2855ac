"""`mmipc replay` and `replay()`: the same frames, in the same order, at the recorded pace."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from mmipc import Reader, UsageError, Writer
from mmipc.journal._schema import load_schemas
from mmipc.tools._replay import parse_speed, replay

BASE = 1_700_000_000_000_000_000


def record(jdir: str, name: str, stamps: list[int], schemas: Any = None) -> None:
    with Writer.create(jdir, name, service=None, schemas=schemas, page_size=64 * 1024) as writer:
        for i, nano in enumerate(stamps):
            writer.write_at(f"{name}-{i}".encode(), nano, msg_type=i % 3, source=i)


def frames(jdir: str, names: list[str]) -> list[tuple[str, int, int, int, bytes]]:
    with Reader.create(f"replay-check-{os.getpid()}", service=None) as reader:
        for name in names:
            reader.add_journal(jdir, name)
        return [
            (f.journal.name, f.nano, f.msg_type, f.source, bytes(f.data)) for f in iter(reader.read, None)
        ]


def test_replay_keeps_order_timestamps_payloads_and_schemas(tmp_path: Any) -> None:
    src, dst = str(tmp_path / "day"), str(tmp_path / "replayed")
    record(src, "a", [BASE + 10 * i for i in range(300)], schemas={0: "ctp"})
    record(src, "b", [BASE + 5 * i for i in range(300)])  # ties with a
    done = replay(src, ["b", "a"], dst, speed=None)
    assert done.frames == 600 and done.first_nano == BASE and done.last_nano == BASE + 2990
    assert frames(dst, ["b", "a"]) == frames(src, ["b", "a"])
    assert load_schemas(dst, "a") == load_schemas(src, "a") and load_schemas(dst, "b") == {}


def test_replay_keeps_the_recorded_spacing(tmp_path: Any) -> None:
    src, dst = str(tmp_path / "day"), str(tmp_path / "replayed")
    gaps = [0, 40, 40, 120, 0, 100]  # ms
    stamps = [BASE + sum(gaps[: i + 1]) * 1_000_000 for i in range(len(gaps))]
    record(src, "md", stamps)
    started = time.monotonic()
    replay(src, ["md"], dst, speed=1.0, retime=True)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.3  # a lower bound: a loaded machine can only make the replay slower
    got = [nano for _, nano, *_ in frames(dst, ["md"])]
    assert np.diff(got).tolist() == np.diff(stamps).tolist()
    assert got[0] > stamps[0]  # stamped on today's clock
    replay(src, ["md"], str(tmp_path / "fast"), speed=10.0, retime=True)
    fast = [nano for _, nano, *_ in frames(str(tmp_path / "fast"), ["md"])]
    assert np.diff(fast).tolist() == (np.diff(stamps) // 10).tolist()


def test_replay_refuses_to_go_back_in_time_or_to_read_its_own_output(tmp_path: Any) -> None:
    src = str(tmp_path / "day")
    record(src, "md", [BASE, BASE + 1])
    with pytest.raises(UsageError, match="would write the journals it reads"):
        replay(src, ["md"], src, speed=None)
    replay(src, ["md"], str(tmp_path / "out"), speed=None)
    with pytest.raises(UsageError, match="not older than the last frame of journal md"):
        replay(src, ["md"], str(tmp_path / "out"), speed=None)


@pytest.mark.parametrize(("text", "speed"), [("1x", 1.0), ("10x", 10.0), ("0.5x", 0.5), ("max", None)])
def test_speeds_parse(text: str, speed: float | None) -> None:
    assert parse_speed(text) == speed


def test_the_replay_command_copies_a_day(tmp_path: Any) -> None:
    src, dst = str(tmp_path / "day"), str(tmp_path / "replayed")
    record(src, "md", [BASE + i for i in range(50)])
    out = subprocess.run(
        [sys.executable, "-m", "mmipc", "replay", src, "md", "--to", dst, "--speed", "max", "--standalone"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "replayed 50 frame(s)" in out.stdout, out.stderr
    assert frames(dst, ["md"]) == frames(src, ["md"])
    bad = subprocess.run(
        [sys.executable, "-m", "mmipc", "replay", src, "md", "--to", dst, "--speed", "fast"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "speed 'fast' is not a factor" in bad.stderr
