"""`bell_block`: wait="block"'s whole sleep in one native call (announce, re-check, wait, read).

Real writers (a thread: the wait releases the GIL) and a real reader's doorbell; no mocks.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator

import pytest

from conftest import wait_for
from mmipc import Block, Frame, Reader, Writer
from mmipc.journal._backend import native

pytestmark = pytest.mark.skipif(native is None, reason="needs the C extension")
NO_LIMIT = -1


class Alarm(Exception):
    pass


@pytest.fixture
def reader(jdir: str) -> Iterator[Reader]:
    with Writer.create(jdir, "b", service=None):
        pass  # the journal exists: the reader subscribes to its bell list
    reader = Reader.create("block", service=None)
    reader.add_journal(jdir, "b")
    yield reader
    reader.close()


def _bell(reader: Reader) -> object:
    bell = reader._merge.bell
    assert bell is not None
    return bell.mm


def _sleeping(reader: Reader) -> int:
    return int.from_bytes(reader._merge.bell.mm[12:16], "little")  # type: ignore[union-attr]


def _block(reader: Reader, timeout_ns: int, read: Callable[[], object] | None = None) -> object:
    return native.bell_block(_bell(reader), read or reader.read, timeout_ns)  # type: ignore[union-attr]


def test_returns_the_frame_a_ring_woke_it_for(jdir: str, reader: Reader) -> None:
    def write_once_asleep() -> None:
        wait_for(lambda: _sleeping(reader) != 0, what="the reader to sleep")
        with Writer.create(jdir, "b", service=None) as writer:
            writer.write(b"rung")

    thread = threading.Thread(target=write_once_asleep)
    thread.start()
    got = _block(reader, NO_LIMIT)  # no timeout: a lost wake-up hangs here (the suite's timeout)
    thread.join()
    assert isinstance(got, Frame) and bytes(got.data) == b"rung"  # read in the same call
    assert _sleeping(reader) == 0


def test_returns_the_frame_its_recheck_finds_without_waiting(jdir: str, reader: Reader) -> None:
    with Writer.create(jdir, "b", service=None) as writer:
        writer.write(b"early")
    got = _block(reader, NO_LIMIT)
    assert isinstance(got, Frame) and bytes(got.data) == b"early"
    assert _sleeping(reader) == 0


def test_returns_false_after_its_timeout_with_nothing_written(reader: Reader) -> None:
    assert _block(reader, 20_000_000) is False
    assert _sleeping(reader) == 0


def test_a_read_that_raises_is_raised_and_leaves_it_awake(reader: Reader) -> None:
    def broken() -> None:
        raise Alarm("bad read")

    with pytest.raises(Alarm, match="bad read"):
        _block(reader, NO_LIMIT, broken)
    assert _sleeping(reader) == 0


def test_a_signal_whose_handler_raises_ends_an_unbounded_wait(reader: Reader) -> None:
    def alarm(signum: int, frame: object) -> None:
        raise Alarm("signal")

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Alarm, match="signal"):
            _block(reader, NO_LIMIT)  # no timeout: only the signal can end it
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert _sleeping(reader) == 0


def test_bad_arguments_are_a_clear_error(reader: Reader) -> None:
    with pytest.raises(TypeError, match=r"bell_block\(bell, read, timeout_ns, needy=None\)"):
        native.bell_block(_bell(reader), reader.read)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="doorbell"):
        native.bell_block(bytearray(8), reader.read, 0)  # type: ignore[union-attr]


def test_a_journal_whose_writer_does_not_ring_is_seen_while_rings_keep_the_reader_busy(jdir: str) -> None:
    """Every wait ends with a ring from `loud`; `mute`'s writer never rings. The sweep every
    SWEEP_PERIOD (at the re-check before a wait) finds `mute`'s frame after about as many of
    `loud`'s frames as wake-ups fit in 0.1 s (each here waits at least 1 ms for the reader to fall
    asleep); without it, only the merge's sweep every SWEEP_EVERY reads would, after thousands."""
    for name in ("loud", "mute"):
        Writer.create(jdir, name, service=None).close()
    reader = Reader.create("busy", service=None)
    reader.add_journal(jdir, "loud")
    reader.add_journal(jdir, "mute")
    seen_mute = threading.Event()
    failures: list[BaseException] = []

    def asleep() -> bool:
        return _sleeping(reader) != 0 or seen_mute.is_set()

    def write() -> None:  # the writers live in this thread (a writer belongs to one thread)
        try:
            with (
                Writer.create(jdir, "loud", service=None) as loud,
                Writer.create(jdir, "mute", service=None) as mute,
            ):
                mute._c_close_bells()
                wait_for(asleep, what="the reader to sleep")
                mute.write(b"mute")
                while not seen_mute.is_set():
                    wait_for(asleep, what="the reader to sleep")
                    loud.write(b"loud")
        except BaseException as e:
            failures.append(e)

    thread = threading.Thread(target=write)
    thread.start()
    loud_seen = 0
    try:
        for frame in reader.frames(wait=Block(spin=0, max_nap=None)):
            if bytes(frame.data) == b"mute":
                break
            loud_seen += 1
    finally:
        seen_mute.set()
        thread.join()
        reader.close()
    assert not failures, failures
    assert loud_seen < 2000, loud_seen


@pytest.mark.parametrize("call", ["bell_block", "bell_sleep"])
def test_a_sleeping_reader_s_needy_bytes_are_set_by_its_c_merge_in_the_same_call(
    jdir: str, call: str
) -> None:
    """`bell_block` and `bell_sleep` given the reader's MergeCore set its needy byte in every
    journal's list, from C (docs/format.md, "Needy bytes": after `sleeping`, before the re-check)."""
    names = [f"n{i}" for i in range(20)]
    for name in names:
        Writer.create(jdir, name, service=None).close()
    with Reader.create("needy", service=None) as reader:
        for name in names:
            reader.add_journal(jdir, name)
        merge, bell = reader._merge, reader._merge.bell
        assert bell is not None and len(bell.needy) == len(names)
        for mm, offset in bell.needy.values():
            mm[offset] = 0  # as a writer's ring leaves them for a reader that is awake and needs nothing
        if call == "bell_block":
            assert native.bell_block(bell.mm, reader.read, 0, merge.core) is False  # type: ignore[union-attr]
        else:
            native.bell_sleep(bell.mm, 1, merge.core)  # type: ignore[union-attr]
            bell.awake()
        assert [mm[offset] for mm, offset in bell.needy.values()] == [1] * len(names)
