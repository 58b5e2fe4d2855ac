"""Corrupt, truncated and foreign page files raise CorruptJournalError naming the file and offset."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import pytest

from mmipc import CorruptJournalError, Reader, Writer

PAGE = 64 * 1024
FIRST_FRAME = 4096


def make_journal(jdir: str, frames: int = 3000) -> str:
    with Writer.create(jdir, "j", page_size=PAGE) as writer:
        for i in range(frames):
            writer.write(i.to_bytes(4, "little") * 25)
    return os.path.join(jdir, "j.00000000.journal")


def poke(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read_everything(jdir: str) -> int:
    with Reader.create("victim") as reader:
        reader.add_journal(jdir, "j")
        return sum(1 for _ in iter(reader.read, None))


DAMAGE: dict[str, tuple[Callable[[str], None], int, str]] = {
    "bad magic": (lambda p: poke(p, 0, b"NOTMMIPC"), 0, "bad magic"),
    "future version": (lambda p: poke(p, 8, struct.pack("<H", 99)), 8, "version 99"),
    "header size": (lambda p: poke(p, 10, struct.pack("<H", 512)), 10, "header size"),
    "page number": (lambda p: poke(p, 24, struct.pack("<Q", 5)), 24, "page 5"),
    "truncated": (lambda p: os.truncate(p, PAGE // 2), PAGE // 2, "truncated"),
    "shorter than header": (lambda p: os.truncate(p, 100), 100, "truncated"),
    "length past page": (lambda p: poke(p, FIRST_FRAME, struct.pack("<I", 10**9)), FIRST_FRAME, "length"),
    "payload length": (
        lambda p: poke(p, FIRST_FRAME + 20, struct.pack("<I", 3)),
        FIRST_FRAME,
        "payload length",
    ),
    "time goes back": (
        lambda p: poke(p, FIRST_FRAME + 136 + 8, struct.pack("<q", 1)),
        FIRST_FRAME + 136,
        "older",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_pages_raise_corrupt_journal_error(jdir: str, case: str) -> None:
    path = make_journal(jdir)
    damage, offset, words = DAMAGE[case]
    damage(path)
    with pytest.raises(CorruptJournalError) as info:
        read_everything(jdir)
    assert info.value.path == path and info.value.offset == offset
    assert words in str(info.value) and path in str(info.value)


def test_the_writer_refuses_to_append_to_a_corrupt_journal(jdir: str) -> None:
    make_journal(jdir)
    tail = sorted(f for f in os.listdir(jdir) if f.endswith(".journal"))[-1]
    poke(os.path.join(jdir, tail), 0, b"garbage!")  # the page the writer would resume on
    with pytest.raises(CorruptJournalError, match="bad magic"):
        Writer.create(jdir, "j")


@pytest.mark.parametrize("size", [0, 10, 4096, PAGE])
def test_foreign_files_named_like_pages_are_refused(jdir: str, size: int) -> None:
    with open(os.path.join(jdir, "j.00000000.journal"), "wb") as f:
        f.write(os.urandom(size))
    with pytest.raises(CorruptJournalError):
        read_everything(jdir)


def test_a_missing_next_page_is_reported_at_the_end_of_page_marker(jdir: str) -> None:
    make_journal(jdir, frames=3000)
    os.unlink(os.path.join(jdir, "j.00000001.journal"))
    with pytest.raises(CorruptJournalError, match="next page .*j.00000001.journal is missing"):
        read_everything(jdir)


def test_a_frame_already_read_is_not_affected_by_later_damage(jdir: str) -> None:
    path = make_journal(jdir, frames=10)
    reader = Reader.create("early")
    reader.add_journal(jdir, "j")
    first = reader.read()
    assert first is not None
    poke(path, FIRST_FRAME + 136, struct.pack("<I", 7))  # damage the second frame's commit word
    with pytest.raises(CorruptJournalError):
        reader.read()
    with pytest.raises(CorruptJournalError):
        reader.read()  # stays put: the same error again, never a garbage frame
    assert bytes(first.data) == (0).to_bytes(4, "little") * 25


def foreign_page(jdir: str, kind: str) -> str:
    """A page file of journal j's page 1 that is not that page, made the way a careless copy would."""
    other = os.path.join(jdir, "other")
    os.mkdir(other)
    name, number = {"other journal": ("k", 1), "other page": ("j", 2), "bigger file": ("j", 1)}[kind]
    with Writer.create(other, name, page_size=PAGE, service=None) as writer:
        while len([f for f in os.listdir(other) if f.endswith(".journal")]) <= number:
            writer.write(b"\x05" * 5000)
    path = os.path.join(other, f"{name}.{number:08d}.journal")
    if kind == "bigger file":
        os.truncate(path, 2 * PAGE)
    return path


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("other journal", "of 'k', expected page 1 of 'j'"),
        ("other page", "page 2"),
        ("bigger file", "file is"),
    ],
)
def test_a_live_reader_checks_the_page_it_enters_at_a_marker(jdir: str, kind: str, words: str) -> None:
    writer = Writer.create(jdir, "j", page_size=PAGE, service=None)
    reader = Reader.create("live-entry", service=None)
    reader.add_journal(jdir, "j")
    writer.write(b"\x01" * 5000)
    assert reader.read() is not None  # the reader waits in page 0
    target = os.path.join(jdir, "j.00000001.journal")
    while not os.path.exists(target):  # standalone: page 1 appears at the writer's switch
        writer.write(b"\x02" * 5000)
    writer.close()
    os.replace(foreign_page(jdir, kind), target)  # swapped in after the writer's switch
    with pytest.raises(CorruptJournalError) as info:
        while reader.read() is not None:
            pass
    assert info.value.path == target and words in str(info.value)


def test_seek_checks_the_identity_of_every_page_header_it_reads(jdir: str) -> None:
    make_journal(jdir, frames=6000)
    pages = sorted(f for f in os.listdir(jdir) if f.endswith(".journal"))
    assert len(pages) >= 5
    middle = os.path.join(jdir, pages[len(pages) // 2])
    os.replace(foreign_page(jdir, "other journal"), middle)
    with Reader.create("seeker") as reader:
        reader.add_journal(jdir, "j", start="end")
        with pytest.raises(CorruptJournalError, match="'k'") as info:
            reader.seek(2**62)
    assert info.value.path == middle
