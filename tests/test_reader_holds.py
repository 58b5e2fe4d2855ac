"""A linked reader holds its pages against the service's retention through its position file
(journal/_metrics.py). One that cannot create that file is refused with a clear error, instead of
running unpublished while retention removes the pages it still needs. A real service with
retention, a real reader process, and a file standing where the home's ``readers/`` directory
should be (chmod does not stop root: a file does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mmipc import Reader, Service, Writer
from mmipc.journal._files import list_pages
from mmipc.service._retention import Policy

PAGE = 64 * 1024

_READ_ALL = """
import sys
from mmipc import Reader
from mmipc._errors import MmipcError
home, directory, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    reader = Reader.create("blocked", service=home)
except MmipcError as exc:
    print(type(exc).__name__, exc, flush=True)
    sys.exit(3)
reader.add_journal(directory, "held")
seqs = []
while len(seqs) < count:
    frame = reader.read()
    if frame is not None:
        seqs.append(int(bytes(frame.data[:8])))
print("read", seqs == list(range(count)), flush=True)
"""


def test_a_reader_that_cannot_publish_its_position_is_refused_not_left_unheld(
    tmp_path: Path, jdir: str
) -> None:
    """It logged "will not publish its position" and read on, holding no page: the service's
    retention removed pages under it, and it met a gap or read on past lost
    frames. Now Reader.create raises StorageError naming the file and the OS error, its name is
    free again, and once the directory is fixed a reader reads every frame."""
    home = str(tmp_path / "home")
    os.makedirs(home)
    blocker = os.path.join(home, "readers")
    Path(blocker).write_bytes(b"not a directory")
    count = 5 * 60  # five pages of 1000-byte frames (60 a page)
    with (
        Service(home, retain=Policy(max_pages=100), retain_interval=0.05),
        Writer.create(jdir, "held", page_size=PAGE, service=None) as writer,
    ):
        for seq in range(count):
            writer.write(b"%08d" % seq + bytes(992))
        child = subprocess.run(
            [sys.executable, "-c", _READ_ALL, home, jdir, str(count)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == 3, (child.stdout, child.stderr)
        line = child.stdout.strip()
        assert line.startswith("StorageError reader blocked cannot create its position file ")
        assert f"blocked.counters: File exists ({blocker})" in line
        assert "\n" not in line and "Traceback" not in child.stderr
        os.unlink(blocker)  # fixed: the name was freed, and the reader reads every frame
        with Reader.create("blocked", service=home) as reader:
            reader.add_journal(jdir, "held")
            assert len(list_pages(jdir, "held")) >= 5
