"""NAME.bells that is not a regular file with one link: a hard link to another file of the user (or
a FIFO, a symbolic link) planted under that name. Writers (the Python opener and the C one) and
readers opened it with O_CREAT and no check of what it was: a writer grew the other file to
16,512 bytes and a subscribing reader wrote its slot into it. Now every opener refuses it, a
Python process says so in one line, and the journal works on: readers poll, the service lives.
Real writer and reader processes, a real service, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Procs, ServiceProcess
from test_c_api import c_progs

__all__ = ["c_progs"]  # a fixture: the C programs, built once

PRECIOUS = b"the user's own file: nothing may be written into it\n" * 20
FRAMES = 200
WHY = {
    "hard link": "it has 2 links",
    "symbolic link": "a symbolic link",
    "fifo": "not a regular file",
    "directory": "a directory",
}

_READER = """
from mmipc import Block, Reader
reader = Reader.create("links", service={home!r})
reader.add_journal({directory!r}, "j")
print("ready", flush=True)
got = 0
for frame in reader.frames(wait=Block(max_nap=0.01)):
    got += 1
    if got == {frames}:
        break
print("read", got, flush=True)
reader.close()
"""

_WRITER = """
from mmipc import Writer
with Writer.create({directory!r}, "j", service={home!r}) as writer:
    for i in range({frames}):
        writer.write(b"frame %d" % i)
print("wrote", flush=True)
"""


def _plant(kind: str, bells: Path, victim: Path) -> None:
    victim.write_bytes(PRECIOUS)
    if kind == "hard link":
        os.link(victim, bells)
    elif kind == "symbolic link":
        bells.symlink_to(victim)
    elif kind == "directory":
        bells.mkdir()
    else:
        os.mkfifo(bells)


def _refusals(stderr: str, bells: Path) -> list[str]:
    return [line for line in stderr.splitlines() if f"refusing the bells file {bells}" in line]


@pytest.mark.parametrize("kind", list(WHY))
def test_a_bells_file_planted_as_a_link_or_fifo_is_refused_and_the_journal_works_on(
    jdir: str, tmp_path: Path, procs: Procs, service: ServiceProcess, kind: str
) -> None:
    bells, victim = Path(jdir) / "j.bells", tmp_path / "victim"
    _plant(kind, bells, victim)
    before = victim.stat()
    args = {"directory": jdir, "home": service.home, "frames": FRAMES}
    reader = procs.spawn_code(_READER.format(**args))
    reader.expect_line("ready")
    writer = procs.spawn_code(_WRITER.format(**args))
    writer.expect_line("wrote")
    assert reader.expect_line("read") == f"read {FRAMES}"  # it polled: every frame, none rung
    writer.finish()
    reader.finish()
    assert victim.read_bytes() == PRECIOUS and victim.stat().st_size == before.st_size
    assert victim.stat().st_mtime_ns == before.st_mtime_ns
    for child in (reader, writer):  # one line each, however often the opener tried
        lines = _refusals(child.stderr(), bells)
        assert len(lines) == 1, child.stderr()
        assert "Traceback" not in child.stderr()
    assert WHY[kind] in _refusals(writer.stderr(), bells)[0]
    status = subprocess.run(
        [sys.executable, "-m", "mmipc", "status", "--home", service.home],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and jdir in status.stdout, status.stderr  # the service lives


def test_the_c_writer_refuses_a_hard_link_named_bells_and_leaves_its_target(
    jdir: str, tmp_path: Path, c_progs: dict[str, str]
) -> None:
    """The C API's writer (mmipc.c's opener, no Python in the process)."""
    prog = c_progs["ctp_writer"]
    bells, victim = Path(jdir) / "md.bells", tmp_path / "victim"
    _plant("hard link", bells, victim)
    before = victim.stat()
    done = subprocess.run([prog, jdir, "md", "100"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split()[-2:] == ["wrote", "100"], done.stderr
    assert victim.read_bytes() == PRECIOUS and victim.stat().st_mtime_ns == before.st_mtime_ns
    assert os.stat(bells).st_nlink == 2  # refused, not replaced: the user removes it
