"""Retention: whole finished pages, oldest first, never a page a reader needs; `mmipc prune`."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Child, Procs, ServiceProcess, wait_for
from mmipc import Reader, Service, UsageError, Writer, service_status
from mmipc.journal._files import list_pages
from mmipc.service._retention import Plan, Policy, parse_age, parse_dir_policy, parse_size, prune

SEQ = struct.Struct("<Q")
PAGE = 64 * 1024
PER_PAGE = (PAGE - 4096 - 32) // 1032  # frames of 1000-byte payloads (1032 bytes) in one page


def fill(writer: Writer, count: int, start: int = 0) -> None:
    for seq in range(start, start + count):
        writer.write(SEQ.pack(seq) + bytes(992))


def mmipc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mmipc", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def home(tmp_path: Path) -> str:
    """A service home of this test's own (the session's service serves another)."""
    return str(tmp_path / "home")


@pytest.fixture
def churn(jdir: str, procs: Procs) -> Callable[[str | None, int], None]:
    """`churn(home, every)`: a child writes journal 'churn' of `jdir` flat out and prunes it to its
    newest two pages every `every` frames (asking the service of `home` for the holds, or none);
    returns once 2000 frames are written. The child runs until the test ends."""

    def start(home: str | None, every: int) -> None:
        child = procs.spawn_code(
            "import time\n"
            "from mmipc import Writer\n"
            "from mmipc.service._retention import Policy, prune\n"
            f"w = Writer.create({jdir!r}, 'churn', page_size={PAGE}, service=None)\n"
            "i = 0\n"
            "while True:\n"
            "    w.write(bytes(1000))\n"
            "    i += 1\n"
            f"    if i % {every} == 0:\n"
            f"        prune({home!r}, {jdir!r}, 'churn', Policy(max_pages=2), time.time_ns())\n"
            "    if i == 2000:\n"
            "        print('churning', flush=True)\n"
        )
        child.expect_line("churning")

    return start


def test_a_lagging_durable_reader_holds_retention_back(home: str, jdir: str) -> None:
    with Service(home, retain=Policy(max_pages=2), retain_interval=0.1) as service:
        writer = Writer.create(jdir, "r", page_size=PAGE, service=home)
        fill(writer, PER_PAGE * 3 + 5)  # into page 3
        reader = Reader.create("slow", service=home, durable=True)
        reader.add_journal(jdir, "r")
        for _ in range(PER_PAGE + 3):  # into page 1
            reader.read()
        reader.close()  # commits page 1; from now on only its cursor file holds the pages
        fill(writer, PER_PAGE * 6, start=PER_PAGE * 3 + 5)
        wait_for(lambda: list_pages(jdir, "r")[0] == 1, what="retention to remove page 0 and stop at page 1")
        wait_for(lambda: "slow" in str(service_status(home)["journals"]), what="the hold shown in the status")
        [journal] = service_status(home)["journals"]
        assert journal["retention_held_by"] == "page 1 is held by reader slow"
        [entry] = service_status(home)["readers"]
        assert (
            entry["state"] == "offline" and entry["durable"] and entry["lag"][0]["committed"]["page_no"] == 1
        )
        assert service.monitor.pages_removed == 1
        with Reader.create("slow", service=home, durable=True) as again:
            again.add_journal(jdir, "r")
            got = [SEQ.unpack_from(f.data)[0] for f in again.frames(timeout=0.2)]
        assert got == list(range(PER_PAGE + 3, PER_PAGE * 9 + 5))  # nothing lost to retention
        last = list_pages(jdir, "r")[-1]
        wait_for(lambda: list_pages(jdir, "r")[0] >= last - 2, what="retention to catch up once released")
        writer.close()


def test_a_reader_finishes_a_page_removed_under_it(jdir: str) -> None:
    with Writer.create(jdir, "m", page_size=PAGE, service=None) as writer:
        fill(writer, PER_PAGE * 4)
        reader = Reader.create("mapped", service=None)
        reader.add_journal(jdir, "m")
        first = reader.read()
        assert first is not None and SEQ.unpack_from(first.data)[0] == 0
        result, done = prune(None, jdir, "m", Policy(max_pages=3), time.time_ns())
        assert result.remove == [0] and not os.path.exists(done[0])
        got = [SEQ.unpack_from(f.data)[0] for f in reader.frames(timeout=0.2)]
        assert got == list(range(1, PER_PAGE * 4))  # the unlinked page 0 read to its end, then page 1 on
        reader.close()


def test_prune_never_touches_the_current_or_prepared_page(jdir: str, tmp_path: Path) -> None:
    with Writer.create(jdir, "p", page_size=PAGE) as writer:  # the session's service prepares ahead
        fill(writer, PER_PAGE * 3 + 30)  # the writer tells the service of page 3 a few frames into it
        wait_for(lambda: len(list_pages(jdir, "p")) == 5, what="the service to prepare page 4")
        future = str(time.time_ns() + 10**12)
        dry = mmipc("prune", jdir, "p", "--before", future, "--dry-run")
        assert dry.returncode == 0 and "would remove 3 page(s)" in dry.stdout
        assert list_pages(jdir, "p") == [0, 1, 2, 3, 4]
        archive = str(tmp_path / "archive")
        out = mmipc("prune", jdir, "p", "--before", future, "--archive", archive)
        assert out.returncode == 0, out.stderr
        assert "archived 3 page(s)" in out.stdout and "page 3 is not finished" in out.stdout
        assert list_pages(jdir, "p") == [3, 4] and sorted(os.listdir(archive))[0] == "p.00000000.journal"
        fill(writer, 1, start=PER_PAGE * 3 + 30)  # the writer goes on in its current page
    old = mmipc("prune", jdir, "p", "--before", "2000-01-01 00:00:00")
    assert old.returncode == 0 and "removed 0 page(s)" in old.stdout


def test_policy_values() -> None:
    assert parse_age("7d") == 7 * 86400 * 10**9 and parse_age("90s") == 90 * 10**9
    assert parse_size("50G") == 50 << 30 and parse_size("512m") == 512 << 20 and parse_size("4096") == 4096
    for bad in ("7", "d", "-1d", "1y"):
        with pytest.raises(UsageError, match="not an age"):
            parse_age(bad)
    with pytest.raises(UsageError, match="not a size"):
        parse_size("lots")
    for args in (["--retain", "soon"], ["--retain-dir", "/d=pages:0"], ["--retain-dir", "7d"]):
        out = mmipc("service", *args, "--home", "/nonexistent/x")
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr  # usage: exit 2
        assert len(out.stderr.splitlines()) == 1 and (
            "not an age" in out.stderr or "--retain-dir" in out.stderr
        )


def test_parse_dir_policy() -> None:
    assert parse_dir_policy("/d/md=7d,bytes:2G,pages:3", "/arch") == (
        "/d/md",
        Policy(max_age_ns=7 * 86400 * 10**9, max_bytes=2 << 30, max_pages=3, archive="/arch"),
    )
    assert parse_dir_policy("/a=b/x=none") == ("/a=b/x", Policy()) and not Policy()
    for bad in ("/d", "=7d", "/d=", "/d=7", "/d=pages:x", "/d=size:1G"):
        with pytest.raises(UsageError, match="--retain-dir"):
            parse_dir_policy(bad)


def test_retention_per_directory_from_the_command_line(tmp_path: Path, home: str) -> None:
    """`mmipc service --retain-pages 1 --retain-dir B=none --retain-dir C=pages:2`: the home's policy
    rules A, B keeps everything, C keeps its newest two pages."""
    dirs = {d: str(tmp_path / d) for d in "ABC"}
    cmd = [sys.executable, "-m", "mmipc", "service", "--home", home, "--retain-pages", "1"]
    cmd += ["--retain-dir", f"{dirs['B']}=none", "--retain-dir", f"{dirs['C']}=pages:2"]
    service = Child([*cmd, "--retain-interval", "0.1"])
    try:
        service.expect_line("mmipc service pid")
        writers = [Writer.create(d, "j", page_size=PAGE, service=home) for d in dirs.values()]
        for writer in writers:
            fill(writer, PER_PAGE * 4 + 5)  # pages 0..3 finished, 4 current (5 perhaps prepared)
        wait_for(lambda: list_pages(dirs["A"], "j")[0] == 4, what="the home's policy in A")
        wait_for(lambda: len(list_pages(dirs["C"], "j")) == 2, what="C's own policy")
        ticks = service_status(home)["service"]["monitor_ticks"]
        wait_for(lambda: service_status(home)["service"]["monitor_ticks"] >= ticks + 2, what="2 more passes")
        assert list_pages(dirs["B"], "j")[:5] == [0, 1, 2, 3, 4] and list_pages(dirs["C"], "j")[0] >= 3
        assert service_status(home)["service"]["pages_removed"] == 4 + list_pages(dirs["C"], "j")[0]
        for writer in writers:
            writer.close()
    finally:
        service.proc.terminate()
        assert service.proc.wait(timeout=60) == 0


def test_a_new_reader_holds_its_pages_from_add_journal_on(jdir: str, home: str) -> None:
    """Positions were published by a thread every 0.2 s: for that long a reader that had just added a
    journal held no page, and retention could remove the page it was about to read next."""
    with Service(home):
        with Writer.create(jdir, "n", page_size=PAGE, service=home) as writer:
            fill(writer, PER_PAGE * 4)
            with Reader.create("newcomer", service=home) as reader:
                reader.add_journal(jdir, "n")
                result, _ = prune(home, jdir, "n", Policy(max_pages=1), time.time_ns(), dry_run=True)
                assert result.remove == [] and "held by reader newcomer" in result.kept_for


def test_readers_positioning_while_retention_removes_pages_never_fail(
    jdir: str, churn: Callable[[str | None, int], None]
) -> None:
    """A cursor listed the pages, then opened them: one that retention removed in between raised a
    bare FileNotFoundError out of add_journal (found by the torture). It now lists again."""
    churn(None, 20)
    for i in range(300):  # standalone readers: they hold nothing, so they do not read on here
        with Reader.create(f"newcomer{i}", service=None) as reader:
            reader.add_journal(jdir, "churn", start="begin" if i % 2 else time.time_ns() - 10**6)


def test_a_reader_placed_while_retention_runs_never_finds_its_next_page_gone(
    jdir: str, churn: Callable[[str | None, int], None], service: ServiceProcess
) -> None:
    """Retention decided on positions it had read a moment before a new reader published its own:
    the reader stood on page P, retention removed P+1, and the reader met "next page is missing"
    (found by the torture). Now retention reads the holds again before each page, and a new reader
    checks that its page survived its publication."""
    churn(service.home, 10)
    for i in range(150):
        with Reader.create(f"placed{i}") as reader:
            reader.add_journal(jdir, "churn")
            for _ in range(PER_PAGE * 2):  # across the page boundaries that retention races
                reader.read()


def test_a_reader_caught_in_the_middle_of_publishing_holds_every_page(jdir: str, home: str) -> None:
    """A counter file read mid-update (odd seqlock generation) was skipped: its reader held nothing,
    and retention removed the pages under it (found by the torture, seed 7: a reader that met a
    gap of 2,000 frames). Its publisher thread waits for the GIL between the two stores whenever the
    reader's own thread holds it, so such a read is ordinary under load."""
    with Service(home):
        with Writer.create(jdir, "m", page_size=PAGE, service=home) as writer:
            fill(writer, PER_PAGE * 4)
            with Reader.create("midway", service=home) as reader:
                reader.add_journal(jdir, "m", start="begin")
                board = reader._board
                assert board is not None
                with board._lock:  # the publisher thread, stopped between its two stores
                    board._begin()
                    try:
                        result, _ = prune(home, jdir, "m", Policy(max_pages=1), time.time_ns())
                    finally:
                        board._end()
                assert result.remove == [] and "held by reader midway" in result.kept_for
                assert list_pages(jdir, "m")[0] == 0
                for seq in range(PER_PAGE * 4):
                    frame = reader.read()
                    assert frame is not None and SEQ.unpack_from(frame.data)[0] == seq


