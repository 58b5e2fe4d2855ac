"""Out of file descriptors: Python's mmap keeps a descriptor per mapping, so a reader or writer of
many journals meets RLIMIT_NOFILE. It gets one clear line (StorageError naming `ulimit -n` and the
process's limits), not a bare "[Errno 24] Too many open files" traceback, and loses nothing written.
Real processes with a lowered RLIMIT_NOFILE (resource.setrlimit in the child)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmipc import Reader, Writer

PAGE = 64 * 1024
FRAMES = 3 * 60  # three pages of 1000-byte frames
LIMIT = 48
JOURNALS = 60  # more than fit under LIMIT descriptors

_CHILD = """
import json, resource, sys
from mmipc import Reader, Writer
from mmipc._errors import MmipcError
directory, who, journals, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
kept, written = [], {}
try:
    if who == "reader":
        kept.append(Reader.create("many", service=None))
    for i in range(journals):
        if who == "reader":
            kept[0].add_journal(directory, f"j{i}")
            continue
        kept.append(Writer.create(directory, f"j{i}", page_size=PAGE, service=None))
        for seq in range(FRAMES):  # three pages: page switches too
            kept[-1].write(b"%08d" % seq + bytes(992))
            written[f"j{i}"] = seq + 1
    print("no error", flush=True)
except MmipcError as exc:
    print(type(exc).__name__, exc, flush=True)
resource.setrlimit(resource.RLIMIT_NOFILE, (limit * 2, hard))  # the user raised `ulimit -n`
if who == "reader":  # what was added reads on, to the last frame
    written = {j.name: FRAMES for j in kept[0].journals}
    assert sum(1 for _ in iter(kept[0].read, None)) == sum(written.values())
print(json.dumps(written), flush=True)
"""


def _run(directory: str, who: str) -> list[str]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"PAGE, FRAMES = {PAGE}, {FRAMES}\n{_CHILD}",
            directory,
            who,
            str(JOURNALS),
            str(LIMIT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    return out.stdout.splitlines()


def _assert_clear(line: str) -> None:
    assert line.startswith("StorageError "), line
    assert "too many open files" in line and "`ulimit -n`" in line
    assert f"this process may have {LIMIT}, hard limit " in line


@pytest.mark.parametrize("who", ["writer", "reader"])
def test_too_many_journals_for_the_descriptor_limit_is_one_clear_error(jdir: str, who: str) -> None:
    """A writer of many journals (each written across page switches), or a reader following them,
    got OSError "[Errno 24] Too many open files" from mmap (it dups the descriptor) or listdir."""
    if who == "reader":
        for i in range(JOURNALS):
            with Writer.create(jdir, f"j{i}", page_size=PAGE, service=None) as writer:
                for seq in range(FRAMES):
                    writer.write(b"%08d" % seq + bytes(992))
    lines = _run(jdir, who)
    _assert_clear(lines[0])
    written = json.loads(lines[1])
    assert 0 < len(written) < JOURNALS  # some fit, not all
    with Reader.create("check", service=None) as reader:  # every frame written is on disk, in order
        for name, count in written.items():
            reader.add_journal(jdir, name)
            assert [int(bytes(f.data[:8])) for f in iter(reader.read, None)] == list(range(count))
            reader.remove_journal(jdir, name)


_READ_AT_THE_LIMIT = """
import os, resource, sys
from mmipc import Reader
from mmipc._errors import MmipcError
directory, journals, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
reader = Reader.create("limit", service=None)
for i in range(journals):
    reader.add_journal(directory, f"j{i}")
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
in_use = len(os.listdir("/proc/self/fd")) - 1  # less the listing's own descriptor
resource.setrlimit(resource.RLIMIT_NOFILE, (in_use, hard))  # no descriptor left for the next page
seqs = {}
while True:
    try:
        frame = reader.read()
    except MmipcError as exc:
        print(type(exc).__name__, exc, flush=True)
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 64, hard))  # the user raised it
        continue
    if frame is None:
        break
    seqs.setdefault(frame.journal.name, []).append(int(bytes(frame.data[:8])))
print(len(seqs) == journals and all(s == list(range(frames)) for s in seqs.values()), flush=True)
"""


def test_a_page_switch_at_the_descriptor_limit_is_a_clear_error_and_the_read_can_be_retried(
    jdir: str,
) -> None:
    """A reader that has no descriptor left for its next page: read() raised a bare OSError from
    mmap. Now a clear StorageError, and once the limit is raised the same reader reads on and
    returns every frame, none lost and none twice."""
    journals = 8
    for i in range(journals):
        with Writer.create(jdir, f"j{i}", page_size=PAGE, service=None) as writer:
            for seq in range(FRAMES):
                writer.write(b"%08d" % seq + bytes(992))
    out = subprocess.run(
        [sys.executable, "-c", _READ_AT_THE_LIMIT, jdir, str(journals), str(FRAMES)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    *errors, complete = out.stdout.splitlines()
    assert len(errors) == 1 and complete == "True", out.stdout
    assert errors[0].startswith("StorageError cannot map page ") and "`ulimit -n`" in errors[0]
