"""Every page is used at its own size: a writer reopened with another page_size, pages made ahead."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServiceProcess, wait_for
from mmipc import Reader, UsageError, Writer
from mmipc.journal._cursor import Start
from mmipc.journal._files import create_page, page_path
from mmipc.journal._page import page_header
from mmipc.tools import check_journal

SMALL = 64 * 1024
LARGE = 1024 * 1024
BIG_FRAME = 100_000  # more than a 64 KiB page holds, less than a 1 MiB page does


def replay(jdir: str, name: str, start: Start = "begin") -> list[tuple[int, int]]:
    """(payload length, first byte) of every frame from `start`."""
    with Reader.create(f"replay-{name}") as reader:
        reader.add_journal(jdir, name, start)
        return [(len(f.data), f.data[0] if len(f.data) else -1) for f in iter(reader.read, None)]


def write_big(writer: Writer, how: str, byte: int) -> None:
    if how == "write":
        writer.write(bytes([byte]) * BIG_FRAME)
        return
    with writer.frame(BIG_FRAME) as buf:
        assert len(buf) == BIG_FRAME  # never a buffer cut to the room a smaller page has
        buf[:] = bytes([byte]) * BIG_FRAME


def assert_sound(jdir: str, name: str, expected: list[tuple[int, int]]) -> None:
    """Readers, `check`, seek to every frame's time and a reopening writer all agree."""
    assert replay(jdir, name) == expected
    result = check_journal(jdir, name)
    assert result.ok, result.problem
    with Reader.create(f"nanos-{name}") as reader:
        reader.add_journal(jdir, name)
        nanos = [f.nano for f in iter(reader.read, None)]
    for i, nano in enumerate(nanos):
        first = nanos.index(nano)  # frames with an equal stamp: seek lands on the first of them
        assert replay(jdir, name, nano) == expected[first:], f"seek to frame {i}"
    with Writer.create(jdir, name) as writer:
        writer.write(b"\x09after")
    assert replay(jdir, name) == [*expected, (6, 9)]


@pytest.mark.parametrize("how", ["write", "frame"])
def test_a_page_made_ahead_at_the_old_size_is_replaced_for_a_frame_it_cannot_hold(
    jdir: str, how: str
) -> None:
    with Writer.create(jdir, "grow", page_size=SMALL, service=None) as writer:
        writer.write(b"\x01" * 100)
    create_page(jdir, "grow", 1, SMALL)  # as a service preparing pages ahead would
    with Writer.create(jdir, "grow", page_size=LARGE, service=None) as writer:
        write_big(writer, how, 2)
        write_big(writer, how, 3)
    assert page_header(page_path(jdir, "grow", 1)).page_size == LARGE
    assert_sound(jdir, "grow", [(100, 1), (BIG_FRAME, 2), (BIG_FRAME, 3)])


def test_a_page_made_ahead_is_used_at_its_own_size_when_the_frame_fits(jdir: str) -> None:
    with Writer.create(jdir, "honour", page_size=SMALL, service=None) as writer:
        writer.write(b"\x01" * 40_000)
    create_page(jdir, "honour", 1, SMALL)
    with Writer.create(jdir, "honour", page_size=LARGE, service=None) as writer:
        for byte in range(2, 6):  # 40 KB frames: one per 64 KiB page, several per 1 MiB page
            writer.write(bytes([byte]) * 40_000)
    sizes = [page_header(page_path(jdir, "honour", n)).page_size for n in range(3)]
    assert sizes == [SMALL, SMALL, LARGE]
    assert_sound(jdir, "honour", [(40_000, b) for b in range(1, 6)])


@pytest.fixture
def own_service(tmp_path: Path) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(str(tmp_path / "home"))
    svc.start()
    yield svc
    svc.stop()


@pytest.mark.parametrize("how", ["write", "frame"])
def test_the_services_page_made_ahead_at_the_old_size_is_replaced(
    jdir: str, how: str, own_service: ServiceProcess
) -> None:
    home = own_service.home
    with Writer.create(jdir, "svc", page_size=SMALL, service=home) as writer:
        for _ in range(300):  # past half of page 0: the service prepares page 1 of a new journal
            writer.write(b"\x01" * 100)
        wait_for(lambda: os.path.exists(page_path(jdir, "svc", 1)), what="the service's page 1")
    assert page_header(page_path(jdir, "svc", 1)).page_size == SMALL
    with Writer.create(jdir, "svc", page_size=LARGE, service=home) as writer:
        write_big(writer, how, 2)
        write_big(writer, how, 3)
        writer.write(b"\x04" * 100)  # crosses a slot: the service prepares page 2 at 1 MiB
        wait_for(lambda: os.path.exists(page_path(jdir, "svc", 2)), what="the service's page 2")
    assert os.stat(page_path(jdir, "svc", 2)).st_size == LARGE
    assert own_service.child is not None and own_service.child.proc.poll() is None
    expected = [(100, 1)] * 300 + [(BIG_FRAME, 2), (BIG_FRAME, 3), (100, 4)]
    assert_sound(jdir, "svc", expected)


def start_on_an_empty_page(jdir: str, name: str) -> None:
    """Three frames in 64 KiB page 0, then an empty page 1 that the writer resumes on."""
    with Writer.create(jdir, name, page_size=SMALL, service=None) as writer:
        for _ in range(3):
            writer.write(b"\x01" * 20_000)
        with pytest.raises(UsageError, match="source"):
            writer.write(b"\x01" * 20_000, source=-1)  # switched to page 1, then refused


@pytest.mark.parametrize("how", ["write", "frame"])
def test_an_empty_current_page_too_small_for_a_frame_ends_with_a_seekable_marker(jdir: str, how: str) -> None:
    start_on_an_empty_page(jdir, "empty")
    with Writer.create(jdir, "empty", page_size=LARGE, service=None) as writer:
        write_big(writer, how, 2)
    header = page_header(page_path(jdir, "empty", 1))
    assert header.first_nano == header.last_nano > 0  # the marker alone, stamped in the header
    assert_sound(jdir, "empty", [(20_000, 1)] * 3 + [(BIG_FRAME, 2)])


def test_seek_reads_an_old_marker_only_page_by_its_last_nano(jdir: str) -> None:
    """A writer before this fix left pages holding only their marker with first_nano 0."""
    start_on_an_empty_page(jdir, "old")
    with Writer.create(jdir, "old", page_size=LARGE, service=None) as writer:
        write_big(writer, "write", 2)  # page 1 holds only its marker; page 2 is 1 MiB
        writer.write(b"\x03")
    with open(page_path(jdir, "old", 1), "r+b") as page:
        page.seek(32)
        page.write(struct.pack("<q", 0))  # first_nano as the old writer left it
    frames = replay(jdir, "old")
    assert frames == [(20_000, 1)] * 3 + [(BIG_FRAME, 2), (1, 3)]
    with Reader.create("old-nanos") as reader:
        reader.add_journal(jdir, "old")
        nanos = [f.nano for f in iter(reader.read, None)]
    assert replay(jdir, "old", nanos[-1]) == frames[nanos.index(nanos[-1]) :]
    assert replay(jdir, "old", nanos[3]) == frames[nanos.index(nanos[3]) :]