def test_a_reader_between_two_pages_still_holds_its_page(jdir: str, home: str) -> None:
    """A cursor has no page for an instant while it moves to the next (`_enter_page` unmaps the old
    one first). A publish just then wrote "no position", and a reader stopped right after held
    nothing: retention removed every page past it (`mmipc torture --seed 7` in CI: "got seq 2220,
    expected 832 (a gap)", about 1 run in 8 on a loaded machine). It keeps its last position."""
    with Service(home):
        with Writer.create(jdir, "m", page_size=PAGE, service=home) as writer:
            fill(writer, PER_PAGE * 4)
            with Reader.create("between", service=home) as reader:
                reader.add_journal(jdir, "m", start="begin")
                for _ in range(PER_PAGE + 1):
                    assert reader.read() is not None
                board, cursor = reader._board, reader._cursors[0]
                assert board is not None
                board.publish()
                held = cursor.page_no
                assert held >= 1
                cursor.detach()  # the instant between two pages
                board.publish()  # and the publisher thread runs in it
                result, _ = prune(home, jdir, "m", Policy(max_pages=1), time.time_ns())
                assert result.remove == list(range(held)) and "held by reader between" in result.kept_for
                assert list_pages(jdir, "m")[0] == held


def test_a_reader_added_before_its_journal_had_a_page_holds_every_page(jdir: str, home: str) -> None:
    """A reader added to a journal with no page yet published "no position", and read on from page
    0 until its publisher's next tick: stopped before that tick, it held nothing, and the service's
    retention removed the pages it was reading (`mmipc torture --seed 7`: "got seq 2220, expected
    832 (a gap)", pages 0 to 7 gone under reader r0, about 1 run in 8 on a loaded machine)."""
    with Service(home):
        with Reader.create("early", service=home) as reader:
            reader.add_journal(jdir, "m", start="begin")  # no page yet: nothing to place it on
            board = reader._board
            assert board is not None
            with Writer.create(jdir, "m", page_size=PAGE, service=home) as writer:
                fill(writer, PER_PAGE * 4)
                with board._lock:  # its publisher's next tick has not come yet
                    for seq in range(PER_PAGE * 2):
                        frame = reader.read()
                        assert frame is not None and SEQ.unpack_from(frame.data)[0] == seq
                    result, _ = prune(home, jdir, "m", Policy(max_pages=1), time.time_ns())
                assert result.remove == [] and "early (not on a page yet" in result.kept_for
                for seq in range(PER_PAGE * 2, PER_PAGE * 4):
                    frame = reader.read()
                    assert frame is not None and SEQ.unpack_from(frame.data)[0] == seq


