"""The writer's per-frame checks that issue 16 made cheap still do their job: the native core writes
with no bell list (before `open_bells`, after `close_bells`: its count points at a word that stays
0, never at NULL), the owner thread's writes stay in C (the core compares the thread pointer
itself) while another thread's are refused, and the benchmark scripts of the ring's cost run."""

from __future__ import annotations

import json
import mmap
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import Procs, wait_for
from mmipc import Reader, UsageError, Writer
from mmipc.journal._backend import native
from mmipc.journal._bell import (
    FLAGS,
    LIST_HEADER,
    LIST_SIZE,
    LIST_V1_SIZE,
    NEEDY,
    SLOT,
    SLOT_SIZE,
    SLOTS,
    _edit,
    bells_path,
    map_list,
    sweep_dead_bells,
)
from mmipc.journal._cursor import Cursor
from mmipc.journal._files import create_page, page_path
from mmipc.journal._layout import decode_frame
from mmipc.journal._page import MappedPage

BENCH = Path(__file__).parent.parent / "benchmarks"
PAGE = 1 << 20
needs_native = pytest.mark.skipif(native is None, reason="the native core only")


def read_all(directory: str, name: str) -> list[bytes]:
    with Reader.create("check", service=None) as reader:
        reader.add_journal(directory, name)
        return [bytes(f.data) for f in iter(reader.read, None)]


@needs_native
def test_a_core_writes_before_its_bells_open_and_after_they_close(jdir: str) -> None:
    assert native is not None
    create_page(jdir, "j", 0, PAGE)
    page = MappedPage.open(page_path(jdir, "j", 0), "j", 0, writable=True)
    core = native.WriterCore()
    core._c_attach(page.view, PAGE, 1, 0, 0, 4096, 0, 0, 1 << 62)
    core.write(b"no list yet")  # a NULL count pointer here was a crash without its NULL test
    core._c_open_bells(bells_path(jdir, "j"))
    core.write(b"list open")
    core._c_close_bells()
    core.write(b"list closed")
    offset, got = 4096, []
    while (info := decode_frame(page.mm, offset, PAGE, page.path)) is not None:
        got.append(bytes(page.mm[offset + 32 : offset + 32 + info.payload_len]))
        offset += (info.payload_len + 39) & ~7
    core._c_detach()
    page.release()
    assert got == [b"no list yet", b"list open", b"list closed"]


class CountingWriter(Writer):
    """A Writer that counts the writes its C core hands back to Python (`_write_from_core`)."""

    handed_back = 0

    def _write_from_core(self, payload: Any, msg_type: int = 0, source: int = 0) -> int:
        CountingWriter.handed_back += 1
        return super()._write_from_core(payload, msg_type, source)


@needs_native
def test_the_owner_thread_s_writes_stay_in_c_and_another_thread_s_are_refused(jdir: str) -> None:
    writer = CountingWriter.create(jdir, "owner", service=None, page_size=PAGE)
    CountingWriter.handed_back = 0
    for i in range(1000):
        writer.write(i.to_bytes(4, "little"))
    assert CountingWriter.handed_back == 0  # the thread check let every one of them through in C
    refused: list[UsageError] = []

    def other() -> None:
        try:
            writer.write(b"not mine")
        except UsageError as exc:
            refused.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=60)
    assert len(refused) == 1 and CountingWriter.handed_back == 1
    writer.close()
    assert read_all(jdir, "owner") == [i.to_bytes(4, "little") for i in range(1000)]


