"""Benchmarks of the journal core, against a naive mmap log measured in the same run.

    python benchmarks/journal_bench.py [--rounds 5] [--quick] [--out docs/benchmarks.md]

mmipc runs as it is meant to, registered with a real `mmipc service` that this script starts on a
temporary home. Figures: one-way latency of 408-byte frames between two processes pinned to two cores (reader
busy-polling, writer pacing one frame per 20 us); throughput of 64- and 408-byte frames counted at the
reader; in-process write and empty-read cost; read cost with 1, 8 and 64 journals; seek time in a
10-million-frame journal. The naive log stores a length word last and nothing else: the floor that
mmipc's full-featured path is compared with. Rounds interleave the two, so a slow phase of a shared
machine hits both alike; each figure is the median over rounds, with the min-max range.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from typing import Any

from mmipc import Reader, Writer
from mmipc.bench import with_service

SEQ = struct.Struct("<q")
LEN = struct.Struct("<I")
NAIVE_SIZE = 1 << 30
PACE_NS = 20_000


# -- the naive mmap log: a length word stored last, nothing else -------------------------------


class NaiveLog:
    def __init__(self, path: str, writable: bool) -> None:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self.mm = mmap.mmap(fd, NAIVE_SIZE, access=access)
        self.view = memoryview(self.mm)
        os.close(fd)
        self.pos = 0

    def write(self, payload: bytearray) -> None:
        pos, n = self.pos, len(payload)
        self.mm[pos + 8 : pos + 8 + n] = payload
        LEN.pack_into(self.mm, pos, n)
        self.pos = pos + ((n + 15) & ~7)

    def read(self) -> memoryview | None:
        pos = self.pos
        n = LEN.unpack_from(self.mm, pos)[0]
        if n == 0:
            return None
        self.pos = pos + ((n + 15) & ~7)
        return self.view[pos + 8 : pos + 8 + n]


# -- the two roles, run in pinned child processes ----------------------------------------------


def run_writer(peer: str, directory: str, mode: str, size: int, count: int) -> None:
    payload = bytearray(size)
    if peer == "naive":
        log = NaiveLog(os.path.join(directory, "naive.log"), writable=True)
        write: Callable[[bytearray], object] = log.write
    else:
        writer = Writer.create(directory, "bench")
        write = writer.write
    pack, time_ns = SEQ.pack_into, time.time_ns
    if mode == "latency":
        next_at = time_ns()
        for _ in range(count):
            while time_ns() < next_at:
                pass
            pack(payload, 0, time_ns())  # mmipc stamps its header too; the reader uses that one
            write(payload)
            next_at += PACE_NS
    else:
        SEQ.pack_into(payload, 8, time_ns())  # the start stamp the reader measures from
        for seq in range(count):
            pack(payload, 0, seq)
            write(payload)


def run_reader(peer: str, directory: str, mode: str, count: int) -> dict[str, Any]:
    if peer == "naive":
        path = os.path.join(directory, "naive.log")
        log = NaiveLog(path, writable=False)
        poll: Callable[[], Any] = log.read
    else:
        reader = Reader.create("bench")
        reader.add_journal(directory, "bench")
        poll = reader.read
    print("ready", flush=True)
    if mode == "latency":
        return _read_latency(peer, poll, count)
    return _read_throughput(peer, poll, count)


def _read_latency(peer: str, poll: Callable[[], Any], count: int) -> dict[str, Any]:
    lat = array("q", bytes(8 * count))
    time_ns, unpack = time.time_ns, SEQ.unpack_from
    for i in range(count):
        item = poll()
        while item is None:
            item = poll()
        now = time_ns()
        lat[i] = now - (item.nano if peer == "mmipc" else unpack(item, 0)[0])
    return {"latency_ns": percentiles(sorted(lat[count // 10 :]))}


def _read_throughput(peer: str, poll: Callable[[], Any], count: int) -> dict[str, Any]:
    unpack = SEQ.unpack_from
    errors = 0
    data: Any = None
    for seq in range(count):
        item = poll()
        while item is None:
            item = poll()
        data = item.data if peer == "mmipc" else item
        if unpack(data, 0)[0] != seq:
            errors += 1
    elapsed = time.time_ns() - unpack(data, 8)[0]  # from the writer's start to the last frame read
    return {"per_s": count / elapsed * 1e9, "errors": errors}


def percentiles(ordered: list[int]) -> dict[str, float]:
    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "p99.9": at(0.999), "max": ordered[-1] / 1000}


# -- orchestration -----------------------------------------------------------------------------


def pair(peer: str, mode: str, size: int, count: int) -> dict[str, Any]:
    """Run one writer and one reader process, pinned to cpus 0 and 1; return the reader's result."""
    with tempfile.TemporaryDirectory(prefix="mmipc-bench-") as directory:
        if peer == "naive":
            fd = os.open(os.path.join(directory, "naive.log"), os.O_RDWR | os.O_CREAT, 0o644)
            os.posix_fallocate(fd, 0, NAIVE_SIZE)
            os.close(fd)
        base = [sys.executable, __file__, "--role", peer, "--dir", directory, "--mode", mode]
        base += ["--size", str(size), "--count", str(count)]
        reader = subprocess.Popen([*base, "reader", "--cpu", "1"], stdout=subprocess.PIPE, text=True)
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready"
        writer = subprocess.Popen([*base, "writer", "--cpu", "0"])
        out, _ = reader.communicate(timeout=600)
        writer.wait(timeout=600)
        if reader.returncode or writer.returncode:
            raise RuntimeError(
                f"{peer} {mode} failed: reader {reader.returncode}, writer {writer.returncode}"
            )
        return json.loads(out)  # type: ignore[no-any-return]