def test_age_retention_counts_on_the_journals_own_time_as_well_as_the_wall_clock(
    jdir: str, tmp_path: Path
) -> None:
    """A replay writer stamps frames a day old (`write_at`). By the wall clock alone every finished
    page is older than 1h, and the service's retention removed them as soon as they were written.
    A page goes only when it is 1h older than the journal's newest frame too: of 24 s of replayed
    history nothing goes; of 4 h, exactly the pages that end more than 1h before its newest frame."""
    from mmipc.service._monitor import Monitor
    from mmipc.service._retention import _finished_at

    day_ago = time.time_ns() - 86_400 * 10**9
    for name, step in (("short", 10**8), ("long", 60 * 10**9)):  # frames 0.1 s or 1 min apart
        with Writer.create(jdir, name, page_size=PAGE, service=None) as writer:
            for i in range(PER_PAGE * 4):
                writer.write_at(SEQ.pack(i) + bytes(992), day_ago + i * step)
    monitor = Monitor(str(tmp_path / "home"), list, Policy(max_age_ns=parse_age("1h")))
    finished = [p for p in list_pages(jdir, "short") if _finished_at(jdir, "short", p) is not None]
    assert len(finished) >= 3
    assert monitor.retain((jdir, "short")) == [] and len(list_pages(jdir, "short")) >= len(finished)
    newest = day_ago + (PER_PAGE * 4 - 1) * 60 * 10**9
    ends = {p: _finished_at(jdir, "long", p) for p in list_pages(jdir, "long")}
    old = [p for p, end in ends.items() if end is not None and end < newest - 3600 * 10**9]
    assert 0 < len(old) < len([e for e in ends.values() if e is not None]), ends
    removed = monitor.retain((jdir, "long"))
    assert removed == [os.path.join(jdir, f"long.{p:08d}.journal") for p in old]


