"""A reader in another pid namespace (a container sharing the journal directory, the service home
and /dev/shm): its pid names nothing, or another process, in the service's namespace. Its owner is
recorded with its namespace and counts as alive while its counter file's heartbeat is fresh
(_metrics.Owner.alive): retention keeps the pages it holds, the bell sweep keeps its bell, the
monitor keeps its counter file; once the heartbeat is older than the service's
foreign_reader_limit, all three go. A real process in a new pid namespace, made by `unshare`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for
from mmipc import Reader, Service, Writer
from mmipc.journal._bell import _bell_owner, pid_namespace, sweep_dead_bells
from mmipc.journal._files import list_pages
from mmipc.journal._metrics import DEAD_LINGER, counters_owner, counters_path, read_counters
from mmipc.service._monitor import Monitor
from mmipc.service._retention import Policy, prune

PAGE = 64 * 1024
UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]


def _namespaces_refused() -> str | None:
    """Why this machine cannot start a process in a new pid namespace, or None if it can."""
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"this machine refuses new user and pid namespaces: {probe.stderr.strip()}"
    return None


needs_namespaces = pytest.mark.skipif(_namespaces_refused() is not None, reason=str(_namespaces_refused()))


@pytest.fixture
def home(tmp_path: Path) -> str:
    return str(tmp_path / "home")


_CONTAINED = """
import os, sys
from mmipc import Reader
home, directory = sys.argv[1:3]
reader = Reader.create("contained", service=home)
reader.add_journal(directory, "ns")
assert reader.read() is not None
print(os.getpid(), reader._merge.bell.path, flush=True)
sys.stdin.readline()
reader.close()
"""


@needs_namespaces
def test_a_reader_in_another_pid_namespace_keeps_its_pages_bell_and_counter_file(
    home: str, jdir: str
) -> None:
    """The reader, pid 1 of its namespace, recorded pid 1: here that is another process (init),
    started at another time, so the service took the reader for dead. Retention removed the pages
    it still read, the bell sweep deleted its bell (its writers rang nobody), and the monitor
    deleted its counter file. Now its namespace is recorded, and an owner of another namespace is
    alive."""
    with Service(home), Writer.create(jdir, "ns", page_size=PAGE, service=None) as writer:
        for _ in range(4 * 60):  # four pages of 1000-byte frames (60 a page)
            writer.write(bytes(1000))
        reader = subprocess.Popen(
            [*UNSHARE, sys.executable, "-c", _CONTAINED, home, jdir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert reader.stdout is not None and reader.stdin is not None
            line = reader.stdout.readline()
            assert line, reader.communicate(timeout=60)[1]
            pid, bell = line.split()
            assert pid == "1"  # its namespace's pid: in ours, init
            path = counters_path(home, "contained")
            owner = counters_owner(path)
            assert owner is not None and owner[0] == 1 and owner[2] not in (0, pid_namespace())
            info = read_counters(path)
            assert info is not None and info["pid_ns"] == owner[2]
            bell_owner = _bell_owner(os.path.basename(bell))
            assert bell_owner is not None and bell_owner[2] == owner[2]

            plan, _ = prune(home, jdir, "ns", Policy(max_pages=1), time.time_ns(), dry_run=True)
            assert plan.remove == [] and "held by reader contained" in plan.kept_for
            assert os.path.basename(bell) not in sweep_dead_bells() and os.path.exists(bell)
            monitor = Monitor(home, list, Policy())
            monitor._dead_since["contained"] = time.monotonic() - DEAD_LINGER - 1
            monitor._forget_dead()
            assert os.path.exists(path)

            writer.write(b"after the sweeps")  # its bell is still rung: the reader is still there
            reader.stdin.write("\n")
            reader.stdin.flush()
            assert reader.wait(timeout=60) == 0, reader.communicate(timeout=60)[1]
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait(timeout=60)
        assert not os.path.exists(bell) and not os.path.exists(path)  # its own close removed both


_SUBSCRIBE_AND_EXIT = """
import os, sys
from mmipc.journal._bell import BELL_SIZE, BellList, _bell_dir, pid_namespace, start_ticks
owner = f"{os.getpid()}.{start_ticks('self')}.{pid_namespace() + 1}"  # as a container's reader names it
path = os.path.join(_bell_dir(), f"mmipc-bell.{owner}.0.cafe")
with open(path, "wb") as f:
    f.truncate(BELL_SIZE)
