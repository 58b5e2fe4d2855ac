"""Format v2: sequence numbers and checksums, and version 1 journals read and continued."""

from __future__ import annotations

import os
import random
import struct
import tarfile
import time
from pathlib import Path

import payloads
import pytest

from conftest import Procs, wait_for
from mmipc import CorruptJournalError, Frame, Reader, Writer
from mmipc.journal._files import page_path
from mmipc.journal._page import MappedPage, page_header
from mmipc.tools import check_journal

PAGE = 64 * 1024
V1_FIXTURE = Path(__file__).parent / "fixtures" / "v1_journal.tar.gz"
V1_FRAMES = 500  # journal "v1": payloads.make(0..499), msg_type DATA_MSG, source i % 7, 2 pages


def frames_of(jdir: str, name: str, start: str | int = "begin") -> list[Frame]:
    reader = Reader.create(f"v2-{name}-{random.randrange(10**9)}")
    reader.add_journal(jdir, name, start)  # type: ignore[arg-type]
    return list(iter(reader.read, None))


def extract_v1(jdir: str) -> None:
    """The fixture was written by mmipc's version 1 writer (commit afa3177) and is kept as it was."""
    with tarfile.open(V1_FIXTURE) as tar:
        tar.extractall(jdir, filter="data")


def frame_fields(jdir: str, name: str, page_no: int) -> list[tuple[int, int, int]]:
    """(msg_type, stored seq, stored checksum) of every committed frame of a page, marker included."""
    page = MappedPage.open(page_path(jdir, name, page_no), name, page_no)
    try:
        return [(f.msg_type, f.seq, f.checksum) for f in page.frames()]
    finally:
        page.release()