def test_a_dead_readers_counter_file_whose_pid_was_reused_holds_no_page(
    home: str, jdir: str, procs: Procs
) -> None:
    """A reader killed with kill -9 leaves its counter file; the kernel may hand its pid to another
    process. Retention and the monitor went by the pid alone: the dead reader held its pages until
    that unrelated process ended (never, on a desk's long-running host), and its file was never
    forgotten. The file records the process's start time too; a live pid that started at another
    time is not the reader."""
    from mmipc.journal._bell import start_ticks
    from mmipc.journal._metrics import DEAD_LINGER, START, START_AT, counters_path, read_counters
    from mmipc.service._monitor import Monitor

    with Service(home), Writer.create(jdir, "reuse", page_size=PAGE, service=None) as writer:
        fill(writer, PER_PAGE * 4)
        child = procs.spawn_code(
            "import time\n"
            "from mmipc import Reader\n"
            f"r = Reader.create('gone', service={home!r})\n"
            f"r.add_journal({jdir!r}, 'reuse')\n"
            "r.read()\n"
            "print('read', flush=True)\n"
            "time.sleep(600)\n"
        )
        child.expect_line("read")
        path = counters_path(home, "gone")
        info = read_counters(path)
        assert (
            info is not None
            and info["pid"] == child.pid
            and info["start_ticks"] == start_ticks(child.pid) > 0
        )
        assert _dry_run(home, jdir).remove == []  # the live reader holds page 0
        child.kill9()
        with open(path, "r+b") as f:  # its pid now names a live process (this one) that started earlier
            f.seek(12)
            f.write(os.getpid().to_bytes(4, "little"))
        assert start_ticks(os.getpid()) != info["start_ticks"]
        with open(path, "r+b") as f:  # as an older mmipc wrote it: no start time, the pid decides
            f.seek(START_AT)
            f.write(START.pack(0))
        assert _dry_run(home, jdir).remove == []
        with open(path, "r+b") as f:
            f.seek(START_AT)
            f.write(START.pack(info["start_ticks"]))
        result, done = prune(home, jdir, "reuse", Policy(max_pages=1), time.time_ns())
        assert result.held_by == [] and result.remove[0] == 0 and len(done) == len(result.remove) >= 3
        monitor = Monitor(home, list, Policy())
        monitor._dead_since["gone"] = time.monotonic() - DEAD_LINGER - 1
        monitor._forget_dead()
        assert not os.path.exists(path)


