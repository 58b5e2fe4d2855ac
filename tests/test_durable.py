"""Durable named readers: committed positions survive SIGKILL, resume is exact, bad files are errors."""

from __future__ import annotations

import os
import random
import struct
import tarfile
import time
from pathlib import Path

import pytest

from conftest import Child, Procs
from mmipc import CursorError, Reader, UsageError, Writer
from mmipc.journal._durable import CursorFile, read_record
from mmipc.service._retention import Policy, prune

SEQ = struct.Struct("<Q")
PAGE = 64 * 1024


def write_frames(directory: str, name: str, count: int, start: int = 0, size: int = 200) -> None:
    with Writer.create(directory, name, page_size=PAGE, service=None) as writer:
        for seq in range(start, start + count):
            writer.write(SEQ.pack(seq) + bytes(size - 8))


def seqs(reader: Reader) -> list[int]:
    return [SEQ.unpack_from(f.data)[0] for f in reader.frames(timeout=0.2)]


def test_resume_after_commit_and_close(jdir: str, tmp_path: Path) -> None:
    write_frames(jdir, "j", 1000)
    cdir = str(tmp_path / "cursors")
    with Reader.create("d1", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "j")
        first = [SEQ.unpack_from(reader.read().data)[0] for _ in range(300)]  # type: ignore[union-attr]
        reader.commit()
        reader.read()  # read, not committed by commit(), but close() commits it
    assert first == list(range(300))
    with Reader.create("d1", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "j")
        assert seqs(reader) == list(range(301, 1000))
    write_frames(jdir, "j", 10, start=1000)
    with Reader.create("d1", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "j")
        assert seqs(reader) == list(range(1000, 1010))
    with Reader.create("d1", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "j", start="begin")  # start= overrides the committed position
        assert seqs(reader)[:2] == [0, 1]


def test_commit_every_frames_commits_before_the_next_read(jdir: str, tmp_path: Path) -> None:
    write_frames(jdir, "j", 100)
    cdir = str(tmp_path / "cursors")
    reader = Reader.create("auto", durable=True, cursor_dir=cdir, commit_every=10, service=None)
    reader.add_journal(jdir, "j")
    for _ in range(25):
        reader.read()
    record = read_record(os.path.join(cdir, "auto.cursor"))
    assert record is not None and record["generation"] == 2  # after frames 10 and 20, not 25
    del reader  # no close: the process "crashes" here as far as the cursor is concerned
    with Reader.create("auto", durable=True, cursor_dir=cdir, service=None) as again:
        again.add_journal(jdir, "j")
        assert seqs(again)[0] == 20


def test_one_process_per_durable_name(jdir: str, tmp_path: Path) -> None:
    cdir = str(tmp_path / "cursors")
    with Reader.create("held", durable=True, cursor_dir=cdir, service=None):
        with pytest.raises(CursorError, match="open in another process"):
            Reader.create("held", durable=True, cursor_dir=cdir, service=None)
    Reader.create("held", durable=True, cursor_dir=cdir, service=None).close()


def test_commit_on_a_plain_reader_is_a_usage_error() -> None:
    with Reader.create("plain", service=None) as reader, pytest.raises(UsageError, match="not durable"):
        reader.commit()


def test_damaged_cursor_file_is_a_clear_error(jdir: str, tmp_path: Path) -> None:
    write_frames(jdir, "j", 10)
    cdir = str(tmp_path / "cursors")
    with Reader.create("bad", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "j")
        seqs(reader)
    path = tmp_path / "cursors" / "bad.cursor"
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CursorError, match="checksum"):
        Reader.create("bad", durable=True, cursor_dir=cdir, service=None)
    path.write_bytes(b"garbage")
    with pytest.raises(CursorError, match="not an mmipc cursor file"):
        Reader.create("bad", durable=True, cursor_dir=cdir, service=None)


