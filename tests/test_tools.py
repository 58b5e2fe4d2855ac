"""mmipc.tools on real journals: check's rules about pages prepared ahead, and the CLI reference."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

from conftest import wait_for
from mmipc import Writer
from mmipc.cli import build_parser
from mmipc.journal._layout import align8
from mmipc.tools import (
    check_journal,
    last_written_page,
    list_journals,
    nth_last_nano,
    open_page,
    page_frames,
    summarize,
)

PAGE = 64 * 1024


def test_a_page_prepared_ahead_by_the_service_is_not_corruption(jdir: str) -> None:
    with Writer.create(jdir, "ahead", page_size=PAGE) as writer:
        for _ in range(34):  # past half of page 0: the service prepares page 1 of a new journal now
            writer.write(b"x" * 1000)
        wait_for(lambda: os.path.exists(os.path.join(jdir, "ahead.00000001.journal")), what="page 1")
    result = check_journal(jdir, "ahead")
    assert result.ok and result.pages == 2 and result.frames == 34
    assert last_written_page(jdir, "ahead") == 0


def test_a_lost_end_of_page_marker_before_a_written_page_is_corruption(jdir: str) -> None:
    with Writer.create(jdir, "j", page_size=PAGE, service=None) as writer:
        for _ in range(3):
            writer.write(b"y" * 25000)  # two per page: the third opens page 1
    page0 = os.path.join(jdir, "j.00000000.journal")
    marker = 4096 + 2 * (25000 + 32 + 0)  # both frames are 8-aligned already
    with open(page0, "r+b") as f:
        f.seek(marker)
        assert struct.unpack("<I", f.read(4))[0] == 32
        f.seek(marker)
        f.write(b"\0\0\0\0")
    problem = check_journal(jdir, "j").problem
    assert problem is not None and problem.path == page0 and problem.offset == marker
    assert "end-of-page marker" in problem.what


def test_summaries_and_positions(jdir: str) -> None:
    with Writer.create(jdir, "s", page_size=PAGE, service=None) as writer:
        nanos = [writer.write(bytes(500)) for _ in range(300)]
    assert list_journals(jdir) == ["s"]
    summary = summarize(jdir, "s")
    assert (summary.frames, summary.first_nano, summary.last_nano) == (300, nanos[0], nanos[-1])
    assert nth_last_nano(jdir, "s", 1) == nanos[-1] and nth_last_nano(jdir, "s", 250) == nanos[-250]
    assert nth_last_nano(jdir, "s", 10_000) == nanos[0] and nth_last_nano(jdir, "none", 3) is None


def test_the_cli_reference_covers_every_command() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in sub.choices or {}:
        assert f"## mmipc {command}\n" in doc, f"docs/cli.md lacks `mmipc {command}`: run docs/make_cli_md.py"


def three_pages(jdir: str) -> list[int]:
    """A journal of three pages; the number of data frames in each."""
    with Writer.create(jdir, "j", page_size=PAGE, service=None) as writer:
        while not os.path.exists(os.path.join(jdir, "j.00000002.journal")):
            writer.write(bytes(1000))
        writer.write(bytes(1000))
    return [count_frames(jdir, n) for n in range(3)]


def count_frames(jdir: str, number: int) -> int:
    page = open_page(jdir, "j", number)
    try:
        return sum(1 for _ in page_frames(page))
    finally:
        page.release()


def test_check_counts_the_pages_and_frames_before_a_broken_later_page(jdir: str) -> None:
    counts = three_pages(jdir)
    page2 = os.path.join(jdir, "j.00000002.journal")
    with open(page2, "r+b") as f:
        f.write(b"NOTMMIPC")  # the magic: the page cannot even be opened
    result = check_journal(jdir, "j")
    assert result.problem is not None and result.problem.path == page2
    assert (result.pages, result.frames) == (2, counts[0] + counts[1])
    out = subprocess.run(
        [sys.executable, "-m", "mmipc", "check", jdir, "j"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert f"checked 2 page(s) and {counts[0] + counts[1]} frame(s) before it" in out.stdout, out.stdout


def test_check_counts_the_frames_before_a_problem_inside_a_page(jdir: str) -> None:
    counts = three_pages(jdir)
    page1 = os.path.join(jdir, "j.00000001.journal")
    third = 4096 + 2 * align8(1000 + 32)
    with open(page1, "r+b") as f:
        f.seek(third)
        f.write(struct.pack("<I", 7))  # a frame length shorter than a frame header
    result = check_journal(jdir, "j")
    assert result.problem is not None and (result.problem.path, result.problem.offset) == (page1, third)
    assert (result.pages, result.frames) == (1, counts[0] + 2)
