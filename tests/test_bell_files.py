"""Doorbell files on disk: what is removed after a reader dies, and what is never removed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import Procs, ServiceProcess, dead_pid, wait_for
from mmipc import Writer
from mmipc.journal._bell import BellList, _bell_dir, start_ticks, sweep_dead_bells

BELL_DIR = _bell_dir()
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a file of another user")


def _plant(planted: list[str], base: str, uid: int = -1) -> str:
    path = os.path.join(BELL_DIR, base)
    planted.append(path)
    with open(path, "wb") as f:
        f.write(bytes(8192))
    if uid >= 0:
        os.chown(path, uid, -1)
    return path


def test_the_service_removes_the_bell_and_fifo_of_a_reader_killed_with_9(
    jdir: str, procs: Procs, service: ServiceProcess
) -> None:
    """A reader killed with -9 cannot unlink its bell (8 KiB of RAM in /dev/shm) nor its asyncio
    FIFO; the (real, session) service's monitor sweeps them."""
    with Writer.create(jdir, "j", service=None) as writer:
        writer.write(b"x")
    code = f"""
import asyncio
from mmipc import Reader
async def main():
    reader = Reader.create("doomed", service=None)
    reader.add_journal({jdir!r}, "j")
    while await reader.aread(timeout=0.01) is not None:
        pass
    print("ready", flush=True)
    await reader.aread(timeout=600)
asyncio.run(main())
"""
    child = procs.spawn_code(code)
    child.expect_line("ready")

    def files() -> list[str]:
        return sorted(f for f in os.listdir(BELL_DIR) if f.startswith(f"mmipc-bell.{child.pid}."))

    wait_for(lambda: len(files()) == 2, what="the reader's bell and FIFO")
    assert files()[1] == files()[0] + ".fifo"
    procs.kill9(child)
    wait_for(lambda: not files(), what="the service to remove the dead reader's bell and FIFO")


def test_the_sweep_removes_only_our_dead_readers_bells(planted: list[str]) -> None:
    """Removed: a dead pid's bell (with or without the start time), and a live pid's whose start time
    is not the one recorded (the pid was reused). Kept: a live reader's, a name it cannot parse, a
    symbolic link, another user's (root only)."""
    me, dead = os.getpid(), dead_pid()
    start = start_ticks(me)
    assert start > 0
    gone = [
        _plant(planted, f"mmipc-bell.{dead}.{start}.0.aaaa"),
        _plant(planted, f"mmipc-bell.{dead}.0.aaab"),  # an older version's name: the pid decides
        _plant(planted, f"mmipc-bell.{me}.{start + 1}.0.aaac"),  # our pid, another process's start
    ]
    os.mkfifo(os.path.join(BELL_DIR, f"mmipc-bell.{dead}.{start}.0.aaaa.fifo"))
    planted.append(os.path.join(BELL_DIR, f"mmipc-bell.{dead}.{start}.0.aaaa.fifo"))
    gone.append(planted[-1])
    kept = [
        _plant(planted, f"mmipc-bell.{me}.{start}.0.aaad"),
        _plant(planted, f"mmipc-bell.{me}.0.aaae"),
        _plant(planted, f"mmipc-bell.x{dead}.0.aaaf"),
    ]
    target = _plant(planted, f"mmipc-bell-target.{me}")
    link = os.path.join(BELL_DIR, f"mmipc-bell.{dead}.{start}.0.aaag")
    os.symlink(target, link)
    planted.append(link)
    kept += [link, target]
    if os.geteuid() == 0:
        kept.append(_plant(planted, f"mmipc-bell.{dead}.{start}.0.aaah", uid=65534))
    sweep_dead_bells()
    assert [p for p in gone if os.path.lexists(p)] == []
    assert [p for p in kept if not os.path.lexists(p)] == []


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