def test_position_that_no_longer_matches_the_journal_is_refused(jdir: str, tmp_path: Path) -> None:
    write_frames(jdir, "j", 50)
    cdir = str(tmp_path / "cursors")
    with Reader.create("moved", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "j")
        seqs(reader)
    for entry in os.listdir(jdir):
        os.unlink(os.path.join(jdir, entry))
    write_frames(jdir, "j", 50, size=96)  # a new journal of the same name: other offsets, other times
    reader = Reader.create("moved", durable=True, cursor_dir=cdir, service=None)
    with pytest.raises(CursorError, match="does not match the journal"):
        reader.add_journal(jdir, "j")
    reader.close()


def test_removed_page_resumes_at_the_next_page(jdir: str, tmp_path: Path) -> None:
    write_frames(jdir, "j", 1000)
    cdir = str(tmp_path / "cursors")
    with Reader.create("gone", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "j")
        for _ in range(5):
            reader.read()
    os.unlink(os.path.join(jdir, "j.00000000.journal"))
    with Reader.create("gone", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "j")
        got = seqs(reader)
    assert got[0] > 5 and got == list(range(got[0], 1000))


def test_cursor_file_is_replaced_atomically(tmp_path: Path) -> None:
    cursor = CursorFile(str(tmp_path), "atomic").lock()
    cursor.commit({})
    assert read_record(cursor.path) == read_record(cursor.path)
    assert sorted(os.listdir(tmp_path)) == ["atomic.cursor", "atomic.cursor.lock"]  # no temporary left
    cursor.unlock()


def _run_until_killed(procs: Procs, args: list[str], rng: random.Random, kill: bool) -> list[str]:
    child: Child = procs.spawn("durable_proc.py", *args)
    child.expect_line("ready")
    lines: list[str] = []
    stop_after = rng.randint(1, 400) if kill else None
    while True:
        line = child.lines.get(timeout=120)
        if line is None:
            break
        lines.append(line.strip())
        if stop_after is not None and len(lines) >= stop_after:
            child.kill9()
            # What it printed before it died counts too: it may have read and committed more frames
            # than this loop had seen when it sent the kill.
            while (rest := child.lines.get(timeout=120)) is not None:
                lines.append(rest.strip())
            break
        if line.startswith("done"):
            break
    if not kill:
        child.finish()
    return lines


def test_sigkilled_durable_reader_loses_nothing_and_repeats_only_after_its_last_commit(
    jdir: str, tmp_path: Path, procs: Procs
) -> None:
    """Kill a durable reader of two journals at random points (often inside a commit's fsync),
    restart it, and check every run: no frame lost, duplicates only after the last commit."""
    count = 1500
    write_frames(jdir, "a", count)
    write_frames(jdir, "b", count)
    rng = random.Random(12)
    args = [jdir, "killed", str(tmp_path / "cursors"), "7", "a", "b"]
    committed = {"a": -1, "b": -1}
    printed = {"a": -1, "b": -1}
    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    for run in range(40):
        lines = _run_until_killed(procs, args, rng, kill=run < 39)
        firsts: dict[str, int] = {}
        for line in lines:
            if line == "C":
                committed = dict(printed)
            elif line.startswith("F "):
                _, name, seq_text = line.split()
                seq = int(seq_text)
                if name not in firsts:
                    firsts[name] = seq
                    assert committed[name] < seq <= printed[name] + 1, (run, name, seq, committed, printed)
                else:
                    assert seq == printed[name] + 1, (run, name, seq, printed)
                printed[name] = seq
                seen[name].add(seq)
        if lines and lines[-1] == "done":
            break
    assert lines[-1] == "done"
    assert seen == {"a": set(range(count)), "b": set(range(count))}


def test_end_on_a_journal_without_pages_yet_means_every_frame_to_come(jdir: str) -> None:
    reader = Reader.create("early", service=None)
    reader.add_journal(jdir, "later", start="end")
    assert reader.read() is None  # the journal does not exist yet
    write_frames(jdir, "later", 10)
    assert seqs(reader) == list(range(10))
    reader.close()


