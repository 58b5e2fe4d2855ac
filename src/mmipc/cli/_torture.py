"""`mmipc torture`: the fault-injection harness (see `mmipc.tools.torture`)."""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
from dataclasses import asdict
from typing import Any

from ..tools._torture_run import HarnessError, Torture
from ..tools.torture import RETAIN_PAGES
from ._args import add_json, count, natural, page_size, seconds


def add_commands(commands: Any) -> None:
    torture = commands.add_parser(
        "torture",
        help="crash and stall writers, readers and the service; verify nothing is lost",
        description="Run writers, readers and a service for --seconds while killing, stopping and starving "
        "them at random; then verify every frame reached every reader exactly once and intact. Exit 1 on "
        "any violation.",
    )
    torture.add_argument(
        "--seconds", type=seconds, default=60.0, help="how long to inject faults (default 60)"
    )
    torture.add_argument("--seed", type=natural, help="random seed (default: a random one, printed)")
    torture.add_argument("--writers", type=count, default=3)
    torture.add_argument("--readers", type=count, default=2)
    torture.add_argument("--page-size", type=page_size, default=64 * 1024, help="small pages switch often")
    torture.add_argument(
        "--retain-pages",
        type=natural,
        default=RETAIN_PAGES,
        metavar="N",
        help=f"the service keeps at most N pages per journal, and the prune fault half as many "
        f"(default {RETAIN_PAGES}; 0: no retention)",
    )
    add_json(torture, "print the report as JSON on stdout (the seed goes to stderr)")
    torture.set_defaults(run=run_torture)


def run_torture(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(
        f"torture: seed {seed} (rerun with --seed {seed})",
        file=sys.stderr if args.json else sys.stdout,
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop every child, remove files
    try:
        torture = Torture(args.seconds, seed, args.writers, args.readers, args.page_size, args.retain_pages)
        report = torture.run()
    except HarnessError as exc:
        print(f"mmipc torture: {exc} (a failure of the harness, not a finding about mmipc)", file=sys.stderr)
        return 2
    counters = {"faults": dict(report.faults), "skipped": dict(report.skipped)}
    print(json.dumps({**asdict(report), **counters}) if args.json else report.text())
    return 1 if report.violations else 0
