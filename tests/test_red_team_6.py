"""Red team 6: reader thread ownership and adopt(), the native merge, blocking waits and signals,
retention with live readers, the service and CLI under bad input, attacked as a careless or hostile
user would."""

from __future__ import annotations

import asyncio
import json
import mmap
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import PROCS, Procs, mapped_journal_files, race_two_threads, wait_for
from mmipc import ClosedError, Reader, UsageError, Writer
from mmipc.journal._backend import native
from mmipc.journal._files import list_pages
from mmipc.service._retention import holds
from signalled_reads import read_all_while_signalled

COUNT = 5000


def test_threads_closing_and_adding_journals_on_one_service_link_never_raise(jdir: str) -> None:
    """Every reader and writer of a process shares one link to the service. Its `forget` (a
    reader's remove_journal or close, a writer's close) iterated the registrations while another
    thread's `remember` (add_journal, a writer's page switch) added one: RuntimeError
    "dictionary changed size during iteration" out of remove_journal, seen within 100 rounds."""
    errors: list[str] = []

    def hammer(tag: str) -> None:
        with Reader.create(f"linked-{tag}") as reader:
            names = [f"{tag}{i}" for i in range(400)]
            for name in names:
                reader.add_journal(jdir, name)
            try:
                for round_ in range(1500):
                    if errors:
                        return
                    reader.remove_journal(jdir, names[round_ % len(names)])
                    reader.add_journal(jdir, names[round_ % len(names)])
            except RuntimeError as exc:
                errors.append(f"{tag}: {exc!r}")

    race_two_threads(hammer)
    assert errors == []


