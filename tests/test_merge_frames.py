"""The Frames a merging reader hands out (issue 16): the native merge refills its own two Frames
whatever journal the next frame comes from, re-pointing the payload view at that journal's page.
A payload the caller holds never changes and keeps its page mapped; a page nobody holds a view of is
unmapped once its journal moves on; the reader's `read` is the C merge's own method, and a dropped
reader is freed without the cyclic collector. Real page files, in-process writers."""

from __future__ import annotations

import gc
import platform
import shutil
import subprocess
import types
import weakref

import pytest

from conftest import mapped_journal_files
from mmipc import Frame, Reader, Writer
from mmipc.journal._backend import native

SMALL_PAGE = 64 * 1024


def _payload(journal: int, seq: int) -> bytes:
    return journal.to_bytes(4, "little") + seq.to_bytes(4, "little") + bytes([journal % 251]) * 120


def _write_round_robin(writers: list[Writer], rounds: int, start: int = 0) -> None:
    for seq in range(start, start + rounds):
        for j, writer in enumerate(writers):
            writer.write(_payload(j, seq))


def test_held_payloads_keep_their_bytes_and_pages_while_the_merge_reads_on(jdir: str) -> None:
    writers = [Writer.create(jdir, f"h{j}", service=None, page_size=SMALL_PAGE) for j in range(12)]
    held_frames: list[tuple[Frame, bytes]] = []
    held_views: list[tuple[memoryview, bytes]] = []
    with Reader.create("held", service=None) as reader:
        for j in range(12):
            reader.add_journal(jdir, f"h{j}")
        for part in range(4):  # every journal switches pages several times while views are held
            _write_round_robin(writers, 300, start=300 * part)
            for k, frame in enumerate(iter(reader.read, None)):
                if k % 7 == 0:
                    held_frames.append((frame, bytes(frame.data)))
                elif k % 7 == 3:
                    held_views.append((frame.data, bytes(frame.data)))
        for frame, data in held_frames:
            assert bytes(frame.data) == data
            assert frame.journal.name == f"h{int.from_bytes(data[:4], 'little')}"
        for view, data in held_views:
            assert bytes(view) == data
    assert len(held_frames) + len(held_views) > 1000
    for writer in writers:
        writer.close()


def test_pages_nobody_holds_are_unmapped_as_the_merge_moves_on(jdir: str) -> None:
    writers = [Writer.create(jdir, f"u{j}", service=None, page_size=SMALL_PAGE) for j in range(4)]
    before = mapped_journal_files()
    with Reader.create("unmap", service=None) as reader:
        for j in range(4):
            reader.add_journal(jdir, f"u{j}")
        for part in range(6):  # about 2,300 frames of 160 B per journal: six pages each
            _write_round_robin(writers, 400, start=400 * part)
            got = sum(1 for _ in iter(reader.read, None))
            assert got == 1600
        # each journal's current page, and the pages of the merge's two kept Frames at most
        assert mapped_journal_files() - before <= 4 + 4 + 2
    for writer in writers:
        writer.close()


@pytest.mark.skipif(native is None, reason="the native merge")
def test_a_merging_reader_reads_through_the_c_merge_itself(jdir: str) -> None:
    writers = [Writer.create(jdir, f"c{j}", service=None, page_size=SMALL_PAGE) for j in range(3)]
    with Reader.create("direct", service=None) as reader:
        for j in range(3):
            reader.add_journal(jdir, f"c{j}")
        assert isinstance(reader.read, types.BuiltinMethodType)  # no Python frame per read
        _write_round_robin(writers, 1500)  # page ends: what needs Python is settled through it
        seqs = [
            (int.from_bytes(f.data[:4], "little"), int.from_bytes(f.data[4:8], "little"))
            for f in iter(reader.read, None)
        ]
    assert sorted(seqs) == [(j, s) for j in range(3) for s in range(1500)]
    for writer in writers:
        writer.close()


def test_a_dropped_merging_reader_is_freed_without_the_cyclic_collector(jdir: str) -> None:
    writers = [Writer.create(jdir, f"d{j}", service=None) for j in range(2)]
    _write_round_robin(writers, 3)
    gc.disable()
    try:
        reader = Reader.create("dropped", service=None)
        for j in range(2):
            reader.add_journal(jdir, f"d{j}")
        assert reader.read() is not None
        merge = weakref.ref(reader._merge)
        del reader
        assert merge() is None
    finally:
        gc.enable()
    for writer in writers:
        writer.close()


@pytest.mark.once
@pytest.mark.skipif(
    native is None or platform.machine() != "x86_64" or shutil.which("objdump") is None,
    reason="reads the built extension's x86-64 code",
)
def test_the_built_merge_holds_its_prefetches() -> None:
    """merge_prefetch_top's six prefetches are in the built extension: gcc once deleted its call
    (it judged the function free of side effects) and the .so held none."""
    assert native is not None and native.__file__ is not None
    code = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", native.__file__], capture_output=True, text=True, check=True
    ).stdout
    assert sum(1 for line in code.splitlines() if "\tprefetch" in line) >= 6
