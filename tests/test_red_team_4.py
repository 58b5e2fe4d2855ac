"""Red team 4: attacks on what was merged on 2026-11-27 (the native refill of payload views, the
native merge's own Frames, the sweep of dead readers' bells, the writer's ring of a bell's FIFO),
as a hostile or careless local user would make them: real page files, real bells, real processes."""

from __future__ import annotations

import gc
import itertools
import os
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

from conftest import dead_pid, wait_for
from mmipc import CorruptJournalError, Reader, Service, Writer
from mmipc.journal import _bell
from mmipc.journal._files import list_pages, page_path

BELL_DIR = _bell._bell_dir()


def _plant(planted: list[str], base: str) -> str:
    path = os.path.join(BELL_DIR, base)
    with open(path, "wb") as f:
        f.write(bytes(_bell.BELL_SIZE))
    planted.append(path)
    return path


def _sleeping_bell(directory: Path, base: str, sleeping: int) -> str:
    """A bell file as a reader makes one (8,192 bytes), whose reader says it sleeps: 2 means an
    asyncio reader, woken by a byte into the bell's FIFO, ``BELL.fifo``."""
    path = directory / base
    bell = bytearray(_bell.BELL_SIZE)
    bell[_bell.SLEEPING : _bell.SLEEPING + 4] = sleeping.to_bytes(4, "little")
    path.write_bytes(bell)
    return str(path)


def _list_bell(jdir: str, name: str, bell: str) -> None:
    """Put `bell` in journal `name`'s list, as a live reader (this process) would."""
    assert _bell._edit(jdir, name, lambda mm: _bell._claim(mm, bell, 0)) == 0


@pytest.mark.parametrize("kind", ["regular file", "symlink to a file"])
def test_a_writer_never_writes_into_a_bell_fifo_that_is_not_a_fifo(
    jdir: str, tmp_path: Path, kind: str
) -> None:
    """A slot of NAME.bells (anyone who may write the list may write it) names a bell whose FIFO is
    a regular file, or a link to one (say the user's ~/.bashrc): the writer's ring must not open it
    for writing, let alone overwrite its first byte with ``!``."""
    bells = tmp_path / "bells"
    bells.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"precious data")
    bell = _sleeping_bell(bells, "mmipc-bell.1.0.0.0", sleeping=2)
    if kind == "regular file":
        Path(bell + ".fifo").write_bytes(victim.read_bytes())
        victim = Path(bell + ".fifo")
    else:
        os.symlink(victim, bell + ".fifo")
    _list_bell(jdir, "j", bell)
    with Writer.create(jdir, "j", service=None) as writer:
        for _ in range(3):
            writer.write(b"ring")
            with open(bell, "r+b") as f:  # asleep again: the writer rings once per sleep
                f.seek(_bell.SLEEPING)
                f.write((2).to_bytes(4, "little"))
                f.seek(_bell.FLAGS)
                f.write(bytes(4))
    assert victim.read_bytes() == b"precious data"


def test_a_name_with_unicode_digits_does_not_stop_the_sweep_of_dead_bells(planted: list[str]) -> None:
    """Any local user may create ``mmipc-bell.².0.0.0`` in /dev/shm: "²".isdigit() holds, but int()
    refuses it. The sweep must pass over such a name, not raise on it at every tick (the service's
    monitor logs the error and then never sweeps a dead reader's bell again)."""
    dead = dead_pid()
    _plant(planted, "mmipc-bell.\u00b2.0.0.0")
    _plant(planted, "mmipc-bell.1.\u00b2.0.0")
    gone = _plant(planted, f"mmipc-bell.{dead}.0.0.red4")
    assert f"mmipc-bell.{dead}.0.0.red4" in _bell.sweep_dead_bells()
    assert not os.path.lexists(gone)
    assert all(os.path.lexists(p) for p in planted if p != gone)