def test_the_committed_seq_is_the_acknowledged_frames_across_pages(jdir: str, tmp_path: Path) -> None:
    """The cursor file's seq was always -1: it is the full seq of the last acknowledged frame."""
    write_frames(jdir, "j", 1000)  # about 300 frames of 200 bytes per 64 KiB page
    cdir = str(tmp_path / "cursors")

    def committed() -> list[tuple[int, int, int]]:
        record = read_record(os.path.join(cdir, "s.cursor"))
        assert record is not None
        return [(j["page_no"], j["offset"], j["seq"]) for j in record["journals"]]

    with Reader.create("s", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "j")
        for count in (1, 299, 400, 1):  # into page 0, pages 1 and 2, then one more
            frames = [reader.read() for _ in range(count)]
            reader.commit()
            last = frames[-1]
            assert last is not None and committed()[0][2] == last.seq == SEQ.unpack_from(last.data)[0]
        assert committed()[0][0] >= 2
    with Reader.create("s", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "j")
        assert seqs(reader) == list(range(701, 1000))
    assert committed()[0][2] == 999


def test_a_committed_seq_that_does_not_match_the_frame_is_refused(jdir: str, tmp_path: Path) -> None:
    write_frames(jdir, "j", 50)
    cdir = str(tmp_path / "cursors")
    with Reader.create("lied", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "j")
        [reader.read() for _ in range(10)]
    file = CursorFile(cdir, "lied").lock()
    [(jid, position)] = file.positions.items()
    assert position.seq == 9
    file.commit({jid: position._replace(seq=10)})
    file.unlock()
    reader = Reader.create("lied", durable=True, cursor_dir=cdir, service=None)
    with pytest.raises(CursorError, match="does not match the journal"):
        reader.add_journal(jdir, "j")
    reader.close()


def test_a_version_1_journal_commits_seq_minus_1_and_resumes(jdir: str, tmp_path: Path) -> None:
    with tarfile.open(Path(__file__).parent / "fixtures" / "v1_journal.tar.gz") as tar:
        tar.extractall(jdir, filter="data")  # 500 frames on 2 version-1 pages, written by mmipc 0.1
    cdir = str(tmp_path / "cursors")
    with Reader.create("old", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "v1")
        first = [reader.read() for _ in range(300)]
    assert all(f is not None and f.seq == -1 for f in first)
    record = read_record(os.path.join(cdir, "old.cursor"))
    assert record is not None and [j["seq"] for j in record["journals"]] == [-1]
    with Reader.create("old", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "v1")
        rest = list(reader.frames(timeout=0.2))
    assert len(rest) == 200 and rest[0].nano > first[-1].nano  # type: ignore[union-attr]


def test_a_durable_reader_holds_a_journal_that_has_no_page_yet(
    jdir: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal without pages was not committed at all: until the reader's first commit after the
    writer started, retention could remove frames it had never read (found by the torture)."""
    home = str(tmp_path / "home")
    cdir = os.path.join(home, "cursors")
    with Reader.create("early", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "late")
        reader.commit()
    write_frames(jdir, "late", 1000)  # about four pages
    result, _ = prune(home, jdir, "late", Policy(max_pages=1), time.time_ns())
    assert result.remove == [] and result.kept_for == "page 0 is held by reader early"
    with Reader.create("early", durable=True, cursor_dir=cdir, service=None) as reader:
        reader.add_journal(jdir, "late")
        assert seqs(reader) == list(range(1000))
    assert "is gone" not in caplog.text


@pytest.mark.parametrize("every", ["5", True, 0, -1, float("nan"), float("inf"), [5]])
def test_commit_every_of_the_wrong_kind_gets_our_error(tmp_path: Path, every: object) -> None:
    """A string raised a bare TypeError from a comparison (`"5" <= 0`); nan and inf were taken."""
    with pytest.raises(UsageError, match="commit_every must be a positive number"):
        Reader.create("x", service=None, durable=True, cursor_dir=str(tmp_path), commit_every=every)  # type: ignore[arg-type]
