"""`bell_block`: wait="block"'s whole sleep in one native call (announce, re-check, wait, read).

Real writers (a thread: the wait releases the GIL) and a real reader's doorbell; no mocks.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator

import pytest

from conftest import wait_for
from mmipc import Frame, Reader, Writer
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
    with pytest.raises(TypeError, match=r"bell_block\(bell, read, timeout_ns\)"):
        native.bell_block(_bell(reader), reader.read)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="doorbell"):
        native.bell_block(bytearray(8), reader.read, 0)  # type: ignore[union-attr]