def test_the_sweep_removes_a_hard_link_name_never_the_journal_page_it_links(
    planted: list[str],
) -> None:
    """A hard link to a journal page, named as a dead reader's bell in the bell directory (journals
    kept in /dev/shm itself: one file system): the sweep may remove that name (our user's regular
    file), but the page keeps its name and its frames."""
    jdir = os.path.join(BELL_DIR, f"red4-journals.{os.getpid()}")
    os.mkdir(jdir)
    planted.append(jdir)
    with Writer.create(jdir, "j", service=None) as writer:
        writer.write(b"kept")
    planted[:0] = sorted(os.path.join(jdir, f) for f in os.listdir(jdir))  # removed before jdir
    page = page_path(jdir, "j", 0)
    before = Path(page).read_bytes()
    link = os.path.join(BELL_DIR, f"mmipc-bell.{dead_pid()}.0.0.red4")
    os.link(page, link)
    planted.append(link)
    _bell.sweep_dead_bells()
    assert Path(page).read_bytes() == before


def test_the_sweep_keeps_directories_and_fifos_named_as_dead_bells(planted: list[str]) -> None:
    """A directory, or a FIFO without the ``.fifo`` suffix, named as a dead reader's bell: kept
    (never rmdir'd, never opened: a FIFO's open could block the service)."""
    dead = dead_pid()
    directory = os.path.join(BELL_DIR, f"mmipc-bell.{dead}.0.0.red4dir")
    os.mkdir(directory)
    planted.append(directory)
    fifo = os.path.join(BELL_DIR, f"mmipc-bell.{dead}.0.0.red4fifo")
    os.mkfifo(fifo)
    planted.append(fifo)
    _bell.sweep_dead_bells()
    assert os.path.isdir(directory) and os.path.lexists(fifo)


def test_the_monitor_keeps_the_counter_file_of_a_live_reader_caught_mid_update(
    jdir: str, tmp_path: Path
) -> None:
    """A live reader stopped between its seqlock's two stores (SIGSTOP, a debugger, its publisher
    thread waiting for the GIL) holds every page (`_hold_unread`). But the monitor's `_forget_dead`
    took a counter file it could not read for a dead reader's, and unlinked it after DEAD_LINGER:
    the reader's hold (and its status row) vanished for good, and retention then removed the pages
    under it. The owner's pid, read whatever the generation, decides, as it does for the hold."""
    from mmipc.journal._metrics import DEAD_LINGER, list_counters
    from mmipc.service._monitor import Monitor
    from mmipc.service._retention import Policy, prune

    home = str(tmp_path / "home")
    page = 64 * 1024
    with Service(home):
        with Writer.create(jdir, "m", page_size=page, service=home) as writer:
            for _ in range(300):
                writer.write(bytes(1000))
            with Reader.create("stopped", service=home) as reader:
                reader.add_journal(jdir, "m", start="begin")
                board = reader._board
                assert board is not None
                monitor = Monitor(home, list, Policy())
                with board._lock:  # the publisher, stopped between its two stores
                    board._begin()
                    try:
                        monitor._dead_since["stopped"] = time.monotonic() - DEAD_LINGER - 1
                        monitor._forget_dead()
                        assert "stopped" in list_counters(home)
                        result, _ = prune(home, jdir, "m", Policy(max_pages=1), time.time_ns())
                    finally:
                        board._end()
                assert result.remove == [] and list_pages(jdir, "m")[0] == 0


SMALL_PAGE = 64 * 1024


def _write_varied(jdir: str, name: str, count: int, tag: int) -> None:
    """`count` frames of varied sizes on 64 KiB pages: many page switches."""
    with Writer.create(jdir, name, page_size=SMALL_PAGE, service=None) as writer:
        for i in range(count):
            writer.write(bytes([tag, i % 256]) + os.urandom(8 + i % 300), 7)


