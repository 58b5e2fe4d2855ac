"""A reader belongs to the thread that created it (_reader.py rules): another thread's calls raise
`UsageError` before touching anything, the owner's reads stay exact, and `adopt()` hands it over."""

from __future__ import annotations

import threading
from collections.abc import Callable

import payloads
import pytest

from conftest import race_two_threads
from mmipc import Reader, UsageError, Writer

PAGE = 64 * 1024
COUNT = 20000


def _write(jdir: str, names: list[str]) -> None:
    """COUNT frames over `names` on small pages: many page switches, where two readers would race."""
    writers = [Writer.create(jdir, n, page_size=PAGE, service=None) for n in names]
    for i in range(COUNT):
        writers[i % len(names)].write(payloads.make(i))
    for writer in writers:
        writer.close()


def _reader(jdir: str, names: list[str]) -> Reader:
    reader = Reader.create("owned", service=None)
    for name in names:
        reader.add_journal(jdir, name)
    return reader


def _in_thread(work: Callable[[], None]) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()


JOURNALS = pytest.mark.parametrize("names", [["one"], ["a", "b", "c"]], ids=["one-journal", "merge"])


@JOURNALS
def test_every_call_from_another_thread_is_refused_and_the_owner_reads_everything(
    jdir: str, names: list[str]
) -> None:
    _write(jdir, names)
    reader = _reader(jdir, names)
    first = [payloads.check(reader.read().data) for _ in range(10)]  # type: ignore[union-attr]
    refused: list[str] = []

    def other() -> None:
        for attempt in (
            reader.read,
            reader.read_data,
            lambda: reader.read_batch(10),
            lambda: next(reader.frames(timeout=0)),
            lambda: reader.seek(0),
            lambda: reader.add_journal(jdir, "another"),
            lambda: reader.remove_journal(jdir, names[0]),
            reader.close,
        ):
            try:
                attempt()
            except UsageError as exc:
                refused.append(str(exc))

    _in_thread(other)
    assert len(refused) == 8 and all("belongs to the thread that created it" in r for r in refused)
    assert all("adopt()" in r for r in refused)
    rest = [payloads.check(f.data) for f in iter(reader.read, None)]  # nothing taken, nothing moved
    assert first + rest == list(range(COUNT))
    assert len(reader.journals) == len(names)
    reader.close()


@JOURNALS
def test_two_threads_reading_one_reader_never_report_false_corruption(jdir: str, names: list[str]) -> None:
    """Red team 4: two threads reading one reader raced in its page switches and raised
    CorruptJournalError on a sound journal. Now the other thread is refused at its first read."""
    _write(jdir, names)
    reader = _reader(jdir, names)
    outcome: dict[str, object] = {}

    def hammer(tag: str) -> None:
        got = []
        try:
            while (data := reader.read_data()) is not None:
                got.append(payloads.check(data))
            outcome[tag] = got
        except UsageError:
            outcome[tag] = "refused"

    race_two_threads(hammer)
    reader.close()
    assert outcome == {"owner": list(range(COUNT)), "other": "refused"}


@JOURNALS
def test_adopt_hands_a_reader_to_another_thread_and_back(jdir: str, names: list[str]) -> None:
    _write(jdir, names)
    reader = _reader(jdir, names)
    got: list[int] = []

    def take_over() -> None:
        reader.adopt()
        got.extend(payloads.check(reader.read().data) for _ in range(COUNT // 2))  # type: ignore[union-attr]

    _in_thread(take_over)
    with pytest.raises(UsageError, match="belongs to the thread"):
        reader.read()  # the creator handed it over
    reader.adopt()
    got.extend(payloads.check(f.data) for f in iter(reader.read, None))
    assert got == list(range(COUNT))
    reader.close()


def test_a_durable_reader_commits_nothing_from_another_thread(jdir: str, tmp_path: object) -> None:
    _write(jdir, ["d"])
    reader = Reader.create("owned", service=None, durable=True, cursor_dir=str(tmp_path), commit_every=1)
    reader.add_journal(jdir, "d")
    reader.read()
    refused: list[str] = []

    def other() -> None:
        for attempt in (reader.read, reader.commit):
            try:
                attempt()
            except UsageError as exc:
                refused.append(str(exc))

    _in_thread(other)
    assert len(refused) == 2
    reader.close()
    with Reader.create("owned", service=None, durable=True, cursor_dir=str(tmp_path)) as again:
        again.add_journal(jdir, "d")
        assert payloads.check(again.read().data) == 1  # type: ignore[union-attr]
