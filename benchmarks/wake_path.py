"""Instructions a woken reader spends between its wait returning and the frame reaching its consumer.

    python benchmarks/wake_path.py [--mode block|aio|pipe] [--frames 100] [--gap-ms 80] [--keep DIR]

Runs a reader (`reader.frames(wait="block")`, `async for frame in reader.aframes()`, or, for
comparison, `mmipc bench`'s os.pipe peer's blocking read of a FIFO: `--mode pipe`) under
`valgrind --tool=callgrind` and a writer outside it that writes one 64-byte frame every `--gap-ms`
ms (far longer than the reader's whole loop under valgrind: it falls asleep before each). The
consumer takes `frame.data` (the pipe's: the bytes read), then calls `os.getppid()`, a marker
nothing else calls. Callgrind dumps its counts at the marker, when the wait returns (after libc's
`syscall()`, the futex; after libc's `read()`, the pipe; for asyncio, at `os.getpgrp()`, which the
probe calls right after a selector's `select()` with a timeout other than 0 returns) and after
every `epoll_wait`. From the last wake before a marker to the marker is the after-wake path (back
to Python, the read, the iterator or the event loop's turns, `.data`); each `epoll_wait` on it
is one more turn of the loop. From a marker to the next wake is the way to sleep, the wait
included. Prints the median, min and max of each, after the first five frames; frames found
without sleeping are left out.
Instruction counts do not drift with the machine's load: quote them; the wall clock, never here.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

# Where the wait returns: libc's syscall() (the futex); for asyncio, a marker called right after
# a selector's select() that may block returns (one with a timeout of 0 does not mark).
WAKE_TRIGGER = {"block": "--dump-after=syscall", "aio": "--dump-before=getpgrp", "pipe": "--dump-after=read"}


def reader_main(directory: str, count: int, mode: str) -> None:
    if mode == "pipe":
        _pipe_reader(directory, count)
        return
    from mmipc import Reader

    reader = Reader.create(f"wake-{os.getpid()}", service=None)
    reader.add_journal(directory, "wake")
    print("ready", flush=True)
    if mode == "block":
        frames = reader.frames(wait="block")
        for _ in range(count):
            _ = next(frames).data
            os.getppid()
    else:
        asyncio.run(_aio_reader(reader, count))


def _pipe_reader(directory: str, count: int) -> None:
    """The comparison: `mmipc bench`'s os.pipe peer's blocking read (peers._pipe_receiver)."""
    from mmipc.bench.peers import _pipe_receiver

    wait = _pipe_receiver((os.path.join(directory, "fifo"), 64))[1]
    assert wait is not None
    print("ready", flush=True)
    for _ in range(count):
        _ = wait()
        os.getppid()


async def _aio_reader(reader: object, count: int) -> None:
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    select = selector.select

    def marked(timeout: float | None = None) -> object:
        events = select(timeout)
        if timeout is None or timeout > 0:
            os.getpgrp()
        return events

    selector.select = marked
    frames = reader.aframes()  # type: ignore[attr-defined]
    for _ in range(count):
        _ = (await frames.__anext__()).data
        os.getppid()


def run(mode: str, count: int, gap: float, keep: str | None) -> None:
    from mmipc import Writer

    work = keep or tempfile.mkdtemp(prefix="wake-path-")
    journal = os.path.join(work, "journal")
    os.makedirs(journal, exist_ok=True)
    if mode == "pipe":
        os.mkfifo(os.path.join(journal, "fifo"))
    writer = Writer.create(journal, "wake", service=None)
    out = os.path.join(work, "callgrind.out")
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}.%p",
        WAKE_TRIGGER[mode],
        "--dump-after=epoll_wait",
        "--dump-before=getppid",
        sys.executable,
        __file__,
        "--reader",
        journal,
        str(count),
        mode,
    ]
    reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert reader.stdout is not None
    if reader.stdout.readline().strip() != "ready":
        raise SystemExit("the reader did not start")
    time.sleep(1.0)  # let it fall asleep (valgrind is slow)
    send = _pipe_writer(journal) if mode == "pipe" else writer.write
    for _ in range(count):
        send(b"x" * 64)
        time.sleep(gap)
    reader.wait(timeout=600)
    writer.close()
    report(glob.glob(f"{out}.*"), WAKE_TRIGGER[mode])


def _pipe_writer(journal: str) -> Any:
    fd = os.open(os.path.join(journal, "fifo"), os.O_WRONLY)
    return lambda payload: os.write(fd, payload)


def report(files: list[str], wake_trigger: str) -> None:
    """The after-wake path: from the last wake before a marker to that marker, summed over the
    dumps in between (each further `epoll_wait` is one more turn of an event loop). The way to
    sleep: from a marker to the first wake after it, the wait included."""
    dumps = []
    for path in files:
        with open(path, errors="replace") as f:
            text = f.read(1 << 16)
        found = re.search(r"^desc: Trigger: (.*)$", text, re.M)
        totals = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if found and totals:
            dumps.append((_dump_number(path), found.group(1), int(totals.group(1))))
    dumps.sort()
    woken, turns, sleeping = [], [], []
    after: list[int] | None = None  # the dumps since the last wake
    before = 0  # Ir since the last marker
    for _, trigger, ir in dumps:
        if after is not None:
            after.append(ir)
        else:
            before += ir
        if trigger == wake_trigger:
            if after is None:
                sleeping.append(before)
            after = []
        elif "getppid" in trigger:
            if after:
                woken.append(sum(after))
                turns.append(len(after) - 1)
            after, before = None, 0
    _print("after-wake path", woken)
    _print("extra epoll_wait calls (loop turns) on it", turns, unit="")
    _print("way to sleep", sleeping)


def _print(what: str, costs: list[int], unit: str = " Ir") -> None:
    """Median, min, max, count (after the first five)."""
    costs = costs[5:]  # the first wake-ups warm caches and imports
    if not costs:
        raise SystemExit(f"no {what} dumps: did the reader ever sleep?")
    median = statistics.median(costs)
    print(f"{what}: median {median:.0f}{unit}, min {min(costs)}, max {max(costs)}, n={len(costs)}")


def _dump_number(path: str) -> int:
    """N of ``callgrind.out.PID.N``; the final dump (no N) comes last."""
    match = re.search(r"callgrind\.out\.\d+\.(\d+)$", path)
    return int(match.group(1)) if match else sys.maxsize


def main() -> None:
    if sys.argv[1:2] == ["--reader"]:
        reader_main(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(WAKE_TRIGGER), default="block")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--gap-ms", type=float, default=80.0)
    parser.add_argument("--keep", help="a directory for the journal and the dumps (default: a temporary one)")
    args = parser.parse_args()
    run(args.mode, args.frames, args.gap_ms / 1000, args.keep)


if __name__ == "__main__":
    main()
