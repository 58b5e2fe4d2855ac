"""One public-API hot-path call repeated N times, for callgrind instruction counts per call.

usage: api_ops.py OP N DIRECTORY   (the backend is MMIPC_BACKEND's, as for any mmipc program)
OP: write64, write408 (Writer.write), read_empty, read (Reader.read of one 64 B frame),
read_data_empty, read_data (the same with Reader.read_data), read_batch (Reader.read_batch(1000),
per frame), loop (an empty loop: the baseline).
Setup is the same for any N, so (Ir(N2) - Ir(N1)) / (N2 - N1) is the cost of one call, loop included.
"""

from __future__ import annotations

import sys

from mmipc import Reader, Writer

PREPARED = 40000
NEVER = 1 << 62


def write(size: int, n: int, directory: str) -> None:
    payload = bytes(size)
    with Writer.create(directory, "ops", page_size=64 << 20, service=None) as writer:
        writer.write(payload, 1)  # the first frame of the page (first_nano, slot 0)
        w = writer.write
        for _ in range(n):
            w(payload, 1)


def read(op: str, n: int, directory: str) -> None:
    with Writer.create(directory, "ops", page_size=64 << 20, service=None) as writer:
        payload = bytes(64)
        for _ in range(PREPARED):
            writer.write(payload, 1)
    with Reader.create("ops", service=None) as reader:
        reader.add_journal(directory, "ops", "end" if op.endswith("_empty") else "begin")
        if op == "read_batch":
            got = 0
            while got < n:
                got += len(reader.read_batch(min(1000, n - got)))
            return
        read_one = reader.read_data if op.startswith("read_data") else reader.read
        for _ in range(n):
            read_one()


def main() -> None:
    op, n, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if op == "loop":
        for _ in range(n):
            pass
    elif op.startswith("write"):
        write(int(op[5:]), n, directory)
    else:
        read(op, n, directory)


if __name__ == "__main__":
    main()