def _derived(view: memoryview, k: int) -> tuple[object, bytes]:
    """Something a caller keeps of payload `view` (the view itself dropped after), and its bytes."""
    data = bytes(view)
    kept: list[tuple[object, bytes]] = [
        (view[2:], data[2:]),
        (view.cast("B"), data),
        (memoryview(view), data),
        (view.toreadonly(), data),
        (weakref_and_view(view), data),
        (iter(view), data),
    ]
    return kept[k % len(kept)]


def weakref_and_view(view: memoryview) -> tuple[weakref.ref[memoryview], memoryview]:
    return weakref.ref(view), view


def _bytes_of(kept: object) -> bytes:
    if isinstance(kept, tuple):
        return bytes(kept[1])
    if isinstance(kept, memoryview):
        return bytes(kept)
    return bytes(list(kept))  # type: ignore[call-overload]


def test_whatever_a_caller_keeps_of_read_data_payloads_never_changes(jdir: str) -> None:
    """Slices, casts, memoryview(v), toreadonly(), a weak reference with the view, an iterator, a
    hash taken: kept while read_data refills its view in place and switches pages 40 times."""
    _write_varied(jdir, "a", 3000, 1)
    kept: list[tuple[object, bytes]] = []
    with Reader.create("r", service=None) as reader:
        reader.add_journal(jdir, "a")
        for k in itertools.count():
            view = reader.read_data()
            if view is None:
                break
            hash(view)  # a read-only view caches its hash: the refill must forget it
            assert hash(view) == hash(bytes(view))
            if k % 3 == 0:
                kept.append(_derived(view, k // 3))
            del view
        assert k == 3000
        for thing, data in kept:
            assert _bytes_of(thing) == data
    for thing, data in kept:  # the reader closed: still mapped, still the same bytes
        if isinstance(thing, (memoryview, tuple)):  # (an iterator is spent)
            assert _bytes_of(thing) == data


def test_merged_frames_kept_across_remove_journal_and_close_keep_their_bytes(jdir: str) -> None:
    """Frames, their payloads and tuple copies of them, kept from a two-journal merge while one
    journal is removed mid-way and the reader is then closed: every byte stays, nothing raises."""
    _write_varied(jdir, "a", 3000, 1)
    _write_varied(jdir, "b", 3000, 2)
    kept: list[tuple[object, bytes]] = []
    with Reader.create("r", service=None) as reader:
        reader.add_journal(jdir, "a")
        reader.add_journal(jdir, "b")
        for n, frame in enumerate(iter(reader.read, None)):
            keep = (frame, frame.data, tuple(frame), None)[n % 4]
            if keep is not None:
                kept.append((keep, bytes(frame.data)))
            if n == 1500:
                reader.remove_journal(jdir, "a")
                gc.collect()
    for thing, data in kept:
        assert bytes(thing if isinstance(thing, memoryview) else thing[4]) == data  # type: ignore[index]


def test_payloads_kept_while_retention_removes_their_pages_keep_their_bytes(jdir: str) -> None:
    """Retention (its real `prune`) unlinks every finished page while a standalone reader (it holds
    nothing) keeps payloads of them and of the frames it reads on: the pages stay mapped until the
    last view goes, and the bytes never change."""
    from mmipc.service._retention import Policy, prune

    _write_varied(jdir, "a", 3000, 1)
    kept: list[tuple[memoryview, bytes]] = []
    with Reader.create("r", service=None) as reader:
        reader.add_journal(jdir, "a")
        for n in itertools.count():
            view = reader.read_data() if n % 2 else getattr(reader.read(), "data", None)
            if view is None:
                break
            if n % 5 == 0:
                kept.append((view, bytes(view)))
            if n == 1000:
                result, removed = prune(None, jdir, "a", Policy(max_pages=1), time.time_ns())
                assert removed and not result.held_by
        del view
    gc.collect()
    for view, data in kept:
        assert bytes(view) == data


def test_a_crafted_counter_file_that_holds_every_page_is_named_by_prune_dry_run(
    jdir: str, tmp_path: Path
) -> None:
    """A counter file left "being written" (odd seqlock generation) whose header names a live pid
    (here 1, which never dies, with its real start time: a crafted file) holds every page of every
    journal. That must not be silent: `mmipc prune --dry-run` names it. (A killed reader's pid taken
    by another process no longer holds anything: its start time differs, see test_retention.py.)"""
    from mmipc.journal._bell import start_ticks
    from mmipc.journal._metrics import HEADER, START, START_AT, list_counters

    home = str(tmp_path / "home")
    with Service(home):
        with Writer.create(jdir, "g", page_size=SMALL_PAGE, service=home) as writer:
            for _ in range(300):
                writer.write(bytes(1000))
            with Reader.create("real", service=home) as reader:
                reader.add_journal(jdir, "g")
                wait_for(lambda: "real" in list_counters(home), what="the reader's counter file")
                real = Path(list_counters(home)["real"])
                crafted = bytearray(real.read_bytes())
        fields = list(HEADER.unpack_from(crafted))
        fields[2], fields[3] = 1, fields[3] | 1  # pid 1; generation odd: "being written"
        HEADER.pack_into(crafted, 0, *fields)
        START.pack_into(crafted, START_AT, start_ticks(1))
        (real.parent / ("ghost" + real.name.removeprefix("real"))).write_bytes(crafted)
        assert "ghost" in list_counters(home)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "mmipc",
                "prune",
                jdir,
                "g",
                "--before",
                str(time.time_ns()),
                "--dry-run",
                "--home",
                home,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert out.returncode == 0, out.stderr
    assert "would remove 0 page(s)" in out.stdout
    assert "held by reader ghost (its positions are being written: every page held)" in out.stdout


def test_a_foreign_newest_page_neither_stops_retention_by_pages_nor_hides_from_status(
    jdir: str, tmp_path: Path
) -> None:
    """Any file named as the journal's newest page (a page copied from another journal, garbage):
    the service's retention read it first for the journal's clock (an age rule's), raised before it
    counted anything, and so removed no page by any rule, for good, with only a log line to show.
    Rules by pages or bytes need no clock; an age rule that cannot read it counts an error."""
    from mmipc.service._monitor import Monitor
    from mmipc.service._retention import Policy, parse_age

    with Writer.create(jdir, "j", page_size=SMALL_PAGE, service=None) as writer:
        for _ in range(600):
            writer.write(bytes(1000))
    pages = list_pages(jdir, "j")
    assert len(pages) >= 8
    Path(page_path(jdir, "j", 99)).write_bytes(Path(page_path(jdir, "j", 0)).read_bytes())
    home = str(tmp_path / "home")
    by_age = Monitor(home, list, Policy(max_age_ns=parse_age("1s")))
    with pytest.raises(CorruptJournalError):
        by_age.retain((jdir, "j"))
    assert by_age.retention_errors == 1 and "page 99" in by_age.last_retention_error
    removed = Monitor(home, list, Policy(max_pages=2)).retain((jdir, "j"))
    assert len(removed) == len(pages) - 1  # all but the writer's last page (not finished)


def test_a_counter_file_of_deeply_nested_json_breaks_neither_status_nor_retention(
    jdir: str, tmp_path: Path
) -> None:
    """A counter file whose journal list is 12 KB of ``[`` (a crafted or damaged file): json raised
    RecursionError, which read_counters let through, so `mmipc status`, retention of every journal
    and the monitor's removal of dead readers' files (this one included) failed for good."""
    from mmipc import service_status
    from mmipc.journal._metrics import (
        COUNTER_FILE_SIZE,
        HEADER,
        JOURNALS_AT,
        MAGIC,
        READERS_DIR,
        SUFFIX,
        VERSION,
    )
    from mmipc.service._retention import Policy, prune

    home = str(tmp_path / "home")
    jlen = COUNTER_FILE_SIZE - JOURNALS_AT
    data = bytearray(COUNTER_FILE_SIZE)
    HEADER.pack_into(data, 0, MAGIC, VERSION, os.getpid(), 2, 0, 0, 0, 0, jlen, 1)
    data[JOURNALS_AT:] = b"[" * jlen
    with Service(home):
        with Writer.create(jdir, "n", page_size=SMALL_PAGE, service=home) as writer:
            for _ in range(300):
                writer.write(bytes(1000))
            Path(home, READERS_DIR).mkdir(exist_ok=True)
            Path(home, READERS_DIR, "nested" + SUFFIX).write_bytes(data)
            status = service_status(home)
            assert "nested" in [r["name"] for r in status["readers"]]  # shown, not a failure
            result, removed = prune(home, jdir, "n", Policy(max_pages=1), time.time_ns())
    assert removed == [] and "held by reader nested" in result.kept_for  # its pid lives: all held


def test_a_cursor_file_of_deeply_nested_json_is_a_cursor_error_not_a_recursion_error(
    jdir: str, tmp_path: Path
) -> None:
    """A durable reader's cursor file holding 100 KB of ``[`` under a valid checksum (damaged, or
    crafted: the CRC is no secret): json's RecursionError went through list_cursors, so retention
    and status failed for every journal, and the reader's create raised it raw. It is a cursor
    file that cannot be read: it holds every page, and `prune --dry-run` says so."""
    import zlib

    from mmipc.journal._durable import FORMAT
    from mmipc.service._retention import Policy, prune

    home = str(tmp_path / "home")
    with Service(home):
        with Writer.create(jdir, "c", page_size=SMALL_PAGE, service=home) as writer:
            for _ in range(300):
                writer.write(bytes(1000))
        body = b"[" * 100_000
        cursors = Path(home, "cursors")
        cursors.mkdir(exist_ok=True)
        (cursors / "deep.cursor").write_bytes(f"{FORMAT} {zlib.crc32(body):08x}\n".encode() + body)
        result, removed = prune(home, jdir, "c", Policy(max_pages=1), time.time_ns())
    assert removed == [] and "its cursor file cannot be read" in result.kept_for


def test_a_bridge_state_file_of_deeply_nested_json_reads_as_nothing(tmp_path: Path) -> None:
    """A bridge's state file (in the home; status reads every one) of 100 KB of ``[``: json's
    RecursionError went through `_read`, whose rule is that damaged JSON reads as nothing."""
    from mmipc.bridge._state import _read

    path = tmp_path / "deep.state"
    path.write_bytes(b"[" * 100_000)
    assert _read(str(path)) is None


def _live_payloads() -> list[tuple[object, bytes]]:
    """Every payload view and Frame the collector can reach (the cores' kept ones too), copied."""
    found: list[tuple[object, bytes]] = []
    for obj in gc.get_objects():
        if type(obj).__name__ == "Frame":
            found.append((obj, bytes(obj[4])))
        elif isinstance(obj, memoryview):
            try:
                if obj.nbytes < 400:
                    found.append((obj, bytes(obj)))
            except ValueError:  # released
                pass
    return found


@pytest.mark.parametrize("names", [["a"], ["a", "b"]], ids=["one journal", "merge"])
def test_payloads_and_frames_taken_through_gc_get_objects_never_change(jdir: str, names: list[str]) -> None:
    """gc.get_objects() hands out the views and Frames a core keeps to refill: taken that way (no
    caller ever held them), they must still never change while reading goes on."""
    for tag, name in enumerate(names):
        _write_varied(jdir, name, 2000, tag)
    grabbed: list[tuple[object, bytes]] = []
    with Reader.create("r", service=None) as reader:
        for name in names:
            reader.add_journal(jdir, name)
        for k in itertools.count():
            got = reader.read_data() if k % 2 else reader.read()
            if got is None:
                break
            del got
            if k % 97 == 0:
                grabbed += _live_payloads()
        for thing, data in grabbed:
            assert bytes(thing if isinstance(thing, memoryview) else thing[4]) == data  # type: ignore[index]
    assert len(grabbed) > 20
