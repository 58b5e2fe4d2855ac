"""What a retention pass reads: each counter file once, not once per page it removes, and never a
stale position (a reader that moves onto a page during the pass still holds it)."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import wait_for
from mmipc import Reader, Service, Writer
from mmipc.journal._files import list_pages
from mmipc.journal._metrics import counters_path, read_counters
from mmipc.service._retention import Counters, Policy, apply, plan
from test_retention import PAGE, PER_PAGE, fill

PAGES = 40
READERS = 4


def test_a_pass_over_many_pages_reads_each_counter_file_once(jdir: str, tmp_path: Path) -> None:
    """`apply` reads the holds again before each page (see `_retention`'s rules); it read every counter
    file again each time, whole (up to 64 MiB): 4 readers x 39 pages = 160 full reads for this pass.
    Now a file is read whole only when its seqlock generation moved: 4."""
    home = str(tmp_path / "home")
    with Service(home), Writer.create(jdir, "many", page_size=PAGE, service=home) as writer:
        fill(writer, PER_PAGE * PAGES + 5)
        with Writer.create(jdir, "other", page_size=PAGE, service=home) as other:
            fill(other, 3)
        readers = [Reader.create(f"r{i}", service=home) for i in range(READERS)]
        try:
            for reader in readers:
                reader.add_journal(jdir, "other")
            result = plan(home, jdir, "many", Policy(max_pages=1), time.time_ns())
            assert len(result.remove) >= PAGES - 1 and result.held_by == []
            done = apply(result, None, home)
            assert len(done) == len(result.remove) and list_pages(jdir, "many")[0] == result.remove[-1] + 1
            assert result.counters.full_reads == READERS
        finally:
            for reader in readers:
                reader.close()


def test_a_reader_that_moves_onto_a_page_during_the_pass_still_holds_it(jdir: str, tmp_path: Path) -> None:
    """The holds are planned, then a reader already known (its counter file read, for another
    journal) adds this journal on page 5: its new position is read before page 5 goes, and holds it."""
    home = str(tmp_path / "home")
    with Service(home), Writer.create(jdir, "many", page_size=PAGE, service=home) as writer:
        fill(writer, PER_PAGE * 5 + 1)
        on_page_5 = writer.last_nano
        fill(writer, PER_PAGE * 5, start=PER_PAGE * 5 + 1)
        with Writer.create(jdir, "other", page_size=PAGE, service=home) as other:
            fill(other, 3)
        with Reader.create("mover", service=home) as reader:
            reader.add_journal(jdir, "other")
            result = plan(home, jdir, "many", Policy(max_pages=1), time.time_ns())
            assert result.remove[:6] == [0, 1, 2, 3, 4, 5] and result.counters.full_reads == 1
            reader.add_journal(jdir, "many", start=on_page_5)
            done = apply(result, None, home)
            assert len(done) == 5 and list_pages(jdir, "many")[0] == 5
            assert result.kept_for == "page 5 is held by reader mover"
            assert result.counters.full_reads == 2
            frame = reader.read()
            assert frame is not None


def test_a_counter_file_with_a_stale_copys_generation_is_read_again(jdir: str, tmp_path: Path) -> None:
    """A reader started again under its name makes a new counter file, whose inode number may be the
    old file's again and whose generation starts over: a file with the generation the cache read it
    at, but other content, must be read again, never answered from the stale copy (which could hold
    a later position than the reader's and let retention remove a page it still needs). Shown with
    the content of a real reader's file put in place of another's, its generation made equal."""
    home = str(tmp_path / "home")
    with Service(home), Writer.create(jdir, "many", page_size=PAGE, service=home) as writer:
        fill(writer, PER_PAGE * 3)
        with Reader.create("early", service=home) as early, Reader.create("late", service=home) as late:
            early.add_journal(jdir, "many", start="begin")
            late.add_journal(jdir, "many", start="end")
            old = Path(counters_path(home, "late")).read_bytes()
            new = bytearray(Path(counters_path(home, "early")).read_bytes())
    ghost = Path(counters_path(home, "ghost"))
    ghost.write_bytes(old)
    counters = Counters()
    stale = counters.read(str(ghost))
    assert stale is not None and stale == read_counters(str(ghost))
    new[16:24] = old[16:24]  # the generation the cache read the old content at
    before = ghost.stat().st_ctime_ns

    def rewritten() -> bool:  # in place (the same inode); until the clock gives it a new change time
        with open(ghost, "r+b") as f:
            f.write(new)
        return ghost.stat().st_ctime_ns != before

    wait_for(rewritten, timeout=30)
    fresh = counters.read(str(ghost))
    assert fresh == read_counters(str(ghost)) and fresh != stale
    assert counters.full_reads == 2


def test_a_reader_made_again_under_its_name_does_not_take_up_the_old_files_generation(
    tmp_path: Path,
) -> None:
    """The cache's stamp cannot tell the two files apart by inode (reused) nor, on a kernel with
    coarse change times (before 6.13), by ctime within one tick; pid and start are the same process.
    A new counter file's generation starts anywhere (even), not at 0, so the old file's count of
    publishes does not come back with it."""
    home = str(tmp_path / "home")
    generations = []
    with Service(home):
        for _ in range(8):
            with Reader.create("again", service=home):
                data = Path(counters_path(home, "again")).read_bytes()
                generations.append(int.from_bytes(data[16:24], "little"))
    assert all(g % 2 == 0 for g in generations), generations
    assert len(set(generations)) == len(generations), generations