def in_process_costs(count: int) -> dict[str, float]:
    """ns per call: write of 408 bytes, write through a claim, empty read."""
    payload = bytes(408)
    with tempfile.TemporaryDirectory(prefix="mmipc-bench-") as directory:
        with Writer.create(directory, "cost") as writer:
            write = writer.write
            start = time.perf_counter_ns()
            for _ in range(count):
                write(payload, 1, 0)
            write_ns = (time.perf_counter_ns() - start) / count
            start = time.perf_counter_ns()
            for _ in range(count // 4):
                with writer.frame(408, 1) as buf:
                    buf[:8] = b"12345678"
            claim_ns = (time.perf_counter_ns() - start) / (count // 4)
        reader = Reader.create("cost")
        reader.add_journal(directory, "cost", start="end")
        read = reader.read
        start = time.perf_counter_ns()
        for _ in range(count):
            read()
        empty_ns = (time.perf_counter_ns() - start) / count
    return {"write_408": write_ns, "claim_408": claim_ns, "empty_read_1": empty_ns}


def naive_costs(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mmipc-bench-") as directory:
        path = os.path.join(directory, "naive.log")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.posix_fallocate(fd, 0, NAIVE_SIZE)
        os.close(fd)
        log = NaiveLog(path, writable=True)
        payload = bytearray(408)
        start = time.perf_counter_ns()
        for _ in range(count):
            log.write(payload)
        write_ns = (time.perf_counter_ns() - start) / count
        read = NaiveLog(path, writable=False)
        start = time.perf_counter_ns()
        for _ in range(count):
            read.read()
        read_ns = (time.perf_counter_ns() - start) / count
        start = time.perf_counter_ns()
        for _ in range(count):
            read.read()
        empty_ns = (time.perf_counter_ns() - start) / count
    return {"write_408": write_ns, "read_408": read_ns, "empty_read": empty_ns}


def multi_journal_reads(journals: int, frames: int) -> dict[str, float]:
    """ns per read() draining `frames` frames spread over `journals` journals, and per empty read()."""
    rng = random.Random(journals)
    with tempfile.TemporaryDirectory(prefix="mmipc-bench-") as directory:
        # one page holds a journal's share twice over (no page switch while timed), and no more:
        # 64 journals of 64 MiB pages, each with its next page prepared, took 2.9 GB of disk
        share = frames * 128 // journals * 2
        page_size = max(1 << 20, 1 << (share - 1).bit_length())
        writers = [Writer.create(directory, f"j{i}", page_size=page_size) for i in range(journals)]
        payload = bytes(64)
        for _ in range(frames):
            writers[rng.randrange(journals)].write(payload)
        reader = Reader.create("multi")
        for i in range(journals):
            reader.add_journal(directory, f"j{i}")
        read = reader.read
        start = time.perf_counter_ns()
        got = 0
        while read() is not None:
            got += 1
        full_ns = (time.perf_counter_ns() - start) / got
        start = time.perf_counter_ns()
        for _ in range(20000):
            read()
        empty_ns = (time.perf_counter_ns() - start) / 20000
        for writer in writers:
            writer.close()
    return {"read": full_ns, "empty_read": empty_ns}


def seek_times(frames: int, seeks: int) -> dict[str, float]:
    """Build a journal of `frames` 64-byte frames; time `seeks` random seeks and the first read."""
    rng = random.Random(10)
    with tempfile.TemporaryDirectory(prefix="mmipc-bench-") as directory:
        payload = bytes(64)
        with Writer.create(directory, "long") as writer:
            first = writer.write(payload)
            write = writer.write
            for _ in range(frames - 1):
                write(payload)
            last = writer.last_nano
        pages = len([f for f in os.listdir(directory) if f.endswith(".journal")])
        reader = Reader.create("seeker")
        reader.add_journal(directory, "long")
        took = []
        for _ in range(seeks):
            target = rng.randrange(first, last + 1)
            start = time.perf_counter_ns()
            reader.seek(target)
            frame = reader.read()
            took.append(time.perf_counter_ns() - start)
            assert frame is not None and frame.nano >= target
        reader.close()
    took.sort()
    return {"p50_ms": took[len(took) // 2] / 1e6, "max_ms": took[-1] / 1e6, "pages": pages, "frames": frames}


# -- the report --------------------------------------------------------------------------------


def median_range(values: list[float]) -> str:
    return f"{statistics.median(values):,.2f} ({min(values):,.2f}-{max(values):,.2f})"


def measure(rounds: int, quick: bool) -> dict[str, Any]:
    lat_count = 20_000 if quick else 100_000
    tp_count = 100_000 if quick else 2_000_000
    results: dict[str, Any] = {"latency": {}, "throughput": {}, "costs": [], "naive_costs": []}
    for r in range(rounds):
        for peer in ("naive", "mmipc"):
            lat = pair(peer, "latency", 408, lat_count)["latency_ns"]
            results["latency"].setdefault(peer, []).append(lat)
            for size in (64, 408):
                tp = pair(peer, "throughput", size, tp_count)
                if tp["errors"]:
                    raise RuntimeError(f"{peer} lost or reordered {tp['errors']} frames")
                results["throughput"].setdefault(f"{peer} {size}", []).append(tp["per_s"])
        results["costs"].append(in_process_costs(50_000 if quick else 500_000))
        results["naive_costs"].append(naive_costs(50_000 if quick else 500_000))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    results["multi"] = {n: multi_journal_reads(n, 20_000 if quick else 400_000) for n in (1, 8, 64)}
    results["seek"] = seek_times(200_000 if quick else 10_000_000, 200 if quick else 1000)
    return results


def report(res: dict[str, Any], command: str) -> str:
    lat, tp = res["latency"], res["throughput"]
    lines = [
        "## Journal core: measured",
        "",
        f"- Command: `{command}`",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}. **A 2-core shared VM**: other tenants' load shows up "
        "as outliers, so p99 and above are noise-bound here, and medians are the figures to compare.",
        f"- Date: {time.strftime('%Y-%m-%d')}. Each figure is the median over {len(lat['mmipc'])} "
        "interleaved rounds (min-max in brackets); the naive mmap log runs in the same rounds.",
        "",
        "### One-way latency, 408-byte frames, two processes on two cores (us)",
        "",
        "Writer paces one frame per 20 us; reader busy-polls; latency = reader's `time_ns()` minus the",
        "writer's stamp; the first 10% of each run is warm-up and dropped.",
        "",
        "| percentile | mmipc | naive log | mmipc / naive |",
        "|---|---|---|---|",
    ]
    for key in ("p50", "p90", "p99", "p99.9", "max"):
        ours = [r[key] for r in lat["mmipc"]]
        naive = [r[key] for r in lat["naive"]]
        ratio = statistics.median(ours) / statistics.median(naive)
        lines.append(f"| {key} | {median_range(ours)} | {median_range(naive)} | {ratio:.2f} |")
    lines += [
        "",
        "### Throughput, frames per second received by the reader process",
        "",
        "Writer writes as fast as it can; the reader checks every sequence number (0 lost, 0 reordered).",
        "",
        "| payload | mmipc | naive log | mmipc / naive |",
        "|---|---|---|---|",
    ]
    for size in (64, 408):
        ours, naive = tp[f"mmipc {size}"], tp[f"naive {size}"]
        ratio = statistics.median(ours) / statistics.median(naive)
        lines.append(
            f"| {size} B | {statistics.median(ours):,.0f} | {statistics.median(naive):,.0f} | {ratio:.2f} |"
        )
    costs, naive_costs = res["costs"], res["naive_costs"]
    lines += [
        "",
        "### In-process cost per call (ns)",
        "",
        "| call | mmipc | naive log |",
        "|---|---|---|",
        f"| `write` 408 B | {median_range([c['write_408'] for c in costs])} | "
        f"{median_range([c['write_408'] for c in naive_costs])} |",
        f"| `frame()` claim 408 B | {median_range([c['claim_408'] for c in costs])} | - |",
        f"| `read` of a frame | see below | {median_range([c['read_408'] for c in naive_costs])} |",
        f"| empty `read` | {median_range([c['empty_read_1'] for c in costs])} | "
        f"{median_range([c['empty_read'] for c in naive_costs])} |",
        "",
        "### Read cost by number of journals (ns per call)",
        "",
        "64-byte frames spread at random over the journals, drained by one merging reader.",
        "",
        "| journals | read (a frame) | empty read |",
        "|---|---|---|",
    ]
    for n, m in res["multi"].items():
        lines.append(f"| {n} | {m['read']:,.0f} | {m['empty_read']:,.0f} |")
    seek = res["seek"]
    lines += [
        "",
        "### Seek",
        "",
        f"Random `seek` plus the first `read` in a journal of {seek.get('frames', 10_000_000):,} "
        f"64-byte frames ({seek['pages']} pages of 32 MiB): "
        f"p50 {seek['p50_ms']:.3f} ms, max {seek['max_ms']:.3f} ms.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--out", help="write the markdown report here (default: stdout)")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--render", metavar="RAW", help="render saved raw results instead of measuring")
    parser.add_argument("--role", choices=["naive", "mmipc"], help=argparse.SUPPRESS)
    parser.add_argument("side", nargs="?", choices=["reader", "writer"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", "--mode", "--size", "--count", "--cpu", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.role:
        child(sys.argv)
        return
    if args.render:
        with open(args.render) as f:
            results = json.load(f)
    else:
        results = with_service(lambda: measure(args.rounds, args.quick))
        results["command"] = "python " + " ".join(sys.argv)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    text = report(results, results["command"])
    if args.out:
        splice(args.out, text)
    print(text)


START, END = "<!-- journal_bench:start -->", "<!-- journal_bench:end -->"


def splice(path: str, text: str, start: str = START, end: str = END) -> None:
    """Replace the generated part of `path` (between the markers), keeping the prose around it."""
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    if start in old and end in old:
        new = old.split(start)[0] + start + "\n" + text + "\n" + end + old.split(end, 1)[1]
    else:
        new = f"{old}\n{start}\n{text}\n{end}\n"
    with open(path, "w") as f:
        f.write(new)


def child(argv: list[str]) -> None:
    opts = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}
    os.sched_setaffinity(0, {int(opts["--cpu"])})
    peer, directory, mode = opts["--role"], opts["--dir"], opts["--mode"]
    if "reader" in argv:
        print(json.dumps(run_reader(peer, directory, mode, int(opts["--count"]))), flush=True)
    else:
        run_writer(peer, directory, mode, int(opts["--size"]), int(opts["--count"]))


if __name__ == "__main__":
    main()
