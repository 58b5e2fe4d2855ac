"""The reader: merge order, start positions, seek, journals that appear later, memory, read-only."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from conftest import mapped_journal_files, wait_for
from mmipc import ClosedError, Frame, Reader, UsageError, Writer

PAGE = 64 * 1024


def drain(reader: Reader) -> list[Frame]:
    return list(iter(reader.read, None))


def test_merge_equals_a_sorted_merge_of_what_was_written(jdir: str) -> None:
    rng = random.Random(7)
    names = ["a", "b", "c", "d"]
    writers = [Writer.create(jdir, n, page_size=PAGE) for n in names]
    written = []
    for seq in range(20000):
        j = rng.randrange(len(names))
        payload = seq.to_bytes(4, "little") * rng.randrange(1, 40)
        written.append((writers[j].write(payload), j, seq, payload))
    reader = Reader.create("merge")
    for n in names:
        reader.add_journal(jdir, n)
    got = [(f.nano, names.index(f.journal.name), bytes(f.data)) for f in drain(reader)]
    # Ties on the timestamp go to the journal added first; within a journal, append order holds.
    want = [(nano, j, payload) for nano, j, _, payload in sorted(written, key=lambda w: w[:3])]
    assert got == want


def test_start_end_only_sees_new_frames_and_start_nano_seeks(jdir: str) -> None:
    with Writer.create(jdir, "s", page_size=PAGE) as writer:
        nanos = [writer.write(i.to_bytes(4, "little") * 50) for i in range(3000)]
        live = Reader.create("live")
        live.add_journal(jdir, "s", start="end")
        assert live.read() is None
        writer.write(b"new")
        assert [bytes(f.data) for f in drain(live)] == [b"new"]
    at = Reader.create("at")
    at.add_journal(jdir, "s", start=nanos[1234])
    assert at.read().nano == nanos[nanos.index(nanos[1234])]  # type: ignore[union-attr]


def test_seek_lands_on_the_first_frame_at_or_after_a_time_across_pages(jdir: str) -> None:
    with Writer.create(jdir, "seek", page_size=PAGE) as writer:
        nanos = [writer.write(i.to_bytes(4, "little") * 30) for i in range(20000)]
    reader = Reader.create("seek")
    reader.add_journal(jdir, "seek")
    assert len([f for f in os.listdir(jdir) if f.endswith(".journal")]) > 30
    rng = random.Random(3)
    for target in [nanos[0] - 1, *rng.sample(nanos, 50), nanos[-1]]:
        reader.seek(target)
        first = next(i for i, n in enumerate(nanos) if n >= target)
        frame = reader.read()
        assert frame is not None and frame.nano == nanos[first]
        assert int.from_bytes(frame.data[:4], "little") == first
    reader.seek(nanos[-1] + 1)
    assert reader.read() is None


def test_a_journal_added_before_its_writer_exists_is_picked_up(jdir: str) -> None:
    reader = Reader.create("early")
    reader.add_journal(os.path.join(jdir, "later", "dir"), "late")
    assert reader.read() is None
    with Writer.create(os.path.join(jdir, "later", "dir"), "late") as writer:
        writer.write(b"hello")
    frames: list[Frame] = []

    def arrived() -> bool:
        frames.extend(drain(reader))
        return bool(frames)

    wait_for(arrived, what="the late journal's frame")
    assert [bytes(f.data) for f in frames] == [b"hello"]


def test_passed_pages_are_unmapped_but_held_frames_stay_valid(jdir: str) -> None:
    with Writer.create(jdir, "mem", page_size=PAGE) as writer:
        for i in range(40000):
            writer.write(i.to_bytes(4, "little") * 20)
    before = mapped_journal_files()
    reader = Reader.create("mem")
    reader.add_journal(jdir, "mem")
    held = reader.read()
    assert held is not None
    count = 1 + len(drain(reader))
    assert count == 40000
    assert mapped_journal_files() - before <= 2  # the held frame's page and the current one
    assert bytes(held.data) == (0).to_bytes(4, "little") * 20
    reader.close()
    with pytest.raises(ClosedError):
        reader.read()


def test_readers_never_modify_journal_files(jdir: str) -> None:
    # Standalone writer: a service would (rightly) go on preparing the next page in the background.
    with Writer.create(jdir, "ro", page_size=PAGE, service=None) as writer:
        for i in range(5000):
            writer.write(i.to_bytes(8, "little"))

    def digest() -> dict[str, str]:  # NAME.bells is the doorbell list: the one file readers write
        files = (p for p in Path(jdir).iterdir() if not p.name.endswith(".bells"))
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = digest()
    reader = Reader.create("ro")
    reader.add_journal(jdir, "ro", start="end")
    reader.seek(0)
    assert len(drain(reader)) == 5000
    reader.close()
    assert digest() == before


def test_add_and_remove_journals(jdir: str) -> None:
    reader = Reader.create("r")
    reader.add_journal(jdir, "x")
    with pytest.raises(UsageError, match="already added"):
        reader.add_journal(jdir + "/", "x")
    with pytest.raises(UsageError, match="start"):
        reader.add_journal(jdir, "y", start="middle")  # type: ignore[arg-type]
    reader.remove_journal(jdir, "x")
    with pytest.raises(UsageError, match="not added"):
        reader.remove_journal(jdir, "x")
    assert reader.journals == []


def test_frames_iterates_until_idle_timeout(jdir: str) -> None:
    with Writer.create(jdir, "it") as writer:
        for i in range(100):
            writer.write(bytes([i]))
    reader = Reader.create("it")
    reader.add_journal(jdir, "it")
    for wait in ("spin", "backoff"):
        reader.seek(0)
        assert [f.data[0] for f in reader.frames(timeout=0.2, wait=wait)] == list(range(100))
    with pytest.raises(UsageError, match="wait strategy"):
        next(reader.frames(wait="nap"))  # type: ignore[arg-type]
