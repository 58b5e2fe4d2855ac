"""The writer: one per journal, resume, clamped clock, claims, closing, a full disk."""

from __future__ import annotations

import os
import struct

import payloads
import pytest

from conftest import PROCS, Procs, race_two_threads, wait_for
from mmipc import (
    ClosedError,
    JournalLockedError,
    Reader,
    UsageError,
    Writer,
)

PAGE = 64 * 1024


def read_all(directory: str, name: str) -> list[bytes]:
    with Reader.create("check") as reader:
        reader.add_journal(directory, name)
        return [bytes(f.data) for f in iter(reader.read, None)]


def test_second_writer_in_the_same_process_is_refused_until_the_first_closes(jdir: str) -> None:
    first = Writer.create(jdir, "one")
    with pytest.raises(JournalLockedError, match=f"pid {os.getpid()}"):
        Writer.create(jdir, "one")
    with pytest.raises(JournalLockedError):
        Writer.create(os.path.join(jdir, ".", "..", os.path.basename(jdir)), "one")  # other spelling
    first.close()
    Writer.create(jdir, "one").close()


def test_second_writer_in_another_process_is_refused_until_the_first_is_killed(
    procs: Procs, jdir: str
) -> None:
    holder = procs.spawn("writer_proc.py", jdir, "locked", str(PAGE), "-1")
    procs.expect_line(holder, "ready")
    wait_for(lambda: bool(read_all(jdir, "locked")), what="the holder's first frame")
    with pytest.raises(JournalLockedError, match=f"pid {holder.pid}"):
        Writer.create(jdir, "locked")
    procs.kill9(holder)
    with Writer.create(jdir, "locked") as writer:  # the kernel dropped the dead writer's lock
        assert writer.last_nano > 0


def test_resume_appends_after_the_last_frame(jdir: str) -> None:
    with Writer.create(jdir, "resume", page_size=PAGE) as writer:
        for i in range(1000):
            writer.write(i.to_bytes(4, "little") * 10)
        last = writer.last_nano
    with Writer.create(jdir, "resume") as writer:
        assert writer.last_nano == last and writer.page_size == PAGE
        writer.write(b"next")
    frames = read_all(jdir, "resume")
    assert len(frames) == 1001 and frames[-1] == b"next"


def test_resume_on_a_page_that_ended_exactly_at_its_marker(jdir: str) -> None:
    with Writer.create(jdir, "edge", page_size=PAGE) as writer:
        writer.write(b"a" * 40000)
        writer.write(b"b" * 40000)  # forces a switch: page 0 ends with its marker
    with Writer.create(jdir, "edge") as writer:
        writer.write(b"c")
    assert read_all(jdir, "edge") == [b"a" * 40000, b"b" * 40000, b"c"]


def test_a_clock_step_backwards_is_clamped(jdir: str) -> None:
    with Writer.create(jdir, "clock", page_size=PAGE) as writer:
        writer.write(b"x")
    # Stamp the stored frame an hour into the future, as a clock stepped back would make it.
    future = writer.last_nano + 3600 * 10**9
    path = os.path.join(jdir, "clock.00000000.journal")
    with open(path, "r+b") as page:
        page.seek(4096 + 8)
        page.write(struct.pack("<q", future))
    with Writer.create(jdir, "clock") as writer:
        assert writer.write(b"y") == future
    with Reader.create("clock") as reader:
        reader.add_journal(jdir, "clock")
        assert [f.nano for f in iter(reader.read, None)] == [future, future]


def test_claims_publish_on_exit_and_vanish_on_error(jdir: str) -> None:
    with Writer.create(jdir, "claim", page_size=PAGE) as writer:
        with writer.frame(5, msg_type=3, source=9) as buf:
            buf[:] = b"hello"
            with pytest.raises(UsageError, match="claim is open"):
                writer.write(b"nested")
        claim = writer.frame(4)
        with pytest.raises(RuntimeError), claim as buf:
            buf[:] = b"\xff\xff\xff\xff"
            raise RuntimeError("caller failed mid-frame")
        with pytest.raises(ValueError):
            buf[0] = 1  # the view is released once the claim ends
        writer.write(b"!")
    with Reader.create("claim") as reader:
        reader.add_journal(jdir, "claim")
        got = [(bytes(f.data), f.msg_type, f.source) for f in iter(reader.read, None)]
    assert got == [(b"hello", 3, 9), (b"!", 0, 0)]


def test_bad_arguments_and_closed_writers_raise_usage_errors(jdir: str) -> None:
    writer = Writer.create(jdir, "usage", page_size=PAGE)
    with pytest.raises(UsageError, match="msg_type"):
        writer.write(b"x", msg_type=0xFFFF_FFFF)  # reserved for the end-of-page marker
    with pytest.raises(UsageError, match="source"):
        writer.write(b"x", source=-1)
    with pytest.raises(UsageError, match="page_size"):
        Writer.create(jdir, "other", page_size=1000)
    writer.close()
    writer.close()
    with pytest.raises(ClosedError, match="closed"):
        writer.write(b"x")
    assert read_all(jdir, "usage") == []


