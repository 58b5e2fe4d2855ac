"""Reads interrupted by a signal whose handler uses the same reader (test_red_team_6, test_reentrancy).

A profile hook raises SIGUSR1 at every third C call that returns inside a read's Python code; the
handler runs at the next bytecode, in the middle of that read, as a SIGALRM handler would.
"""

from __future__ import annotations

import itertools
import signal
import sys
from collections.abc import Callable
from types import FrameType

from mmipc import Reader, UsageError, Writer
from mmipc.journal._backend import native


def slow_path_code() -> set[object]:
    """The Python code objects a read runs in: the pure-Python reader's, and the native reader's
    slow path (a page's end) and its merge's settling."""
    from mmipc.journal._cursor import Cursor
    from mmipc.journal._merge import Merge

    functions = [Cursor._py_read, Cursor._py_poll, Cursor._py_take, Merge._read_settling]
    if native is None:
        functions.append(Merge._read)  # its body: `read` only checks the thread, writing nothing
    return {f.__code__ for f in functions}


def read_all_while_signalled(
    jdir: str, journals: int, count: int, name: str, in_handler: Callable[[Reader], int | None]
) -> tuple[list[int], list[str]]:
    """Write frames numbered 0..count-1 round-robin into `journals` journals d0, d1 ... of `jdir`,
    then read them all with reader `name` while the handler runs `in_handler(reader)` inside its
    reads (a number it returns counts as read). Returns the numbers read, in order, and the
    messages of the UsageErrors the handler met."""
    names = [f"d{j}" for j in range(journals)]
    writers = [Writer.create(jdir, n, page_size=64 * 1024) for n in names]
    for i in range(count):
        writers[i % journals].write(i.to_bytes(8, "little") + bytes(24))
    for writer in writers:
        writer.close()
    reader = Reader.create(name)
    for n in names:
        reader.add_journal(jdir, n)
    seen: list[int] = []
    refused: list[str] = []
    returns = itertools.count()
    handling: list[bool] = []

    def handler(signum: int, frame: object) -> None:
        handling.append(True)
        try:
            got = in_handler(reader)
        except UsageError as exc:
            refused.append(str(exc))
            return
        finally:
            handling.pop()
        if got is not None:
            seen.append(got)

    inside = slow_path_code()

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
    return seen, refused