def _dry_run(home: str, jdir: str) -> Plan:
    return prune(home, jdir, "reuse", Policy(max_pages=1), time.time_ns(), dry_run=True)[0]


def test_a_reader_of_more_than_64_journals_holds_the_pages_of_every_one(jdir: str, home: str) -> None:
    """A counter file had 64 slots: a reader following 70 journals published the first 64, and
    retention removed pages of the other six that the reader had not read (red team 6: `mmipc prune`
    of the 70th journal lost 1,917 of 3,000 frames). Version 2 of the file publishes every journal;
    the reader goes back to version 1 once its journals fit in it again."""
    from mmipc.journal._metrics import read_counters

    names = [f"j{k:02}" for k in range(70)]
    with Service(home):
        for name in names:
            with Writer.create(jdir, name, page_size=PAGE, service=None) as writer:
                fill(writer, PER_PAGE * 3)
        with Reader.create("wide", service=home) as reader:
            for name in names:
                reader.add_journal(jdir, name, start="begin")
            board = reader._board
            assert board is not None
            board.publish()
            for name in (names[0], names[-1]):
                result, _ = prune(home, jdir, name, Policy(max_pages=1), time.time_ns())
                assert result.remove == [] and "held by reader wide" in result.kept_for
            out = mmipc("prune", "--before", "2100-01-01", "--home", home, jdir, names[-1])
            assert out.returncode == 0 and list_pages(jdir, names[-1])[0] == 0, out.stdout + out.stderr
            from mmipc.journal._metrics import VERSION, VERSION_WIDE

            published = read_counters(board.path)
            assert published is not None and board._version == VERSION_WIDE
            assert [p.name for p in published["positions"]] == names
            for name in names[64:]:
                reader.remove_journal(jdir, name)
            board.publish()
            assert board._version == VERSION
            published = read_counters(board.path)
            assert published is not None and [p.name for p in published["positions"]] == names[:64]
            seqs: dict[str, list[int]] = {}
            for frame in iter(reader.read, None):
                seqs.setdefault(frame.journal.name, []).append(SEQ.unpack_from(frame.data)[0])
            assert seqs == {name: list(range(PER_PAGE * 3)) for name in names[:64]}
    assert all(list_pages(jdir, name)[0] == 0 for name in names)
