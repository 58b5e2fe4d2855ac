"""Each side of `mmipc bench`'s throughput mode alone, on one pinned CPU: how many messages a second
the sender moves with nobody reading, and the receiver reads from a journal written beforehand.

Set beside the throughput of the pair (both sides at once on two CPUs), it tells what the pair
loses to the traffic between the two cores rather than to the code on either side.

usage: solo_rates.py [--cpu N] [--count N] [--rounds N] [--page-sizes MIB,MIB]
(the backend is MMIPC_BACKEND's; MMIPC_PRETOUCH=0 turns the writer's pretoucher off)

--page-sizes: instead, the sender alone at 408 B with pages of those sizes (a standalone writer:
it makes each page itself at its switch), 1,000,000 messages: what new pages cost per byte.

The loops are the bench's own (`_send_all`, `_throughput`) over the same peer adapters as
bench_loops.py: mmipc's `read().data` closure and the naive log's poll. Journals go to /dev/shm,
as the bench's do to its work directory. Prints the median of the rounds per peer and size.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from mmipc import Reader, Writer
from mmipc.bench import _send_all, _throughput
from mmipc.bench.peers import _naive_open, _naive_receiver, _naive_sender


def _mmipc_pair(directory: str, size: int) -> tuple[Any, Any]:
    writer = Writer.create(directory, "bench", page_size=256 << 20, service=None)

    def receiver() -> Any:
        reader = Reader.create(f"solo-{os.getpid()}", service=None)
        reader.add_journal(directory, "bench")
        read = reader.read

        def poll() -> memoryview | None:
            frame = read()
            return None if frame is None else frame.data

        return poll

    return writer.write, receiver


def _naive_pair(directory: str, size: int) -> tuple[Any, Any]:
    path = _naive_open(directory, size)
    return _naive_sender(path), lambda: _naive_receiver(path)[0]


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    """A directory for one measurement's journals, on /dev/shm where there is one, removed after."""
    directory = tempfile.mkdtemp(prefix="mmipc-solo-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _rate(count: int, action: Callable[[], object]) -> float:
    """Messages a second of `action`, which moves `count` messages."""
    start = time.perf_counter()
    action()
    return count / (time.perf_counter() - start)


def _one(peer: str, size: int, count: int) -> tuple[float, float]:
    with _scratch() as directory:
        send, receiver = (_mmipc_pair if peer == "mmipc" else _naive_pair)(directory, size)
        sent = _rate(count, lambda: _send_all(send, size, count))
        poll = receiver()
        result: dict[str, Any] = {}
        received = _rate(count, lambda: result.update(_throughput(poll, count)))
        assert result["disorder"] == 0, result
        return sent, received


def _pages(mib: int, count: int) -> float:
    """Messages a second of a standalone writer alone at 408 B with `mib` MiB pages."""
    with _scratch() as directory:
        with Writer.create(directory, "bench", page_size=mib << 20, service=None) as writer:
            return _rate(count, lambda: _send_all(writer.write, 408, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=1)
    parser.add_argument("--count", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--page-sizes", help="MiB,MiB: the sender alone with those page sizes")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    if args.page_sizes:
        for mib in (int(m) for m in args.page_sizes.split(",")):
            rates = [_pages(mib, 1_000_000) / 1e6 for _ in range(args.rounds)]
            print(f"sender alone, 408 B, {mib} MiB pages: {statistics.median(rates):5.2f} M/s")
        return
    for size in (64, 408):
        for peer in ("mmipc", "naive-mmap"):
            runs = [_one(peer, size, args.count) for _ in range(args.rounds)]
            sent = statistics.median(r[0] for r in runs) / 1e6
            received = statistics.median(r[1] for r in runs) / 1e6
            print(f"{peer:10s} {size:3d} B: sender alone {sent:5.2f} M/s, receiver alone {received:5.2f} M/s")


if __name__ == "__main__":
    main()