def test_full_disk_fails_page_creation_cleanly_and_keeps_every_frame(procs: Procs, jdir: str) -> None:
    script = f"""
import resource, signal, sys
sys.path.insert(0, {str(PROCS)!r})
import payloads
from mmipc import DiskFullError, Writer
writer = Writer.create({jdir!r}, "full", page_size={PAGE}, service=None)  # a service is not rlimited
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({PAGE // 2}, {PAGE // 2}))
seq = 0
try:
    while True:
        writer.write(payloads.make(seq))
        seq += 1
except DiskFullError as exc:
    print("full", seq, exc, flush=True)
try:
    writer.write(payloads.make(seq))
except DiskFullError:
    print("still full", flush=True)
"""
    child = procs.spawn_code(script)
    out = procs.finish(child)
    written = int(out.split()[1])
    assert "full.00000001.journal" in out and "intact" in out and "still full" in out
    assert written > 100
    assert [payloads.check(f) for f in read_all(jdir, "full")] == list(range(written))
    with Writer.create(jdir, "full") as writer:  # space is back: the journal goes on
        writer.write(payloads.make(written))
    assert len(read_all(jdir, "full")) == written + 1


def test_a_forked_child_cannot_write_through_its_parents_writer(jdir: str) -> None:
    writer = Writer.create(jdir, "forked", page_size=PAGE)
    writer.write(b"parent-1")
    pid = os.fork()
    if pid == 0:  # the child: its inherited writer is closed and the journal is still the parent's
        code = 0
        try:
            writer.write(b"child")
            code = 1
        except ClosedError:
            pass
        try:
            Writer.create(jdir, "forked")
            code = 2
        except JournalLockedError:
            pass
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    writer.write(b"parent-2")  # the parent's lock and map are untouched
    with pytest.raises(JournalLockedError):
        Writer.create(jdir, "forked")
    writer.close()
    assert read_all(jdir, "forked") == [b"parent-1", b"parent-2"]


def test_a_write_refused_half_way_leaves_no_stale_bytes(jdir: str) -> None:
    # The payload is copied before the header is packed; a bad source fails the pack. The bytes already
    # copied must not survive to pass, later, for the commit word of a smaller frame's successor.
    with Writer.create(jdir, "half", page_size=PAGE) as writer:
        with pytest.raises(UsageError, match="source"):
            writer.write(b"\xff" * 5000, source=2**32)
        writer.write(b"small")
    with Reader.create("half") as reader:
        reader.add_journal(jdir, "half")
        assert [bytes(f.data) for f in iter(reader.read, None)] == [b"small"]
        assert reader.read() is None


@pytest.mark.parametrize("page_size", [64 * 1024, 32 << 20, 240 << 20, (240 << 20) + 4096, 1 << 30])
def test_an_old_page_is_fully_retired_within_half_the_next_page(page_size: int) -> None:
    from mmipc.journal._layout import INDEX_SLOTS
    from mmipc.journal._writer import retire_slice

    step = retire_slice(page_size)
    assert step % 4096 == 0  # madvise works on whole pages
    assert -(-page_size // step) <= INDEX_SLOTS // 2  # slot crossings needed to drop all of it


def test_a_writer_refuses_every_thread_but_the_one_that_created_it(jdir: str) -> None:
    import threading

    writer = Writer.create(jdir, "threads", page_size=PAGE)
    claim = writer.frame(4)
    refused: list[str] = []

    def other_thread() -> None:
        for attempt in (
            lambda: writer.write(b"torn?"),
            lambda: writer.frame(8),
            lambda: claim.__exit__(None, None, None),
            writer.sync,
            writer.close,
        ):
            try:
                attempt()
            except UsageError as exc:
                refused.append(str(exc))

    with claim as buf:
        buf[:] = b"mine"
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(timeout=60)
    assert len(refused) == 5 and all("belongs to the thread that created it" in r for r in refused)
    for i in range(1000):  # the owner goes on, and the journal holds exactly its frames
        writer.write(i.to_bytes(4, "little"))
    writer.close()
    assert read_all(jdir, "threads") == [b"mine"] + [i.to_bytes(4, "little") for i in range(1000)]


def test_two_threads_writing_at_once_never_tear_a_frame(jdir: str) -> None:
    writer = Writer.create(jdir, "race", page_size=PAGE)
    outcome: dict[str, object] = {}

    def hammer(tag: str) -> None:
        try:
            for i in range(20000):
                writer.write(payloads.make(i))
            outcome[tag] = "wrote"
        except UsageError:
            outcome[tag] = "refused"

    race_two_threads(hammer)
    writer.close()
    assert outcome == {"owner": "wrote", "other": "refused"}
    assert [payloads.check(f) for f in read_all(jdir, "race")] == list(range(20000))


CLOCK_STEP = """
import sys
import mmipc.journal._writer as clock
from mmipc import Writer
directory = sys.argv[1]
ask_writer = Writer.create(directory, "A", page_size=65536)
ask = ask_writer.write(b"ask")
real = clock._time_ns
clock._time_ns = lambda: real() - 3600 * 10**9  # the wall clock steps back an hour (NTP, a VM)
reply = Writer.create(directory, "B", page_size=65536).write(b"reply")
again = ask_writer.write(b"ask again")
print(ask, reply, again, flush=True)
"""


def test_a_wall_clock_step_moves_no_stamp_in_a_running_process(procs: Procs, jdir: str) -> None:
    child = procs.spawn_code(CLOCK_STEP.replace("sys.argv[1]", repr(jdir)))
    ask, reply, again = map(int, procs.finish(child).split())
    assert ask < reply < again  # one clock for every journal of the process, across the step
    with Reader.create("clock-merge") as reader:
        reader.add_journal(jdir, "A")
        reader.add_journal(jdir, "B")
        assert [bytes(f.data) for f in iter(reader.read, None)] == [b"ask", b"reply", b"ask again"]
        reader.seek(reply)  # skips nothing written at or after the reply
        assert [bytes(f.data) for f in iter(reader.read, None)] == [b"reply", b"ask again"]
