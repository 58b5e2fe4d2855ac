"""Red team 5: the native merge's winner tree (merge5), bell_block (wake5), the reader's thread
check and counter files' start time (fix5), attacked as a careless or hostile user would."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import PROCS, wait_for
from mmipc import Block, Reader, UsageError, Writer
from mmipc.journal._backend import native
from mmipc.journal._bell import start_ticks


def _fuzz(directory: Path, backend: str, seed: int, journals: int, steps: int) -> dict[str, list[object]]:
    directory.mkdir()
    env = {**os.environ, "MMIPC_BACKEND": backend}
    args = [str(directory), str(seed), str(journals), str(steps)]
    out = subprocess.run(
        [sys.executable, str(PROCS / "merge_fuzz.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(native is None, reason="the native backend is not built")
@pytest.mark.parametrize(
    ("seed", "journals", "steps"),
    [
        (1, 3, 400),
        (2, 8, 400),
        (3, 40, 300),
        (4, 300, 300),
        (5, 2, 600),
        (6, 1, 300),
        (7, 17, 800),
        (8, 300, 600),
    ],
)
def test_merge_fuzz_native_and_python_return_the_documented_order(
    tmp_path: Path, seed: int, journals: int, steps: int
) -> None:
    """Random add/remove/re-add/remove-all, writes at equal and decreasing-across-journals times,
    read/read_data/read_batch/seek: both backends return the model's frames, in its order."""
    runs = {b: _fuzz(tmp_path / b, b, seed, journals, steps) for b in ("native", "python")}
    for backend, run in runs.items():
        for i, (got, want) in enumerate(zip(run["got"], run["want"], strict=True)):
            assert got == want, f"{backend}: entry {i}: got {got}, the documented order gives {want}"


