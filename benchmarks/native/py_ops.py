"""One hot-path operation repeated N times from Python, for callgrind instruction counts.

usage: py_ops.py BACKEND OP N DIRECTORY
BACKEND: python (the pure-Python Writer/Reader) or ext (mmipc.journal._native's cores on the same pages).
OP: write, read_empty, read, read_batch, loop (an empty loop: the baseline a per-op figure excludes).
Setup is the same for any N, so (Ir(N2) - Ir(N1)) / (N2 - N1) is the cost of one operation.
"""

from __future__ import annotations

import sys
from typing import Any

from mmipc import Reader, Writer
from mmipc.journal._native import CursorCore, WriterCore
from mmipc.journal._types import Frame, JournalId

PREPARED = 40000
PAYLOAD = bytes(408)
NEVER = 1 << 62


def prepare(directory: str) -> None:
    with Writer.create(directory, "ops", service=None) as writer:
        for _ in range(PREPARED):
            writer.write(PAYLOAD, 1)


def write(backend: str, n: int, directory: str) -> None:
    writer = Writer.create(directory, "ops", service=None)
    writer.write(PAYLOAD, 1)  # the first frame of the page (first_nano, slot 0) in both backends
    if backend == "python":
        w: Any = writer.write
        for _ in range(n):
            w(PAYLOAD, 1)
    else:
        page: Any = writer._page
        core = WriterCore()
        core._c_attach(page.view, page.page_size, 1, 0, 0, writer._pos, writer._last_nano, 0, NEVER)
        w = core.write
        for _ in range(n):
            w(PAYLOAD, 1)
        core._c_detach()
    writer.close()


def read(backend: str, op: str, n: int, directory: str) -> None:
    prepare(directory)
    reader = Reader.create("ops", service=None)
    reader.add_journal(directory, "ops", "end" if op == "read_empty" else "begin")
    if backend == "python":
        read_one: Any = reader.read
        for _ in range(n):
            read_one()
        return
    cursor: Any = reader._cursors[0]
    core = CursorCore(JournalId(directory, "ops"), Frame)
    core._c_attach(cursor.view, cursor.page_size, 1, 0, 0, cursor.pos)
    if op == "read_batch":
        got = 0
        while got < n:
            batch: Any = core.read_batch(min(1000, n - got))
            got += len(batch)
    else:
        read_core = core.read
        for _ in range(n):
            read_core()
    core._c_detach()


def main() -> None:
    backend, op, n, directory = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if op == "loop":
        for _ in range(n):
            pass
    elif op == "write":
        write(backend, n, directory)
    else:
        read(backend, op, n, directory)


if __name__ == "__main__":
    main()