@pytest.mark.once  # .ci/run: in its native pass only (benchmark scripts)
def test_ring_cost_script_prints_every_case(tmp_path: Path) -> None:
    args = ["--writes", "50", "--rounds", "1", "--paced", "2", "--gap-ms", "1"]
    run = subprocess.run(
        [sys.executable, str(BENCH / "ring_cost.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    rows = run.stdout.splitlines()[2:]
    labels = ["alone", "1 awake", "10 awake", "1 awake, merging", "10 awake, merging", "10 block"]
    assert [row[:20].strip() for row in rows] == labels
    assert all(float(v) > 0 for row in rows for v in row[20:].split())


@pytest.mark.once  # .ci/run: in its native pass only (benchmark scripts)
def test_ring_ops_keepup_mode_writes_every_frame_and_stops_its_readers(jdir: str) -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH / "native" / "ring_ops.py"), "2", "200", "keepup", jdir],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert run.returncode == 0, run.stderr
    assert len(read_all(jdir, "ring")) == 201


# -- needy bytes (docs/format.md, "Needy bytes"): who sets them, who clears them --------------------


def _slot_of(needy_list: mmap.mmap, pid: int) -> int:
    """The slot of the reader process `pid` in a bell list."""
    for slot in range(SLOTS):
        state, _, owner, _, _ = SLOT.unpack_from(needy_list, LIST_HEADER + slot * SLOT_SIZE)
        if state and owner == pid:
            return slot
    raise AssertionError(f"no slot of pid {pid}")


def _asleep_and_needy(needy_list: mmap.mmap, slot: int) -> bool:
    """Whether the reader of `slot` sleeps on its bell (`sleeping` set: on the futex, or on its FIFO
    for the pure-Python backend) with its needy byte set."""
    raw = SLOT.unpack_from(needy_list, LIST_HEADER + slot * SLOT_SIZE)[4]
    with open(os.fsdecode(raw.rstrip(b"\0")), "rb") as f:
        sleeping = int.from_bytes(f.read(16)[12:16], "little")
    return sleeping != 0 and needy_list[NEEDY + slot] == 1


def _sleeping_reader(procs: Procs, jdir: str, needy_list: mmap.mmap, writer: Writer) -> tuple[Any, int]:
    """A blocking reader process that has read one frame and sleeps, needy: (child, its slot)."""
    child = procs.spawn("bell_reader.py", jdir, "k")
    child.expect_line("ready")
    slot = _slot_of(needy_list, child.proc.pid)
    writer.write((0).to_bytes(8, "little"))
    wait_for(lambda: _asleep_and_needy(needy_list, slot), timeout=60)
    return child, slot


def test_a_reader_killed_while_needy_does_not_keep_its_writer_ringing(procs: Procs, jdir: str) -> None:
    """A reader killed -9 asleep leaves its needy byte set: the writer's next ring settles it (its
    bell is still mapped); once its bell is swept, a writer that cannot map it no longer can, and
    the next edit of the list (any reader's subscription) frees the dead slot and its byte."""
    writer = Writer.create(jdir, "k", service=None)
    needy_list = map_list(jdir, "k")
    assert needy_list is not None
    first, slot = _sleeping_reader(procs, jdir, needy_list, writer)
    procs.kill9(first)
    writer.write(b"rings the dead reader's bell")
    assert needy_list[NEEDY + slot] == 0
    writer.close()
    shutil.rmtree(jdir)
    os.mkdir(jdir)
    writer = Writer.create(jdir, "k", service=None)
    needy_list = map_list(jdir, "k")
    assert needy_list is not None
    second, slot = _sleeping_reader(procs, jdir, needy_list, writer)
    procs.kill9(second)
    sweep_dead_bells()  # the service's sweep: the bell file is gone
    writer.close()
    writer = Writer.create(jdir, "k", service=None)  # its ringer cannot map the dead bell
    writer.write(b"x")
    assert needy_list[NEEDY + slot] == 1  # nobody here can settle it...
    with Reader.create("late", service=None) as reader:
        reader.add_journal(jdir, "k")  # ...until an edit of the list frees the dead slot
        writer.write(b"y")  # sets the new reader's flag (clear since it subscribed)...
        writer.write(b"z")  # ...finds it set and the reader awake: its byte settles too
        assert needy_list[NEEDY : NEEDY + SLOTS] == bytes(SLOTS)
    writer.close()


def test_readers_of_one_journal_asleep_and_awake_each_get_every_frame(procs: Procs, jdir: str) -> None:
    sleepers = [procs.spawn("bell_reader.py", jdir, "m") for _ in range(3)]
    spinners = [procs.spawn("bell_reader.py", jdir, "m", "--spin") for _ in range(2)]
    for child in sleepers + spinners:
        child.expect_line("ready")
    count = 20_000
    writer = procs.spawn("bell_writer.py", jdir, "m", str(count), "3")
    writer.expect_line("done", timeout=600)
    results = [json.loads(child.finish(timeout=600)) for child in sleepers + spinners]
    assert [(r["counts"], r["errors"]) for r in results] == [({"m": count}, [])] * 5
    assert all(r["wakes"] > 0 for r in results[:3]), "a sleeper was never woken: it did not sleep"


@pytest.mark.skipif(native is not None, reason="the C merge polls in C: the Python merge's polls are counted")
def test_a_merge_of_many_journals_polls_only_the_journals_rung(
    jdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge of 64 journals, three of them written: each read polls only those three, whose
    writers rang, and again after the collect set the reader's needy bytes in their lists."""
    names = [f"j{i}" for i in range(64)]
    writers = {n: Writer.create(jdir, n, service=None, page_size=1 << 16) for n in names}
    polled: list[str] = []
    poll = Cursor.poll

    def counting_poll(self: Cursor) -> int:
        polled.append(self.jid.name)
        return poll(self)

    with Reader.create("wide", service=None) as reader:
        for name in names:
            reader.add_journal(jdir, name)
        assert reader.read() is None  # the first read polls every journal once
        monkeypatch.setattr(Cursor, "poll", counting_poll)
        for rounds in range(2):  # the second: rung through the needy bytes the first collect set
            for name in ("j3", "j17", "j40"):
                writers[name].write(name.encode())
            assert sorted(bytes(f.data) for f in iter(reader.read, None)) == [b"j17", b"j3", b"j40"]
            assert set(polled) == {"j3", "j17", "j40"}, rounds
            polled.clear()
    for writer in writers.values():
        writer.close()


def test_a_merging_reader_s_collect_sets_its_needy_byte_and_the_next_ring_settles_it(jdir: str) -> None:
    """The collect sets the reader's needy byte after clearing the flag. A ring that finds the
    flag clear sets it and leaves the byte (a reader that keeps up would set it again at once);
    one that finds it set and the reader awake clears the byte: from then on the writer's commits
    stop at the needy bytes until the reader collects again. The pure-Python merge clears every
    flag it collects; the native one leaves it set (a hot journal, polled at every read: see
    test_a_merging_reader_that_keeps_up_costs_its_writer_no_ring)."""
    with Writer.create(jdir, "a", service=None) as writer, Reader.create("m", service=None) as reader:
        reader.add_journal(jdir, "a")
        reader.add_journal(jdir, "b")  # two journals: the reader merges, and collects flags
        needy_list = map_list(jdir, "a")
        assert needy_list is not None
        slot = _slot_of(needy_list, os.getpid())
        assert reader.read() is None and needy_list[NEEDY + slot] == 1  # subscribed: flag clear
        writer.write(b"1")  # flag found clear: set, the byte left
        assert needy_list[NEEDY + slot] == 1
        writer.write(b"2")  # flag found set, reader awake: the byte settled
        assert needy_list[NEEDY + slot] == 0
        assert [bytes(f.data) for f in iter(reader.read, None)] == [b"1", b"2"]
        hot = native is not None  # the native collect left the flag set
        assert needy_list[NEEDY + slot] == (0 if hot else 1)
        writer.write(b"3")  # rung at once (flag clear), or polled at once (hot): not at a sweep
        frame = reader.read()
        assert frame is not None and bytes(frame.data) == b"3"


@pytest.mark.skipif(native is None, reason="the native merge's hot journals")
def test_a_merging_reader_that_keeps_up_costs_its_writer_no_ring(jdir: str) -> None:
    """A native merging reader leaves the flag of a journal it collected set (hot: polled at every
    read): its writer, finding the flag set and the reader awake, stores nothing and clears the
    needy byte, so every later commit stops at the needy bytes, as for a reader of one journal.
    The reader still gets every frame at once. A membership change makes it cold again (flag
    cleared, needy set): the next commit rings it."""
    with Writer.create(jdir, "a", service=None) as writer, Reader.create("m", service=None) as reader:
        reader.add_journal(jdir, "a")
        reader.add_journal(jdir, "b")
        bell = reader._merge.bell
        needy_list = map_list(jdir, "a")
        assert bell is not None and needy_list is not None
        slot, flag = (
            _slot_of(needy_list, os.getpid()),
            FLAGS + reader._merge.slots[reader._merge.cursors[0]][0],
        )
        assert reader.read() is None
        writer.write(b"0")  # flag clear: rung in full
        writer.write(b"1")  # flag set, reader awake: needy byte settled to 0
        assert [bytes(f.data) for f in iter(reader.read, None)] == [b"0", b"1"]
        for i in range(2, 50):
            assert bell.mm[flag] == 1 and needy_list[NEEDY + slot] == 0  # hot: nothing to ring
            bell.mm[16:20] = bytes(4)  # `pending`: a ring that stored anything would set it again
            writer.write(b"%d" % i)
            assert bell.mm[16:20] == bytes(4), i  # the writer stored nothing
            assert [bytes(f.data) for f in iter(reader.read, None)] == [b"%d" % i]
        reader.add_journal(jdir, "c")  # membership changed: cooled, flag clear, needy set
        assert bell.mm[flag] == 0 and needy_list[NEEDY + slot] == 1
        writer.write(b"50")
        assert bell.mm[flag] == 1 and int.from_bytes(bell.mm[16:20], "little") == 1  # rung
        assert [bytes(f.data) for f in iter(reader.read, None)] == [b"50"]


def _as_older_reader(directory: str, name: str, pid: int) -> None:
    """Make `pid`'s slot in the list look like an older reader's: state 1, needy byte never set."""

    def change(mm: mmap.mmap) -> None:
        slot = _slot_of(mm, pid)
        mm[LIST_HEADER + slot * SLOT_SIZE : LIST_HEADER + slot * SLOT_SIZE + 4] = (1).to_bytes(4, "little")
        mm[NEEDY + slot] = 0

    _edit(directory, name, change)


def test_a_reader_of_the_older_protocol_is_still_rung_at_every_collect(jdir: str) -> None:
    """A slot in state 1 (a reader that keeps no needy byte) makes the writer ring in full: the
    merging reader, whose collect sets no needy byte, still has its flag set again at each ring."""
    with Writer.create(jdir, "a", service=None) as writer, Reader.create("old", service=None) as reader:
        reader.add_journal(jdir, "a")
        reader.add_journal(jdir, "b")  # merging: it polls "a" only when its flag is set
        bell = reader._merge.bell
        assert bell is not None
        bell.needy.clear()  # its collects set no needy byte, as an older reader's
        reader._merge._sync()
        _as_older_reader(jdir, "a", os.getpid())
        for i in range(3):
            writer.write(bytes([i]))
            frame = reader.read()  # at once, not after SWEEP_EVERY empty reads
            assert frame is not None and bytes(frame.data) == bytes([i])
            assert reader.read() is None


def test_a_writer_grows_an_older_format_list_and_rings_through_its_needy_bytes(jdir: str) -> None:
    """NAME.bells of format 1 (16,448 bytes, made by an older reader) is grown to format 2 by the
    writer that maps it; a reader of this version subscribed to it is rung and settled as usual."""
    with open(bells_path(jdir, "f"), "wb") as f:
        f.write(bytes(LIST_V1_SIZE))
    with Writer.create(jdir, "f", service=None) as writer, Reader.create("f", service=None) as reader:
        assert os.path.getsize(bells_path(jdir, "f")) == LIST_SIZE
        reader.add_journal(jdir, "f")
        reader.add_journal(jdir, "g")
        for i in range(3):
            writer.write(bytes([i]))
            frame = reader.read()
            assert frame is not None and bytes(frame.data) == bytes([i])
