"""A reader's counter file grows (version 2) when its journals no longer fit in 16 KiB: it was grown
with mmap.resize, a hole, and the first store into it on a full disk was a SIGBUS that killed the
reader. The grown part is allocated now (posix_fallocate); one that cannot be leaves the file marked
as being written, so that the reader holds every page until it can publish (never fewer pages)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ServiceProcess

JOURNALS = 200  # their list is about 20 KiB: past the 16 KiB of a version-1 file

_GROW_ON_A_FULL_DISK = f"""
import os, sys
from mmipc import Reader
from mmipc.journal._metrics import read_counters
from mmipc.service._retention import holds
home, jdir, filler = sys.argv[1:4]
reader = Reader.create("wide", service=home)
reader.add_journal(jdir, "j000")
board = reader._board
fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
try:
    while os.write(fd, bytes(4096)):
        pass
except OSError:
    pass
os.close(fd)
for k in range(1, {JOURNALS}):
    reader.add_journal(jdir, f"j{{k:03}}")
held = [h["page_no"] for h in holds(home, jdir, "j150")]
print("full", read_counters(board.path) is None, held, flush=True)
os.unlink(filler)
board.publish()
published = read_counters(board.path)
print("room", len(published["positions"]), os.path.getsize(board.path), flush=True)
reader.close()
"""


def test_a_counter_file_grown_on_a_full_disk_never_kills_its_reader(small_tmpfs: Path, jdir: str) -> None:
    service = ServiceProcess(str(small_tmpfs / "home"))
    service.start()
    try:
        out = subprocess.run(
            [sys.executable, "-c", _GROW_ON_A_FULL_DISK, service.home, jdir, str(small_tmpfs / "filler")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        service.stop()
    assert out.returncode == 0, (out.returncode, out.stderr)  # -7: SIGBUS
    full, room = out.stdout.splitlines()
    assert full == "full True [0]"  # being written: every page of every journal held, j150's too
    words = room.split()
    assert words[:2] == ["room", str(JOURNALS)] and int(words[2]) > 16384, room
