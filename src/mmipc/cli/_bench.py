"""`mmipc bench`: mmipc against the IPC a Python user would otherwise pick, in one run."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

from ..bench import BLOCKING_SECONDS, MODES, PEERS, TIMED_MODES, measure, outcome, storage, with_service
from ..bench.report import plot, report
from ..journal._backend import BACKEND
from ._args import add_cpu, count, rate, sizes
from ._errors import ArgumentsError

INTERVALS = (20, 200, 1000, 10000)  # us: where a kernel wait never sleeps, up to where it always does
QUICK_BLOCKING_SECONDS = 0.2
SPREAD_WARNING = 2.0  # a peer's p50 varying more than this factor across rounds: the machine was busy


def modes(text: str) -> tuple[str, ...]:
    """Comma-separated kinds of run, each one of MODES."""
    chosen = tuple(part.strip() for part in text.split(","))
    for mode in chosen:
        if mode not in MODES:
            raise argparse.ArgumentTypeError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    return chosen


def add_commands(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="latency and throughput of mmipc and its peers, side by side",
        description="Measure mmipc, a naive mmap log, os.pipe, multiprocessing Pipe and Queue, pyzmq, "
        "faster-fifo, iceoryx2 and POSIX message queues between two pinned processes, in interleaved "
        "rounds. Peers that are not installed are skipped (pip install 'mmipc[bench]'). Progress goes "
        "to stderr, one line per run; a warning follows if the machine was loaded.",
    )
    names = [p.name for p in PEERS]
    bench.add_argument("--peers", default=",".join(names), help=f"comma-separated, from {','.join(names)}")
    bench.add_argument(
        "--size", type=sizes, default=[64, 408], help="payload sizes in bytes (default 64,408)"
    )
    bench.add_argument("--rounds", type=count, default=5, help="interleaved rounds (default 5)")
    bench.add_argument(
        "--count", type=count, default=20000, help="messages per latency run (x5 for throughput)"
    )
    bench.add_argument(
        "--interval-us", type=rate, default=20.0, help="latency runs: sender pacing (default 20)"
    )
    bench.add_argument(
        "--intervals",
        type=sizes,
        metavar="US,US",
        help="blocking and asyncio runs: sender pacing in us, one run each "
        f"(default {','.join(map(str, INTERVALS))}; --quick: 200)",
    )
    bench.add_argument(
        "--modes",
        type=modes,
        metavar="MODE,MODE",
        help=f"only these kinds of run, from {','.join(MODES)} (default: all); e.g. "
        "--modes latency-blocking,latency-asyncio --intervals 200,1000 for the wake-up latency alone",
    )
    add_cpu(bench, pair=True, help="sender and receiver CPUs (default 0,1)")
    bench.add_argument(
        "--json", action="store_true", help="print the raw results as JSON on stdout, no tables"
    )
    bench.add_argument("-o", "--json-out", metavar="PATH", help="also write the raw results to this file")
    bench.add_argument("--plot", help="draw latency CDFs and throughput bars to this PNG (needs matplotlib)")
    bench.add_argument("--quick", action="store_true", help="1 round of 2,000 messages: a smoke run")
    bench.add_argument(
        "--dir",
        metavar="PATH",
        help="where the journals go (default: the temporary directory, TMPDIR): the disk you will "
        "use, or a tmpfs such as /dev/shm; the report names its file system",
    )
    bench.add_argument(
        "--journals",
        type=sizes,
        metavar="N,M",
        help="instead: the cost of read() per frame and of an empty read() for a reader following "
        "N, M... journals (one process; e.g. 1,8,64,256,1024), on the native and the pure-Python backend",
    )
    bench.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if args.journals:
        from ..bench.journals import journals_table, measure_both

        frames, rounds = (2000, 1) if args.quick else (args.count, args.rounds)
        cpu = (args.cpu or (0, 1))[1]
        if cpu in os.sched_getaffinity(0):  # one CPU for the whole run: no migration mid-drain
            os.sched_setaffinity(0, {cpu})
        rows = measure_both(args.journals, frames=frames, empty_reads=frames, rounds=rounds)
        print(json.dumps(rows) if args.json else journals_table(rows), flush=True)
        return 0
    peers = _peers(args.peers)
    cpus = args.cpu or (0, 1)
    rounds, number = (1, 2000) if args.quick else (args.rounds, args.count)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.dir is not None and not os.path.isdir(args.dir):
        raise ArgumentsError(f"--dir {args.dir}: not a directory")
    results: dict[str, Any] = {"backend": BACKEND, "storage": storage(args.dir)}
    where = results["storage"]
    log(f"mmipc bench: backend {BACKEND}, journals in {where['dir']} ({where['fs']})")
    try:
        with_service(
            lambda: measure(
                peers,
                args.size,
                rounds,
                number,
                args.interval_us,
                cpus,
                log,
                results,
                [float(i) for i in args.intervals or ([200] if args.quick else INTERVALS)],
                QUICK_BLOCKING_SECONDS if args.quick else BLOCKING_SECONDS,
                args.modes,
            ),
            args.dir,
        )
    finally:  # after Ctrl-C too: the runs measured so far
        if results.get("runs"):
            print(json.dumps(results) if args.json else report(results), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f)
    if args.plot:
        plot(results, args.plot)
        log(f"plot written to {args.plot}")
    for warning in load_warnings(results):
        log(f"mmipc bench: warning: {warning}")
    failed = failures(results)
    for line in failed:
        log(f"mmipc bench: failed: {line}")
    return 1 if failed else 0


def failures(results: dict[str, Any]) -> list[str]:
    """One line per run that failed (lost its peer, hung, or saw messages out of order), saying why.

    A peer without a blocking read is not a failure: that mode does not apply to it.
    """
    lines = []
    for run in results["runs"]:
        if run.get("disorder"):
            why = f"{run['disorder']} message(s) out of order"
        elif run.get("error", "no blocking read") != "no blocking read":
            why = outcome(run)
        else:
            continue
        lines.append(f"{run['peer']} {run['size']} B {run['mode']} (round {run['round'] + 1}): {why}")
    return lines


def _peers(text: str) -> list[Any]:
    wanted = text.split(",")
    unknown = set(wanted) - {p.name for p in PEERS}
    if unknown:
        raise ArgumentsError(
            f"unknown peers {sorted(unknown)}: choose from {','.join(p.name for p in PEERS)}"
        )
    peers = []
    for peer in (p for p in PEERS if p.name in wanted):
        note = peer.missing()
        if note:
            print(f"note: {note}", file=sys.stderr, flush=True)
        else:
            peers.append(peer)
    return peers


def load_warnings(results: dict[str, Any]) -> list[str]:
    """Why these figures may not be the machine's best: load during runs, or rounds that disagree."""
    cores = len(os.sched_getaffinity(0))
    warnings = []
    busy = [r for r in results["runs"] if r.get("load1", 0) > cores / 2]
    if busy:
        worst = max(r["load1"] for r in busy)
        warnings.append(
            f"the machine was loaded during {len(busy)} run(s) (load average up to {worst:.2f} on {cores} "
            "CPUs): rerun on a quiet machine before trusting the figures"
        )
    for (peer, size, mode, interval), p50s in _p50s_by_run(results).items():
        if len(p50s) > 1 and min(p50s) > 0 and max(p50s) / min(p50s) > SPREAD_WARNING:
            every = f" every {interval:g} us" if mode in TIMED_MODES else ""
            warnings.append(
                f"{peer} {size} B {mode}{every}: p50 varies "
                f"{min(p50s):.1f}..{max(p50s):.1f} us across rounds "
                f"(median {statistics.median(p50s):.1f}): something else was running"
            )
    return warnings


def _p50s_by_run(results: dict[str, Any]) -> dict[tuple[str, int, str, float], list[float]]:
    found: dict[tuple[str, int, str, float], list[float]] = {}
    for r in results["runs"]:
        if "latency_us" in r:
            key = (r["peer"], r["size"], r["mode"], r.get("interval_us", 0.0))
            found.setdefault(key, []).append(r["latency_us"]["p50"])
    return found