assert BellList.subscribe(sys.argv[1], "v", path, 0) == 0
print(path, flush=True)
"""


def test_a_bell_list_slot_of_another_pid_namespace_is_not_reclaimed(jdir: str, planted: list[str]) -> None:
    """A reader's subscription reclaimed any slot whose pid was not alive here, and unlinked the
    slot's bell: a container reader's slot (its pid, dead or another process's here) was taken and
    its bell deleted while it read. The slot's reader is now judged by its bell's name, and one of
    another pid namespace is alive. Here the container reader is a process that named its bell
    with a namespace not ours, subscribed it, and exited: its pid is dead in our namespace."""
    out = subprocess.run(
        [sys.executable, "-c", _SUBSCRIBE_AND_EXIT, jdir], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    bell = out.stdout.strip()
    planted.append(bell)
    with Reader.create("host", service=None) as reader:
        reader.add_journal(jdir, "v")
        assert reader._merge.slots[reader._merge.cursors[0]][1] == 1  # slot 0 is still the container's
        assert os.path.exists(bell)


_HOLD = """
import os, sys
from mmipc import Reader
home, directory, name = sys.argv[1:4]
reader = Reader.create(name, service=home)
reader.add_journal(directory, "ns")
assert reader.read() is not None
print(reader._merge.bell.path, flush=True)
sys.stdin.readline()
"""


def _contained_reader(home: str, jdir: str, name: str) -> tuple[subprocess.Popen[str], str]:
    """A reader in its own pid namespace, standing on page 0; SIGKILL to the returned process
    (unshare, with --kill-child) kills it with -9. Also returns its bell's path."""
    return _unshared(_HOLD, home, jdir, name)


def _unshared(script: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """Python `script` with `args` in its own pid namespace (unshare --kill-child: SIGKILL to the
    returned process kills it with -9), once it has printed its first line (returned)."""
    cmd = [*UNSHARE, "--kill-child", sys.executable, "-c", script, *args]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.communicate(timeout=60)[1]
    return proc, line.strip()


@needs_namespaces
def test_a_killed_reader_of_another_pid_namespace_is_dead_once_its_heartbeat_stops(
    home: str, jdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container reader killed -9 counted as alive forever (its pid cannot be checked from here):
    its pages, counter file and bell were kept for good, and a disk filled. Now one whose heartbeat
    is older than the service's foreign_reader_limit is dead: its counter file and bell go, and its
    pages are no longer held; a live one of another namespace still holds them meanwhile."""
    monkeypatch.setattr("mmipc.service._monitor.DEAD_LINGER", 0.0)  # its file goes as soon as it is dead
    limit = 8.0  # a live reader beats every 0.2 s: far from it, even on a loaded machine
    policy = Policy(max_pages=1)
    with (
        Service(home, retain=policy, retain_interval=0.05, foreign_reader_limit=limit),
        Writer.create(jdir, "ns", page_size=PAGE, service=None) as writer,
    ):
        for _ in range(4 * 60):  # four pages of 1000-byte frames (60 a page)
            writer.write(bytes(1000))
        readers = [_contained_reader(home, jdir, name) for name in ("killed", "alive")]
        try:
            (killed, killed_bell), (alive, alive_bell) = readers
            killed.kill()
            killed.wait(timeout=60)
            killed_file = counters_path(home, "killed")
            wait_for(lambda: not os.path.exists(killed_file), what="the killed reader's file removed")
            wait_for(lambda: not os.path.exists(killed_bell), what="the killed reader's bell swept")
            assert 0 in list_pages(jdir, "ns")  # the live one still holds page 0
            assert os.path.exists(counters_path(home, "alive")) and os.path.exists(alive_bell)
            alive.kill()
            alive.wait(timeout=60)
            wait_for(lambda: list_pages(jdir, "ns")[0] > 0, what="page 0 pruned once no reader holds it")
            wait_for(lambda: not os.path.exists(counters_path(home, "alive")), what="its file removed")
        finally:
            for proc, _ in readers:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=60)


_STANDALONE = """
import sys
from mmipc import Reader
reader = Reader.create("standalone", service=None)
reader.add_journal(sys.argv[1], sys.argv[2])
print(reader._merge.bell.path, flush=True)
sys.stdin.readline()
"""


def _standalone(jdir: str, name: str) -> tuple[subprocess.Popen[str], str]:
    """A reader of journal `name` with no service (so no counter file) in its own pid namespace;
    SIGKILL to the returned process kills it with -9. Also returns its bell's path."""
    return _unshared(_STANDALONE, jdir, name)


def _slot_taken(jdir: str, name: str) -> int:
    """The bells-list slot a reader of ours gets in journal `name`."""
    with Reader.create("host", service=None) as reader:
        reader.add_journal(jdir, name)
        return reader._merge.slots[reader._merge.cursors[0]][1]


@needs_namespaces
def test_a_killed_standalone_reader_of_another_pid_namespace_leaves_neither_slot_nor_bell(
    jdir: str,
) -> None:
    """A container reader without a counter file (no service), killed -9, kept its slot in each
    bells list it was in and its bell in /dev/shm for good: its pid cannot be checked from here,
    and no heartbeat judges it. 64 such readers fill a list (no reader is rung through it again).
    Now its reader holds an flock on its bell while it lives: a bell nobody holds is a dead one's,
    freed by the next subscription and by the sweep; a live one's is kept."""
    with Writer.create(jdir, "ns", service=None), Writer.create(jdir, "swept", service=None):
        readers = [_standalone(jdir, "ns"), _standalone(jdir, "swept")]
        try:
            (listed, listed_bell), (swept, swept_bell) = readers
            assert _slot_taken(jdir, "ns") == 1  # alive: its slot is kept
            assert os.path.basename(swept_bell) not in sweep_dead_bells() and os.path.exists(swept_bell)
            for proc, _ in readers:
                proc.kill()
                proc.wait(timeout=60)
            # the dead reader's slot, freed (once its process is gone: --kill-child kills it after
            # unshare exits) and its bell unlinked by the subscription that freed it
            wait_for(lambda: _slot_taken(jdir, "ns") == 0, what="the dead reader's slot")
            assert not os.path.exists(listed_bell)
            swept_name = os.path.basename(swept_bell)  # a bell made in the last second is kept
            wait_for(lambda: swept_name in sweep_dead_bells(), what="the dead reader's bell swept")
            assert not os.path.exists(swept_bell)
        finally:
            for proc, _ in readers:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=60)
