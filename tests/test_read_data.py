"""`Reader.read_data()`: `read().data` without the Frame, on both backends (the suite runs twice).

Same frames, same order, same checks and errors as `read()`, mixed freely with it, for one journal
(the native core's own method), several (the merge), a durable reader and a closed one."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import pytest

from mmipc import ClosedError, CorruptJournalError, Reader, Writer
from mmipc.journal._files import page_path

SMALL = 64 << 10


def _write(jdir: str, name: str, count: int, tag: int = 0, checksum: bool = False) -> list[bytes]:
    """`count` frames of varied sizes on 64 KiB pages (many page switches); their payloads."""
    payloads = [bytes([tag, i % 256]) + os.urandom(i % 300) for i in range(count)]
    with Writer.create(jdir, name, page_size=SMALL, service=None, checksum=checksum) as writer:
        for p in payloads:
            writer.write(p, 7)
    return payloads


def _reader(jdir: str, *names: str, **kwargs: object) -> Reader:
    reader = Reader.create("r", service=None, **kwargs)  # type: ignore[arg-type]
    for name in names:
        reader.add_journal(jdir, name)
    return reader


def _mixed(reader: Reader) -> list[bytes]:
    """Every frame, taken by read_data and read in turn, copied at once."""
    got: list[bytes] = []
    while True:
        if len(got) % 3 == 2:
            frame = reader.read()
            data = None if frame is None else frame.data
        else:
            data = reader.read_data()
        if data is None:
            return got
        got.append(bytes(data))


@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "checksums"])
def test_read_data_gives_reads_payloads_across_pages_mixed_with_read(jdir: str, checksum: bool) -> None:
    written = _write(jdir, "j", 3000, checksum=checksum)
    assert len([f for f in os.listdir(jdir) if f.endswith(".journal")]) > 5
    with _reader(jdir, "j") as reader:
        assert _mixed(reader) == written
        assert reader.read_data() is None and reader.read() is None
    with _reader(jdir, "j") as reader:
        held = list(iter(reader.read_data, None))  # every view held at once: none may change
        assert [bytes(d) for d in held] == written
        assert all(isinstance(d, memoryview) and d.readonly for d in held)


def test_read_data_with_several_journals_follows_the_merge_and_a_removed_journal(jdir: str) -> None:
    a, b = _write(jdir, "a", 500, 1), _write(jdir, "b", 500, 2)
    with _reader(jdir, "a", "b") as merged, _reader(jdir, "a", "b") as reference:
        expected = [bytes(f.data) for f in iter(reference.read, None)]
        assert _mixed(merged) == expected and sorted(expected) == sorted(a + b)
    with _reader(jdir, "a", "b") as reader:
        reader.remove_journal(jdir, "b")
        assert _mixed(reader) == a


def test_read_data_counts_as_read_for_a_durable_reader(jdir: str, tmp_path: object) -> None:
    written = _write(jdir, "j", 50)
    cursors = os.path.join(str(tmp_path), "cursors")
    with _reader(jdir, "j", durable=True, cursor_dir=cursors, commit_every=10) as reader:
        got = [bytes(reader.read_data() or b"") for _ in range(25)]
    assert got == written[:25]
    with _reader(jdir, "j", durable=True, cursor_dir=cursors) as again:
        assert _mixed(again) == written[25:]


def test_read_data_on_a_closed_reader_raises_closed_error(jdir: str) -> None:
    _write(jdir, "j", 3)
    reader = _reader(jdir, "j")
    reader.close()
    with pytest.raises(ClosedError, match="reader r is closed"):
        reader.read_data()


@pytest.mark.parametrize(
    ("checksum", "offset", "damage", "message"),
    [(False, 4096 + 20, struct.pack("<I", 9999), "frame length"), (True, 4096 + 33, b"\xff", "checksum")],
    ids=["payload-length", "checksum"],
)
def test_read_data_raises_reads_corruption_error_and_stays_put(
    jdir: str, checksum: bool, offset: int, damage: bytes, message: str
) -> None:
    written = _write(jdir, "j", 3000, checksum=checksum)
    path = page_path(jdir, "j", 2)
    with open(path, "r+b") as f:  # page 2's first frame: a longer payload than its length, or a bad byte
        f.seek(offset)
        f.write(damage)
    errors = []
    for take in ("read", "read_data"):
        with _reader(jdir, "j") as reader:
            call: Callable[[], object] = getattr(reader, take)
            n = 0
            while True:
                try:
                    if call() is None:
                        break
                except CorruptJournalError as exc:
                    errors.append((n, str(exc)))
                    with pytest.raises(CorruptJournalError):
                        call()
                    break
                n += 1
    assert errors[0] == errors[1] and 0 < errors[0][0] < len(written)
    assert f"{path} at offset 4096" in errors[0][1] and message in errors[0][1]
