"""The per-message loops of `mmipc bench`'s throughput mode, repeated N times in one process, for
callgrind instruction counts per iteration (what a 2.5x throughput target leaves each side).

usage: bench_loops.py PEER-ROLE N DIRECTORY [SIZE]   (the backend is MMIPC_BACKEND's)
PEER-ROLE: mmipc-send, naive-send (the bench's `_send_all` with the peer's send), mmipc-receive,
naive-receive (the bench's `_throughput` over the peer's poll, on a log prepared beforehand;
mmipc's over `Reader.read_data` alone), mmipc-frame-receive (the same over a `read().data`
closure: the Frame path, the bench's mmipc peer's poll), loop (an empty loop:
the baseline). Payloads are SIZE bytes (default 64). Setup is the same for any N, so
(Ir(N2) - Ir(N1)) / (N2 - N1) is the cost of one iteration, the loop included.
mmipc runs standalone (service=None); the naive peer is the bench's own adapter.
"""

from __future__ import annotations

import sys
from typing import Any

from mmipc import Reader, Writer
from mmipc.bench import _send_all, _throughput
from mmipc.bench.peers import _naive_open, _naive_receiver, _naive_sender

PREPARED = 40000


def _mmipc_send(directory: str) -> Any:
    return Writer.create(directory, "bench", page_size=64 << 20, service=None).write


def _mmipc_poll(directory: str, frames: bool) -> Any:
    reader = Reader.create("bench", service=None)
    reader.add_journal(directory, "bench")
    if not frames:
        return reader.read_data  # the cheapest poll (the bench's peer does not use it: see its doc)
    read = reader.read

    def poll() -> memoryview | None:  # the Frame path: peers._mmipc_receiver's poll
        frame = read()
        return None if frame is None else frame.data

    return poll


def main() -> None:
    what, n, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    if what == "loop":
        for _ in range(n):
            pass
        return
    peer, role = what.rsplit("-", 1)
    path = _naive_open(directory, size) if peer == "naive" else directory
    send = _naive_sender(path) if peer == "naive" else _mmipc_send(directory)
    if role == "send":
        _send_all(send, size, n)
        return
    _send_all(send, size, PREPARED)
    poll = _naive_receiver(path)[0] if peer == "naive" else _mmipc_poll(directory, peer == "mmipc-frame")
    result = _throughput(poll, n)
    assert result["disorder"] == 0, result


if __name__ == "__main__":
    main()
