"""`mmipc bench`: mmipc against the IPC a Python user would otherwise pick, in one run."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..bench import PEERS, measure, with_service
from ..bench.report import plot, report


def add_commands(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="latency and throughput of mmipc and its peers, side by side",
        description="Measure mmipc, a naive mmap log, os.pipe, multiprocessing Pipe and Queue, pyzmq, "
        "faster-fifo, iceoryx2 and POSIX message queues between two pinned processes, in interleaved "
        "rounds. Peers that are not installed are skipped (pip install 'mmipc[bench]').",
    )
    names = [p.name for p in PEERS]
    bench.add_argument("--peers", default=",".join(names), help=f"comma-separated, from {','.join(names)}")
    bench.add_argument("--size", default="64,408", help="payload sizes in bytes (default 64,408)")
    bench.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    bench.add_argument(
        "--count", type=int, default=20000, help="messages per latency run (x5 for throughput)"
    )
    bench.add_argument(
        "--interval-us", type=float, default=20.0, help="latency runs: sender pacing (default 20)"
    )
    bench.add_argument("--cpus", default="0,1", help="sender and receiver cores (default 0,1)")
    bench.add_argument("--json", help="write the raw results here")
    bench.add_argument("--plot", help="draw latency CDFs and throughput bars to this PNG (needs matplotlib)")
    bench.add_argument("--quick", action="store_true", help="1 round of 2,000 messages: a smoke run")
    bench.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    wanted = args.peers.split(",")
    unknown = set(wanted) - {p.name for p in PEERS}
    if unknown:
        raise SystemExit(f"mmipc bench: unknown peers {sorted(unknown)}")
    peers = []
    for peer in (p for p in PEERS if p.name in wanted):
        note = peer.missing()
        print(f"note: {note}", flush=True) if note else peers.append(peer)
    sizes = [int(s) for s in args.size.split(",")]
    cpus = tuple(int(c) for c in args.cpus.split(","))
    rounds, count = (1, 2000) if args.quick else (args.rounds, args.count)
    results = with_service(lambda: measure(peers, sizes, rounds, count, args.interval_us, (cpus[0], cpus[1])))
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f)
    if args.plot:
        plot(results, args.plot)
        print(f"plot written to {args.plot}")
    bad = [
        r for r in results["runs"] if r.get("disorder") or ("error" in r and r["error"] != "no blocking read")
    ]
    return 1 if bad else 0