def test_a_version_1_journal_reads_with_seq_minus_one(jdir: str) -> None:
    extract_v1(jdir)
    assert [page_header(page_path(jdir, "v1", n)).version for n in (0, 1)] == [1, 1]
    frames = frames_of(jdir, "v1")
    assert [payloads.check(f.data) for f in frames] == list(range(V1_FRAMES))
    assert {f.seq for f in frames} == {-1} and [f.source for f in frames] == [i % 7 for i in range(V1_FRAMES)]
    assert check_journal(jdir, "v1").ok
    middle = frames[V1_FRAMES // 2].nano
    assert payloads.check(frames_of(jdir, "v1", middle)[0].data) == V1_FRAMES // 2


def test_a_version_1_page_is_finished_in_version_1_and_the_next_page_is_version_2(jdir: str) -> None:
    extract_v1(jdir)
    with Writer.create(jdir, "v1", checksum=True, service=None) as writer:  # page 3 at its switch
        seq = V1_FRAMES
        while not os.path.exists(page_path(jdir, "v1", 3)):
            writer.write(payloads.make(seq), msg_type=payloads.DATA_MSG)
            seq += 1
    headers = [page_header(page_path(jdir, "v1", n)) for n in range(4)]
    assert [(h.version, h.flags, h.first_seq) for h in headers[1:3]] == [(1, 0, 0), (2, 1, 0)]
    assert {(s, c) for _, s, c in frame_fields(jdir, "v1", 1)} == {(0, 0)}  # v1 frames: reserved zero
    frames = frames_of(jdir, "v1")
    assert [payloads.check(f.data) for f in frames] == list(range(seq))
    in_v1 = sum(1 for f in frames if f.seq == -1)
    assert in_v1 > V1_FRAMES and [f.seq for f in frames[in_v1:]] == list(range(seq - in_v1))
    assert headers[3].first_seq == sum(1 for m, _, _ in frame_fields(jdir, "v1", 2) if m != 0xFFFF_FFFF)
    result = check_journal(jdir, "v1")
    assert result.ok, result.problem


@pytest.mark.parametrize("checksum", [False, True])
def test_seq_is_continuous_across_pages_and_matches_first_seq(jdir: str, checksum: bool) -> None:
    with Writer.create(jdir, "seq", page_size=PAGE, checksum=checksum) as writer:
        for i in range(5000):
            writer.write(i.to_bytes(4, "little") * (i % 40 + 1))
        with writer.frame(8) as buf:
            buf[:] = b"claimed!"
    frames = frames_of(jdir, "seq")
    assert [f.seq for f in frames] == list(range(5001))
    assert bytes(frames[-1].data) == b"claimed!"
    pages = sorted(int(f.split(".")[1]) for f in os.listdir(jdir) if f.endswith(".journal"))
    firsts = [page_header(page_path(jdir, "seq", n)).first_seq for n in pages]
    starts = [0]
    for n in pages[:-1]:
        starts.append(starts[-1] + sum(1 for m, _, _ in frame_fields(jdir, "seq", n) if m != 0xFFFF_FFFF))
    assert len(pages) > 5 and firsts[: len(starts) - 1] == starts[:-1]
    assert {page_header(page_path(jdir, "seq", n)).checksums for n in pages} == {checksum}


def test_seq_continues_after_a_sigkilled_writer_resumes(procs: Procs, jdir: str) -> None:
    rng = random.Random(os.environ.get("MMIPC_TEST_SEED", "seq-crash"))
    for _ in range(8):
        writer = procs.spawn("writer_proc.py", jdir, "crashed", str(PAGE), "-1", "--checksum")
        procs.expect_line(writer, "ready")
        time.sleep(rng.uniform(0.0, 0.05))  # a random kill moment, not a wait for a condition
        procs.kill9(writer)
    final = procs.spawn("writer_proc.py", jdir, "crashed", str(PAGE), "10", "--end", "--checksum")
    total = int(procs.finish(final).split()[-1])
    frames = frames_of(jdir, "crashed")
    assert [f.seq for f in frames] == list(range(total + 1))  # the data frames, then the end frame
    assert [payloads.check(f.data) for f in frames[:-1]] == list(range(total))
    assert check_journal(jdir, "crashed").ok


def flip_payload_byte(jdir: str, name: str, index: int) -> int:
    """Flip one payload bit of the index-th frame of page 0; return that frame's offset."""
    path = page_path(jdir, name, 0)
    page = MappedPage.open(path, name, 0)
    offset = list(page.frames())[index].offset
    page.release()
    with open(path, "r+b") as f:
        f.seek(offset + 32 + 3)
        byte = f.read(1)[0]
        f.seek(offset + 32 + 3)
        f.write(bytes([byte ^ 0x10]))
    return offset


@pytest.mark.parametrize("readers", [1, 2])  # one journal: the fused read; two: the merge
def test_a_checksum_mismatch_is_caught_by_readers_and_by_check(jdir: str, readers: int) -> None:
    with Writer.create(jdir, "crc", page_size=PAGE, checksum=True) as writer:
        for i in range(100):
            writer.write(payloads.make(i))
    with Writer.create(jdir, "other", page_size=PAGE) as writer:
        writer.write(b"x")
    offset = flip_payload_byte(jdir, "crc", 40)
    path = page_path(jdir, "crc", 0)
    reader = Reader.create(f"crc-{readers}")
    reader.add_journal(jdir, "crc")
    if readers == 2:
        reader.add_journal(jdir, "other")
    got = []
    with pytest.raises(CorruptJournalError, match="checksum") as info:
        while (frame := reader.read()) is not None:
            got.append(frame)
    assert (info.value.path, info.value.offset) == (path, offset)
    assert [payloads.check(f.data) for f in got if f.journal.name == "crc"] == list(range(40))
    with pytest.raises(CorruptJournalError, match="checksum"):
        reader.read()  # stays put
    result = check_journal(jdir, "crc")
    assert result.problem is not None and "checksum" in result.problem.what
    assert (result.problem.path, result.problem.offset) == (path, offset)


def test_a_checksum_mismatch_without_checksums_goes_unnoticed(jdir: str) -> None:
    with Writer.create(jdir, "plain", page_size=PAGE) as writer:
        for i in range(100):
            writer.write(payloads.make(i))
    flip_payload_byte(jdir, "plain", 40)
    assert len(frames_of(jdir, "plain")) == 100 and check_journal(jdir, "plain").ok


def test_the_service_prepares_pages_with_the_writers_flags(jdir: str) -> None:
    with Writer.create(jdir, "flags", page_size=PAGE, checksum=True) as writer:
        for _ in range(20):  # cross time-index slots: the writer tells the service about page 0
            writer.write(b"\x01" * 100)
        for _ in range(33):  # past half of page 0: the service prepares page 1 for a new journal now
            writer.write(b"\x01" * 1000)
        wait_for(lambda: os.path.exists(page_path(jdir, "flags", 1)), what="the service's page 1")
        assert page_header(page_path(jdir, "flags", 1)).checksums
        while not os.path.exists(page_path(jdir, "flags", 2)):
            writer.write(b"\x02" * 1000)
    assert all(c != 0 for m, _, c in frame_fields(jdir, "flags", 1) if m != 0xFFFF_FFFF)
    assert check_journal(jdir, "flags").ok


def test_a_writer_follows_the_flags_of_a_page_made_before(jdir: str) -> None:
    with Writer.create(jdir, "follow", page_size=PAGE, service=None) as writer:
        writer.write(b"plain")
    with Writer.create(jdir, "follow", page_size=PAGE, checksum=True, service=None) as writer:
        while not os.path.exists(page_path(jdir, "follow", 1)):
            writer.write(b"\x03" * 1000)
        writer.write(b"\x04" * 1000)
    assert [page_header(page_path(jdir, "follow", n)).checksums for n in (0, 1)] == [False, True]
    assert {c for m, _, c in frame_fields(jdir, "follow", 0)} == {0}
    frames = frames_of(jdir, "follow")
    assert [f.seq for f in frames] == list(range(len(frames))) and check_journal(jdir, "follow").ok


@pytest.mark.parametrize("checksum", [False, True])
def test_seq_wraps_past_32_bits_inside_a_page(jdir: str, checksum: bool) -> None:
    first = 2**32 - 5
    Writer.create(jdir, "wrap", page_size=PAGE, checksum=checksum, service=None).close()
    with open(page_path(jdir, "wrap", 0), "r+b") as f:  # as if 2**32 - 5 frames came before
        f.seek(120)
        f.write(struct.pack("<Q", first))
    with Writer.create(jdir, "wrap", page_size=PAGE, service=None) as writer:
        for i in range(2000):  # several pages
            writer.write(i.to_bytes(4, "little") * 10)
    want = list(range(first, first + 2000))
    assert [f.seq for f in frames_of(jdir, "wrap")] == want
    merged = Reader.create("wrap-merge")
    merged.add_journal(jdir, "wrap")
    merged.add_journal(jdir, "absent")  # two journals: poll and take instead of the fused read
    assert [f.seq for f in iter(merged.read, None)] == want
    assert page_header(page_path(jdir, "wrap", 1)).first_seq > 2**32


def test_check_reports_a_checksum_on_a_page_without_checksums(jdir: str) -> None:
    with Writer.create(jdir, "stray", page_size=PAGE) as writer:
        for i in range(10):
            writer.write(payloads.make(i))
    page = MappedPage.open(page_path(jdir, "stray", 0), "stray", 0)
    offset = list(page.frames())[4].offset
    page.release()
    with open(page_path(jdir, "stray", 0), "r+b") as f:
        f.seek(offset + 28)
        f.write(struct.pack("<I", 0xDEADBEEF))
    result = check_journal(jdir, "stray")
    assert result.problem is not None and result.problem.offset == offset
    assert "page without checksums" in result.problem.what
