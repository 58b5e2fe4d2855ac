"""Readers inherited by a forked child (_reader.py, the fork rule): a real os.fork() of a process
with a live reader; the parent keeps reading exactly, and its durable position, doorbell, bell-list
slots and counter file are the parent's alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmipc import Reader

# The parent acknowledges frame 0, reads frame 1 (not processed yet: a crash now must replay it),
# forks, lets the child do `child_does` with the inherited reader, then reads on, and crashes
# (os._exit: no commit). Its output: whether its counter file and bell are still there, whether
# the child's reader subscribed the parent's bell to journal "other", and the frames it read after.
_FORK = """
import asyncio, os, sys
from mmipc import Reader, UsageError, Writer
directory, cursors, child_does = sys.argv[1:4]
writer = Writer.create(directory, "fd", service=None, page_size=65536)
for i in range(3):
    writer.write(b"frame %d" % i)
with Writer.create(directory, "other", service=None, page_size=65536):
    pass
reader = Reader.create("forked-durable", durable=True, cursor_dir=cursors)
reader.add_journal(directory, "fd")
read = reader.read
assert bytes(read().data) == b"frame 0"
reader.commit()
assert bytes(read().data) == b"frame 1"
bell, counters = reader._merge.bell.path, reader._board.path
OPS = {
    "read": lambda: reader.read(),
    "bound_read": read,
    "read_data": lambda: reader.read_data(),
    "read_batch": lambda: reader.read_batch(8),
    "frames": lambda: next(reader.frames(timeout=0)),
    "aread": lambda: asyncio.run(reader.aread(timeout=0)),
    "commit": reader.commit,
    "seek": lambda: reader.seek(0),
    "add_journal": lambda: reader.add_journal(directory, "other"),
    "remove_journal": lambda: reader.remove_journal(directory, "fd"),
    "adopt": reader.adopt,
}
pid = os.fork()
if pid == 0:
    if child_does == "close":
        reader.close()
    elif child_does in OPS:
        try:
            OPS[child_does]()
        except UsageError as exc:
            print("refused:", exc, flush=True)
        else:
            print("not refused", flush=True)
    sys.exit(0)  # a normal exit: atexit and the reader's finalizers run in the child
assert os.waitpid(pid, 0)[1] == 0
writer.write(b"frame 3")
frames = [bytes(f.data) for f in iter(reader.read, None)]
others = os.path.join(directory, "other.bells")
subscribed = os.path.exists(others) and bell.encode() in open(others, "rb").read()
print(os.path.exists(counters), os.path.exists(bell), subscribed, frames, flush=True)
os._exit(0)  # a crash: frame 1 was never processed, so never acknowledged
"""

OPERATIONS = ["read", "bound_read", "read_data", "read_batch", "frames", "aread", "commit", "seek"]
OPERATIONS += ["add_journal", "remove_journal", "adopt"]


@pytest.mark.parametrize("child_does", ["close", "exit", *OPERATIONS])
def test_a_forked_child_can_neither_commit_nor_subscribe_with_an_inherited_reader(
    jdir: str, tmp_path: Path, child_does: str
) -> None:
    """A child that closed an inherited durable reader (or left a `with` block, or read with it)
    committed the parent's position: frame 1, read but never processed by the parent, was recorded
    as consumed, and the parent's restart skipped it. A child that added a journal subscribed the
    parent's bell to it; its exit removed the parent's counter file. Now every operation in the
    child raises UsageError, and closing or exiting releases the child's copy only."""
    cursors = str(tmp_path / "cursors")
    out = subprocess.run(
        [sys.executable, "-c", _FORK, jdir, cursors, child_does], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    if child_does in OPERATIONS:
        assert lines[0].startswith("refused: reader forked-durable was inherited"), out.stdout
        assert "open a new reader in the child" in lines[0]
    assert lines[-1] == "True True False [b'frame 2', b'frame 3']", out.stdout + out.stderr
    with Reader.create("forked-durable", durable=True, cursor_dir=cursors, service=None) as restarted:
        restarted.add_journal(jdir, "fd")
        assert [bytes(f.data) for f in iter(restarted.read, None)] == [b"frame 1", b"frame 2", b"frame 3"]


_FORK_AUTO = """
import os, sys
from mmipc import Reader, UsageError, Writer
directory, cursors = sys.argv[1:3]
with Writer.create(directory, "fa", service=None, page_size=65536) as writer:
    writer.write(b"frame 0")
    writer.write(b"frame 1")
reader = Reader.create("forked-auto", durable=True, cursor_dir=cursors, commit_every=1, service=None)
reader.add_journal(directory, "fa")
read = reader.read
assert bytes(read().data) == b"frame 0"  # the next read would commit it first
pid = os.fork()
if pid == 0:
    try:
        read()
    except UsageError as exc:
        print("refused:", exc, flush=True)
    sys.exit(0)
assert os.waitpid(pid, 0)[1] == 0
os._exit(0)  # a crash before frame 0 was processed
"""


def test_a_forked_childs_bound_read_does_not_run_the_parents_automatic_commit(
    jdir: str, tmp_path: Path
) -> None:
    """With commit_every, a `read` bound before the fork commits before it reads; in the child it
    passed the thread check (the forking thread keeps its ident) and committed frame 0, which the
    parent had not processed. Now `Durable.commit` refuses in the child."""
    cursors = str(tmp_path / "cursors")
    out = subprocess.run(
        [sys.executable, "-c", _FORK_AUTO, jdir, cursors], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused: durable reader forked-auto was inherited"), out.stdout
    with Reader.create("forked-auto", durable=True, cursor_dir=cursors, service=None) as restarted:
        restarted.add_journal(jdir, "fa")
        assert [bytes(f.data) for f in iter(restarted.read, None)] == [b"frame 0", b"frame 1"]
