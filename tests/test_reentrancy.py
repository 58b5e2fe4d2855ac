"""A signal handler (or a finalizer) runs between two bytecodes of whatever the main code does, a
read's Python part included. red6 refused a read from there; this covers the reader's other
methods: `seek`, `add_journal`, `remove_journal` and `close` called from inside a read of the same
reader change the cursors, the merge's heap or the core's state under the read that is using them.
Each is refused now (UsageError), on both backends, and the interrupted read goes on: every frame
comes out once. The signal is raised by a profile hook each time a C call returns inside a read's
Python code (as in tests/test_red_team_6.py)."""

from __future__ import annotations

import itertools
import signal
import sys
from collections.abc import Callable
from types import FrameType

import pytest

from mmipc import Reader, UsageError, Writer
from mmipc.journal._backend import native

COUNT = 3000


def _slow_path_code() -> set[object]:
    """The Python code objects a read runs in (the pure-Python reader's, the native slow paths)."""
    from mmipc.journal._cursor import Cursor
    from mmipc.journal._merge import Merge

    functions = [Cursor._py_read, Cursor._py_poll, Cursor._py_take, Merge._read_settling]
    if native is None:
        functions.append(Merge.read)
    return {f.__code__ for f in functions}


OPS: dict[str, Callable[[Reader, str], object]] = {
    "seek": lambda reader, jdir: reader.seek(0),
    "add_journal": lambda reader, jdir: reader.add_journal(jdir, "extra"),
    "remove_journal": lambda reader, jdir: reader.remove_journal(jdir, "d0"),
    "close": lambda reader, jdir: reader.close(),
}


@pytest.mark.parametrize("journals", [1, 3], ids=["one-journal", "merge"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_a_signal_handler_that_changes_the_reader_inside_a_read_is_refused(
    jdir: str, journals: int, op: str
) -> None:
    if native is None and journals == 1:
        pytest.skip(
            "pure Python, one journal: Cursor.read's fast path marks nothing (a mark per frame costs "
            "two stores and a try); a handler there is not refused (known limit, docs/reliability.md)"
        )
    names = [f"d{j}" for j in range(journals)]
    writers = [Writer.create(jdir, name, page_size=64 * 1024) for name in names]
    for i in range(COUNT):
        writers[i % journals].write(i.to_bytes(8, "little") + bytes(24))
    for writer in writers:
        writer.close()
    reader = Reader.create("reentered")
    for name in names:
        reader.add_journal(jdir, name)
    seen: list[int] = []
    refused: list[str] = []
    returns = itertools.count()
    handling: list[bool] = []

    def handler(signum: int, frame: object) -> None:
        handling.append(True)
        try:
            OPS[op](reader, jdir)
        except UsageError as exc:
            refused.append(str(exc))
        finally:
            handling.pop()

    inside = _slow_path_code()

    def hook(frame: FrameType, event: str, arg: object) -> None:
        if event == "c_return" and frame.f_code in inside and not handling and next(returns) % 3 == 0:
            signal.raise_signal(signal.SIGUSR1)  # its handler runs at the next bytecode

    old = signal.signal(signal.SIGUSR1, handler)
    sys.setprofile(hook)
    try:
        while (got := reader.read()) is not None:
            seen.append(int.from_bytes(got.data[:8], "little"))
    finally:
        sys.setprofile(None)
        signal.signal(signal.SIGUSR1, old)
        seen.extend(int.from_bytes(f.data[:8], "little") for f in iter(reader.read, None))
        reader.close()
    assert refused and all("from inside one of its own reads" in r for r in refused), refused[:3]
    assert sorted(seen) == list(range(COUNT))  # each frame once