@pytest.mark.parametrize("journals", [1, 3], ids=["one-journal", "merge"])
@pytest.mark.parametrize("every", [5, 1e-9], ids=["frames", "seconds"])
def test_read_batch_with_commit_every_commits_before_a_batch_never_inside_it(
    jdir: str, tmp_path: Path, procs: Procs, journals: int, every: float
) -> None:
    """commit_every commits "before the read that follows": read_batch committed inside the batch
    (merge, pure Python), acknowledging frames the application had not handled when it crashed
    (95 of a batch of 100 lost), or never at all (native, one journal)."""
    names = [f"d{j}" for j in range(journals)]
    writers = [Writer.create(jdir, name, service=None) for name in names]
    for i in range(100):
        writers[i % journals].write(i.to_bytes(8, "little"))
    for writer in writers:
        writer.close()
    opened = (
        "from mmipc import Reader\n"
        f"r = Reader.create('batched', service=None, durable=True, cursor_dir={str(tmp_path)!r}, "
        f"commit_every={every!r})\n"
        f"for name in {names!r}:\n"
        f"    r.add_journal({jdir!r}, name)\n"
    )
    child = procs.spawn_code(
        opened + "print('first', len(r.read_batch(60)), flush=True)\n"
        "print('second', len(r.read_batch(1000)), flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    assert procs.expect_line(child, "first") == "first 60"
    assert procs.expect_line(child, "second") == "second 40"
    procs.kill9(child)  # a crash while it handles the second batch
    with Reader.create("batched", service=None, durable=True, cursor_dir=str(tmp_path)) as again:
        for name in names:
            again.add_journal(jdir, name)
        resumed = [int.from_bytes(f.data, "little") for f in iter(again.read, None)]
    assert resumed == list(range(60, 100))  # the first batch acknowledged, the second not


@pytest.mark.parametrize("journals", [1, 3], ids=["one-journal", "merge"])
def test_a_read_bound_before_the_reader_closed_raises_closed_error(jdir: str, journals: int) -> None:
    """The documented hot loop binds `read = reader.read` once. After `close()` that bound read went
    on: one journal, from its first frame again, mapping pages a closed reader no longer holds
    against retention; several, None for ever (a silent stall). It raises ClosedError now. (A read
    kept after the reader itself was dropped reads on, by design: `mmipc bench` relies on it.)"""
    names = [f"d{j}" for j in range(journals)]
    writers = [Writer.create(jdir, name) for name in names]
    for i in range(30):
        writers[i % journals].write(i.to_bytes(8, "little"))
    reader = Reader.create("bound")
    for name in names:
        reader.add_journal(jdir, name)
    read, read_data = reader.read, reader.read_data
    assert read() is not None and read_data() is not None
    mapped = mapped_journal_files()
    reader.close()
    for bound in (read, read_data):
        with pytest.raises(ClosedError, match="reader bound is closed"):
            bound()
    assert mapped_journal_files() <= mapped - journals  # the writers' pages only
    for writer in writers:
        writer.close()


@pytest.mark.parametrize("placed", ["seek", "start", "end"])
def test_a_durable_reader_placed_and_closed_before_any_read_resumes_there(
    jdir: str, tmp_path: Path, placed: str
) -> None:
    """A durable reader placed by `seek`, `start=<time>` or `start="end"` that closed before its
    first read committed its position with timestamp 0 (no frame read yet), which no frame there
    has: every later start of that reader raised CursorError ("was it deleted and written anew?")
    until the cursor was reset by hand."""
    with Writer.create(jdir, "d") as writer:
        for i in range(1, 11):
            writer.write_at(i.to_bytes(8, "little"), i * 1000)
    durable = {"durable": True, "cursor_dir": str(tmp_path)}
    with Reader.create("placed", **durable) as reader:  # type: ignore[arg-type]
        if placed == "seek":
            reader.add_journal(jdir, "d")
            reader.seek(5000)
        else:
            reader.add_journal(jdir, "d", start=5000 if placed == "start" else "end")
    with Reader.create("placed", **durable) as again:  # type: ignore[arg-type]
        again.add_journal(jdir, "d")
        resumed = [int.from_bytes(f.data, "little") for f in iter(again.read, None)]
    assert resumed == ([] if placed == "end" else list(range(5, 11)))


def test_commit_every_counts_on_across_add_journal(jdir: str, tmp_path: Path, procs: Procs) -> None:
    """Every add_journal (and remove_journal) made a new commit_every counter: a reader that added
    a journal more often than every N frames never committed, and a crash replayed everything."""
    with Writer.create(jdir, "d") as writer:
        for i in range(20):
            writer.write(i.to_bytes(8, "little"))
    child = procs.spawn_code(
        "from mmipc import Reader\n"
        f"r = Reader.create('paced', durable=True, cursor_dir={str(tmp_path)!r}, commit_every=3)\n"
        f"r.add_journal({jdir!r}, 'd')\n"
        "for i in range(5):\n"
        "    r.read(); r.read()\n"
        f"    r.add_journal({jdir!r}, f'empty{{i}}')  # two frames, a journal, two frames...\n"
        "print('read', flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    procs.expect_line(child, "read")
    procs.kill9(child)
    with Reader.create("paced", durable=True, cursor_dir=str(tmp_path)) as again:
        again.add_journal(jdir, "d")
        first = again.read()
    assert first is not None and int.from_bytes(first.data, "little") == 9  # committed before the 10th


def _read_number(reader: Reader) -> int | None:
    got = reader.read()
    return None if got is None else int.from_bytes(got.data[:8], "little")


@pytest.mark.parametrize("journals", [1, 3], ids=["one-journal", "merge"])
def test_a_signal_handler_that_reads_inside_a_read_is_refused_never_handed_a_frame_twice(
    jdir: str, journals: int
) -> None:
    """A SIGALRM-style handler that reads runs between two bytecodes of whatever the main code does,
    a read's Python part included. It went on from that read's half-updated position: frames came
    out twice (native and pure Python, one journal), or the merge broke (ValueError 'settle(): not a
    slow core' native, IndexError pure Python). Such a read is refused now (UsageError). Here the
    signal is raised by a profile hook each time a C call returns inside a read's Python code."""
    seen, refused = read_all_while_signalled(jdir, journals, COUNT, "signalled", _read_number)
    assert sorted(seen) == list(range(COUNT))  # each frame once
    assert refused and all(
        "from inside one of its own reads" in r or "from inside a read" in r for r in refused
    )


def test_a_live_reader_that_seeks_back_holds_its_pages_at_once(
    jdir: str, tmp_path: Path, procs: Procs
) -> None:
    """A seek published the reader's new position only at its publisher's next tick (0.2 s), so a
    prune in between removed the pages between the new position and the old one: the reader read
    the page it had mapped, then jumped over the gap. The reader here holds the GIL from its seek
    to the prune's end (a busy process), as a stopped one would hold its position unpublished."""
    with Writer.create(jdir, "j", page_size=64 * 1024) as writer:
        for i in range(6000):
            writer.write(i.to_bytes(8, "little") + bytes(56))
    flag = tmp_path / "flag"
    flag.write_bytes(b"\0")
    child = procs.spawn_code(
        "import mmap, sys\n"
        "from mmipc import Reader\n"
        "r = Reader.create('seeker')\n"
        f"r.add_journal({jdir!r}, 'j')\n"
        "while r.read() is not None: pass\n"
        f"with open({str(flag)!r}, 'r+b') as f: m = mmap.mmap(f.fileno(), 1)\n"
        "while m[0] != 1: pass\n"
        "sys.setswitchinterval(1e6)  # the publisher thread waits for the GIL from now on\n"
        "r.seek(0)\n"
        "m[0] = 2\n"
        "while m[0] != 3: pass  # no system call: the GIL is never released\n"
        "sys.setswitchinterval(0.005)\n"
        "print('read', sum(1 for _ in iter(r.read, None)), flush=True)\n"
    )
    home = os.environ["MMIPC_HOME"]

    wait_for(lambda: [h["page_no"] >= 5 for h in holds(home, jdir, "j")] == [True], what="the reader far on")
    with open(flag, "r+b") as f, mmap.mmap(f.fileno(), 1) as shared:
        shared[0] = 1
        wait_for(lambda: shared[0] == 2, what="the seek")
        out = subprocess.run(
            [sys.executable, "-m", "mmipc", "prune", "--before", "2100-01-01", jdir, "j"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        shared[0] = 3
    assert out.returncode == 0, out.stderr
    assert procs.expect_line(child, "read") == "read 6000"
    assert min(list_pages(jdir, "j")) == 0


@pytest.mark.skipif(native is None, reason="the native backend is not built")
@pytest.mark.parametrize(("seed", "journals"), [(11, 1), (12, 3), (13, 8), (14, 40), (19, 40)])
def test_durable_merge_fuzz_native_and_python_return_the_documented_order(
    tmp_path: Path, seed: int, journals: int
) -> None:
    """Red team 5's merge fuzz, on a durable reader (commit_every None, 1, 3 or 7): commits,
    restarts that resume every journal, blocking reads (`frames(wait=Block(spin=0))`) among the
    adds, removes, seeks and batches. It found the position a seek commits (timestamp 0) and the
    commits inside a read_batch; both backends now return the model's frames, in its order."""
    for backend in ("native", "python"):
        directory = tmp_path / backend
        directory.mkdir()
        out = subprocess.run(
            [
                sys.executable,
                str(PROCS / "merge_fuzz.py"),
                str(directory),
                str(seed),
                str(journals),
                "300",
                "durable",
            ],
            env={**os.environ, "MMIPC_BACKEND": backend},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr
        run = json.loads(out.stdout)
        for i, (got, want) in enumerate(zip(run["got"], run["want"], strict=True)):
            assert got == want, f"{backend}: entry {i}: got {got}, the documented order gives {want}"


@pytest.mark.parametrize("timeout", [float("nan"), "1", True])
def test_a_timeout_that_is_not_a_number_of_seconds_is_a_usage_error(jdir: str, timeout: object) -> None:
    """NaN never expired (aread, aframes and frames(wait="spin") waited for ever, the blocking
    frames raised ValueError from inside its wait), a str raised TypeError deep in the wait, and
    True was a one-second timeout."""
    with Reader.create("timed") as reader:
        reader.add_journal(jdir, "j")
        calls: list[Callable[[], object]] = [
            lambda: next(reader.frames(timeout=timeout)),  # type: ignore[arg-type]
            lambda: next(reader.frames(timeout=timeout, wait="spin")),  # type: ignore[arg-type]
            lambda: asyncio.run(reader.aread(timeout=timeout)),  # type: ignore[arg-type]
            lambda: reader.aframes(timeout=timeout),  # type: ignore[arg-type]
            lambda: reader.aframes(every=0),
        ]
        for call in calls:
            with pytest.raises(UsageError, match="needs"):
                call()


@pytest.mark.parametrize("name", ["../other", "a b", ".hidden"])
def test_prune_of_a_name_no_journal_can_have_says_so(tmp_path: Path, name: str) -> None:
    """`mmipc prune DIR ../other` printed "removed 0 page(s) of DIR/../other" and exited 0: an
    operator's typo looked like a prune that found nothing old enough."""
    out = subprocess.run(
        [sys.executable, "-m", "mmipc", "prune", "--before", "2100-01-01", str(tmp_path), name],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "invalid journal name" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_a_live_reader_of_more_than_64_journals_holds_the_pages_of_each(jdir: str) -> None:
    """A live reader following 70 journals published positions for the first 64: `mmipc prune` of
    the 70th removed the pages it had not read yet (1917 of 3000 frames lost). Found here, fixed
    by hold6 (counter files version 2)."""
    names = [f"j{k:02}" for k in range(70)]
    for name in names:
        with Writer.create(jdir, name, page_size=64 * 1024) as writer:
            for i in range(3000):
                writer.write(i.to_bytes(8, "little") + bytes(56))
    with Reader.create("wide") as reader:
        for name in names:
            reader.add_journal(jdir, name)
        out = subprocess.run(
            [sys.executable, "-m", "mmipc", "prune", "--before", "2100-01-01", jdir, names[-1]],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        last = sum(1 for f in iter(reader.read, None) if f.journal.name == names[-1])
    assert last == 3000