def test_seek_on_a_reader_with_no_journal_does_not_crash(jdir: str) -> None:
    """merge5's tree is allocated by the first membership hand-over: a seek before any add_journal
    (or its reset on a core never set) wrote through a NULL tree: SIGSEGV, the process killed."""
    code = (
        "from mmipc import Reader\n"
        "r = Reader.create('empty', service=None)\n"
        "r.seek(5)\n"
        "assert r.read() is None and r.read_data() is None and len(r.read_batch(4)) == 0\n"
        f"r.add_journal({jdir!r}, 'j0')\nr.seek(0)\nassert r.read() is None\nprint('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout) == (0, "ok\n"), out.stderr


def test_write_at_refuses_timestamp_zero_which_seek_takes_for_no_frame(jdir: str) -> None:
    """A page header's first_nano 0 means "no frame yet" (docs/format.md): frames stamped 0 made
    `seek(t)` start at the journal's first frame, returning every frame older than t (found by
    the merge fuzz). write_at now refuses 0 as it refuses negative times."""
    with Writer.create(jdir, "zero", service=None) as writer:
        with pytest.raises(UsageError, match=r"1\.\.2\*\*63-1, not 0 "):
            writer.write_at(b"old", 0)
        writer.write_at(b"one", 1)
        writer.write_at(b"two", 2)
    with Reader.create("zero", service=None) as reader:
        reader.add_journal(jdir, "zero")
        reader.seek(2)
        assert [bytes(f.data) for f in iter(reader.read, None)] == [b"two"]


@pytest.mark.parametrize(
    "knobs",
    [
        {"max_nap": -1.0},
        {"max_nap": 0},
        {"max_nap": math.inf},
        {"max_nap": "1"},
        {"spin": -1e-6},
        {"spin": math.nan},
    ],
)
def test_block_refuses_knobs_it_cannot_honour(knobs: dict[str, object]) -> None:
    """Block(max_nap=-1) made every wait unbounded (a negative ns is "no limit" to bell_block):
    frames(timeout=0.05) never returned. inf, a string, a negative spin: errors deep inside."""
    with pytest.raises(UsageError, match=r"^Block needs (spin|max_nap) in seconds"):
        Block(**knobs)  # type: ignore[arg-type]


def test_frames_with_a_timeout_of_years_waits_instead_of_overflowing(jdir: str) -> None:
    """frames(timeout=1e12, wait=Block(max_nap=None)) passed 1e21 ns to bell_block: OverflowError
    at the first wait. Now a wait lasts LONGEST_WAIT at most, and the frame a writer rings for comes."""
    with Writer.create(jdir, "years", service=None):
        pass
    with Reader.create("years", service=None) as reader:
        reader.add_journal(jdir, "years")
        bell = reader._merge.bell
        assert bell is not None

        def write_once_asleep() -> None:
            wait_for(lambda: int.from_bytes(bell.mm[12:16], "little") != 0, what="the reader to sleep")
            with Writer.create(jdir, "years", service=None) as writer:
                writer.write(b"late")

        thread = threading.Thread(target=write_once_asleep)
        thread.start()
        frame = next(reader.frames(timeout=1e12, wait=Block(spin=0, max_nap=None)))
        thread.join()
        assert bytes(frame.data) == b"late"


def test_a_bell_truncated_under_a_sleeping_reader_kills_only_that_reader(jdir: str) -> None:
    """Out of contract (docs/reliability.md): a process of the reader's uid truncating the reader's
    doorbell file (/dev/shm/mmipc-bell.*) kills that reader with SIGBUS at its next touch of the
    bell: after its wait's max_nap at the latest (no ring reaches it; with max_nap=None it sleeps
    until a signal). Writers that ring it are unharmed: they keep writing, and another reader
    reads it all."""
    with Writer.create(jdir, "tb", service=None):
        pass
    code = (
        "from mmipc import Reader\n"
        "r = Reader.create('tb', service=None)\n"
        f"r.add_journal({jdir!r}, 'tb')\nprint(r._merge.bell.path, flush=True)\n"
        "for f in r.frames():\n    print('frame', flush=True)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        path = child.stdout.readline().strip()
        wait_for(lambda: Path(path).read_bytes()[12:16] != bytes(4), what="the reader to sleep")
        os.truncate(path, 0)
        with Writer.create(jdir, "tb", service=None) as writer:
            writer.write(b"after")
            assert child.wait(timeout=60) == -signal.SIGBUS
            writer.write(b"again")
    finally:
        child.kill()
        child.wait()
    with Reader.create("tb-after", service=None) as reader:
        reader.add_journal(jdir, "tb")
        assert [bytes(f.data) for f in iter(reader.read, None)] == [b"after", b"again"]


def test_start_ticks_of_a_process_whose_name_has_spaces_and_parentheses() -> None:
    """/proc/PID/stat's comm is free text: "a) b (c 1 2" would shift every field of a parser that
    splits the line. A real process renames itself (prctl PR_SET_NAME): its start time is unchanged."""
    code = (
        "import ctypes, sys\n"
        "ctypes.CDLL(None, use_errno=True).prctl(15, b'a) b (c 1 2 3', 0, 0, 0)\n"
        "print('renamed', flush=True)\nsys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        before = start_ticks(child.pid)
        assert child.stdout.readline() == "renamed\n"
        assert Path(f"/proc/{child.pid}/comm").read_text() == "a) b (c 1 2 3\n"
        assert start_ticks(child.pid) == before > 0
        child.stdin.write("\n")
        child.stdin.flush()
    finally:
        child.wait(timeout=60)


_FORK = """
import os, sys
from mmipc import Reader, Writer
directory, child_does = sys.argv[1], sys.argv[2]
writers = [Writer.create(directory, name, service=None) for name in ("fa", "fb")]
reader = Reader.create("forked", service=None)
for name in ("fa", "fb"):
    reader.add_journal(directory, name)
assert reader.read() is None  # the merge is settled: only a ring flags a journal now
bell = reader._merge.bell.path
pid = os.fork()
if pid == 0:
    if child_does == "close":
        reader.close()
    sys.exit(0)  # a normal exit: the reader's finalizers run in the child too
assert os.waitpid(pid, 0)[1] == 0
writers[0].write(b"after the child")
frame = reader.read()
print(os.path.exists(bell), None if frame is None else bytes(frame.data))
"""


@pytest.mark.parametrize("child_does", ["close", "exit"])
def test_a_forked_child_leaves_the_parents_doorbell_alone(jdir: str, child_does: str) -> None:
    """A child forked with a live reader that closed it, or just exited normally (the reader's
    finalizer runs at exit), unlinked the parent's bell file and unsubscribed it from every bell
    list: the parent's writers rang nobody, its reads missed committed frames until a sweep, and
    a reader sleeping with max_nap=None slept through them."""
    out = subprocess.run(
        [sys.executable, "-c", _FORK, jdir, child_does], capture_output=True, text=True, timeout=120
    )
    assert (out.returncode, out.stdout) == (0, "True b'after the child'\n"), out.stderr


class Alarm(Exception):
    pass


def test_a_signal_that_ends_a_blocking_iteration_leaves_the_reader_awake_and_usable(jdir: str) -> None:
    """A signal whose handler raises (KeyboardInterrupt, here Alarm) during frames(wait="block"):
    the pure-Python backend left the bell's `sleeping` set (every ring then paid a wake for a
    reader not asleep). Both backends: cleared, and the next frame is read."""
    with Writer.create(jdir, "ki", service=None) as writer:
        with Reader.create("ki", service=None) as reader:
            reader.add_journal(jdir, "ki")
            bell = reader._merge.bell
            assert bell is not None

            def alarm(signum: int, frame: object) -> None:
                raise Alarm

            previous = signal.signal(signal.SIGALRM, alarm)
            try:
                signal.setitimer(signal.ITIMER_REAL, 0.05)
                with pytest.raises(Alarm):
                    list(reader.frames(wait=Block(spin=0, max_nap=None)))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            assert int.from_bytes(bell.mm[12:16], "little") == 0
            writer.write(b"after")
            frame = reader.read()
            assert frame is not None and bytes(frame.data) == b"after"


def test_read_batch_takes_any_positive_limit(jdir: str) -> None:
    """read_batch(2**63) on one journal (native) raised a bare OverflowError from C."""
    with Writer.create(jdir, "big", service=None) as writer:
        writer.write(b"1")
        writer.write(b"2")
    with Reader.create("big", service=None) as reader:
        reader.add_journal(jdir, "big")
        for limit in (2**62, 2**63, 2**70):
            reader.seek(0)
            assert [bytes(f.data) for f in reader.read_batch(limit)] == [b"1", b"2"]
