"""Instructions a woken reader spends between its wait returning and the frame reaching its consumer.

    python benchmarks/wake_path.py [--mode block|aio] [--frames 150] [--gap-ms 50] [--keep DIR]

Runs a reader (`reader.frames(wait="block")`, or `async for frame in reader.aframes()`) under
`valgrind --tool=callgrind` and a writer outside it that writes one 64-byte frame every `--gap-ms`
ms (far longer than the reader's whole loop under valgrind: it always falls asleep). The consumer
takes `frame.data`, then calls `os.getppid()`, a marker nothing else calls. Callgrind dumps its
counts when the wait returns (after libc's `syscall`, the futex, or `epoll_wait` for asyncio) and
when the marker is entered (before `getppid`): each dump that ends at the marker holds exactly the
after-wake path (back to Python, the re-check or read, the generator or the event loop, `.data`).
A dump that does not start at the wait's return (the re-check found the frame, the first frames)
is dropped. Prints the median, min and max instructions (Ir) of those dumps, and their count.
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

WAIT_FUNCTION = {"block": "syscall", "aio": "epoll_wait"}


def reader_main(directory: str, count: int, mode: str) -> None:
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


async def _aio_reader(reader: object, count: int) -> None:
    frames = reader.aframes()  # type: ignore[attr-defined]
    for _ in range(count):
        _ = (await frames.__anext__()).data
        os.getppid()


def run(mode: str, count: int, gap: float, keep: str | None) -> None:
    from mmipc import Writer

    work = keep or tempfile.mkdtemp(prefix="wake-path-")
    journal = os.path.join(work, "journal")
    os.makedirs(journal, exist_ok=True)
    writer = Writer.create(journal, "wake", service=None)
    out = os.path.join(work, "callgrind.out")
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}.%p",
        f"--dump-after={WAIT_FUNCTION[mode]}",
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
    for _ in range(count):
        writer.write(b"x" * 64)
        time.sleep(gap)
    reader.wait(timeout=600)
    writer.close()
    report(glob.glob(f"{out}.*"), WAIT_FUNCTION[mode])


def report(files: list[str], wait_function: str) -> None:
    """Ir of each dump that starts when the wait returns and ends at the marker (the after-wake
    path), and of each that starts at the marker and ends when the wait returns (the consumer's
    next call up to the wait, and the wait itself: the way to sleep)."""
    dumps = []
    for path in files:
        with open(path, errors="replace") as f:
            text = f.read(1 << 16)
        trigger = re.search(r"^desc: Trigger: (.*)$", text, re.M)
        totals = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if trigger and totals:
            dumps.append((_dump_number(path), trigger.group(1), int(totals.group(1))))
    dumps.sort()
    pairs = [(start, end, ir) for (_, start, _), (_, end, ir) in zip(dumps, dumps[1:], strict=False)]
    woken = [ir for start, end, ir in pairs if wait_function in start and "getppid" in end]
    sleeping = [ir for start, end, ir in pairs if "getppid" in start and wait_function in end]
    _print("after-wake path", woken)
    _print("way to sleep", sleeping)


def _print(what: str, costs: list[int]) -> None:
    costs = costs[5:]  # the first wake-ups warm caches and imports
    if not costs:
        raise SystemExit(f"no {what} dumps: did the reader ever sleep?")
    median = statistics.median(costs)
    print(f"{what}: median {median:.0f} Ir, min {min(costs)}, max {max(costs)}, n={len(costs)}")


def _dump_number(path: str) -> int:
    """N of ``callgrind.out.PID.N``; the final dump (no N) comes last."""
    match = re.search(r"callgrind\.out\.\d+\.(\d+)$", path)
    return int(match.group(1)) if match else sys.maxsize


def main() -> None:
    if sys.argv[1:2] == ["--reader"]:
        reader_main(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(WAIT_FUNCTION), default="block")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--keep", help="a directory for the journal and the dumps (default: a temporary one)")
    args = parser.parse_args()
    run(args.mode, args.frames, args.gap_ms / 1000, args.keep)


if __name__ == "__main__":
    main()
