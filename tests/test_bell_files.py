"""Doorbell files on disk: what is removed after a reader dies, and what is never removed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mmipc.journal._bell import BellList, _bell_dir

BELL_DIR = _bell_dir()
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a file of another user")


@pytest.fixture
def planted() -> Iterator[list[str]]:
    """Paths a test creates in the bell directory, removed after it whatever happened."""
    paths: list[str] = []
    yield paths
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _plant(planted: list[str], base: str, uid: int = -1) -> str:
    path = os.path.join(BELL_DIR, base)
    planted.append(path)
    with open(path, "wb") as f:
        f.write(bytes(8192))
    if uid >= 0:
        os.chown(path, uid, -1)
    return path


def _subscribe_and_exit(jdir: str, bell: str) -> None:
    """A process that puts `bell` in jdir/v.bells and dies without taking it out."""
    code = "from mmipc.journal._bell import BellList\n"
    code += f"assert BellList.subscribe({jdir!r}, 'v', {bell!r}, 0) is not None"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_dead_readers_slot_makes_a_subscriber_unlink_only_our_bells_in_the_bell_dir(
    jdir: str, planted: list[str]
) -> None:
    """NAME.bells may be written by anyone who can write it: a dead pid's slot naming a file outside
    the bell directory (directly or through ..), or another user's bell, or a link, must not make a
    subscriber that reclaims the slot delete it. A dead reader's own bell (the control) is deleted."""
    outside = os.path.join(jdir, "mmipc-bell.victim")
    with open(outside, "wb") as f:
        f.write(b"keep")
    dotted = BELL_DIR + "/" + os.path.relpath(outside, BELL_DIR)
    me = os.getpid()
    link = os.path.join(BELL_DIR, f"mmipc-bell.{me}.link")
    os.symlink(outside, link)
    planted.append(link)
    victims = [outside, dotted, link]
    if os.geteuid() == 0:
        victims.append(_plant(planted, f"mmipc-bell.{me}.theirs", uid=65534))
    control = _plant(planted, f"mmipc-bell.{me}.control")
    for path in [*victims, control]:
        _subscribe_and_exit(jdir, path)
    for _ in range(len(victims) + 1):  # each subscription reclaims one dead reader's slot
        assert BellList.subscribe(jdir, "v", os.path.join(BELL_DIR, f"mmipc-bell.{me}.live"), 0) is not None
    assert [p for p in victims if not os.path.lexists(p)] == []
    assert not os.path.exists(control)
