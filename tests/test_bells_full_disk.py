"""NAME.bells (and a reader's bell) were grown with ftruncate: a sparse file. On a full disk the
first store into one of its holes (a reader's subscription, a writer's ring) is a SIGBUS that kills
the process, where a full disk must be an error or, for bells, no bell at all (readers poll). They
are allocated now (posix_fallocate), and a file that cannot be is not mapped. A real full tmpfs
(mounting needs root), the writer and reader in a child process: a SIGBUS would kill pytest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_WRITE_THEN_READ = """
import os, sys
from mmipc import Reader, Writer
directory, fill_first = sys.argv[1], sys.argv[2] == "1"
def fill():
    fd = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, bytes(4096)):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
with Writer.create(directory, "j", page_size=64 * 1024, service=None):
    pass  # its page, allocated while there is room
if fill_first:
    os.unlink(os.path.join(directory, "j.bells"))  # NAME.bells made only once the disk is full
    fill()
writer = Writer.create(directory, "j", page_size=64 * 1024, service=None)
writer.write(b"before")
if not fill_first:
    fill()
reader = Reader.create("r", service=None)
reader.add_journal(directory, "j")
got = [bytes(reader.read().data)]
writer.write(b"after")  # rings the reader, if it has a bell
got.append(bytes(reader.read().data))
print(got, flush=True)
"""


@pytest.mark.parametrize("fill_first", [False, True], ids=["bells-then-full", "full-then-bells"])
def test_a_full_disk_never_kills_a_reader_or_writer_through_the_bells_file(
    small_tmpfs: Path, fill_first: bool
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _WRITE_THEN_READ, str(small_tmpfs), "1" if fill_first else "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, (out.returncode, out.stderr)  # -7: SIGBUS
    assert out.stdout.strip() == "[b'before', b'after']"
