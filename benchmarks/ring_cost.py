"""A writer's wall-clock cost of doorbells: ns per Writer.write of 64 B, alone and followed by readers.

    python benchmarks/ring_cost.py [--writes 20000] [--rounds 9] [--gap-ms 2] [--paced 300]

Run it on a quiet machine (it starts up to 10 reader processes: other load makes the numbers lies).
Cases (each reader is a process of its own, subscribed before the writer starts):

* `alone`: nobody follows the journal (the writer loads one word per commit).
* `N awake`: N readers of this one journal that `read()` in a loop and keep up.
* `N awake, merging`: the same readers also follow an idle journal, so each one merges, collects
  its flags and clears them (the writer finds flags cleared and stores them again).
* `10 block`: 10 readers in `reader.frames(wait="block")`: they spin 50 us, then sleep on the futex.

Two columns per case. `burst`: a round of --writes writes back to back, timed as a whole, ns per
write, the median of --rounds rounds (a pause of 50 ms before each round lets block readers fall
asleep: the first write of a round wakes them, the rest find them spinning). `paced`: --paced single
writes --gap-ms apart, each timed alone (perf_counter_ns around the call, which adds the timer's
own cost: compare with `alone`), the median: block readers are asleep before each, so this is the
cost of a write that wakes 10 sleepers. `MMIPC_BACKEND=python` measures the pure-Python backend.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from mmipc import Reader, Writer

PAYLOAD = bytes(64)
STOP = 1  # the msg_type of the last frame: every reader exits when it reads it
CASES = [  # (label, readers, kind)
    ("alone", 0, "awake"),
    ("1 awake", 1, "awake"),
    ("10 awake", 10, "awake"),
    ("1 awake, merging", 1, "merging"),
    ("10 awake, merging", 10, "merging"),
    ("10 block", 10, "block"),
]


def reader_main(directory: str, kind: str) -> None:
    """A reader process: follow the journal (and an idle one when merging) until the STOP frame."""
    with Reader.create(f"ring-cost-{os.getpid()}", service=None) as reader:
        reader.add_journal(directory, "cost", start="end")
        if kind == "merging":
            reader.add_journal(directory, "idle")
        print("ready", flush=True)
        if kind == "block":
            for frame in reader.frames(wait="block"):
                if frame.msg_type == STOP:
                    return
            return
        read = reader.read
        while True:
            got = read()
            if got is not None and got.msg_type == STOP:
                return


def start_readers(n: int, kind: str, directory: str) -> list[subprocess.Popen[str]]:
    cmd = [sys.executable, os.path.abspath(__file__), "--reader", kind, directory]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    for proc in procs:
        if proc.stdout is None or proc.stdout.readline() != "ready\n":
            raise SystemExit("a reader process did not start")
    return procs


def burst(writer: Writer, writes: int, rounds: int) -> float:
    write = writer.write
    results = []
    for _ in range(rounds):
        time.sleep(0.05)
        start = time.perf_counter_ns()
        for _ in range(writes):
            write(PAYLOAD)
        results.append((time.perf_counter_ns() - start) / writes)
    return statistics.median(results)


def paced(writer: Writer, count: int, gap: float) -> float:
    write, clock = writer.write, time.perf_counter_ns
    results = []
    for _ in range(count):
        time.sleep(gap)
        start = clock()
        write(PAYLOAD)
        results.append(clock() - start)
    return statistics.median(results)


def run_case(readers: int, kind: str, args: argparse.Namespace) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="ring-cost-") as directory:
        with Writer.create(directory, "cost", service=None, page_size=1 << 28) as writer:
            procs = start_readers(readers, kind, directory)
            try:
                writer.write(PAYLOAD)  # the first ring maps the bells
                result = burst(writer, args.writes, args.rounds), paced(writer, args.paced, args.gap_ms / 1e3)
            finally:
                writer.write(PAYLOAD, msg_type=STOP)
                for proc in procs:
                    proc.wait(timeout=30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=20000, help="writes per burst round")
    parser.add_argument("--rounds", type=int, default=9, help="burst rounds (the median is printed)")
    parser.add_argument("--paced", type=int, default=300, help="single writes, --gap-ms apart")
    parser.add_argument("--gap-ms", type=float, default=2.0, help="the pause before each paced write")
    parser.add_argument("--reader", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        reader_main(args.reader[1], args.reader[0])
        return
    from mmipc.journal._backend import BACKEND

    print(f"backend {BACKEND}, {os.cpu_count()} CPUs; ns per Writer.write of 64 B")
    print(f"{'case':<20} {'burst (median)':>15} {'paced (median)':>15}")
    for label, readers, kind in CASES:
        fast, slow = run_case(readers, kind, args)
        print(f"{label:<20} {fast:>15.1f} {slow:>15.1f}", flush=True)


if __name__ == "__main__":
    main()
